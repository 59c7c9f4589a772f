//! Outbound listeners: Services, their endpoints, attached routes and policies.

use trellis_api::proto::v1::{ListenerProtocol, LoadBalancer};

use super::*;

/// `ratings` and one Service per version, as the API's example has them.
const RATINGS: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports:
    - {name: http, port: 9080, appProtocol: http}
    - {name: metrics, port: 9090, targetPort: 9091}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings-v1, namespace: bookinfo}
spec:
  selector: {app: ratings, version: v1}
  ports: [{port: 9080}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings-v2, namespace: bookinfo}
spec:
  selector: {app: ratings, version: v2}
  ports: [{port: 9080}]
"#;

/// Ready v1 and v2 workloads of ratings, one unready v1, and a v1 in another namespace.
fn ratings_workloads() -> Vec<Resource> {
    vec![
        workload(
            "bookinfo",
            "ratings-v1-b",
            &[("app", "ratings"), ("version", "v1")],
            "10.0.1.2",
            Some(true),
        ),
        workload(
            "bookinfo",
            "ratings-v1-a",
            &[("app", "ratings"), ("version", "v1")],
            "10.0.1.1",
            None,
        ),
        workload(
            "bookinfo",
            "ratings-v1-c",
            &[("app", "ratings"), ("version", "v1")],
            "10.0.1.3",
            Some(false),
        ),
        workload_on(
            "bookinfo",
            "ratings-v2-a",
            &[("app", "ratings"), ("version", "v2")],
            "10.0.2.1",
            7200,
        ),
        workload(
            "other",
            "ratings-v1-x",
            &[("app", "ratings"), ("version", "v1")],
            "10.9.0.1",
            Some(true),
        ),
    ]
}

pub(super) fn bookinfo(extra: &str) -> Vec<Resource> {
    let mut resources = yaml(RATINGS);
    resources.extend(ratings_workloads());
    if !extra.is_empty() {
        resources.extend(yaml(extra));
    }
    resources
}

pub(super) fn productpage() -> Workload {
    proxy("bookinfo", "productpage", 9080, &[("ratings", "", 9001)])
}

pub(super) const LISTENER: &str = "outbound-bookinfo-ratings";

#[test]
fn selectors_pick_endpoints_by_labels_and_readiness() {
    let p = proxy(
        "bookinfo",
        "productpage",
        9080,
        &[
            ("ratings", "", 9001),
            ("ratings-v1", "", 9002),
            ("ratings-v2", "", 9003),
        ],
    );
    let config = compile(&bookinfo(""), &p);
    // (backend, endpoints): sorted, ready or unknown only, own namespace only.
    let cases: [(&str, &[&str]); 3] = [
        (
            "ratings.bookinfo",
            &["10.0.1.1:7143", "10.0.1.2:7143", "10.0.2.1:7200"],
        ),
        ("ratings-v1.bookinfo", &["10.0.1.1:7143", "10.0.1.2:7143"]),
        ("ratings-v2.bookinfo", &["10.0.2.1:7200"]),
    ];
    for (name, want) in cases {
        let b = backend(&config, name);
        assert_eq!(endpoints(b), want, "{name}");
        assert!(b.endpoints.iter().all(|e| e.weight == 1));
        assert_eq!(b.protocol, http2(), "proxy to proxy is HTTP/2");
        assert_eq!(b.load_balancer, LoadBalancer::Ewma as i32);
        assert_eq!(b.connect_timeout_ms, None);
    }
    let l = listener(&config, "outbound-bookinfo-ratings-v1");
    assert_eq!(l.address, "127.0.0.1:9002");
    assert_eq!(l.protocol, ListenerProtocol::Auto as i32);
    assert_eq!(routes(l), ["default | * | ratings-v1.bookinfo=1"]);
}

#[test]
fn a_workload_that_listens_on_no_port_is_no_endpoint() {
    let mut resources = bookinfo("");
    let mut client = workload(
        "bookinfo",
        "ratings-job",
        &[("app", "ratings"), ("version", "v1")],
        "10.0.1.9",
        Some(true),
    );
    if let Spec::Workload(w) = &mut client.spec {
        w.ports.clear();
    }
    resources.push(client);
    let config = compile(&resources, &productpage());
    assert_eq!(
        endpoints(backend(&config, "ratings.bookinfo")),
        ["10.0.1.1:7143", "10.0.1.2:7143", "10.0.2.1:7200"]
    );
}

#[test]
fn implicit_service_selects_the_app_label() {
    let resources = vec![
        workload("shop", "cart-1", &[("app", "cart")], "10.1.0.2", None),
        workload(
            "shop",
            "cart-0",
            &[("app", "cart"), ("version", "v9")],
            "10.1.0.1",
            Some(true),
        ),
        workload(
            "shop",
            "cart-down",
            &[("app", "cart")],
            "10.1.0.3",
            Some(false),
        ),
        workload("shop", "web-0", &[("app", "web")], "10.1.0.9", None),
    ];
    let config = compile(
        &resources,
        &proxy("shop", "web", 8080, &[("cart", "shop", 9000)]),
    );
    let l = listener(&config, "outbound-shop-cart");
    assert_eq!(l.protocol, ListenerProtocol::Auto as i32);
    assert_eq!(routes(l), ["default | * | cart.shop=1"]);
    assert_eq!(
        endpoints(backend(&config, "cart.shop")),
        ["10.1.0.1:7143", "10.1.0.2:7143"]
    );
    assert_eq!(names(&config).1, ["cart.shop", "local-app"]);
}

#[test]
fn declared_service_replaces_the_implicit_one() {
    // `cart` is declared with a selector that only takes v2: v1 workloads are not in it.
    let mut resources = yaml(
        r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart, version: v2}
  ports: [{port: 80, appProtocol: http2}]
"#,
    );
    resources.push(workload(
        "shop",
        "cart-v1",
        &[("app", "cart"), ("version", "v1")],
        "10.1.0.1",
        None,
    ));
    resources.push(workload(
        "shop",
        "cart-v2",
        &[("app", "cart"), ("version", "v2")],
        "10.1.0.2",
        None,
    ));
    let config = compile(
        &resources,
        &proxy("shop", "web", 8080, &[("cart", "shop", 9000)]),
    );
    assert_eq!(
        listener(&config, "outbound-shop-cart").protocol,
        ListenerProtocol::Http2 as i32
    );
    assert_eq!(endpoints(backend(&config, "cart.shop")), ["10.1.0.2:7143"]);
}

const CANARY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-canary, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings, port: 9080}]
  rules:
    - name: split
      backendRefs:
        - {name: ratings-v1, port: 9080, weight: 90}
        - {name: ratings-v2, port: 9080, weight: 10}
      timeouts: {request: 10s}
    - name: canary-header
      matches:
        - headers: [{name: x-canary, value: "true"}]
      backendRefs: [{name: ratings-v2}]
"#;

#[test]
fn canary_split_with_a_header_override() {
    let config = compile(&bookinfo(CANARY), &productpage());
    let l = listener(&config, LISTENER);
    assert_eq!(l.address, "127.0.0.1:9001");
    // The header rule is more specific than the match-all split, whatever their order
    // in the document; the Service itself comes last.
    assert_eq!(
        routes(l),
        [
            "bookinfo.ratings-canary.canary-header | h:x-canary=true | ratings-v2.bookinfo=1",
            "bookinfo.ratings-canary.split | * | ratings-v1.bookinfo=90 ratings-v2.bookinfo=10 | timeout=10000",
            "default | * | ratings.bookinfo=1",
        ]
    );
    assert_eq!(
        names(&config).1,
        [
            "local-app",
            "ratings-v1.bookinfo",
            "ratings-v2.bookinfo",
            "ratings.bookinfo"
        ]
    );
}

#[test]
fn longer_path_goes_before_a_header_match() {
    // The API's example: the split is on `/ratings`, which is more specific than the
    // header rule's implicit `/`, so a canary request to /ratings/1 is split too.
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-canary, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - name: canary-header
      matches: [{headers: [{name: x-canary, value: "true"}]}]
      backendRefs: [{name: ratings-v2}]
    - name: split
      matches: [{path: {type: PathPrefix, value: /ratings}}]
      backendRefs:
        - {name: ratings-v1, weight: 90}
        - {name: ratings-v2, weight: 10}
"#;
    let config = compile(&bookinfo(route), &productpage());
    assert_eq!(
        routes(listener(&config, LISTENER)),
        [
            "bookinfo.ratings-canary.split | prefix:/ratings | ratings-v1.bookinfo=90 ratings-v2.bookinfo=10",
            "bookinfo.ratings-canary.canary-header | h:x-canary=true | ratings-v2.bookinfo=1",
            "default | * | ratings.bookinfo=1",
        ]
    );
}

#[test]
fn routes_attach_by_parent_port_and_namespace() {
    // (parentRef, attaches to bookinfo/ratings' primary port 9080)
    let cases = [
        ("{name: ratings}", true),
        ("{name: ratings, port: 9080}", true),
        ("{name: ratings, sectionName: http}", true),
        ("{name: ratings, namespace: bookinfo}", true),
        ("{name: ratings, port: 9090}", false),
        ("{name: ratings, sectionName: metrics}", false),
        ("{name: ratings-v1}", false),
        ("{name: ratings, namespace: other}", false),
    ];
    for (parent, attaches) in cases {
        let route = format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: bookinfo}}
spec:
  parentRefs: [{parent}]
  rules: [{{backendRefs: [{{name: ratings-v2}}]}}]
"#
        );
        let config = compile(&bookinfo(&route), &productpage());
        let n = listener(&config, LISTENER).routes.len();
        assert_eq!(n == 2, attaches, "{parent}");
        let has_v2 = config
            .backends
            .iter()
            .any(|b| b.name == "ratings-v2.bookinfo");
        assert_eq!(
            has_v2, attaches,
            "{parent}: only backends of routes that apply"
        );
    }
}

#[test]
fn consumer_routes_apply_to_their_namespace_only() {
    // A route in `shop` attached to bookinfo/ratings is shop's own view of ratings.
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-for-shop, namespace: shop}
spec:
  parentRefs: [{name: ratings, namespace: bookinfo}]
  rules: [{backendRefs: [{name: ratings-v1, namespace: bookinfo}]}]
"#;
    let resources = bookinfo(route);
    let from_shop = proxy("shop", "web", 8080, &[("ratings", "bookinfo", 9001)]);
    let config = compile(&resources, &from_shop);
    assert_eq!(
        routes(listener(&config, LISTENER)),
        [
            "shop.ratings-for-shop.0 | * | ratings-v1.bookinfo=1",
            "default | * | ratings.bookinfo=1"
        ]
    );
    let config = compile(&resources, &productpage());
    assert_eq!(
        routes(listener(&config, LISTENER)),
        ["default | * | ratings.bookinfo=1"]
    );
}

#[test]
fn missing_backend_has_no_endpoints_and_empty_rule_answers_503() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - matches: [{path: {type: Exact, value: /old}}]
    - matches: [{path: {type: PathPrefix, value: /next}}]
      backendRefs: [{name: ratings-v3, weight: 5}]
"#;
    let config = compile(&bookinfo(route), &productpage());
    assert_eq!(
        routes(listener(&config, LISTENER)),
        [
            // No backendRefs (a redirect, until filters are compiled): weight 0 → 503.
            "bookinfo.r.0 | exact:/old | ratings.bookinfo=0",
            "bookinfo.r.1 | prefix:/next | ratings-v3.bookinfo=5",
            "default | * | ratings.bookinfo=1",
        ]
    );
    let v3 = backend(&config, "ratings-v3.bookinfo");
    assert!(v3.endpoints.is_empty());
    assert_eq!(v3.protocol, http2());
}

#[test]
fn upstream_to_an_unknown_service() {
    let config = compile(
        &[],
        &proxy("default", "web", 8080, &[("nowhere", "", 9000)]),
    );
    let l = listener(&config, "outbound-default-nowhere");
    assert_eq!(l.protocol, ListenerProtocol::Auto as i32);
    assert_eq!(routes(l), ["default | * | nowhere.default=1"]);
    assert!(backend(&config, "nowhere.default").endpoints.is_empty());
}
