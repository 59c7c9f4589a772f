//! `trellis stat` and `trellis tap` against known traffic: a control plane and two
//! sidecars in this process, real requests through them, the figures the control plane
//! computes from the proxies' scraped metrics, and the requests a tap streams.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_proxy::control::Sidecar;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

mod support;

use support::control::trellis_binary;
use support::{free_port, SidecarSpec};

const TOKEN: &str = "stat-token";

async fn stat(cp: &ControlPlane, query: &str) -> Value {
    let url = format!("http://{}/api/v1/stat?{query}", cp.http_addr);
    let answer = HttpClient::http1().get(&url).await.expect("stat answers");
    serde_json::from_slice(&answer.body).expect("JSON")
}

fn row<'a>(answer: &'a Value, name: &str) -> Option<&'a Value> {
    answer["items"]
        .as_array()?
        .iter()
        .find(|row| row["name"] == name)
}

/// A control plane, books behind its sidecar, and web's sidecar calling books through
/// a local port.
struct Mesh {
    cp: ControlPlane,
    books: (HttpServer, Sidecar),
    _web: Sidecar,
    port: u16,
}

async fn mesh() -> Mesh {
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_secs(5),
        ca: Default::default(),
    };
    let cp = ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane");
    let grpc = format!("http://{}", cp.grpc_addr);
    let books = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("books");
    let spec = |name, service, app, upstreams| SidecarSpec {
        grpc: &grpc,
        token: TOKEN,
        name,
        service,
        labels: &[],
        app,
        upstreams,
    };
    let books_side = spec("books-1", "books", books.addr(), &[]).start().await;
    let port = free_port();
    let web_app = "127.0.0.1:9".parse().expect("addr");
    let web = spec("web-1", "web", web_app, &[("books", port)])
        .start()
        .await;
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eventually!(client.get(&url).await.is_ok_and(|r| r.status == 200));
    // Calls go over mTLS once both sidecars hold certificates: wait for that, so the
    // counts below are of mTLS calls only.
    let handshake = r#"trellis_tls_handshakes_total{direction="inbound",result="ok",reason=""}"#;
    assert_eventually!(
        client.get(&url).await.is_ok_and(|r| r.status == 200)
            && books_side.proxy.metrics().encode().contains(handshake)
    );
    Mesh {
        cp,
        books: (books, books_side),
        _web: web,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_what_the_proxies_served() {
    let mesh = mesh().await;
    let (cp, port) = (&mesh.cp, mesh.port);
    let client = HttpClient::http1();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // A first scrape, before the traffic counted below.
    assert_eventually!(stat(cp, "by=workload").await["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|r| r["name"] == "books-1")));
    let before = stat(cp, "by=service&name=books").await;
    let before =
        row(&before, "books").map_or(0.0, |r| r["counts"]["requests"].as_f64().unwrap_or(0.0));

    // 90 answered, 10 failed with 500.
    for _ in 0..90 {
        assert_eq!(client.get(&url("/")).await.expect("ok").status, 200);
    }
    for _ in 0..10 {
        assert_eq!(
            client
                .get(&url("/status/500"))
                .await
                .expect("answered")
                .status,
            500
        );
    }
    assert_eventually!(
        stat(cp, "by=service&name=books").await["items"][0]["counts"]["requests"]
            .as_f64()
            .is_some_and(|n| n >= before + 100.0)
    );
    let answer = stat(cp, "by=service&name=books").await;
    let books_row = row(&answer, "books").expect("a row for books");
    let requests = books_row["counts"]["requests"].as_f64().expect("requests") - before;
    let failures = books_row["counts"]["failures"].as_f64().expect("failures");
    assert_eq!((requests, failures), (100.0, 10.0), "{books_row}");
    let success = books_row["successRate"].as_f64().expect("success rate");
    assert!((0.9 - 1e-9..1.0).contains(&success), "{success}");
    assert!(books_row["requestsPerSecond"].as_f64().expect("rps") > 0.0);
    let p50 = books_row["p50Ms"].as_f64().expect("p50");
    let p99 = books_row["p99Ms"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");

    // The route web's proxy sent them through shows the same requests.
    let routes = stat(cp, "by=route").await;
    let sent: f64 = routes["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["counts"]["requests"].as_f64())
        .sum();
    assert!(sent >= 100.0, "{routes}");

    // The edge web → books, with web's identity once the sidecars speak mTLS (they do
    // as soon as their certificates arrive, before the traffic above).
    let edges_url = format!("http://{}/api/v1/edges?service=books", cp.http_addr);
    let edges: Value = serde_json::from_slice(
        &HttpClient::http1()
            .get(&edges_url)
            .await
            .expect("edges")
            .body,
    )
    .expect("JSON");
    let web_id = "spiffe://trellis.local/ns/default/sa/web";
    let edge = edges["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["source"] == web_id))
        .unwrap_or_else(|| panic!("no edge from web: {edges}"));
    assert_eq!(edge["destination"], "books");
    assert_eq!(edge["mtls"], true);
    assert!(
        edge["requests"].as_f64().is_some_and(|n| n >= 90.0),
        "{edge}"
    );
    // The same edge seen from web's side.
    let from_web = format!("http://{}/api/v1/edges?service=web", cp.http_addr);
    let from_web: Value = serde_json::from_slice(
        &HttpClient::http1()
            .get(&from_web)
            .await
            .expect("edges")
            .body,
    )
    .expect("JSON");
    assert!(from_web["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|e| e["destination"] == "books")));

    // And the command prints it.
    let output = tokio::process::Command::new(trellis_binary())
        .args(["stat", "service", "books", "--control"])
        .arg(format!("http://{}", cp.http_addr))
        .env("TRELLIS_LOG", "error")
        .output()
        .await
        .expect("trellis stat");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header
            .split_whitespace()
            .eq(["NAMESPACE", "NAME", "SUCCESS", "RPS", "P50", "P95", "P99"]),
        "{table}"
    );
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("books")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_streams_matching_requests_and_needs_the_token() {
    let mesh = mesh().await;
    let tap_url = |query: &str| {
        format!(
            "http://{}/api/v1/tap?service=books&{query}",
            mesh.cp.http_addr
        )
    };
    // No token, even from this host: refused.
    let refused = HttpClient::http1()
        .get(&tap_url("limit=1"))
        .await
        .expect("answers");
    assert_eq!(refused.status, 401);
    assert!(
        !mesh.books.1.proxy.taps().active(),
        "nobody taps: nothing runs"
    );

    // A tap on failing requests to books, through the command, stopping after three.
    let tap = tokio::process::Command::new(trellis_binary())
        .args([
            "tap", "books", "--path", "/status", "--limit", "3", "-o", "json",
        ])
        .args(["--duration", "60s", "--token", TOKEN, "--control"])
        .arg(format!("http://{}", mesh.cp.http_addr))
        .env("TRELLIS_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("trellis tap");
    assert_eventually!(mesh.books.1.proxy.taps().active());
    let client = HttpClient::http1();
    // Exactly as many matching requests as the limit: the tap must end without a
    // fourth to notice it.
    for i in 0..12 {
        let path = if i % 4 == 0 { "/status/503" } else { "/" };
        let url = format!("http://127.0.0.1:{}{path}", mesh.port);
        client.get(&url).await.expect("answered");
    }
    let output = tokio::time::timeout(Duration::from_secs(30), tap.wait_with_output())
        .await
        .expect("the tap ends at its limit")
        .expect("trellis tap runs");
    assert!(output.status.success());
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        assert_eq!(event["path"], "/status/503");
        assert_eq!(event["status"], 503);
        assert_eq!(event["method"], "GET");
        assert_eq!(event["direction"], "inbound");
        assert_eq!(event["workload"], "books-1");
        assert!(event["latencyMicros"].as_u64().is_some());
        assert_eq!(event["responseBytes"], "status 503\n".len());
        assert_eq!(
            event["destinationIdentity"],
            "spiffe://trellis.local/ns/default/sa/books"
        );
    }
    // The tap ended with its stream: the proxy stops it.
    assert_eventually!(!mesh.books.1.proxy.taps().active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_counts_the_busiest_paths() {
    let mesh = mesh().await;
    let top = tokio::process::Command::new(trellis_binary())
        .args([
            "top",
            "books",
            "--duration",
            "3s",
            "--token",
            TOKEN,
            "--control",
        ])
        .arg(format!("http://{}", mesh.cp.http_addr))
        .env("TRELLIS_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("trellis top");
    assert_eventually!(mesh.books.1.proxy.taps().active());
    let client = HttpClient::http1();
    for i in 0..9 {
        let path = if i % 3 == 0 { "/status/503" } else { "/books" };
        let url = format!("http://127.0.0.1:{}{path}", mesh.port);
        client.get(&url).await.expect("answered");
    }
    let output = tokio::time::timeout(Duration::from_secs(30), top.wait_with_output())
        .await
        .expect("top ends after its duration")
        .expect("trellis top runs");
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["COUNT", "SUCCESS", "AVG", "MAX", "METHOD", "PATH"],
        "{table}"
    );
    // The busiest first: six to /books, all answered; three failing ones.
    assert_eq!(rows[1][0], "6", "{table}");
    assert_eq!(rows[1][1], "100.00%");
    assert_eq!(&rows[1][4..], ["GET", "/books"]);
    assert_eq!(rows[2][0], "3", "{table}");
    assert_eq!(rows[2][1], "0.00%");
    assert_eq!(rows[2][5], "/status/503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_follow_the_mesh_config() {
    let mesh = mesh().await;
    let dir = std::env::temp_dir().join(format!("trellis-access-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("books.log");
    let config = format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: default}}\n\
         spec:\n  accessLog:\n    output: {}\n    services: [{{name: books}}]\n",
        log.display()
    );
    let applied = support::apply(mesh.cp.http_addr, TOKEN, &config).await;
    assert_eq!(applied, 200);
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{}/books/1", mesh.port);
    // Once books' sidecar holds the new configuration, its requests are logged.
    assert_eventually!(client.get(&url).await.is_ok() && log.metadata().is_ok_and(|m| m.len() > 0));
    let lines = std::fs::read_to_string(&log).expect("log");
    let entry: Value = serde_json::from_str(lines.lines().last().expect("a line")).expect("JSON");
    // Only books is listed, so every line is books' inbound side, over mTLS from web.
    assert_eq!(entry["direction"], "inbound");
    assert_eq!(entry["path"], "/books/1");
    assert_eq!(entry["status"], 404);
    assert_eq!(entry["tls"], true);
    assert_eq!(
        entry["peer_identity"],
        "spiffe://trellis.local/ns/default/sa/web"
    );
    for line in lines.lines() {
        assert!(line.contains(r#""direction":"inbound""#), "{line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
