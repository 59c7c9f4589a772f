//! Only what a proxy can reach, always the same bytes for the same input, and upstreams
//! that cannot be bound.

use prost::Message;

use super::*;

/// Several Services with routes between them, in two namespaces.
const MESH: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings, namespace: bookinfo}
spec:
  selector: {app: ratings}
  ports: [{port: 9080}]
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
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-canary, namespace: bookinfo, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - matches: [{headers: [{name: x-canary, value: "true"}]}, {path: {type: Exact, value: /v2}}]
      backendRefs: [{name: ratings-v2}]
    - backendRefs: [{name: ratings-v1, weight: 90}, {name: ratings-v2, weight: 10}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: bookinfo, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  parentRefs: [{name: reviews}]
  rules:
    - matches: [{path: {value: /a}}, {method: POST}]
      backendRefs: [{name: reviews-v3}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-b, namespace: bookinfo, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  parentRefs: [{name: reviews}]
  rules:
    - matches: [{path: {value: /a}}]
      backendRefs: [{name: reviews-v2}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: details-for-shop, namespace: shop}
spec:
  parentRefs: [{name: details, namespace: bookinfo}]
  rules: [{backendRefs: [{name: details-v9, namespace: bookinfo}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: reviews, namespace: bookinfo}
spec:
  targetRef: {kind: Service, name: reviews}
  loadBalancer: {type: round-robin}
  connectTimeout: 250ms
---
apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {name: default}
spec: {}
"#;

fn mesh() -> Vec<Resource> {
    let mut resources = yaml(MESH);
    for (i, (app, version)) in [
        ("ratings", "v1"),
        ("ratings", "v2"),
        ("reviews", "v1"),
        ("reviews", "v2"),
        ("reviews", "v3"),
        ("details", "v1"),
        ("productpage", "v1"),
    ]
    .iter()
    .enumerate()
    {
        for j in 0..3 {
            let name = format!("{app}-{version}-{j}");
            let labels = [("app", *app), ("version", *version)];
            let ready = (j != 2).then_some(true);
            resources.push(workload(
                "bookinfo",
                &name,
                &labels,
                &format!("10.0.{i}.{j}"),
                ready,
            ));
        }
    }
    resources
}

#[test]
fn proxy_without_upstreams_gets_only_its_inbound_side() {
    let config = compile(&mesh(), &proxy("bookinfo", "ratings", 9080, &[]));
    assert_eq!(names(&config), (vec!["inbound"], vec!["local-app"]));
}

/// An upstream: service, namespace, local port.
type Up<'a> = (&'a str, &'a str, u32);

#[test]
fn proxy_gets_only_backends_it_can_reach() {
    // (upstreams, backends): the upstream Services and where their routes send.
    let cases: [(&[Up<'_>], &[&str]); 5] = [
        (
            &[("ratings-v1", "", 9001)],
            &["local-app", "ratings-v1.bookinfo"],
        ),
        (
            &[("ratings", "", 9001)],
            &[
                "local-app",
                "ratings-v1.bookinfo",
                "ratings-v2.bookinfo",
                "ratings.bookinfo",
            ],
        ),
        (
            &[("reviews", "bookinfo", 9001)],
            &[
                "local-app",
                "reviews-v2.bookinfo",
                "reviews-v3.bookinfo",
                "reviews.bookinfo",
            ],
        ),
        // The consumer route of `shop` is not bookinfo's.
        (&[("details", "", 9001)], &["details.bookinfo", "local-app"]),
        (
            &[("productpage", "", 9001)],
            &["local-app", "productpage.bookinfo"],
        ),
    ];
    let resources = mesh();
    for (upstreams, want) in cases {
        let config = compile(
            &resources,
            &proxy("bookinfo", "productpage", 9080, upstreams),
        );
        assert_eq!(names(&config).1, want, "{upstreams:?}");
    }
    let config = compile(
        &resources,
        &proxy("shop", "web", 80, &[("details", "bookinfo", 9001)]),
    );
    assert_eq!(
        names(&config).1,
        ["details-v9.bookinfo", "details.bookinfo", "local-app"]
    );
}

#[test]
fn same_input_in_any_order_gives_the_same_bytes() {
    let upstreams = [
        ("reviews", "bookinfo", 9003),
        ("ratings", "", 9001),
        ("details", "bookinfo", 9002),
        ("ratings-v1", "bookinfo", 9004),
    ];
    let p = proxy("bookinfo", "productpage", 9080, &upstreams);
    let resources = mesh();
    let want = compile(&resources, &p).encode_to_vec();

    let mut rng = Lcg(7);
    for _ in 0..20 {
        let mut shuffled = resources.clone();
        rng.shuffle(&mut shuffled);
        let mut p = p.clone();
        rng.shuffle(&mut p.upstreams);
        assert_eq!(compile(&shuffled, &p).encode_to_vec(), want);
    }
}

#[test]
fn upstreams_that_cannot_be_bound_are_left_out() {
    let upstreams = [
        ("a", "", 9001),
        ("b", "", 9001),    // port taken by a
        ("c", "", 7143),    // the inbound port
        ("d", "", 0),       // no port
        ("e", "", 70_000),  // not a port
        ("a", "", 9002),    // a again: a second name
        ("b-c", "x", 9003), // outbound-x-b-c ...
        ("c", "x-b", 9004), // ... and outbound-x-b-c again
    ];
    let config = compile(&[], &proxy("default", "web", 8080, &upstreams));
    let listeners: Vec<(&str, &str)> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.as_str()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("inbound", "0.0.0.0:7143"),
            ("outbound-default-a", "127.0.0.1:9001"),
            ("outbound-default-a-9002", "127.0.0.1:9002"),
            ("outbound-x-b-c", "127.0.0.1:9003"),
            ("outbound-x-b-c-9004", "127.0.0.1:9004"),
        ]
    );
    assert_eq!(
        names(&config).1,
        ["a.default", "b-c.x", "c.x-b", "local-app"]
    );
}

#[test]
fn long_and_odd_names_are_made_valid() {
    let long_ns = "n".repeat(63);
    let long_svc = "s".repeat(60);
    let mut resources = vec![workload(
        &long_ns,
        "w",
        &[("app", long_svc.as_str())],
        "10.0.0.9",
        None,
    )];
    resources.extend(yaml(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: {long_ns}}}
spec:
  parentRefs: [{{name: {long_svc}}}]
  rules: [{{backendRefs: [{{name: {long_svc}-v2}}]}}]
"#
    )));
    let p = proxy(
        &long_ns,
        "web",
        8080,
        &[(long_svc.as_str(), "", 9001), ("Bad/Name", "", 9002)],
    );
    // `compile` checks every name against the proxy's rule.
    let config = compile(&resources, &p);
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.backends.len(), 4);
    let own = super::super::backend_name(&super::super::ServiceKey::new(&long_ns, &long_svc));
    assert_eq!(endpoints(backend(&config, &own)), ["10.0.0.9:7143"]);
}

#[test]
fn many_proxies_against_one_index() {
    // 5,000 workloads in 500 Services; 1,000 proxies with three upstreams each. Timing
    // belongs in the benchmark; this checks the index gives every proxy what it needs.
    let mut resources = Vec::new();
    for i in 0..5000u32 {
        let app = format!("svc-{}", i % 500);
        let address = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        resources.push(workload(
            "default",
            &format!("w-{i}"),
            &[("app", &app)],
            &address,
            None,
        ));
    }
    let state = MeshState::new(resources);
    let index = MeshIndex::new(&state);
    for i in 0..1000u32 {
        let ups: Vec<(String, u32)> = (0..3)
            .map(|k| (format!("svc-{}", (i + k * 7) % 500), 9000 + k))
            .collect();
        let ups: Vec<(&str, &str, u32)> = ups.iter().map(|(s, p)| (s.as_str(), "", *p)).collect();
        let config = index.compile(&proxy("default", &format!("svc-{}", i % 500), 8080, &ups));
        assert_eq!(config.listeners.len(), 4);
        assert_eq!(config.backends.len(), 4);
        assert!(config
            .backends
            .iter()
            .filter(|b| b.name != "local-app")
            .all(|b| b.endpoints.len() == 10));
    }
}

/// A small deterministic shuffler, so a failure reproduces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
