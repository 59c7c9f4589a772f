//! Cluster objects into the mesh's resources: a pure function of what the watches hold.
//!
//! - a core **Service** with a selector becomes a Trellis `Service` (selector, ports,
//!   `appProtocol` from the port's `appProtocol` or its name's prefix, and
//!   `unmatched: notFound`, as GAMMA routes a request no route matches), and its
//!   ClusterIP the Service's virtual IP;
//! - a **Pod** that carries the Trellis sidecar, has an IP and is ready becomes a
//!   `Workload` at that IP, with the Pod's labels, ServiceAccount and zone, reached on
//!   the sidecar's inbound port. Readiness is the EndpointSlices' word when a slice
//!   names the Pod (`ready`; a terminating endpoint is not), else the Pod's `Ready`
//!   condition; a Pod that is not ready is left out, so it leaves every endpoint list;
//! - a Gateway API **route** (HTTPRoute, GRPCRoute, TCPRoute, TLSRoute) and each
//!   `trellis.dev` kind are read as the same document `trellis apply` takes; one that
//!   Trellis cannot read is reported, not dropped silently ([`Translated::refused`]);
//!   a route's backend in another namespace needs a ReferenceGrant there
//!   ([`super::grants`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};
use trellis_api::meta::ObjectMeta;
use trellis_api::service::{
    AppProtocol, ServicePort, ServiceSpec, Unmatched, WorkloadPort, WorkloadSpec,
};
use trellis_api::{Kind, ObjectRef, Resource, Spec};

use super::grants;
use super::selection::{self, Selection};

/// The name of the injected sidecar container.
pub const SIDECAR_CONTAINER: &str = "trellis-proxy";
/// The sidecar's inbound port: where other proxies reach a Pod's applications (the
/// port `trellis iptables install` sends a Pod's inbound TCP to).
pub const INBOUND_PORT: u16 = trellis_control::compile::DEFAULT_INBOUND_PORT;
/// The standard zone label Kubernetes puts on Nodes, copied to EndpointSlices.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the cluster holds, as the watches last saw it.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub services: Vec<Service>,
    pub pods: Vec<Pod>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Gateway API routes and `trellis.dev` objects, with their kind.
    pub documents: Vec<(Kind, DynamicObject)>,
    /// Gateway API ReferenceGrants ([`super::grants`]).
    pub reference_grants: Vec<DynamicObject>,
}

/// The mesh's resources made from a [`ClusterState`].
#[derive(Debug, Default)]
pub struct Translated {
    pub resources: Vec<Resource>,
    /// Each non-headless Service's ClusterIP.
    pub virtual_ips: Vec<(ObjectRef, IpAddr)>,
    /// Objects Trellis could not read, and why (for their status).
    pub refused: Vec<(ObjectRef, String)>,
    /// Routes with backends in other namespaces no ReferenceGrant permits, and which
    /// (`namespace/name`).
    pub not_permitted: Vec<(ObjectRef, Vec<String>)>,
}

/// Translates everything at once.
pub fn translate(state: &ClusterState) -> Translated {
    let mut out = Translated::default();
    let selection = Selection::new(&state.services, &state.pods);
    for service in &state.services {
        if let Some(resource) = service_resource(service, &selection) {
            if let Some(ip) = cluster_ip(service) {
                out.virtual_ips.push((resource.object_ref(), ip));
            }
            out.resources.push(resource);
        }
    }
    let readiness = endpoint_readiness(&state.endpoint_slices);
    for pod in &state.pods {
        if let Some(mut resource) = workload_resource(pod, &readiness) {
            if let Spec::Workload(workload) = &mut resource.spec {
                add_service_target_ports(workload, pod, &selection);
            }
            out.resources.push(resource);
        }
    }
    for (kind, object) in &state.documents {
        let object_ref = ObjectRef {
            kind: *kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        };
        let mut gated = object.clone();
        if let Some(spec) = gated.data.get_mut("spec") {
            let refused = grants::gate(spec, *kind, &object_ref.namespace, &state.reference_grants);
            if !refused.is_empty() {
                out.not_permitted.push((object_ref.clone(), refused));
            }
        }
        match document_resource(*kind, &gated) {
            Ok(resource) => out.resources.push(resource),
            Err(why) => out.refused.push((object_ref, why)),
        }
    }
    out
}

/// A Service's ports and selector as Trellis reads them; `None` without a selector
/// (its endpoints are managed by hand, which the mesh does not follow yet). A named
/// `targetPort` is resolved through the Pods it selects ([`named_target_port`]).
pub fn service_resource(service: &Service, selection: &Selection<'_>) -> Option<Resource> {
    let spec = service.spec.as_ref()?;
    let selector = selection::selector(service)?.clone();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target_port = match &p.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(name)) => {
                    named_target_port(name, selection.pods_of(service))
                }
                None => None,
            };
            Some(ServicePort {
                name: p.name.clone(),
                port,
                target_port,
                app_protocol: app_protocol(p.app_protocol.as_deref(), p.name.as_deref()),
            })
        })
        .collect();
    let mut metadata = meta_of(&service.metadata);
    metadata.annotations.clear();
    let spec = ServiceSpec {
        selector: selector.into_iter().collect(),
        ports,
        // A Service's routes are GAMMA's here: what they do not match gets 404.
        unmatched: Unmatched::NotFound,
    };
    Some(Resource::new(metadata, Spec::Service(spec)))
}

/// The number a named `targetPort` stands for: the container port of that name on the
/// Service's Pods. Kubernetes resolves it per Pod; the mesh has one target port per
/// Service port, so it takes the number most Pods give (the smaller on a tie, as
/// during a rollout that renumbers the port), and the Service port while no Pod names
/// it.
fn named_target_port<'a>(name: &str, selected: impl Iterator<Item = &'a Pod>) -> Option<u16> {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for pod in selected {
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        let number = containers
            .filter(|c| c.name != SIDECAR_CONTAINER)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok());
        if let Some(number) = number {
            *counts.entry(number).or_default() += 1;
        }
    }
    let most = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, count)| *count == most)
        .map(|(port, _)| port)
}

/// The protocol of a Service port: its `appProtocol` (`http`, `kubernetes.io/h2c`,
/// `grpc`, `tcp`, `tls`, …), else the prefix of its name (`http-web`, `grpc`, `tcp-db`),
/// else HTTP, which the sidecar tells from other traffic by looking.
pub fn app_protocol(app_protocol: Option<&str>, name: Option<&str>) -> AppProtocol {
    let word = |s: &str| match s.to_ascii_lowercase().as_str() {
        "http" | "https" | "kubernetes.io/http" => Some(AppProtocol::Http),
        "http2" | "h2c" | "kubernetes.io/h2c" => Some(AppProtocol::Http2),
        "grpc" | "grpc-web" => Some(AppProtocol::Grpc),
        "tcp" | "mysql" | "redis" | "mongo" | "postgres" | "kubernetes.io/ws" => {
            Some(AppProtocol::Tcp)
        }
        "tls" | "kubernetes.io/wss" => Some(AppProtocol::Tls),
        _ => None,
    };
    app_protocol
        .and_then(word)
        .or_else(|| name.and_then(|n| word(n.split('-').next().unwrap_or(n))))
        .unwrap_or_default()
}

fn cluster_ip(service: &Service) -> Option<IpAddr> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    ip.parse().ok()
}

/// Per Pod (`namespace/name`): whether the EndpointSlices call it ready, and its zone.
fn endpoint_readiness(slices: &[EndpointSlice]) -> HashMap<String, (bool, Option<String>)> {
    let mut readiness = HashMap::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(target) = &endpoint.target_ref else {
                continue;
            };
            if target.kind.as_deref() != Some("Pod") {
                continue;
            }
            let namespace = target
                .namespace
                .clone()
                .or_else(|| slice.metadata.namespace.clone())
                .unwrap_or_default();
            let key = format!("{namespace}/{}", target.name.as_deref().unwrap_or(""));
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false);
            let entry = readiness.entry(key).or_insert((true, None));
            entry.0 &= ready;
            if endpoint.zone.is_some() {
                entry.1 = endpoint.zone.clone();
            }
        }
    }
    readiness
}

/// Whether the Pod runs the Trellis sidecar (a native sidecar or a plain container).
pub fn has_sidecar(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let named = |c: &k8s_openapi::api::core::v1::Container| c.name == SIDECAR_CONTAINER;
    spec.containers.iter().any(named) || spec.init_containers.iter().flatten().any(named)
}

/// The Workload of a meshed, ready Pod.
pub fn workload_resource(
    pod: &Pod,
    readiness: &HashMap<String, (bool, Option<String>)>,
) -> Option<Resource> {
    if !has_sidecar(pod) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let address: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let (ready, zone) = match readiness.get(&format!("{namespace}/{name}")) {
        Some((ready, zone)) => (*ready, zone.clone()),
        None => (pod_condition(pod, "Ready"), None),
    };
    if !ready {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let ports = spec
        .containers
        .iter()
        .filter(|c| c.name != SIDECAR_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some(WorkloadPort {
                name: p.name.clone(),
                port: u16::try_from(p.container_port).ok()?,
                app_protocol: None,
            })
        })
        .fold(Vec::<WorkloadPort>::new(), |mut ports, p| {
            if !ports.iter().any(|q| q.port == p.port) {
                ports.push(p);
            }
            ports
        });
    let mut metadata = meta_of(&pod.metadata);
    metadata.annotations.clear();
    let workload = WorkloadSpec {
        address,
        ports,
        inbound_port: Some(INBOUND_PORT),
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        zone: zone.or_else(|| metadata.labels.get(ZONE_LABEL).cloned()),
        proxy_version: None,
    };
    Some(Resource::new(metadata, Spec::Workload(workload)))
}

/// Adds to a Pod's workload the numeric `targetPort` of every Service of its namespace
/// that selects it. Declaring `containerPort`s is optional in Kubernetes (the Gateway
/// API's conformance echo Pods declare none), and a Service reaches a Pod on its
/// `targetPort` whether or not the Pod declares it, so the mesh does too.
fn add_service_target_ports(workload: &mut WorkloadSpec, pod: &Pod, selection: &Selection<'_>) {
    let target_ports = selection
        .services_of(pod)
        .flat_map(|service| service.spec.iter().flat_map(|s| s.ports.iter().flatten()))
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                u16::try_from(*n).ok()
            }
            _ => None,
        });
    for port in target_ports {
        if !workload.ports.iter().any(|p| p.port == port) {
            workload.ports.push(WorkloadPort {
                name: None,
                port,
                app_protocol: None,
            });
        }
    }
}

fn pod_condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
        .is_some_and(|c| c.status == "True")
}

/// A Gateway API route or `trellis.dev` object read as the document `trellis apply`
/// takes: the same `spec`, with the metadata Trellis keeps.
pub fn document_resource(kind: Kind, object: &DynamicObject) -> Result<Resource, String> {
    let mut metadata = meta_of(&object.metadata);
    // Annotations are the user's; only ours would matter, and Kubernetes adds large ones
    // (kubectl's last-applied configuration).
    metadata
        .annotations
        .retain(|k, _| k.starts_with(trellis_api::kind::TRELLIS_GROUP));
    let spec = object.data.get("spec").cloned().unwrap_or(json!({}));
    let value = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.name(),
        "metadata": metadata_value(&metadata),
        "spec": spec,
    });
    let resource = Resource::from_value(value).map_err(|e| e.to_string())?;
    resource.validate().map_err(|e| e.to_string())?;
    let mut resource = resource;
    resource.metadata = metadata;
    Ok(resource)
}

fn metadata_value(meta: &ObjectMeta) -> Value {
    let mut value = json!({ "name": meta.name });
    if !meta.namespace.is_empty() {
        value["namespace"] = json!(meta.namespace);
    }
    if !meta.labels.is_empty() {
        value["labels"] = json!(meta.labels);
    }
    if !meta.annotations.is_empty() {
        value["annotations"] = json!(meta.annotations);
    }
    value
}

/// The metadata Trellis keeps of a Kubernetes object: name, namespace, labels,
/// annotations, generation and creation time (routes' precedence ties go to the oldest).
fn meta_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectMeta {
    let mut out = ObjectMeta::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    out.labels = meta
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    out.annotations = meta
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    out.generation = meta.generation.and_then(|g| u64::try_from(g).ok());
    out.creation_timestamp = meta.creation_timestamp.as_ref().map(|t| t.0.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(target_port: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "books", "namespace": "shop"},
            "spec": {"selector": {"app": "books"},
                     "ports": [{"name": "http", "port": 9080, "targetPort": target_port}]}
        }))
        .expect("a Service")
    }

    fn pod(namespace: &str, app: &str, port_name: &str, port: u16) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{app}-{port}"), "namespace": namespace,
                         "labels": {"app": app}},
            "spec": {"containers": [
                {"name": SIDECAR_CONTAINER, "ports": [{"name": port_name, "containerPort": 15020}]},
                {"name": "app", "ports": [{"name": port_name, "containerPort": port}]}
            ]}
        }))
        .expect("a Pod")
    }

    fn target_port(service: &Service, pods: &[Pod]) -> Option<u16> {
        let selection = Selection::new(std::slice::from_ref(service), pods);
        let resource = service_resource(service, &selection).expect("a Service");
        let Spec::Service(spec) = resource.spec else {
            panic!("not a Service: {resource:?}");
        };
        spec.ports[0].target_port
    }

    #[test]
    fn a_services_routes_answer_what_they_do_not_match_with_404_as_gamma_says() {
        let service = service(json!(8080));
        let selection = Selection::new(std::slice::from_ref(&service), &[]);
        let resource = service_resource(&service, &selection).expect("a Service");
        let Spec::Service(spec) = resource.spec else {
            panic!("not a Service: {resource:?}");
        };
        assert_eq!(spec.unmatched, Unmatched::NotFound);
    }

    #[test]
    fn a_named_target_port_is_the_number_the_services_pods_give_it() {
        let named = service(json!("web"));
        assert_eq!(target_port(&service(json!(8080)), &[]), Some(8080));
        // No Pod names it yet: the Service port stands.
        assert_eq!(target_port(&named, &[]), None);
        let pods = [
            pod("shop", "books", "web", 8080),
            pod("shop", "books", "web", 8080),
            pod("shop", "books", "web", 8081),
            // Not the Service's: another namespace, another app.
            pod("other", "books", "web", 7000),
            pod("other", "books", "web", 7000),
            pod("shop", "ratings", "web", 7000),
            pod("shop", "ratings", "web", 7000),
        ];
        assert_eq!(target_port(&named, &pods), Some(8080));
        // A rollout half way: the smaller number on a tie. The sidecar's own port of
        // the same name is never taken.
        assert_eq!(
            target_port(
                &named,
                &[
                    pod("shop", "books", "web", 8081),
                    pod("shop", "books", "web", 8080)
                ]
            ),
            Some(8080)
        );
        assert_eq!(
            target_port(&service(json!("admin")), &pods),
            None,
            "no container port is named admin"
        );
    }

    fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("a valid object")
    }

    #[test]
    fn a_pod_declaring_no_ports_is_reached_on_its_services_target_ports() {
        let pod: Pod = object(json!({
            "metadata": {"name": "echo-1", "namespace": "shop", "labels": {"app": "echo"}},
            "spec": {"containers": [{"name": "echo"}, {"name": SIDECAR_CONTAINER}]},
            "status": {"podIP": "10.244.0.9", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let service = |name: &str, namespace: &str, selector: Value, ports: Value| -> Service {
            object(json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"selector": selector, "ports": ports}
            }))
        };
        let state = ClusterState {
            services: vec![
                service(
                    "echo",
                    "shop",
                    json!({"app": "echo"}),
                    json!([{"port": 80, "targetPort": 8080}, {"port": 7070, "targetPort": 7070},
                           {"port": 53, "targetPort": 5353, "protocol": "UDP"}]),
                ),
                // Another namespace, another selector, a named port: none of them count.
                service(
                    "echo",
                    "other",
                    json!({"app": "echo"}),
                    json!([{"port": 1, "targetPort": 1111}]),
                ),
                service(
                    "web",
                    "shop",
                    json!({"app": "web"}),
                    json!([{"port": 2, "targetPort": 2222}]),
                ),
                service(
                    "named",
                    "shop",
                    json!({"app": "echo"}),
                    json!([{"port": 3, "targetPort": "http"}]),
                ),
            ],
            pods: vec![pod],
            ..ClusterState::default()
        };
        let translated = translate(&state);
        let ports: Vec<u16> = translated
            .resources
            .iter()
            .find_map(|r| match &r.spec {
                Spec::Workload(w) => Some(w.ports.iter().map(|p| p.port).collect()),
                _ => None,
            })
            .expect("the Pod's workload");
        assert_eq!(ports, vec![8080, 7070]);
    }
}
