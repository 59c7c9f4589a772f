//! A mesh in one process: a control plane on the in-memory store and two sidecar
//! proxies under it, with real sample services, real gRPC streams and real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use trellis_control::registry::SyncState;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_proxy::control::{Sidecar, SidecarListeners};
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

mod support;

use support::{free_port, SidecarSpec};

const TOKEN: &str = "test-token";

async fn control_plane() -> ControlPlane {
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_millis(300),
        ca: Default::default(),
    };
    ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane starts")
}

/// A sidecar for `service`, fronting `app`, calling `upstreams` through local ports.
async fn sidecar(
    cp: &ControlPlane,
    name: &str,
    service: &str,
    labels: &[(&str, &str)],
    app: SocketAddr,
    upstreams: &[(&str, u16)],
) -> Sidecar {
    let grpc = format!("http://{}", cp.grpc_addr);
    sidecar_at(&grpc, TOKEN, name, service, labels, app, upstreams).await
}

/// A sidecar under the control plane at `grpc`, registering with `token`.
async fn sidecar_at(
    grpc: &str,
    token: &str,
    name: &str,
    service: &str,
    labels: &[(&str, &str)],
    app: SocketAddr,
    upstreams: &[(&str, u16)],
) -> Sidecar {
    SidecarSpec {
        grpc,
        token,
        name,
        service,
        labels,
        app,
        upstreams,
    }
    .start()
    .await
}

async fn apply(cp: &ControlPlane, yaml: &str) -> StatusCode {
    support::apply(cp.http_addr, TOKEN, yaml).await
}

fn synced(cp: &ControlPlane, workload: &str) -> bool {
    cp.registry
        .get(workload)
        .is_some_and(|s| s.state == SyncState::Synced && s.acked_version > 0)
}

#[tokio::test]
async fn config_is_pushed_live_and_routes_change_traffic() {
    let cp = control_plane().await;
    let v1 = HttpServer::start("ratings-v1", ServerProtocol::Http1)
        .await
        .expect("server");
    let v2 = HttpServer::start("ratings-v2", ServerProtocol::Http1)
        .await
        .expect("server");
    let web = HttpServer::start("web", ServerProtocol::Http1)
        .await
        .expect("server");
    let _r1 = sidecar(
        &cp,
        "ratings-1",
        "ratings",
        &[("version", "v1")],
        v1.addr(),
        &[],
    )
    .await;
    let r2 = sidecar(
        &cp,
        "ratings-2",
        "ratings",
        &[("version", "v2")],
        v2.addr(),
        &[],
    )
    .await;
    let upstream_port = free_port();
    let w = sidecar(
        &cp,
        "web-1",
        "web",
        &[],
        web.addr(),
        &[("ratings", upstream_port)],
    )
    .await;
    assert_eventually!(
        synced(&cp, "web-1") && synced(&cp, "ratings-1") && synced(&cp, "ratings-2")
    );

    // The label-selected versions and a route that sends everything to v2.
    let docs = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings-v2}
spec:
  selector: {app: ratings, version: v2}
  ports: [{port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
    - backendRefs: [{name: ratings-v2, weight: 1}]
"#;
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{upstream_port}/");
    // Before the route: both instances serve `ratings`.
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK));
    let resp = client.get(&url).await.expect("through the mesh");
    assert!(resp.headers["x-served-by"]
        .to_str()
        .is_ok_and(|s| s.starts_with("ratings-")));
    assert_eq!(apply(&cp, docs).await, StatusCode::OK);
    // The route reaches the proxy without a restart; from then on only v2 answers.
    let applied_at = cp.registry.get("web-1").expect("web-1").acked_version;
    assert_eventually!(cp
        .registry
        .get("web-1")
        .is_some_and(|s| s.acked_version > applied_at && s.state == SyncState::Synced));
    for _ in 0..40 {
        let resp = client.get(&url).await.expect("through the mesh");
        assert_eq!(resp.headers["x-served-by"], "ratings-v2");
    }
    assert!(w
        .proxy
        .effective_config()
        .listeners
        .iter()
        .any(|l| l.name.starts_with("outbound")));

    // `describe` knows which proxies hold each resource, and in what compiled form.
    let route = holders(&cp, "httproutes/default/ratings").await;
    assert_eq!(route.len(), 1, "{route:?}");
    assert_eq!(route[0]["workload"], "web-1");
    assert_eq!(route[0]["serving"], true);
    assert_eq!(
        route[0]["compiled"],
        serde_json::json!([{
            "listener": "outbound-default-ratings",
            "route": "default.ratings.0",
            "match": "*",
            "backends": ["ratings-v2.default=1"],
        }])
    );
    let service = holders(&cp, "services/default/ratings-v2").await;
    assert_eq!(service.len(), 1, "{service:?}");
    assert_eq!(service[0]["compiled"][0]["backend"], "ratings-v2.default");
    let v2_endpoint = format!(
        "127.0.0.1:{}",
        r2.proxy.effective_config().listeners[0].address.port()
    );
    assert_eq!(
        service[0]["compiled"][0]["endpoints"],
        serde_json::json!([v2_endpoint])
    );
    // A workload is held by its callers (as an endpoint) and by its own proxy.
    let workload = holders(&cp, "workloads/default/ratings-2").await;
    let names: Vec<&str> = workload
        .iter()
        .filter_map(|h| h["workload"].as_str())
        .collect();
    assert_eq!(names, ["ratings-2", "web-1"]);
    assert_eq!(workload[1]["compiled"][0]["endpoint"], v2_endpoint.as_str());

    // And the operator sees the same through `trellis describe`.
    // Asynchronously: the control plane runs on this test's thread.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["describe", "httproute", "ratings", "--control"])
        .arg(format!("http://{}", cp.http_addr))
        .output()
        .await
        .expect("trellis describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let proxies = text
        .split_once("\nProxies:\n")
        .expect("a proxies section")
        .1;
    let mut lines = proxies.lines();
    let head = lines.next().expect("one proxy");
    assert!(
        head.starts_with("  default/web-1 (web): synced, acked version ")
            && head.ends_with(", serving it"),
        "{text}"
    );
    assert!(
        lines.any(|l| l.trim() == "route: default.ratings.0"),
        "{text}"
    );
}

/// `GET /api/v1/resources/{path}/proxies`: the proxies holding a resource.
async fn holders(cp: &ControlPlane, path: &str) -> Vec<serde_json::Value> {
    let url = format!("http://{}/api/v1/resources/{path}/proxies", cp.http_addr);
    let resp = HttpClient::http1().get(&url).await.expect("holders");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_str(&resp.text()).expect("json");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// The books app behind its sidecar `books-1`, and the web app, for a sidecar to start.
async fn books_with_a_sidecar_and_web(cp: &ControlPlane) -> ((HttpServer, Sidecar), HttpServer) {
    let books = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("server");
    let web = HttpServer::start("web", ServerProtocol::Http1)
        .await
        .expect("server");
    let sidecar = sidecar(cp, "books-1", "books", &[], books.addr(), &[]).await;
    ((books, sidecar), web)
}

#[tokio::test]
async fn proxies_keep_serving_when_the_control_plane_goes_away() {
    let cp = control_plane().await;
    let (_books, web) = books_with_a_sidecar_and_web(&cp).await;
    let port = free_port();
    let _web = sidecar(&cp, "web-1", "web", &[], web.addr(), &[("books", port)]).await;
    assert_eventually!(synced(&cp, "web-1") && synced(&cp, "books-1"));
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK));
    cp.stop().await;
    for _ in 0..50 {
        let resp = client.get(&url).await.expect("still served");
        assert_eq!(resp.headers["x-served-by"], "books");
    }
}

#[tokio::test]
async fn a_snapshot_the_proxy_cannot_apply_is_nacked_and_the_old_config_keeps_serving() {
    let cp = control_plane().await;
    let (_books, web) = books_with_a_sidecar_and_web(&cp).await;
    // The upstream's local port is taken by someone else: binding it must fail.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let w = sidecar(&cp, "web-1", "web", &[], web.addr(), &[("books", taken)]).await;
    assert_eventually!(cp
        .registry
        .get("web-1")
        .is_some_and(|s| s.state == SyncState::Nacked));
    let status = cp.registry.get("web-1").expect("web-1");
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("cannot bind"), "{error}");
    assert_eq!(status.acked_version, 0, "nothing was applied");
    // Still serving what it had: the inbound listener to its own app.
    let inbound = w.proxy.listener_addr("inbound").expect("inbound listener");
    let resp = HttpClient::http1()
        .get(&format!("http://127.0.0.1:{}/", inbound.port()))
        .await
        .expect("inbound still serves");
    assert_eq!(resp.headers["x-served-by"], "web");
}

#[tokio::test]
async fn proxies_resync_with_a_restarted_control_plane_that_kept_its_state() {
    let dir = std::env::temp_dir().join(format!("trellis-mesh-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let grpc_port = free_port();
    let settings = ControlSettings {
        data_dir: dir.clone(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
        grace: Duration::from_secs(30),
        ca: Default::default(),
    };
    let cp = ControlPlane::start(settings.clone())
        .await
        .expect("control plane");
    let token = cp.token.clone();
    let books = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("server");
    let web = HttpServer::start("web", ServerProtocol::Http1)
        .await
        .expect("server");
    let grpc = format!("http://127.0.0.1:{grpc_port}");
    let _b = sidecar_at(&grpc, &token, "books-1", "books", &[], books.addr(), &[]).await;
    let port = free_port();
    let upstreams = [("books", port)];
    let _w = sidecar_at(&grpc, &token, "web-1", "web", &[], web.addr(), &upstreams).await;
    assert_eventually!(synced(&cp, "web-1") && synced(&cp, "books-1"));
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK));
    let before = cp.registry.get("web-1").expect("web-1").acked_version;

    // The control plane goes away; traffic keeps flowing on the last good config.
    cp.stop().await;
    for _ in 0..20 {
        assert_eq!(
            client.get(&url).await.expect("served").status,
            StatusCode::OK
        );
    }
    // It comes back on the same data dir and port: the proxies reconnect and are in sync
    // at a version no lower than before (revisions survive the restart).
    let cp = ControlPlane::start(settings)
        .await
        .expect("control plane restarts");
    assert_eventually!(synced(&cp, "web-1") && synced(&cp, "books-1"));
    assert!(cp.registry.get("web-1").expect("web-1").acked_version >= before);
    assert_eq!(
        client.get(&url).await.expect("served").status,
        StatusCode::OK
    );
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_passes_through_the_mesh_to_the_service_its_server_name_picks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use trellis_testkit::tcp::TcpEchoServer;
    use trellis_testkit::tls::client_hello;

    let cp = control_plane().await;
    let services = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: payments}
spec: {selector: {app: payments}, ports: [{port: 443, appProtocol: tls}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: payments-v2}
spec: {selector: {app: payments, version: v2}, ports: [{port: 443, appProtocol: tls}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: payments-v1}
spec: {selector: {app: payments, version: v1}, ports: [{port: 443, appProtocol: tls}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: payments-v2}
spec:
  parentRefs: [{name: payments}]
  hostnames: ["*.v2.pay.example"]
  rules: [{backendRefs: [{name: payments-v2}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: payments-rest}
spec:
  parentRefs: [{name: payments}]
  rules: [{backendRefs: [{name: payments-v1}]}]
"#;
    assert_eq!(apply(&cp, services).await, StatusCode::OK);
    // The applications stand in for TLS servers: they echo what they get, so the
    // client sees its own bytes come back unchanged.
    let (v1, v2) = (
        TcpEchoServer::start().await.expect("v1"),
        TcpEchoServer::start().await.expect("v2"),
    );
    let _v1 = sidecar(
        &cp,
        "payments-1",
        "payments",
        &[("app", "payments"), ("version", "v1")],
        v1.addr(),
        &[],
    )
    .await;
    let _v2 = sidecar(
        &cp,
        "payments-2",
        "payments",
        &[("app", "payments"), ("version", "v2")],
        v2.addr(),
        &[],
    )
    .await;
    let port = support::free_port();
    let web_app: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let _web = sidecar(
        &cp,
        "web-1",
        "web",
        &[("app", "web")],
        web_app,
        &[("payments", port)],
    )
    .await;

    let exchange = |server_name: &'static str| async move {
        let mut sent = client_hello(server_name);
        sent.extend_from_slice(b"the rest of the handshake");
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        conn.write_all(&sent).await.ok()?;
        conn.shutdown().await.ok()?;
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.ok()?;
        (back == sent).then_some(())
    };
    // Once the routes reached web's sidecar, each name goes to its version.
    assert_eventually!(exchange("api.v2.pay.example").await.is_some() && v2.connections() > 0);
    let (before1, before2) = (v1.connections(), v2.connections());
    assert!(exchange("api.v2.pay.example").await.is_some());
    assert!(exchange("pay.example").await.is_some());
    assert!(exchange("10.1.2.3").await.is_some());
    assert_eq!(
        (v1.connections() - before1, v2.connections() - before2),
        (2, 1)
    );
}

#[tokio::test]
async fn a_global_rate_limit_is_shared_by_the_replicas_and_follows_them() {
    let cp = control_plane().await;
    let policy = r#"{"apiVersion": "trellis.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "cart-limits"},
        "spec": {"targetRef": {"kind": "Service", "name": "cart"},
            "global": [{"requestsPerSecond": 1, "burst": 6}]}}"#;
    assert_eq!(apply(&cp, policy).await, StatusCode::OK);
    let app = HttpServer::start("cart", ServerProtocol::Http1)
        .await
        .expect("server");
    let mut replicas = Vec::new();
    for name in ["cart-1", "cart-2", "cart-3"] {
        replicas.push(sidecar(&cp, name, "cart", &[], app.addr(), &[]).await);
    }
    let inbound = |s: &Sidecar| {
        let addr = s.proxy.listener_addr("inbound").expect("inbound listener");
        format!("http://127.0.0.1:{}/", addr.port())
    };
    let urls: Vec<String> = replicas.iter().map(inbound).collect();
    let client = HttpClient::http1();
    // Every answer of a limited listener, 200 or 429, names its bucket's size.
    let bucket = |url: String| {
        let client = &client;
        async move {
            let resp = client.get(&url).await.expect("inbound answers");
            let limit = resp.headers.get("ratelimit-limit").cloned();
            (
                resp.status,
                limit.and_then(|v| v.to_str().ok().map(str::to_owned)),
            )
        }
    };
    for url in &urls {
        assert_eventually!(
            bucket(url.clone()).await.1.as_deref() == Some("2"),
            "a replica never got its third of the burst"
        );
    }

    // Together the replicas admit at most the global burst, plus what 1/s refills.
    let started = std::time::Instant::now();
    let mut admitted = 0;
    for _ in 0..4 {
        for url in &urls {
            if bucket(url.clone()).await.0 == StatusCode::OK {
                admitted += 1;
            }
        }
    }
    let refilled = started.elapsed().as_secs_f64();
    assert!(
        f64::from(admitted) <= 6.0 + refilled,
        "{admitted} admitted in {refilled:.1} s"
    );

    // A replica leaves; once its grace period passes, the other two get half each.
    drop(replicas.pop());
    for url in &urls[..2] {
        assert_eventually!(
            bucket(url.clone()).await.1.as_deref() == Some("3"),
            "the replicas left never got half of the burst"
        );
    }
}

/// A sidecar given no ports binds its listeners on ports the kernel picks before it
/// registers, so no other process can take them in between, and registers those: the
/// control plane lists the inbound port, compiles listeners at the same ports, and the
/// sidecar serves them on the sockets it holds (binding them again would fail with
/// "address in use" and be NACKed).
#[tokio::test]
async fn a_sidecar_without_ports_registers_and_serves_the_ports_it_bound() {
    let cp = control_plane().await;
    let (_books, web) = books_with_a_sidecar_and_web(&cp).await;
    let listeners = SidecarListeners::bind(0, Some(0), None).expect("bind");
    let inbound = listeners.inbound_port();
    let http_proxy = listeners.http_proxy_port().expect("an HTTP proxy port");
    assert!(std::net::TcpListener::bind(("0.0.0.0", inbound)).is_err());
    assert!(std::net::TcpListener::bind(("127.0.0.1", http_proxy)).is_err());
    let grpc = format!("http://{}", cp.grpc_addr);
    let w = SidecarSpec {
        grpc: &grpc,
        token: TOKEN,
        name: "web-1",
        service: "web",
        labels: &[],
        app: web.addr(),
        upstreams: &[("books", 0)],
    }
    .start_on(listeners)
    .await;
    let registered = w.workload();
    assert_eq!(
        (registered.inbound_port, registered.http_proxy_port),
        (u32::from(inbound), u32::from(http_proxy))
    );
    assert_eventually!(synced(&cp, "web-1"));
    let status = cp.registry.get("web-1").expect("web-1");
    assert_eq!(status.address, format!("127.0.0.1:{inbound}"));
    assert_eq!(
        w.proxy.listener_addr("inbound"),
        Some(SocketAddr::from(([0, 0, 0, 0], inbound)))
    );
    assert_eq!(
        w.proxy.listener_addr("http-proxy"),
        Some(SocketAddr::from(([127, 0, 0, 1], http_proxy)))
    );
    let client = HttpClient::http1();
    let resp = client
        .get(&format!("http://127.0.0.1:{inbound}/"))
        .await
        .expect("inbound serves");
    assert_eq!(resp.headers["x-served-by"], "web");
    // Once books' endpoint has reached web's configuration.
    let to_books = || {
        http::Request::get(format!("http://127.0.0.1:{http_proxy}/"))
            .header("host", "books")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    assert_eventually!(client
        .send(to_books())
        .await
        .is_ok_and(|r| r.headers.get("x-served-by").is_some_and(|s| s == "books")));
}
