//! A test bed of hosts on one machine: each host a Linux network namespace with its
//! own address, joined by a veth pair to one bridge in the root namespace, which also
//! has an address on the subnet so processes in the root namespace (a control plane)
//! reach every host and every host reaches them.
//!
//! ```text
//! root ns: br (10.x.y.1/24) ─┬─ veth ─ host "web"   10.x.y.2
//!                            └─ veth ─ host "books" 10.x.y.3
//! ```
//!
//! Needs root and `ip` (iproute2). Everything made is named after the topology's tag,
//! and removed on drop — also when the test panics — and processes started in a host
//! with [`Namespace::spawn`] are stopped first. A lone [`Namespace`] serves tests that
//! need one isolated network stack and no bridge. Addresses come from a subnet picked from the
//! process id, inside 10.0.0.0/8 and only on interfaces the test made.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Topologies made by this process so far: tests in one process run side by side.
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace with loopback up, removed on drop, with the processes started
/// in it ([`Namespace::spawn`]) stopped first (SIGTERM, so a `trellis run` stops its
/// application too, then SIGKILL).
#[derive(Debug)]
pub struct Namespace {
    /// The name `ip netns exec` takes.
    pub name: String,
    children: Mutex<Vec<Child>>,
}

/// One "host" of a [`Topology`]: a namespace with an address on the bridge.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub address: Ipv4Addr,
    pub namespace: Namespace,
}

impl std::ops::Deref for Host {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}

/// Hosts on one bridge; torn down on drop.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    bridge: String,
    /// The bridge's own address: the root namespace as the hosts see it.
    pub gateway: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Why a command of the test bed failed.
#[derive(Debug)]
pub struct NetnsError(pub String);

impl std::fmt::Display for NetnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetnsError {}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError(format!("cannot run ip (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Topology {
    /// Makes a bridge and one host per name (at most 9 hosts). `tag` names what the
    /// test made (two to four letters: interface names are limited to 15 characters).
    pub fn new(tag: &str, hosts: &[&str]) -> Result<Self, NetnsError> {
        let pid = std::process::id();
        let seq = MADE.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{tag}{}{seq}", pid % 1000);
        // A /24 per topology: 10.(100..199).(0..255).0 from the pid and the sequence.
        let n = pid.wrapping_mul(31).wrapping_add(seq);
        let (a, b) = (100 + (n / 256 % 100) as u8, (n % 256) as u8);
        let gateway = Ipv4Addr::new(10, a, b, 1);
        let bridge = format!("tb{tag}");
        let mut topology = Topology {
            tag: tag.clone(),
            bridge: bridge.clone(),
            gateway,
            hosts: Vec::new(),
        };
        // Leftovers of a crashed run with the same pid.
        topology.cleanup_names(hosts);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let address = Ipv4Addr::new(10, a, b, 2 + i as u8);
            let host = topology.make_host(name, address)?;
            topology.hosts.push(host);
        }
        Ok(topology)
    }

    /// The namespace and the two veth ends of a host, named after the last octet of
    /// its address (unique on the /24).
    fn names(&self, octet: u8, name: &str) -> (String, String, String) {
        let netns = format!("trellis-{}-{name}", self.tag);
        (
            netns,
            format!("th{}{octet}", self.tag),
            format!("tp{}{octet}", self.tag),
        )
    }

    /// Adds a host at `address` (on the bridge's /24, used by no other host) after the
    /// topology was made, owned by the caller: dropping it stops its processes and
    /// removes its namespace and veth pair. The node agent makes one per Pod this way.
    pub fn new_host(&self, name: &str, address: Ipv4Addr) -> Result<Host, NetnsError> {
        let (_, outside, _) = self.names(address.octets()[3], name);
        // Leftovers of a crashed run with the same pid.
        let _ = ip(&["link", "del", &outside]);
        self.make_host(name, address)
    }

    fn make_host(&self, name: &str, address: Ipv4Addr) -> Result<Host, NetnsError> {
        let (netns, outside, inside) = self.names(address.octets()[3], name);
        let namespace = Namespace::new(&netns)?;
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &outside, "master", &self.bridge])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&["link", "set", &inside, "netns", &netns])?;
        namespace.ip(&["addr", "add", &format!("{address}/24"), "dev", &inside])?;
        namespace.ip(&["link", "set", &inside, "up"])?;
        namespace.ip(&["route", "add", "default", "via", &self.gateway.to_string()])?;
        Ok(Host {
            name: name.to_string(),
            address,
            namespace,
        })
    }

    /// The bridge's name, for pods (`trellis run --transparent --pod-bridge`) to join.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// An address on the bridge's /24 that no host has: the `n`th (0 to 99) of
    /// `.100` to `.199`, for pods the test makes itself.
    pub fn spare_address(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.gateway.octets();
        Ipv4Addr::new(a, b, c, 100 + n.min(99))
    }

    pub fn host(&self, name: &str) -> &Host {
        match self.hosts.iter().find(|h| h.name == name) {
            Some(h) => h,
            None => panic!("no host {name:?} in the topology"),
        }
    }

    fn cleanup_names(&self, hosts: &[&str]) {
        for (i, name) in hosts.iter().enumerate() {
            let (netns, outside, _) = self.names(2 + i as u8, name);
            let _ = ip(&["link", "del", &outside]);
            let _ = ip(&["netns", "del", &netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes first, while the network they drain over is still there.
        for host in &self.hosts {
            host.stop_children();
        }
        // Each host's namespace goes when it drops, taking its veth end (and so the
        // peer on the bridge) with it.
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Namespace {
    /// Makes the namespace `name` (replacing a leftover of that name) with loopback up.
    pub fn new(name: &str) -> Result<Self, NetnsError> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let namespace = Namespace {
            name: name.to_string(),
            children: Mutex::new(Vec::new()),
        };
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// Runs a command in the namespace and waits for it.
    pub fn output(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        self.command(program, args).output()
    }

    /// Starts a long-running process in the namespace, stopped when it drops. Its
    /// output goes to `log` (a file), or nowhere.
    pub fn spawn(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<std::fs::File>,
    ) -> std::io::Result<()> {
        let mut command = self.command(program, args);
        command.envs(env.iter().copied()).stdin(Stdio::null());
        match log {
            Some(file) => {
                command.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command.spawn()?;
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(())
    }

    /// One HTTP/1.0 `GET` from inside the namespace, through bash's `/dev/tcp` (no
    /// client program needed there): the status line and the body, or `None` when
    /// nothing answered within three seconds.
    pub fn http_get(&self, ip: &str, port: u16, path: &str) -> Option<(String, String)> {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} || exit 1; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
        );
        let out = self.output("timeout", &["3", "bash", "-c", &script]).ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    }

    fn stop_children(&self) {
        let Ok(mut children) = self.children.lock() else {
            return;
        };
        for child in children.iter_mut() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for child in children.iter_mut() {
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        children.clear();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.stop_children();
        let _ = ip(&["netns", "del", &self.name]);
    }
}
