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

mod inject {
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
    fn kubectl(
        cluster: &KubeCluster,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
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
}

/// `trellis install kubernetes` and `uninstall kubernetes` with kubectl, and the CRDs'
/// schemas as the API server enforces them.
mod install {
    use std::io::Write;
    use std::process::Stdio;

    use trellis_api::Resource;
    use trellis_kubernetes::crd::{self, BackendPolicy};
    use trellis_kubernetes::install::{InstallSettings, Manifests};
    use trellis_testkit::kube::KubeCluster;

    const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

    /// Runs `trellis` with `args` and returns its standard output, or panics with its
    /// standard error.
    fn trellis(args: &[&str]) -> String {
        let out = std::process::Command::new(TRELLIS)
            .args(args)
            .output()
            .expect("run trellis");
        assert!(
            out.status.success(),
            "trellis {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    const SAMPLE: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata:
  name: books
  namespace: shop
spec:
  targetRef:
    kind: Service
    name: books
  loadBalancer:
    type: consistent-hash
    hashOn:
      header: x-user
  connectTimeout: 500ms
  locality: prefer-zone
  outlierDetection:
    consecutiveFailures: 3
";

    /// `kubectl apply FLAGS -f -` of `yaml`: its output, after checking that it
    /// succeeded without a warning.
    fn apply_cleanly(cluster: &KubeCluster, flags: &[&str], yaml: &str) -> String {
        let mut child = cluster
            .kubectl()
            .arg("apply")
            .args(flags)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("kubectl's stdin");
        stdin.write_all(yaml.as_bytes()).expect("write to kubectl");
        drop(stdin);
        let out = child.wait_with_output().expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "kubectl apply {flags:?}: {stderr}{}",
            cluster.log_tail("kube-apiserver")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn deployment_runs_flags_trellis_accepts() {
        let manifests = Manifests::new(&InstallSettings::default());
        let pod = manifests
            .deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("a pod template");
        let mut args = pod.containers[0].args.clone().expect("args");
        // Clap reads every flag before it acts on --help: an unknown one fails.
        args.push("--help".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        trellis(&args);
    }

    #[tokio::test]
    async fn install_manifests_apply_cleanly() {
        let cluster = KubeCluster::start().await;
        let manifests = trellis(&["install", "kubernetes"]);

        // A server-side dry run checks every object with the API server's own
        // validation and admission, but cannot create the namespace the others go in:
        // that one document is applied for real first.
        let namespace = manifests
            .split("---\n")
            .find(|doc| doc.contains("kind: Namespace"))
            .expect("a Namespace document");
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(namespace));
        let dry_run = apply_cleanly(&cluster, &["--dry-run=server"], &manifests);
        let objects = manifests.matches("\nkind: ").count();
        assert_eq!(
            dry_run
                .lines()
                .filter(|l| l.ends_with("(server dry run)"))
                .count(),
            objects,
            "every object passes the dry run:\n{dry_run}"
        );

        // For real, then a policy through the established CRD.
        apply_cleanly(&cluster, &[], &manifests);
        let crd_names: Vec<String> = crd::KINDS
            .iter()
            .map(|k| format!("crd/{}.trellis.dev", k.plural()))
            .collect();
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(crd_names.iter().map(String::as_str));
        cluster.kubectl_ok(&wait, None);
        cluster.kubectl_ok(&["create", "namespace", "shop"], None);

        // The API server's own reading of the control plane's permissions.
        let control = "--as=system:serviceaccount:trellis-system:trellis-control";
        let cases = [
            ("list pods -A", true),
            ("watch endpointslices.discovery.k8s.io -A", true),
            ("create pods -n shop", false),
            (
                "patch httproutes.gateway.networking.k8s.io -n shop --subresource=status",
                true,
            ),
            ("patch httproutes.gateway.networking.k8s.io -n shop", false),
            (
                "update backendpolicies.trellis.dev -n shop --subresource=status",
                true,
            ),
            ("update backendpolicies.trellis.dev -n shop", false),
            ("create tokenreviews.authentication.k8s.io", true),
            (
                "patch mutatingwebhookconfigurations.admissionregistration.k8s.io/trellis",
                true,
            ),
            (
                "patch mutatingwebhookconfigurations.admissionregistration.k8s.io/other",
                false,
            ),
            ("update secrets -n trellis-system", true),
            ("get secrets -n shop", false),
            ("update leases.coordination.k8s.io -n trellis-system", true),
            ("delete namespaces", false),
        ];
        for (question, want) in cases {
            let mut args = vec!["auth", "can-i", control];
            args.extend(question.split(' '));
            let allowed = cluster.run_kubectl(&args, None).is_ok();
            assert_eq!(allowed, want, "can the control plane {question}?");
        }
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(SAMPLE));

        // What the API server stored, defaults filled in, reads as what universal
        // mode reads from the same document.
        let stored = cluster.kubectl_ok(&["get", "bp", "books", "-n", "shop", "-o", "json"], None);
        let stored: BackendPolicy = serde_json::from_str(&stored).expect("a BackendPolicy");
        let universal = trellis_api::parse_documents(SAMPLE).expect("the sample parses");
        let [Resource {
            spec: trellis_api::Spec::BackendPolicy(want),
            ..
        }] = universal.as_slice()
        else {
            panic!("one BackendPolicy: {universal:?}");
        };
        assert_eq!(&stored.spec.0, &**want);
        let listed = cluster.kubectl_ok(&["get", "trellis", "-A"], None);
        assert!(
            listed.contains("backendpolicy.trellis.dev/books"),
            "{listed}"
        );

        // Documents serde would refuse, the API server refuses, naming the field.
        let cases = [
            (
                "connectTimeout: 500ms",
                "connectTimeout: soon",
                "spec.connectTimeout",
            ),
            (
                "type: consistent-hash",
                "type: random",
                "spec.loadBalancer.type",
            ),
            (
                "consecutiveFailures: 3",
                "consecutiveFailures: three",
                "spec.outlierDetection.consecutiveFailures",
            ),
            (
                "locality: prefer-zone",
                "locality: prefer-zone\n  retries: 3",
                "unknown field \"spec.retries\"",
            ),
            (
                "  targetRef:\n    kind: Service\n",
                "  targetRef:\n",
                "spec.targetRef.kind",
            ),
        ];
        for (from, to, want) in cases {
            assert!(SAMPLE.contains(from), "{from}");
            let malformed = SAMPLE
                .replace(from, to)
                .replace("name: books\n  namespace", "name: bad\n  namespace");
            let refused = cluster
                .run_kubectl(&["apply", "-f", "-"], Some(&malformed))
                .expect_err("a malformed BackendPolicy is refused");
            assert!(
                refused.contains(want),
                "{to:?}: expected {want:?} in: {refused}"
            );
        }

        // The webhook configuration sends the API server to the injector for the
        // opted-in Pods only. No control plane runs here, so with failurePolicy Fail
        // those Pods are refused, naming the webhook that took them; the others are
        // created.
        cluster.kubectl_ok(&["create", "namespace", "injected"], None);
        cluster.kubectl_ok(
            &[
                "label",
                "namespace",
                "injected",
                "trellis.dev/inject=enabled",
            ],
            None,
        );
        let cases = [
            ("shop", "", None),
            ("shop", "disabled", None),
            ("shop", "enabled", Some("pod.inject.trellis.dev")),
            ("injected", "", Some("namespace.inject.trellis.dev")),
            ("injected", "disabled", None),
            ("trellis-system", "enabled", None),
        ];
        for (i, (namespace, label, webhook)) in cases.into_iter().enumerate() {
            cluster.kubectl_ok(
                &[
                    "wait",
                    "--for=create",
                    "--timeout=60s",
                    "serviceaccount/default",
                    "-n",
                    namespace,
                ],
                None,
            );
            let labels = if label.is_empty() {
                String::new()
            } else {
                format!("\n  labels: {{trellis.dev/inject: {label}}}")
            };
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{i}\n  namespace: {namespace}{labels}\n\
                 spec:\n  containers: [{{name: app, image: app}}]\n"
            );
            let created = cluster.run_kubectl(&["create", "-f", "-"], Some(&pod));
            match (webhook, created) {
                (None, Ok(_)) => {}
                (Some(name), Err(e)) if e.contains(name) => {}
                (want, got) => panic!("{namespace}, label {label:?}: want {want:?}, got {got:?}"),
            }
        }

        // Uninstall: everything goes, the definitions with --crds.
        let deletions = trellis(&["uninstall", "kubernetes", "--crds"]);
        cluster.kubectl_ok(&["delete", "--wait=false", "-f", "-"], Some(&deletions));
        cluster.kubectl_ok(
            &[
                "wait",
                "--for=delete",
                "--timeout=60s",
                "mutatingwebhookconfiguration/trellis",
                "clusterrole/trellis-control",
                "crd/backendpolicies.trellis.dev",
                "namespace/trellis-system",
            ],
            None,
        );
    }
}

/// The whole path on Kubernetes: Pods injected by `trellis inject`, run by the test
/// kit's node agent as network-namespace pods (capture init container, native sidecar
/// running `trellis proxy --kubernetes` as uid 1337, the app), identities from their
/// ServiceAccount tokens through TokenReview, and a call from web's Pod to books'
/// ClusterIP captured, sent over mTLS to books' sidecar and answered by books.
mod mesh {
    use std::time::Duration;

    use trellis_control::server::ControlSettings;
    use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
    use trellis_testkit::kube::node::{NodeAgent, NodeOptions};
    use trellis_testkit::kube::KubeCluster;

    use super::support::control::trellis_binary;

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

    /// Every call to books goes to books-v2: a canary at its last step.
    const CANARY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: books, port: 9080}]
  rules:
  - backendRefs: [{name: books, port: 9080, weight: 0}, {name: books-v2, port: 9080, weight: 100}]
"#;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn web_calls_books_by_its_cluster_ip_through_injected_sidecars() {
        let cluster = KubeCluster::start().await;
        // Trellis's CRDs, as `trellis install kubernetes` installs them.
        let crds = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/crds.yaml"
        );
        cluster.kubectl_ok(&["apply", "--server-side", "-f", crds], None);
        cluster.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                crds,
            ],
            None,
        );
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(SHOP));
        let options = NodeOptions::new().image("trellis", [trellis_binary()]);
        let agent = NodeAgent::start(&cluster, "node-a", options)
            .await
            .expect("node agent");

        let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
            .await
            .expect("a client");
        let data = tempfile::tempdir().expect("data dir");
        let settings = ControlSettings {
            data_dir: data.path().to_path_buf(),
            store: Default::default(),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            // Where the Pods reach it: the node's address on their bridge.
            grpc_addr: std::net::SocketAddr::new(agent.node_ip().into(), 0),
            grace: Duration::from_secs(10),
            ca: Default::default(),
        };
        let cp = KubernetesControlPlane::start(
            client,
            KubernetesSettings::new("trellis-system"),
            settings,
            None,
        )
        .await
        .expect("control plane");

        let control = format!("http://{}", cp.control.grpc_addr);
        let injected = std::process::Command::new(trellis_binary())
            .args([
                "inject",
                "-f",
                "-",
                "--image",
                "trellis",
                "--control-grpc",
                &control,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(PODS.as_bytes())?;
                child.wait_with_output()
            })
            .expect("trellis inject");
        assert!(injected.status.success(), "trellis inject failed");
        let injected = String::from_utf8(injected.stdout).expect("UTF-8");
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(&injected));
        let ready = || {
            cluster
                .run_kubectl(
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
                )
                .is_ok()
        };
        assert!(
            ready(),
            "the Pods never became ready:\n{}",
            agent.all_logs()
        );

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
        let url = format!("http://{books}:9080/");
        let call_books = async |want: &str| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let answer = loop {
                let out = agent
                    .exec("shop/web-1", "curl", &["-sS", "-m", "5", "-i", &url])
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
        };
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

        // A route applied with kubectl moves books' traffic to books-v2, and says so.
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(CANARY));
        call_books("hello from books-v2").await;
        let accepted = cluster.kubectl_ok(
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
        );
        assert_eq!(accepted, "True");
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
}
