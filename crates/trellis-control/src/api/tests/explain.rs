//! `GET /api/v1/explain` through the router: decisions, defaults, and refusals.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use trellis_api::parse_documents;
use trellis_api::proto::v1::Workload;

use crate::compile::{compile, MeshState};
use crate::registry::{ProxyStatus, SyncState};

use super::{condition, service, Api, Call};

const WEB: &str = "spiffe%3A%2F%2Ftrellis.local%2Fns%2Fshop%2Fsa%2Fweb";
const ADMIN: &str = "spiffe://trellis.local/ns/ops/sa/admin";

const POLICIES: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  targetRef: {kind: Service, name: cart}
  rules:
    - from: [{identities: ["spiffe://trellis.local/ns/shop/sa/web"]}]
      to: [{methods: [GET], paths: [{prefix: /cart}]}]
    - from: [{namespaces: [ops]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  targetRef: {kind: Service, name: cart}
  action: Deny
  rules:
    - to: [{paths: [{prefix: /admin}]}]
    - to: [{ports: [9999]}]
    - to: [{headers: [{name: x-debug, value: "1"}]}]
"#;

/// The `decidedBy` and `allowed` of an explain answer.
fn verdict(body: &Value) -> (Value, Value) {
    (body["allowed"].clone(), body["decidedBy"].clone())
}

#[tokio::test]
async fn explains_which_rule_decides() {
    let api = Api::new();
    let docs = format!("{}---\n{POLICIES}", service("shop", "cart", 80));
    let (status, body) = api.apply(&docs).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let rule = |policy: &str, rule: u32| json!({"policy": policy, "rule": rule});
    let q = |rest: &str| format!("/api/v1/explain?to=cart&namespace=shop&{rest}");
    let cases = [
        (
            q(&format!("from={WEB}&path=/cart/1")),
            true,
            rule("shop/allow-web", 0),
        ),
        (
            q(&format!("from={WEB}&path=/cart&method=post")),
            false,
            json!("noAllowMatch"),
        ),
        (
            q(&format!("from={ADMIN}&method=DELETE")),
            true,
            rule("shop/allow-web", 1),
        ),
        (
            q(&format!("from={ADMIN}&path=/admin/x")),
            false,
            rule("shop/deny-admin", 0),
        ),
        (
            q(&format!("from={ADMIN}&port=9999")),
            false,
            rule("shop/deny-admin", 1),
        ),
        (
            q(&format!(
                "from={ADMIN}&header=X-Debug:%201&header=x-other:2"
            )),
            false,
            rule("shop/deny-admin", 2),
        ),
        (q("path=/cart"), false, json!("noAllowMatch")),
    ];
    for (path, allowed, decided_by) in cases {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            verdict(&body),
            (json!(allowed), decided_by),
            "{path}: {body}"
        );
        assert_eq!(body["service"], "shop/cart");
        assert_eq!(body["defaultAction"], "allow");
        assert_eq!(body["policies"][0]["name"], "shop/allow-web", "{body}");
    }
    // The declared Service's port stands for the request's when none is given.
    let (_, body) = api.get(&q(&format!("from={WEB}"))).await;
    assert_eq!(body["request"]["port"], 80, "{body}");
    assert_eq!(body["request"]["method"], "GET");
    assert_eq!(body["request"]["path"], "/");
}

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{name: cart}]
  rules:
    - name: testers
      matches: [{path: {value: /cart}, headers: [{name: x-tester, value: "yes"}]}]
      backendRefs: [{name: cart-v2}]
    - name: split
      matches: [{path: {value: /cart}}]
      backendRefs: [{name: cart-v1, weight: 3}, {name: cart-v2, weight: 1}]
      timeouts: {request: 2s}
    - name: legacy
      matches: [{path: {type: Exact, value: /old}, method: GET, queryParams: [{name: v, value: "1"}]}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /cart}, statusCode: 301}}]
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: cart}
  match: {from: {namespaces: [ops]}}
  abort: {httpStatus: 503}
"#;

#[tokio::test]
async fn explains_which_route_and_backends_a_request_takes() {
    let api = Api::new();
    let docs = format!("{}---\n{ROUTES}", service("shop", "cart", 80));
    let (status, body) = api.apply(&docs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let q = |rest: &str| format!("/api/v1/explain?to=cart&namespace=shop&{rest}");
    // (query, route, backends as name=percent, fault)
    let cases = [
        (
            q("path=/cart/1&header=X-Tester:yes"),
            "shop.cart.testers",
            vec!["cart-v2.shop=100.0"],
            None,
        ),
        (
            q("path=/cart/1"),
            "shop.cart.split",
            vec!["cart-v1.shop=75.0", "cart-v2.shop=25.0"],
            None,
        ),
        (
            q("path=/old?v=1"),
            "shop.cart.legacy",
            vec!["cart.shop=0.0"],
            None,
        ),
        (q("path=/old?v=2"), "default", vec!["cart.shop=100.0"], None),
        (
            q("path=/old?v=1&method=POST"),
            "default",
            vec!["cart.shop=100.0"],
            None,
        ),
        // A caller in ops carries the fault; one in shop does not.
        (
            q(&format!("path=/cart&from={ADMIN}")),
            "shop.cart.split",
            vec!["cart-v1.shop=75.0", "cart-v2.shop=25.0"],
            Some("shop/chaos"),
        ),
    ];
    for (path, route, backends, fault) in cases {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let taken = &body["route"];
        assert_eq!(taken["name"], route, "{path}: {body}");
        let got: Vec<String> = taken["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}={:.1}",
                    b["name"].as_str().unwrap_or("?"),
                    b["percent"].as_f64().unwrap_or(-1.0)
                )
            })
            .collect();
        assert_eq!(got, backends, "{path}: {body}");
        assert_eq!(taken["fault"].as_str(), fault, "{path}: {body}");
    }
    let (_, body) = api.get(&q("path=/cart")).await;
    assert_eq!(body["route"]["match"], "prefix:/cart", "{body}");
    assert_eq!(body["route"]["timeoutMs"], 2000, "{body}");
    let (_, body) = api.get(&q("path=/old?v=1")).await;
    assert_eq!(body["route"]["redirectStatus"], 301, "{body}");
}

#[tokio::test]
async fn the_mesh_default_decides_when_no_policy_speaks() {
    let api = Api::new();
    let docs = "apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
                metadata: {name: books-1, namespace: default, labels: {app: books}}\n\
                spec: {address: 10.0.0.3}\n";
    assert_eq!(api.apply(docs).await.0, StatusCode::OK);
    let path = format!("/api/v1/explain?from={WEB}&to=books");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(verdict(&body), (json!(true), json!("default")));
    assert_eq!(body["policies"], json!([]));
    // An implicit Service has no declared port: the request's port is unknown.
    assert_eq!(body["request"]["port"], Value::Null, "{body}");

    let mesh = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\n\
                metadata: {name: default}\nspec: {defaultAuthorization: deny}\n";
    assert_eq!(api.apply(mesh).await.0, StatusCode::OK);
    let (_, body) = api.get(&path).await;
    assert_eq!(verdict(&body), (json!(false), json!("default")));
    assert_eq!(body["defaultAction"], "deny");
}

#[tokio::test]
async fn bad_questions_are_refused() {
    let api = Api::new();
    assert_eq!(
        api.apply(&service("shop", "cart", 80)).await.0,
        StatusCode::OK
    );
    let cases = [
        (
            "/api/v1/explain?from=x",
            StatusCode::BAD_REQUEST,
            "to=SERVICE",
        ),
        (
            "/api/v1/explain?to=cart&namespace=shop&from=web",
            StatusCode::BAD_REQUEST,
            "from: ",
        ),
        (
            "/api/v1/explain?to=cart&namespace=shop&port=0",
            StatusCode::BAD_REQUEST,
            "not a port",
        ),
        (
            "/api/v1/explain?to=cart&namespace=shop&header=x",
            StatusCode::BAD_REQUEST,
            "not name:value",
        ),
        (
            "/api/v1/explain?to=cart&namespace=shop&path=cart",
            StatusCode::BAD_REQUEST,
            "must start with '/'",
        ),
        (
            "/api/v1/explain?to=cart&namespace=shop&colour=red",
            StatusCode::BAD_REQUEST,
            "unknown parameter \"colour\"",
        ),
        (
            "/api/v1/explain?to=cart&to=web&namespace=shop",
            StatusCode::BAD_REQUEST,
            "to is given twice",
        ),
        (
            "/api/v1/explain?to=cart",
            StatusCode::NOT_FOUND,
            "Service default/cart not found",
        ),
    ];
    for (path, want, message) in cases {
        let (status, body) = api.get(path).await;
        assert_eq!(status, want, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{path}: {error}");
    }
    // A read: open to loopback, the token needed from elsewhere.
    let mut remote = Call::read("/api/v1/explain?to=cart&namespace=shop");
    remote.peer = "10.1.2.3:4000";
    assert_eq!(api.call(remote).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn policies_show_whether_their_service_exists() {
    let api = Api::new();
    let missing = POLICIES.replace("name: cart", "name: basket");
    assert_eq!(api.apply(&missing).await.0, StatusCode::OK);
    let (status, body) = api.get("/api/v1/resources/authz/shop/allow-web").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(condition(&body, "Accepted").0, "True");
    assert_eq!(
        condition(&body, "ResolvedRefs"),
        (
            "False".into(),
            "TargetNotFound".into(),
            "not found: Service shop/basket".into()
        )
    );
    assert_eq!(
        api.apply(&service("shop", "basket", 80)).await.0,
        StatusCode::OK
    );
    let (_, body) = api
        .get("/api/v1/resources/authorizationpolicies/shop/deny-admin")
        .await;
    assert_eq!(condition(&body, "ResolvedRefs").0, "True", "{body}");
}

#[tokio::test]
async fn describe_shows_the_proxies_holding_a_policy() {
    let api = Api::new();
    let docs = format!("{}---\n{POLICIES}", service("shop", "cart", 80));
    assert_eq!(api.apply(&docs).await.0, StatusCode::OK);
    let proxy = Workload {
        name: "cart-1".into(),
        namespace: "shop".into(),
        service: "cart".into(),
        app_port: 8080,
        ..Workload::default()
    };
    let state = MeshState::new(parse_documents(&docs).expect("valid"));
    api.registry.upsert(ProxyStatus {
        workload: "cart-1".into(),
        namespace: "shop".into(),
        service: "cart".into(),
        address: "127.0.0.1:7143".into(),
        proxy_version: "0.1.0".into(),
        sent_version: 9,
        acked_version: 9,
        state: SyncState::Synced,
        last_error: None,
        connected_at: "2026-11-05T10:00:00Z".into(),
        identity: "spiffe://trellis.local/ns/shop/sa/cart".into(),
        certificate_expires: None,
        admin_address: String::new(),
    });
    api.registry
        .record_sent("cart-1", Arc::new(compile(&state, &proxy).into()));
    let (status, body) = api
        .get("/api/v1/resources/authz/shop/deny-admin/proxies")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["items"][0]["compiled"],
        json!([{
            "listener": "inbound",
            "policy": "shop/deny-admin",
            "action": "deny",
            "rules": 3,
            "defaultAction": "allow",
        }])
    );
}
