//! `trellis iptables` against real iptables, inside network namespaces made (and
//! removed) by each test. Needs root, as CI runs.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// A network namespace that exists for one test.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("trellis-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics unless it succeeds.
    fn exec(&self, argv: &[&str]) -> String {
        let out = self.output(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn output(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    fn trellis(&self, args: &[&str]) -> String {
        let mut argv = vec![TRELLIS, "iptables"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    fn saved(&self, tool: &str) -> String {
        self.exec(&[tool, "-t", "nat"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect("run");
    assert!(status.success(), "{argv:?} failed");
}

const INSTALL: &[&str] = &[
    "install",
    "--proxy-uid",
    "1337",
    "--exclude-inbound-ports",
    "22",
    "--exclude-outbound-cidrs",
    "10.0.0.0/8,fd00::/8",
];

#[test]
fn install_is_idempotent_and_remove_leaves_nothing() {
    let ns = Netns::new("ipt");
    let before_v4 = ns.saved("iptables-save");
    ns.trellis(INSTALL);
    let once = ns.trellis(&["show"]);
    ns.trellis(INSTALL);
    let twice = ns.trellis(&["show"]);
    assert_eq!(once, twice, "a second install changes nothing");
    assert!(once.contains("# IPv4\n"), "{once}");
    assert!(once.contains("# IPv6\n"), "{once}");
    assert!(
        once.contains("-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7143"),
        "{once}"
    );
    assert!(
        once.contains("-A TRELLIS_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 7140"),
        "{once}"
    );
    assert!(once.contains("--uid-owner 1337 -j RETURN"), "{once}");
    assert!(
        once.contains("-A TRELLIS_OUTPUT -d fd00::/8 -j RETURN"),
        "{once}"
    );
    assert_eq!(
        once.matches("-A PREROUTING").count(),
        2,
        "one jump per family: {once}"
    );

    assert_eq!(ns.trellis(&["remove"]).trim(), "removed");
    for tool in ["iptables-save", "ip6tables-save"] {
        let after = ns.saved(tool);
        assert!(!after.contains("TRELLIS"), "{tool} still shows: {after}");
    }
    assert_eq!(
        ns.saved("iptables-save")
            .lines()
            .filter(|l| l.starts_with('-'))
            .count(),
        before_v4.lines().filter(|l| l.starts_with('-')).count()
    );
    assert_eq!(ns.trellis(&["remove"]).trim(), "nothing to remove");
}

#[test]
fn outbound_tcp_reaches_the_proxy_port_and_loopback_does_not() {
    let ns = Netns::new("cap");
    // A route out, so that connecting to an outside address gets as far as the rules.
    ns.exec(&[
        "ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1",
    ]);
    ns.exec(&["ip", "addr", "add", "10.99.0.2/24", "dev", "out0"]);
    ns.exec(&["ip", "link", "set", "out0", "up"]);
    ns.exec(&["ip", "link", "set", "out1", "up"]);
    ns.exec(&["ip", "route", "add", "default", "dev", "out0"]);
    ns.trellis(&["install", "--proxy-uid", "1337", "--ipv4-only"]);

    // Stands in for the sidecar's outbound port.
    let mut proxy = Command::new("ip")
        .args(["netns", "exec", &ns.name, TRELLIS, "sample-server"])
        .args(["--listen", "127.0.0.1:7140", "--name", "captured"])
        .env("TRELLIS_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sample server");
    // One HTTP/1.0 request with bash's /dev/tcp; the body, or "error".
    let get = |host: &str, port: u16| {
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} || exit 1; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
        );
        let out = ns.output(&["timeout", "3", "bash", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((_, body)) if out.status.success() => body.to_string(),
            _ => "error".to_string(),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = get("192.0.2.10", 80);
    while answer != "hello from captured\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        answer = get("192.0.2.10", 80);
    }
    // An outside address: captured by the proxy port.
    assert_eq!(answer, "hello from captured\n");
    // Loopback: left alone, so nothing listens there.
    assert_eq!(get("127.0.0.1", 7999), "error");
    let _ = proxy.kill();
    let _ = proxy.wait();
}
