//! Proxy sessions over gRPC, the proxy's side driven by hand against real control
//! planes on loopback: workload certificates and tokens, and registrations when two
//! control planes share one store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use trellis_api::proto::v1::{
    control_message, proxy_api_client::ProxyApiClient, proxy_message, Certificate,
    CertificateRequest, ControlMessage, Hello, MeshService, ProxyMessage, SessionInfo, Workload,
};

#[path = "sessions/deltas.rs"]
mod deltas;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::{MemoryStore, Store};
use trellis_identity::{Credentials, SpiffeId, TrustBundle, WorkloadKey};

const ADMIN: &str = "admin-token";

async fn control_plane() -> ControlPlane {
    control_plane_on(Arc::new(MemoryStore::new())).await
}

async fn control_plane_on(store: Arc<MemoryStore>) -> ControlPlane {
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_millis(200),
        ca: Default::default(),
    };
    ControlPlane::start_with(store, ADMIN.into(), settings)
        .await
        .expect("control plane")
}

fn books_id() -> SpiffeId {
    SpiffeId::new("trellis.local", "shop", "books").expect("id")
}

/// A session's proxy end: what it sends, what it receives.
struct Session {
    tx: mpsc::Sender<ProxyMessage>,
    inbound: Streaming<ControlMessage>,
    /// What the control plane said first: the identity to ask a certificate for.
    info: SessionInfo,
}

async fn open(cp: &ControlPlane, token: &str, service: &str) -> Result<Session, tonic::Status> {
    open_as(cp, token, workload(service)).await
}

/// Workload `<service>-1` of `service` in namespace `shop`.
fn workload(service: &str) -> Workload {
    Workload {
        name: format!("{service}-1"),
        namespace: "shop".into(),
        service: service.into(),
        address: "127.0.0.1".into(),
        inbound_port: 7143,
        app_port: 8080,
        ..Default::default()
    }
}

async fn open_as(
    cp: &ControlPlane,
    token: &str,
    workload: Workload,
) -> Result<Session, tonic::Status> {
    open_with(cp, token, workload, false).await
}

/// A session whose proxy takes snapshots as deltas when `accepts_delta`.
async fn open_with(
    cp: &ControlPlane,
    token: &str,
    workload: Workload,
    accepts_delta: bool,
) -> Result<Session, tonic::Status> {
    let mut client = ProxyApiClient::connect(format!("http://{}", cp.grpc_addr))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        token: token.into(),
        workload: Some(workload),
        proxy_version: "test".into(),
        serving_version: 0,
        admin_address: String::new(),
        accepts_delta,
    };
    tx.send(ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    })
    .await
    .expect("hello");
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    let first = inbound.message().await?.and_then(|m| m.message);
    let Some(control_message::Message::SessionInfo(info)) = first else {
        panic!("the first message must be SessionInfo, got {first:?}");
    };
    Ok(Session { tx, inbound, info })
}

impl Session {
    async fn request(&self, csr_pem: String) {
        let message = ProxyMessage {
            message: Some(proxy_message::Message::CertificateRequest(
                CertificateRequest { csr_pem },
            )),
        };
        self.tx.send(message).await.expect("send");
    }

    /// The next message, within ten seconds.
    async fn next_message(&mut self) -> ControlMessage {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("a message")
    }

    /// The next message that is not a snapshot.
    async fn next_identity_message(&mut self) -> control_message::Message {
        loop {
            let message = self.next_message().await;
            match message.message {
                Some(control_message::Message::Snapshot(_)) | None => continue,
                Some(other) => return other,
            }
        }
    }

    /// The Services (with virtual IPs) of the first snapshot that lists `want`.
    async fn services(&mut self, want: usize) -> Vec<MeshService> {
        loop {
            let message = self.next_message().await;
            if let Some(control_message::Message::Snapshot(snapshot)) = message.message {
                let services = snapshot.config.expect("config").services;
                if services.len() >= want {
                    return services;
                }
            }
        }
    }

    async fn certificate(&mut self) -> Certificate {
        match self.next_identity_message().await {
            control_message::Message::Certificate(c) => c,
            other => panic!("expected a certificate, got {other:?}"),
        }
    }
}

async fn bootstrap_token(cp: &ControlPlane, body: &str) -> serde_json::Value {
    let client = reqwest_like::post(cp, "/api/v1/tokens", body, Some(ADMIN)).await;
    assert_eq!(client.0, 200, "{}", client.1);
    serde_json::from_str(&client.1).expect("json")
}

/// Minimal HTTP client for the API, over hyper.
mod reqwest_like {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub async fn post(
        cp: &super::ControlPlane,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut request = hyper::Request::post(format!("http://{}{path}", cp.http_addr))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .expect("request");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn a_bootstrap_token_gets_a_certificate_for_its_identity_only() {
    let cp = control_plane().await;
    let token = bootstrap_token(&cp, r#"{"service": "books", "namespace": "shop"}"#).await;
    assert_eq!(token["identity"], books_id().to_string());
    let token = token["token"].as_str().expect("token").to_string();

    let mut session = open(&cp, &token, "books").await.expect("session");
    assert_eq!(session.info.identity, books_id().to_string());
    assert!(!session.info.trust_bundle_pem.is_empty());
    let key = WorkloadKey::generate().expect("key");
    session.request(key.csr(&books_id()).expect("csr")).await;
    let issued = session.certificate().await;
    assert_eq!(issued.error, "");
    // The chain is usable with the key that never left this side, and trusted.
    let credentials = Credentials::new(&key, &issued.chain_pem).expect("credentials");
    assert_eq!(credentials.id(), &books_id());
    let bundle = TrustBundle::from_pem(&issued.trust_bundle_pem).expect("bundle");
    assert_eq!(bundle.len(), 1);
    assert!(!issued.session_token.is_empty());

    // A CSR for another identity on the same session is refused, with the reason.
    let ratings = SpiffeId::new("trellis.local", "shop", "ratings").expect("id");
    session.request(key.csr(&ratings).expect("csr")).await;
    let refused = session.certificate().await;
    assert!(refused.chain_pem.is_empty());
    assert!(
        refused.error.contains("ratings") && refused.error.contains("books"),
        "{}",
        refused.error
    );
    // So is a malformed one.
    session
        .request("-----BEGIN CERTIFICATE REQUEST-----\nnope\n".into())
        .await;
    assert!(!session.certificate().await.error.is_empty());

    // The session token reconnects as the same identity.
    let again = open(&cp, &issued.session_token, "books").await;
    assert!(again.is_ok());
    cp.stop().await;
}

#[tokio::test]
async fn sessions_with_a_foreign_expired_or_forged_token_are_refused() {
    let cp = control_plane().await;
    let token = bootstrap_token(&cp, r#"{"service": "books", "namespace": "shop"}"#).await;
    let token = token["token"].as_str().expect("token").to_string();

    // Bound to books, presented by ratings.
    let status = open(&cp, &token, "ratings").await.err().expect("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status
        .message()
        .contains("bound to spiffe://trellis.local/ns/shop/sa/books"));

    // Forged: the right shape, a wrong signature.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let status = open(&cp, &forged, "books").await.err().expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Expired.
    let short = bootstrap_token(
        &cp,
        r#"{"service": "books", "namespace": "shop", "ttl": "1s"}"#,
    )
    .await;
    let short = short["token"].as_str().expect("token").to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = open(&cp, &short, "books").await.err().expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());

    // Tokens are an admin's to hand out.
    let (code, body) =
        reqwest_like::post(&cp, "/api/v1/tokens", r#"{"service": "books"}"#, None).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = reqwest_like::post(
        &cp,
        "/api/v1/tokens",
        r#"{"service": "books", "ttl": "0s"}"#,
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    cp.stop().await;
}

#[tokio::test]
async fn rotation_sends_the_new_bundle_and_reissues_from_the_new_root() {
    let cp = control_plane().await;
    let mut session = open(&cp, ADMIN, "books").await.expect("session");
    let key = WorkloadKey::generate().expect("key");
    session.request(key.csr(&books_id()).expect("csr")).await;
    let first = session.certificate().await;
    let old_root = TrustBundle::from_pem(&first.trust_bundle_pem).expect("bundle");
    let old = old_root.roots().next().expect("root").fingerprint.clone();

    let (code, body) = reqwest_like::post(
        &cp,
        "/api/v1/ca/rotate",
        r#"{"overlap": "400ms"}"#,
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // 1. Both roots trusted.
    let control_message::Message::TrustBundle(both) = session.next_identity_message().await else {
        panic!("expected the bundle with both roots");
    };
    assert_eq!(
        TrustBundle::from_pem(&both.roots_pem).expect("pem").len(),
        2
    );
    // 2. The same key re-certified by the new root, without a new CSR.
    let reissued = session.certificate().await;
    assert_eq!(reissued.error, "");
    let credentials = Credentials::new(&key, &reissued.chain_pem).expect("credentials");
    assert_ne!(credentials.leaf().issuer, "");
    assert_ne!(reissued.chain_pem, first.chain_pem);
    // 3. The old root retired.
    let control_message::Message::TrustBundle(last) = session.next_identity_message().await else {
        panic!("expected the bundle without the old root");
    };
    let last = TrustBundle::from_pem(&last.roots_pem).expect("pem");
    assert_eq!(last.len(), 1);
    assert!(!last.contains(&old));
    cp.stop().await;
}

#[tokio::test]
async fn a_proxy_that_moved_to_another_control_plane_keeps_its_workload() {
    let store = Arc::new(MemoryStore::new());
    let a = control_plane_on(store.clone()).await;
    let b = control_plane_on(store.clone()).await;
    let key = "/resources/Workload/shop/books-1";
    let first = open(&a, ADMIN, "books").await.expect("session on a");
    assert!(store.get(key).await.expect("get").is_some());
    // The proxy leaves a and registers with b before a's grace period (200 ms) ends.
    drop(first);
    let _second = open(&b, ADMIN, "books").await.expect("session on b");
    // a notices its session ended, and its grace period runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while a.registry.get("books-1").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "a never let go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.get(key).await.expect("get").is_some(),
        "a removed a workload b holds"
    );
    // Once it leaves b too, b's grace period removes it.
    drop(_second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.get(key).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_removes_workloads_whose_control_plane_is_gone() {
    let store = Arc::new(MemoryStore::new());
    let a = control_plane_on(store.clone()).await;
    let b = control_plane_on(store.clone()).await;
    // Both see each other; a joined first and leads.
    let view = |cp: &ControlPlane| cp.membership.view();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while view(&b).members.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "b never saw a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view(&b).leader.as_deref(), Some(view(&a).this.as_str()));

    // b's proxy is registered through b; then b dies with it (stopping keeps the
    // workload for whichever control plane comes next, as a crash would).
    let key = "/resources/Workload/shop/books-1";
    let session = open(&b, ADMIN, "books").await.expect("session on b");
    assert!(store.get(key).await.expect("get").is_some());
    b.stop().await;
    drop(session);
    // Nobody serves it any more: the leader removes it once the grace period passes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.get(key).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan was never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view(&a).members.len(), 1);

    // When the leader goes, the next replica leads.
    let c = control_plane_on(store.clone()).await;
    a.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while view(&c).leader.as_deref() != Some(view(&c).this.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "c never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;
}

/// A transparent proxy of `service`: it gets the Services with their virtual IPs.
async fn open_transparent(cp: &ControlPlane, service: &str) -> Session {
    open_as(cp, ADMIN, transparent(service))
        .await
        .expect("session")
}

/// Workload `<service>-1` in transparent mode.
fn transparent(service: &str) -> Workload {
    Workload {
        outbound_port: 7140,
        ..workload(service)
    }
}

#[tokio::test]
async fn services_keep_their_virtual_ips_when_the_control_plane_restarts() {
    let store = Arc::new(MemoryStore::new());
    let first = control_plane_on(store.clone()).await;
    let books = open_transparent(&first, "books").await;
    let before = open_transparent(&first, "web").await.services(2).await;
    let names: Vec<&str> = before.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["books", "web"]);
    assert!(before.iter().all(|s| s.virtual_ip.starts_with("240.240.")));
    assert_ne!(before[0].virtual_ip, before[1].virtual_ip);
    drop(books);
    first.stop().await;

    // A new control plane on the same store; the proxies come back to it.
    let again = control_plane_on(store).await;
    let books = open_transparent(&again, "books").await;
    let after = open_transparent(&again, "web").await.services(2).await;
    assert_eq!(after, before);
    drop(books);
    again.stop().await;
}

/// Replica `n` of `cart`: its own name and inbound port on one address.
fn cart(n: u32) -> Workload {
    Workload {
        name: format!("cart-{n}"),
        inbound_port: 7142 + n,
        ..workload("cart")
    }
}

impl Session {
    /// Waits for a snapshot whose inbound listener holds a global rate limit with
    /// the share `weight` of `total`; panics after 50 snapshots without one.
    async fn rate_share(&mut self, weight: u32, total: u32) {
        for _ in 0..50 {
            let message = self.next_message().await;
            let Some(control_message::Message::Snapshot(snapshot)) = message.message else {
                continue;
            };
            let config = snapshot.config.expect("config");
            let inbound = config.listeners.iter().find(|l| l.name == "inbound");
            let limits = inbound
                .map(|l| l.rate_limits.as_slice())
                .unwrap_or_default();
            if limits
                .iter()
                .any(|l| (l.share_weight, l.share_total) == (weight, total))
            {
                return;
            }
        }
        panic!("no snapshot gave this replica {weight} of {total}");
    }
}

#[tokio::test]
async fn a_global_rate_limit_is_split_among_replicas_as_they_come_and_go() {
    let cp = control_plane().await;
    let policy = r#"{"apiVersion": "trellis.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "cart-limits", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Service", "name": "cart"},
            "global": [{"requestsPerSecond": 300}]}}"#;
    let (status, body) = reqwest_like::post(&cp, "/api/v1/apply", policy, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    let mut first = open_as(&cp, ADMIN, cart(1)).await.expect("cart-1");
    first.rate_share(1, 1).await;
    let second = open_as(&cp, ADMIN, cart(2)).await.expect("cart-2");
    let third = open_as(&cp, ADMIN, cart(3)).await.expect("cart-3");
    first.rate_share(1, 3).await;
    // A replica leaves: once its grace period (200 ms) passes, the others get half.
    drop(third);
    first.rate_share(1, 2).await;
    drop(second);
    cp.stop().await;
}
