//! Route filters in the Gateway API's tagged shape: a `type` and a field of the same
//! name holding that filter's settings
//! (`{type: RequestHeaderModifier, requestHeaderModifier: {set: [...]}}`).
//!
//! On the wire the shape is a struct with one optional field per filter; in Rust it is
//! an enum, converted at the serde boundary so a document that sets the wrong field
//! is refused with the filter's path.

mod wire;

use serde::{Deserialize, Serialize};

use self::wire::{RawGRPCRouteFilter, RawHTTPRouteFilter, RawPathModifier};
use super::BackendObjectReference;
use crate::error::{Checked, ValidationError};
use crate::validate::{self, int_serde};

/// Most headers a header modifier may set, add or remove, each.
pub const MAX_HEADER_MODIFICATIONS: usize = 16;

/// A filter of an `HTTPRoute` rule or backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHTTPRouteFilter", into = "RawHTTPRouteFilter")]
pub enum HTTPRouteFilter {
    /// Changes request headers before the request is sent on.
    RequestHeaderModifier(HTTPHeaderFilter),
    /// Changes response headers before the response is returned.
    ResponseHeaderModifier(HTTPHeaderFilter),
    /// Answers with a redirect instead of forwarding.
    RequestRedirect(HTTPRequestRedirectFilter),
    /// Rewrites the host or path before forwarding.
    URLRewrite(HTTPURLRewriteFilter),
    /// Sends a copy of requests to another backend; its responses are dropped.
    RequestMirror(HTTPRequestMirrorFilter),
}

/// A filter of a `GRPCRoute` rule or backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawGRPCRouteFilter", into = "RawGRPCRouteFilter")]
pub enum GRPCRouteFilter {
    /// Changes request metadata (headers) before the call is sent on.
    RequestHeaderModifier(HTTPHeaderFilter),
    /// Changes response metadata (headers) before the response is returned.
    ResponseHeaderModifier(HTTPHeaderFilter),
    /// Sends a copy of calls to another backend; its responses are dropped.
    RequestMirror(HTTPRequestMirrorFilter),
}

/// Headers to set (replacing), add (appending) and remove, by name (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPHeaderFilter {
    /// Headers to set, replacing any value present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HTTPHeader>,
    /// Headers to add beside any value present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HTTPHeader>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPHeader {
    /// Header name (case-insensitive).
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Answer with a redirect built from the request and these replacements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRequestRedirectFilter {
    /// Scheme of the `Location`. Default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    /// Host of the `Location`. Default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to change the path. Default: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
    /// Port of the `Location`. Default: the scheme's well-known port.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Redirect status: 301, 302, 303, 307 or 308. Default 302.
    #[serde(default = "default_redirect_status")]
    pub status_code: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// Scheme of a redirect's `Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Http,
    Https,
}

/// Rewrite the request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPURLRewriteFilter {
    /// Replacement `Host`. Default: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to change the path. Default: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
}

/// How a redirect or rewrite changes the path, in the Gateway API's tagged shape
/// (`{type: ReplacePrefixMatch, replacePrefixMatch: /v2}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPathModifier", into = "RawPathModifier")]
pub enum HTTPPathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part matched by a `PathPrefix` match, keeping the rest.
    ReplacePrefixMatch(String),
}

/// Mirror requests to another backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRequestMirrorFilter {
    /// Where copies go.
    pub backend_ref: BackendObjectReference,
    /// Percentage of requests mirrored, 0 to 100. Default (with no `fraction`): all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Share of requests mirrored as a fraction; exclusive with `percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// At most `denominator`.
    pub numerator: u32,
    /// At least 1. Default 100.
    #[serde(default = "default_denominator")]
    pub denominator: u32,
}

fn default_denominator() -> u32 {
    100
}

// === checks ===

impl HTTPHeaderFilter {
    pub(crate) fn check(&self, at: &str) -> Checked {
        for (field, headers) in [("set", &self.set), ("add", &self.add)] {
            let list = format!("{at}.{field}");
            validate::max_items(&list, headers, MAX_HEADER_MODIFICATIONS)?;
            for (i, h) in headers.iter().enumerate() {
                validate::header_name(&format!("{list}[{i}].name"), &h.name)?;
                validate::header_value(&format!("{list}[{i}].value"), &h.value)?;
            }
            unique_ignoring_case(&list, headers.iter().map(|h| h.name.as_str()), ".name")?;
        }
        let list = format!("{at}.remove");
        validate::max_items(&list, &self.remove, MAX_HEADER_MODIFICATIONS)?;
        for (i, name) in self.remove.iter().enumerate() {
            validate::header_name(&format!("{list}[{i}]"), name)?;
        }
        unique_ignoring_case(&list, self.remove.iter().map(String::as_str), "")
    }
}

/// Header names in a list differ, ignoring case, as HTTP does.
pub(crate) fn unique_ignoring_case<'a>(
    list: &str,
    names: impl Iterator<Item = &'a str>,
    suffix: &str,
) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ValidationError::new(
                format!("{list}[{i}]{suffix}"),
                format!("header {name:?} appears twice (names are case-insensitive)"),
            ));
        }
    }
    Ok(())
}

impl HTTPPathModifier {
    pub(crate) fn check(&self, at: &str) -> Checked {
        match self {
            HTTPPathModifier::ReplaceFullPath(p) => {
                validate::path_value(&format!("{at}.replaceFullPath"), p)
            }
            HTTPPathModifier::ReplacePrefixMatch(p) => {
                validate::path_value(&format!("{at}.replacePrefixMatch"), p)
            }
        }
    }
}

impl HTTPRequestMirrorFilter {
    pub(crate) fn check(&self, at: &str) -> Checked {
        self.backend_ref.check(&format!("{at}.backendRef"))?;
        if self.percent.is_some() && self.fraction.is_some() {
            return Err(ValidationError::new(
                format!("{at}.fraction"),
                "set either percent or fraction, not both",
            ));
        }
        if let Some(p) = self.percent.filter(|p| *p > 100) {
            return Err(ValidationError::new(
                format!("{at}.percent"),
                format!("must be between 0 and 100, got {p}"),
            ));
        }
        if let Some(f) = self.fraction {
            if f.denominator == 0 || f.numerator > f.denominator {
                return Err(ValidationError::new(
                    format!("{at}.fraction"),
                    format!(
                        "numerator must be at most denominator, and denominator at least 1; \
                         got {}/{}",
                        f.numerator, f.denominator
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl HTTPRouteFilter {
    /// Checks the filter's settings; `at` is the filter's path.
    pub(crate) fn check(&self, at: &str) -> Checked {
        match self {
            HTTPRouteFilter::RequestHeaderModifier(h) => {
                h.check(&format!("{at}.requestHeaderModifier"))
            }
            HTTPRouteFilter::ResponseHeaderModifier(h) => {
                h.check(&format!("{at}.responseHeaderModifier"))
            }
            HTTPRouteFilter::RequestRedirect(r) => {
                let at = format!("{at}.requestRedirect");
                if let Some(h) = &r.hostname {
                    validate::hostname(&format!("{at}.hostname"), h)?;
                }
                if let Some(p) = &r.path {
                    p.check(&format!("{at}.path"))?;
                }
                validate::opt_port(&format!("{at}.port"), r.port)?;
                if ![301, 302, 303, 307, 308].contains(&r.status_code) {
                    return Err(ValidationError::new(
                        format!("{at}.statusCode"),
                        format!(
                            "must be one of 301, 302, 303, 307, 308, got {}",
                            r.status_code
                        ),
                    ));
                }
                Ok(())
            }
            HTTPRouteFilter::URLRewrite(r) => {
                let at = format!("{at}.urlRewrite");
                if let Some(h) = &r.hostname {
                    validate::hostname(&format!("{at}.hostname"), h)?;
                }
                r.path
                    .as_ref()
                    .map_or(Ok(()), |p| p.check(&format!("{at}.path")))
            }
            HTTPRouteFilter::RequestMirror(m) => m.check(&format!("{at}.requestMirror")),
        }
    }

    /// The path modifier of a redirect or rewrite, if any.
    pub fn path_modifier(&self) -> Option<&HTTPPathModifier> {
        match self {
            HTTPRouteFilter::RequestRedirect(r) => r.path.as_ref(),
            HTTPRouteFilter::URLRewrite(r) => r.path.as_ref(),
            _ => None,
        }
    }

    /// The filter's `type` as written in documents.
    pub fn type_name(&self) -> &'static str {
        match self {
            HTTPRouteFilter::RequestHeaderModifier(_) => "RequestHeaderModifier",
            HTTPRouteFilter::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
            HTTPRouteFilter::RequestRedirect(_) => "RequestRedirect",
            HTTPRouteFilter::URLRewrite(_) => "URLRewrite",
            HTTPRouteFilter::RequestMirror(_) => "RequestMirror",
        }
    }
}

impl GRPCRouteFilter {
    /// Checks the filter's settings; `at` is the filter's path.
    pub(crate) fn check(&self, at: &str) -> Checked {
        match self {
            GRPCRouteFilter::RequestHeaderModifier(h) => {
                h.check(&format!("{at}.requestHeaderModifier"))
            }
            GRPCRouteFilter::ResponseHeaderModifier(h) => {
                h.check(&format!("{at}.responseHeaderModifier"))
            }
            GRPCRouteFilter::RequestMirror(m) => m.check(&format!("{at}.requestMirror")),
        }
    }

    /// The filter's `type` as written in documents.
    pub fn type_name(&self) -> &'static str {
        match self {
            GRPCRouteFilter::RequestHeaderModifier(_) => "RequestHeaderModifier",
            GRPCRouteFilter::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
            GRPCRouteFilter::RequestMirror(_) => "RequestMirror",
        }
    }
}

/// A backendRef's filters change headers only: Trellis applies redirects, rewrites and
/// mirrors to whole rules, where the Gateway API's core support puts them.
pub(crate) fn check_backend_filter_types<'a>(
    at: &str,
    type_names: impl Iterator<Item = &'a str>,
) -> Checked {
    for (i, name) in type_names.enumerate() {
        if !matches!(name, "RequestHeaderModifier" | "ResponseHeaderModifier") {
            return Err(ValidationError::new(
                format!("{at}[{i}].type"),
                format!(
                    "{name} is not supported on a backendRef (only RequestHeaderModifier and \
                     ResponseHeaderModifier are); put it in the rule's filters"
                ),
            ));
        }
    }
    Ok(())
}

/// A filter type other than `RequestMirror` appears at most once in a list, and
/// `RequestRedirect` and `URLRewrite` exclude each other.
pub(crate) fn check_filter_list<'a>(
    at: &str,
    type_names: impl Iterator<Item = &'a str>,
) -> Checked {
    let mut seen = Vec::new();
    for (i, name) in type_names.enumerate() {
        if name != "RequestMirror" && seen.contains(&name) {
            return Err(ValidationError::new(
                format!("{at}[{i}].type"),
                format!("{name} may appear once per list; merge it into the earlier one"),
            ));
        }
        let clash = match name {
            "RequestRedirect" => Some("URLRewrite"),
            "URLRewrite" => Some("RequestRedirect"),
            _ => None,
        };
        if let Some(other) = clash.filter(|o| seen.contains(o)) {
            return Err(ValidationError::new(
                format!("{at}[{i}].type"),
                format!("{name} cannot be combined with {other} in one list"),
            ));
        }
        seen.push(name);
    }
    Ok(())
}
