//! `FaultInjection` (`trellis.dev/v1alpha1`): delays and aborts injected into the
//! requests of one HTTPRoute or GRPCRoute, for chaos testing. Attached by `targetRef`
//! (Gateway API policy attachment); scoped to requests with given headers and to
//! callers with given identities or namespaces.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::error::{Checked, ValidationError};
use crate::policy::PolicyTargetReference;
use crate::route::http::{match_value, HTTPHeaderMatch};
use crate::validate;
use crate::Kind;

/// API group of the kinds a FaultInjection may target.
const ROUTE_GROUP: &str = "gateway.networking.k8s.io";

/// Longest delay a fault may inject.
const MAX_DELAY_SECS: u64 = 3600;

/// Faults for the requests of the route named by `targetRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionSpec {
    /// The HTTPRoute or GRPCRoute, in the fault's namespace.
    pub target_ref: PolicyTargetReference,
    /// Which requests get the faults. Unset: every request of the route.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<FaultMatch>,
    /// Hold matching requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answer matching requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Conditions a request must all meet to get the faults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultMatch {
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HTTPHeaderMatch>,
    /// The callers: a request from a workload whose SPIFFE ID is listed, or whose
    /// namespace is. Unset: any caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FaultSources>,
}

/// Callers, by identity or namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSources {
    /// SPIFFE IDs (`spiffe://trellis.local/ns/shop/sa/web`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long; more than 0s, at most 1h.
    pub fixed: Duration,
    /// Share of matching requests delayed, 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: u32,
}

/// An abort: the status a request is answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status, 400 to 599. gRPC calls get the matching gRPC status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// gRPC status code, 1 to 16, for gRPC calls (HTTP requests get 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Share of matching requests aborted, 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: u32,
}

fn hundred() -> u32 {
    100
}

// === checks ===

impl FaultInjectionSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let t = &self.target_ref;
        if t.group != ROUTE_GROUP || !matches!(t.kind.as_str(), "HTTPRoute" | "GRPCRoute") {
            return Err(ValidationError::new(
                "spec.targetRef",
                format!(
                    "must name an HTTPRoute or GRPCRoute of group {ROUTE_GROUP}, got kind {:?} \
                     of group {:?}",
                    t.kind, t.group
                ),
            ));
        }
        validate::name("spec.targetRef.name", &t.name)?;
        if self.delay.is_none() && self.abort.is_none() {
            return Err(ValidationError::new(
                "spec",
                "set a delay, an abort or both",
            ));
        }
        if let Some(m) = &self.matches {
            m.check("spec.match")?;
        }
        if let Some(d) = &self.delay {
            if d.fixed.is_zero() || d.fixed > Duration::from_secs(MAX_DELAY_SECS) {
                return Err(ValidationError::new(
                    "spec.delay.fixed",
                    format!("must be more than 0s and at most 1h, got {}", d.fixed),
                ));
            }
            percent("spec.delay.percent", d.percent)?;
        }
        if let Some(a) = &self.abort {
            match (a.http_status, a.grpc_status) {
                (None, None) => {
                    return Err(ValidationError::new(
                        "spec.abort",
                        "set httpStatus or grpcStatus",
                    ))
                }
                (Some(s), _) if !(400..=599).contains(&s) => {
                    return Err(ValidationError::new(
                        "spec.abort.httpStatus",
                        format!("must be between 400 and 599, got {s}"),
                    ))
                }
                (_, Some(s)) if !(1..=16).contains(&s) => {
                    return Err(ValidationError::new(
                        "spec.abort.grpcStatus",
                        format!("must be a gRPC status code between 1 and 16, got {s}"),
                    ))
                }
                _ => {}
            }
            percent("spec.abort.percent", a.percent)?;
        }
        Ok(())
    }

    /// The targeted route, in the fault's namespace `ns`.
    pub fn target(&self, ns: &str) -> Option<crate::ObjectRef> {
        Some(crate::ObjectRef {
            kind: Kind::from_name(&self.target_ref.kind)?,
            namespace: ns.to_string(),
            name: self.target_ref.name.clone(),
        })
    }
}

impl FaultMatch {
    fn check(&self, at: &str) -> Checked {
        for (i, h) in self.headers.iter().enumerate() {
            let at = format!("{at}.headers[{i}]");
            validate::header_name(&format!("{at}.name"), &h.name)?;
            match_value(&format!("{at}.value"), h.type_, &h.value)?;
        }
        if let Some(from) = &self.from {
            for (i, id) in from.identities.iter().enumerate() {
                let ok = id
                    .strip_prefix("spiffe://")
                    .is_some_and(|rest| rest.contains('/') && !rest.starts_with('/'));
                if !ok {
                    return Err(ValidationError::new(
                        format!("{at}.from.identities[{i}]"),
                        format!(
                            "{id:?} is not a SPIFFE ID such as \
                             \"spiffe://trellis.local/ns/shop/sa/web\""
                        ),
                    ));
                }
            }
            for (i, ns) in from.namespaces.iter().enumerate() {
                validate::name(&format!("{at}.from.namespaces[{i}]"), ns)?;
            }
        }
        Ok(())
    }
}

impl FaultSources {
    /// Whether a caller with this SPIFFE ID in this namespace is one of the sources.
    pub fn includes(&self, identity: &str, namespace: &str) -> bool {
        self.identities.iter().any(|i| i == identity)
            || self.namespaces.iter().any(|n| n == namespace)
    }
}

fn percent(at: &str, value: u32) -> Checked {
    if value > 100 {
        return Err(ValidationError::new(
            at,
            format!("must be between 0 and 100, got {value}"),
        ));
    }
    Ok(())
}
