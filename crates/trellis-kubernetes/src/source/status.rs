//! Status written back to the cluster, under Trellis's controller name: for a Gateway
//! API route, its entry in `status.parents` per parent Service (other controllers'
//! entries are kept as they are); for a `trellis.dev` object, its conditions in
//! `status.conditions` (conditions of other types are kept as they are).
//!
//! The conditions are those `trellis describe` shows ([`Existing::status_of`]):
//! `Accepted` and `ResolvedRefs` with the Gateway API's reasons and the object's
//! `observedGeneration`. An object Trellis cannot read is `Accepted=False` with reason
//! `UnsupportedValue` and the parse error as its message. Only a status that changed
//! is written.

use std::collections::{HashMap, HashSet};

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use trellis_api::meta::{Condition, ConditionStatus};
use trellis_api::{Kind, ObjectRef, Resource};
use trellis_control::api::status::Existing;

use super::api_resource;
use super::translate::{ClusterState, Translated};

/// The controller name in the routes' `status.parents`.
pub const CONTROLLER_NAME: &str = "trellis.dev/mesh";

/// Writes the objects' status, remembering what it wrote.
pub struct StatusWriter {
    client: Client,
    written: HashMap<ObjectRef, Value>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
        }
    }

    /// Forgets what it wrote: another replica writes status now, and this one rewrites
    /// everything if it leads again.
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Writes the status of every route and `trellis.dev` object of `state` whose
    /// status changed.
    pub async fn write(&mut self, state: &ClusterState, translated: &Translated) {
        let existing = Existing::new(&translated.resources);
        let by_ref: HashMap<ObjectRef, &Resource> = translated
            .resources
            .iter()
            .map(|r| (r.object_ref(), r))
            .collect();
        let refused: HashMap<&ObjectRef, &String> =
            translated.refused.iter().map(|(o, why)| (o, why)).collect();
        let not_permitted: HashMap<&ObjectRef, &Vec<String>> = translated
            .not_permitted
            .iter()
            .map(|(o, refs)| (o, refs))
            .collect();
        let mut seen = HashSet::new();
        for (kind, object) in &state.documents {
            let object_ref = ObjectRef {
                kind: *kind,
                namespace: object.namespace().unwrap_or_default(),
                name: object.name_any(),
            };
            let generation = object
                .metadata
                .generation
                .and_then(|g| u64::try_from(g).ok());
            let conditions = match (by_ref.get(&object_ref), refused.get(&object_ref)) {
                (Some(resource), _) => {
                    let mut conditions = existing.status_of(resource).conditions;
                    if let Some(refs) = not_permitted.get(&object_ref) {
                        refuse_references(&mut conditions, refs);
                    }
                    conditions
                }
                (None, Some(why)) => {
                    vec![Condition::not_accepted("UnsupportedValue", why.as_str())
                        .observed_at(generation)]
                }
                (None, None) => continue,
            };
            let since = object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(trellis_control::registry::now_rfc3339);
            let status = status_value(*kind, object, &conditions, &since);
            seen.insert(object_ref.clone());
            if self.written.get(&object_ref) == Some(&status) {
                continue;
            }
            match self.patch(*kind, object, &status).await {
                Ok(()) => {
                    self.written.insert(object_ref, status);
                }
                Err(e) => tracing::warn!(
                    kind = kind.name(), namespace = %object_ref.namespace, name = %object_ref.name,
                    error = %e, "cannot write status"
                ),
            }
        }
        self.written.retain(|k, _| seen.contains(k));
    }

    async fn patch(
        &self,
        kind: Kind,
        object: &DynamicObject,
        status: &Value,
    ) -> Result<(), kube::Error> {
        let resource = api_resource(kind);
        let api: Api<DynamicObject> = match object.namespace() {
            Some(namespace) => Api::namespaced_with(self.client.clone(), &namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let patch = Patch::Merge(json!({ "status": status }));
        api.patch_status(&object.name_any(), &PatchParams::default(), &patch)
            .await
            .map(|_| ())
    }
}

/// `ResolvedRefs=False`, reason `RefNotPermitted`, for a route with backends no
/// ReferenceGrant permits ([`super::grants`]).
fn refuse_references(conditions: &mut [Condition], refs: &[String]) {
    for condition in conditions.iter_mut().filter(|c| c.type_ == "ResolvedRefs") {
        condition.status = ConditionStatus::False;
        condition.reason = "RefNotPermitted".to_owned();
        condition.message = format!(
            "no ReferenceGrant in their namespace permits these backends: {}",
            refs.join(", ")
        );
    }
}

/// The object's whole new status: for a route, its `parents` with Trellis's entries
/// replaced; for a `trellis.dev` object, its conditions.
fn status_value(
    kind: Kind,
    object: &DynamicObject,
    conditions: &[Condition],
    since: &str,
) -> Value {
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|c| condition_value(c, since))
        .collect();
    if !matches!(
        kind,
        Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute
    ) {
        // Conditions of other types are someone else's (a policy engine's, say): they
        // are kept as last read, Trellis's own replaced.
        let ours: HashSet<&str> = conditions
            .iter()
            .filter_map(|c| c.get("type").and_then(Value::as_str))
            .collect();
        let mut all: Vec<Value> = object
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !ours.contains(t))
            })
            .cloned()
            .collect();
        all.extend(conditions);
        return json!({ "conditions": all });
    }
    let mut parents: Vec<Value> = object
        .data
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER_NAME))
        .cloned()
        .collect();
    let refs = object
        .data
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for parent in refs {
        // Trellis serves the routes whose parent is a Service (GAMMA); a Gateway's
        // routes are its controller's.
        if parent.get("kind").and_then(Value::as_str) != Some("Service") {
            continue;
        }
        parents.push(json!({
            "parentRef": parent,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions,
        }));
    }
    json!({ "parents": parents })
}

/// A condition as Kubernetes' `metav1.Condition`, which requires every field; one whose
/// last change is not known gets `since` (the object's creation), which stays put.
fn condition_value(c: &Condition, since: &str) -> Value {
    let status = match c.status {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    };
    let mut value = json!({
        "type": c.type_,
        "status": status,
        "reason": if c.reason.is_empty() { c.type_.as_str() } else { c.reason.as_str() },
        "message": c.message,
        "lastTransitionTime": c.last_transition_time.as_deref().unwrap_or(since),
    });
    if let Some(generation) = c.observed_generation {
        value["observedGeneration"] = json!(generation);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(data: Value) -> DynamicObject {
        serde_json::from_value(data).expect("an object")
    }

    #[test]
    fn a_trellis_objects_conditions_of_other_types_are_kept() {
        let policy = object(json!({
            "apiVersion": "trellis.dev/v1alpha1", "kind": "BackendPolicy",
            "metadata": {"name": "books", "namespace": "shop"},
            "status": {"conditions": [
                {"type": "Accepted", "status": "False", "reason": "Old"},
                {"type": "example.com/Audited", "status": "True", "reason": "Checked"}
            ]}
        }));
        let accepted = Condition::accepted().observed_at(Some(3));
        let status = status_value(
            Kind::BackendPolicy,
            &policy,
            &[accepted],
            "2026-01-01T00:00:00Z",
        );
        let conditions = status["conditions"].as_array().expect("conditions");
        let types: Vec<&str> = conditions
            .iter()
            .map(|c| c["type"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(types, ["example.com/Audited", "Accepted"]);
        assert_eq!(conditions[1]["status"], "True");
        assert_eq!(conditions[1]["observedGeneration"], 3);
    }

    #[test]
    fn a_routes_other_parents_are_kept_and_trellis_entries_replaced() {
        let route = object(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "books", "namespace": "shop"},
            "spec": {"parentRefs": [
                {"group": "", "kind": "Service", "name": "books"},
                {"name": "edge"}
            ]},
            "status": {"parents": [
                {"parentRef": {"name": "edge"}, "controllerName": "example.com/gateway", "conditions": []},
                {"parentRef": {"kind": "Service", "name": "books"}, "controllerName": CONTROLLER_NAME,
                 "conditions": [{"type": "Accepted", "status": "False"}]}
            ]}
        }));
        let status = status_value(
            Kind::HTTPRoute,
            &route,
            &[Condition::accepted()],
            "2026-01-01T00:00:00Z",
        );
        let parents = status["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2, "{status}");
        assert_eq!(parents[0]["controllerName"], "example.com/gateway");
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(parents[1]["parentRef"]["name"], "books");
        assert_eq!(parents[1]["conditions"][0]["status"], "True");
    }
}
