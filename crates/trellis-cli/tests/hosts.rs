//! A mesh across hosts: two network-namespace hosts on a bridge, each running a
//! service under `trellis run`, a control plane in the root namespace, mTLS strict.
//! Needs root, as CI runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_testkit::http::HttpClient;
use trellis_testkit::netns::{Host, Topology};

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
const TOKEN: &str = "hosts-test-token";
const STRICT: &str = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {mtls: {mode: strict}}\n";

/// `trellis run` of `service` in `host`, its app a sample server on port 8080.
fn run_service(host: &Host, control: &str, service: &str, upstream: Option<&str>) {
    let address = host.address.to_string();
    let mut args = vec![
        "run",
        "--service",
        service,
        "--port",
        "8080",
        "--address",
        &address,
        "--inbound-port",
        "7143",
        "--control",
        control,
        "--token",
        TOKEN,
    ];
    if let Some(upstream) = upstream {
        args.extend(["--upstream", upstream]);
    }
    args.extend([
        "--",
        TRELLIS,
        "sample-server",
        "--listen",
        "127.0.0.1:8080",
        "--name",
        service,
    ]);
    host.spawn(TRELLIS, &args, &[("TRELLIS_LOG", "warn")], None)
        .expect("trellis run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_two_hosts_talk_mtls_through_their_sidecars() {
    let topology = Topology::new("mh", &["web", "books"]).expect("topology (run as root)");
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        http_addr: (topology.gateway, 0).into(),
        grpc_addr: (topology.gateway, 0).into(),
        grace: Duration::from_secs(30),
        ca: Default::default(),
        store: Default::default(),
    };
    let cp = ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane");
    let apply = http::Request::post(format!("http://{}/api/v1/apply", cp.http_addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(STRICT)))
        .expect("request");
    assert_eq!(
        HttpClient::http1().send(apply).await.expect("apply").status,
        StatusCode::OK
    );
    let control = format!("http://{}", cp.http_addr);
    run_service(topology.host("books"), &control, "books", None);
    run_service(topology.host("web"), &control, "web", Some("books:9001"));

    let books_ip = topology.host("books").address.to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let web = topology.host("web");
        // web's app calls its sidecar's upstream port; the request crosses to the
        // books host over mTLS.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = web.http_get("127.0.0.1", 9001, "/headers");
            // Over mTLS, which also means books has applied its strict snapshot
            // (snapshots come before certificates on the session).
            if last.as_ref().is_some_and(|(status, body)| {
                status.contains(" 200 ") && body.contains("x-trellis-peer-identity")
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let plaintext = web.http_get(&books_ip, 7143, "/");
        (last, plaintext, topology)
    })
    .await
    .expect("join");
    let (through_mesh, plaintext, topology) = outcome;
    let (status, body) = through_mesh.expect("an answer through the mesh");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.contains("x-trellis-peer-identity: spiffe://trellis.local/ns/default/sa/web\n"),
        "{body}"
    );
    // Strict: the books host refuses plaintext from the web host.
    assert!(plaintext.is_none(), "plaintext was served: {plaintext:?}");
    let registered: Vec<String> = cp
        .registry
        .list()
        .iter()
        .map(|p| p.address.clone())
        .collect();
    assert!(
        registered
            .iter()
            .any(|a| a.starts_with(&format!("{}:", topology.host("books").address))),
        "{registered:?}"
    );
    drop(topology);
    cp.stop().await;
}
