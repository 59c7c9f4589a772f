//! `TCPRoute` (Gateway API, published upstream as `v1alpha2`): split a Service's
//! connections over weighted backends, without looking inside them.

use serde::{Deserialize, Serialize};

use super::{check_parents, parent_object_refs, BackendRef, ParentReference, MAX_BACKEND_REFS};
use crate::error::{Checked, ValidationError};
use crate::validate;
use crate::ObjectRef;

/// Most rules a `TCPRoute` may hold.
pub const MAX_TCP_RULES: usize = 16;

/// Routing for TCP connections to the Services in `parentRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPRouteSpec {
    /// The Services whose connections this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// One to 16 rules.
    #[serde(default)]
    pub rules: Vec<TCPRouteRule>,
}

/// Connections go to `backendRefs`, split by weight.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPRouteRule {
    /// Name for metrics and status, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One to 16 backends.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

impl TCPRouteSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        check_parents(&self.parent_refs, None)?;
        check_rules(&self.rules)
    }

    /// Objects this route points at: parents and backends.
    pub(crate) fn references(&self, ns: &str) -> Vec<ObjectRef> {
        references(&self.parent_refs, &self.rules, ns)
    }
}

/// The rules of a TCPRoute or TLSRoute: 1 to 16, named uniquely, each with 1 to 16
/// valid backendRefs.
pub(crate) fn check_rules(rules: &[TCPRouteRule]) -> Checked {
    if rules.is_empty() {
        return Err(ValidationError::new(
            "spec.rules",
            "at least one rule is required",
        ));
    }
    super::check_rule_names(rules.iter().map(|r| r.name.as_ref()))?;
    validate::max_items("spec.rules", rules, MAX_TCP_RULES)?;
    for (i, rule) in rules.iter().enumerate() {
        let refs = format!("spec.rules[{i}].backendRefs");
        if rule.backend_refs.is_empty() {
            return Err(ValidationError::new(
                refs,
                "at least one backendRef is required",
            ));
        }
        validate::max_items(&refs, &rule.backend_refs, MAX_BACKEND_REFS)?;
        for (j, b) in rule.backend_refs.iter().enumerate() {
            b.check(&format!("{refs}[{j}]"))?;
        }
    }
    Ok(())
}

/// The objects a TCPRoute or TLSRoute in namespace `ns` points at: parents and backends.
pub(crate) fn references(
    parent_refs: &[ParentReference],
    rules: &[TCPRouteRule],
    ns: &str,
) -> Vec<ObjectRef> {
    let mut refs = parent_object_refs(parent_refs, ns);
    for rule in rules {
        refs.extend(rule.backend_refs.iter().filter_map(|b| b.object_ref(ns)));
    }
    refs
}
