//! `trellis apply/get/delete/describe` as an operator runs them: the real binary against
//! the control plane's HTTP API served in-process on 127.0.0.1:0 over an in-memory store.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use trellis_control::api::{router, ApiState};
use trellis_control::ca::{CaSettings, MeshCa};
use trellis_control::registry::{ProxyStatus, Registry, SyncState};
use trellis_control::store::MemoryStore;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
const TOKEN: &str = "cli-test-token";

const SHOP: &str = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, appProtocol: http}, {name: admin, port: 9090}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules:
    - backendRefs: [{name: web, port: 8080, weight: 90}, {name: web-v2, port: 8080, weight: 10}]
";

/// A control plane API on a port of its own, with its runtime.
struct ControlPlane {
    url: String,
    registry: Arc<Registry>,
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl ControlPlane {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let registry = Arc::new(Registry::new());
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let ca = runtime
            .block_on(MeshCa::start(store.clone(), CaSettings::default()))
            .expect("ca");
        let state = ApiState {
            store,
            registry: Arc::clone(&registry),
            admin_token: TOKEN.to_string(),
            proxy_api: None,
            ca: Arc::new(ca),
            membership: None,
            telemetry: None,
            taps: None,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            registry,
            dir: tempfile::tempdir().expect("tempdir"),
            _runtime: runtime,
        }
    }

    /// Runs `trellis ARGS --control URL --token T`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, Some(TOKEN), None)
    }

    /// Runs `trellis ARGS --control URL` with the token given, if any, and `stdin`. The
    /// data directory is an empty one of the test's, so no real token file is read.
    fn run_with(&self, args: &[&str], token: Option<&str>, stdin: Option<&str>) -> Output {
        let mut command = Command::new(TRELLIS);
        command
            .args(args)
            .args(["--control", &self.url])
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env("XDG_DATA_HOME", self.dir.path())
            .env("TRELLIS_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command.spawn().expect("run trellis");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("write stdin");
        drop(input);
        child.wait_with_output().expect("trellis output")
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write");
        path
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A table's lines, split into words.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// Asserts success and returns standard output.
fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    stdout(&out)
}

/// Asserts exit code 1 with exactly one line on standard error, which contains `text`.
fn fails(out: Output, text: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(text), "want {text:?} in {stderr}");
    stderr
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn apply_get_describe_delete() {
    let cp = ControlPlane::start();
    let file = cp.file("shop.yaml", SHOP);

    let applied = ok(cp.run(&["apply", "-f", path(&file)]));
    assert_eq!(
        applied,
        "service.trellis.dev/web created\nhttproute.gateway.networking.k8s.io/r created\n"
    );
    let again = ok(cp.run(&["apply", "-f", path(&file)]));
    assert!(
        again.contains("service.trellis.dev/web unchanged"),
        "{again}"
    );

    let json: Value = serde_json::from_str(&ok(cp.run(&["get", "httproutes", "-o", "json"])))
        .expect("JSON output");
    let route = &json["items"][0];
    assert_eq!(route["metadata"]["name"], "r");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    let resolved = &route["status"]["conditions"][1];
    assert_eq!(
        (&resolved["type"], &resolved["status"]),
        (&Value::from("ResolvedRefs"), &Value::from("False"))
    );

    let table = ok(cp.run(&["get", "svc"]));
    let lines = rows(&table);
    assert_eq!(
        lines[0],
        [
            "NAME",
            "NAMESPACE",
            "SELECTOR",
            "PORTS",
            "VIRTUAL-IP",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        lines[1][..4],
        ["web", "shop", "app=web", "8080/http,9090/http"],
        "{table}"
    );
    let routes = ok(cp.run(&["get", "httproute", "r", "-n", "shop"]));
    assert!(routes.contains("web,web-v2"), "{routes}");

    let yaml = ok(cp.run(&["get", "svc", "web", "-n", "shop", "-o", "yaml"]));
    assert!(yaml.starts_with("items:"), "{yaml}");
    assert!(yaml.contains("name: web"), "{yaml}");

    let described = ok(cp.run(&["describe", "httproute", "r", "-n", "shop"]));
    assert!(described.contains("kind: HTTPRoute"), "{described}");
    assert!(described.contains("\nConditions:\n  TYPE "), "{described}");
    // No proxy is connected, so none holds it.
    assert!(
        described.ends_with("\nProxies: none holds it\n"),
        "{described}"
    );
    let resolved_line = described
        .lines()
        .find(|l| l.trim_start().starts_with("ResolvedRefs"))
        .unwrap_or_else(|| panic!("{described}"));
    let words: Vec<&str> = resolved_line.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "ResolvedRefs",
            "False",
            "BackendNotFound",
            "not",
            "found:",
            "Service",
            "shop/web-v2"
        ]
    );

    let deleted = ok(cp.run(&["delete", "svc", "web", "-n", "shop"]));
    assert_eq!(deleted, "service.trellis.dev/web deleted\n");
    fails(
        cp.run(&["get", "svc", "web", "-n", "shop"]),
        "error: Service shop/web not found",
    );
    fails(cp.run(&["delete", "svc", "web", "-n", "shop"]), "not found");
    let empty = cp.run(&["get", "svc"]);
    assert_eq!(stdout(&empty), "");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("No services found."));
    let empty: Value =
        serde_json::from_str(&ok(cp.run(&["get", "svc", "-o", "json"]))).expect("JSON");
    assert_eq!(empty, serde_json::json!({"items": []}));
}

#[test]
fn external_services_are_applied_and_listed() {
    let cp = ControlPlane::start();
    let file = cp.file(
        "payments.yaml",
        include_str!("../../trellis-api/examples/externalservice.yaml"),
    );
    let applied = ok(cp.run(&["apply", "-f", path(&file)]));
    assert_eq!(
        applied,
        "externalservice.trellis.dev/payments-api created\n"
    );

    let table = ok(cp.run(&["get", "es"]));
    let lines = rows(&table);
    assert_eq!(
        lines[0].join(" "),
        "NAME NAMESPACE HOSTS PORTS RESOLUTION VIRTUAL-IPS AGE",
        "{table}"
    );
    assert_eq!(
        lines[1][..5],
        [
            "payments-api",
            "shop",
            "api.payments.example",
            "443/tls,80/https→443",
            "dns"
        ],
        "{table}"
    );

    // A mistake is refused on apply with the field's path.
    let broken = cp.file(
        "broken.yaml",
        &include_str!("../../trellis-api/examples/externalservice.yaml")
            .replace("resolution: dns", "resolution: static"),
    );
    fails(
        cp.run(&["apply", "-f", path(&broken)]),
        "spec.addresses: resolution: static needs at least one address",
    );
    // CA certificates that are PEM in form but no certificate in substance.
    let garbled = cp.file(
        "garbled.yaml",
        &include_str!("../../trellis-api/examples/externalservice.yaml").replace(
            "caFile: /etc/trellis/payments-ca.pem",
            "caCertificates: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"",
        ),
    );
    fails(
        cp.run(&["apply", "-f", path(&garbled)]),
        "spec.tls.caCertificates: ",
    );
}

#[test]
fn apply_reads_directories_and_stdin() {
    let cp = ControlPlane::start();
    let (service, route) = SHOP.split_once("---\n").expect("two documents");
    cp.file("dir/b-route.yml", route);
    cp.file("dir/a-service.json", &yaml_to_json(service));
    cp.file("dir/notes.txt", "not a manifest");
    let dir = cp.dir.path().join("dir");
    let applied = ok(cp.run(&["apply", "-f", path(&dir)]));
    assert_eq!(
        applied,
        "service.trellis.dev/web created\nhttproute.gateway.networking.k8s.io/r created\n"
    );
    let from_stdin = ok(cp.run_with(&["apply", "-f", "-"], Some(TOKEN), Some(route)));
    assert_eq!(
        from_stdin,
        "httproute.gateway.networking.k8s.io/r unchanged\n"
    );
    // What `get -o yaml` prints applies back unchanged.
    let exported = ok(cp.run(&["get", "svc", "-o", "yaml"]));
    let reapplied = ok(cp.run_with(&["apply", "-f", "-"], Some(TOKEN), Some(&exported)));
    assert_eq!(reapplied, "service.trellis.dev/web unchanged\n");
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let cp = ControlPlane::start();
    let bad = SHOP.replace("weight: 10}", "weight: 2000000}");
    let file = cp.file("bad.yaml", &bad);
    fails(
        cp.run(&["apply", "-f", path(&file)]),
        "bad.yaml: document 2: spec.rules[0].backendRefs[1].weight",
    );
    let listed: Value =
        serde_json::from_str(&ok(cp.run(&["get", "svc", "-o", "json"]))).expect("JSON");
    assert_eq!(listed["items"], serde_json::json!([]), "nothing written");

    fails(cp.run(&["get", "pods"]), "unknown kind \"pods\"");
    fails(
        cp.run(&["apply", "-f", "/nonexistent/x.yaml"]),
        "cannot read /nonexistent/x.yaml",
    );
    let good = cp.file("good.yaml", SHOP);
    fails(
        cp.run_with(&["apply", "-f", path(&good)], Some("wrong"), None),
        "admin token is wrong",
    );
    fails(
        cp.run_with(&["apply", "-f", path(&good)], None, None),
        "needs the admin token",
    );

    // Without --token the admin-token file of the default data directory is used.
    cp.file("trellis/admin-token", &format!("{TOKEN}\n"));
    ok(cp.run_with(&["apply", "-f", path(&good)], None, None));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let unreachable = Command::new(TRELLIS)
        .args(["get", "svc", "--control", &format!("http://{addr}")])
        .env("TRELLIS_LOG", "error")
        .output()
        .expect("run trellis");
    fails(
        unreachable,
        &format!("error: cannot reach the control plane at http://{addr}: "),
    );
}

#[test]
fn get_proxies() {
    let cp = ControlPlane::start();
    fails(
        cp.run(&["get", "proxies", "web-1"]),
        "no proxy for workload web-1",
    );
    cp.registry.upsert(ProxyStatus {
        workload: "web-1".into(),
        namespace: "shop".into(),
        service: "web".into(),
        address: "127.0.0.1:7143".into(),
        proxy_version: "0.1.0".into(),
        sent_version: 3,
        acked_version: 2,
        state: SyncState::Nacked,
        last_error: Some("bad route".into()),
        connected_at: "2026-11-05T10:00:00Z".into(),
        identity: "spiffe://trellis.local/ns/shop/sa/web".into(),
        certificate_expires: Some(trellis_api::meta::rfc3339(
            std::time::SystemTime::now() + std::time::Duration::from_secs(5 * 3600 + 1800),
        )),
        admin_address: String::new(),
    });
    let table = ok(cp.run(&["get", "proxies"]));
    let lines = rows(&table);
    assert_eq!(
        lines[0],
        [
            "WORKLOAD",
            "NAMESPACE",
            "SERVICE",
            "ADDRESS",
            "VERSION",
            "CONFIG",
            "STATE",
            "IDENTITY",
            "CERT",
            "ERROR",
            "AGE"
        ]
    );
    assert_eq!(
        lines[1][..10],
        [
            "web-1",
            "shop",
            "web",
            "127.0.0.1:7143",
            "0.1.0",
            "2/3",
            "nacked",
            "spiffe://trellis.local/ns/shop/sa/web",
            "5h",
            "bad"
        ],
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&ok(cp.run(&["get", "proxies", "-o", "json"]))).expect("JSON");
    assert_eq!(json["items"][0]["state"], "nacked");
}

/// The JSON form of one YAML document, to check that JSON files apply too.
fn yaml_to_json(yaml: &str) -> String {
    let value: Value = serde_saphyr::from_str(yaml).expect("YAML");
    value.to_string()
}

#[test]
fn tokens_and_the_certificate_authority() {
    let cp = ControlPlane::start();
    let out = cp.run(&[
        "token",
        "create",
        "--service",
        "books",
        "-n",
        "shop",
        "--ttl",
        "5m",
    ]);
    let token = ok(out);
    assert!(token.trim().starts_with("v1."), "{token}");
    assert_eq!(token.lines().count(), 1, "only the token on stdout");
    fails(
        cp.run(&["token", "create", "--service", "books", "--ttl", "0s"]),
        "ttl: must be more than 0",
    );
    fails(
        cp.run_with(&["token", "create", "--service", "books"], None, None),
        "admin token",
    );

    let shown = ok(cp.run(&["ca", "show"]));
    assert!(
        shown.starts_with("Trust domain:  trellis.local\n"),
        "{shown}"
    );
    assert_eq!(
        shown.matches("Trellis root CA").count(),
        2,
        "signer and anchor: {shown}"
    );
    assert!(shown.ends_with("Rotation:      idle\n"), "{shown}");

    // Ten-year roots: nothing to warn about, unless the window is longer still.
    let checked = ok(cp.run(&["check"]));
    assert!(
        checked.starts_with("ok    signing CA O=Trellis"),
        "{checked}"
    );
    let out = cp.run(&["check", "--ca-within", "87600h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("WARN  signing CA"),
        "{}",
        stdout(&out)
    );

    let started = ok(cp.run(&["ca", "rotate", "--overlap", "1h"]));
    assert!(
        started.starts_with("rotation started: new root "),
        "{started}"
    );
    let shown = ok(cp.run(&["ca", "show"]));
    // The new root is trusted beside the old one; the old one still signs.
    assert_eq!(shown.matches("Trellis root CA").count(), 3, "{shown}");
    assert!(
        shown.contains("Rotation:      distributing (new root "),
        "{shown}"
    );
    fails(
        cp.run(&["ca", "rotate"]),
        "a trust-anchor rotation is already running",
    );
}
