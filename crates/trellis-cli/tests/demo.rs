//! `trellis demo` end to end, with the real binary: it starts, traffic flows through the
//! sidecars, the canary it wrote takes effect, and SIGTERM stops it with no process
//! left behind.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use trellis_testkit::assert_eventually;
use trellis_testkit::http::HttpClient;

use support::demo::{processes_of, synced_proxies, token, trellis, Demo};

/// The ratings version in one product answer through the mesh, if it answered.
async fn rating_version(client: &HttpClient, shop: &str) -> Option<String> {
    let rsp = client.get(&format!("{shop}/api/products/1")).await.ok()?;
    if !rsp.status.is_success() {
        return None;
    }
    let product: Value = serde_json::from_slice(&rsp.body).ok()?;
    product["rating"]["version"].as_str().map(str::to_string)
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
    let status = demo.stop().await;
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
