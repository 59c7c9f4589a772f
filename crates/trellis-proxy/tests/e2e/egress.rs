//! Egress: listeners for hosts outside the mesh (what an ExternalService compiles to).
//! The "external" server is real HTTPS on loopback with a certificate from a test CA;
//! the proxy reaches it by resolving a host name, opens TLS to it for applications that
//! speak plain HTTP (origination), or passes the application's own TLS through, and
//! refuses and counts calls to hosts nobody declared.

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_proxy::Proxy;
use trellis_testkit::dns::StaticDns;
use trellis_testkit::http::{HttpClient, TestResponse};
use trellis_testkit::tls::client_hello;
use trellis_testkit::tls::https::{https_get, HttpsServer, TestCa};

use super::{counter, start};

const HOST_NAME: &str = "api.payments.example";

/// Far longer than any step takes; reaching it means something hung.
const NO_HANG: Duration = Duration::from_secs(10);

/// An `https` port (plain HTTP in, TLS out) and a `tls` port (passed through) for
/// `api.payments.example`, served at `<endpoint_host>:<server port>`, which the proxy
/// resolves itself. `ca_file` holds the CA certificates origination trusts.
fn config(server: &HttpsServer, endpoint_host: &str, ca_file: &std::path::Path) -> String {
    let port = server.addr().port();
    format!(
        r#"
listeners:
  - name: payments-https
    address: 127.0.0.1:0
    protocol: http1
    egress: true
    routes:
      - match: {{hosts: [{HOST_NAME}]}}
        backend: payments-https
  - name: payments-tls
    address: 127.0.0.1:0
    protocol: tls
    egress: true
    routes:
      - match: {{hosts: [{HOST_NAME}]}}
        backend: payments-tls
backends:
  - name: payments-https
    endpoints: ["{endpoint_host}:{port}"]
    originateTls: {{serverName: {HOST_NAME}, caFile: {}}}
  - name: payments-tls
    endpoints: ["{endpoint_host}:{port}"]
"#,
        ca_file.display()
    )
}

/// A proxy in front of `server`, which it finds by resolving `localhost`, trusting
/// `trusted` for origination.
async fn proxy_for(server: &HttpsServer, trusted: &TestCa) -> (Proxy, tempfile::TempDir) {
    proxy_with(server, trusted, "localhost", "").await
}

/// A proxy in front of `server`, found by resolving `endpoint_host`, with `extra` YAML.
async fn proxy_with(
    server: &HttpsServer,
    trusted: &TestCa,
    endpoint_host: &str,
    extra: &str,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &trusted.cert_pem).expect("CA file");
    let yaml = config(server, endpoint_host, &ca_file) + extra;
    (start(&yaml).await, dir)
}

/// A plain HTTP GET with `Host: host` to the listener `payments-https`.
async fn plain_get(proxy: &Proxy, host: &str) -> TestResponse {
    let addr = proxy.listener_addr("payments-https").expect("listener");
    let req = Request::get(format!("http://{addr}/charge"))
        .header(HOST, host)
        .body(Full::<Bytes>::default())
        .expect("request");
    tokio::time::timeout(NO_HANG, HttpClient::http1().send(req))
        .await
        .expect("an answer in time")
        .expect("a response")
}

/// The sum of the series of `metric` whose labels contain every one of `labels`.
fn sum(proxy: &Proxy, metric: &str, labels: &[&str]) -> u64 {
    let prefix = format!("{metric}{{");
    proxy
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn refused(proxy: &Proxy, listener: &str) -> u64 {
    counter(
        proxy,
        &format!(
            r#"trellis_outbound_refused_total{{listener="{listener}",reason="undeclared_host"}}"#
        ),
    )
}

#[tokio::test]
async fn plain_http_to_a_declared_host_leaves_as_tls_with_its_server_name() {
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &[HOST_NAME]).await.expect("server");
    let (proxy, _dir) = proxy_for(&server, &ca).await;

    for _ in 0..2 {
        let resp = plain_get(&proxy, HOST_NAME).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.text(), format!("sni={HOST_NAME} host={HOST_NAME}"));
    }
    // The second request reused the pooled TLS connection.
    assert_eq!(server.server_names(), vec![Some(HOST_NAME.to_string())]);
    // Counted per external service: its backend is the series' `backend`.
    let requests = sum(
        &proxy,
        "trellis_requests_total",
        &[r#"backend="payments-https""#, r#"status="200""#],
    );
    assert_eq!(requests, 2);
    assert_eq!(refused(&proxy, "payments-https"), 0);
}

#[tokio::test]
async fn a_request_for_an_undeclared_host_is_refused_and_counted() {
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &[HOST_NAME]).await.expect("server");
    let (proxy, _dir) = proxy_for(&server, &ca).await;

    let resp = plain_get(&proxy, "evil.example").await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.headers["trellis-error"], "undeclared external host");
    assert!(resp
        .text()
        .contains("\"evil.example\" is not a declared external host"));
    assert_eq!(refused(&proxy, "payments-https"), 1);
    assert!(
        server.server_names().is_empty(),
        "nothing reached the server"
    );

    // The declared host still goes through.
    assert_eq!(plain_get(&proxy, HOST_NAME).await.status, StatusCode::OK);
    assert_eq!(refused(&proxy, "payments-https"), 1);
}

#[tokio::test]
async fn a_certificate_the_configured_ca_did_not_sign_is_a_502_with_the_reason() {
    let real = TestCa::new("payments CA");
    let impostor = TestCa::new("impostor CA");
    let server = HttpsServer::start(&impostor, &[HOST_NAME])
        .await
        .expect("server");
    let (proxy, _dir) = proxy_for(&server, &real).await;

    let resp = plain_get(&proxy, HOST_NAME).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers["trellis-error"], "tls origination failed");
    let text = resp.text();
    assert!(text.contains(&format!("TLS to {HOST_NAME}")), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert_eq!(server.server_names(), vec![Some(HOST_NAME.to_string())]);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_502() {
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &["other.example"])
        .await
        .expect("server");
    let (proxy, _dir) = proxy_for(&server, &ca).await;

    let resp = plain_get(&proxy, HOST_NAME).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    let text = resp.text();
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[tokio::test]
async fn tls_to_a_declared_host_passes_through_and_other_server_names_are_refused() {
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &[HOST_NAME]).await.expect("server");
    let (proxy, _dir) = proxy_for(&server, &ca).await;
    let addr = proxy.listener_addr("payments-tls").expect("listener");

    // The application's own TLS, end to end: the proxy never holds a key for it.
    let (status, body) = tokio::time::timeout(
        NO_HANG,
        https_get(addr, HOST_NAME, ca.client_config(), "/charge"),
    )
    .await
    .expect("in time")
    .expect("a response through the proxy");
    assert_eq!(status, 200);
    assert_eq!(body, format!("sni={HOST_NAME} host={HOST_NAME}"));
    let backend = r#"backend="payments-tls""#;
    assert_eq!(sum(&proxy, "trellis_tcp_connections_total", &[backend]), 1);

    // Another server name: closed without a byte back, and counted.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(&client_hello("evil.example"))
        .await
        .expect("hello");
    let mut back = Vec::new();
    let read = tokio::time::timeout(NO_HANG, conn.read_to_end(&mut back)).await;
    assert!(read.expect("closed in time").is_ok_and(|n| n == 0) || back.is_empty());
    assert_eq!(refused(&proxy, "payments-tls"), 1);
    assert_eq!(server.server_names(), vec![Some(HOST_NAME.to_string())]);
}

#[tokio::test]
async fn the_host_name_itself_is_resolved_through_the_configured_resolver() {
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &[HOST_NAME]).await.expect("server");
    // Stands for the pod's upstream resolver, which knows the host's real address.
    let resolver = StaticDns::start(std::net::Ipv4Addr::LOCALHOST)
        .await
        .expect("DNS");
    let extra = format!("resolver: {}\n", resolver.addr());
    let (proxy, _dir) = proxy_with(&server, &ca, HOST_NAME, &extra).await;

    let resp = plain_get(&proxy, HOST_NAME).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.text(), format!("sni={HOST_NAME} host={HOST_NAME}"));
}

#[tokio::test]
async fn a_proxy_request_in_absolute_form_is_originated_too() {
    // What an application with HTTP_PROXY sends to its sidecar's HTTP proxy port.
    let ca = TestCa::new("payments CA");
    let server = HttpsServer::start(&ca, &[HOST_NAME]).await.expect("server");
    let (proxy, _dir) = proxy_for(&server, &ca).await;
    let addr = proxy.listener_addr("payments-https").expect("listener");
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET http://{HOST_NAME}/charge HTTP/1.1\r\nhost: {HOST_NAME}\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("request");
    let mut answer = String::new();
    tokio::time::timeout(NO_HANG, conn.read_to_string(&mut answer))
        .await
        .expect("in time")
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer.ends_with(&format!("sni={HOST_NAME} host={HOST_NAME}")),
        "{answer}"
    );
}
