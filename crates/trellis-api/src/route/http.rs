//! `HTTPRoute` (Gateway API v1): match requests by path, headers, query parameters and
//! method, filter them, and split them over weighted backends with timeouts and
//! retries.

use serde::{Deserialize, Serialize};

use super::filter::{
    check_backend_filter_types, check_filter_list, unique_ignoring_case, HTTPPathModifier,
    HTTPRouteFilter,
};
use super::{
    check_parents, check_rule_names, parent_object_refs, HTTPBackendRef, ParentReference,
    MAX_BACKEND_REFS, MAX_FILTERS, MAX_HEADER_MATCHES, MAX_MATCHES,
};
use crate::duration::Duration;
use crate::error::{Checked, ValidationError};
use crate::validate;
use crate::ObjectRef;

/// Routing for HTTP traffic to the Services in `parentRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteSpec {
    /// The Services whose traffic this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// `Host` values the route applies to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules, tried by the Gateway API's precedence (most specific match first).
    #[serde(default)]
    pub rules: Vec<HTTPRouteRule>,
}

/// Requests that match any of `matches` go through `filters` to `backendRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteRule {
    /// Name for metrics and status, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Alternatives; empty matches every request (as `path: {type: PathPrefix, value: /}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    /// Applied in order to matching requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
    /// Where matching requests go, split by weight. Empty: answered with 500 unless a
    /// filter (a redirect) answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
    /// Time limits. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPRouteTimeouts>,
    /// Retries of failed requests. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HTTPRouteRetry>,
}

/// Conditions a request must all meet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteMatch {
    /// Path condition. Unset: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HTTPHeaderMatch>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HTTPQueryParamMatch>,
    /// Method condition. Unset: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HTTPMethod>,
}

/// A condition on the request path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPPathMatch {
    /// How `value` is compared. Default `PathPrefix`.
    #[serde(rename = "type", default)]
    pub type_: PathMatchType,
    /// A path starting with `/`, or a regular expression. Default `/`.
    #[serde(default = "default_path")]
    pub value: String,
}

fn default_path() -> String {
    "/".to_string()
}

/// How a path is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, on a `/` boundary (`/api` matches `/api/x`, not
    /// `/apix`).
    #[default]
    PathPrefix,
    /// The path matches the regular expression.
    RegularExpression,
}

/// How a header or query parameter value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum MatchType {
    /// The value equals the given value.
    #[default]
    Exact,
    /// The value matches the regular expression.
    RegularExpression,
}

/// A condition on a request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPHeaderMatch {
    /// How `value` is compared. Default `Exact`.
    #[serde(rename = "type", default)]
    pub type_: MatchType,
    /// Header name, compared case-insensitively.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

/// A condition on a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPQueryParamMatch {
    /// How `value` is compared. Default `Exact`.
    #[serde(rename = "type", default)]
    pub type_: MatchType,
    /// Parameter name, compared exactly.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HTTPMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

/// Time limits for a rule's requests. `0s` disables a limit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteTimeouts {
    /// Limit on the whole request as the client sees it, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Limit on each attempt to a backend; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// Retry failed requests (Gateway API experimental `retry`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteRetry {
    /// Response statuses that are retried, 400 to 599. Connection failures are always
    /// retryable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Retries after the first attempt. Unset: the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Wait before the first retry, growing exponentially with jitter. Unset: the
    /// proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

// === checks ===

impl HTTPRouteSpec {
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
            let filters = rule.filters.iter();
            let backend_filters = rule.backend_refs.iter().flat_map(|b| &b.filters);
            for b in &rule.backend_refs {
                refs.extend(b.object_ref(ns));
            }
            for f in filters.chain(backend_filters) {
                if let HTTPRouteFilter::RequestMirror(m) = f {
                    refs.extend(m.backend_ref.object_ref(ns));
                }
            }
        }
        refs
    }
}

impl HTTPRouteRule {
    fn check(&self, at: &str) -> Checked {
        validate::max_items(&format!("{at}.matches"), &self.matches, MAX_MATCHES)?;
        for (i, m) in self.matches.iter().enumerate() {
            m.check(&format!("{at}.matches[{i}]"))?;
        }
        check_filters(at, &self.filters)?;
        let prefix_only = self.matches.iter().all(|m| {
            m.path
                .as_ref()
                .is_none_or(|p| p.type_ == PathMatchType::PathPrefix)
        });
        for (i, f) in self.filters.iter().enumerate() {
            if let Some(HTTPPathModifier::ReplacePrefixMatch(_)) = f.path_modifier() {
                if !prefix_only {
                    return Err(ValidationError::new(
                        format!("{at}.filters[{i}]"),
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix \
                         path match",
                    ));
                }
            }
        }
        let refs = format!("{at}.backendRefs");
        validate::max_items(&refs, &self.backend_refs, MAX_BACKEND_REFS)?;
        for (i, b) in self.backend_refs.iter().enumerate() {
            let at = format!("{refs}[{i}]");
            b.check_ref(&at)?;
            check_filters(&at, &b.filters)?;
            check_backend_filter_types(
                &format!("{at}.filters"),
                b.filters.iter().map(HTTPRouteFilter::type_name),
            )?;
        }
        if let Some(t) = &self.timeouts {
            if let (Some(request), Some(backend)) = (t.request, t.backend_request) {
                if !request.is_zero() && backend > request {
                    return Err(ValidationError::new(
                        format!("{at}.timeouts.backendRequest"),
                        format!("must be at most timeouts.request ({request}), got {backend}"),
                    ));
                }
            }
        }
        if let Some(retry) = &self.retry {
            for (i, code) in retry.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    return Err(ValidationError::new(
                        format!("{at}.retry.codes[{i}]"),
                        format!("must be an HTTP status between 400 and 599, got {code}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_filters(at: &str, filters: &[HTTPRouteFilter]) -> Checked {
    let list = format!("{at}.filters");
    validate::max_items(&list, filters, MAX_FILTERS)?;
    for (i, f) in filters.iter().enumerate() {
        f.check(&format!("{list}[{i}]"))?;
    }
    check_filter_list(&list, filters.iter().map(HTTPRouteFilter::type_name))
}

impl HTTPRouteMatch {
    fn check(&self, at: &str) -> Checked {
        if let Some(p) = &self.path {
            let value = format!("{at}.path.value");
            match p.type_ {
                PathMatchType::Exact | PathMatchType::PathPrefix => {
                    validate::path_value(&value, &p.value)?
                }
                PathMatchType::RegularExpression => validate::regex(&value, &p.value)?,
            }
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
        )?;

        let params = format!("{at}.queryParams");
        validate::max_items(&params, &self.query_params, MAX_HEADER_MATCHES)?;
        for (i, q) in self.query_params.iter().enumerate() {
            let at = format!("{params}[{i}]");
            if q.name.is_empty() || q.name.len() > 256 {
                return Err(ValidationError::new(
                    format!("{at}.name"),
                    "must be 1 to 256 characters",
                ));
            }
            match_value(&format!("{at}.value"), q.type_, &q.value)?;
        }
        validate::unique_names(&params, "name", &self.query_params, |q| {
            Some(q.name.as_str())
        })
    }
}

/// A header or query value: a header value when exact, a regular expression otherwise.
pub(crate) fn match_value(at: &str, type_: MatchType, value: &str) -> Checked {
    match type_ {
        MatchType::Exact => validate::header_value(at, value),
        MatchType::RegularExpression => validate::regex(at, value),
    }
}
