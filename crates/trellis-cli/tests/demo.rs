//! `trellis demo` end to end, with the real binary: it starts, traffic flows through the
//! sidecars, the canary it wrote takes effect, and SIGTERM stops it with no process
//! left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::HttpClient;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// Every process the demo starts inherits this variable, which is how the test finds
/// them in `/proc`.
const MARKER: &str = "TRELLIS_DEMO_SMOKE_TEST";

/// A running `trellis demo`; on a failed test, shows its standard error and kills
/// whatever it started.
struct Demo {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    marker: String,
    stderr: PathBuf,
    _home: tempfile::TempDir,
}

/// What the demo's banner says.
#[derive(Debug)]
struct Banner {
    control: String,
    grpc: String,
    shop: String,
    dir: PathBuf,
}

impl Demo {
    fn start() -> Demo {
        let home = tempfile::tempdir().expect("temp dir");
        let stderr = home.path().join("stderr.log");
        let marker = format!("{}-{:x}", std::process::id(), unique());
        let mut child = Command::new(TRELLIS)
            .args([
                "demo",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(["--rps", "10"])
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env(MARKER, &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("trellis demo starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            marker,
            stderr,
            _home: home,
        }
    }

    /// Reads standard output until the banner has said where everything is.
    async fn banner(&mut self) -> Banner {
        let (mut control, mut grpc, mut shop, mut dir) = (None, None, None, None);
        let read = async {
            while let Some(line) = self.lines.recv().await {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("control plane   ") {
                    control = rest.split_whitespace().next().map(str::to_string);
                    grpc = rest
                        .split("proxies connect to ")
                        .nth(1)
                        .map(|s| s.trim_end_matches(')').to_string());
                } else if let Some(rest) = line.strip_prefix("bookshop ") {
                    shop = rest
                        .split_whitespace()
                        .next()
                        .map(|s| s.trim_end_matches('/').to_string());
                } else if let Some(rest) = line.strip_prefix("data and logs ") {
                    dir = Some(PathBuf::from(rest.trim()));
                }
                if control.is_some() && grpc.is_some() && shop.is_some() && dir.is_some() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the banner within 30 s");
        Banner {
            control: control.expect("control plane URL"),
            grpc: grpc.expect("gRPC address"),
            shop: shop.expect("bookshop URL"),
            dir: dir.expect("data dir"),
        }
    }

    fn pid(&self) -> Pid {
        let id = self.child.id().expect("still running");
        Pid::from_raw(i32::try_from(id).expect("pid")).expect("pid")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            eprintln!("--- trellis demo stderr ---\n{log}");
            for (pid, _) in processes_of(&self.marker, None) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// A value that differs between runs, without a random-number crate.
fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Processes that carry `marker` in their environment or `needle` in their command
/// line, with their command lines.
fn processes_of(marker: &str, needle: Option<&str>) -> Vec<(Pid, String)> {
    let want = format!("{MARKER}={marker}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        let environ = read("environ");
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let marked = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        if marked || needle.is_some_and(|n| cmdline.contains(n)) {
            found.push((pid, cmdline));
        }
    }
    found
}

async fn trellis(args: &[&str]) -> std::process::Output {
    Command::new(TRELLIS)
        .args(args)
        .env_remove("TRELLIS_CONTROL")
        .env_remove("TRELLIS_TOKEN")
        .output()
        .await
        .expect("trellis runs")
}

async fn synced_proxies(control: &str) -> usize {
    let out = trellis(&["get", "proxies", "--control", control, "-o", "json"]).await;
    let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
        return 0;
    };
    list["items"].as_array().map_or(0, |items| {
        items.iter().filter(|p| p["state"] == "synced").count()
    })
}

/// The ratings version in one product answer through the mesh, if it answered.
async fn rating_version(client: &HttpClient, shop: &str) -> Option<String> {
    let rsp = client.get(&format!("{shop}/api/products/1")).await.ok()?;
    if !rsp.status.is_success() {
        return None;
    }
    let product: Value = serde_json::from_slice(&rsp.body).ok()?;
    product["rating"]["version"].as_str().map(str::to_string)
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin-token"))
        .expect("admin token")
        .trim()
        .to_string()
}

#[tokio::test]
async fn demo_serves_through_the_mesh_takes_a_canary_and_stops_cleanly() {
    let mut demo = Demo::start();
    let banner = demo.banner().await;

    // Five workloads, each with its sidecar, all on the latest configuration.
    assert_eventually!(synced_proxies(&banner.control).await >= 4);

    // The shop answers through the sidecars; the route sends every rating to v1.
    let client = HttpClient::http1();
    for _ in 0..10 {
        assert_eq!(
            rating_version(&client, &banner.shop).await.as_deref(),
            Some("v1")
        );
    }
    let page = client
        .get(&format!("{}/", banner.shop))
        .await
        .expect("page");
    assert!(page.text().contains("Bookshop"), "{}", page.text());

    // The canary the demo wrote sends some ratings calls to v2.
    let canary = banner.dir.join("canary.yaml");
    let canary = canary.to_str().expect("utf-8 path");
    let token = token(&banner.dir);
    let applied = trellis(&[
        "apply",
        "-f",
        canary,
        "--control",
        &banner.control,
        "--token",
        &token,
    ])
    .await;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eventually!(
        rating_version(&client, &banner.shop).await.as_deref() == Some("v2"),
        "no rating came from v2 after the canary"
    );
    drop(client);

    // SIGTERM stops everything: the demo, five `trellis run` and their five apps.
    let running = processes_of(&demo.marker, Some(&banner.grpc));
    assert!(running.len() >= 11, "{running:?}");
    kill_process(demo.pid(), Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(15), demo.child.wait())
        .await
        .expect("the demo stops within 15 s")
        .expect("exit status");
    assert!(status.success(), "{status}");
    let left = processes_of(&demo.marker, Some(&banner.grpc));
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !banner.dir.exists(),
        "the temporary data dir was not removed"
    );
}

/// A Prometheus server from Debian's package, killed when dropped.
struct Prometheus {
    url: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("write the configuration");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (scripts/setup.sh installs it)");
        Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
            _dir: dir,
        }
    }

    /// The value of an instant query that returns one number.
    async fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("{}/api/v1/query?query={encoded}", self.url);
        let answer = HttpClient::http1().get(&url).await.ok()?;
        let body: Value = serde_json::from_slice(&answer.body).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_demo_mesh() {
    let mut demo = Demo::start();
    let banner = demo.banner().await;
    assert_eventually!(synced_proxies(&banner.control).await >= 4);

    let out = trellis(&[
        "prometheus-config",
        "--control",
        &banner.control,
        "--scrape-interval",
        "1s",
        "--refresh-interval",
        "1s",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8(out.stdout).expect("utf-8");
    let prometheus = Prometheus::start(&config).await;

    // The load generator calls web ten times a second through its sidecar: web's
    // inbound proxy answers that many requests a second, as Prometheus computes it.
    let promql = r#"sum(rate(trellis_requests_total{mesh_service="web",listener="inbound"}[10s]))"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        last = prometheus.query(promql).await.or(last);
        if last.is_some_and(|rate| (7.0..=13.0).contains(&rate)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "web's request rate in Prometheus: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every proxy of the demo is a target, labelled with its workload.
    let targets = prometheus
        .query(r#"count(up{job="trellis-proxies"} == 1)"#)
        .await;
    assert!(targets.is_some_and(|n| n >= 4.0), "{targets:?}");
}
