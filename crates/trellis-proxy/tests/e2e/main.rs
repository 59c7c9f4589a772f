//! End-to-end tests of the proxy: real sockets on loopback, real sample servers from
//! `trellis-testkit`, the proxy started in-process on port 0.

mod authz;
mod balancers;
mod connect;
mod egress;
mod faults;
mod filters;
mod grpc;
mod http;
mod lifecycle;
mod limits;
mod locality;
mod malformed;
mod matching;
mod mtls;
mod observe;
mod recorder;
mod resilience;
mod retries;
mod routing;
mod streams;
mod tcp;
mod timeouts;
mod tls_passthrough;

use std::net::SocketAddr;

use trellis_proxy::{Proxy, ProxyConfig};

/// Starts a proxy from YAML. `{admin}` defaults to port 0.
pub async fn start(yaml: &str) -> Proxy {
    let mut yaml = yaml.to_string();
    if !yaml.contains("admin:") {
        yaml.push_str("\nadmin: 127.0.0.1:0\n");
    }
    let config =
        ProxyConfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"));
    Proxy::start(config).await.expect("proxy starts")
}

/// A one-listener, one-backend configuration.
pub fn simple(
    listener_protocol: &str,
    backend_protocol: &str,
    endpoints: &[SocketAddr],
    extra_route: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
    format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: {listener_protocol}
    routes:
      - backend: app
        {extra_route}
backends:
  - name: app
    protocol: {backend_protocol}
    endpoints: [{}]
"#,
        endpoints.join(", ")
    )
}

/// Appended to a config whose last backend takes a burst of requests at once, before
/// the proxy has measured it: the adaptive concurrency limit starts high enough.
pub const BURSTY: &str = "    resilience: {adaptiveConcurrency: {initialLimit: 100}}\n";

/// Reads an HTTP/1 response head byte by byte, so nothing after it is consumed;
/// returned lower case.
pub async fn read_head(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// `http://ADDR{path}` for the listener `web`.
pub fn url(proxy: &Proxy, path: &str) -> String {
    format!("http://{}{path}", addr(proxy))
}

pub fn addr(proxy: &Proxy) -> SocketAddr {
    proxy.listener_addr("web").expect("listener web")
}

/// The value of the series `name{labels}` in the proxy's admin metrics; 0 when absent.
pub fn counter(proxy: &Proxy, series: &str) -> u64 {
    let prefix = format!("{series} ");
    proxy
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The statuses of two POSTs to `/echo` through the listener `web`: a request that is
/// never replayed, so a round-robin backend gives each of two endpoints one.
pub async fn post_twice(proxy: &Proxy) -> [::http::StatusCode; 2] {
    let client = trellis_testkit::http::HttpClient::http1();
    let mut statuses = [::http::StatusCode::OK; 2];
    for status in &mut statuses {
        *status = client
            .post(&url(proxy, "/echo"), "x")
            .await
            .expect("response")
            .status;
    }
    statuses
}
