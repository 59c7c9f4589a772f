//! `trellis iptables` against real iptables, inside network namespaces made (and
//! removed) by each test. Needs root, as CI runs.

use std::time::{Duration, Instant};

use trellis_testkit::netns::Namespace;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// A namespace for one test, and the commands the tests run in it.
struct Netns(Namespace);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("trellis-{tag}-{}", std::process::id());
        Self(Namespace::new(&name).expect("network namespace (run as root)"))
    }

    /// Runs a command inside the namespace; panics unless it succeeds.
    fn exec(&self, argv: &[&str]) -> String {
        let out = self.0.output(argv[0], &argv[1..]).expect("ip netns exec");
        assert!(
            out.status.success(),
            "{argv:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

    // Stands in for the sidecar's outbound port; stopped with the namespace.
    let server = [
        "sample-server",
        "--listen",
        "127.0.0.1:7140",
        "--name",
        "captured",
    ];
    ns.0.spawn(TRELLIS, &server, &[("TRELLIS_LOG", "error")], None)
        .expect("sample server");
    // One GET; the body, or "error".
    let get = |ip: &str, port: u16| {
        ns.0.http_get(ip, port, "/")
            .map_or_else(|| "error".to_string(), |(_, body)| body)
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
}
