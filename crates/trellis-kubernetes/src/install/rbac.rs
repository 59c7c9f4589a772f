//! The control plane's permissions, as few as its work needs: read the cluster's
//! workloads, routes and Trellis resources; write only their status; review tokens;
//! keep its own webhook's `caBundle`; and, in its own namespace only, its Secrets and
//! leader-election Leases.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use trellis_api::kind::TRELLIS_GROUP;

use super::{metadata, CONTROL, WEBHOOK_CONFIGURATION};
use crate::crd;

/// API group of the Gateway API's kinds.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API routes the control plane serves (GAMMA: attached to a Service).
const ROUTES: [&str; 4] = ["httproutes", "grpcroutes", "tcproutes", "tlsroutes"];
const READ: [&str; 3] = ["get", "list", "watch"];
/// `update` for a replace, `patch` for server-side apply of the status.
const WRITE_STATUS: [&str; 2] = ["update", "patch"];

fn rule(groups: &[&str], resources: &[impl AsRef<str>], verbs: &[&str]) -> PolicyRule {
    fn strings(s: &[impl AsRef<str>]) -> Vec<String> {
        s.iter().map(|s| s.as_ref().to_string()).collect()
    }
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// `resource/status` for each of `resources`.
fn status_of<'a>(resources: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    resources
        .into_iter()
        .map(|r| format!("{r}/status"))
        .collect()
}

/// What the control plane may do anywhere in the cluster.
pub(super) fn cluster_role() -> ClusterRole {
    let trellis: Vec<&str> = crd::KINDS.iter().map(|k| k.plural()).collect();
    let route_status = status_of(ROUTES);
    let trellis_status = status_of(trellis.iter().copied());
    let mut webhook = rule(
        &["admissionregistration.k8s.io"],
        &["mutatingwebhookconfigurations"],
        // list and watch by name (a field selector on metadata.name), which the
        // resource name restricts as it does get and patch.
        &["get", "list", "watch", "patch"],
    );
    webhook.resource_names = Some(vec![WEBHOOK_CONFIGURATION.to_string()]);
    ClusterRole {
        metadata: metadata(CONTROL, None),
        rules: Some(vec![
            rule(
                &[""],
                &["namespaces", "services", "pods", "serviceaccounts"],
                &READ,
            ),
            rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
            rule(
                &[GATEWAY_GROUP],
                &[&ROUTES[..], &["referencegrants"]].concat(),
                &READ,
            ),
            rule(&[GATEWAY_GROUP], &route_status, &WRITE_STATUS),
            rule(&[TRELLIS_GROUP], &trellis, &READ),
            rule(&[TRELLIS_GROUP], &trellis_status, &WRITE_STATUS),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            webhook,
            // Events about a route or policy go to that object's namespace.
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ]),
        ..ClusterRole::default()
    }
}

/// What the control plane may do in its own namespace: keep the CA, tokens and
/// rotation state in Secrets, and elect a leader with a Lease.
pub(super) fn role(namespace: &str) -> Role {
    let keep = ["get", "list", "watch", "create", "update", "patch"];
    Role {
        metadata: metadata(CONTROL, Some(namespace)),
        rules: Some(vec![
            rule(&[""], &["secrets"], &keep),
            rule(&["coordination.k8s.io"], &["leases"], &keep),
        ]),
    }
}

fn subject(namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: CONTROL.to_string(),
        namespace: Some(namespace.to_string()),
        ..Subject::default()
    }
}

fn role_ref(kind: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        kind: kind.to_string(),
        name: CONTROL.to_string(),
    }
}

/// Gives the control plane's ServiceAccount the [`cluster_role`].
pub(super) fn cluster_role_binding(namespace: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(CONTROL, None),
        role_ref: role_ref("ClusterRole"),
        subjects: Some(vec![subject(namespace)]),
    }
}

/// Gives the control plane's ServiceAccount the [`role`] in its namespace.
pub(super) fn role_binding(namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: metadata(CONTROL, Some(namespace)),
        role_ref: role_ref("Role"),
        subjects: Some(vec![subject(namespace)]),
    }
}
