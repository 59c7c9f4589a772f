//! The whole path on Kubernetes: Pods injected by `trellis inject`, run by the test
//! kit's node agent as network-namespace pods (capture init container, native sidecar
//! running `trellis proxy --kubernetes` as uid 1337, the app), identities from their
//! ServiceAccount tokens through TokenReview, and a call from web's Pod to books'
//! ClusterIP captured, sent over mTLS to books' sidecar and answered by books; under
//! strict mTLS, and with a route that moves books' traffic to v2.

use std::time::Duration;

use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
use trellis_testkit::kube::node::{NodeAgent, NodeOptions};
use trellis_testkit::kube::KubeCluster;

use crate::support::control::trellis_binary;
use crate::support::kube::{control_settings, inject, install_crds};

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
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: books, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: books-v2, namespace: shop}
spec:
  selector: {app: books-v2}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {name: default}
spec:
  mtls: {mode: strict}
"#;

/// The route `books-canary`, sending calls to books and books-v2 in these weights.
pub(crate) fn canary(books: u32, books_v2: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: books-canary, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: books, port: 9080}}]
  rules:
  - backendRefs: [{{name: books, port: 9080, weight: {books}}}, {{name: books-v2, port: 9080, weight: {books_v2}}}]
"#
    )
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: books-1, namespace: shop, labels: {app: books}}
spec:
  nodeName: node-a
  serviceAccountName: books
  containers:
  - name: books
    image: trellis
    args: [sample-server, --listen, "0.0.0.0:8080", --name, books]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: books-v2-1, namespace: shop, labels: {app: books-v2}}
spec:
  nodeName: node-a
  serviceAccountName: books
  containers:
  - name: books
    image: trellis
    args: [sample-server, --listen, "0.0.0.0:8080", --name, books-v2]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  serviceAccountName: web
  containers:
  - name: web
    image: trellis
    args: [sample-server, --listen, "0.0.0.0:8080", --name, web]
    ports: [{containerPort: 8080}]
"#;

/// The shop's Namespaces, ServiceAccounts and Services under strict mTLS, with
/// Trellis's CRDs as `trellis install kubernetes` installs them, and a node agent to
/// run its Pods.
pub(crate) async fn shop(cluster: &KubeCluster) -> NodeAgent {
    install_crds(cluster);
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    let options = NodeOptions::new().image("trellis", [trellis_binary()]);
    NodeAgent::start(cluster, "node-a", options)
        .await
        .expect("node agent")
}

/// The shop's Pods, injected by `trellis inject` with `control` (the proxies'
/// control-plane URLs, comma-separated), created, and ready.
pub(crate) fn run_pods(cluster: &KubeCluster, agent: &NodeAgent, control: &str) {
    let injected = inject(PODS, control);
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&injected));
    let ready = cluster.run_kubectl(
        &[
            "-n",
            "shop",
            "wait",
            "--for=condition=Ready",
            "pod",
            "--all",
            "--timeout=60s",
        ],
        None,
    );
    assert!(
        ready.is_ok(),
        "the Pods never became ready:\n{}",
        agent.all_logs()
    );
}

/// books' URL by its ClusterIP.
pub(crate) fn books_url(cluster: &KubeCluster) -> String {
    let books = cluster.kubectl_ok(
        &[
            "-n",
            "shop",
            "get",
            "service",
            "books",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    format!("http://{books}:9080/")
}

/// Calls `url` from web's Pod until the answer contains `want` (30 s at most).
pub(crate) async fn call_from_web(agent: &NodeAgent, url: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let out = agent
            .exec("shop/web-1", "curl", &["-sS", "-m", "5", "-i", url])
            .expect("curl in web's Pod");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(want) || tokio::time::Instant::now() > deadline {
            break format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        answer.contains(want),
        "web's call to books: {answer}\n{}",
        agent.all_logs()
    );
}

/// The status of the route `books-canary`'s `Accepted` condition.
pub(crate) fn canary_accepted(cluster: &KubeCluster) -> String {
    cluster.kubectl_ok(
        &[
            "-n",
            "shop",
            "get",
            "httproute",
            "books-canary",
            "-o",
            "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
        ],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_calls_books_by_its_cluster_ip_through_injected_sidecars() {
    let cluster = KubeCluster::start().await;
    let agent = shop(&cluster).await;
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let cp = KubernetesControlPlane::start(
        client,
        KubernetesSettings::new("trellis-system"),
        control_settings(&cluster, &agent),
        None,
    )
    .await
    .expect("control plane");
    run_pods(
        &cluster,
        &agent,
        &format!("http://{}", cp.control.grpc_addr),
    );
    let url = books_url(&cluster);
    let call_books = async |want: &str| call_from_web(&agent, &url, want).await;
    call_books("hello from books\n").await;

    // Strict mTLS: books' Pod refuses plaintext from outside the mesh (the node's
    // own address, where nothing captures), where permissive mode would answer.
    let books_ip = cluster.kubectl_ok(
        &[
            "-n",
            "shop",
            "get",
            "pod",
            "books-1",
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    );
    let direct = format!("http://{books_ip}:8080/");
    let plaintext = std::process::Command::new("curl")
        .args(["-sS", "-m", "5", &direct])
        .output()
        .expect("curl from the node");
    let said = String::from_utf8_lossy(&plaintext.stdout);
    assert!(
        !plaintext.status.success() && !said.contains("hello"),
        "plaintext reached books under strict mTLS: {said}"
    );

    // A route applied with kubectl splits books' traffic 75/25 with books-v2: over
    // 200 calls, once it is in force, every call is answered and about a quarter by
    // v2 (the bounds are four standard deviations of the binomial either side).
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&canary(75, 25)));
    call_books("hello from books-v2").await;
    let script = format!(
        "v1=0; v2=0; other=0; for i in $(seq 200); do \
           case \"$(curl -sS -m 5 {url})\" in \
             'hello from books-v2'*) v2=$((v2+1));; 'hello from books'*) v1=$((v1+1));; \
             *) other=$((other+1));; esac; \
         done; echo $v1 $v2 $other"
    );
    let counts = agent
        .exec("shop/web-1", "sh", &["-c", &script])
        .expect("sh in web's Pod");
    let counts = String::from_utf8_lossy(&counts.stdout).into_owned();
    let [v1, v2, other] = counts
        .split_whitespace()
        .map(|n| n.parse::<u32>().expect("a count"))
        .collect::<Vec<_>>()[..]
    else {
        panic!("counts: {counts:?}");
    };
    assert_eq!((v1 + v2, other), (200, 0), "v1, v2, other: {counts}");
    assert!(
        (25..=75).contains(&v2),
        "books-v2 answered {v2} of 200 calls"
    );

    // The canary's last step moves every call to books-v2, and says so.
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&canary(0, 100)));
    call_books("hello from books-v2").await;
    assert_eq!(canary_accepted(&cluster), "True");
    // Both sidecars are connected, as the Pods they proved with their tokens.
    let proxies = cp.control.registry.list();
    let identities: Vec<_> = proxies
        .iter()
        .map(|p| (p.workload.as_str(), p.identity.as_str()))
        .collect();
    assert!(
        identities.contains(&("books-1", "spiffe://trellis.local/ns/shop/sa/books")),
        "{identities:?}"
    );
    assert!(
        identities.contains(&("web-1", "spiffe://trellis.local/ns/shop/sa/web")),
        "{identities:?}"
    );
}
