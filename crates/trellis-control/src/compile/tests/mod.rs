//! Table-driven tests of the compiler. Every compiled configuration goes through
//! [`assert_acceptable`], which repeats the checks the proxy makes before it applies a
//! configuration (the control plane cannot depend on the proxy to call them itself).

mod authorization;
mod egress;
mod faults;
mod filters;
mod http_proxy;
mod inbound;
mod locality;
mod outbound;
mod policy;
mod ports;
mod precedence;
mod protocols;
mod reach;
mod shared;
mod transparent;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use trellis_api::proto::v1::{
    path_match, value_match, Backend, BackendProtocol, Listener, ListenerProtocol, ProxyConfig,
    RouteMatch, Upstream, Workload,
};
use trellis_api::service::{WorkloadPort, WorkloadSpec};
use trellis_api::{parse_documents, Condition, ObjectMeta, Resource, Spec};

use super::{describe_match, is_valid_name, MeshIndex, MeshState};

/// Resources from YAML documents, validated as on apply.
fn yaml(text: &str) -> Vec<Resource> {
    parse_documents(text).unwrap_or_else(|e| panic!("test YAML is invalid: {e}"))
}

/// A registered workload; `ready: None` has no `Ready` condition yet.
fn workload(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    address: &str,
    ready: Option<bool>,
) -> Resource {
    let mut meta = ObjectMeta::new(namespace, name);
    meta.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ip: IpAddr = address.parse().expect("test address");
    let mut spec = WorkloadSpec::new(ip);
    spec.ports = vec![WorkloadPort {
        name: None,
        port: 8080,
        app_protocol: None,
    }];
    let mut resource = Resource::new(meta, Spec::Workload(spec));
    if let Some(ready) = ready {
        resource.set_condition(Condition::ready(ready, "Test", ""));
    }
    resource
}

/// A workload with an inbound port other than the default.
fn workload_on(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    address: &str,
    inbound_port: u16,
) -> Resource {
    let mut w = workload(namespace, name, labels, address, None);
    if let Spec::Workload(spec) = &mut w.spec {
        spec.inbound_port = Some(inbound_port);
    }
    w
}

/// A proxy's `Hello` workload: `upstreams` are `(service, namespace, local port)`.
fn proxy(
    namespace: &str,
    service: &str,
    app_port: u32,
    upstreams: &[(&str, &str, u32)],
) -> Workload {
    Workload {
        name: format!("{service}-0"),
        namespace: namespace.to_string(),
        service: service.to_string(),
        labels: [("app".to_string(), service.to_string())].into(),
        address: "10.0.0.1".to_string(),
        inbound_port: 7143,
        app_port,
        service_account: service.to_string(),
        zone: String::new(),
        upstreams: upstreams
            .iter()
            .map(|(service, namespace, local_port)| Upstream {
                service: service.to_string(),
                namespace: namespace.to_string(),
                local_port: *local_port,
            })
            .collect(),
        http_proxy_port: 0,
        outbound_port: 0,
    }
}

/// Compiles and checks that the proxy would accept the result.
fn compile(resources: &[Resource], proxy: &Workload) -> ProxyConfig {
    let state = MeshState::new(resources.to_vec());
    let config = MeshIndex::new(&state).compile(proxy);
    assert_acceptable(&config);
    config
}

fn listener<'a>(config: &'a ProxyConfig, name: &str) -> &'a Listener {
    config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name:?} in {:#?}", names(config)))
}

fn backend<'a>(config: &'a ProxyConfig, name: &str) -> &'a Backend {
    config
        .backends
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name:?} in {:#?}", names(config)))
}

/// Listener names, then backend names.
fn names(config: &ProxyConfig) -> (Vec<&str>, Vec<&str>) {
    (
        config.listeners.iter().map(|l| l.name.as_str()).collect(),
        config.backends.iter().map(|b| b.name.as_str()).collect(),
    )
}

fn endpoints(b: &Backend) -> Vec<&str> {
    b.endpoints.iter().map(|e| e.address.as_str()).collect()
}

/// One line per route: `name | match | backend=weight ...`, with `*` for no match,
/// and ` | timeout=MS` when set.
fn routes(l: &Listener) -> Vec<String> {
    l.routes
        .iter()
        .map(|r| {
            let backends: Vec<String> = r
                .backends
                .iter()
                .map(|b| format!("{}={}", b.name, b.weight))
                .collect();
            let mut line = format!(
                "{} | {} | {}",
                r.name,
                describe_match(r.r#match.as_ref()),
                backends.join(" ")
            );
            if let Some(ms) = r.timeout_ms {
                line.push_str(&format!(" | timeout={ms}"));
            }
            line
        })
        .collect()
}

/// The checks the proxy makes before applying a configuration (its `validate`), so a
/// compiled configuration is never refused for its shape.
fn assert_acceptable(config: &ProxyConfig) {
    assert!(!config.listeners.is_empty(), "a proxy needs a listener");
    let mut backend_names = HashSet::new();
    for b in &config.backends {
        assert!(is_valid_name(&b.name), "backend name {:?}", b.name);
        assert!(
            backend_names.insert(b.name.as_str()),
            "duplicate backend {:?}",
            b.name
        );
        for e in &b.endpoints {
            assert!(
                e.address.parse::<SocketAddr>().is_ok(),
                "endpoint {:?}",
                e.address
            );
            assert!(
                (1..=1_000_000).contains(&e.weight),
                "endpoint weight {}",
                e.weight
            );
        }
        assert_ne!(b.connect_timeout_ms, Some(0), "backend {:?}", b.name);
    }
    let mut listener_names = HashSet::new();
    let mut addresses = HashSet::new();
    for l in &config.listeners {
        assert!(is_valid_name(&l.name), "listener name {:?}", l.name);
        assert!(
            listener_names.insert(l.name.as_str()),
            "duplicate listener {:?}",
            l.name
        );
        let addr: SocketAddr = l
            .address
            .parse()
            .unwrap_or_else(|_| panic!("address {:?}", l.address));
        // Two listeners on one port collide at bind time whatever their IPs; unbound
        // listeners are never bound.
        assert!(
            l.unbound || addresses.insert(addr.port()),
            "port {} used twice",
            addr.port()
        );
        let protocol = ListenerProtocol::try_from(l.protocol).expect("known protocol");
        if protocol == ListenerProtocol::Tcp {
            assert_eq!(l.routes.len(), 1, "tcp listener {:?}", l.name);
            assert!(l.routes[0].r#match.is_none() && l.routes[0].timeout_ms.is_none());
        }
        for r in &l.routes {
            assert!(!r.backends.is_empty(), "route {:?} has no backend", r.name);
            for wb in &r.backends {
                assert!(wb.weight <= 1_000_000);
                let b = config
                    .backends
                    .iter()
                    .find(|b| b.name == wb.name)
                    .unwrap_or_else(|| {
                        panic!("route {:?} names unknown backend {:?}", r.name, wb.name)
                    });
                if protocol == ListenerProtocol::Grpc {
                    assert_eq!(
                        b.protocol,
                        BackendProtocol::Http2 as i32,
                        "gRPC needs HTTP/2: {:?}",
                        b.name
                    );
                }
            }
            if let Some(m) = &r.r#match {
                check_match(m);
            }
            let filters = r.filters.clone().unwrap_or_default();
            for m in &filters.mirrors {
                assert!(
                    backend_names.contains(m.backend.as_str()),
                    "route {:?} mirrors to unknown backend {:?}",
                    r.name,
                    m.backend
                );
                assert!(m.denominator >= 1 && m.numerator <= m.denominator);
            }
            if let Some(redirect) = &filters.redirect {
                assert!([301, 302, 303, 307, 308].contains(&redirect.status_code));
                assert!(
                    filters.rewrite.is_none(),
                    "redirect and rewrite in {:?}",
                    r.name
                );
            }
        }
    }
}

fn check_match(m: &RouteMatch) {
    match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(path_match::Kind::Exact(p) | path_match::Kind::Prefix(p)) => {
            assert!(p.starts_with('/'), "path {p:?}")
        }
        Some(path_match::Kind::Regex(r)) => check_regex(r),
        None => {}
    }
    for v in m.headers.iter().chain(&m.query) {
        assert!(!v.name.is_empty());
        match &v.kind {
            Some(value_match::Kind::Regex(r)) => check_regex(r),
            Some(value_match::Kind::Exact(_)) => {}
            None => panic!("value match {:?} without a value", v.name),
        }
    }
    assert_eq!(m.method, m.method.to_uppercase());
}

fn check_regex(r: &str) {
    assert!(r.len() <= 1024, "regex too long");
    assert!(regex::Regex::new(r).is_ok(), "regex {r:?}");
}

fn http1() -> i32 {
    BackendProtocol::Http1 as i32
}

fn http2() -> i32 {
    BackendProtocol::Http2 as i32
}
