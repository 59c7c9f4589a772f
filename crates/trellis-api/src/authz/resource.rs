//! `AuthorizationPolicy` (`trellis.dev/v1alpha1`): who may call a Service and how,
//! attached to the Service through `targetRef` (Gateway API policy attachment).

use serde::{Deserialize, Serialize};

use super::rules::{check_rules, Rule};
use crate::error::{Checked, ValidationError};
use crate::policy::PolicyTargetReference;
use crate::route::service_kind;
use crate::validate;

/// Allow or deny requests to the Service named by `targetRef` that match a rule.
///
/// A request is denied when any Deny policy on its Service matches it; otherwise, when
/// Allow policies target the Service, it is allowed only if one of them matches;
/// otherwise the MeshConfig's `defaultAuthorization` decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The Service the policy protects, in the policy's namespace.
    pub target_ref: PolicyTargetReference,
    /// What a matching request gets. Default `Allow`.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// The policy matches a request when any rule does. An Allow policy without rules
    /// matches nothing, so it denies every request no other Allow policy allows; a Deny
    /// policy needs at least one rule.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// What a matching request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
}

impl AuthorizationPolicySpec {
    /// An Allow policy for Service `name` with the given rules.
    pub fn allow(name: impl Into<String>, rules: Vec<Rule>) -> Self {
        Self {
            target_ref: PolicyTargetReference {
                group: String::new(),
                kind: crate::Kind::Service.name().to_string(),
                name: name.into(),
            },
            action: AuthorizationAction::Allow,
            rules,
        }
    }

    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let t = &self.target_ref;
        service_kind("spec.targetRef", &t.group, &t.kind)?;
        validate::name("spec.targetRef.name", &t.name)?;
        if self.action == AuthorizationAction::Deny && self.rules.is_empty() {
            return Err(ValidationError::new(
                "spec.rules",
                "a Deny policy needs at least one rule; `rules: [{}]` denies every request",
            ));
        }
        check_rules("spec.rules", &self.rules)
    }
}
