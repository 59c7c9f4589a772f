//! The node agent against a real API server and controller manager: a Pod with an
//! init container, a native sidecar and an app container runs in that order in a
//! network namespace of its own, becomes Ready with its IP, lands in its Service's
//! EndpointSlice (made by the real controller), gets a TokenRequest token for its
//! audience, leaves the slice's ready endpoints when marked not ready, and is stopped
//! and removed when deleted. Needs root, as every netns test.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use trellis_testkit::assert_eventually;
use trellis_testkit::kube::node::{admin_client, NodeAgent, NodeOptions};
use trellis_testkit::kube::KubeCluster;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// The init container and the sidecar leave a line in a shared `emptyDir`; the app
/// checks the sidecar serves before it adds its own, then prints its token and its
/// expanded environment and serves the directory.
const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  serviceAccountName: web
  terminationGracePeriodSeconds: 5
  volumes:
  - name: state
    emptyDir: {}
  - name: trellis-token
    projected:
      sources:
      - serviceAccountToken: {audience: trellis, expirationSeconds: 3600, path: token}
  initContainers:
  - name: init
    image: shell
    args: ["-c", "echo init >> /run/trellis-node-test/state/order"]
    volumeMounts: [{name: state, mountPath: /run/trellis-node-test/state}]
  - name: sidecar
    image: shell
    restartPolicy: Always
    args: ["-c", "echo sidecar >> /run/trellis-node-test/state/order && exec python3 -m http.server 15020 --bind $(POD_IP)"]
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    startupProbe:
      httpGet: {path: /, port: 15020}
      periodSeconds: 10
      failureThreshold: 30
    volumeMounts: [{name: state, mountPath: /run/trellis-node-test/state}]
  containers:
  - name: app
    image: shell
    args:
    - -c
    - >-
      python3 -c 'import urllib.request; urllib.request.urlopen("http://$(POD_IP):15020/")' &&
      echo app >> /run/trellis-node-test/state/order &&
      echo "token=$(cat /var/run/secrets/trellis.dev/serviceaccount/token)" &&
      echo "who=$(WHO)" &&
      cd /run/trellis-node-test/state && exec python3 -m http.server 8080
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: ACCOUNT
      valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
    - name: WHO
      value: $(ACCOUNT)@$(POD_NAME)
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /order, port: http}
    volumeMounts:
    - {name: state, mountPath: /run/trellis-node-test/state}
    - {name: trellis-token, mountPath: /var/run/secrets/trellis.dev/serviceaccount}
"#;

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// The endpoints of the `web` Service's slices: (address, ready).
async fn endpoints(client: &Client) -> Vec<(String, bool)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "shop");
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            (e.addresses.join(","), ready)
        })
        .collect()
}

async fn get(pods: &Api<Pod>, name: &str) -> Option<Pod> {
    pods.get_opt(name).await.ok().flatten()
}

fn pids_in(netns: &str) -> Vec<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether the process runs (a zombie waiting for its parent to reap it does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_in_order_serves_its_service_and_goes_when_deleted() {
    let cluster = KubeCluster::start().await;
    let options = NodeOptions::new().image("shell", ["/bin/sh"]);
    let agent = NodeAgent::start(&cluster, "node-a", options)
        .await
        .expect("the node agent starts");
    let client = admin_client(&cluster).await.expect("a client");
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(WEB));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");

    // Ready, with an address of the node's bridge.
    assert_eventually!(
        get(&pods, "web")
            .await
            .is_some_and(|p| condition(&p, "Ready").as_deref() == Some("True")),
        "the Pod never became ready: {:?}\n{}",
        get(&pods, "web").await.and_then(|p| p.status),
        agent.all_logs()
    );
    let pod = get(&pods, "web").await.expect("the Pod");
    let status = pod.status.expect("a status");
    let ip = status.pod_ip.clone().expect("a pod IP");
    let [a, b, c, _] = agent.node_ip().octets();
    assert!(
        ip.starts_with(&format!("{a}.{b}.{c}.")),
        "{ip} not on the node's bridge"
    );
    assert_eq!(status.host_ip, Some(agent.node_ip().to_string()));
    let init_statuses = status.init_container_statuses.unwrap_or_default();
    let init_names: Vec<&str> = init_statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(init_names, ["init", "sidecar"]);
    assert!(init_statuses[1].ready && init_statuses[1].started == Some(true));

    // In order, each after the one before it: the app saw the sidecar serve.
    let order = agent
        .exec("shop/web", "bash", &["-c", &format!("exec 3<>/dev/tcp/{ip}/8080; printf 'GET /order HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")])
        .expect("a request from inside the Pod");
    let order = String::from_utf8_lossy(&order.stdout);
    assert!(
        order.ends_with("\r\n\r\ninit\nsidecar\napp\n"),
        "wrong start order:\n{order}"
    );

    // $(VAR) expansion in env and args, fieldRefs.
    let app_log = agent.logs("shop/web", "app");
    assert!(app_log.contains("who=web@web"), "{app_log}");

    // The projected token is a TokenRequest token for `trellis`, bound to the Pod.
    let token = app_log
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no token in the app's log:\n{app_log}"))
        .to_string();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token,
            audiences: Some(vec!["trellis".to_string()]),
        },
        ..TokenReview::default()
    };
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("a TokenReview")
        .status
        .expect("its status");
    assert_eq!(answer.authenticated, Some(true), "{answer:?}");
    let user = answer.user.expect("a user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:shop:web")
    );
    let bound_pod = user
        .extra
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name").cloned());
    assert_eq!(bound_pod, Some(vec!["web".to_string()]));

    // The EndpointSlice controller takes the Pod: it is on a registered Node.
    assert_eventually!(
        endpoints(&client).await == [(ip.clone(), true)],
        "the Service's endpoints are {:?}, not [{ip}, ready]",
        endpoints(&client).await
    );

    // Marked not ready, it stays in the slice as a not-ready endpoint; then back.
    agent.set_ready("shop/web", false);
    assert_eventually!(
        endpoints(&client).await == [(ip.clone(), false)],
        "after set_ready(false) the endpoints are {:?}",
        endpoints(&client).await
    );
    let pod = get(&pods, "web").await.expect("the Pod");
    assert_eq!(condition(&pod, "ContainersReady").as_deref(), Some("True"));
    agent.set_ready("shop/web", true);
    assert_eventually!(
        endpoints(&client).await == [(ip.clone(), true)],
        "after set_ready(true) the endpoints are {:?}",
        endpoints(&client).await
    );

    // Deleted: the processes stop, the namespace goes, and so does the object.
    let netns = agent.netns("shop/web").expect("the Pod's namespace");
    let pids = pids_in(&netns);
    assert!(
        pids.len() >= 2,
        "the sidecar and the app run in {netns}: {pids:?}"
    );
    cluster.kubectl_ok(
        &["-n", "shop", "delete", "pod", "web", "--wait=false"],
        None,
    );
    assert_eventually!(
        get(&pods, "web").await.is_none(),
        "the Pod was never deleted: {:?}",
        get(&pods, "web").await.map(|p| p.metadata)
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} of the Pod still runs");
    }
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&netns),
        "{netns} is left:\n{namespaces}"
    );
    assert_eq!(agent.netns("shop/web"), None);
}

const BROKEN: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: broken}
---
apiVersion: v1
kind: Pod
metadata: {name: failing-init, namespace: broken}
spec:
  nodeName: node-b
  automountServiceAccountToken: false
  initContainers:
  - {name: check, image: shell, args: ["-c", "echo no database; exit 3"]}
  containers:
  - {name: app, image: shell, args: ["-c", "echo should not run"]}
---
apiVersion: v1
kind: Pod
metadata: {name: unknown-image, namespace: broken}
spec:
  nodeName: node-b
  automountServiceAccountToken: false
  containers:
  - {name: app, image: "registry.example/nothing:1"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_fails_the_pod_and_an_unknown_image_waits() {
    let cluster = KubeCluster::start().await;
    let options = NodeOptions::new().image("shell", ["/bin/sh"]);
    let agent = NodeAgent::start(&cluster, "node-b", options)
        .await
        .expect("the node agent starts");
    let client = admin_client(&cluster).await.expect("a client");
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(BROKEN));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "broken");
    let phase = |pod: Option<Pod>| pod.and_then(|p| p.status).and_then(|s| s.phase);

    assert_eventually!(
        phase(get(&pods, "failing-init").await).as_deref() == Some("Failed"),
        "the Pod did not fail: {:?}",
        get(&pods, "failing-init").await.and_then(|p| p.status)
    );
    let status = get(&pods, "failing-init")
        .await
        .and_then(|p| p.status)
        .expect("a status");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("\"check\"") && message.contains('3'),
        "{message}"
    );
    assert!(agent
        .logs("broken/failing-init", "check")
        .contains("no database"));
    assert_eq!(agent.logs("broken/failing-init", "app"), "");

    let waiting = |pod: Option<Pod>| -> Option<(String, String)> {
        let status = pod?.status?.container_statuses?.into_iter().next()?;
        let waiting = status.state?.waiting?;
        Some((waiting.reason?, waiting.message?))
    };
    assert_eventually!(
        waiting(get(&pods, "unknown-image").await)
            .is_some_and(|(reason, _)| reason == "CreateContainerConfigError"),
        "the container is not waiting on its config: {:?}",
        get(&pods, "unknown-image").await.and_then(|p| p.status)
    );
    let (_, message) = waiting(get(&pods, "unknown-image").await).expect("waiting");
    assert!(message.contains("registry.example/nothing:1"), "{message}");
}

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: echo
        image: shell
        args: ["-c", "exec python3 -m http.server 8080"]
        readinessProbe: {tcpSocket: {port: 8080}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_pods_are_scheduled_to_the_node_and_run() {
    let cluster = KubeCluster::start().await;
    let options = NodeOptions::new()
        .image("shell", ["/bin/sh"])
        .schedule_unbound();
    let agent = NodeAgent::start(&cluster, "node-c", options)
        .await
        .expect("the node agent starts");
    let client = admin_client(&cluster).await.expect("a client");
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(ECHO));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let ready_on_node = || async {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-c"))
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
            .count()
    };
    assert_eventually!(
        ready_on_node().await == 2,
        "{} of 2 replicas ready on node-c\n{}",
        ready_on_node().await,
        agent.all_logs()
    );

    // Dropping the agent stops the Pods' processes and removes their namespaces.
    let list = pods
        .list(&ListParams::default().labels("app=echo"))
        .await
        .expect("the Pods");
    let namespaces: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| agent.netns(("default", p.metadata.name.as_deref()?)))
        .collect();
    assert_eq!(namespaces.len(), 2, "{namespaces:?}");
    let pids: Vec<u32> = namespaces.iter().flat_map(|n| pids_in(n)).collect();
    assert_eq!(pids.len(), 2, "one server per Pod: {pids:?}");
    drop(agent);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the agent");
    }
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    for namespace in namespaces {
        assert!(!left.contains(&namespace), "{namespace} outlived the agent");
    }
}
