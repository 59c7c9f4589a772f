//! Authorization: the AuthorizationPolicies that target a Service, compiled into the
//! `Authorization` of its workloads' inbound listeners, with the MeshConfig's default.
//! `trellis explain` compiles a Service's authorization here too, so what it evaluates
//! is what the proxies hold.

use std::collections::HashMap;

use trellis_api::authz::{action_to_wire, Action, AuthorizationAction, AuthorizationPolicySpec};
use trellis_api::proto::v1::{
    Authorization, AuthorizationAction as WireAction, AuthorizationPolicy as WirePolicy,
};
use trellis_api::{Kind, Resource};

use super::{MeshIndex, ServiceKey};

/// The compiled policies of every targeted Service, each list sorted by name.
pub(super) fn by_service(
    policies: &[(&Resource, &AuthorizationPolicySpec)],
) -> HashMap<ServiceKey, Vec<WirePolicy>> {
    let mut out: HashMap<ServiceKey, Vec<WirePolicy>> = HashMap::new();
    for (r, spec) in policies {
        // Validation refuses other kinds; a policy that got through protects nothing.
        if Kind::from_name(&spec.target_ref.kind) != Some(Kind::Service) {
            continue;
        }
        let ns = &r.metadata.namespace;
        let action = match spec.action {
            AuthorizationAction::Allow => Action::Allow,
            AuthorizationAction::Deny => Action::Deny,
        };
        out.entry(ServiceKey::new(ns, &spec.target_ref.name))
            .or_default()
            .push(WirePolicy {
                name: format!("{ns}/{}", r.metadata.name),
                action: action_to_wire(action) as i32,
                rules: spec.rules.iter().map(|rule| rule.to_wire()).collect(),
            });
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

impl MeshIndex {
    /// The authorization of `service`'s inbound listeners: the policies in its
    /// namespace that target it, sorted by name, and the mesh's default. `port` is the
    /// application's port, which rules' `ports` are compared with (0: unknown, the
    /// proxy then uses the port connections arrive on).
    pub fn authorization(&self, service: &ServiceKey, port: u16) -> Authorization {
        Authorization {
            default_action: self.tables.mesh.default_authorization as i32,
            port: u32::from(port),
            policies: self
                .tables
                .authorization
                .get(service)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The port the application behind `service` listens on, as far as its declaration
    /// says: the first port's `targetPort`. `None` for an implicit Service.
    pub fn application_port(&self, service: &ServiceKey) -> Option<u16> {
        self.service(service)?
            .primary_port()
            .map(|p| p.workload_port())
    }
}

/// The wire default for the MeshConfig's `defaultAuthorization`.
pub(super) fn default_action(spec: trellis_api::policy::DefaultAuthorization) -> WireAction {
    match spec {
        trellis_api::policy::DefaultAuthorization::Allow => WireAction::Allow,
        trellis_api::policy::DefaultAuthorization::Deny => WireAction::Deny,
    }
}
