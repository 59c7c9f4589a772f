//! gRPC and TCP Services: GRPCRoutes and TCPRoutes.

use trellis_api::proto::v1::{ListenerProtocol, Retry};

use super::*;

const GREETER: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: legacy}
spec:
  selector: {app: legacy}
  ports: [{port: 7000, appProtocol: tcp}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter}
spec:
  parentRefs: [{name: greeter, port: 50051}]
  rules:
    - matches:
        - method: {service: helloworld.Greeter}
      backendRefs: [{name: greeter-v1}]
      retry: {attempts: 2, codes: [unavailable, resource-exhausted]}
    - matches:
        - method: {service: helloworld.Greeter, method: SayHello}
          headers: [{name: x-tenant, type: RegularExpression, value: "acme|globex"}]
        - method: {method: Ping}
        - method: {type: RegularExpression, service: "helloworld\\..*", method: "Say.*"}
      backendRefs: [{name: greeter-v2}]
    - matches:
        - headers: [{name: x-legacy, value: "1"}]
      backendRefs: [{name: legacy}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ignored}
spec:
  parentRefs: [{name: greeter}]
  rules: [{backendRefs: [{name: legacy}]}]
"#;

#[test]
fn grpc_route_methods_become_paths() {
    let config = compile(
        &yaml(GREETER),
        &proxy("default", "web", 8080, &[("greeter", "", 9000)]),
    );
    let l = listener(&config, "outbound-default-greeter");
    assert_eq!(l.protocol, ListenerProtocol::Grpc as i32);
    // Longest service first, then longest method, then most headers; the HTTPRoute
    // does not apply to a gRPC Service.
    assert_eq!(
        routes(l),
        [
            r"default.greeter.1 | exact:/helloworld.Greeter/SayHello h:x-tenant~acme|globex | greeter-v2.default=1",
            r"default.greeter.0 | prefix:/helloworld.Greeter/ | greeter-v1.default=1",
            r"default.greeter.1 | regex:/(?:helloworld\..*)/(?:Say.*) | greeter-v2.default=1",
            r"default.greeter.1 | regex:/[^/]+/Ping | greeter-v2.default=1",
            r"default.greeter.2 | h:x-legacy=1 | legacy.default=1",
            r"default | * | greeter.default=1",
        ]
    );
    // A rule's retry names gRPC statuses; the attempts it does not say come from the
    // defaults HTTPRoute retries use.
    let retrying = l
        .routes
        .iter()
        .find(|r| r.name == "default.greeter.0")
        .expect("route");
    assert_eq!(
        retrying.retry,
        Some(Retry {
            attempts: 2,
            codes: vec![],
            backoff_ms: 25,
            grpc_statuses: vec![14, 8],
        })
    );
    let plain = l.routes.iter().find(|r| r.name == "default.greeter.1");
    assert_eq!(plain.expect("route").retry, None);
    // The gRPC listener sends to `legacy` too, so even that TCP Service's backend is
    // HTTP/2, as the proxy requires on a gRPC listener.
    for b in [
        "greeter.default",
        "greeter-v1.default",
        "greeter-v2.default",
        "legacy.default",
    ] {
        assert_eq!(backend(&config, b).protocol, http2(), "{b}");
    }
}

#[test]
fn tcp_route_takes_the_one_route_of_a_tcp_listener() {
    let extra = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: postgres, namespace: data}
spec:
  selector: {app: postgres}
  ports: [{port: 5432, appProtocol: tcp}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: postgres-b, namespace: data, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  parentRefs: [{name: postgres, port: 5432}]
  rules:
    - backendRefs: [{name: postgres-primary, weight: 3}, {name: postgres-replica, weight: 1}]
    - backendRefs: [{name: postgres-never}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: postgres-a, namespace: data, creationTimestamp: "2026-11-05T11:00:00Z"}
spec:
  parentRefs: [{name: postgres}]
  rules: [{backendRefs: [{name: postgres-newer}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: postgres, namespace: data}
spec:
  targetRef: {kind: Service, name: postgres}
  requestTimeout: 5s
"#;
    let mut resources = yaml(extra);
    resources.push(workload(
        "data",
        "pg-0",
        &[("app", "postgres-primary")],
        "10.2.0.1",
        None,
    ));
    let p = proxy("data", "api", 8080, &[("postgres", "data", 15432)]);
    let config = compile(&resources, &p);
    let l = listener(&config, "outbound-data-postgres");
    assert_eq!(l.protocol, ListenerProtocol::Tcp as i32);
    // The oldest route's first rule; no timeout on a TCP listener.
    assert_eq!(
        routes(l),
        ["data.postgres-b.0 | * | postgres-primary.data=3 postgres-replica.data=1"]
    );
    assert_eq!(
        names(&config).1,
        [
            "local-app",
            "postgres-primary.data",
            "postgres-replica.data",
            "postgres.data"
        ]
    );
    assert_eq!(backend(&config, "postgres.data").protocol, http1());
    assert_eq!(
        endpoints(backend(&config, "postgres-primary.data")),
        ["10.2.0.1:7143"]
    );

    // Without a TCPRoute: the Service itself.
    let resources: Vec<Resource> = resources
        .into_iter()
        .filter(|r| r.kind != trellis_api::Kind::TCPRoute)
        .collect();
    let config = compile(&resources, &p);
    assert_eq!(
        routes(listener(&config, "outbound-data-postgres")),
        ["default | * | postgres.data=1"]
    );
}

#[test]
fn tls_routes_route_by_server_name_exact_before_wildcard() {
    let extra = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: payments, namespace: shop}
spec:
  selector: {app: payments}
  ports: [{port: 443, appProtocol: tls}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: wide, namespace: shop, creationTimestamp: "2026-11-05T10:00:00Z"}
spec:
  parentRefs: [{name: payments}]
  hostnames: ["*.example", "*.eu.example"]
  rules: [{backendRefs: [{name: payments-v1}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: exact, namespace: shop, creationTimestamp: "2026-11-05T11:00:00Z"}
spec:
  parentRefs: [{name: payments}]
  hostnames: [pay.eu.example]
  rules: [{backendRefs: [{name: payments-v2, weight: 9}, {name: payments-v1, weight: 1}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: rest, namespace: shop, creationTimestamp: "2026-11-05T09:00:00Z"}
spec:
  parentRefs: [{name: payments}]
  rules: [{backendRefs: [{name: payments-v1}]}]
"#;
    let mut resources = yaml(extra);
    resources.push(workload(
        "shop",
        "payments-0",
        &[("app", "payments")],
        "10.2.0.9",
        None,
    ));
    let p = proxy("shop", "web", 8080, &[("payments", "shop", 10443)]);
    let config = compile(&resources, &p);
    let l = listener(&config, "outbound-shop-payments");
    assert_eq!(l.protocol, ListenerProtocol::Tls as i32);
    assert_eq!(
        routes(l),
        [
            "shop.exact.0 | host:pay.eu.example | payments-v2.shop=9 payments-v1.shop=1",
            "shop.wide.0 | host:*.eu.example | payments-v1.shop=1",
            "shop.wide.0 | host:*.example | payments-v1.shop=1",
            "shop.rest.0 | * | payments-v1.shop=1",
            "default | * | payments.shop=1",
        ]
    );
    // Bytes are copied to the peers' inbound listeners, which see the application's
    // TLS as opaque bytes inside the mesh's mTLS.
    assert_eq!(backend(&config, "payments.shop").protocol, http1());
    let own = compile(&resources, &proxy("shop", "payments", 8443, &[]));
    assert_eq!(
        listener(&own, "inbound").protocol,
        ListenerProtocol::Tcp as i32
    );
}
