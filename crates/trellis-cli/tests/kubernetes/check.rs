//! `trellis check --kubernetes`, before an install (`--pre`: the cluster, and whether
//! the caller may install) and after (CRDs, replicas, the webhook's caBundle and a Pod
//! it injects, the control plane's proxies and certificates), against the real API
//! server, as an operator and as a user who may not install.

use std::process::Output;

use trellis_kubernetes::install::{InstallSettings, Manifests};
use trellis_testkit::kube::KubeCluster;

use super::inject::serve_injection;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

fn check(kubeconfig: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let Output { status, stdout, .. } = tokio::task::block_in_place(|| {
        std::process::Command::new(TRELLIS)
            .args(["check", "--kubernetes", "--kubeconfig"])
            .arg(kubeconfig)
            .args(extra)
            .output()
            .expect("trellis check runs")
    });
    (status.success(), String::from_utf8(stdout).expect("UTF-8"))
}

/// A kubeconfig for the ServiceAccount `nobody`, who may do nothing.
fn nobody(cluster: &KubeCluster) -> std::path::PathBuf {
    cluster.kubectl_ok(
        &["create", "serviceaccount", "nobody", "-n", "default"],
        None,
    );
    let token = cluster.kubectl_ok(&["create", "token", "nobody", "-n", "default"], None);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server(),
            "certificate-authority-data": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD, cluster.ca_pem()),
        }}],
        "users": [{"name": "nobody", "user": {"token": token.trim()}}],
        "contexts": [{"name": "nobody", "context": {"cluster": "test", "user": "nobody"}}],
        "current-context": "nobody",
    });
    let path = cluster.dir().join("nobody.kubeconfig");
    std::fs::write(&path, config.to_string()).expect("kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_a_cluster_lacks_before_and_after_install() {
    let cluster = KubeCluster::start().await;
    let admin = cluster.kubeconfig();

    let (passed, out) = check(admin, &["--pre"]);
    assert!(passed, "{out}");
    assert!(
        out.contains("ok    Kubernetes v1.36.3 (native sidecars)"),
        "{out}"
    );
    assert!(
        out.contains("ok    HTTPRoute v1 (Gateway API v1.6.3)"),
        "{out}"
    );
    assert!(out.contains("ok    GRPCRoute v1"), "{out}");
    assert!(out.contains("ok    you may create the install's"), "{out}");

    // A user who may not install is told what they may not create.
    let (passed, out) = check(&nobody(&cluster), &["--pre"]);
    assert!(!passed, "{out}");
    assert!(
        out.contains(
            "FAIL  you may not create: namespaces, customresourcedefinitions.apiextensions.k8s.io"
        ),
        "{out}"
    );

    // Nothing installed: the check says so.
    let (passed, out) = check(admin, &["--control", "http://127.0.0.1:9"]);
    assert!(!passed, "{out}");
    assert!(out.contains("FAIL  Trellis's CRDs are missing"), "{out}");
    assert!(
        out.contains("FAIL  no Deployment trellis-control in trellis-system"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  no MutatingWebhookConfiguration trellis"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  cannot reach the control plane"),
        "{out}"
    );

    // Installed, with the control plane serving from this process (no kubelet runs
    // the Deployment's Pods here, which the check reports).
    let (_agent, control) = serve_injection(&cluster).await;
    let install = Manifests::new(&InstallSettings::default());
    for object in install.objects().expect("objects") {
        if ["Namespace", "Service", "MutatingWebhookConfiguration"]
            .contains(&object["kind"].as_str().unwrap_or_default())
        {
            continue; // serve_injection applied them
        }
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(&object.to_string()));
    }
    let url = format!("http://{}", control.control.http_addr);
    let api = [
        "--control",
        url.as_str(),
        "--token",
        control.control.token.as_str(),
    ];
    let ready = || {
        let (_, out) = check(admin, &api);
        out.contains("ok    webhook configuration trellis: caBundle set on 2 webhooks")
            && out.contains("ok    the injection webhook answers")
    };
    trellis_testkit::assert_eventually!(ready(), "{}", check(admin, &api).1);
    let (passed, out) = check(admin, &api);
    assert!(!passed, "{out}");
    assert!(out.contains("ok    Trellis's CRDs are installed"), "{out}");
    assert!(
        out.contains("FAIL  control plane: 0 of 2 replicas ready"),
        "{out}"
    );
    assert!(
        out.contains("ok    0 proxies connected, all synced"),
        "{out}"
    );
    let failures: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failures.len(), 1, "{out}");
}
