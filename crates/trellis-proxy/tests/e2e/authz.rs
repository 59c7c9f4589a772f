//! Authorization on an inbound listener: outbound proxies with different identities
//! call one inbound proxy over mTLS, whose policies allow one and deny the other, over
//! HTTP, gRPC and opaque TCP; a reload changes the policies for open connections.
//! Certificates come from a CA made in each test.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use trellis_identity::CertificateAuthority;
use trellis_proxy::{Proxy, ProxyConfig};
use trellis_testkit::assert_eventually;
use trellis_testkit::grpc::{GrpcClient, GrpcServer};
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
use trellis_testkit::tcp::TcpEchoServer;

use super::mtls::{id, listener, metric, root, store};
use super::start;

/// Only `web` may call; nobody may reach `/admin`; anything else is denied.
const POLICIES: &str = r#"{defaultAction: deny, policies: [{name: shop/allow-web, rules: [{from: [{identities: ["spiffe://trellis.local/ns/shop/sa/web"]}]}]}, {name: shop/deny-admin, action: deny, rules: [{to: [{paths: [{prefix: /admin}]}]}]}]}"#;

/// Listener protocol and backend protocol, on both sides.
type Protocols = (&'static str, &'static str);
const HTTP: Protocols = ("auto", "http1");
const GRPC: Protocols = ("grpc", "http2");
const TCP: Protocols = ("tcp", "http1");

/// The inbound proxy's configuration: listener `inbound` (permissive mTLS) in front of
/// `app`, with `authorization` (a YAML flow mapping).
fn callee_yaml(protocols: Protocols, app: SocketAddr, authorization: &str) -> String {
    let (listener, backend) = protocols;
    format!(
        r#"
listeners:
  - name: inbound
    address: 127.0.0.1:0
    protocol: {listener}
    mtls: permissive
    routes: [{{backend: app}}]
    authorization: {authorization}
backends:
  - name: app
    protocol: {backend}
    endpoints: [{app}]
admin: 127.0.0.1:0
"#
    )
}

/// The inbound proxy, as `cart`.
async fn callee(
    ca: &CertificateAuthority,
    protocols: Protocols,
    app: SocketAddr,
    authorization: &str,
) -> Proxy {
    let proxy = start(&callee_yaml(protocols, app, authorization)).await;
    proxy
        .set_identity(store(ca, &id("cart")))
        .expect("inbound identity");
    proxy
}

/// An outbound proxy with identity `me`: listener `web` in front of the inbound proxy
/// at `to`.
async fn caller(
    ca: &CertificateAuthority,
    me: &str,
    protocols: Protocols,
    to: SocketAddr,
) -> Proxy {
    let (listener, backend) = protocols;
    let proxy = start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: {listener}
    routes: [{{backend: mesh}}]
backends:
  - name: mesh
    protocol: {backend}
    endpoints: [{{address: "{to}", identity: "{cart}"}}]
"#,
        cart = id("cart")
    ))
    .await;
    proxy
        .set_identity(store(ca, &id(me)))
        .expect("outbound identity");
    proxy
}

fn entry(proxy: &Proxy) -> SocketAddr {
    proxy.listener_addr("web").expect("listener web")
}

fn url(proxy: &Proxy, path: &str) -> String {
    format!("http://{}{path}", entry(proxy))
}

fn decided(outcome: &str, policy: &str) -> String {
    format!(r#"trellis_authz_{outcome}_total{{listener="inbound",policy="{policy}"}}"#)
}

#[tokio::test]
async fn http_is_allowed_by_identity_and_denied_with_the_deciding_policy() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();
    let cart = callee(&ca, HTTP, app.addr(), POLICIES).await;
    let web = caller(&ca, "web", HTTP, listener(&cart)).await;
    let other = caller(&ca, "other", HTTP, listener(&cart)).await;
    let client = HttpClient::http1();

    let resp = client.get(&url(&web, "/")).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());

    // Deny wins over allow; another identity matches no Allow policy; plaintext to the
    // permissive listener has no identity at all.
    let plaintext = format!("http://{}/", listener(&cart));
    let cases = [
        (url(&web, "/admin/users"), "shop/deny-admin"),
        (url(&other, "/"), "no-allow-match"),
        (plaintext, "no-allow-match"),
    ];
    for (target, policy) in cases {
        let resp = client.get(&target).await.expect("response");
        assert_eq!(
            resp.status,
            StatusCode::FORBIDDEN,
            "{target}: {}",
            resp.text()
        );
        assert_eq!(
            resp.headers["trellis-error"],
            format!("denied by {policy}").as_str(),
            "{target}"
        );
    }
    assert_eq!(app.requests(), 1, "denied requests never reach the app");
    assert_eq!(metric(&cart, &decided("allowed", "shop/allow-web")), 1);
    assert_eq!(metric(&cart, &decided("denied", "shop/deny-admin")), 1);
    assert_eq!(metric(&cart, &decided("denied", "no-allow-match")), 2);
    // Denied requests are counted by caller: web and other over mTLS, one without.
    let text = cart.metrics().encode();
    let forbidden: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("trellis_requests_total{") && l.contains(r#"status="403""#))
        .collect();
    assert_eq!(forbidden.len(), 3, "{forbidden:?}");
    assert!(forbidden
        .iter()
        .all(|l| l.contains(r#"error="denied""#) && l.ends_with(" 1")));
    assert!(forbidden
        .iter()
        .any(|l| l.contains(r#"peer_identity="","#) && l.contains(r#"tls="false""#)));
    assert!(forbidden
        .iter()
        .any(|l| l.contains("/sa/other\",") && l.contains(r#"tls="true""#)));
}

#[tokio::test]
async fn a_reload_applies_to_the_next_request_of_open_connections() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();
    let cart = callee(&ca, HTTP, app.addr(), POLICIES).await;
    let other = caller(&ca, "other", HTTP, listener(&cart)).await;
    let client = HttpClient::http1();
    let status = |resp: trellis_testkit::http::TestResponse| resp.status;

    let first = client.get(&url(&other, "/")).await.expect("response");
    assert_eq!(status(first), StatusCode::FORBIDDEN);

    // The whole namespace may call now.
    let widened = POLICIES.replace(
        r#"identities: ["spiffe://trellis.local/ns/shop/sa/web"]"#,
        "namespaces: [shop]",
    );
    assert_ne!(widened, POLICIES);
    let reload = |policies: &str| {
        ProxyConfig::from_yaml(&callee_yaml(HTTP, app.addr(), policies)).expect("valid")
    };
    cart.reload(reload(&widened)).await.expect("reload");
    let second = client.get(&url(&other, "/")).await.expect("response");
    assert_eq!(status(second), StatusCode::OK);

    cart.reload(reload(POLICIES)).await.expect("reload");
    let third = client.get(&url(&other, "/")).await.expect("response");
    assert_eq!(status(third), StatusCode::FORBIDDEN);

    // One mTLS connection between the proxies carried all three requests.
    let connections = r#"trellis_connections_total{listener="inbound",protocol="http2"}"#;
    assert_eq!(metric(&cart, connections), 1);
    assert_eq!(metric(&cart, &decided("denied", "no-allow-match")), 2);
    assert_eq!(metric(&cart, &decided("allowed", "shop/allow-web")), 1);
}

#[tokio::test]
async fn grpc_calls_are_denied_with_permission_denied() {
    let server = GrpcServer::start("echo").await.expect("server");
    let ca = root();
    let cart = callee(&ca, GRPC, server.addr(), POLICIES).await;
    let web = caller(&ca, "web", GRPC, listener(&cart)).await;
    let other = caller(&ca, "other", GRPC, listener(&cart)).await;

    let mut allowed = GrpcClient::connect(entry(&web)).await.expect("connect");
    let reply = allowed.unary("hello").await.expect("unary");
    assert_eq!(reply.message, "hello");

    let mut denied = GrpcClient::connect(entry(&other)).await.expect("connect");
    let status = denied.unary("hello").await.expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "denied by no-allow-match");
    assert_eq!(metric(&cart, &decided("denied", "no-allow-match")), 1);
}

#[tokio::test]
async fn tcp_connections_of_a_denied_identity_are_closed() {
    let echo = TcpEchoServer::start().await.expect("server");
    let ca = root();
    // The listener's port is random; `port` says which port rules see.
    let policies = r#"{port: 5432, policies: [{name: shop/web-to-db, rules: [{from: [{identities: ["spiffe://trellis.local/ns/shop/sa/web"]}], to: [{ports: [5432]}]}]}]}"#;
    let cart = callee(&ca, TCP, echo.addr(), policies).await;
    let web = caller(&ca, "web", TCP, listener(&cart)).await;
    let other = caller(&ca, "other", TCP, listener(&cart)).await;

    let mut conn = TcpStream::connect(entry(&web)).await.expect("connect");
    conn.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    conn.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");

    let mut conn = TcpStream::connect(entry(&other)).await.expect("connect");
    // The write may land before the inbound proxy closes; nothing comes back.
    let _ = conn.write_all(b"ping").await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut received))
        .await
        .expect("the connection is closed");
    assert!(received.is_empty(), "{read:?}: got {received:?}");
    assert_eventually!(metric(&cart, &decided("denied", "no-allow-match")) == 1);
    assert_eq!(metric(&cart, &decided("allowed", "shop/web-to-db")), 1);
}
