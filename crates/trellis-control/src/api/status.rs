//! The status the API shows, computed from the store on every read rather than stored,
//! so it can never be stale.
//!
//! - `Accepted=True` on every resource (only valid resources are ever written), except
//!   a route none of whose `parentRefs` takes effect: `Accepted=False` with reason
//!   `NoMatchingParent` when each names a port (or `sectionName`) its declared Service
//!   does not have, as the compiler attaches routes.
//! - `ResolvedRefs` on the kinds that refer to others (routes, `BackendPolicy`,
//!   `AuthorizationPolicy`, `FaultInjection`): `True` when every object of
//!   [`Resource::references`] exists, else `False` with a message listing the missing
//!   ones and reason `BackendNotFound` (routes) or `TargetNotFound` (policies). A
//!   Service also exists implicitly while some Workload in its namespace has the label
//!   `app=<name>`, as `trellis run` registers workloads before anyone declares their
//!   Service.

use std::collections::HashSet;

use std::collections::HashMap;

use trellis_api::route::ParentReference;
use trellis_api::service::ServicePort;
use trellis_api::{Condition, Kind, ObjectRef, Resource, Spec, Status};

use crate::compile::{external_host_key, ServiceKey};
use crate::vip::VipTable;

/// The label by which a Workload implies a Service of that name.
pub const APP_LABEL: &str = "app";

/// The objects that exist, to resolve references against.
#[derive(Debug, Default)]
pub struct Existing {
    objects: HashSet<ObjectRef>,
    /// Services' and external hosts' virtual IPs, shown in their status.
    vips: VipTable,
    /// The ports of each declared Service.
    declared_ports: HashMap<ObjectRef, Vec<ServicePort>>,
}

impl Existing {
    /// What exists given every stored resource (see [`super::storage::read_all`]).
    pub fn new(all: &[Resource]) -> Self {
        let mut objects: HashSet<ObjectRef> = all.iter().map(Resource::object_ref).collect();
        let implied = all
            .iter()
            .filter(|r| r.kind == Kind::Workload)
            .filter_map(|w| {
                let app = w.metadata.labels.get(APP_LABEL)?;
                Some(ObjectRef {
                    kind: Kind::Service,
                    namespace: w.metadata.namespace.clone(),
                    name: app.clone(),
                })
            });
        objects.extend(implied);
        let declared_ports = all
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Service(s) if !s.ports.is_empty() => Some((r.object_ref(), s.ports.clone())),
                _ => None,
            })
            .collect();
        Self {
            objects,
            vips: VipTable::new(),
            declared_ports,
        }
    }

    /// The same, with the Services' virtual IPs ([`crate::vip::read`]) to show.
    pub fn with_vips(mut self, vips: VipTable) -> Self {
        self.vips = vips;
        self
    }

    /// Why a parentRef takes no effect: it names a port or section its declared Service
    /// does not have. `None` when it takes effect, or its Service is undeclared (any
    /// port attaches) or missing (reported in `ResolvedRefs`).
    fn unmatched_parent(&self, parent: &ParentReference, route_ns: &str) -> Option<String> {
        let service = ObjectRef {
            kind: Kind::Service,
            namespace: parent
                .namespace
                .clone()
                .unwrap_or_else(|| route_ns.to_string()),
            name: parent.name.clone(),
        };
        let ports = self.declared_ports.get(&service)?;
        let matches = ports.iter().any(|declared| {
            parent.port.is_none_or(|p| p == declared.port)
                && parent
                    .section_name
                    .as_ref()
                    .is_none_or(|s| declared.name.as_ref() == Some(s))
        });
        if matches {
            return None;
        }
        let named = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("port {p} named {s:?}"),
            (Some(s), None) => format!("port named {s:?}"),
            (None, Some(p)) => format!("port {p}"),
            (None, None) => "port".to_string(),
        };
        Some(format!("{service} has no {named}"))
    }

    /// `Accepted` of a route: `False` when no parentRef takes effect.
    fn route_accepted(&self, resource: &Resource) -> Option<Condition> {
        let parents = match &resource.spec {
            Spec::HTTPRoute(s) => &s.parent_refs,
            Spec::GRPCRoute(s) => &s.parent_refs,
            Spec::TCPRoute(s) => &s.parent_refs,
            Spec::TLSRoute(s) => &s.parent_refs,
            _ => return None,
        };
        if parents.is_empty() {
            return None;
        }
        let ns = resource.metadata.namespace.as_str();
        let reasons: Vec<String> = parents
            .iter()
            .map(|p| self.unmatched_parent(p, ns))
            .collect::<Option<Vec<_>>>()?;
        Some(Condition::not_accepted(
            "NoMatchingParent",
            reasons.join("; "),
        ))
    }

    /// Whether the object exists, declared or implied.
    pub fn contains(&self, object: &ObjectRef) -> bool {
        self.objects.contains(object)
    }

    /// The status of `resource` as of now.
    pub fn status_of(&self, resource: &Resource) -> Status {
        let generation = resource.metadata.generation;
        let mut accepted = self
            .route_accepted(resource)
            .unwrap_or_else(Condition::accepted)
            .observed_at(generation);
        // It became accepted when it was created; every later version was valid too.
        accepted
            .last_transition_time
            .clone_from(&resource.metadata.creation_timestamp);
        let mut conditions = vec![accepted];
        if has_references(resource.kind) {
            let missing: Vec<ObjectRef> = resource
                .references()
                .into_iter()
                .filter(|r| !self.contains(r))
                .collect();
            let reason = match resource.kind {
                Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute => {
                    "BackendNotFound"
                }
                _ => "TargetNotFound",
            };
            let mut resolved =
                Condition::resolved_refs_because(&missing, reason).observed_at(generation);
            // Computed, not observed: when it last changed is not known.
            resolved.last_transition_time = None;
            conditions.push(resolved);
        }
        let virtual_ip = match resource.kind {
            Kind::Service => self
                .vips
                .get(&ServiceKey::new(
                    &resource.metadata.namespace,
                    &resource.metadata.name,
                ))
                .map(|ip| (*ip).into()),
            _ => None,
        };
        let virtual_ips = match &resource.spec {
            Spec::ExternalService(spec) => spec
                .hosts
                .iter()
                .filter_map(|h| {
                    let ip = self.vips.get(&external_host_key(h))?;
                    Some((h.clone(), (*ip).into()))
                })
                .collect(),
            _ => Default::default(),
        };
        Status {
            conditions,
            virtual_ip,
            virtual_ips,
        }
    }

    /// `resource` with its status filled in.
    pub fn with_status(&self, mut resource: Resource) -> Resource {
        resource.status = Some(self.status_of(&resource));
        resource
    }
}

/// Whether resources of `kind` refer to other objects, and so carry `ResolvedRefs`.
fn has_references(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HTTPRoute
            | Kind::GRPCRoute
            | Kind::TCPRoute
            | Kind::TLSRoute
            | Kind::BackendPolicy
            | Kind::AuthorizationPolicy
            | Kind::FaultInjection
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::{parse_documents, ConditionStatus};

    #[test]
    fn external_services_show_their_hosts_virtual_ips() {
        let all = parse_documents(
            "apiVersion: trellis.dev/v1alpha1\nkind: ExternalService\nmetadata: {name: pay, namespace: shop}\nspec: {hosts: [a.example, b.example], ports: [{port: 443}]}\n",
        )
        .expect("valid");
        let vips: VipTable = [(external_host_key("a.example"), [240, 240, 1, 1].into())].into();
        let status = Existing::new(&all).with_vips(vips).status_of(&all[0]);
        let shown: Vec<(String, String)> = status
            .virtual_ips
            .iter()
            .map(|(h, ip)| (h.clone(), ip.to_string()))
            .collect();
        // b.example has none yet.
        assert_eq!(
            shown,
            [("a.example".to_string(), "240.240.1.1".to_string())]
        );
        assert_eq!(status.virtual_ip, None);
    }

    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules: [{backendRefs: [{name: web-v1, port: 80}, {name: web-v2, port: 80}]}]
";

    fn resolved(route: &Resource, existing: &Existing) -> (ConditionStatus, String) {
        let status = existing.status_of(route);
        let c = status.condition("ResolvedRefs").expect("has ResolvedRefs");
        (c.status, c.message.clone())
    }

    #[test]
    fn resolves_declared_and_implied_services() {
        let route = parse_documents(ROUTE).expect("valid").remove(0);
        let service = |ns: &str, name: &str| {
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: 80}}]}}\n"
            )
        };
        let workload = |ns: &str, app: &str| {
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w-{app}, namespace: {ns}, labels: {{app: {app}}}}}\nspec: {{address: 127.0.0.1}}\n"
            )
        };
        // (other documents in the store, want status, want message)
        let cases = [
            (
                vec![],
                ConditionStatus::False,
                "not found: Service shop/web, Service shop/web-v1, Service shop/web-v2",
            ),
            (
                vec![
                    service("shop", "web"),
                    service("shop", "web-v1"),
                    service("other", "web-v2"),
                ],
                ConditionStatus::False,
                "not found: Service shop/web-v2",
            ),
            (
                vec![
                    workload("shop", "web"),
                    workload("shop", "web-v1"),
                    workload("shop", "web-v2"),
                ],
                ConditionStatus::True,
                "",
            ),
            (
                vec![
                    service("shop", "web"),
                    workload("shop", "web-v1"),
                    service("shop", "web-v2"),
                ],
                ConditionStatus::True,
                "",
            ),
        ];
        for (others, want, message) in cases {
            let mut all = vec![route.clone()];
            for doc in &others {
                all.extend(parse_documents(doc).expect("valid"));
            }
            let existing = Existing::new(&all);
            assert_eq!(
                resolved(&route, &existing),
                (want, message.to_string()),
                "{others:?}"
            );
            let accepted = existing.status_of(&route);
            let accepted = accepted.condition("Accepted").expect("has Accepted");
            assert_eq!(accepted.status, ConditionStatus::True);
        }
    }

    #[test]
    fn routes_whose_parents_name_ports_the_service_lacks_are_not_accepted() {
        let service = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: web}, ports: [{name: http, port: 80}, {name: admin, port: 9000}]}\n";
        let route = |parents: &str| {
            let doc = format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec: {{parentRefs: {parents}, rules: [{{backendRefs: [{{name: web}}]}}]}}\n"
            );
            parse_documents(&doc).expect("valid").remove(0)
        };
        let existing = Existing::new(&parse_documents(service).expect("valid"));
        // (parentRefs, Accepted, reason, message)
        let cases = [
            ("[{name: web}]", ConditionStatus::True, "Accepted", ""),
            (
                "[{name: web, port: 80}]",
                ConditionStatus::True,
                "Accepted",
                "",
            ),
            (
                "[{name: web, sectionName: http}]",
                ConditionStatus::True,
                "Accepted",
                "",
            ),
            (
                "[{name: web, port: 9000}]",
                ConditionStatus::True,
                "Accepted",
                "",
            ),
            (
                "[{name: web, port: 9001}]",
                ConditionStatus::False,
                "NoMatchingParent",
                "Service shop/web has no port 9001",
            ),
            (
                "[{name: web, sectionName: metrics}, {name: web, port: 80, sectionName: admin}]",
                ConditionStatus::False,
                "NoMatchingParent",
                "Service shop/web has no port named \"metrics\"; \
                 Service shop/web has no port 80 named \"admin\"",
            ),
            (
                "[{name: web, sectionName: admin}, {name: web, port: 80}]",
                ConditionStatus::True,
                "Accepted",
                "",
            ),
            // An undeclared Service takes any port.
            (
                "[{name: other, port: 1}]",
                ConditionStatus::True,
                "Accepted",
                "",
            ),
        ];
        for (parents, want, reason, message) in cases {
            let status = existing.status_of(&route(parents));
            let c = status.condition("Accepted").expect("has Accepted");
            assert_eq!(
                (c.status, c.reason.as_str(), c.message.as_str()),
                (want, reason, message),
                "{parents}"
            );
        }
    }

    #[test]
    fn policies_with_a_missing_target_say_so() {
        let fault = "apiVersion: trellis.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: f, namespace: shop}\nspec: {targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}, abort: {httpStatus: 503}}\n";
        let fault = parse_documents(fault).expect("valid").remove(0);
        let status = Existing::default().status_of(&fault);
        let c = status.condition("ResolvedRefs").expect("has ResolvedRefs");
        assert_eq!(
            (c.status, c.reason.as_str(), c.message.as_str()),
            (
                ConditionStatus::False,
                "TargetNotFound",
                "not found: HTTPRoute shop/r"
            )
        );
    }

    #[test]
    fn services_carry_only_accepted() {
        let svc = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
        let svc = parse_documents(svc).expect("valid").remove(0);
        let status = Existing::default().status_of(&svc);
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Accepted"]);
    }
}
