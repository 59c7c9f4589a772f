//! Reading the mesh's resources once into lookups by Service: which Services exist
//! (declared or implicit), their endpoints, the BackendPolicy that applies to each, the
//! AuthorizationPolicies that protect each, and the route rules attached to each as a
//! parent.
//!
//! Endpoints are found through an index of workloads by `(namespace, label, value)`, so
//! building costs about one pass over the workloads per label a selector names, not one
//! pass over every workload per Service.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use trellis_api::authz::AuthorizationPolicySpec;
use trellis_api::external::ExternalServiceSpec;
use trellis_api::meta::READY;
use trellis_api::policy::{
    BackendPolicySpec, BackendProtocol, EgressMode, LoadBalancerType, Locality, MeshConfigSpec,
    MtlsMode, ZoneFailover,
};
use trellis_api::proto::v1::{
    hash_on, AuthorizationAction, AuthorizationPolicy as WireAuthorizationPolicy,
    EgressMode as WireEgress, Endpoint, HashOn as WireHashOn, LoadBalancer, MtlsMode as WireMtls,
};
use trellis_api::resilience::ResilienceSpec;
use trellis_api::route::ParentReference;
use trellis_api::service::{AppProtocol, ServicePort, ServiceSpec, Unmatched, WorkloadSpec};
use trellis_api::{ConditionStatus, Kind, ObjectRef, Resource, Spec};

use super::authz;
use super::fault::{self, ScopedFault};
use super::names::Created;
use super::ratelimit;
use super::routes::{self, Candidate};
use super::{service_of, ServiceKey, APP_LABEL, DEFAULT_INBOUND_PORT};

/// A Service as the compiler sees it.
#[derive(Debug, Default)]
pub(super) struct ServiceEntry {
    /// Declared ports, in order; empty for an implicit Service, whose one port carries
    /// HTTP and is not known by number.
    pub ports: Vec<ServicePort>,
    /// `address:inboundPort` of every ready workload selected, sorted, weight 1.
    pub endpoints: Vec<Endpoint>,
    /// How many workloads it selects in each zone, ready or not: a zone's capacity,
    /// against which callers weigh how much of it is healthy.
    pub zone_sizes: BTreeMap<String, u32>,
    /// What a request its attached routes do not match gets.
    pub unmatched: Unmatched,
}

impl ServiceEntry {
    /// The port outbound traffic to the Service is for. A proxy's upstream names a
    /// Service, not a port, so the first declared port stands for the Service.
    pub fn primary_port(&self) -> Option<&ServicePort> {
        self.ports.first()
    }

    /// The protocol of the primary port; `http` for an implicit Service.
    pub fn protocol(&self) -> AppProtocol {
        self.primary_port()
            .map_or(AppProtocol::Http, |p| p.app_protocol)
    }

    /// The protocol of the port whose target is `app_port`, else of the primary port.
    pub fn protocol_for_app_port(&self, app_port: u32) -> AppProtocol {
        self.ports
            .iter()
            .find(|p| u32::from(p.workload_port()) == app_port)
            .map_or_else(|| self.protocol(), |p| p.app_protocol)
    }
}

/// The settings a BackendPolicy gives traffic to its Service, in the proxy's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Policy {
    pub load_balancer: LoadBalancer,
    /// With a consistent hash: what it keys on.
    pub hash_on: Option<WireHashOn>,
    /// With `locality: prefer-zone`: the share of a zone's endpoints (in percent) that
    /// must be healthy to keep all of a caller's traffic in its zone.
    pub prefer_zone: Option<u32>,
    pub connect_timeout_ms: Option<u64>,
    /// For routes to the Service that set no timeout; `None` is no limit.
    pub request_timeout_ms: Option<u64>,
    /// What the Service's application speaks, for its workloads' own proxies.
    pub protocol: Option<BackendProtocol>,
    /// Protection settings as the policy wrote them; `None`: the proxy's defaults.
    pub resilience: Option<ResilienceSpec>,
}

/// The rules attached to one Service, compiled, each list in precedence order.
#[derive(Debug, Default)]
pub(super) struct Attached {
    pub http: Vec<Candidate>,
    pub grpc: Vec<Candidate>,
    pub tcp: Vec<Candidate>,
    pub tls: Vec<Candidate>,
}

/// Everything the per-proxy compilation looks up.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub services: HashMap<ServiceKey, ServiceEntry>,
    pub policies: HashMap<ServiceKey, Policy>,
    /// Compiled AuthorizationPolicies by the Service they target, sorted by name.
    pub authorization: HashMap<ServiceKey, Vec<WireAuthorizationPolicy>>,
    /// Compiled RateLimitPolicies by the Service they target, sorted by name.
    pub rate_limits: HashMap<ServiceKey, Vec<ratelimit::ServiceLimit>>,
    pub attached: HashMap<ServiceKey, Attached>,
    pub mesh: MeshSettings,
    /// ExternalServices, sorted by namespace and name.
    pub external: Vec<(ServiceKey, ExternalServiceSpec)>,
    /// The virtual-IP keys of their hosts, sorted, each once.
    pub external_hosts: Vec<ServiceKey>,
    /// The first port of each workload written by a platform's source, by namespace
    /// and name: the application port of a proxy that declared none.
    pub workload_ports: HashMap<(String, String), u16>,
    /// Every ready workload with ports, sorted by its sidecar's address: what a
    /// transparent sidecar sends a call to that workload's own address to.
    pub workload_sidecars: Vec<WorkloadSidecar>,
}

/// A workload's applications and the sidecar in front of them.
#[derive(Debug)]
pub(super) struct WorkloadSidecar {
    /// `address:port` of each of its applications.
    pub apps: Vec<SocketAddr>,
    /// Its sidecar's inbound listener.
    pub inbound: SocketAddr,
    /// The SPIFFE ID its sidecar proves.
    pub identity: String,
}

/// What the MeshConfig decides for every proxy.
#[derive(Debug)]
pub(super) struct MeshSettings {
    pub trust_domain: String,
    /// The inbound listeners' mode.
    pub mtls: WireMtls,
    /// What requests no authorization policy decides get.
    pub default_authorization: AuthorizationAction,
    /// What captured connections to destinations outside the mesh get.
    pub egress: WireEgress,
    /// Mesh-wide tracing, for every sidecar.
    pub tracing: Option<trellis_api::policy::TracingSpec>,
    /// Which sidecars write access logs, and how.
    pub access_log: Option<trellis_api::policy::AccessLogConfig>,
    /// The sidecars' request series limit; 0 for their default.
    pub max_request_series: u32,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self::from_spec(&MeshConfigSpec::default())
    }
}

impl MeshSettings {
    fn from_spec(spec: &MeshConfigSpec) -> Self {
        Self {
            trust_domain: spec.trust_domain.clone(),
            mtls: match spec.mtls.mode {
                MtlsMode::Permissive => WireMtls::Permissive,
                MtlsMode::Strict => WireMtls::Strict,
            },
            default_authorization: authz::default_action(spec.default_authorization),
            egress: match spec.egress.mode {
                EgressMode::AllowAny => WireEgress::AllowAny,
                EgressMode::RegistryOnly => WireEgress::RegistryOnly,
            },
            tracing: spec.tracing.clone(),
            access_log: spec.access_log.clone(),
            max_request_series: spec.metrics.and_then(|m| m.max_request_series).unwrap_or(0),
        }
    }
}

/// The SPIFFE ID of a workload: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
pub fn workload_identity(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A workload as far as endpoint selection goes.
struct WorkloadRef<'a> {
    labels: &'a BTreeMap<String, String>,
    /// `None` when the workload is not ready and takes no traffic.
    endpoint: Option<SocketAddr>,
    /// The SPIFFE ID its proxy proves.
    identity: String,
    zone: &'a str,
}

impl Tables {
    /// Reads `resources`, which are unique by kind, namespace and name as in the store.
    pub fn build(resources: &[Resource]) -> Self {
        let mut declared: Vec<(ServiceKey, &ServiceSpec)> = Vec::new();
        let mut workloads: Vec<(&Resource, &WorkloadSpec)> = Vec::new();
        let mut policies: Vec<(&Resource, &BackendPolicySpec)> = Vec::new();
        let mut authorization: Vec<(&Resource, &AuthorizationPolicySpec)> = Vec::new();
        let mut route_resources: Vec<&Resource> = Vec::new();
        let mut mesh_configs: Vec<&Resource> = Vec::new();
        let mut faults = Vec::new();
        let mut rate_limits = Vec::new();
        let mut external = Vec::new();
        for r in resources {
            match &r.spec {
                Spec::Service(s) => declared.push((ServiceKey::of(r), s)),
                Spec::Workload(w) => workloads.push((r, w)),
                Spec::BackendPolicy(p) => policies.push((r, &**p)),
                Spec::AuthorizationPolicy(p) => authorization.push((r, p)),
                Spec::HTTPRoute(_) | Spec::GRPCRoute(_) | Spec::TCPRoute(_) | Spec::TLSRoute(_) => {
                    route_resources.push(r)
                }
                Spec::MeshConfig(_) => mesh_configs.push(r),
                Spec::FaultInjection(f) => faults.push((r, f)),
                Spec::RateLimitPolicy(p) => rate_limits.push((r, p)),
                Spec::ExternalService(e) => external.push((ServiceKey::of(r), e.clone())),
            }
        }
        // One MeshConfig is expected; with several, the oldest (then first by name)
        // speaks, as for conflicting policies.
        mesh_configs.sort_by_key(|r| {
            (
                Created::parse(r.metadata.creation_timestamp.as_deref()),
                r.metadata.name.as_str(),
            )
        });
        let mesh = mesh_configs
            .first()
            .and_then(|r| match &r.spec {
                Spec::MeshConfig(m) => Some(MeshSettings::from_spec(m)),
                _ => None,
            })
            .unwrap_or_default();

        external.sort_by(|a, b| a.0.cmp(&b.0));
        let mut external_hosts: Vec<ServiceKey> = external
            .iter()
            .flat_map(|(_, e)| e.hosts.iter().map(|h| super::external_host_key(h)))
            .collect();
        external_hosts.sort();
        external_hosts.dedup();
        let workload_ports = workloads
            .iter()
            .filter_map(|(r, w)| {
                let port = w.ports.first()?.port;
                Some((
                    (r.metadata.namespace.clone(), r.metadata.name.clone()),
                    port,
                ))
            })
            .collect();
        let mut tables = Tables {
            workload_ports,
            external,
            external_hosts,
            services: services(&declared, &workloads, &mesh.trust_domain),
            workload_sidecars: workload_sidecars(&workloads, &mesh.trust_domain),
            policies: HashMap::new(),
            authorization: authz::by_service(&authorization),
            rate_limits: ratelimit::by_service(&rate_limits),
            attached: HashMap::new(),
            mesh,
        };
        tables.policies = pick_policies(&policies);
        tables.attach_routes(&route_resources, &fault::by_route(&faults));
        tables
    }

    /// Compiles every route resource into candidates under each Service it attaches to.
    fn attach_routes(
        &mut self,
        route_resources: &[&Resource],
        faults: &HashMap<ObjectRef, ScopedFault>,
    ) {
        for r in route_resources {
            let ns = r.metadata.namespace.as_str();
            let parents: &[ParentReference] = match &r.spec {
                Spec::HTTPRoute(s) => &s.parent_refs,
                Spec::GRPCRoute(s) => &s.parent_refs,
                Spec::TCPRoute(s) => &s.parent_refs,
                Spec::TLSRoute(s) => &s.parent_refs,
                _ => continue,
            };
            let mut keys: Vec<(ServiceKey, Option<u16>)> = parents
                .iter()
                .filter_map(|p| {
                    let port = self.parent_port(p, ns)?;
                    let key = ServiceKey::new(p.namespace.as_deref().unwrap_or(ns), &p.name);
                    Some((key, port))
                })
                .collect();
            // A route naming one Service twice attaches once per port; once to the
            // whole Service when one parentRef names no port.
            keys.sort();
            keys.dedup();
            let whole: Vec<ServiceKey> = keys
                .iter()
                .filter(|(_, port)| port.is_none())
                .map(|(key, _)| key.clone())
                .collect();
            keys.retain(|(key, port)| port.is_none() || !whole.contains(key));
            let fault = faults.get(&r.object_ref());
            for (parent, port) in keys {
                let timeout = self
                    .policies
                    .get(&parent)
                    .and_then(|p| p.request_timeout_ms);
                let attached = self.attached.entry(parent.clone()).or_default();
                let (list, mut candidates) = match &r.spec {
                    Spec::HTTPRoute(s) => {
                        (&mut attached.http, routes::http(r, s, &parent, timeout))
                    }
                    Spec::GRPCRoute(s) => {
                        (&mut attached.grpc, routes::grpc(r, s, &parent, timeout))
                    }
                    Spec::TCPRoute(s) => (&mut attached.tcp, routes::tcp(r, s, &parent)),
                    Spec::TLSRoute(s) => (&mut attached.tls, routes::tls(r, s, &parent)),
                    _ => continue,
                };
                for c in &mut candidates {
                    c.fault = fault.cloned();
                    c.port = port;
                }
                list.extend(candidates);
            }
        }
        for attached in self.attached.values_mut() {
            for list in [
                &mut attached.http,
                &mut attached.grpc,
                &mut attached.tcp,
                &mut attached.tls,
            ] {
                list.sort_by(|a, b| a.order.cmp(&b.order));
            }
        }
    }

    /// The Service port a parentRef attaches to: `Some(None)` for every port (no
    /// `port` or `sectionName`, or a Service whose port numbers are not known: an
    /// implicit or undeclared one), `Some(Some(port))` for one port, `None` when it
    /// names a port the Service does not have.
    fn parent_port(&self, parent: &ParentReference, route_ns: &str) -> Option<Option<u16>> {
        if parent.port.is_none() && parent.section_name.is_none() {
            return Some(None);
        }
        let key = ServiceKey::new(
            parent.namespace.as_deref().unwrap_or(route_ns),
            &parent.name,
        );
        let ports = match self.services.get(&key) {
            Some(entry) if !entry.ports.is_empty() => &entry.ports,
            _ => return Some(None),
        };
        ports
            .iter()
            .find(|port| {
                parent.port.is_none_or(|p| p == port.port)
                    && parent
                        .section_name
                        .as_ref()
                        .is_none_or(|s| port.name.as_ref() == Some(s))
            })
            .map(|port| Some(port.port))
    }
}

/// Declared Services, plus an implicit one (`app=<name>`, one HTTP port) for every
/// workload's `app` label that no declared Service in its namespace is named after;
/// each with its endpoints.
fn services(
    declared: &[(ServiceKey, &ServiceSpec)],
    workloads: &[(&Resource, &WorkloadSpec)],
    trust_domain: &str,
) -> HashMap<ServiceKey, ServiceEntry> {
    let refs: Vec<WorkloadRef<'_>> = workloads
        .iter()
        .map(|(r, w)| WorkloadRef {
            labels: &r.metadata.labels,
            // A workload whose application listens on no port only makes calls.
            endpoint: (is_ready(r) && !w.ports.is_empty()).then(|| {
                SocketAddr::new(w.address, w.inbound_port.unwrap_or(DEFAULT_INBOUND_PORT))
            }),
            identity: workload_identity(trust_domain, &r.metadata.namespace, &w.service_account),
            zone: w.zone.as_deref().unwrap_or_default(),
        })
        .collect();
    // (namespace, label, value) → workloads, to start each selector from its rarest
    // label instead of scanning every workload.
    let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (i, (r, _)) in workloads.iter().enumerate() {
        let ns = r.metadata.namespace.as_str();
        for (k, v) in &r.metadata.labels {
            by_label.entry((ns, k, v)).or_default().push(i);
        }
    }

    // Each Service as declared; an implicit one selects its name's `app` label.
    let mut specs: HashMap<ServiceKey, ServiceSpec> = HashMap::new();
    for (key, spec) in declared {
        specs.entry(key.clone()).or_insert_with(|| (*spec).clone());
    }
    for (r, _) in workloads {
        if let Some(key) = service_of(r) {
            specs.entry(key).or_insert_with_key(|key| ServiceSpec {
                selector: BTreeMap::from([(APP_LABEL.to_string(), key.name.clone())]),
                ..ServiceSpec::default()
            });
        }
    }

    specs
        .into_iter()
        .map(|(key, spec)| {
            let selected = endpoints(&key.namespace, &spec.selector, &refs, &by_label);
            let entry = ServiceEntry {
                ports: spec.ports,
                endpoints: selected.endpoints,
                zone_sizes: selected.zone_sizes,
                unmatched: spec.unmatched,
            };
            (key, entry)
        })
        .collect()
}

/// The sidecars of the ready workloads that have ports, sorted by address; of two
/// workloads claiming one address, the first by namespace and name keeps it.
fn workload_sidecars(
    workloads: &[(&Resource, &WorkloadSpec)],
    trust_domain: &str,
) -> Vec<WorkloadSidecar> {
    let mut sidecars: Vec<(SocketAddr, &str, &str, WorkloadSidecar)> = workloads
        .iter()
        .filter(|(r, w)| is_ready(r) && !w.ports.is_empty())
        .map(|(r, w)| {
            let inbound =
                SocketAddr::new(w.address, w.inbound_port.unwrap_or(DEFAULT_INBOUND_PORT));
            let m = &r.metadata;
            let sidecar = WorkloadSidecar {
                apps: w
                    .ports
                    .iter()
                    .map(|p| SocketAddr::new(w.address, p.port))
                    .collect(),
                inbound,
                identity: workload_identity(trust_domain, &m.namespace, &w.service_account),
            };
            (inbound, m.namespace.as_str(), m.name.as_str(), sidecar)
        })
        .collect();
    sidecars.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    sidecars.dedup_by_key(|s| s.0);
    sidecars.into_iter().map(|(_, _, _, s)| s).collect()
}

/// What a Service's selector picks out.
#[derive(Default)]
struct Selected {
    endpoints: Vec<Endpoint>,
    zone_sizes: BTreeMap<String, u32>,
}

/// The endpoints of the ready workloads in `namespace` whose labels include `selector`,
/// their applications' addresses, and how many workloads (ready or not) each zone has.
fn endpoints(
    namespace: &str,
    selector: &BTreeMap<String, String>,
    workloads: &[WorkloadRef<'_>],
    by_label: &HashMap<(&str, &str, &str), Vec<usize>>,
) -> Selected {
    // An empty selector is refused on apply; selecting nothing is the safe reading.
    let rarest = selector
        .iter()
        .map(|(k, v)| {
            by_label
                .get(&(namespace, k.as_str(), v.as_str()))
                .map_or(&[][..], Vec::as_slice)
        })
        .min_by_key(|list| list.len());
    let Some(candidates) = rarest else {
        return Selected::default();
    };
    let mut zone_sizes = BTreeMap::new();
    let mut selected: Vec<(SocketAddr, &str, &str)> = candidates
        .iter()
        .filter_map(|&i| {
            let w = &workloads[i];
            if !selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
                return None;
            }
            if !w.zone.is_empty() {
                *zone_sizes.entry(w.zone.to_string()).or_insert(0) += 1;
            }
            let endpoint = w.endpoint?;
            Some((endpoint, w.identity.as_str(), w.zone))
        })
        .collect();
    selected.sort();
    // Two workloads claiming one address: the first identity (in order) keeps it.
    selected.dedup_by_key(|(a, _, _)| *a);
    let endpoints = selected
        .into_iter()
        .map(|(a, identity, zone)| Endpoint {
            address: a.to_string(),
            weight: 1,
            identity: identity.to_string(),
            zone: zone.to_string(),
            hostname: String::new(),
        })
        .collect();
    Selected {
        endpoints,
        zone_sizes,
    }
}

/// A workload takes traffic unless its `Ready` condition is `False`: one just
/// registered, whose health is not known yet, is tried.
fn is_ready(workload: &Resource) -> bool {
    workload
        .status
        .as_ref()
        .and_then(|s| s.condition(READY))
        .is_none_or(|c| c.status != ConditionStatus::False)
}

/// The policy for each Service. When several BackendPolicies target one Service the
/// oldest wins, then the first by name, as the Gateway API resolves policy conflicts.
fn pick_policies(policies: &[(&Resource, &BackendPolicySpec)]) -> HashMap<ServiceKey, Policy> {
    let mut winners: HashMap<ServiceKey, (Created, &str, &BackendPolicySpec)> = HashMap::new();
    for (r, spec) in policies {
        if Kind::from_name(&spec.target_ref.kind) != Some(Kind::Service) {
            continue;
        }
        let key = ServiceKey::new(&r.metadata.namespace, &spec.target_ref.name);
        let rank = (
            Created::parse(r.metadata.creation_timestamp.as_deref()),
            r.metadata.name.as_str(),
        );
        let better = winners
            .get(&key)
            .is_none_or(|(created, name, _)| rank < (*created, *name));
        if better {
            winners.insert(key, (rank.0, rank.1, spec));
        }
    }
    winners
        .into_iter()
        .map(|(key, (_, _, spec))| {
            let lb = spec.load_balancer.as_ref();
            let load_balancer = match lb.map(|lb| lb.type_).unwrap_or_default() {
                LoadBalancerType::Ewma => LoadBalancer::Ewma,
                LoadBalancerType::RoundRobin => LoadBalancer::RoundRobin,
                LoadBalancerType::LeastRequest => LoadBalancer::LeastRequest,
                LoadBalancerType::ConsistentHash => LoadBalancer::ConsistentHash,
            };
            let hash_on = lb.and_then(|lb| lb.hash_on.as_ref()).and_then(|h| {
                let key = match (&h.header, &h.cookie, h.source_identity) {
                    (Some(name), _, _) => hash_on::Key::Header(name.to_ascii_lowercase()),
                    (None, Some(name), _) => hash_on::Key::Cookie(name.clone()),
                    (None, None, Some(true)) => hash_on::Key::SourceIdentity(true),
                    (None, None, _) => return None,
                };
                Some(WireHashOn { key: Some(key) })
            });
            let policy = Policy {
                load_balancer,
                hash_on,
                prefer_zone: (spec.locality == Some(Locality::PreferZone)).then(|| {
                    spec.zone_failover
                        .and_then(|f| f.min_healthy_percent)
                        .unwrap_or(ZoneFailover::DEFAULT_MIN_HEALTHY_PERCENT)
                }),
                // Validation refuses 0s; a 0 that got through is left to the proxy's
                // default rather than sent as an invalid value.
                connect_timeout_ms: spec.connect_timeout.map(millis).filter(|ms| *ms > 0),
                request_timeout_ms: spec.request_timeout.and_then(timeout_ms),
                protocol: spec.protocol,
                resilience: Some(spec.resilience()).filter(|r| *r != ResilienceSpec::default()),
            };
            (key, policy)
        })
        .collect()
}

/// Whole milliseconds, saturating.
pub(super) fn millis(d: trellis_api::Duration) -> u64 {
    u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)
}

/// A Gateway API timeout in the proxy's terms: `0s` means no limit.
pub(super) fn timeout_ms(d: trellis_api::Duration) -> Option<u64> {
    (!d.is_zero()).then(|| millis(d).max(1))
}
