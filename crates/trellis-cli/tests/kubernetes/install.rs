//! `trellis install kubernetes` and `uninstall kubernetes` with kubectl, and the CRDs'
//! schemas as the API server enforces them.

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
