//! Trellis on Kubernetes, end to end against a real API server and controller manager
//! (the test kit's `KubeCluster`, built from the Go module k8s.io/kubernetes): the real
//! `trellis` binary as the control plane on the cluster, and the operator's tools
//! unchanged against it; sidecar injection (`mod inject`).

mod support;

use std::time::Duration;

use support::control::Control;
use trellis_testkit::kube::KubeCluster;

/// A namespace with a Service, a meshed Pod (its status as a kubelet would report it)
/// and a GAMMA route.
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
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{name: http, port: 9080, targetPort: 8080, appProtocol: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: books-1, namespace: shop, labels: {app: books}}
spec:
  serviceAccountName: books
  containers: [{name: books, image: books, ports: [{containerPort: 8080}]}]
  initContainers: [{name: trellis-proxy, image: trellis, restartPolicy: Always}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-v2, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 9080}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: books, port: 9080}]
"#;

const READY: &str = r#"{"status":{"phase":"Running","podIP":"10.244.0.7","podIPs":[{"ip":"10.244.0.7"}],
"conditions":[{"type":"Ready","status":"True"}]}}"#;

/// Polls `check` every 100 ms for up to 20 s; the last value it returned on failure.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} never happened; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trellis_get_and_describe_read_the_cluster_through_the_control_plane() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    let patch = [
        "-n",
        "shop",
        "patch",
        "pod",
        "books-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        READY,
    ];
    cluster.kubectl_ok(&patch, None);
    let data = tempfile::tempdir().expect("data dir");
    let kubeconfig = cluster
        .kubeconfig()
        .to_str()
        .expect("UTF-8 path")
        .to_string();
    let control = Control::start(data.path(), &["--kubernetes", "--kubeconfig", &kubeconfig]).await;
    assert!(
        control.store.contains("Kubernetes"),
        "banner says the store is {:?}",
        control.store
    );
    let token = control.token();
    let cluster_ip = cluster.kubectl_ok(
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

    // The Service, with its ClusterIP as its virtual IP; the Pod as a workload.
    eventually("books listed with its ClusterIP", async || {
        let (ok, out, err) = control
            .trellis(&["get", "services", "-n", "shop"], Some(&token))
            .await;
        (ok && out.contains("books") && out.contains(&cluster_ip))
            .then_some(())
            .ok_or(format!("{out}{err}"))
    })
    .await;
    eventually("books-1 listed at its Pod IP", async || {
        let (ok, out, err) = control
            .trellis(&["get", "workloads", "-n", "shop"], Some(&token))
            .await;
        (ok && out.contains("books-1") && out.contains("10.244.0.7"))
            .then_some(())
            .ok_or(format!("{out}{err}"))
    })
    .await;
    // The route, accepted, as `trellis describe` tells.
    eventually("the route described as accepted", async || {
        let (ok, out, err) = control
            .trellis(
                &["describe", "httproute", "books-v2", "-n", "shop"],
                Some(&token),
            )
            .await;
        (ok && out.contains("x-version") && out.contains("Accepted"))
            .then_some(())
            .ok_or(format!("{out}{err}"))
    })
    .await;

    // Writes go to the cluster, not to one replica's memory: `trellis apply` and
    // `trellis delete` say so and change nothing.
    let file = data.path().join("route.yaml");
    std::fs::write(&file, SHOP.split("---").last().expect("the route")).expect("write");
    let (ok, out, err) = control
        .trellis(&["apply", "-f", file.to_str().expect("path")], Some(&token))
        .await;
    assert!(!ok && err.contains("kubectl apply"), "apply: {out}{err}");
    let (ok, out, err) = control
        .trellis(
            &["delete", "httproute", "books-v2", "-n", "shop"],
            Some(&token),
        )
        .await;
    assert!(!ok && err.contains("kubectl"), "delete: {out}{err}");

    // A route deleted with kubectl leaves the control plane's view.
    cluster.kubectl_ok(&["-n", "shop", "delete", "httproute", "books-v2"], None);
    eventually("the route gone", async || {
        let (ok, out, err) = control
            .trellis(&["get", "httproutes", "-n", "shop"], Some(&token))
            .await;
        (ok && !out.contains("books-v2"))
            .then_some(())
            .ok_or(format!("{out}{err}"))
    })
    .await;
}

/// Sidecar injection, install, and the whole path through injected sidecars.
mod kubernetes {
    mod check;
    mod inject;
    mod install;
    mod mesh;
    mod replicas;
}
