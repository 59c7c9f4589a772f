//! The compiler: the mesh's resources and registered workloads in, the configuration one
//! proxy needs out ([`ProxyConfig`]), holding only what that proxy can reach.
//!
//! A pure function. Build a [`MeshIndex`] once per change of the store and compile
//! every proxy against it; the same input always gives the same output, byte for byte,
//! so the push layer can skip a proxy whose compiled configuration did not change.
//!
//! What a proxy gets (universal mode, explicit ports):
//!
//! - **`inbound`** on `0.0.0.0:<inboundPort>` (`[::]` when the workload's address is
//!   IPv6): every interface, so the proxy does not depend on knowing which of its
//!   addresses peers use. Protocol from its own Service's `appProtocol` (`http` →
//!   auto, `http2`, `grpc`, `tcp`); one route to the backend [`LOCAL_APP_BACKEND`],
//!   `127.0.0.1:<appPort>`, spoken to in HTTP/1.1 for `http` and `tcp` and HTTP/2 for
//!   `http2` and `grpc` (a BackendPolicy's `protocol` on the Service overrides this,
//!   except for gRPC, which is HTTP/2 end to end). Its `authorization` holds the
//!   AuthorizationPolicies in the proxy's namespace that target its Service, sorted by
//!   name, the MeshConfig's `defaultAuthorization`, and the application's port
//!   ([`MeshIndex::authorization`]). Other listeners carry no authorization.
//! - **`outbound-<namespace>-<service>`** on `127.0.0.1:<localPort>` for each upstream,
//!   protocol from the target Service's `appProtocol`. Its routes come from the
//!   HTTPRoutes (`http`, `http2`), GRPCRoutes (`grpc`), TCPRoutes (`tcp`) or TLSRoutes
//!   (`tls`: one route per hostname, an exact name before a wildcard) whose
//!   `parentRefs` name that Service (with no port, or its primary port: a parentRef's
//!   `port` or `sectionName` attaches to that port only), one route per match, ordered
//!   by the Gateway API's precedence (an exact path, then the longest prefix or regular
//!   expression, then a method, then most headers, then most query parameters; for
//!   gRPC the longest service, then method, then most headers; ties to the oldest
//!   route, then by `namespace/name`), then a catch-all route to the Service itself,
//!   left out when the Service says `unmatched: notFound` and a route applies
//!   (`ports.rs`). A TCP listener holds one route: the oldest TCPRoute's first rule,
//!   else the catch-all. A route in
//!   another namespace than its Service (a GAMMA consumer route) applies only to
//!   proxies in the route's namespace.
//! - **Backends** named `<service>.<namespace>` ([`backend_name`]) for each upstream
//!   Service and each Service their routes send to, and nothing else. Endpoints are the
//!   selected workloads' `address:inboundPort` (proxy to proxy), sorted, weight 1;
//!   workloads whose `Ready` condition is `False` are left out. Protocol HTTP/2 (the
//!   peer's inbound listener speaks it) except for `tcp` Services, whose bytes are
//!   copied whatever the setting (HTTP/1.1, or HTTP/2 when a gRPC listener uses the
//!   backend, as the proxy requires). Load balancer and connect timeout from the
//!   BackendPolicy targeting the Service. A Service that does not exist yields a
//!   backend without endpoints, which the proxy answers with 503 `no endpoints`.
//!
//! A Service exists implicitly for every workload's `app` label (selector
//! `app=<name>`, one `http` port) unless one of that name is declared in the namespace.
//!
//! - **`http-proxy`** on `127.0.0.1:<httpProxyPort>` when the workload has one (the
//!   app's `HTTP_PROXY`): protocol auto, holding the routes of every `http`, `http2`
//!   and `grpc` upstream as above, each also matching the request's host against the
//!   names of its Service ([`service_hosts`]). An upstream with local port 0 is
//!   reached this way only. Then the `http` and `https` ports of every ExternalService
//!   (`egress.rs`). Under `egress.mode: registryOnly` the listener is an egress
//!   listener and a host nothing declares gets 403 (counted); otherwise 404 `no route`.
//!   It serves `CONNECT` (`connect`) to the hosts its routes name.
//!
//! - **`outbound`** on `127.0.0.1:<outboundPort>` when the workload has one (transparent
//!   mode: the application's outgoing TCP is redirected there): no routes of its own, but an
//!   `originalDestination` table whose targets map each Service's virtual IP (any port)
//!   to an unbound listener `transparent-<namespace>-<service>` holding the routes an
//!   upstream listener for that Service would hold, each `VIP:port` routed otherwise
//!   (another port's routes or protocol) to a listener `…-<port>` of its own, each ready
//!   workload's application addresses (`address:port`) to that workload's sidecar, and
//!   the MeshConfig's `egress.mode` for every other destination.
//!   The config then also lists every Service with its virtual IP (`services`), for the
//!   sidecar's DNS, and holds a backend for every Service.
//!
//! Upstreams the proxy could not bind are left out: local port 0 or above 65535, or a
//! port another listener of the proxy already uses (the first by namespace, service and
//! port keeps it). When two upstreams would get the same listener name (the same
//! Service on two ports), the later one's name ends in `-<localPort>`.

mod authz;
mod compiled;
mod egress;
mod fault;
mod filters;
mod index;
pub(crate) mod names;
mod ports;
mod ratelimit;
mod routes;
pub mod shared;
mod transparent;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use trellis_api::meta::DEFAULT_NAMESPACE;
use trellis_api::policy::{AccessLogFormat, BackendProtocol as PolicyProtocol, OtlpProtocol};
use trellis_api::proto::v1::{
    AccessLog, Backend, BackendProtocol, EgressMode, Endpoint, Listener, ListenerProtocol,
    LoadBalancer, Locality, MtlsMode, ProxyConfig, RateLimit, Route, Tracing, WeightedBackend,
    Workload,
};
use trellis_api::service::AppProtocol;
use trellis_api::{Kind, ObjectRef, Resource, Spec};

use crate::vip::VipTable;

pub use self::compiled::Compiled;
pub use self::egress::{egress_name, external_host_key, EXTERNAL_VIP_NAMESPACE};
pub use self::index::workload_identity;
use self::index::{ServiceEntry, Tables};
pub use self::names::{
    backend_name, config_name, describe_match, is_valid_name, outbound_listener_name, service_hosts,
};

/// Name of the listener where mesh traffic for the proxy's own workload arrives.
pub const INBOUND_LISTENER: &str = "inbound";
/// Name of the listener that takes HTTP proxy requests and routes them by host.
pub const HTTP_PROXY_LISTENER: &str = "http-proxy";
/// Name of the listener that takes captured outbound connections (transparent mode).
pub const TRANSPARENT_LISTENER: &str = "outbound";
/// Name of the backend that is the proxy's own application on loopback.
pub const LOCAL_APP_BACKEND: &str = "local-app";
/// Name of the route that takes whatever no route resource matched.
pub const DEFAULT_ROUTE: &str = "default";
/// The sidecar's inbound port when a workload reports none.
pub const DEFAULT_INBOUND_PORT: u16 = 7143;
/// The label that names a workload's service, and selects it for the implicit Service.
pub const APP_LABEL: &str = "app";

/// Everything the compiler reads, built by the caller from the store: Services,
/// HTTPRoutes, GRPCRoutes, TCPRoutes, BackendPolicies, AuthorizationPolicies, MeshConfig
/// and Workloads,
/// unique by kind, namespace and name. Their order does not matter.
#[derive(Debug, Clone, Default)]
pub struct MeshState {
    pub resources: Vec<Resource>,
}

impl MeshState {
    pub fn new(resources: Vec<Resource>) -> Self {
        Self { resources }
    }
}

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn of(resource: &Resource) -> Self {
        Self::new(&resource.metadata.namespace, &resource.metadata.name)
    }
}

/// The Service a Workload resource belongs to: the one its `app` label names, in its
/// namespace. That Service exists, declared or implicitly, whenever the workload does.
pub fn service_of(workload: &Resource) -> Option<ServiceKey> {
    if !matches!(workload.spec, Spec::Workload(_)) {
        return None;
    }
    let app = workload.metadata.labels.get(APP_LABEL)?;
    Some(ServiceKey::new(&workload.metadata.namespace, app))
}

impl From<&ServiceKey> for ObjectRef {
    fn from(key: &ServiceKey) -> Self {
        ObjectRef {
            kind: Kind::Service,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

/// The workload a proxy's outbound routes are compiled for.
struct Caller<'a> {
    namespace: &'a str,
    /// Its SPIFFE ID.
    identity: String,
    /// Its zone; empty: none.
    zone: &'a str,
}

/// Compiles the configuration of one proxy. To compile many proxies against the same
/// state, build a [`MeshIndex`] once and call [`MeshIndex::compile`].
pub fn compile(state: &MeshState, proxy: &Workload) -> ProxyConfig {
    MeshIndex::new(state).compile(proxy)
}

/// The mesh's resources read into lookups by Service, to compile many proxies from.
/// Owns its data, so it can be shared (`Arc<MeshIndex>`) between tasks.
#[derive(Debug, Default)]
pub struct MeshIndex {
    tables: Tables,
    vips: VipTable,
    /// The shared parts compiled so far.
    shared: shared::SharedCache,
}

impl MeshIndex {
    pub fn new(state: &MeshState) -> Self {
        let tables = Tables::build(&state.resources);
        Self {
            shared: shared::SharedCache::new(&tables),
            tables,
            vips: VipTable::new(),
        }
    }

    /// Whether a Service of that name exists, declared or implicitly.
    pub fn service_exists(&self, service: &ServiceKey) -> bool {
        self.tables.services.contains_key(service)
    }

    /// Every Service, declared or implicit.
    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.tables.services.keys()
    }

    /// The Services' virtual IPs ([`crate::vip`]), which transparent sidecars route by.
    pub fn set_vips(&mut self, vips: VipTable) {
        self.vips = vips;
        self.shared.clear();
    }

    /// A Service's virtual IP, once assigned.
    pub fn vip(&self, service: &ServiceKey) -> Option<Ipv4Addr> {
        self.vips.get(service).copied()
    }

    /// The configuration `proxy` needs, from what it said in its `Hello`.
    pub fn compile(&self, proxy: &Workload) -> ProxyConfig {
        self.compile_parts(proxy).to_config()
    }

    /// The configuration `proxy` needs, with the part it shares with other proxies
    /// compiled once for all of them ([`shared`]).
    pub fn compile_parts(&self, proxy: &Workload) -> Compiled {
        // A Pod's sidecar knows its application's ports only from the containers'
        // declared ports, which Kubernetes does not require; the workload the
        // platform's source wrote also has its Services' target ports.
        let declared;
        let proxy = match self
            .tables
            .workload_ports
            .get(&(or_default(&proxy.namespace).to_string(), proxy.name.clone()))
        {
            Some(port) if proxy.app_port == 0 => {
                declared = Workload {
                    app_port: u32::from(*port),
                    ..proxy.clone()
                };
                &declared
            }
            _ => proxy,
        };
        let namespace = or_default(&proxy.namespace);
        let own = ServiceKey::new(namespace, &proxy.service);
        let caller = Caller {
            namespace,
            identity: workload_identity(
                &self.tables.mesh.trust_domain,
                namespace,
                &proxy.service_account,
            ),
            zone: &proxy.zone,
        };
        let inbound_port = u16::try_from(proxy.inbound_port)
            .ok()
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_INBOUND_PORT);

        let mut listeners = vec![self.inbound(proxy, &own, inbound_port)];
        let mut backends = vec![self.local_app(proxy, &own)];

        // Service → whether a gRPC listener sends to it (its backend must be HTTP/2).
        let mut reach: BTreeMap<ServiceKey, bool> = BTreeMap::new();
        let mut names: HashSet<String> = HashSet::from([INBOUND_LISTENER.to_string()]);
        let mut ports: HashSet<u16> = HashSet::from([inbound_port]);
        let mut upstreams: Vec<(ServiceKey, u32)> = proxy
            .upstreams
            .iter()
            .map(|u| {
                (
                    ServiceKey::new(or_default_to(&u.namespace, namespace), &u.service),
                    u.local_port,
                )
            })
            .collect();
        upstreams.sort();
        for (target, local_port) in &upstreams {
            let Some(port) = u16::try_from(*local_port).ok().filter(|p| *p != 0) else {
                continue;
            };
            if !ports.insert(port) {
                continue;
            }
            let mut name = outbound_listener_name(target);
            if names.contains(&name) {
                name = config_name(&format!("{name}-{port}"));
            }
            if !names.insert(name.clone()) {
                continue;
            }
            listeners.push(self.outbound(target, &caller, name, port, &mut reach));
        }
        let http_proxy_port = u16::try_from(proxy.http_proxy_port)
            .ok()
            .filter(|p| *p != 0 && !ports.contains(p));
        if let Some(port) = http_proxy_port {
            let mut targets: Vec<&ServiceKey> = upstreams.iter().map(|(t, _)| t).collect();
            targets.dedup();
            let mut listener = self.http_proxy(&targets, &caller, port, &mut reach);
            let (routes, external) = self.http_proxy_egress();
            listener.routes.extend(routes);
            listener.egress = self.tables.mesh.egress == EgressMode::RegistryOnly;
            listeners.push(listener);
            backends.extend(external);
            ports.insert(port);
        }
        let outbound_port = u16::try_from(proxy.outbound_port)
            .ok()
            .filter(|p| *p != 0 && !ports.contains(p));
        let shared = outbound_port
            .map(|port| self.shared_outbound(&self.outbound_key(&caller, port, &names)));
        // A backend the shared part already has as this proxy needs it is not
        // compiled again; one its listeners need as HTTP/2 and the shared part has not
        // is, and replaces it.
        let shared_reach = shared.as_ref().map(|s| &s.reach);
        backends.extend(
            reach
                .iter()
                .filter(|(key, h2)| {
                    shared_reach
                        .and_then(|r| r.get(*key))
                        .is_none_or(|shared_h2| **h2 && !shared_h2)
                })
                .map(|(key, h2)| self.backend(key, *h2, caller.zone)),
        );
        listeners.sort_by(|a, b| a.name.cmp(&b.name));
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        backends.dedup_by(|a, b| a.name == b.name);
        let own = ProxyConfig {
            listeners,
            backends,
            services: Vec::new(),
            tracing: self.tables.mesh.tracing.as_ref().map(|t| Tracing {
                endpoint: t.otlp.endpoint.clone(),
                protocol: match t.otlp.protocol {
                    OtlpProtocol::Grpc => "grpc".into(),
                    OtlpProtocol::Http => "http".into(),
                },
                sampling: t.sampling.0,
                service_name: proxy.service.clone(),
            }),
            access_log: self.tables.mesh.access_log.as_ref().and_then(|log| {
                let (format, output) = log.for_service(&proxy.namespace, &proxy.service)?;
                Some(AccessLog {
                    format: match format {
                        AccessLogFormat::Json => "json".into(),
                        AccessLogFormat::Text => "text".into(),
                    },
                    output: output.to_string(),
                })
            }),
            max_request_series: self.tables.mesh.max_request_series,
            external_hosts: Vec::new(),
        };
        Compiled { own, shared }
    }

    fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.tables.services.get(key)
    }

    fn inbound(&self, proxy: &Workload, own: &ServiceKey, port: u16) -> Listener {
        let protocol = self.own_protocol(proxy, own);
        let any: IpAddr = match proxy.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        };
        Listener {
            name: INBOUND_LISTENER.to_string(),
            address: SocketAddr::new(any, port).to_string(),
            // The application's own TLS arrives inside the mesh's mTLS, as bytes.
            protocol: match protocol {
                AppProtocol::Tls => ListenerProtocol::Tcp,
                other => listener_protocol(other),
            } as i32,
            routes: vec![Route {
                name: LOCAL_APP_BACKEND.to_string(),
                r#match: None,
                backends: vec![WeightedBackend {
                    name: LOCAL_APP_BACKEND.to_string(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            detect_timeout_ms: None,
            idle_timeout_ms: None,
            header_read_timeout_ms: None,
            mtls: self.tables.mesh.mtls as i32,
            authorization: Some(self.authorization(own, app_port(proxy))),
            rate_limits: self.rate_limits(proxy, own, port),
            ..Default::default()
        }
    }

    /// The RateLimitPolicies of the proxy's own Service, global ones with this
    /// replica's share of them.
    fn rate_limits(&self, proxy: &Workload, own: &ServiceKey, port: u16) -> Vec<RateLimit> {
        let Some(limits) = self.tables.rate_limits.get(own) else {
            return Vec::new();
        };
        let replicas = self.service(own).map_or(&[][..], |s| &s.endpoints);
        let me = match proxy.address.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => proxy.address.clone(),
        };
        ratelimit::for_replica(limits, replicas, &me)
    }

    fn local_app(&self, proxy: &Workload, own: &ServiceKey) -> Backend {
        let app = self.own_protocol(proxy, own);
        let declared = match app {
            AppProtocol::Http | AppProtocol::Tcp | AppProtocol::Tls => BackendProtocol::Http1,
            AppProtocol::Http2 | AppProtocol::Grpc => BackendProtocol::Http2,
        };
        let overridden = self.tables.policies.get(own).and_then(|p| p.protocol);
        let protocol = match (app, overridden) {
            (AppProtocol::Grpc, _) | (_, None) => declared,
            (_, Some(PolicyProtocol::Http1)) => BackendProtocol::Http1,
            (_, Some(PolicyProtocol::Http2)) => BackendProtocol::Http2,
        };
        // Without an application port there is nothing to forward to: the backend is
        // left without endpoints and the proxy answers 503 rather than dial port 0.
        let endpoints = u16::try_from(proxy.app_port)
            .ok()
            .filter(|p| *p != 0)
            .map(|p| Endpoint {
                address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p).to_string(),
                weight: 1,
                // The app is on loopback, in plaintext.
                identity: String::new(),
                zone: String::new(),
                hostname: String::new(),
            })
            .into_iter()
            .collect();
        Backend {
            name: LOCAL_APP_BACKEND.to_string(),
            protocol: protocol as i32,
            endpoints,
            load_balancer: LoadBalancer::Ewma as i32,
            hash_on: None,
            locality: None,
            connect_timeout_ms: None,
            // The proxy's default protection.
            resilience: None,
            originate_tls: None,
        }
    }

    /// What the proxy's own application speaks: its Service's port for the app port.
    fn own_protocol(&self, proxy: &Workload, own: &ServiceKey) -> AppProtocol {
        self.service(own).map_or(AppProtocol::Http, |s| {
            s.protocol_for_app_port(proxy.app_port)
        })
    }

    /// The listener for calls from `caller` to `target`; records the Services its routes
    /// send to in `reach`.
    fn outbound(
        &self,
        target: &ServiceKey,
        caller: &Caller<'_>,
        name: String,
        port: u16,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> Listener {
        let (protocol, routes) = self.outbound_routes(target, caller, reach);
        Listener {
            name,
            address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port).to_string(),
            protocol: listener_protocol(protocol) as i32,
            routes,
            detect_timeout_ms: None,
            idle_timeout_ms: None,
            header_read_timeout_ms: None,
            mtls: MtlsMode::Disabled as i32,
            authorization: None,
            ..Default::default()
        }
    }

    /// The HTTP proxy listener: the routes of every HTTP and gRPC upstream, each made
    /// to match only requests whose authority names that upstream's Service.
    fn http_proxy(
        &self,
        targets: &[&ServiceKey],
        caller: &Caller<'_>,
        port: u16,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> Listener {
        let mut routes = Vec::new();
        for target in targets {
            let protocol = self
                .service(target)
                .map_or(AppProtocol::Http, ServiceEntry::protocol);
            if protocol.is_opaque() {
                continue;
            }
            let hosts = service_hosts(target, caller.namespace);
            let (_, target_routes) = self.outbound_routes(target, caller, reach);
            routes.extend(target_routes.into_iter().map(|mut route| {
                route.r#match.get_or_insert_with(Default::default).hosts = hosts.clone();
                route
            }));
        }
        Listener {
            name: HTTP_PROXY_LISTENER.to_string(),
            address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port).to_string(),
            protocol: ListenerProtocol::Auto as i32,
            routes,
            detect_timeout_ms: None,
            idle_timeout_ms: None,
            header_read_timeout_ms: None,
            mtls: MtlsMode::Disabled as i32,
            authorization: None,
            // Clients that honour `HTTP_PROXY` (gRPC, HTTPS) send `CONNECT host:port`.
            connect: true,
            ..Default::default()
        }
    }

    /// The routes a caller with SPIFFE ID `identity` in `namespace` has for calls to
    /// `target`, in the order its proxy tries them (the catch-all last): what
    /// `trellis explain` evaluates.
    pub fn routes_for(&self, target: &ServiceKey, namespace: &str, identity: &str) -> Vec<Route> {
        let caller = Caller {
            namespace,
            identity: identity.to_string(),
            zone: "",
        };
        self.outbound_routes(target, &caller, &mut BTreeMap::new())
            .1
    }

    /// The routes for calls from `caller` to `target` on its primary port, and the
    /// protocol they are for; records the Services they send to in `reach`.
    fn outbound_routes(
        &self,
        target: &ServiceKey,
        caller: &Caller<'_>,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> (AppProtocol, Vec<Route>) {
        self.port_routes(target, None, caller, reach)
    }

    /// The backend for `key`; `grpc` when a gRPC listener sends to it. With a
    /// `prefer-zone` BackendPolicy and a caller in a zone the Service has workloads in,
    /// the backend names that zone and its size, and the caller's proxy weighs how much
    /// of it is healthy in its own view (readiness, ejection, health checks) to decide
    /// what share of the traffic stays there.
    fn backend(&self, key: &ServiceKey, grpc: bool, zone: &str) -> Backend {
        let service = self.service(key);
        let tcp = service.is_some_and(|s| s.protocol().is_opaque());
        let protocol = if tcp && !grpc {
            BackendProtocol::Http1
        } else {
            BackendProtocol::Http2
        };
        let policy = self.tables.policies.get(key);
        // Endpoint weights come later; every endpoint weighs 1 for now.
        let endpoints = service.map(|s| s.endpoints.clone()).unwrap_or_default();
        let locality = policy.and_then(|p| p.prefer_zone).and_then(|min_healthy| {
            let size = *service?.zone_sizes.get(zone)?;
            Some(Locality {
                zone: zone.to_string(),
                min_healthy_percent: min_healthy,
                zone_size: size,
            })
        });
        Backend {
            name: backend_name(key),
            protocol: protocol as i32,
            endpoints,
            load_balancer: policy.map_or(LoadBalancer::Ewma, |p| p.load_balancer) as i32,
            connect_timeout_ms: policy.and_then(|p| p.connect_timeout_ms),
            hash_on: policy.and_then(|p| p.hash_on.clone()),
            locality,
            resilience: policy.and_then(|p| p.resilience.as_ref()).map(Into::into),
            originate_tls: None,
        }
    }
}

/// The application's port from the proxy's `Hello`; 0 when it gave none that fits.
fn app_port(proxy: &Workload) -> u16 {
    u16::try_from(proxy.app_port).unwrap_or(0)
}

fn listener_protocol(app: AppProtocol) -> ListenerProtocol {
    match app {
        // Auto also takes HTTP/2 with prior knowledge, which peer proxies speak.
        AppProtocol::Http => ListenerProtocol::Auto,
        AppProtocol::Http2 => ListenerProtocol::Http2,
        AppProtocol::Grpc => ListenerProtocol::Grpc,
        AppProtocol::Tcp => ListenerProtocol::Tcp,
        AppProtocol::Tls => ListenerProtocol::Tls,
    }
}

fn or_default(namespace: &str) -> &str {
    or_default_to(namespace, DEFAULT_NAMESPACE)
}

fn or_default_to<'a>(namespace: &'a str, default: &'a str) -> &'a str {
    if namespace.is_empty() {
        default
    } else {
        namespace
    }
}
