//! Which proxies hold a resource, and in what compiled form: `GET
//! /api/v1/resources/{kind}/{namespace}/{name}/proxies`, what `trellis describe` shows
//! under the resource.
//!
//! The answer joins the registry with the configuration last sent to each proxy, so it
//! shows what proxies were actually given, not what they would be given now. A proxy
//! is listed when its configuration has a piece that came from the resource:
//!
//! | kind | pieces |
//! | --- | --- |
//! | HTTPRoute, GRPCRoute, TCPRoute, TLSRoute | the routes named `<namespace>.<name>.<rule>`, with their listener |
//! | Service, BackendPolicy | the Service's backend (endpoints, balancer, timeouts) and its outbound listeners |
//! | Workload | the backends that list it as an endpoint; its own proxy's inbound listener |
//! | AuthorizationPolicy | the inbound listeners whose authorization holds it (`<namespace>/<name>`) |
//! | FaultInjection | the routes whose fault it is (`<namespace>/<name>`), on the proxies of its sources |
//! | ExternalService | per host and port, its egress listener and backend (endpoints, TLS origination) and the host's virtual IP, on transparent proxies |
//!
//! `serving` says whether the proxy has acknowledged a version at least as new as the
//! resource (its `resourceVersion`): a proxy that holds an older form of it is still
//! catching up, or refused the newer one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use trellis_api::external::ExternalServiceSpec;
use trellis_api::proto::v1::{
    AuthorizationAction, Backend, BackendProtocol, Listener, LoadBalancer, Route,
};
use trellis_api::{Kind, Resource, Spec};

use super::handlers::{find_one, Items};
use super::{ApiError, ApiState};
use crate::compile::{
    backend_name, describe_match, egress_name, Compiled, ServiceKey, DEFAULT_INBOUND_PORT,
    DEFAULT_ROUTE, INBOUND_LISTENER,
};
use crate::registry::{ProxyStatus, SyncState};

/// One proxy that holds (a form of) the resource.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Holder {
    workload: String,
    namespace: String,
    service: String,
    state: SyncState,
    acked_version: u64,
    /// Whether the acknowledged version includes the resource as it is now.
    serving: bool,
    /// The pieces of the proxy's configuration that came from the resource.
    compiled: Vec<Value>,
}

/// `GET /api/v1/resources/{kind}/{namespace}/{name}/proxies`
pub(super) async fn proxies_of(
    State(api): State<Arc<ApiState>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<Items<Holder>>, ApiError> {
    let resource = find_one(&api, &kind, &namespace, &name).await?;
    let revision: u64 = resource
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let items = api
        .registry
        .with_configs()
        .into_iter()
        .filter_map(|(status, config)| {
            let compiled = pieces(&resource, &status, config.as_deref()?);
            (!compiled.is_empty()).then(|| holder(status, revision, compiled))
        })
        .collect();
    Ok(Json(Items::new(items)))
}

fn holder(status: ProxyStatus, revision: u64, compiled: Vec<Value>) -> Holder {
    Holder {
        serving: status.acked_version >= revision,
        workload: status.workload,
        namespace: status.namespace,
        service: status.service,
        state: status.state,
        acked_version: status.acked_version,
        compiled,
    }
}

/// The parts of `config` that came from `resource`.
fn pieces(resource: &Resource, proxy: &ProxyStatus, config: &Compiled) -> Vec<Value> {
    let meta = &resource.metadata;
    match (&resource.kind, &resource.spec) {
        (Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute, _) => {
            let prefix = format!("{}.{}.", meta.namespace, meta.name);
            config
                .listeners()
                .flat_map(|l| l.routes.iter().map(move |r| (l, r)))
                .filter(|(_, r)| r.name.starts_with(&prefix))
                .map(|(l, r)| route(l, r))
                .collect()
        }
        (Kind::Service, _) => service(config, &ServiceKey::new(&meta.namespace, &meta.name)),
        (Kind::BackendPolicy, Spec::BackendPolicy(policy)) => service(
            config,
            &ServiceKey::new(&meta.namespace, &policy.target_ref.name),
        ),
        (Kind::AuthorizationPolicy, _) => {
            let name = format!("{}/{}", meta.namespace, meta.name);
            config
                .listeners()
                .filter_map(|l| {
                    let authz = l.authorization.as_ref()?;
                    let policy = authz.policies.iter().find(|p| p.name == name)?;
                    Some(json!({
                        "listener": l.name,
                        "policy": policy.name,
                        "action": action(policy.action),
                        "rules": policy.rules.len(),
                        "defaultAction": action(authz.default_action),
                    }))
                })
                .collect()
        }
        (Kind::FaultInjection, _) => {
            let name = format!("{}/{}", meta.namespace, meta.name);
            config
                .listeners()
                .flat_map(|l| l.routes.iter().map(move |r| (l, r)))
                .filter(|(_, r)| r.fault.as_ref().is_some_and(|f| f.name == name))
                .map(|(l, r)| route(l, r))
                .collect()
        }
        (Kind::Workload, Spec::Workload(w)) => {
            let endpoint = std::net::SocketAddr::new(
                w.address,
                w.inbound_port.unwrap_or(DEFAULT_INBOUND_PORT),
            )
            .to_string();
            let mut found: Vec<Value> = config
                .backends()
                .filter(|b| b.endpoints.iter().any(|e| e.address == endpoint))
                .map(|b| json!({"backend": b.name, "endpoint": endpoint}))
                .collect();
            if proxy.workload == meta.name && proxy.namespace == meta.namespace {
                found.extend(
                    config
                        .listeners()
                        .filter(|l| l.name == INBOUND_LISTENER)
                        .map(listener),
                );
            }
            found
        }
        (Kind::ExternalService, Spec::ExternalService(spec)) => {
            external(config, &ServiceKey::new(&meta.namespace, &meta.name), spec)
        }
        _ => Vec::new(),
    }
}

/// An ExternalService's egress listeners and backends, one per host and port.
fn external(config: &Compiled, key: &ServiceKey, spec: &ExternalServiceSpec) -> Vec<Value> {
    let mut found = Vec::new();
    for host in &spec.hosts {
        let virtual_ip = config
            .external_hosts()
            .iter()
            .find(|h| h.host.eq_ignore_ascii_case(host))
            .map(|h| h.virtual_ip.as_str());
        for port in &spec.ports {
            let name = egress_name(key, host, port.port);
            let Some(b) = config.backends().find(|b| b.name == name) else {
                continue;
            };
            let endpoints: Vec<String> = b
                .endpoints
                .iter()
                .map(|e| match e.hostname.as_str() {
                    "" => e.address.clone(),
                    hostname => format!("{hostname} (resolved), port {}", port.host_port()),
                })
                .collect();
            let mut piece = json!({
                "listener": name,
                "host": host,
                "port": port.port,
                "protocol": port.protocol.as_str(),
                "virtualIp": virtual_ip,
                "endpoints": endpoints,
            });
            if let Some(tls) = &b.originate_tls {
                piece["originateTls"] = json!({"serverName": tls.server_name});
            }
            found.push(piece);
        }
    }
    found
}

/// A Service's backend and the listeners that call it through a local port.
fn service(config: &Compiled, key: &ServiceKey) -> Vec<Value> {
    let name = backend_name(key);
    let mut found: Vec<Value> = config
        .backends()
        .filter(|b| b.name == name)
        .map(backend)
        .collect();
    found.extend(
        config
            .listeners()
            .filter(|l| {
                l.name != INBOUND_LISTENER
                    && l.routes
                        .iter()
                        .any(|r| r.name == DEFAULT_ROUTE && sends_to(r, &name))
            })
            .map(listener),
    );
    found
}

fn sends_to(route: &Route, backend: &str) -> bool {
    route.backends.iter().any(|b| b.name == backend)
}

fn route(l: &Listener, r: &Route) -> Value {
    let backends: Vec<String> = r
        .backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.weight))
        .collect();
    let mut piece = json!({
        "listener": l.name,
        "route": r.name,
        "match": describe_match(r.r#match.as_ref()),
        "backends": backends,
    });
    if let Some(ms) = r.timeout_ms {
        piece["timeoutMs"] = ms.into();
    }
    piece
}

fn listener(l: &Listener) -> Value {
    json!({
        "listener": l.name,
        "address": l.address,
        "routes": l.routes.len(),
    })
}

fn action(wire: i32) -> &'static str {
    match AuthorizationAction::try_from(wire) {
        Ok(AuthorizationAction::Allow) => "allow",
        _ => "deny",
    }
}

fn backend(b: &Backend) -> Value {
    let protocol = match BackendProtocol::try_from(b.protocol) {
        Ok(BackendProtocol::Http2) => "http2",
        _ => "http1",
    };
    let balancer = match LoadBalancer::try_from(b.load_balancer) {
        Ok(LoadBalancer::RoundRobin) => "round-robin",
        Ok(LoadBalancer::LeastRequest) => "least-request",
        Ok(LoadBalancer::ConsistentHash) => "consistent-hash",
        _ => "ewma",
    };
    let endpoints: Vec<&str> = b.endpoints.iter().map(|e| e.address.as_str()).collect();
    let mut piece = json!({
        "backend": b.name,
        "protocol": protocol,
        "loadBalancer": balancer,
        "endpoints": endpoints,
    });
    if let Some(ms) = b.connect_timeout_ms {
        piece["connectTimeoutMs"] = ms.into();
    }
    piece
}
