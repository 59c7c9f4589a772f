//! `trellis control --store etcd://…` end to end, with the real binary and a real etcd:
//! `trellis apply` and `trellis get` work through it, the state outlives the control
//! plane and its data directory, and an unreachable cluster stops it with a clear error.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use trellis_testkit::etcd::EtcdCluster;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

const SERVICE: &str = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{name: http, port: 8080, appProtocol: http}]
";

/// A running `trellis control`, killed when dropped.
struct Control {
    url: String,
    _child: Child,
}

impl Control {
    async fn start(cluster: &EtcdCluster, data_dir: &Path) -> Control {
        let mut child = control_command(&cluster.url(), data_dir)
            .kill_on_drop(true)
            .spawn()
            .expect("start trellis control");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = async {
            let mut url = None;
            let mut store = None;
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.trim().strip_prefix("HTTP API") {
                    url = Some(rest.trim().to_owned());
                }
                if let Some(rest) = line.trim().strip_prefix("store") {
                    store = Some(rest.trim().to_owned());
                }
                if url.is_some() && store.is_some() {
                    break;
                }
            }
            (url, store)
        };
        let (url, store) = tokio::time::timeout(Duration::from_secs(30), banner)
            .await
            .expect("trellis control prints its banner within 30s");
        let url = url.expect("the HTTP API address in the banner");
        let store = store.expect("the store in the banner");
        assert!(
            store.starts_with("etcd ") && store.ends_with("/cli-mesh"),
            "{store}"
        );
        Control { url, _child: child }
    }

    async fn trellis(&self, args: &[&str], token: Option<&str>) -> (bool, String, String) {
        let mut command = Command::new(TRELLIS);
        command
            .args(args)
            .args(["--control", &self.url])
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env("TRELLIS_LOG", "error")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let output = command.output().await.expect("run trellis");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    }
}

fn control_command(url: &str, data_dir: &Path) -> Command {
    let mut command = Command::new(TRELLIS);
    command
        .args(["control", "--store", url, "--etcd-prefix", "/cli-mesh"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env("TRELLIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
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
    let control = Control::start(&cluster, &first_dir).await;

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
    let second = Control::start(&cluster, &dir.path().join("second")).await;
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
