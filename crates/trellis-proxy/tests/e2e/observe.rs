//! What the proxy reports of the requests it carries: gRPC statuses in the request
//! metrics, access log lines, and the request series limit.

use std::path::{Path, PathBuf};

use http::StatusCode;
use tonic::Code;
use trellis_proxy::ProxyConfig;
use trellis_testkit::assert_eventually;
use trellis_testkit::grpc::{GrpcClient, GrpcServer};
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{addr, counter, simple, start, url};

const GRPC_SERIES: &str = r#"trellis_requests_total{direction="outbound",listener="web",route="0",backend="app",peer_identity="",tls="false",status="200",class="2xx""#;

#[tokio::test]
async fn grpc_requests_are_counted_by_their_grpc_status() {
    let server = GrpcServer::start("echo").await.expect("server");
    let proxy = start(&simple("grpc", "http2", &[server.addr()], "")).await;
    let mut client = GrpcClient::connect(addr(&proxy)).await.expect("connect");
    for _ in 0..3 {
        client.unary("hello").await.expect("unary");
    }
    // A status in the trailers after a body, and a streamed call.
    let status = client.unary("fail:5").await.expect_err("asked to fail");
    assert_eq!(status.code(), Code::NotFound);
    client.server_stream("s").await.expect("server stream");

    let series = |grpc: &str| format!(r#"{GRPC_SERIES},grpc_status="{grpc}",error=""}}"#);
    assert_eventually!(counter(&proxy, &series("0")) == 4);
    assert_eq!(counter(&proxy, &series("5")), 1);

    // The proxy's own answer carries its status in the headers (trailers-only).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let down = start(&simple("grpc", "http2", &[dead_addr], "")).await;
    let mut client = GrpcClient::connect(addr(&down)).await.expect("connect");
    let status = client.unary("hello").await.expect_err("backend is down");
    assert_eq!(status.code(), Code::Unavailable);
    let text = down.metrics().encode();
    assert!(
        text.lines().any(|l| l.contains(r#"grpc_status="14""#)
            && l.starts_with("trellis_requests_total")
            && l.ends_with(" 1")),
        "{text}"
    );
}

/// A fresh directory for one test's log files.
fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trellis-{test}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn access_log_lines_describe_each_request() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let dir = log_dir("access-json");
    let path = dir.join("access.log");
    let yaml = simple("auto", "http1", &[server.addr()], "")
        + &format!("accessLog:\n  format: json\n  output: {}\n", path.display());
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();
    let ok = client.get(&url(&proxy, "/")).await.expect("GET /");
    let missing = client
        .get(&url(&proxy, "/status/404"))
        .await
        .expect("GET 404");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    assert_eventually!(lines(&path).len() == 2);
    let entries: Vec<serde_json::Value> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let first = &entries[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/");
    assert_eq!(first["status"], 200);
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["direction"], "outbound");
    assert_eq!(first["listener"], "web");
    assert_eq!(first["backend"], "app");
    assert_eq!(first["tls"], false);
    assert_eq!(first["response_bytes"], ok.body.len() as u64);
    assert!(first["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(entries[1]["status"], 404);
    assert_eq!(entries[1]["path"], "/status/404");

    // A request the proxy answers itself says why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let yaml = simple("auto", "http1", &[dead_addr], "")
        + &format!("accessLog:\n  output: {}\n", path.display());
    proxy
        .reload(ProxyConfig::from_yaml(&(yaml + "admin: 127.0.0.1:0\n")).expect("valid"))
        .await
        .expect("reload");
    let failed = client.get(&url(&proxy, "/")).await.expect("answered");
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eventually!(lines(&path).len() == 3);
    let last: serde_json::Value = serde_json::from_str(&lines(&path)[2]).expect("JSON");
    assert_eq!(last["status"], 502);
    assert!(
        last["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{last}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn access_log_format_and_switch_follow_reloads() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let dir = log_dir("access-text");
    let path = dir.join("access.log");
    let config = |log: &str| {
        let yaml = simple("auto", "http1", &[server.addr()], "") + log + "admin: 127.0.0.1:0\n";
        ProxyConfig::from_yaml(&yaml).expect("valid")
    };
    // Off by default: nothing is written.
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let client = HttpClient::http1();
    client.get(&url(&proxy, "/")).await.expect("GET");
    assert!(!path.exists());

    let text = format!("accessLog:\n  format: text\n  output: {}\n", path.display());
    proxy.reload(config(&text)).await.expect("reload");
    client.get(&url(&proxy, "/stream/3")).await.expect("GET");
    assert_eventually!(lines(&path).len() == 1);
    let line = &lines(&path)[0];
    assert!(
        line.contains(r#"outbound "GET 127.0.0.1:"#)
            && line.contains(r#"/stream/3 HTTP/1.1" 200 - 24B "#)
            && line.ends_with("listener=web route=0 backend=app peer=- tls=false error=- trace=-"),
        "{line}"
    );

    // Turned off again: later requests are not logged.
    proxy.reload(config("")).await.expect("reload");
    client.get(&url(&proxy, "/")).await.expect("GET");
    client.get(&url(&proxy, "/")).await.expect("GET");
    assert_eq!(lines(&path).len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_unwritable_access_log_loses_no_request() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let yaml = simple("auto", "http1", &[server.addr()], "")
        + "accessLog:\n  output: /nonexistent-dir/trellis/access.log\n";
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();
    for _ in 0..3 {
        let resp = client.get(&url(&proxy, "/")).await.expect("GET");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert!(ProxyConfig::from_yaml(
        &(simple("auto", "http1", &[server.addr()], "") + "accessLog:\n  output: logs/a.log\n")
    )
    .is_err_and(|e| e.to_string().contains("accessLog.output")));
}

#[tokio::test]
async fn the_request_series_limit_is_configurable_and_reloadable() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let config = |limit: usize| {
        let yaml = simple("auto", "http1", &[server.addr()], "")
            + &format!("maxRequestSeries: {limit}\nadmin: 127.0.0.1:0\n");
        ProxyConfig::from_yaml(&yaml).expect("valid")
    };
    let proxy = trellis_proxy::Proxy::start(config(2)).await.expect("start");
    let client = HttpClient::http1();
    // Each status is a series of its own.
    for status in [200, 201, 202, 203, 204] {
        client
            .get(&url(&proxy, &format!("/status/{status}")))
            .await
            .expect("GET");
    }
    let overflowed =
        |proxy: &trellis_proxy::Proxy| counter(proxy, "trellis_metric_series_overflow_total");
    assert_eq!(overflowed(&proxy), 3);
    proxy.reload(config(10)).await.expect("reload");
    for status in [205, 206] {
        client
            .get(&url(&proxy, &format!("/status/{status}")))
            .await
            .expect("GET");
    }
    assert_eq!(overflowed(&proxy), 3, "a raised limit makes room");
    // With request metrics off nothing more is counted.
    let mut off = config(10);
    off.request_metrics = false;
    proxy.reload(off).await.expect("reload");
    let before = proxy.metrics().encode();
    client.get(&url(&proxy, "/status/207")).await.expect("GET");
    client.get(&url(&proxy, "/status/200")).await.expect("GET");
    assert_eq!(proxy.metrics().encode(), before);
    assert!(ProxyConfig::from_yaml(
        &(simple("auto", "http1", &[server.addr()], "") + "maxRequestSeries: 0\n")
    )
    .is_err_and(|e| e.to_string().contains("maxRequestSeries")));
}
