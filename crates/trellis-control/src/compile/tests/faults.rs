//! FaultInjection: its target route's proxy routes carry the fault, on the proxies of
//! its sources only.

use trellis_api::proto::v1::{value_match, FaultAbort, FaultDelay};

use super::outbound::{bookinfo, productpage, LISTENER};
use super::*;

const ROUTE_AND_FAULT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - matches: [{path: {value: /ratings}}]
      backendRefs: [{name: ratings}]
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos, namespace: bookinfo, creationTimestamp: "2026-11-01T00:00:00Z"}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: ratings}
  match:
    headers: [{name: X-Chaos, value: "on"}]
    from: {identities: ["spiffe://trellis.local/ns/bookinfo/sa/productpage"], namespaces: [shop]}
  delay: {fixed: 2s, percent: 50}
  abort: {grpcStatus: 14, percent: 10}
---
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: later, namespace: bookinfo, creationTimestamp: "2026-11-02T00:00:00Z"}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: ratings}
  abort: {httpStatus: 500}
"#;

fn route_fault(config: &ProxyConfig, listener_name: &str) -> Option<trellis_api::proto::v1::Fault> {
    listener(config, listener_name)
        .routes
        .iter()
        .find(|r| r.name == "bookinfo.ratings.0")
        .expect("the route")
        .fault
        .clone()
}

#[test]
fn the_oldest_fault_reaches_the_routes_of_its_sources() {
    let config = compile(&bookinfo(ROUTE_AND_FAULT), &productpage());
    let fault = route_fault(&config, LISTENER).expect("productpage is a source");
    assert_eq!(fault.name, "bookinfo/chaos", "the oldest fault wins");
    assert_eq!(fault.headers.len(), 1);
    assert_eq!(fault.headers[0].name, "x-chaos");
    assert_eq!(
        fault.headers[0].kind,
        Some(value_match::Kind::Exact("on".into()))
    );
    assert_eq!(
        fault.delay,
        Some(FaultDelay {
            fixed_ms: 2000,
            percent: 50
        })
    );
    assert_eq!(
        fault.abort,
        Some(FaultAbort {
            http_status: 0,
            grpc_status: 14,
            percent: 10
        })
    );
    // The catch-all route is not the targeted route's.
    let catch_all = listener(&config, LISTENER)
        .routes
        .iter()
        .find(|r| r.name == "default")
        .expect("catch-all");
    assert_eq!(catch_all.fault, None);
}

#[test]
fn callers_outside_the_sources_get_no_fault() {
    let resources = bookinfo(ROUTE_AND_FAULT);
    // Another identity in the same namespace: not a source.
    let reviews = proxy("bookinfo", "reviews", 9080, &[("ratings", "", 9001)]);
    assert_eq!(route_fault(&compile(&resources, &reviews), LISTENER), None);
    // Any workload of a source namespace.
    let shop = proxy("shop", "web", 8080, &[("ratings", "bookinfo", 9001)]);
    let fault = route_fault(&compile(&resources, &shop), LISTENER);
    assert_eq!(fault.map(|f| f.name), Some("bookinfo/chaos".to_string()));
}
