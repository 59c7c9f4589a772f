//! The proxy's own listener and its route to the local application.

use trellis_api::proto::v1::ListenerProtocol;

use super::*;

const SERVICES: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 8080, appProtocol: http}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: stream, namespace: shop}
spec:
  selector: {app: stream}
  ports: [{port: 8080, appProtocol: http2}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: greeter, namespace: shop}
spec:
  selector: {app: greeter}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{port: 5432, appProtocol: tcp}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  selector: {app: multi}
  ports:
    - {name: http, port: 80, targetPort: 8080, appProtocol: http}
    - {name: rpc, port: 9000, targetPort: 9090, appProtocol: grpc}
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: web-h2c, namespace: shop}
spec:
  targetRef: {kind: Service, name: web}
  protocol: http2
"#;

#[test]
fn inbound_listener_follows_the_services_app_protocol() {
    let resources = yaml(SERVICES);
    // (service, app port, listener protocol, local-app protocol)
    let cases = [
        // `web` is http, but its BackendPolicy says the application speaks h2c.
        ("web", 8080, ListenerProtocol::Auto, http2()),
        ("stream", 8080, ListenerProtocol::Http2, http2()),
        ("greeter", 50051, ListenerProtocol::Grpc, http2()),
        ("db", 5432, ListenerProtocol::Tcp, http1()),
        // No Service declared: implicit, http.
        ("implicit", 3000, ListenerProtocol::Auto, http1()),
        // Several ports: the one whose targetPort is the application's port.
        ("multi", 9090, ListenerProtocol::Grpc, http2()),
        ("multi", 8080, ListenerProtocol::Auto, http1()),
        // An app port no Service port targets: the first port.
        ("multi", 1234, ListenerProtocol::Auto, http1()),
    ];
    for (service, app_port, listener_protocol, app_protocol) in cases {
        let config = compile(&resources, &proxy("shop", service, app_port, &[]));
        let inbound = listener(&config, "inbound");
        assert_eq!(inbound.address, "0.0.0.0:7143", "{service}");
        assert_eq!(
            inbound.protocol, listener_protocol as i32,
            "{service}:{app_port}"
        );
        assert_eq!(
            routes(inbound),
            ["local-app | * | local-app=1"],
            "{service}"
        );
        let app = backend(&config, "local-app");
        assert_eq!(app.protocol, app_protocol, "{service}:{app_port}");
        assert_eq!(
            endpoints(app),
            [format!("127.0.0.1:{app_port}")],
            "{service}"
        );
    }
}

#[test]
fn grpc_application_stays_http2_whatever_the_policy() {
    let resources = yaml(
        r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: greeter}
spec:
  targetRef: {kind: Service, name: greeter}
  protocol: http1
"#,
    );
    let config = compile(&resources, &proxy("default", "greeter", 50051, &[]));
    assert_eq!(backend(&config, "local-app").protocol, http2());
}

#[test]
fn inbound_port_and_address_family() {
    // (inbound port in the Hello, workload address, listener address)
    let cases = [
        (7200, "10.0.0.1", "0.0.0.0:7200"),
        (0, "10.0.0.1", "0.0.0.0:7143"),
        (70_000, "10.0.0.1", "0.0.0.0:7143"),
        (7143, "fd00::1", "[::]:7143"),
        (7143, "", "0.0.0.0:7143"),
    ];
    for (port, address, want) in cases {
        let mut p = proxy("default", "web", 8080, &[]);
        p.inbound_port = port;
        p.address = address.to_string();
        let config = compile(&[], &p);
        assert_eq!(
            listener(&config, "inbound").address,
            want,
            "{port} {address}"
        );
    }
}

#[test]
fn application_without_a_port_gets_no_endpoint() {
    let config = compile(&[], &proxy("default", "web", 0, &[]));
    assert!(backend(&config, "local-app").endpoints.is_empty());
}

#[test]
fn a_proxy_declaring_no_app_port_forwards_to_its_workloads_first_port() {
    // A Pod whose containers declare no ports: its sidecar says app port 0, while the
    // workload the platform wrote for it has its Services' target ports (8080 here).
    let mut resources = yaml(SERVICES);
    resources.push(workload(
        "shop",
        "web-0",
        &[("app", "web")],
        "10.0.0.1",
        Some(true),
    ));
    let config = compile(&resources, &proxy("shop", "web", 0, &[]));
    assert_eq!(endpoints(backend(&config, "local-app")), ["127.0.0.1:8080"]);
    // Without such a workload, there is nothing to forward to.
    let config = compile(&yaml(SERVICES), &proxy("shop", "web", 0, &[]));
    assert!(endpoints(backend(&config, "local-app")).is_empty());
}
