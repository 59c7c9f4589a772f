//! The control plane on a real API server: proxies prove their Pods with projected
//! ServiceAccount tokens (real tokens from the TokenRequest API, checked with
//! TokenReview; sessions opened by hand over gRPC), and replicas share the CA through a
//! Secret and elect one status writer on a Lease.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use trellis_api::proto::v1::{
    control_message, proxy_api_client::ProxyApiClient, proxy_message, Hello, ProxyMessage, Workload,
};
use trellis_control::server::ControlSettings;
use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
use trellis_testkit::assert_eventually;
use trellis_testkit::kube::KubeCluster;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: trellis-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: books, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ratings, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: books-1, namespace: shop, labels: {app: books}}
spec:
  serviceAccountName: books
  containers: [{name: books, image: books}]
---
apiVersion: v1
kind: Pod
metadata: {name: books-2, namespace: shop, labels: {app: books}}
spec:
  serviceAccountName: books
  containers: [{name: books, image: books}]
"#;

/// A token of `account` for `audience`, bound to Pod `pod`, from the TokenRequest API.
fn token(cluster: &KubeCluster, account: &str, audience: &str, pod: &str) -> String {
    let args = [
        "-n",
        "shop",
        "create",
        "token",
        account,
        "--audience",
        audience,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        pod,
    ];
    cluster.kubectl_ok(&args, None).trim().to_string()
}

/// Opens a session as Pod `pod` running as `account` and returns the identity the
/// control plane gives it, or the refusal.
async fn session(
    cp: &KubernetesControlPlane,
    token: &str,
    pod: &str,
    account: &str,
) -> Result<String, tonic::Status> {
    let mut client = ProxyApiClient::connect(format!("http://{}", cp.control.grpc_addr))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        token: token.into(),
        workload: Some(Workload {
            name: pod.into(),
            namespace: "shop".into(),
            service: "books".into(),
            service_account: account.into(),
            address: "10.244.0.9".into(),
            inbound_port: 7143,
            app_port: 8080,
            ..Default::default()
        }),
        proxy_version: "test".into(),
        ..Default::default()
    };
    tx.send(ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    })
    .await
    .expect("hello");
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an answer in time")?
        .and_then(|m| m.message);
    match first {
        Some(control_message::Message::SessionInfo(info)) => Ok(info.identity),
        other => panic!("the first message must be SessionInfo, got {other:?}"),
    }
}

fn settings(data_dir: &std::path::Path) -> ControlSettings {
    ControlSettings {
        data_dir: data_dir.to_path_buf(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_millis(200),
        ca: Default::default(),
    }
}

/// A replica in `trellis-system`, its data in `dir`.
async fn replica(
    client: &kube::Client,
    dir: &std::path::Path,
) -> anyhow::Result<KubernetesControlPlane> {
    KubernetesControlPlane::start(
        client.clone(),
        KubernetesSettings::new("trellis-system"),
        settings(dir),
        None,
    )
    .await
}

fn refused(result: Result<String, tonic::Status>, says: &str) {
    match result {
        Ok(identity) => {
            panic!("a session was let in as {identity}; expected a refusal saying {says:?}")
        }
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(
                status.message().contains(says),
                "{:?} does not say {says:?}",
                status.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_token_proves_its_own_service_account_and_pod_only() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let data = tempfile::tempdir().expect("data dir");
    let cp = KubernetesControlPlane::start(
        client,
        KubernetesSettings::new("trellis-system"),
        settings(data.path()),
        None,
    )
    .await
    .expect("control plane");

    let books_1 = token(&cluster, "books", "trellis", "books-1");
    let identity = session(&cp, &books_1, "books-1", "books")
        .await
        .expect("books-1 let in");
    assert_eq!(identity, "spiffe://trellis.local/ns/shop/sa/books");

    // The same token never proves another account, nor another Pod of the same one.
    refused(
        session(&cp, &books_1, "books-1", "ratings").await,
        "system:serviceaccount:shop:books",
    );
    refused(
        session(&cp, &books_1, "books-2", "books").await,
        "not bound to Pod shop/books-2",
    );
    // A token for another audience, or a forged one, proves nothing.
    let other = token(&cluster, "books", "somebody-else", "books-1");
    refused(
        session(&cp, &other, "books-1", "books").await,
        "refused the token",
    );
    // Its signature changed in one character, well inside (the last one may carry only
    // padding bits).
    let at = books_1.rfind('.').expect("a JWT") + 10;
    let flipped = if &books_1[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &books_1[..at], &books_1[at + 1..]);
    refused(
        session(&cp, &forged, "books-1", "books").await,
        "refused the token",
    );
    refused(session(&cp, "", "books-1", "books").await, "no token");

    // Once the Pod is gone, its token is worthless: at once, or once the API server's
    // cache of successful reviews (10 s) lets go of it.
    let delete = [
        "-n",
        "shop",
        "delete",
        "pod",
        "books-1",
        "--grace-period=0",
        "--force",
    ];
    cluster.kubectl_ok(&delete, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        let result = session(&cp, &books_1, "books-1", "books").await;
        if result.is_err() || tokio::time::Instant::now() > deadline {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    refused(last, "refused the token");
}

/// Replicas starting together agree on one CA and one admin token, through the Secret
/// the first of them creates; a replica started later adopts them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_mesh_ca_through_a_secret() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["create", "namespace", "trellis-system"], None);
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("data dir"))
        .collect();
    let start = |i: usize| replica(&client, dirs[i].path());
    let (a, b) = tokio::join!(start(0), start(1));
    let (a, b) = (a.expect("replica a"), b.expect("replica b"));
    let c = start(2).await.expect("replica c");
    let shared = async |cp: &KubernetesControlPlane| {
        let bundle = cp
            .store
            .get("/ca/bundle")
            .await
            .expect("store")
            .expect("a bundle");
        (
            String::from_utf8_lossy(&bundle.value).into_owned(),
            cp.control.token.clone(),
        )
    };
    let (bundle_a, token_a) = shared(&a).await;
    assert!(bundle_a.contains("BEGIN CERTIFICATE"), "{bundle_a}");
    assert_eq!(shared(&b).await, (bundle_a.clone(), token_a.clone()));
    assert_eq!(shared(&c).await, (bundle_a, token_a));
    let secret = cluster.kubectl_ok(
        &[
            "-n",
            "trellis-system",
            "get",
            "secret",
            "trellis-control-state",
            "-o",
            "jsonpath={.data}",
        ],
        None,
    );
    for key in ["ca.signer", "ca.bundle", "ca.token-key", "admin.token"] {
        assert!(
            secret.contains(key),
            "{key} missing from the Secret: {secret}"
        );
    }
}

/// One replica leads and writes status; when it goes, another takes the Lease over once
/// it runs out and writes the status of what changes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_writes_status_and_another_takes_over_when_it_goes() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let mut on_cluster = KubernetesSettings::new("trellis-system");
    on_cluster.lease_duration = Duration::from_secs(2);
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("data dir"))
        .collect();
    let start = |i: usize| {
        KubernetesControlPlane::start(
            client.clone(),
            on_cluster.clone(),
            settings(dirs[i].path()),
            None,
        )
    };
    let (a, b) = tokio::join!(start(0), start(1));
    let mut replicas = vec![a.expect("replica a"), b.expect("replica b")];
    let leaders = |replicas: &[KubernetesControlPlane]| {
        replicas
            .iter()
            .filter(|r| *r.leadership.leading().borrow())
            .count()
    };
    trellis_testkit::assert_eventually!(leaders(&replicas) == 1, "no single leader");
    let holder = cluster.kubectl_ok(
        &[
            "-n",
            "trellis-system",
            "get",
            "lease",
            "trellis-control",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert!(!holder.is_empty());

    // The leader goes; the other takes over within a few Lease durations.
    let leader = replicas
        .iter()
        .position(|r| *r.leadership.leading().borrow())
        .expect("a leader");
    drop(replicas.remove(leader));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !*replicas[0].leadership.leading().borrow() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took the Lease over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books}]
  rules: [{backendRefs: [{name: books, port: 9080}]}]
"#;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(route));
    let accepted = || {
        cluster.kubectl_ok(
            &[
                "-n",
                "shop",
                "get",
                "httproute",
                "books",
                "-o",
                "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
            ],
            None,
        )
    };
    trellis_testkit::assert_eventually!(
        accepted() == "True",
        "the new leader wrote no status: {:?}",
        accepted()
    );
}

/// A trust-anchor rotation started on one replica reaches the Secret, the other
/// replicas' CAs (so their proxies trust the new root too) and replicas started later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_started_on_one_replica_reaches_the_others_through_the_secret() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["create", "namespace", "trellis-system"], None);
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("data dir"))
        .collect();
    let start = |i: usize| replica(&client, dirs[i].path());
    let a = start(0).await.expect("replica a");
    let b = start(1).await.expect("replica b");
    let roots = |cp: &KubernetesControlPlane| {
        cp.control
            .ca
            .trust_bundle()
            .to_pem()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    assert_eq!((roots(&a), roots(&b)), (1, 1));

    a.control
        .ca
        .rotate(Duration::from_secs(3600))
        .await
        .expect("a rotation starts");
    assert_eq!(roots(&a), 2, "the new root is trusted beside the old");
    let secret = || {
        cluster.kubectl_ok(
            &[
                "-n",
                "trellis-system",
                "get",
                "secret",
                "trellis-control-state",
                "-o",
                "jsonpath={.data}",
            ],
            None,
        )
    };
    assert_eventually!(secret().contains("ca.rotation"), "Secret: {}", secret());
    assert_eventually!(roots(&b) == 2, "replica b trusts {} roots", roots(&b));
    let c = start(2).await.expect("replica c");
    assert_eq!(
        roots(&c),
        2,
        "a replica started later has the rotated bundle"
    );
    assert_eq!(
        a.control.ca.trust_bundle().to_pem(),
        c.control.ca.trust_bundle().to_pem()
    );
}
