//! `trellis explain` and `trellis get authz` as an operator runs them: the real binary
//! against the control plane's HTTP API served in-process on 127.0.0.1:0 over an
//! in-memory store.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use trellis_control::api::{router, ApiState};
use trellis_control::ca::{CaSettings, MeshCa};
use trellis_control::registry::Registry;
use trellis_control::store::MemoryStore;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
const TOKEN: &str = "cli-test-token";
const WEB: &str = "spiffe://trellis.local/ns/shop/sa/web";
const ADMIN: &str = "spiffe://trellis.local/ns/ops/sa/admin";

const SHOP: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  targetRef: {kind: Service, name: cart}
  rules:
    - from: [{identities: ["spiffe://trellis.local/ns/shop/sa/web"]}]
      to: [{ports: [8080], paths: [{prefix: /cart}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-deletes, namespace: shop}
spec:
  targetRef: {kind: Service, name: cart}
  action: Deny
  rules:
    - to: [{methods: [DELETE]}]
    - to: [{headers: [{name: x-debug, value: "on"}]}]
"#;

/// A control plane API on a port of its own, with its runtime.
struct ControlPlane {
    url: String,
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl ControlPlane {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let ca = runtime
            .block_on(MeshCa::start(store.clone(), CaSettings::default()))
            .expect("ca");
        let state = ApiState {
            store,
            registry: Arc::new(Registry::new()),
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
            dir: tempfile::tempdir().expect("tempdir"),
            _runtime: runtime,
        }
    }

    /// Runs `trellis ARGS --control URL --token T`, with an empty data directory so no
    /// real token file is read.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(TRELLIS)
            .args(args)
            .args(["--control", &self.url, "--token", TOKEN])
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env("XDG_DATA_HOME", self.dir.path())
            .env("TRELLIS_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .expect("run trellis")
    }

    fn apply(&self, yaml: &str) {
        let path = self.dir.path().join("apply.yaml");
        std::fs::write(&path, yaml).expect("write");
        let path = path.to_str().expect("UTF-8 path");
        ok(self.run(&["apply", "-f", path]));
    }
}

/// Asserts success and returns standard output.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_says_what_decides() {
    let cp = ControlPlane::start();
    cp.apply(SHOP);
    let base = ["explain", "--to", "cart", "-n", "shop"];
    // (extra arguments, the line printed)
    let cases: &[(&[&str], &str)] = &[
        (
            &["--from", WEB, "--path", "/cart/items"],
            "allowed by shop/allow-web rule 0",
        ),
        (
            &["--from", WEB, "--path", "/cart", "--method", "DELETE"],
            "denied by shop/deny-deletes rule 0",
        ),
        (
            &["--from", WEB, "--path", "/cart", "--header", "X-Debug:on"],
            "denied by shop/deny-deletes rule 1",
        ),
        (
            &["--from", WEB, "--path", "/cart", "--port", "9090"],
            "denied: no Allow policy matches (shop/allow-web)",
        ),
        (
            &["--from", ADMIN, "--path", "/cart"],
            "denied: no Allow policy matches (shop/allow-web)",
        ),
        (
            &["--path", "/cart"],
            "denied: no Allow policy matches (shop/allow-web)",
        ),
    ];
    for (extra, want) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = ok(cp.run(&args));
        assert_eq!(out.lines().next(), Some(*want), "{extra:?}");
        // The second line is the route: here the Service's catch-all.
        assert_eq!(
            out.lines().nth(1),
            Some("route default (*) → cart.shop 100%"),
            "{extra:?}"
        );
    }

    let json = ok(cp.run(&[
        "explain", "--to", "cart", "-n", "shop", "--from", WEB, "-o", "json",
    ]));
    let answer: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["request"]["port"], 8080, "the Service's targetPort");
    assert_eq!(answer["policies"].as_array().map(Vec::len), Some(2));
}

#[test]
fn explain_falls_back_to_the_mesh_default() {
    let cp = ControlPlane::start();
    cp.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: books}\n\
         spec: {selector: {app: books}, ports: [{port: 80}]}\n",
    );
    let args = ["explain", "--from", WEB, "--to", "books"];
    assert_eq!(
        ok(cp.run(&args)),
        "allowed by default (defaultAuthorization: allow)\nroute default (*) → books.default 100%\n"
    );
    cp.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\n\
         spec: {defaultAuthorization: deny}\n",
    );
    assert_eq!(
        ok(cp.run(&args)),
        "denied by default (defaultAuthorization: deny)\nroute default (*) → books.default 100%\n"
    );
}

#[test]
fn explain_shows_the_route_and_backends() {
    let cp = ControlPlane::start();
    cp.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: books}\n\
         spec: {selector: {app: books}, ports: [{port: 80}]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: books}\n\
         spec:\n  parentRefs: [{name: books}]\n  rules:\n\
         \x20   - name: testers\n\
         \x20     matches: [{path: {value: /books}, headers: [{name: x-tester, value: \"yes\"}]}]\n\
         \x20     backendRefs: [{name: books-v2}]\n\
         \x20   - name: split\n\
         \x20     matches: [{path: {value: /books}, method: GET}]\n\
         \x20     backendRefs: [{name: books-v1, weight: 9}, {name: books-v2, weight: 1}]\n",
    );
    let route = |extra: &[&str]| {
        let mut args = vec!["explain", "--to", "books", "--path", "/books/1"];
        args.extend_from_slice(extra);
        ok(cp.run(&args))
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        route(&["--method", "PUT", "--header", "x-tester:yes"]),
        "route default.books.testers (prefix:/books h:x-tester=yes) → books-v2.default 100%"
    );
    // A method match is more specific than a header match (Gateway API precedence).
    assert_eq!(
        route(&["--header", "x-tester:yes"]),
        "route default.books.split (prefix:/books m:GET) → books-v1.default 90%, books-v2.default 10%"
    );
    assert_eq!(
        route(&[]),
        "route default.books.split (prefix:/books m:GET) → books-v1.default 90%, books-v2.default 10%"
    );
    assert_eq!(
        route(&["--method", "POST"]),
        "route default (*) → books.default 100%"
    );
}

#[test]
fn explain_errors_exit_1_with_one_line() {
    let cp = ControlPlane::start();
    cp.apply(SHOP);
    let cases: &[(&[&str], &str)] = &[
        (
            &["explain", "--to", "nope", "-n", "shop"],
            "error: Service shop/nope not found",
        ),
        (
            &["explain", "--to", "cart", "-n", "shop", "--from", "web"],
            "error: from: ",
        ),
        (
            &[
                "explain", "--to", "cart", "-n", "shop", "--header", "novalue",
            ],
            "error: header: \"novalue\" is not name:value",
        ),
    ];
    for (args, want) in cases {
        let out = cp.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn get_authz_lists_policies() {
    let cp = ControlPlane::start();
    cp.apply(SHOP);
    let table = ok(cp.run(&["get", "authz"]));
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "NAMESPACE",
            "TARGET",
            "ACTION",
            "RULES",
            "RESOLVED",
            "AGE"
        ]
    );
    assert_eq!(
        lines[1][..6],
        ["allow-web", "shop", "Service/cart", "Allow", "1", "True"]
    );
    assert_eq!(
        lines[2][..6],
        ["deny-deletes", "shop", "Service/cart", "Deny", "2", "True"]
    );
}
