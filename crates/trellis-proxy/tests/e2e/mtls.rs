//! Mutual TLS between two proxies: an outbound proxy whose endpoint has an identity, in
//! front of an inbound proxy whose listener takes mTLS, in front of a sample service.
//! Certificates come from a CA made in each test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_identity::{CertStore, CertificateAuthority, Credentials, SpiffeId, WorkloadKey};
use trellis_proxy::tls::PEER_IDENTITY_HEADER;
use trellis_proxy::Proxy;
use trellis_testkit::assert_eventually;
use trellis_testkit::grpc::{GrpcClient, GrpcServer};
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
use trellis_testkit::load::run_load_until;
use trellis_testkit::tcp::{SpeakFirstServer, TcpEchoServer};

use super::start;

const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn id(sa: &str) -> SpiffeId {
    SpiffeId::in_default_domain("shop", sa).expect("id")
}

pub(super) fn root() -> CertificateAuthority {
    CertificateAuthority::generate_root("trellis.local", HOUR).expect("root")
}

/// A fresh key and a ten-minute certificate for `me`, as if issued at `at`.
fn credentials_at(ca: &CertificateAuthority, me: &SpiffeId, at: SystemTime) -> Credentials {
    let key = WorkloadKey::generate().expect("key");
    let csr = key.csr(me).expect("csr");
    let issued = ca
        .sign_csr_at(&csr, me, at, Duration::from_secs(600))
        .expect("signed");
    Credentials::new(&key, &issued.chain_pem).expect("credentials")
}

fn credentials(ca: &CertificateAuthority, me: &SpiffeId) -> Credentials {
    credentials_at(ca, me, SystemTime::now())
}

pub(super) fn store(ca: &CertificateAuthority, me: &SpiffeId) -> Arc<CertStore> {
    CertStore::new(credentials(ca, me), ca.trust_bundle())
}

/// What runs through the two proxies.
#[derive(Clone, Copy)]
enum Traffic {
    /// HTTP/1.1 clients, an HTTP/1.1 application.
    Http,
    /// gRPC clients and application.
    Grpc,
    /// Opaque TCP.
    Tcp,
}

impl Traffic {
    /// Outbound listener protocol, backend protocol (both proxies), inbound listener
    /// protocol.
    fn protocols(self) -> (&'static str, &'static str, &'static str) {
        match self {
            // `http2` between the proxies, as the control plane compiles it.
            Traffic::Http => ("auto", "http2", "auto"),
            Traffic::Grpc => ("grpc", "http2", "grpc"),
            Traffic::Tcp => ("tcp", "http1", "tcp"),
        }
    }
}

/// An inbound proxy: listener `inbound` with `mtls` in front of `app`.
async fn inbound(traffic: Traffic, mtls: &str, app: SocketAddr) -> Proxy {
    let (_, backend, listener) = traffic.protocols();
    // The application behind the inbound proxy speaks HTTP/1.1, whatever crosses the
    // mesh.
    let backend = match traffic {
        Traffic::Http => "http1",
        _ => backend,
    };
    start(&format!(
        r#"
listeners:
  - name: inbound
    address: 127.0.0.1:0
    protocol: {listener}
    mtls: {mtls}
    routes: [{{backend: app}}]
backends:
  - name: app
    protocol: {backend}
    endpoints: [{app}]
"#
    ))
    .await
}

/// An outbound proxy: listener `web` in front of the inbound proxy at `to`, which must
/// prove `expect`.
async fn outbound(traffic: Traffic, to: SocketAddr, expect: &SpiffeId) -> Proxy {
    let (listener, backend, _) = traffic.protocols();
    start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: {listener}
    routes: [{{backend: mesh}}]
backends:
  - name: mesh
    protocol: {backend}
    endpoints: [{{address: "{to}", identity: "{expect}"}}]
"#
    ))
    .await
}

/// Two proxies with their certificate stores: `web` (outbound) calls `cart` (inbound,
/// strict).
struct Mesh {
    ca: CertificateAuthority,
    outbound: Proxy,
    inbound: Proxy,
    web: Arc<CertStore>,
    cart: Arc<CertStore>,
}

impl Mesh {
    async fn start(traffic: Traffic, app: SocketAddr) -> Self {
        let ca = root();
        let inbound = inbound(traffic, "strict", app).await;
        let outbound = outbound(traffic, listener(&inbound), &id("cart")).await;
        let (web, cart) = (store(&ca, &id("web")), store(&ca, &id("cart")));
        outbound
            .set_identity(web.clone())
            .expect("outbound identity");
        inbound
            .set_identity(cart.clone())
            .expect("inbound identity");
        Self {
            ca,
            outbound,
            inbound,
            web,
            cart,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.outbound.listener_addr("web").expect("web")
        )
    }
}

pub(super) fn listener(inbound: &Proxy) -> SocketAddr {
    inbound.listener_addr("inbound").expect("listener inbound")
}

/// The value of one series in a proxy's metrics; 0 when absent.
pub(super) fn metric(proxy: &Proxy, series: &str) -> u64 {
    let text = proxy.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

pub(super) fn handshakes(direction: &str, reason: &str) -> String {
    let result = if reason.is_empty() { "ok" } else { "error" };
    format!(
        r#"trellis_tls_handshakes_total{{direction="{direction}",result="{result}",reason="{reason}"}}"#
    )
}

fn plaintext(action: &str) -> String {
    format!(r#"trellis_tls_plaintext_connections_total{{listener="inbound",action="{action}"}}"#)
}

fn spoofed(url: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header(
            PEER_IDENTITY_HEADER,
            "spiffe://trellis.local/ns/evil/sa/admin",
        )
        .body(Full::default())
        .expect("request")
}

#[tokio::test]
async fn http_between_proxies_is_mtls_and_carries_the_peer_identity() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mesh = Mesh::start(Traffic::Http, app.addr()).await;
    let resp = HttpClient::http1()
        .send(spoofed(&mesh.url("/headers")))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let seen = resp.text();
    // The inbound proxy speaks the application's HTTP/1.1, whatever crossed the mesh.
    assert!(seen.starts_with("version: HTTP/1.1"), "{seen}");
    assert!(
        seen.contains("x-trellis-peer-identity: spiffe://trellis.local/ns/shop/sa/web\n"),
        "{seen}"
    );
    assert!(
        !seen.contains("evil"),
        "a client-sent identity got through: {seen}"
    );
    assert_eq!(seen.matches(PEER_IDENTITY_HEADER).count(), 1, "{seen}");

    // Requests share the one connection the first one opened.
    for _ in 0..5 {
        let resp = HttpClient::http1()
            .get(&mesh.url("/"))
            .await
            .expect("response");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(metric(&mesh.outbound, &handshakes("outbound", "")), 1);
    assert_eq!(metric(&mesh.inbound, &handshakes("inbound", "")), 1);
    assert_eq!(metric(&mesh.inbound, &plaintext("accepted")), 0);
    let h2 = r#"trellis_connections_total{listener="inbound",protocol="http2"}"#;
    assert_eq!(
        metric(&mesh.inbound, h2),
        1,
        "HTTP/1 is carried as HTTP/2 between proxies"
    );
}

#[tokio::test]
async fn grpc_and_tcp_cross_the_mesh_over_mtls() {
    let grpc = GrpcServer::start("echo").await.expect("server");
    let mesh = Mesh::start(Traffic::Grpc, grpc.addr()).await;
    let web = mesh.outbound.listener_addr("web").expect("web");
    let mut client = GrpcClient::connect(web).await.expect("connect");
    let reply = client.unary("hello").await.expect("unary");
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("hello", "echo")
    );
    assert_eq!(
        client.server_stream("s").await.expect("server stream"),
        ["s 0", "s 1", "s 2"]
    );
    let msgs: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(client.bidi(msgs.clone()).await.expect("bidi"), msgs);
    assert_eq!(metric(&mesh.inbound, &handshakes("inbound", "")), 1);

    let echo = TcpEchoServer::start().await.expect("server");
    let mesh = Mesh::start(Traffic::Tcp, echo.addr()).await;
    let web = mesh.outbound.listener_addr("web").expect("web");
    let mut conn = TcpStream::connect(web).await.expect("connect");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_all(&payload).await.expect("write");
    // Half-close crosses the mTLS hop as close_notify; the echo still arrives in full.
    conn.shutdown().await.expect("shutdown write");
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed)
        .await
        .expect("read to the end");
    assert!(echoed == payload, "echoed {} bytes", echoed.len());
    assert_eq!(metric(&mesh.outbound, &handshakes("outbound", "")), 1);
    assert_eq!(metric(&mesh.inbound, &handshakes("inbound", "")), 1);
    let tcp = r#"trellis_connections_total{listener="inbound",protocol="tcp"}"#;
    assert_eq!(metric(&mesh.inbound, tcp), 1);
}

#[tokio::test]
async fn websocket_upgrade_crosses_the_mesh_on_its_own_mtls_connection() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mesh = Mesh::start(Traffic::Http, app.addr()).await;
    let web = mesh.outbound.listener_addr("web").expect("web");
    let mut conn = TcpStream::connect(web).await.expect("connect");
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = super::read_head(&mut conn).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    conn.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
    let h1 = r#"trellis_connections_total{listener="inbound",protocol="http1"}"#;
    assert_eq!(
        metric(&mesh.inbound, h1),
        1,
        "the upgrade travels as ALPN http/1.1"
    );
    assert_eq!(metric(&mesh.inbound, &handshakes("inbound", "")), 1);
}

/// A client that sends nothing (a server-speaks-first protocol) is plaintext once the
/// detect timeout passes: served when permissive, closed when strict.
#[tokio::test]
async fn silent_clients_are_plaintext() {
    let server = SpeakFirstServer::start(b"220 ready\r\n")
        .await
        .expect("server");
    for mode in ["permissive", "strict"] {
        let proxy = start(&format!(
            r#"
listeners:
  - name: inbound
    address: 127.0.0.1:0
    protocol: tcp
    detectTimeout: 50ms
    mtls: {mode}
    routes: [{{backend: app}}]
backends:
  - name: app
    endpoints: [{}]
"#,
            server.addr()
        ))
        .await;
        let mut conn = TcpStream::connect(listener(&proxy)).await.expect("connect");
        if mode == "permissive" {
            let mut greeting = [0u8; 11];
            conn.read_exact(&mut greeting).await.expect("greeting");
            assert_eq!(&greeting, b"220 ready\r\n");
            assert_eq!(metric(&proxy, &plaintext("accepted")), 1);
        } else {
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got).await;
            assert!(got.is_empty(), "{got:?}");
            assert_eq!(metric(&proxy, &plaintext("refused")), 1);
        }
    }
}

#[tokio::test]
async fn plaintext_is_refused_when_strict_and_counted_when_permissive() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();
    for mode in ["strict", "permissive"] {
        let proxy = inbound(Traffic::Http, mode, app.addr()).await;
        proxy
            .set_identity(store(&ca, &id("cart")))
            .expect("identity");
        let url = format!("http://{}/headers", listener(&proxy));
        let result = HttpClient::http1().send(spoofed(&url)).await;
        if mode == "strict" {
            assert!(
                result.is_err(),
                "strict listener answered plaintext: {result:?}"
            );
            assert_eventually!(metric(&proxy, &plaintext("refused")) == 1);
            assert_eq!(metric(&proxy, &plaintext("accepted")), 0);
        } else {
            let seen = result.expect("permissive listener answers").text();
            // Every listener drops a client's identity claim; plaintext gets none set.
            assert!(!seen.contains(PEER_IDENTITY_HEADER), "{seen}");
            assert_eq!(metric(&proxy, &plaintext("accepted")), 1);
            assert_eq!(metric(&proxy, &plaintext("refused")), 0);
        }
    }
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn an_endpoint_proving_another_identity_is_refused() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();
    let inbound = inbound(Traffic::Http, "strict", app.addr()).await;
    inbound
        .set_identity(store(&ca, &id("payments")))
        .expect("identity");
    let outbound = outbound(Traffic::Http, listener(&inbound), &id("cart")).await;
    outbound
        .set_identity(store(&ca, &id("web")))
        .expect("identity");

    let url = format!("http://{}/", outbound.listener_addr("web").expect("web"));
    let resp = HttpClient::http1().get(&url).await.expect("response");
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
    assert_eq!(resp.headers["trellis-error"], "tls handshake failed");
    assert_eq!(
        metric(&outbound, &handshakes("outbound", "identity_mismatch")),
        1
    );
    assert_eventually!(metric(&inbound, &handshakes("inbound", "peer_refused")) == 1);
    assert_eq!(app.requests(), 0);
}

/// Which side holds a bad certificate, and what each side counts.
#[tokio::test]
async fn untrusted_and_expired_certificates_are_refused() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();
    let stranger = root();
    let an_hour_ago = SystemTime::now() - HOUR;
    let good = |me: &SpiffeId| credentials(&ca, me);
    let untrusted = |me: &SpiffeId| credentials(&stranger, me);
    let expired = |me: &SpiffeId| credentials_at(&ca, me, an_hour_ago);
    type Issue<'a> = &'a dyn Fn(&SpiffeId) -> Credentials;
    let cases: [(&str, Issue<'_>, Issue<'_>, &str, &str); 4] = [
        (
            "client untrusted",
            &untrusted,
            &good,
            "peer_refused",
            "untrusted",
        ),
        ("client expired", &expired, &good, "peer_refused", "expired"),
        (
            "server untrusted",
            &good,
            &untrusted,
            "untrusted",
            "peer_refused",
        ),
        ("server expired", &good, &expired, "expired", "peer_refused"),
    ];
    for (case, web_creds, cart_creds, outbound_reason, inbound_reason) in cases {
        let inbound = inbound(Traffic::Http, "strict", app.addr()).await;
        inbound
            .set_identity(CertStore::new(cart_creds(&id("cart")), ca.trust_bundle()))
            .expect("identity");
        let outbound = outbound(Traffic::Http, listener(&inbound), &id("cart")).await;
        outbound
            .set_identity(CertStore::new(web_creds(&id("web")), ca.trust_bundle()))
            .expect("identity");
        let url = format!("http://{}/", outbound.listener_addr("web").expect("web"));
        let resp = HttpClient::http1().get(&url).await.expect("response");
        assert_eq!(
            resp.status,
            StatusCode::BAD_GATEWAY,
            "{case}: {}",
            resp.text()
        );
        assert_eq!(
            resp.headers["trellis-error"], "tls handshake failed",
            "{case}"
        );
        assert_eq!(
            metric(&outbound, &handshakes("outbound", outbound_reason)),
            1,
            "{case}: {}",
            outbound.metrics().encode()
        );
        assert_eventually!(
            metric(&inbound, &handshakes("inbound", inbound_reason)) == 1,
            "{case}: {}",
            inbound.metrics().encode()
        );
    }
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn before_a_proxy_has_its_certificate() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let ca = root();

    // An outbound proxy without a certificate reaches an endpoint with an identity in
    // plaintext, which a permissive listener takes.
    let permissive = inbound(Traffic::Http, "permissive", app.addr()).await;
    permissive
        .set_identity(store(&ca, &id("cart")))
        .expect("identity");
    let outbound_plain = outbound(Traffic::Http, listener(&permissive), &id("cart")).await;
    let url = format!(
        "http://{}/headers",
        outbound_plain.listener_addr("web").expect("web")
    );
    let resp = HttpClient::http1().get(&url).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        !resp.text().contains(PEER_IDENTITY_HEADER),
        "{}",
        resp.text()
    );
    assert_eq!(metric(&permissive, &plaintext("accepted")), 1);

    // A listener whose proxy has no certificate refuses mTLS clients.
    let bare = inbound(Traffic::Http, "permissive", app.addr()).await;
    let outbound_tls = outbound(Traffic::Http, listener(&bare), &id("cart")).await;
    outbound_tls
        .set_identity(store(&ca, &id("web")))
        .expect("identity");
    let url = format!(
        "http://{}/",
        outbound_tls.listener_addr("web").expect("web")
    );
    let resp = HttpClient::http1().get(&url).await.expect("response");
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eventually!(metric(&bare, &handshakes("inbound", "no_identity")) == 1);
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn admin_shows_identity_and_certificate_expiry() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mesh = Mesh::start(Traffic::Http, app.addr()).await;
    let admin = |proxy: &Proxy, path: &str| format!("http://{}{path}", proxy.admin_addr());
    let client = HttpClient::http1();

    let body = client
        .get(&admin(&mesh.outbound, "/config"))
        .await
        .expect("config")
        .body;
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let config: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(config["listeners"][0]["mtls"], "disabled");
    assert_eq!(
        config["backends"][0]["endpoints"][0]["identity"],
        "spiffe://trellis.local/ns/shop/sa/cart"
    );
    assert_eq!(
        config["identity"]["spiffeId"],
        "spiffe://trellis.local/ns/shop/sa/web"
    );
    let leaf = mesh.web.credentials();
    assert_eq!(
        config["identity"]["certificate"]["fingerprint"],
        leaf.leaf().fingerprint.as_str()
    );
    let not_after = config["identity"]["certificate"]["notAfter"]
        .as_str()
        .expect("notAfter");
    assert!(
        not_after.ends_with('Z') && not_after.len() == 20,
        "{not_after}"
    );
    assert_eq!(
        config["identity"]["trustAnchors"][0]["fingerprint"],
        mesh.ca.certificate().fingerprint.as_str()
    );

    let inbound_config: serde_json::Value = serde_json::from_slice(
        &client
            .get(&admin(&mesh.inbound, "/config"))
            .await
            .expect("config")
            .body,
    )
    .expect("json");
    assert_eq!(inbound_config["listeners"][0]["mtls"], "strict");

    let expiry = |kind: &str, fingerprint: &str, at: SystemTime| {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        format!(
            r#"trellis_tls_certificate_expiry_timestamp_seconds{{kind="{kind}",fingerprint="{fingerprint}"}} {secs}"#
        )
    };
    let metrics = client
        .get(&admin(&mesh.outbound, "/metrics"))
        .await
        .expect("metrics")
        .text();
    let root = mesh.ca.certificate();
    for want in [
        expiry("leaf", &leaf.leaf().fingerprint, leaf.not_after()),
        expiry("trust_anchor", &root.fingerprint, root.not_after),
    ] {
        assert!(metrics.contains(&want), "missing {want} in\n{metrics}");
    }
    // A renewal replaces the leaf's series rather than adding one.
    mesh.web.set_credentials(credentials(&mesh.ca, &id("web")));
    let metrics = mesh.outbound.metrics().encode();
    assert_eq!(metrics.matches(r#"kind="leaf""#).count(), 1, "{metrics}");
    assert!(!metrics.contains(&leaf.leaf().fingerprint), "{metrics}");
}

/// Certificates renewed on both proxies several times, then the trust anchor rotated,
/// all under load: no request fails, and each change is followed by a new connection.
#[tokio::test]
async fn rotation_under_load_fails_no_request() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mesh = Mesh::start(Traffic::Http, app.addr()).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(run_load_until(
        HttpClient::http1(),
        mesh.url("/"),
        8,
        1_000_000,
        stop_rx,
    ));
    let connected = || metric(&mesh.outbound, &handshakes("outbound", ""));
    // Waits until requests have flowed since the last change and the outbound proxy
    // has opened a new connection since `before`.
    let settled = |before: u64| {
        let (app, connected) = (&app, &connected);
        async move {
            let served = app.requests();
            assert_eventually!(app.requests() >= served + 50);
            assert_eventually!(connected() > before, "no new connection after the change");
        }
    };
    settled(0).await;

    for _ in 0..3 {
        let before = connected();
        mesh.web.set_credentials(credentials(&mesh.ca, &id("web")));
        mesh.cart
            .set_credentials(credentials(&mesh.ca, &id("cart")));
        settled(before).await;
    }

    // Trust-anchor rotation: both roots trusted, then leaves from the new root, then
    // the old root removed.
    let new_ca = root();
    let mut overlap = mesh.ca.trust_bundle();
    overlap.merge(&new_ca.trust_bundle());
    let before = connected();
    mesh.web.set_trust_bundle(overlap.clone());
    mesh.cart.set_trust_bundle(overlap.clone());
    settled(before).await;

    let before = connected();
    mesh.web.set_credentials(credentials(&new_ca, &id("web")));
    mesh.cart.set_credentials(credentials(&new_ca, &id("cart")));
    settled(before).await;

    let mut rotated = overlap;
    assert!(rotated.remove(&mesh.ca.certificate().fingerprint));
    let before = connected();
    mesh.web.set_trust_bundle(rotated.clone());
    mesh.cart.set_trust_bundle(rotated);
    // Connections made from here on can only use certificates from the new root.
    settled(before).await;

    stop_tx.send(true).expect("stop load");
    let report = load.await.expect("load task");
    assert_eq!(
        report.failed, 0,
        "failures during rotation: {:?}",
        report.errors
    );
    assert!(report.ok > 300, "only {} requests ran", report.ok);
    let inbound_metrics = mesh.inbound.metrics().encode();
    assert!(
        !inbound_metrics.contains(r#"result="error""#),
        "{inbound_metrics}"
    );
    assert!(
        !mesh
            .outbound
            .metrics()
            .encode()
            .contains(r#"result="error""#),
        "outbound handshakes failed"
    );
}
