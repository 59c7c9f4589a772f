//! mTLS across a mesh under its control plane: sidecars get their certificates over
//! their sessions, talk mTLS to each other, renew every few seconds and live through a
//! trust-anchor rotation, with traffic flowing the whole time; authorization policies
//! on the callers' identities reach the sidecars and apply live.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use trellis_control::ca::CaSettings;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_proxy::config::MtlsMode;
use trellis_proxy::control::Sidecar;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
use trellis_testkit::load::run_load_until;

mod support;

use support::{free_port, SidecarSpec};

const TOKEN: &str = "mtls-test-token";

const STRICT: &str = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {mtls: {mode: strict}}\n";

async fn control_plane(cert_ttl: Duration) -> ControlPlane {
    let ca = CaSettings {
        workload_validity: cert_ttl,
        ..Default::default()
    };
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_secs(30),
        ca,
    };
    ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane")
}

async fn sidecar(
    cp: &ControlPlane,
    service: &str,
    app: SocketAddr,
    upstream: Option<u16>,
) -> Sidecar {
    let grpc = format!("http://{}", cp.grpc_addr);
    let name = format!("{service}-1");
    let upstreams: Vec<(&str, u16)> = upstream.map(|p| ("books", p)).into_iter().collect();
    SidecarSpec {
        grpc: &grpc,
        token: TOKEN,
        name: &name,
        service,
        labels: &[],
        app,
        upstreams: &upstreams,
    }
    .start()
    .await
}

async fn post(cp: &ControlPlane, path: &str, body: &str) -> StatusCode {
    let req = http::Request::post(format!("http://{}{path}", cp.http_addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("request");
    HttpClient::http1().send(req).await.expect("post").status
}

/// The identity part of the sidecar's `/config`.
async fn identity(sidecar: &Sidecar) -> serde_json::Value {
    let url = format!("http://{}/config", sidecar.proxy.admin_addr());
    let text = HttpClient::http1().get(&url).await.expect("config").text();
    let config: serde_json::Value = serde_json::from_str(&text).expect("json");
    config["identity"].clone()
}

async fn metrics(sidecar: &Sidecar) -> String {
    let url = format!("http://{}/metrics", sidecar.proxy.admin_addr());
    HttpClient::http1().get(&url).await.expect("metrics").text()
}

/// web → books, books strict: web's proxy must present its certificate.
struct Mesh {
    cp: ControlPlane,
    web: Sidecar,
    books: Sidecar,
    url: String,
    _servers: (HttpServer, HttpServer),
}

async fn mesh(cert_ttl: Duration) -> Mesh {
    let cp = control_plane(cert_ttl).await;
    assert_eq!(post(&cp, "/api/v1/apply", STRICT).await, StatusCode::OK);
    let books_app = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("server");
    let web_app = HttpServer::start("web", ServerProtocol::Http1)
        .await
        .expect("server");
    let books = sidecar(&cp, "books", books_app.addr(), None).await;
    let upstream = free_port();
    let web = sidecar(&cp, "web", web_app.addr(), Some(upstream)).await;
    let url = format!("http://127.0.0.1:{upstream}/headers");
    // Ready when books enforces strict mTLS and a call arrives over mTLS: before their
    // certificates and snapshots, sidecars talk plaintext to each other.
    let strict = || {
        books
            .proxy
            .effective_config()
            .listeners
            .iter()
            .any(|l| l.name == "inbound" && l.mtls == MtlsMode::Strict)
    };
    assert_eventually!(
        strict()
            && HttpClient::http1()
                .get(&url)
                .await
                .is_ok_and(|r| r.status == StatusCode::OK
                    && r.text().contains("x-trellis-peer-identity: spiffe://"))
    );
    Mesh {
        cp,
        web,
        books,
        url,
        _servers: (books_app, web_app),
    }
}

#[tokio::test]
async fn sidecars_get_certificates_and_talk_mtls() {
    let m = mesh(Duration::from_secs(3600)).await;
    let resp = HttpClient::http1()
        .get(&m.url)
        .await
        .expect("through the mesh");
    // The app behind books learns who called, from web's certificate.
    assert!(
        resp.text()
            .contains("x-trellis-peer-identity: spiffe://trellis.local/ns/default/sa/web\n"),
        "{}",
        resp.text()
    );
    let books_metrics = metrics(&m.books).await;
    assert!(
        books_metrics.contains("trellis_tls_handshakes_total{direction=\"inbound\",result=\"ok\""),
        "{books_metrics}"
    );
    // Strict: plaintext straight to books' inbound port is refused.
    let inbound = m.books.proxy.effective_config().listeners[0].address;
    let direct = HttpClient::http1()
        .get(&format!("http://127.0.0.1:{}/", inbound.port()))
        .await;
    assert!(direct.is_err(), "plaintext was served: {direct:?}");
    assert_eventually!(metrics(&m.books).await.contains(
        "trellis_tls_plaintext_connections_total{listener=\"inbound\",action=\"refused\"}"
    ));
    // The operator sees both identities and their certificates' expiry.
    let proxies = m.cp.registry.list();
    assert!(
        proxies.iter().all(|p| p.certificate_expires.is_some()),
        "{proxies:?}"
    );
    m.cp.stop().await;
}

#[tokio::test]
async fn certificates_renewed_every_few_seconds_and_a_root_rotation_fail_no_request() {
    // Four-second certificates: each proxy renews about every two seconds.
    let m = mesh(Duration::from_secs(4)).await;
    let first_serial = identity(&m.web).await["certificate"]["serial"].clone();
    assert!(first_serial.is_string(), "{first_serial}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(run_load_until(
        HttpClient::http1(),
        m.url.clone(),
        4,
        1_000_000,
        stop_rx,
    ));
    // Renewals happen underneath.
    assert_eventually!(
        identity(&m.web).await["certificate"]["serial"] != first_serial,
        "web's certificate was never renewed"
    );
    // Then a full trust-anchor rotation.
    let before = identity(&m.books).await["trustAnchors"].clone();
    assert_eq!(
        post(&m.cp, "/api/v1/ca/rotate", r#"{"overlap": "2s"}"#).await,
        StatusCode::OK
    );
    assert_eventually!(m.cp.registry.list().len() == 2);
    let rotated = || async {
        let anchors = identity(&m.books).await["trustAnchors"].clone();
        anchors.as_array().is_some_and(|a| a.len() == 1) && anchors != before
    };
    assert_eventually!(
        rotated().await,
        "the old root was never retired: {} / {:?}",
        identity(&m.books).await["trustAnchors"],
        HttpClient::http1()
            .get(&format!("http://{}/api/v1/ca", m.cp.http_addr))
            .await
            .map(|r| r.text())
    );
    // Some traffic on the new root alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).expect("stop");
    let report = load.await.expect("load");
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok > 100, "{report:?}");
    let still = HttpClient::http1()
        .get(&m.url)
        .await
        .expect("after rotation");
    assert_eq!(still.status, StatusCode::OK);
    m.cp.stop().await;
}

/// An AuthorizationPolicy applied to the control plane reaches books' sidecar and is
/// enforced on web's open mTLS connection; changing it applies without a restart.
#[tokio::test]
async fn authorization_policies_apply_live() {
    let m = mesh(Duration::from_secs(3600)).await;
    let policy = |identity: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{name: books-callers}}\n\
             spec:\n  targetRef: {{kind: Service, name: books}}\n  rules:\n  \
             - from: [{{identities: [\"spiffe://trellis.local/ns/default/sa/{identity}\"]}}]\n"
        )
    };
    let status = || async {
        let resp = HttpClient::http1().get(&m.url).await.expect("response");
        (resp.status, resp.headers.get("trellis-error").cloned())
    };

    assert_eq!(
        post(&m.cp, "/api/v1/apply", &policy("reviews")).await,
        StatusCode::OK
    );
    assert_eventually!(status().await.0 == StatusCode::FORBIDDEN);
    let (_, error) = status().await;
    assert_eq!(
        error.as_ref().and_then(|v| v.to_str().ok()),
        Some("denied by no-allow-match")
    );
    assert!(metrics(&m.books)
        .await
        .contains(r#"trellis_authz_denied_total{listener="inbound",policy="no-allow-match"}"#));

    assert_eq!(
        post(&m.cp, "/api/v1/apply", &policy("web")).await,
        StatusCode::OK
    );
    assert_eventually!(status().await.0 == StatusCode::OK);
    assert!(metrics(&m.books).await.contains(
        r#"trellis_authz_allowed_total{listener="inbound",policy="default/books-callers"}"#
    ));
    m.cp.stop().await;
}
