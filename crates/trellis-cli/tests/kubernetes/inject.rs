//! Sidecar injection: `trellis inject -f` on manifests the API server then accepts,
//! and the admission webhook, served over TLS on loopback and registered with a
//! MutatingWebhookConfiguration, on Pods created with kubectl.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use trellis_identity::rustls::{self, ServerConfig};
use trellis_kubernetes::inject::{webhook, InjectSettings};
use trellis_testkit::assert_eventually;
use trellis_testkit::kube::KubeCluster;
use trellis_testkit::tls::https::TestCa;

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

/// Serves the webhook over TLS on a loopback port, with a certificate for
/// 127.0.0.1 from `ca`.
async fn serve_webhook(ca: &TestCa) -> SocketAddr {
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("a serving certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = webhook::router(Arc::new(InjectSettings::new()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn webhook_configuration(addr: SocketAddr, ca_pem: &str) -> String {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "trellis-sidecar-injector"},
        "webhooks": [{
            "name": "inject.trellis.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {"url": format!("https://{addr}/inject"), "caBundle": ca_bundle},
            "rules": [{
                "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"], "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {"trellis.dev/inject": "enabled"}},
            "objectSelector": {"matchExpressions": [
                {"key": "trellis.dev/inject", "operator": "NotIn", "values": ["disabled"]}
            ]}
        }]
    })
    .to_string()
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
    let ca = TestCa::new("trellis webhook test CA");
    let addr = serve_webhook(&ca).await;
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&webhook_configuration(addr, &ca.cert_pem)),
    )
    .expect("the webhook configuration is accepted");
    kubectl(&cluster, &["create", "namespace", "shop"], None).expect("namespace");
    kubectl(
        &cluster,
        &["label", "namespace", "shop", "trellis.dev/inject=enabled"],
        None,
    )
    .expect("label");

    // The API server picks the configuration up (and the controller manager makes
    // the namespace's default ServiceAccount) a moment later.
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
}
