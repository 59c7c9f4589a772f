//! Opaque TCP through the mesh: redis-server behind one sidecar, redis-cli and
//! redis-benchmark in front of the other.

use std::ffi::OsStr;

use tokio::process::Command;

use super::http::random_bytes;
use super::mesh::{
    inbound_mtls_handshakes, require_programs, run_client, run_client_fed, Mesh, Server,
};

const KEYS: usize = 10_000;

/// The `cache` Service (a throwaway redis-server, nothing saved) and its caller.
pub async fn start_cache(mesh: &mut Mesh) -> Server {
    require_programs(
        &["redis-server", "redis-cli", "redis-benchmark"],
        "redis-server redis-tools",
    );
    let command = r#"exec redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no"#;
    mesh.serve(
        "cache",
        "tcp",
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(command)],
    )
    .await
}

/// redis-cli ARGS against `address`, stdin from `input` (a file) when given.
async fn redis_cli(address: &str, args: &[&str], input: Option<&std::path::Path>) -> String {
    let (host, port) = address.split_once(':').expect("host:port");
    let mut command = Command::new("redis-cli");
    command.args(["-h", host, "-p", port]).args(args);
    run_client_fed(command, input).await
}

/// One RESP array of bulk strings: a command as `redis-cli --pipe` takes it.
fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    out
}

fn hex(data: &[u8]) -> String {
    trellis_identity::hex::encode(data)
}

#[tokio::test]
async fn redis_keys_a_large_value_and_redis_benchmark_cross_intact() {
    let mut mesh = Mesh::start().await;
    let server = start_cache(&mut mesh).await;
    let caller = mesh.caller(&["cache"]).await;
    let cache = caller.upstream("cache");
    let direct = server.app.to_string();
    let dir = mesh.dir.path().to_owned();

    // Many keys, pipelined, then read back one by one.
    let values: Vec<String> = (0..KEYS)
        .map(|i| format!("{i}-{}", hex(&random_bytes(1 + i % 48))))
        .collect();
    let sets: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| resp(&["SET", &format!("key:{i}"), v]))
        .collect();
    std::fs::write(dir.join("sets"), sets).expect("write");
    let piped = redis_cli(&cache, &["--pipe"], Some(&dir.join("sets"))).await;
    assert!(
        piped.contains(&format!("errors: 0, replies: {KEYS}")),
        "{piped}"
    );
    let gets: String = (0..KEYS).map(|i| format!("GET key:{i}\n")).collect();
    std::fs::write(dir.join("gets"), gets).expect("write");
    let read = redis_cli(&cache, &["--raw"], Some(&dir.join("gets"))).await;
    let expected: String = values.iter().map(|v| format!("{v}\n")).collect();
    assert!(
        read == expected,
        "{} of {KEYS} values read back",
        read.lines().count()
    );
    let size = redis_cli(&direct, &["DBSIZE"], None).await;
    assert_eq!(size.trim(), KEYS.to_string());

    // A large value: 8 MiB in, the same 8 MiB out.
    let large = hex(&random_bytes(4 * 1024 * 1024));
    std::fs::write(dir.join("large"), &large).expect("write");
    let stored = redis_cli(&cache, &["-x", "SET", "large"], Some(&dir.join("large"))).await;
    assert_eq!(stored.trim(), "OK");
    let back = redis_cli(&cache, &["--raw", "GET", "large"], None).await;
    assert!(back == format!("{large}\n"), "{} bytes back", back.len());

    // redis-benchmark: every request answered, and the server counted each.
    assert_eq!(
        redis_cli(&direct, &["CONFIG", "RESETSTAT"], None)
            .await
            .trim(),
        "OK"
    );
    let (host, port) = cache.split_once(':').expect("host:port");
    let mut benchmark = Command::new("redis-benchmark");
    benchmark.args([
        "-h", host, "-p", port, "-q", "-n", "20000", "-c", "16", "-t", "set,get",
    ]);
    let printed = run_client(benchmark).await;
    for command in ["SET", "GET"] {
        assert!(
            printed.lines().any(|l| l
                .rsplit('\r')
                .next()
                .is_some_and(|last| last.starts_with(&format!("{command}: "))
                    && last.contains("requests per second"))),
            "{printed}"
        );
    }
    let stats = redis_cli(&direct, &["INFO", "commandstats"], None).await;
    for command in ["set", "get"] {
        let line = stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
            .unwrap_or_else(|| panic!("no {command} counted: {stats}"));
        let calls = line
            .strip_prefix("calls=")
            .and_then(|rest| rest.split(',').next());
        assert_eq!(calls, Some("20000"), "{line}");
        assert!(line.contains("failed_calls=0"), "{line}");
    }
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
