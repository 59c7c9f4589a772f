//! ReferenceGrant: a route may send traffic to a Service of another namespace only
//! when a ReferenceGrant in that namespace allows routes of its kind from the route's
//! namespace (the Gateway API's rule, so a namespace decides who may reach into it).
//!
//! A backend that is not allowed is not dropped: the Gateway API says the share of
//! requests that would have gone to it must fail, not move to the other backends. So
//! it is renamed to [`NOT_PERMITTED`], a name no Kubernetes Service can have, and the
//! mesh finds no such Service; the route's `ResolvedRefs` says `RefNotPermitted`.
//!
//! A backend that is one of the route's own parent Services needs no grant: a consumer
//! route (GAMMA) changes how its namespace calls a Service it can call anyway, and
//! sends there (the Gateway API's mesh conformance case `MeshConsumerRoute`).

use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::Value;
use trellis_api::Kind;

/// The name an unpermitted backend is given: a DNS label (as a backend's name must
/// be) that starts with a digit, which a Service's name never does.
pub const NOT_PERMITTED: &str = "0-reference-not-permitted";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether a ReferenceGrant in `to_namespace` lets routes of `kind` in
/// `from_namespace` use the Service `to_name` there.
pub fn permitted(
    grants: &[DynamicObject],
    kind: Kind,
    from_namespace: &str,
    to_namespace: &str,
    to_name: &str,
) -> bool {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    grants
        .iter()
        .filter(|grant| grant.namespace().as_deref() == Some(to_namespace))
        .any(|grant| {
            let list = |key: &str| {
                grant
                    .data
                    .pointer(&format!("/spec/{key}"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let from = list("from").iter().any(|f| {
                text(f, "group") == GATEWAY_GROUP
                    && text(f, "kind") == kind.name()
                    && text(f, "namespace") == from_namespace
            });
            let to = list("to").iter().any(|t| {
                let name = text(t, "name");
                text(t, "group").is_empty()
                    && text(t, "kind") == "Service"
                    && (name.is_empty() || name == to_name)
            });
            from && to
        })
}

/// Renames each backend of the route's `spec` in another namespace that no grant
/// permits, and says which ones (`namespace/name`).
pub fn gate(
    spec: &mut Value,
    kind: Kind,
    namespace: &str,
    grants: &[DynamicObject],
) -> Vec<String> {
    let mut refused = Vec::new();
    let parents = parent_services(spec, namespace);
    let rules = spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for rule in rules {
        let refs = rule
            .get_mut("backendRefs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for backend in refs {
            let Some(target) = backend.get("namespace").and_then(Value::as_str) else {
                continue;
            };
            let is_service = backend
                .get("group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
                && backend
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("Service")
                    == "Service";
            let name = backend
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if target == namespace
                || !is_service
                || parents.iter().any(|(ns, n)| ns == target && n == name)
                || permitted(grants, kind, namespace, target, name)
            {
                continue;
            }
            refused.push(format!("{target}/{name}"));
            backend["name"] = Value::from(NOT_PERMITTED);
        }
    }
    refused
}

/// The `(namespace, name)` of each Service the route's `parentRefs` name.
fn parent_services(spec: &Value, namespace: &str) -> Vec<(String, String)> {
    let field = |r: &Value, name: &str| r.get(name).and_then(Value::as_str).map(str::to_string);
    spec.get("parentRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| {
            field(r, "group").unwrap_or_default().is_empty()
                && field(r, "kind").as_deref() == Some("Service")
        })
        .filter_map(|r| {
            let ns = field(r, "namespace").unwrap_or_else(|| namespace.to_string());
            Some((ns, field(r, "name")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn grant(namespace: &str, from_namespace: &str, to_name: Option<&str>) -> DynamicObject {
        let mut to = json!({"group": "", "kind": "Service"});
        if let Some(name) = to_name {
            to["name"] = json!(name);
        }
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "shop-may-call", "namespace": namespace},
            "spec": {
                "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": from_namespace}],
                "to": [to]
            }
        }))
        .expect("a grant")
    }

    fn route() -> Value {
        json!({"rules": [{"backendRefs": [
            {"name": "books", "port": 9080},
            {"name": "books", "namespace": "shop", "port": 9080},
            {"name": "ratings", "namespace": "reviews", "port": 9080, "weight": 10},
        ]}]})
    }

    #[test]
    fn a_backend_in_another_namespace_needs_a_grant_there() {
        let mut spec = route();
        let refused = gate(&mut spec, Kind::HTTPRoute, "shop", &[]);
        assert_eq!(refused, ["reviews/ratings"]);
        let backends = &spec["rules"][0]["backendRefs"];
        assert_eq!(backends[0]["name"], "books");
        assert_eq!(backends[1]["name"], "books", "its own namespace, named");
        assert_eq!(backends[2]["name"], NOT_PERMITTED);
        assert_eq!(backends[2]["weight"], 10, "its share still fails");

        for allowing in [
            grant("reviews", "shop", None),
            grant("reviews", "shop", Some("ratings")),
        ] {
            let mut spec = route();
            assert!(gate(&mut spec, Kind::HTTPRoute, "shop", &[allowing]).is_empty());
            assert_eq!(spec, route());
        }
        // A grant elsewhere, for another namespace, another Service or another kind
        // of route allows nothing.
        for other in [
            grant("shop", "shop", None),
            grant("reviews", "web", None),
            grant("reviews", "shop", Some("details")),
        ] {
            let mut spec = route();
            assert_eq!(
                gate(&mut spec, Kind::HTTPRoute, "shop", &[other]),
                ["reviews/ratings"]
            );
        }
        let mut spec = route();
        let grpc = gate(
            &mut spec,
            Kind::GRPCRoute,
            "shop",
            &[grant("reviews", "shop", None)],
        );
        assert_eq!(grpc, ["reviews/ratings"]);
    }

    #[test]
    fn a_consumer_route_needs_no_grant_to_send_to_its_parent_service() {
        let mut spec = route();
        spec["parentRefs"] = json!([
            {"group": "", "kind": "Service", "name": "ratings", "namespace": "reviews"}
        ]);
        assert!(gate(&mut spec, Kind::HTTPRoute, "shop", &[]).is_empty());
        assert_eq!(spec["rules"][0]["backendRefs"][2]["name"], "ratings");
        // A parent of another kind (a Gateway) or another Service: a grant is needed.
        for parent in [
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "name": "ratings", "namespace": "reviews"}),
            json!({"group": "", "kind": "Service", "name": "details", "namespace": "reviews"}),
        ] {
            let mut spec = route();
            spec["parentRefs"] = json!([parent]);
            assert_eq!(
                gate(&mut spec, Kind::HTTPRoute, "shop", &[]),
                ["reviews/ratings"]
            );
        }
    }
}
