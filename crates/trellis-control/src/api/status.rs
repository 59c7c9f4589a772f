//! The status the API shows, computed from the store on every read rather than stored,
//! so it can never be stale.
//!
//! - `Accepted=True` on every resource: only valid resources are ever written.
//! - `ResolvedRefs` on the kinds that refer to others (routes, `BackendPolicy`,
//!   `AuthorizationPolicy`): `True`
//!   when every object of [`Resource::references`] exists, else `False` with reason
//!   `BackendNotFound` and a message listing the missing ones. A Service also exists
//!   implicitly while some Workload in its namespace has the label `app=<name>`, as
//!   `trellis run` registers workloads before anyone declares their Service.

use std::collections::HashSet;

use trellis_api::{Condition, Kind, ObjectRef, Resource, Status};

/// The label by which a Workload implies a Service of that name.
pub const APP_LABEL: &str = "app";

/// The objects that exist, to resolve references against.
#[derive(Debug, Default)]
pub struct Existing {
    objects: HashSet<ObjectRef>,
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
        Self { objects }
    }

    /// Whether the object exists, declared or implied.
    pub fn contains(&self, object: &ObjectRef) -> bool {
        self.objects.contains(object)
    }

    /// The status of `resource` as of now.
    pub fn status_of(&self, resource: &Resource) -> Status {
        let generation = resource.metadata.generation;
        let mut accepted = Condition::accepted().observed_at(generation);
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
            let mut resolved = Condition::resolved_refs(&missing).observed_at(generation);
            // Computed, not observed: when it last changed is not known.
            resolved.last_transition_time = None;
            conditions.push(resolved);
        }
        Status { conditions }
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
            | Kind::BackendPolicy
            | Kind::AuthorizationPolicy
            | Kind::FaultInjection
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::{parse_documents, ConditionStatus};

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
    fn services_carry_only_accepted() {
        let svc = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
        let svc = parse_documents(svc).expect("valid").remove(0);
        let status = Existing::default().status_of(&svc);
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Accepted"]);
    }
}
