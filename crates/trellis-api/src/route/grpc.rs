//! `GRPCRoute` (Gateway API v1): match calls by service, method and metadata, and
//! split them over weighted backends.

use serde::{Deserialize, Serialize};

use super::filter::{
    check_backend_filter_types, check_filter_list, unique_ignoring_case, GRPCRouteFilter,
};
use super::http::{match_value, MatchType};
use super::{
    check_parents, check_rule_names, parent_object_refs, GRPCBackendRef, ParentReference,
    MAX_BACKEND_REFS, MAX_FILTERS, MAX_HEADER_MATCHES, MAX_MATCHES,
};
use crate::duration::Duration;
use crate::error::{Checked, ValidationError};
use crate::grpc_status::GrpcStatus;
use crate::validate;
use crate::ObjectRef;

/// Routing for gRPC calls to the Services in `parentRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteSpec {
    /// The Services whose calls this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// `:authority` values the route applies to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules, tried by the Gateway API's precedence (most specific match first).
    #[serde(default)]
    pub rules: Vec<GRPCRouteRule>,
}

/// Calls that match any of `matches` go through `filters` to `backendRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteRule {
    /// Name for metrics and status, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Alternatives; empty matches every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GRPCRouteMatch>,
    /// Applied in order to matching calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GRPCRouteFilter>,
    /// Where matching calls go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<GRPCBackendRef>,
    /// Retries of failed calls. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<GRPCRouteRetry>,
}

/// Retry failed calls, in the shape of HTTPRoute's `retry` with gRPC statuses for
/// HTTP codes. A call is retried only while the proxy could hold its whole request
/// (at most 64 KiB) and before any of its response reached the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteRetry {
    /// gRPC statuses that are retried, by name (`unavailable`, `resource-exhausted`,
    /// `cancelled`, `deadline-exceeded`, ...). Connection failures are always
    /// retryable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<GrpcStatus>,
    /// Retries after the first attempt. Unset: the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Wait before the first retry, growing exponentially with jitter. Unset: the
    /// proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Conditions a call must all meet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteMatch {
    /// Service and method condition. Unset: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GRPCMethodMatch>,
    /// Metadata (header) conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<GRPCHeaderMatch>,
}

/// A condition on the called service and method (`/package.Service/Method`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCMethodMatch {
    /// How `service` and `method` are compared. Default `Exact`.
    #[serde(rename = "type", default)]
    pub type_: MatchType,
    /// Fully qualified service (`helloworld.Greeter`). Unset: any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method name (`SayHello`). Unset: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A condition on call metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCHeaderMatch {
    /// How `value` is compared. Default `Exact`.
    #[serde(rename = "type", default)]
    pub type_: MatchType,
    /// Metadata key, compared case-insensitively.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

// === checks ===

impl GRPCRouteSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        check_parents(&self.parent_refs, Some(&self.hostnames))?;
        check_rule_names(self.rules.iter().map(|r| r.name.as_ref()))?;
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check(&format!("spec.rules[{i}]"))?;
        }
        Ok(())
    }

    /// Objects this route points at: parents, backends and mirror targets.
    pub(crate) fn references(&self, ns: &str) -> Vec<ObjectRef> {
        let mut refs = parent_object_refs(&self.parent_refs, ns);
        for rule in &self.rules {
            for b in &rule.backend_refs {
                refs.extend(b.object_ref(ns));
            }
            let backend_filters = rule.backend_refs.iter().flat_map(|b| &b.filters);
            for f in rule.filters.iter().chain(backend_filters) {
                if let GRPCRouteFilter::RequestMirror(m) = f {
                    refs.extend(m.backend_ref.object_ref(ns));
                }
            }
        }
        refs
    }
}

impl GRPCRouteRule {
    fn check(&self, at: &str) -> Checked {
        validate::max_items(&format!("{at}.matches"), &self.matches, MAX_MATCHES)?;
        for (i, m) in self.matches.iter().enumerate() {
            m.check(&format!("{at}.matches[{i}]"))?;
        }
        check_filters(at, &self.filters)?;
        let refs = format!("{at}.backendRefs");
        validate::max_items(&refs, &self.backend_refs, MAX_BACKEND_REFS)?;
        for (i, b) in self.backend_refs.iter().enumerate() {
            let at = format!("{refs}[{i}]");
            b.check_ref(&at)?;
            check_filters(&at, &b.filters)?;
            check_backend_filter_types(
                &format!("{at}.filters"),
                b.filters.iter().map(GRPCRouteFilter::type_name),
            )?;
        }
        Ok(())
    }
}

fn check_filters(at: &str, filters: &[GRPCRouteFilter]) -> Checked {
    let list = format!("{at}.filters");
    validate::max_items(&list, filters, MAX_FILTERS)?;
    for (i, f) in filters.iter().enumerate() {
        f.check(&format!("{list}[{i}]"))?;
    }
    check_filter_list(&list, filters.iter().map(GRPCRouteFilter::type_name))
}

impl GRPCRouteMatch {
    fn check(&self, at: &str) -> Checked {
        if let Some(m) = &self.method {
            m.check(&format!("{at}.method"))?;
        }
        let headers = format!("{at}.headers");
        validate::max_items(&headers, &self.headers, MAX_HEADER_MATCHES)?;
        for (i, h) in self.headers.iter().enumerate() {
            let at = format!("{headers}[{i}]");
            validate::header_name(&format!("{at}.name"), &h.name)?;
            match_value(&format!("{at}.value"), h.type_, &h.value)?;
        }
        unique_ignoring_case(
            &headers,
            self.headers.iter().map(|h| h.name.as_str()),
            ".name",
        )
    }
}

impl GRPCMethodMatch {
    fn check(&self, at: &str) -> Checked {
        if self.service.is_none() && self.method.is_none() {
            return Err(ValidationError::new(
                at,
                "set service, method or both (to match any call, leave method out)",
            ));
        }
        let fields = [("service", &self.service), ("method", &self.method)];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let path = format!("{at}.{field}");
            match self.type_ {
                MatchType::RegularExpression => validate::regex(&path, value)?,
                MatchType::Exact => {
                    let ok = if field == "service" {
                        is_grpc_service(value)
                    } else {
                        is_identifier(value)
                    };
                    if !ok {
                        let want = if field == "service" {
                            "a fully qualified service such as \"helloworld.Greeter\""
                        } else {
                            "a method name such as \"SayHello\""
                        };
                        return Err(ValidationError::new(
                            path,
                            format!("{value:?} is not {want}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Letters, digits and `_`, not starting with a digit.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 1024
}

/// Dot-separated identifiers, optionally with a leading dot.
fn is_grpc_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    s.len() <= 1024 && s.split('.').all(is_identifier)
}
