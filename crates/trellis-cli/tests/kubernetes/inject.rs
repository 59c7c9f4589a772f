//! Sidecar injection: `trellis inject -f` on manifests the API server then accepts,
//! and the admission webhook, served over TLS by the control plane with a certificate
//! from the mesh CA, called by the API server through the Service and webhook
//! configuration `trellis install` writes, on Pods created with kubectl.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use trellis_control::server::ControlSettings;
use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
use trellis_kubernetes::inject::serving::WebhookSettings;
use trellis_kubernetes::inject::InjectSettings;
use trellis_kubernetes::install::{InstallSettings, Manifests, DEFAULT_NAMESPACE};
use trellis_testkit::assert_eventually;
use trellis_testkit::kube::node::{NodeAgent, NodeOptions};
use trellis_testkit::kube::KubeCluster;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations:
        trellis.dev/exclude-outbound-ports: \"5432\"
    spec:
      containers:
      - name: web
        image: web:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
";

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]
";

/// kubectl, without holding up the runtime's other tasks (the webhook answers the
/// API server from one of them while kubectl waits).
fn kubectl(cluster: &KubeCluster, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    tokio::task::block_in_place(|| cluster.run_kubectl(args, stdin))
}

fn names(containers: &Value) -> Vec<&str> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect()
}

fn trellis_inject(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new(TRELLIS)
        .arg("inject")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("trellis runs");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("trellis inject");
    assert!(
        out.status.success(),
        "trellis inject {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trellis_inject_gives_manifests_the_api_server_accepts() {
    let cluster = KubeCluster::start().await;
    let file = cluster.dir().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT).expect("manifest");
    let from_file = trellis_inject(
        &[
            "-f",
            file.to_str().expect("path"),
            "--image",
            "registry.local/trellis:test",
        ],
        None,
    );
    let from_stdin = trellis_inject(
        &["-f", "-", "--image", "registry.local/trellis:test"],
        Some(DEPLOYMENT),
    );
    assert_eq!(from_file, from_stdin);

    let docs: Vec<Value> = serde_saphyr::from_multiple(&from_file).expect("YAML");
    let template = &docs[0]["spec"]["template"];
    assert_eq!(
        names(&template["spec"]["initContainers"]),
        ["trellis-init", "trellis-proxy"]
    );
    assert_eq!(
        template["spec"]["initContainers"][1]["image"],
        "registry.local/trellis:test"
    );
    let capture_args = template["spec"]["initContainers"][0]["args"].to_string();
    assert!(
        capture_args.contains(r#""--exclude-outbound-ports","5432""#),
        "{capture_args}"
    );
    assert_eq!(docs[1]["kind"], "Service");

    // The API server takes the injected Deployment as it is: every field valid.
    let created = kubectl(
        &cluster,
        &["apply", "-f", "-", "-o", "json"],
        Some(&from_file),
    )
    .unwrap_or_else(|e| panic!("the API server refused the manifests: {e}"));
    let created: Value = serde_json::from_str(&created).expect("JSON");
    let deployment = &created["items"][0];
    assert_eq!(deployment["kind"], "Deployment");
    let init = &deployment["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(names(init), ["trellis-init", "trellis-proxy"]);
    assert_eq!(init[1]["restartPolicy"], "Always");
}

/// The control plane's webhook behind the Service `trellis install` declares: the
/// install's Service without its selector (the control plane runs in this process,
/// not in a Pod), an EndpointSlice for it at the node's address, and the install's
/// webhook configuration, whose `caBundle` the control plane fills in.
pub(crate) async fn serve_injection(cluster: &KubeCluster) -> (NodeAgent, KubernetesControlPlane) {
    // A node only for its address, which the API server reaches and which is not
    // loopback (endpoints may not be).
    let agent = NodeAgent::start(cluster, "node-a", NodeOptions::new())
        .await
        .expect("node agent");
    let install = Manifests::new(&InstallSettings::default());
    let namespace = serde_json::to_string(&install.namespace).expect("JSON");
    kubectl(cluster, &["apply", "-f", "-"], Some(&namespace)).expect("namespace");

    let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
        .await
        .expect("a client");
    let data = tempfile::tempdir().expect("data dir");
    let node = std::net::SocketAddr::new(agent.node_ip().into(), 0);
    let mut on_cluster = KubernetesSettings::new(DEFAULT_NAMESPACE);
    on_cluster.webhook = Some(WebhookSettings {
        addr: node,
        inject: InjectSettings::new(),
    });
    let settings = ControlSettings {
        data_dir: data.keep(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: node,
        grace: Duration::from_secs(10),
        ca: Default::default(),
    };
    let cp = KubernetesControlPlane::start(client, on_cluster, settings, None)
        .await
        .expect("control plane");
    let webhook_port = cp.webhook.as_ref().expect("the webhook").addr.port();

    let mut service = install.service.clone();
    service.spec.as_mut().expect("spec").selector = None;
    let endpoints = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "trellis-control-webhook",
            "namespace": DEFAULT_NAMESPACE,
            "labels": {"kubernetes.io/service-name": "trellis-control"}
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [agent.node_ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "webhook", "port": webhook_port, "protocol": "TCP"}]
    });
    let objects = [
        serde_json::to_value(&service).expect("JSON"),
        endpoints,
        serde_json::to_value(&install.webhook).expect("JSON"),
    ];
    for object in objects {
        kubectl(cluster, &["apply", "-f", "-"], Some(&object.to_string()))
            .unwrap_or_else(|e| panic!("{object} is refused: {e}"));
    }
    (agent, cp)
}

/// What the API server would store for `pod` now (a server-side dry run).
fn dry_run_create(cluster: &KubeCluster, pod: &str) -> Result<Value, String> {
    kubectl(
        cluster,
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(pod),
    )
    .map(|out| serde_json::from_str(&out).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_an_injected_namespace_gets_the_sidecar_once() {
    let cluster = KubeCluster::start().await;
    let (_agent, control) = serve_injection(&cluster).await;
    kubectl(&cluster, &["create", "namespace", "shop"], None).expect("namespace");
    kubectl(
        &cluster,
        &["label", "namespace", "shop", "trellis.dev/inject=enabled"],
        None,
    )
    .expect("label");

    // The API server picks the configuration up once the control plane has written
    // its caBundle (and the controller manager makes the namespace's default
    // ServiceAccount) a moment later.
    assert_eventually!(
        dry_run_create(&cluster, POD)
            .is_ok_and(|pod| names(&pod["spec"]["initContainers"]).len() == 2),
        "the Pod is never injected; last answer: {:?}{}",
        dry_run_create(&cluster, POD),
        cluster.log_tail("kube-apiserver")
    );

    let created = kubectl(&cluster, &["create", "-f", "-", "-o", "json"], Some(POD))
        .expect("the Pod is created");
    let created: Value = serde_json::from_str(&created).expect("JSON");
    let read: Value = serde_json::from_str(
        &kubectl(
            &cluster,
            &["get", "pod", "web", "-n", "shop", "-o", "json"],
            None,
        )
        .expect("get"),
    )
    .expect("JSON");
    assert_eq!(read["spec"], created["spec"]);
    let spec = &read["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["trellis-init", "trellis-proxy"]
    );
    assert_eq!(names(&spec["containers"]), ["web"]);
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(
        spec["initContainers"][0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let token = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "trellis-token")
        .expect("the token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "trellis"
    );
    assert_eq!(
        read["metadata"]["annotations"]["trellis.dev/injected"],
        trellis_kubernetes::inject::VERSION
    );

    // A second admission of the Pod as it came back changes nothing.
    let mut again = read.clone();
    let metadata = again["metadata"].as_object_mut().expect("metadata");
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        metadata.remove(field);
    }
    metadata.insert("name".to_owned(), json!("web-again"));
    again.as_object_mut().expect("pod").remove("status");
    let readmitted = dry_run_create(&cluster, &again.to_string()).expect("admitted again");
    assert_eq!(readmitted["spec"], read["spec"]);
    assert_eq!(
        readmitted["metadata"]["annotations"],
        read["metadata"]["annotations"]
    );

    // A Pod that opts out is created as written.
    let opted_out = POD.replace("name: web\n", "name: plain\n").replace(
        "labels: {app: web}",
        "labels: {app: web, trellis.dev/inject: disabled}",
    );
    let plain = dry_run_create(&cluster, &opted_out).expect("admitted");
    assert!(plain["spec"].get("initContainers").is_none(), "{plain}");

    // The Pods a controller makes from a template (named by generateName) too.
    let deployment = DEPLOYMENT
        .split("---")
        .next()
        .expect("the Deployment")
        .replace("namespace: default", "namespace: shop")
        .replace("replicas: 2", "replicas: 1");
    kubectl(&cluster, &["apply", "-f", "-"], Some(&deployment)).expect("Deployment");
    let pod_of_deployment = || {
        let out = kubectl(
            &cluster,
            &["get", "pods", "-n", "shop", "-l", "app=web", "-o", "json"],
            None,
        )
        .unwrap_or_default();
        let pods: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["metadata"]["generateName"].is_string())
            .cloned()
    };
    assert_eventually!(
        pod_of_deployment().is_some(),
        "the ReplicaSet never made a Pod{}",
        cluster.log_tail("kube-controller-manager")
    );
    let pod = pod_of_deployment().expect("a Pod");
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["trellis-init", "trellis-proxy"]
    );
    let capture_args = pod["spec"]["initContainers"][0]["args"].to_string();
    assert!(
        capture_args.contains(r#""--exclude-outbound-ports","5432""#),
        "{capture_args}"
    );

    // The caBundle is the mesh's trust bundle, written there by the control plane.
    let configuration = kubectl(
        &cluster,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "trellis",
            "-o",
            "json",
        ],
        None,
    )
    .expect("the webhook configuration");
    let configuration: Value = serde_json::from_str(&configuration).expect("JSON");
    let bundle = control.control.ca.trust_bundle().to_pem();
    for webhook in configuration["webhooks"].as_array().expect("webhooks") {
        let encoded = webhook["clientConfig"]["caBundle"]
            .as_str()
            .expect("a caBundle");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(String::from_utf8(decoded).expect("PEM"), bundle);
    }

    // With the control plane gone, `failurePolicy: Fail` keeps a Pod of an injected
    // namespace from starting without its sidecar, and says why; a Pod that opted out
    // is not sent to the webhook, so it is still created.
    drop(control);
    let late = POD.replace("name: web\n", "name: late\n");
    let refused = dry_run_create(&cluster, &late).expect_err("created without its sidecar");
    assert!(
        refused.contains("failed calling webhook") && refused.contains("inject.trellis.dev"),
        "{refused}"
    );
    dry_run_create(&cluster, &opted_out).expect("an opted-out Pod needs no webhook");
}
