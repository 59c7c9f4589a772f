//! Routes per Service port: a parentRef's `port` attaches its route to that port only,
//! transparent sidecars route each port of a virtual IP by its own routes, and a
//! Service with `unmatched: notFound` answers what its routes do not match with 404.

use std::net::Ipv4Addr;

use trellis_api::proto::v1::ListenerProtocol;

use super::*;
use crate::compile::ServiceKey;
use crate::vip::VipTable;

/// `echo` as the GAMMA conformance suite declares it: HTTP on 80 (to 8080) and on
/// 8080, gRPC over h2c on 7070, raw TCP on 9090.
fn echo(unmatched: &str) -> String {
    format!(
        r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: echo, namespace: mesh}}
spec:
  selector: {{app: echo}}
  unmatched: {unmatched}
  ports:
    - {{name: http, port: 80, targetPort: 8080, appProtocol: http}}
    - {{name: http-alt, port: 8080, appProtocol: http}}
    - {{name: grpc, port: 7070, appProtocol: http2}}
    - {{name: tcp, port: 9090, appProtocol: tcp}}
"#
    )
}

fn http_route(parent: &str) -> String {
    format!(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: mesh}}
spec:
  parentRefs: [{parent}]
  rules:
    - matches: [{{queryParams: [{{name: animal, value: whale}}]}}]
      backendRefs: [{{name: echo-v1}}]
"#
    )
}

const GRPC_ROUTE: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: mesh}
spec:
  parentRefs: [{name: echo, port: 7070}]
  rules:
    - backendRefs: [{name: echo-v1, weight: 70}, {name: echo-v2, weight: 30}]
"#;

fn client() -> Workload {
    proxy("mesh", "client", 8080, &[("echo", "mesh", 7001)])
}

fn transparent_client() -> Workload {
    let mut proxy = proxy("mesh", "client", 8080, &[]);
    proxy.outbound_port = 7140;
    proxy
}

fn compile_with_vip(resources: &[Resource], proxy: &Workload) -> ProxyConfig {
    let mut index = MeshIndex::new(&MeshState::new(resources.to_vec()));
    let vips: VipTable = [(ServiceKey::new("mesh", "echo"), Ipv4Addr::new(10, 96, 0, 1))].into();
    index.set_vips(vips);
    let config = index.compile(proxy);
    assert_acceptable(&config);
    config
}

/// The original-destination table: (listener, addresses) per target.
fn targets(config: &ProxyConfig) -> Vec<(String, Vec<String>)> {
    listener(config, "outbound")
        .original_destination
        .as_ref()
        .expect("a table")
        .targets
        .iter()
        .map(|t| (t.listener.clone(), t.addresses.clone()))
        .collect()
}

#[test]
fn not_found_services_drop_the_catch_all_only_behind_routes() {
    let whale = "mesh.r.0 | q:animal=whale | echo-v1.mesh=1";
    let catch_all = "default | * | echo.mesh=1";
    // (unmatched, a route attached?, routes of the upstream listener)
    let cases: [(&str, bool, &[&str]); 4] = [
        ("service", true, &[whale, catch_all]),
        ("notFound", true, &[whale]),
        ("service", false, &[catch_all]),
        ("notFound", false, &[catch_all]),
    ];
    for (unmatched, attached, expected) in cases {
        let mut text = echo(unmatched);
        if attached {
            text.push_str(&http_route("{name: echo}"));
        }
        let config = compile(&yaml(&text), &client());
        assert_eq!(
            routes(listener(&config, "outbound-mesh-echo")),
            expected,
            "unmatched: {unmatched}, route attached: {attached}"
        );
    }
}

#[test]
fn the_default_is_to_send_unmatched_requests_to_the_service() {
    let text = echo("service").replace("  unmatched: service\n", "");
    let resources = yaml(&text);
    let Spec::Service(spec) = &resources[0].spec else {
        panic!("a Service");
    };
    assert_eq!(spec.unmatched, trellis_api::service::Unmatched::Service);
}

#[test]
fn a_parent_port_attaches_the_route_to_that_port_only() {
    let whale = "mesh.r.0 | q:animal=whale | echo-v1.mesh=1";
    // (parentRef, routes of port 80, of port 8080)
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("{name: echo}", &[whale], &[whale]),
        ("{name: echo, port: 80}", &[whale], &[]),
        ("{name: echo, sectionName: http-alt}", &[], &[whale]),
        // One parentRef without a port takes the whole Service.
        ("{name: echo, port: 80}, {name: echo}", &[whale], &[whale]),
        // A port the Service does not have attaches nowhere.
        ("{name: echo, port: 81}", &[], &[]),
    ];
    for (parents, on_80, on_8080) in cases {
        let text = format!("{}{}", echo("notFound"), http_route(parents));
        let config = compile_with_vip(&yaml(&text), &transparent_client());
        let port_routes = |name: &str| -> Vec<String> {
            let l = listener(&config, name);
            assert_eq!(l.protocol, ListenerProtocol::Auto as i32, "{name}");
            routes(l)
        };
        let or_default = |r: &[&str]| -> Vec<String> {
            if r.is_empty() {
                vec!["default | * | echo.mesh=1".to_string()]
            } else {
                r.iter().map(ToString::to_string).collect()
            }
        };
        assert_eq!(
            port_routes("transparent-mesh-echo"),
            or_default(on_80),
            "{parents}: port 80"
        );
        let alt = if on_80 == on_8080 {
            "transparent-mesh-echo"
        } else {
            "transparent-mesh-echo-8080"
        };
        assert_eq!(
            port_routes(alt),
            or_default(on_8080),
            "{parents}: port 8080"
        );
    }
}

#[test]
fn each_port_of_a_virtual_ip_goes_to_its_own_routes() {
    let text = format!(
        "{}{}{GRPC_ROUTE}",
        echo("notFound"),
        http_route("{name: echo, port: 80}")
    );
    let config = compile_with_vip(&yaml(&text), &transparent_client());
    let vip = |port: &str| format!("10.96.0.1{port}");
    assert_eq!(
        targets(&config),
        [
            ("transparent-mesh-echo".to_string(), vec![vip("")]),
            ("transparent-mesh-echo-8080".to_string(), vec![vip(":8080")]),
            ("transparent-mesh-echo-7070".to_string(), vec![vip(":7070")]),
            ("transparent-mesh-echo-9090".to_string(), vec![vip(":9090")]),
        ]
    );
    let grpc = listener(&config, "transparent-mesh-echo-7070");
    // An h2c port takes the GRPCRoutes attached to it when no HTTPRoute is.
    assert_eq!(grpc.protocol, ListenerProtocol::Http2 as i32);
    assert_eq!(
        routes(grpc),
        ["mesh.g.0 | * | echo-v1.mesh=70 echo-v2.mesh=30"]
    );
    let tcp = listener(&config, "transparent-mesh-echo-9090");
    assert_eq!(tcp.protocol, ListenerProtocol::Tcp as i32);
    assert_eq!(routes(tcp), ["default | * | echo.mesh=1"]);
}

#[test]
fn a_named_upstream_takes_the_primary_ports_routes() {
    let text = format!(
        "{}{}{GRPC_ROUTE}",
        echo("notFound"),
        http_route("{name: echo, port: 8080}")
    );
    let config = compile(&yaml(&text), &client());
    assert_eq!(
        routes(listener(&config, "outbound-mesh-echo")),
        ["default | * | echo.mesh=1"]
    );
    assert!(
        config.backends.iter().all(|b| b.name != "echo-v1.mesh"),
        "no backend of a route on another port: {:?}",
        names(&config).1
    );
}

#[test]
fn ports_routed_alike_share_one_listener() {
    let text = format!("{}{}", echo("service"), http_route("{name: echo}"));
    let config = compile_with_vip(&yaml(&text), &transparent_client());
    let listeners: Vec<String> = targets(&config).into_iter().map(|(l, _)| l).collect();
    // 80 and 8080 share the HTTPRoute; 7070 (h2c) and 9090 (tcp) differ in protocol.
    assert_eq!(
        listeners,
        [
            "transparent-mesh-echo",
            "transparent-mesh-echo-7070",
            "transparent-mesh-echo-9090"
        ]
    );
}
