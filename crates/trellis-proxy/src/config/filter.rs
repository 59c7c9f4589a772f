//! Route filters: what a route does to requests and responses besides forwarding them
//! (the Gateway API's HTTPRoute and GRPCRoute filters, as the control plane compiles
//! them).

use serde::{Deserialize, Serialize};

use super::route::{PathMatch, ValueMatch};
use super::{ConfigError, Duration};

/// Filters of one route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFilters {
    /// Header changes made to requests before they are sent on (mirrors included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Header changes made to responses before they are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
    /// Answer every request with this redirect instead of forwarding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Change the host or path before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Send copies of requests to other backends; their answers are dropped and never
    /// delay or change the response the client gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
}

/// Headers to set (replacing any value), add (beside any value) and remove.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Header>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Header>,
    /// Header names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A redirect built from the request and these replacements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`. Default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Default: the request's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Default: the request's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Default: the well-known port of `scheme` when it is set, else the request's port.
    /// Ports 80 for http and 443 for https are left out of the `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308. Default 302.
    #[serde(default = "found")]
    pub status_code: u16,
}

fn found() -> u16 {
    302
}

/// Rewrites made to a request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// Replacement host (`Host`, `:authority`). Default: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Default: keep the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// How a redirect or rewrite changes the path; the query is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathModifier {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix the route's `path.prefix` match matched (`/` when the route
    /// has no path match), keeping the rest: prefix `/api`, replacement `/v2`, request
    /// `/api/books` → `/v2/books`.
    Prefix(String),
}

/// Mirror `numerator / denominator` of a route's requests to `backend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub backend: String,
    /// Default 100.
    #[serde(default = "hundred")]
    pub numerator: u32,
    /// At least 1 and at least `numerator`. Default 100.
    #[serde(default = "hundred")]
    pub denominator: u32,
}

fn hundred() -> u32 {
    100
}

impl RouteFilters {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks everything but the mirrors' backend names, which the caller resolves;
    /// `path` is the route's path match.
    pub(super) fn validate(&self, at: &str, path: Option<&PathMatch>) -> Result<(), ConfigError> {
        for (field, m) in [
            ("requestHeaders", &self.request_headers),
            ("responseHeaders", &self.response_headers),
        ] {
            if let Some(m) = m {
                m.validate(&format!("{at}.{field}"))?;
            }
        }
        if let Some(r) = &self.redirect {
            if self.rewrite.is_some() {
                return Err(ConfigError::invalid(
                    format!("{at}.rewrite"),
                    "a route answering with a redirect forwards nothing to rewrite",
                ));
            }
            let at = format!("{at}.redirect");
            if let Some(s) = r
                .scheme
                .as_deref()
                .filter(|s| !["http", "https"].contains(s))
            {
                return Err(ConfigError::invalid(
                    format!("{at}.scheme"),
                    format!("must be http or https, got {s:?}"),
                ));
            }
            if let Some(h) = &r.hostname {
                check_hostname(&format!("{at}.hostname"), h)?;
            }
            if let Some(p) = &r.path {
                p.validate(&format!("{at}.path"), path)?;
            }
            if r.port == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{at}.port"),
                    "must be between 1 and 65535",
                ));
            }
            if ![301, 302, 303, 307, 308].contains(&r.status_code) {
                return Err(ConfigError::invalid(
                    format!("{at}.statusCode"),
                    format!(
                        "must be one of 301, 302, 303, 307, 308, got {}",
                        r.status_code
                    ),
                ));
            }
        }
        if let Some(r) = &self.rewrite {
            let at = format!("{at}.rewrite");
            if let Some(h) = &r.hostname {
                check_hostname(&format!("{at}.hostname"), h)?;
            }
            if let Some(p) = &r.path {
                p.validate(&format!("{at}.path"), path)?;
            }
        }
        for (i, m) in self.mirrors.iter().enumerate() {
            if m.denominator == 0 || m.numerator > m.denominator {
                return Err(ConfigError::invalid(
                    format!("{at}.mirrors[{i}]"),
                    format!(
                        "numerator must be at most denominator, and denominator at least 1; \
                         got {}/{}",
                        m.numerator, m.denominator
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl HeaderModifier {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        for (field, headers) in [("set", &self.set), ("add", &self.add)] {
            for (i, h) in headers.iter().enumerate() {
                let here = format!("{at}.{field}[{i}]");
                check_header_name(&format!("{here}.name"), &h.name)?;
                if http::HeaderValue::from_str(&h.value).is_err() {
                    return Err(ConfigError::invalid(
                        format!("{here}.value"),
                        format!("{:?} is not a valid header value", h.value),
                    ));
                }
            }
        }
        for (i, name) in self.remove.iter().enumerate() {
            check_header_name(&format!("{at}.remove[{i}]"), name)?;
        }
        Ok(())
    }
}

impl PathModifier {
    fn validate(&self, at: &str, path: Option<&PathMatch>) -> Result<(), ConfigError> {
        let (field, value) = match self {
            PathModifier::Full(v) => ("full", v),
            PathModifier::Prefix(v) => {
                if matches!(path, Some(PathMatch::Exact(_) | PathMatch::Regex(_))) {
                    return Err(ConfigError::invalid(
                        format!("{at}.prefix"),
                        "replacing the matched prefix needs a route whose path match is a \
                         prefix (or that has none)",
                    ));
                }
                ("prefix", v)
            }
        };
        if !value.starts_with('/') || value.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(ConfigError::invalid(
                format!("{at}.{field}"),
                format!("{value:?} is not a path starting with '/'"),
            ));
        }
        Ok(())
    }
}

fn check_header_name(at: &str, name: &str) -> Result<(), ConfigError> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::invalid(
            at,
            format!("{name:?} is not a valid header name"),
        )),
    }
}

fn check_hostname(at: &str, host: &str) -> Result<(), ConfigError> {
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            at,
            format!("{host:?} is not a host name"),
        ))
    }
}

/// Delays and aborts injected into a route's matching requests (a FaultInjection).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    /// Name in metrics. Default: `fault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Header conditions a request must all meet. Empty: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelayConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortConfig>,
}

/// Hold a share of the matching requests before routing them on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelayConfig {
    pub fixed: Duration,
    /// 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: u32,
}

/// Answer a share of the matching requests with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbortConfig {
    /// 400 to 599. Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// gRPC status code (1 to 16) for gRPC calls. Default: the one matching
    /// `httpStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// 0 to 100. Default 100.
    #[serde(default = "hundred")]
    pub percent: u32,
}

impl FaultConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let as_match = super::route::RouteMatch {
            headers: self.headers.clone(),
            ..Default::default()
        };
        as_match.validate(at)?;
        let percent = |field: String, p: u32| {
            if p > 100 {
                Err(ConfigError::invalid(
                    field,
                    format!("must be between 0 and 100, got {p}"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(d) = &self.delay {
            percent(format!("{at}.delay.percent"), d.percent)?;
        }
        if let Some(a) = &self.abort {
            percent(format!("{at}.abort.percent"), a.percent)?;
            if let Some(s) = a.http_status.filter(|s| !(400..=599).contains(s)) {
                return Err(ConfigError::invalid(
                    format!("{at}.abort.httpStatus"),
                    format!("must be between 400 and 599, got {s}"),
                ));
            }
            if let Some(s) = a.grpc_status.filter(|s| !(1..=16).contains(s)) {
                return Err(ConfigError::invalid(
                    format!("{at}.abort.grpcStatus"),
                    format!("must be a gRPC status code between 1 and 16, got {s}"),
                ));
            }
        }
        Ok(())
    }
}
