//! `trellis run --transparent`: the application in a "pod" of its own — a network
//! namespace with its own address, joined to a bridge by a veth pair — with its sidecar
//! beside it capturing the pod's TCP, and the sidecar's DNS as the pod's resolver.
//!
//! Two processes. The outer one (in the host's namespaces) makes the pod, starts the
//! inner one inside it with `ip netns exec` (which also bind-mounts
//! `/etc/netns/<pod>/resolv.conf` over `/etc/resolv.conf` for it and its children), waits
//! for it, and removes the pod. The inner one installs the capture rules, starts the
//! application and the sidecar, and serves DNS. An inner process whose outer one died
//! (SIGKILL) gets SIGTERM from the kernel and removes the pod itself.
//!
//! Everything runs as root, so the sidecar's own connections cannot be told from the
//! application's by user: the sidecar marks them (`SO_MARK` [`PROXY_MARK`]) and the
//! capture rules let marked connections through. A dedicated UID would need the sidecar
//! in a process of its own; the mark keeps `trellis run` one process per pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::iptables::{self, FamilyArgs, InstallArgs};

/// The mark on the sidecar's own connections.
pub const PROXY_MARK: u32 = 0x7e11;

/// The environment variable that tells the inner `trellis run` which pod it is in.
pub const POD_ENV: &str = "TRELLIS_POD";

/// Flags of `trellis run` for transparent mode.
#[derive(Debug, Clone, clap::Args)]
pub struct PodArgs {
    /// Run the application in a network namespace of its own with its TCP captured
    /// by the sidecar (root, Linux). Needs `--pod-address` and `--pod-bridge`.
    #[arg(long, requires_all = ["pod_address", "pod_bridge"])]
    pub transparent: bool,
    /// The pod's address and prefix on the bridge, e.g. `10.88.0.5/24`; the workload
    /// registers with it.
    #[arg(long, value_parser = parse_pod_address)]
    pub pod_address: Option<(Ipv4Addr, u8)>,
    /// The pod's network namespace name. Default: `trellis-<service>-<4 hex digits>`.
    #[arg(long)]
    pub pod_name: Option<String>,
    /// The bridge (in the current network namespace) the pod's veth joins.
    #[arg(long)]
    pub pod_bridge: Option<String>,
    /// The pod's default gateway, e.g. the bridge's address. Unset: only the bridge's
    /// subnet (and the mesh's virtual IPs) are routed.
    #[arg(long)]
    pub pod_gateway: Option<Ipv4Addr>,
    /// Port, in the pod, where captured outbound connections arrive.
    #[arg(long, default_value_t = 7140)]
    pub outbound_port: u16,
    /// Where the sidecar serves DNS in the pod; the pod's resolv.conf points there.
    #[arg(long, default_value = "127.0.0.1:53")]
    pub dns_address: SocketAddr,
    /// The resolver names outside the mesh are forwarded to. Default: the first
    /// `nameserver` of this host's /etc/resolv.conf when `trellis run` starts.
    #[arg(long, env = "TRELLIS_DNS_UPSTREAM")]
    pub dns_upstream: Option<SocketAddr>,
    /// Set in the inner process: the pod it runs in.
    #[arg(long, env = POD_ENV, hide = true)]
    pub inside_pod: Option<String>,
}

fn parse_pod_address(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected IPv4/PREFIX such as 10.88.0.5/24"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (1..=32).contains(l))
        .ok_or_else(|| format!("{s:?}: the prefix length must be 1 to 32"))?;
    Ok((ip, len))
}

/// A pod's network namespace and what was made for it; removed on drop.
pub struct Pod {
    pub name: String,
    resolv_dir: PathBuf,
}

impl Pod {
    /// Makes the namespace `name`, its veth pair (the host end on `bridge`), the
    /// address, routes and resolv.conf.
    pub fn create(name: &str, args: &PodArgs, namespace: &str) -> anyhow::Result<Self> {
        let (Some((ip, len)), Some(bridge)) = (args.pod_address, args.pod_bridge.as_deref()) else {
            bail!("--transparent needs --pod-address and --pod-bridge");
        };
        let pod = Pod {
            name: name.to_string(),
            resolv_dir: PathBuf::from("/etc/netns").join(name),
        };
        // Leftovers of an earlier pod of the same name.
        let _ = ip_cmd(&["netns", "del", name]);
        let (host_end, pod_end) = veth_names(name);
        let _ = ip_cmd(&["link", "del", &host_end]);
        ip_cmd(&["netns", "add", name])?;
        ip_cmd(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end,
        ])?;
        ip_cmd(&["link", "set", &host_end, "master", bridge])?;
        ip_cmd(&["link", "set", &host_end, "up"])?;
        ip_cmd(&["link", "set", &pod_end, "netns", name])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", name, "ip"];
            full.extend_from_slice(args);
            ip_cmd(&full)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{ip}/{len}"), "dev", &pod_end])?;
        inside(&["link", "set", &pod_end, "up"])?;
        // Virtual IPs must be routable for a connect to reach the capture rules.
        let (vip_base, vip_len) = trellis_control::vip::VIP_RANGE;
        inside(&[
            "route",
            "add",
            &format!("{vip_base}/{vip_len}"),
            "dev",
            &pod_end,
        ])?;
        if let Some(gateway) = args.pod_gateway {
            inside(&["route", "add", "default", "via", &gateway.to_string()])?;
        }
        std::fs::create_dir_all(&pod.resolv_dir)
            .with_context(|| format!("cannot create {}", pod.resolv_dir.display()))?;
        let resolv = resolv_conf(args.dns_address.ip(), namespace);
        std::fs::write(pod.resolv_dir.join("resolv.conf"), resolv)
            .context("cannot write the pod's resolv.conf")?;
        Ok(pod)
    }

    /// Removes a pod made by [`Pod::create`], by name: for an inner process whose outer
    /// one is gone.
    pub fn remove(name: &str) {
        let _ = ip_cmd(&["netns", "del", name]);
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The pod's veth end goes with the namespace, and its peer with it.
        let _ = ip_cmd(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
    }
}

/// Interface names are at most 15 characters: from a hash of the pod's name.
fn veth_names(pod: &str) -> (String, String) {
    let hash = pod.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (format!("tp{hash:08x}h"), format!("tp{hash:08x}p"))
}

/// The pod's resolver: the sidecar, with the mesh's search list so `books` and
/// `books.shop` resolve as in Kubernetes.
fn resolv_conf(dns: IpAddr, namespace: &str) -> String {
    format!(
        "nameserver {dns}\nsearch {namespace}.svc.trellis.local svc.trellis.local trellis.local\noptions ndots:5\n"
    )
}

/// The addresses of the hosts in `urls` (`http://10.0.0.1:7180`), each as a /32 or
/// /128; names are resolved with the resolver in force.
pub fn url_hosts(urls: &[&str]) -> anyhow::Result<Vec<iptables::Cidr>> {
    let mut cidrs = Vec::new();
    for url in urls {
        let authority = url
            .split_once("://")
            .map_or(*url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let with_port = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
            .with_context(|| format!("cannot resolve the control plane's address in {url:?}"))?;
        for addr in addrs {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            cidrs.push(iptables::Cidr {
                addr: addr.ip(),
                len,
            });
        }
    }
    cidrs.dedup();
    Ok(cidrs)
}

/// The first `nameserver` of a resolv.conf text.
pub fn first_nameserver(resolv: &str) -> Option<SocketAddr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// Installs the capture rules in the current (the pod's) namespace: outbound TCP to
/// the sidecar's outbound port, inbound to its inbound port, the sidecar's marked
/// connections and its admin port left alone.
/// `exclude` are the control plane's addresses, which the sidecar dials before it has
/// an outbound listener to catch the redirect.
pub fn install_capture(
    inbound_port: u16,
    outbound_port: u16,
    admin_port: u16,
    exclude: Vec<iptables::Cidr>,
) -> anyhow::Result<()> {
    let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists();
    iptables::install(&InstallArgs {
        inbound_port,
        outbound_port,
        proxy_uid: None,
        proxy_mark: Some(PROXY_MARK),
        admin_port,
        exclude_inbound_ports: Vec::new(),
        exclude_outbound_ports: Vec::new(),
        exclude_outbound_cidrs: exclude,
        family: FamilyArgs { ipv4_only: !ipv6 },
    })
}

fn ip_cmd(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_files_are_read_as_expected() {
        assert_eq!(
            parse_pod_address("10.88.0.5/24"),
            Ok((Ipv4Addr::new(10, 88, 0, 5), 24))
        );
        assert!(parse_pod_address("10.88.0.5").is_err());
        assert!(parse_pod_address("10.88.0.5/33").is_err());
        assert!(parse_pod_address("fd00::5/64").is_err());
        let resolv =
            "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n";
        assert_eq!(
            first_nameserver(resolv),
            Some("192.0.2.53:53".parse().expect("addr"))
        );
        assert_eq!(first_nameserver("search x\n"), None);
        let hosts = url_hosts(&["http://10.1.2.3:7180", "http://10.1.2.3:7100/"]).expect("hosts");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].to_string(), "10.1.2.3/32");
        let (host, pod) = veth_names("trellis-books-1a2b");
        assert!(host.len() <= 15 && pod.len() <= 15 && host != pod);
        assert_eq!(
            resolv_conf(IpAddr::from([127, 0, 0, 1]), "shop"),
            "nameserver 127.0.0.1\nsearch shop.svc.trellis.local svc.trellis.local trellis.local\noptions ndots:5\n"
        );
    }
}
