//! `trellis iptables install|remove|show`: what an init container does on Kubernetes,
//! for a host or a network namespace. Inbound TCP is redirected to the sidecar's
//! inbound port and outbound TCP to its outbound port, in the `nat` table, for IPv4
//! and IPv6.
//!
//! Everything lives in chains of our own, entered by one jump from `PREROUTING` and
//! one from `OUTPUT`:
//!
//! ```text
//! PREROUTING ─► TRELLIS_INBOUND ─► (excluded ports: RETURN) ─► TRELLIS_IN_REDIRECT (→ inbound port)
//! OUTPUT ────► TRELLIS_OUTPUT ──► (proxy UID or mark, loopback, excluded ports and CIDRs: RETURN)
//!                                  ─► TRELLIS_OUT_REDIRECT (→ outbound port)
//! ```
//!
//! `install` first removes whatever an earlier install left, then adds everything in
//! one `iptables-restore --noflush` transaction, so running it twice gives the same
//! rules, and a failure leaves the table as it was. `remove` deletes the jumps and the
//! chains and nothing else.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The chains this command owns.
const CHAINS: [&str; 4] = [
    "TRELLIS_INBOUND",
    "TRELLIS_IN_REDIRECT",
    "TRELLIS_OUTPUT",
    "TRELLIS_OUT_REDIRECT",
];

/// `trellis iptables …`
#[derive(Debug, clap::Subcommand)]
pub enum IptablesCommand {
    /// Redirect this host's (or network namespace's) TCP through the sidecar.
    Install(InstallArgs),
    /// Remove every rule and chain `install` added.
    Remove(FamilyArgs),
    /// Print the rules `install` added, as `iptables-save` shows them.
    Show(FamilyArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FamilyArgs {
    /// Leave IPv6 (ip6tables) alone.
    #[arg(long)]
    pub ipv4_only: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("proxy").required(true).multiple(true).args(["proxy_uid", "proxy_mark"])))]
pub struct InstallArgs {
    /// The sidecar's inbound port, where traffic for this host's applications goes.
    #[arg(long, default_value_t = 7143)]
    pub inbound_port: u16,
    /// The sidecar's outbound port, where the applications' outgoing TCP goes.
    #[arg(long, default_value_t = 7140)]
    pub outbound_port: u16,
    /// The user the proxy runs as: its own connections are never redirected.
    #[arg(long)]
    pub proxy_uid: Option<u32>,
    /// The `SO_MARK` the proxy puts on its own connections, which are then never
    /// redirected (for a proxy that runs as the same user as its application);
    /// decimal or `0x` hexadecimal.
    #[arg(long, value_parser = parse_mark)]
    pub proxy_mark: Option<u32>,
    /// The proxy's admin port, never redirected inbound.
    #[arg(long, default_value_t = 7191)]
    pub admin_port: u16,
    /// Inbound ports left alone (e.g. `22`), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations left alone: `10.0.0.0/8`, `fd00::/8`.
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    #[command(flatten)]
    pub family: FamilyArgs,
}

/// An address block, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?}: expected a 32-bit mark such as 0x7e11 or 32273"))
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: expected ADDRESS/LENGTH such as 10.0.0.0/8"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
    };
    Ok(Cidr { addr, len })
}

/// IPv4 or IPv6, and the tools for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

fn families(args: &FamilyArgs) -> Vec<Family> {
    if args.ipv4_only {
        vec![Family::V4]
    } else {
        vec![Family::V4, Family::V6]
    }
}

/// The `iptables-restore --noflush` input that adds the rules, for one family.
pub fn install_script(args: &InstallArgs, family: Family) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    let rule = |out: &mut String, r: String| {
        out.push_str(&r);
        out.push('\n');
    };
    rule(
        &mut out,
        format!(
            "-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            args.inbound_port
        ),
    );
    rule(
        &mut out,
        format!(
            "-A TRELLIS_OUT_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            args.outbound_port
        ),
    );
    // Inbound: everything but the excluded ports and the admin port.
    let mut inbound_excluded = args.exclude_inbound_ports.clone();
    inbound_excluded.push(args.admin_port);
    inbound_excluded.sort_unstable();
    inbound_excluded.dedup();
    for port in inbound_excluded {
        rule(
            &mut out,
            format!("-A TRELLIS_INBOUND -p tcp --dport {port} -j RETURN"),
        );
    }
    rule(
        &mut out,
        "-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT".into(),
    );
    // Outbound: not the proxy's own connections, nothing on loopback, not the
    // excluded ports and blocks.
    if let Some(uid) = args.proxy_uid {
        rule(
            &mut out,
            format!("-A TRELLIS_OUTPUT -m owner --uid-owner {uid} -j RETURN"),
        );
    }
    if let Some(mark) = args.proxy_mark {
        rule(
            &mut out,
            format!("-A TRELLIS_OUTPUT -m mark --mark {mark:#x} -j RETURN"),
        );
    }
    rule(
        &mut out,
        format!("-A TRELLIS_OUTPUT -d {} -j RETURN", family.loopback()),
    );
    for port in &args.exclude_outbound_ports {
        rule(
            &mut out,
            format!("-A TRELLIS_OUTPUT -p tcp --dport {port} -j RETURN"),
        );
    }
    for cidr in args
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| family.holds(c.addr))
    {
        rule(&mut out, format!("-A TRELLIS_OUTPUT -d {cidr} -j RETURN"));
    }
    rule(
        &mut out,
        "-A TRELLIS_OUTPUT -p tcp -j TRELLIS_OUT_REDIRECT".into(),
    );
    rule(&mut out, "-A PREROUTING -p tcp -j TRELLIS_INBOUND".into());
    rule(&mut out, "-A OUTPUT -p tcp -j TRELLIS_OUTPUT".into());
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that removes what `current` (the output of
/// `iptables-save -t nat`) shows of ours; `None` when there is nothing.
pub fn remove_script(current: &str) -> Option<String> {
    let ours = |line: &str| CHAINS.iter().any(|c| line.contains(c));
    let jumps: Vec<String> = current
        .lines()
        .filter(|l| (l.starts_with("-A PREROUTING ") || l.starts_with("-A OUTPUT ")) && ours(l))
        .map(|l| format!("-D{}", &l[2..]))
        .collect();
    let chains: Vec<&str> = CHAINS
        .iter()
        .copied()
        .filter(|c| current.lines().any(|l| l.starts_with(&format!(":{c} "))))
        .collect();
    if jumps.is_empty() && chains.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for jump in jumps {
        out.push_str(&jump);
        out.push('\n');
    }
    // Flush all first: a chain can only go once nothing jumps to it.
    for chain in &chains {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Our lines of `iptables-save -t nat` output.
pub fn ours(current: &str) -> Vec<&str> {
    current
        .lines()
        .filter(|l| CHAINS.iter().any(|c| l.contains(c)))
        .collect()
}

fn save(family: Family) -> anyhow::Result<String> {
    let out = Command::new(family.save())
        .args(["-t", "nat"])
        .output()
        .with_context(|| format!("cannot run {}", family.save()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            family.save(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn restore(family: Family, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(family.restore())
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", family.restore()))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} refused the rules: {}",
            family.restore(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn remove_family(family: Family) -> anyhow::Result<bool> {
    match remove_script(&save(family)?) {
        Some(script) => restore(family, &script).map(|()| true),
        None => Ok(false),
    }
}

/// Installs the rules in the current network namespace, replacing any earlier install.
pub fn install(args: &InstallArgs) -> anyhow::Result<()> {
    for family in families(&args.family) {
        remove_family(family)?;
        restore(family, &install_script(args, family))?;
    }
    Ok(())
}

pub fn run(command: IptablesCommand) -> anyhow::Result<()> {
    match command {
        IptablesCommand::Install(args) => {
            install(&args)?;
            let mut excluded = Vec::new();
            excluded.extend(args.proxy_uid.map(|uid| format!("UID {uid}")));
            excluded.extend(args.proxy_mark.map(|mark| format!("mark {mark:#x}")));
            println!(
                "installed: inbound TCP → port {}, outbound TCP → port {} ({} and loopback excluded)",
                args.inbound_port,
                args.outbound_port,
                excluded.join(", ")
            );
            Ok(())
        }
        IptablesCommand::Remove(args) => {
            let mut removed = false;
            for family in families(&args) {
                removed |= remove_family(family)?;
            }
            println!(
                "{}",
                if removed {
                    "removed"
                } else {
                    "nothing to remove"
                }
            );
            Ok(())
        }
        IptablesCommand::Show(args) => {
            for family in families(&args) {
                let current = save(family)?;
                let lines = ours(&current);
                let name = match family {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                };
                if lines.is_empty() {
                    println!("# {name}: no Trellis rules");
                } else {
                    println!("# {name}");
                    for line in lines {
                        println!("{line}");
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InstallArgs {
        InstallArgs {
            inbound_port: 7143,
            outbound_port: 7140,
            proxy_uid: Some(1337),
            proxy_mark: Some(0x7e11),
            admin_port: 7191,
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec![
                parse_cidr("10.0.0.0/8").expect("cidr"),
                parse_cidr("fd00::/8").expect("cidr"),
            ],
            family: FamilyArgs { ipv4_only: false },
        }
    }

    #[test]
    fn install_rules_for_each_family() {
        let v4 = install_script(&args(), Family::V4);
        assert!(v4.contains("-A TRELLIS_INBOUND -p tcp --dport 22 -j RETURN\n"));
        assert!(v4.contains("-A TRELLIS_INBOUND -p tcp --dport 7191 -j RETURN\n"));
        assert!(v4.contains("-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"));
        assert!(v4.contains("-A TRELLIS_OUTPUT -m mark --mark 0x7e11 -j RETURN\n"));
        assert!(v4.contains("-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN\n"));
        assert!(v4.contains("-A TRELLIS_OUTPUT -d 10.0.0.0/8 -j RETURN\n"));
        assert!(!v4.contains("fd00::"), "an IPv6 block is not an IPv4 rule");
        assert!(v4.ends_with(
            "-A PREROUTING -p tcp -j TRELLIS_INBOUND\n-A OUTPUT -p tcp -j TRELLIS_OUTPUT\nCOMMIT\n"
        ));
        let v6 = install_script(&args(), Family::V6);
        assert!(v6.contains("-A TRELLIS_OUTPUT -d ::1/128 -j RETURN\n"));
        assert!(v6.contains("-A TRELLIS_OUTPUT -d fd00::/8 -j RETURN\n"));
        assert!(!v6.contains("10.0.0.0/8"));
    }

    #[test]
    fn removal_deletes_jumps_then_chains() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:TRELLIS_INBOUND - [0:0]\n:TRELLIS_OUTPUT - [0:0]\n-A PREROUTING -p tcp -j TRELLIS_INBOUND\n-A PREROUTING -p tcp -j KUBE\n-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n-A TRELLIS_INBOUND -p tcp -j RETURN\nCOMMIT\n";
        let script = remove_script(saved).expect("something to remove");
        assert_eq!(
            script,
            "*nat\n-D PREROUTING -p tcp -j TRELLIS_INBOUND\n-D OUTPUT -p tcp -j TRELLIS_OUTPUT\n-F TRELLIS_INBOUND\n-F TRELLIS_OUTPUT\n-X TRELLIS_INBOUND\n-X TRELLIS_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(remove_script("*nat\n-A PREROUTING -j KUBE\nCOMMIT\n"), None);
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(parse_cidr("10.1.2.3").expect("host").len, 32);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("fd00::/129").is_err());
        assert!(parse_cidr("nowhere/8").is_err());
        assert_eq!(parse_mark("0x7e11"), Ok(0x7e11));
        assert_eq!(parse_mark("32273"), Ok(32273));
        assert!(parse_mark("0xnope").is_err());
    }
}
