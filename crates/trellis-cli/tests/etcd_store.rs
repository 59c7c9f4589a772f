//! `trellis control --store etcd://…` end to end, with the real binary and a real etcd:
//! `trellis apply` and `trellis get` work through it, the state outlives the control
//! plane and its data directory, and an unreachable cluster stops it with a clear error;
//! `trellis store migrate` moves an embedded installation there, and an encryption key
//! keeps the CA's keys sealed in etcd.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use trellis_testkit::etcd::EtcdCluster;

mod support;

use support::control::{trellis_binary, Control};

const SERVICE: &str = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{name: http, port: 8080, appProtocol: http}]
";

/// `trellis control` on the cluster under the prefix `/cli-mesh`, plus `extra` flags.
async fn start(cluster: &EtcdCluster, data_dir: &Path, extra: &[&str]) -> Control {
    let url = cluster.url();
    let mut args = vec!["--store", url.as_str(), "--etcd-prefix", "/cli-mesh"];
    args.extend_from_slice(extra);
    let control = Control::start(data_dir, &args).await;
    assert!(
        control.store.starts_with("etcd ") && control.store.ends_with("/cli-mesh"),
        "{}",
        control.store
    );
    control
}

fn control_command(url: &str, data_dir: &Path) -> Command {
    support::control::command(data_dir, &["--store", url, "--etcd-prefix", "/cli-mesh"])
}

fn service_names(json: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(json).expect("get -o json prints JSON");
    value["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_on_etcd_serves_apply_and_get() {
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let first_dir = dir.path().join("first");
    let control = start(&cluster, &first_dir, &[]).await;

    // The data directory still holds the admin token.
    let token = std::fs::read_to_string(first_dir.join("admin-token")).expect("admin token");
    let file = dir.path().join("books.yaml");
    std::fs::write(&file, SERVICE).expect("write the service");
    let file = file.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = control
        .trellis(&["apply", "-f", file], Some(token.trim()))
        .await;
    assert!(ok, "apply failed: {stdout}{stderr}");
    let (ok, stdout, stderr) = control
        .trellis(&["get", "services", "-n", "shop", "-o", "json"], None)
        .await;
    assert!(ok, "get failed: {stderr}");
    assert_eq!(service_names(&stdout), ["books"]);
    drop(control);

    // A control plane with another data directory on the same cluster and prefix finds
    // the mesh as it was: the state lives in etcd.
    let second = start(&cluster, &dir.path().join("second"), &[]).await;
    let (ok, stdout, stderr) = second
        .trellis(&["get", "services", "-n", "shop", "-o", "json"], None)
        .await;
    assert!(ok, "get failed: {stderr}");
    assert_eq!(service_names(&stdout), ["books"]);
}

#[tokio::test]
async fn control_plane_without_a_reachable_etcd_exits_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("etcd://127.0.0.1:{port}");
    let run = control_command(&url, dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("trellis control gives up within 20s")
        .expect("run trellis control");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unavailable") && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// The signing CA's fingerprint, from `trellis ca show`.
async fn signer(control: &Control) -> String {
    let ca = control.get_json("/api/v1/ca").await;
    ca["signer"]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_an_embedded_installation_to_etcd() {
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded_dir = dir.path().join("embedded");
    let embedded = Control::start(&embedded_dir, &[]).await;
    let token = embedded.token();
    let file = dir.path().join("books.yaml");
    std::fs::write(&file, SERVICE).expect("write the service");
    let file = file.to_str().expect("utf-8 path");
    let (ok, out, err) = embedded.trellis(&["apply", "-f", file], Some(&token)).await;
    assert!(ok, "{out}{err}");
    let fingerprint = signer(&embedded).await;

    let migrate = |from: &Path| {
        let url = cluster.url();
        let from = from.to_owned();
        async move {
            let output = Command::new(trellis_binary())
                .args([
                    "store",
                    "migrate",
                    "--to",
                    &url,
                    "--etcd-prefix",
                    "/cli-mesh",
                ])
                .arg("--from")
                .arg(from)
                .env("TRELLIS_LOG", "error")
                .output()
                .await
                .expect("run trellis store migrate");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success(), text)
        }
    };
    // While its control plane runs, the store is locked: refused, nothing copied.
    let (ok, text) = migrate(&embedded_dir).await;
    assert!(!ok && text.contains("stop the control plane"), "{text}");
    embedded.kill().await;
    let (ok, text) = migrate(&embedded_dir).await;
    assert!(ok && text.contains("1 resources"), "{text}");
    // Again: the target is in use now, and is left alone.
    let (ok, text) = migrate(&embedded_dir).await;
    assert!(!ok && text.contains("not empty"), "{text}");

    // A control plane on etcd, with a data directory of its own, has the mesh: the
    // resources, the same CA, and the same admin token.
    let on_etcd = start(&cluster, &dir.path().join("etcd"), &[]).await;
    assert_eq!(on_etcd.token(), token);
    assert_eq!(signer(&on_etcd).await, fingerprint);
    let (ok, stdout, stderr) = on_etcd
        .trellis(&["get", "services", "-n", "shop", "-o", "json"], None)
        .await;
    assert!(ok, "get failed: {stderr}");
    assert_eq!(service_names(&stdout), ["books"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encryption_key_keeps_the_ca_sealed_in_etcd() {
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(trellis_binary())
        .args(["ca", "encryption-key"])
        .output()
        .await
        .expect("run trellis ca encryption-key");
    assert!(output.status.success());
    let key_file = dir.path().join("ca.key");
    std::fs::write(&key_file, &output.stdout).expect("write the key");
    let key = key_file.to_str().expect("utf-8 path");
    let first = start(
        &cluster,
        &dir.path().join("a"),
        &["--ca-encryption-key", key],
    )
    .await;
    let fingerprint = signer(&first).await;

    // What etcd holds is sealed: no private key in sight.
    let mut settings = trellis_control::store::EtcdSettings::new(cluster.endpoints());
    settings.prefix = "/cli-mesh".into();
    let store = trellis_control::store::EtcdStore::connect(settings)
        .await
        .expect("connect");
    use trellis_control::store::Store;
    for name in ["/ca/signer", "/ca/token-key", "/admin/token"] {
        let entry = store.get(name).await.expect("get").expect("present");
        assert!(
            entry.value.starts_with(b"sealed:v1:"),
            "{name} is not sealed"
        );
    }

    // A replica with the key shares the CA; one without it refuses to start, clearly.
    let second = start(
        &cluster,
        &dir.path().join("b"),
        &["--ca-encryption-key", key],
    )
    .await;
    assert_eq!(signer(&second).await, fingerprint);
    let run = control_command(&cluster.url(), &dir.path().join("c"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("trellis control gives up within 20s")
        .expect("run trellis control");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--ca-encryption-key"), "{stderr}");
}
