//! The cluster as the mesh's source, against a real API server and controller manager:
//! what `kubectl` creates, changes and deletes shows up in the control plane's store.

use std::sync::Arc;

use trellis_api::{Kind, Spec};
use trellis_control::api::storage;
use trellis_control::store::{MemoryStore, Store};
use trellis_kubernetes::source::grants::NOT_PERMITTED;
use trellis_kubernetes::source::KubernetesSource;
use trellis_testkit::assert_eventually;
use trellis_testkit::kube::KubeCluster;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-a}
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
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: grpc-admin, port: 9090}
---
apiVersion: v1
kind: Pod
metadata:
  name: books-1
  namespace: shop
  labels: {app: books, version: v1}
spec:
  nodeName: node-a
  serviceAccountName: books
  containers:
  - name: books
    image: books
    ports: [{containerPort: 8080}]
  initContainers:
  - name: trellis-proxy
    image: trellis
    restartPolicy: Always
"#;

/// Reports books-1's status as a kubelet would: an IP, and whether it is ready.
fn set_ready(cluster: &KubeCluster, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"10.244.0.7","podIPs":[{{"ip":"10.244.0.7"}}],
        "conditions":[{{"type":"Ready","status":"{status}"}},{{"type":"ContainersReady","status":"{status}"}}]}}}}"#
    );
    let patch = [
        "-n",
        "shop",
        "patch",
        "pod",
        "books-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ];
    cluster.kubectl_ok(&patch, None);
}

/// A source mirroring `cluster` into a new store, leading (so it writes status).
async fn mirror(cluster: &KubeCluster) -> (Arc<MemoryStore>, KubernetesSource) {
    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let store = Arc::new(MemoryStore::new());
    let (_leads, leading) = tokio::sync::watch::channel(true);
    let source = KubernetesSource::start(client, store.clone(), leading);
    (store, source)
}

async fn stored(
    store: &MemoryStore,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Option<trellis_api::Resource> {
    let key = storage::resource_key(kind, namespace, name);
    let entry = store.get(&key).await.ok()??;
    storage::decode(&entry).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_ready_pods_and_routes_become_the_mesh_and_leave_it() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    let (store, _source) = mirror(&cluster).await;

    // The Service, with its ClusterIP as the virtual IP and each port's protocol.
    assert_eventually!(stored(&store, Kind::Service, "shop", "books")
        .await
        .is_some());
    let service = stored(&store, Kind::Service, "shop", "books")
        .await
        .expect("books");
    let Spec::Service(spec) = &service.spec else {
        panic!("not a Service: {service:?}")
    };
    assert_eq!(spec.selector.get("app").map(String::as_str), Some("books"));
    let protocols: Vec<_> = spec
        .ports
        .iter()
        .map(|p| (p.port, p.target_port, p.app_protocol))
        .collect();
    assert_eq!(
        protocols,
        [
            (9080, Some(8080), trellis_api::service::AppProtocol::Http),
            (9090, Some(9090), trellis_api::service::AppProtocol::Grpc),
        ]
    );
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
    let vip = store
        .get("/vips/by-service/shop/books")
        .await
        .expect("store")
        .expect("a VIP");
    assert_eq!(String::from_utf8_lossy(&vip.value), cluster_ip);

    // A Pod with no IP, not ready, is no workload yet.
    assert!(stored(&store, Kind::Workload, "shop", "books-1")
        .await
        .is_none());
    set_ready(&cluster, true);
    assert_eventually!(
        stored(&store, Kind::Workload, "shop", "books-1")
            .await
            .is_some(),
        "the ready Pod never became a workload"
    );
    let workload = stored(&store, Kind::Workload, "shop", "books-1")
        .await
        .expect("books-1");
    let Spec::Workload(spec) = &workload.spec else {
        panic!("not a Workload")
    };
    assert_eq!(spec.address.to_string(), "10.244.0.7");
    assert_eq!(spec.service_account, "books");
    assert_eq!(
        spec.inbound_port,
        Some(trellis_control::compile::DEFAULT_INBOUND_PORT)
    );
    // The declared container port, then the Service's other target port, which
    // Kubernetes reaches whether or not the Pod declares it.
    assert_eq!(
        spec.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [8080, 9090]
    );
    assert_eq!(
        workload.metadata.labels.get("version").map(String::as_str),
        Some("v1")
    );
    // The controller manager's EndpointSlice names the Pod and its Node's zone.
    assert_eventually!(
        stored(&store, Kind::Workload, "shop", "books-1")
            .await
            .is_some_and(
                |w| matches!(&w.spec, Spec::Workload(s) if s.zone.as_deref() == Some("zone-a"))
            ),
        "the workload never got its zone from the EndpointSlice"
    );

    // Marked not ready, it leaves the mesh; ready again, it is back.
    set_ready(&cluster, false);
    assert_eventually!(
        stored(&store, Kind::Workload, "shop", "books-1")
            .await
            .is_none(),
        "a Pod marked not ready stayed in the endpoints"
    );
    set_ready(&cluster, true);
    assert_eventually!(
        stored(&store, Kind::Workload, "shop", "books-1")
            .await
            .is_some(),
        "a Pod ready again never came back"
    );

    // A GAMMA route: an HTTPRoute whose parent is the Service.
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 9080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: books, port: 9080, weight: 90}, {name: books-v2, port: 9080, weight: 10}]
"#;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(route));
    assert_eventually!(
        stored(&store, Kind::HTTPRoute, "shop", "books-canary")
            .await
            .is_some(),
        "the HTTPRoute never reached the store"
    );
    let route = stored(&store, Kind::HTTPRoute, "shop", "books-canary")
        .await
        .expect("route");
    let Spec::HTTPRoute(spec) = &route.spec else {
        panic!("not an HTTPRoute")
    };
    let weights: Vec<_> = spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("books", 90), ("books-v2", 10)]);

    // Its status says so under Trellis's name: accepted, and books-v2 does not exist.
    let conditions = |route: &str| {
        let path = "jsonpath={range .status.parents[?(@.controllerName==\"trellis.dev/mesh\")].conditions[*]}{.type}={.status}/{.reason}/{.observedGeneration} {end}";
        cluster.kubectl_ok(&["-n", "shop", "get", "httproute", route, "-o", path], None)
    };
    assert_eventually!(
        conditions("books-canary")
            == "Accepted=True/Accepted/1 ResolvedRefs=False/BackendNotFound/1 ",
        "status: {}",
        conditions("books-canary")
    );
    // A route Trellis cannot read stays out of the mesh and says why.
    let unsupported = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-sticky, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 9080}]
  rules:
  - backendRefs: [{name: books, port: 9080}]
    sessionPersistence: {sessionName: books, type: Cookie}
"#;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(unsupported));
    assert_eventually!(
        conditions("books-sticky") == "Accepted=False/UnsupportedValue/1 ",
        "status: {}",
        conditions("books-sticky")
    );
    assert!(stored(&store, Kind::HTTPRoute, "shop", "books-sticky")
        .await
        .is_none());

    // Deleting the Service takes it, and its virtual IP, out of the mesh.
    cluster.kubectl_ok(&["-n", "shop", "delete", "service", "books"], None);
    assert_eventually!(stored(&store, Kind::Service, "shop", "books")
        .await
        .is_none());
    assert_eventually!(store
        .get("/vips/by-service/shop/books")
        .await
        .expect("store")
        .is_none());
}

/// A route in shop whose backend is the Service ratings of reviews.
const CROSS_NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: reviews}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: reviews}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-ratings, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 9080}]
  rules:
  - backendRefs: [{name: ratings, namespace: reviews, port: 9080}]
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-routes, namespace: reviews}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: ratings}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_in_another_namespace_needs_a_reference_grant_there() {
    let cluster = KubeCluster::start().await;
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(CROSS_NAMESPACE));
    let (store, _source) = mirror(&cluster).await;

    let backend = async || {
        let route = stored(&store, Kind::HTTPRoute, "shop", "books-ratings").await?;
        let Spec::HTTPRoute(spec) = route.spec else {
            return None;
        };
        Some(spec.rules[0].backend_refs[0].name.clone())
    };
    let resolved = || {
        let path = "jsonpath={range .status.parents[?(@.controllerName==\"trellis.dev/mesh\")].conditions[?(@.type==\"ResolvedRefs\")]}{.status}/{.reason}{end}";
        cluster.kubectl_ok(
            &[
                "-n",
                "shop",
                "get",
                "httproute",
                "books-ratings",
                "-o",
                path,
            ],
            None,
        )
    };
    // Without a grant in reviews, the backend resolves to no Service (its share of
    // requests fails) and the status says why.
    assert_eventually!(
        backend().await.as_deref() == Some(NOT_PERMITTED),
        "stored backend: {:?}",
        backend().await
    );
    assert_eventually!(
        resolved() == "False/RefNotPermitted",
        "status: {}",
        resolved()
    );
    // reviews grants shop's HTTPRoutes its Service: the route reaches ratings.
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(GRANT));
    assert_eventually!(
        backend().await.as_deref() == Some("ratings"),
        "stored backend: {:?}",
        backend().await
    );
    assert_eventually!(resolved() == "True/ResolvedRefs", "status: {}", resolved());
    // Taking the grant back refuses it again.
    cluster.kubectl_ok(
        &["-n", "reviews", "delete", "referencegrant", "shop-routes"],
        None,
    );
    assert_eventually!(
        backend().await.as_deref() == Some(NOT_PERMITTED),
        "stored backend: {:?}",
        backend().await
    );
}
