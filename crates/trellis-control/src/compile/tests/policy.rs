//! BackendPolicy: load balancing, connect timeout and the default request timeout; a
//! rule's own timeouts and retries.

use trellis_api::proto::v1::{hash_on, LoadBalancer, Retry};

use super::outbound::{bookinfo, productpage, LISTENER};
use super::*;

#[test]
fn backend_policy_sets_balancer_and_timeouts() {
    // (policy fields, load balancer, connect timeout, catch-all route timeout)
    let cases = [
        ("", LoadBalancer::Ewma, None, None),
        (
            "loadBalancer: {type: round-robin}",
            LoadBalancer::RoundRobin,
            None,
            None,
        ),
        (
            "loadBalancer: {type: least-request}\n  connectTimeout: 500ms\n  requestTimeout: 5s",
            LoadBalancer::LeastRequest,
            Some(500),
            Some(5000),
        ),
        ("requestTimeout: 0s", LoadBalancer::Ewma, None, None),
    ];
    for (fields, lb, connect, timeout) in cases {
        let policy = format!(
            r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {{name: ratings, namespace: bookinfo}}
spec:
  targetRef: {{kind: Service, name: ratings}}
  {fields}
"#
        );
        let resources = bookinfo(&policy);
        let config = compile(&resources, &productpage());
        let b = backend(&config, "ratings.bookinfo");
        assert_eq!(b.load_balancer, lb as i32, "{fields}");
        assert_eq!(b.connect_timeout_ms, connect, "{fields}");
        let l = listener(&config, LISTENER);
        assert_eq!(l.routes[0].timeout_ms, timeout, "{fields}");
        // Only the targeted Service is affected.
        let p = proxy("bookinfo", "p", 1, &[("ratings-v1", "", 9001)]);
        let config = compile(&resources, &p);
        let v1 = backend(&config, "ratings-v1.bookinfo");
        assert_eq!(
            (v1.load_balancer, v1.connect_timeout_ms),
            (LoadBalancer::Ewma as i32, None)
        );
        assert_eq!(
            listener(&config, "outbound-bookinfo-ratings-v1").routes[0].timeout_ms,
            None
        );
    }
}

#[test]
fn route_timeout_wins_over_the_policys() {
    let extra = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: ratings, namespace: bookinfo}
spec:
  targetRef: {kind: Service, name: ratings}
  requestTimeout: 3s
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - matches: [{path: {value: /slow}}]
      backendRefs: [{name: ratings}]
      timeouts: {request: 0s}
    - matches: [{path: {value: /fast}}]
      backendRefs: [{name: ratings}]
      timeouts: {request: 250ms}
    - matches: [{path: {value: /plain}}]
      backendRefs: [{name: ratings}]
"#;
    let config = compile(&bookinfo(extra), &productpage());
    assert_eq!(
        routes(listener(&config, LISTENER)),
        [
            // `/plain` is the longest path; `/slow` and `/fast` tie and keep rule order.
            "bookinfo.r.2 | prefix:/plain | ratings.bookinfo=1 | timeout=3000",
            "bookinfo.r.0 | prefix:/slow | ratings.bookinfo=1",
            "bookinfo.r.1 | prefix:/fast | ratings.bookinfo=1 | timeout=250",
            "default | * | ratings.bookinfo=1 | timeout=3000",
        ]
    );
}

#[test]
fn oldest_backend_policy_wins() {
    let policies = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: a-newer, namespace: bookinfo, creationTimestamp: "2026-11-05T10:00:01Z"}
spec:
  targetRef: {kind: Service, name: ratings}
  loadBalancer: {type: round-robin}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: z-older, namespace: bookinfo, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  targetRef: {kind: Service, name: ratings}
  loadBalancer: {type: least-request}
"#;
    let config = compile(&bookinfo(policies), &productpage());
    assert_eq!(
        backend(&config, "ratings.bookinfo").load_balancer,
        LoadBalancer::LeastRequest as i32
    );
}

#[test]
fn backend_request_timeouts_and_retries_reach_the_proxy() {
    let extra = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - matches: [{path: {value: /full}}]
      backendRefs: [{name: ratings}]
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {attempts: 3, codes: [502, 503], backoff: 50ms}
    - matches: [{path: {value: /dflt}}]
      backendRefs: [{name: ratings}]
      timeouts: {backendRequest: 0s}
      retry: {}
"#;
    let config = compile(&bookinfo(extra), &productpage());
    let routes = &listener(&config, LISTENER).routes;
    let full = routes
        .iter()
        .find(|r| r.name == "bookinfo.r.0")
        .expect("route");
    assert_eq!(
        (full.timeout_ms, full.backend_timeout_ms),
        (Some(2000), Some(500))
    );
    assert_eq!(
        full.retry,
        Some(Retry {
            attempts: 3,
            codes: vec![502, 503],
            backoff_ms: 50,
            grpc_statuses: vec![],
        })
    );
    let defaults = routes
        .iter()
        .find(|r| r.name == "bookinfo.r.1")
        .expect("route");
    assert_eq!(defaults.backend_timeout_ms, None, "0s is no limit");
    assert_eq!(
        defaults.retry,
        Some(Retry {
            attempts: 1,
            codes: vec![],
            backoff_ms: 25,
            grpc_statuses: vec![],
        })
    );
    let catch_all = routes.iter().find(|r| r.name == "default").expect("route");
    assert_eq!(catch_all.retry, None);
}

#[test]
fn consistent_hash_reaches_the_backend() {
    let policy = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: ratings, namespace: bookinfo}
spec:
  targetRef: {kind: Service, name: ratings}
  loadBalancer: {type: consistent-hash, hashOn: {header: X-User}}
"#;
    let config = compile(&bookinfo(policy), &productpage());
    let b = backend(&config, "ratings.bookinfo");
    assert_eq!(b.load_balancer, LoadBalancer::ConsistentHash as i32);
    assert_eq!(
        b.hash_on.as_ref().and_then(|h| h.key.clone()),
        Some(hash_on::Key::Header("x-user".into())),
        "header names in lower case"
    );
    let cookie = policy.replace("{header: X-User}", "{cookie: session}");
    let config = compile(&bookinfo(&cookie), &productpage());
    assert_eq!(
        backend(&config, "ratings.bookinfo")
            .hash_on
            .as_ref()
            .and_then(|h| h.key.clone()),
        Some(hash_on::Key::Cookie("session".into()))
    );
}

#[test]
fn protection_settings_reach_the_callers_backend_and_rate_limits_the_inbound_listener() {
    let extra = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: ratings, namespace: bookinfo}
spec:
  targetRef: {kind: Service, name: ratings}
  circuitBreaker: {maxRequests: 7}
  adaptiveConcurrency: {enabled: false}
---
apiVersion: trellis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: limits, namespace: bookinfo}
spec:
  targetRef: {kind: Service, name: ratings}
  local:
    - {requestsPerSecond: 50}
    - {requestsPerSecond: 5, burst: 10, per: source}
"#;
    let resources = bookinfo(extra);
    let config = compile(&resources, &productpage());
    let protection = backend(&config, "ratings.bookinfo")
        .resilience
        .clone()
        .expect("the policy's settings");
    let breaker = protection.circuit_breaker.expect("circuit breaker");
    assert_eq!(breaker.max_requests, Some(7));
    assert_eq!(breaker.max_connections, None, "unset stays unset");
    assert_eq!(
        protection.adaptive_concurrency.and_then(|a| a.enabled),
        Some(false)
    );
    assert!(protection.retry_budget.is_none());
    // Without a policy: nothing sent, the proxy's defaults apply.
    let p = proxy("bookinfo", "p", 1, &[("ratings-v1", "", 9001)]);
    let other = compile(&resources, &p);
    assert!(backend(&other, "ratings-v1.bookinfo").resilience.is_none());

    // The limits go to the ratings workloads' own inbound listener, not the caller's.
    assert!(listener(&config, "inbound").rate_limits.is_empty());
    let ratings = compile(&resources, &proxy("bookinfo", "ratings", 9080, &[]));
    let limits: Vec<_> = listener(&ratings, "inbound")
        .rate_limits
        .iter()
        .map(|l| (l.name.as_str(), l.requests_per_second, l.burst, l.key))
        .collect();
    let source = trellis_api::proto::v1::RateLimitKey::Source as i32;
    assert_eq!(
        limits,
        [
            ("bookinfo/limits", 50, 50, 0),
            ("bookinfo/limits", 5, 10, source)
        ]
    );
}

#[test]
fn a_global_rate_limit_is_split_among_the_ready_replicas() {
    let policy = r#"{"apiVersion": "trellis.dev/v1alpha1", "kind": "RateLimitPolicy",
        "metadata": {"name": "limits", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Service", "name": "cart"},
            "local": [{"requestsPerSecond": 50}],
            "global": [{"requestsPerSecond": 300, "burst": 600}]}}"#;
    let replica = |n: u8, ready: bool| {
        let name = format!("cart-{n}");
        let address = format!("10.0.0.{n}");
        workload("shop", &name, &[("app", "cart")], &address, Some(ready))
    };
    let me = proxy("shop", "cart", 8080, &[]);
    // The share of each limit on the inbound listener of the replica at 10.0.0.1.
    let shares = |resources: &[Resource]| -> Vec<(u32, u32, u32)> {
        listener(&compile(resources, &me), "inbound")
            .rate_limits
            .iter()
            .map(|l| (l.requests_per_second, l.share_weight, l.share_total))
            .collect()
    };
    let mut resources = yaml(policy);
    resources.extend([replica(1, true), replica(2, true), replica(3, true)]);
    assert_eq!(
        shares(&resources),
        [(50, 0, 0), (300, 1, 3)],
        "the local limit is whole, the global one a third"
    );
    // A replica leaves (here: stops being ready): the two left get half each.
    resources.pop();
    resources.push(replica(3, false));
    assert_eq!(shares(&resources), [(50, 0, 0), (300, 1, 2)]);
    resources.pop();
    assert_eq!(shares(&resources), [(50, 0, 0), (300, 1, 2)]);
}
