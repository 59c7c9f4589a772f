//! Routes: which requests a route takes (`match`) and which backends share them
//! (`backends` with weights). Routes are tried in order and the first match wins; the
//! control plane orders them by the Gateway API's precedence before sending them.

use serde::{Deserialize, Serialize};

use trellis_api::grpc_status::GrpcStatus;

use super::filter::{FaultConfig, HeaderModifier, RouteFilters};
use super::{ConfigError, Duration, MAX_WEIGHT};

/// A route from a listener to one or more backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs. Default: the route's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions a request must meet, all of them. Absent: every request.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RouteMatch>,
    /// Shorthand for one backend with weight 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Backends sharing the route's requests in proportion to their weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<WeightedBackend>,
    /// Time allowed from sending a request until the backend's response headers
    /// arrive, connecting included; past it the client gets 504. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Header changes, redirects, rewrites and mirrors. Default: none.
    #[serde(default, skip_serializing_if = "RouteFilters::is_empty")]
    pub filters: RouteFilters,
    /// Time allowed for each attempt to a backend, to its response headers; a retry
    /// gets a fresh one, while `timeout` bounds them all. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<Duration>,
    /// Retries of failed attempts. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Delays and aborts injected into matching requests. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultConfig>,
}

/// Retries of replay-safe requests: idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE) whose body has a known length of at most 64 KiB, and, when `grpcStatuses`
/// is set, gRPC calls whose whole request fits in 64 KiB. An attempt is retried when it
/// could not connect, failed before response headers, ran out of `backendTimeout`, or
/// was answered with one of `codes` or `grpcStatuses`; never once the client has been
/// sent anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt, at most 10. Default 1.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Response statuses (400 to 599) that are retried. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Wait before the first retry, doubled for each further one, with jitter.
    /// Default `25ms`.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// gRPC statuses that are retried, by name (`unavailable`, `resource-exhausted`,
    /// ...), whether the status comes in the response headers (trailers-only) or in
    /// trailers before any message. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_statuses: Vec<GrpcStatus>,
}

/// Most retries a route may ask for.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

fn default_backoff() -> Duration {
    Duration::from_millis(25)
}

/// A backend and its share of a route's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedBackend {
    pub name: String,
    /// Relative share; 0 takes no requests. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Header changes for requests sent to this backend, after the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Header changes for this backend's responses, after the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
}

impl WeightedBackend {
    /// A backend with a weight and no header changes.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self {
            name: name.into(),
            weight,
            request_headers: None,
            response_headers: None,
        }
    }
}

fn one() -> u32 {
    1
}

/// Conditions on a request; all must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
    /// HTTP method, upper case (`GET`, `POST`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Host names the request's authority (URI authority, else `Host` header) must be
    /// one of, case-insensitively. `books` takes `books` on any port; `books:8080` only
    /// that port. Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// How a request path must look. `prefix` matches whole path segments: `/api` matches
/// `/api` and `/api/books` but not `/apis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// A regular expression that must match the whole path.
    Regex(String),
}

/// A header or query parameter that must be present with a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// A regular expression that must match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Longest regular expression accepted, to bound compile time and memory.
const MAX_REGEX_LEN: usize = 1024;

impl RouteConfig {
    /// The backends and weights of this route, whichever form it was written in.
    pub fn weighted_backends(&self) -> Vec<WeightedBackend> {
        match &self.backend {
            Some(name) => vec![WeightedBackend::new(name.clone(), 1)],
            None => self.backends.clone(),
        }
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match (&self.backend, self.backends.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    format!("{at}.backends"),
                    "give either `backend` or `backends`, not both",
                ))
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    format!("{at}.backend"),
                    "a route needs a `backend` or a list of `backends`",
                ))
            }
            _ => {}
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.weight > MAX_WEIGHT {
                return Err(ConfigError::invalid(
                    format!("{at}.backends[{i}].weight"),
                    format!("must be between 0 and {MAX_WEIGHT}, got {}", b.weight),
                ));
            }
            for (field, m) in [
                ("requestHeaders", &b.request_headers),
                ("responseHeaders", &b.response_headers),
            ] {
                if let Some(m) = m {
                    m.validate(&format!("{at}.backends[{i}].{field}"))?;
                }
            }
        }
        if let Some(m) = &self.matches {
            m.validate(&format!("{at}.match"))?;
        }
        if let Some(retry) = &self.retry {
            if retry.attempts > MAX_RETRY_ATTEMPTS {
                return Err(ConfigError::invalid(
                    format!("{at}.retry.attempts"),
                    format!(
                        "must be at most {MAX_RETRY_ATTEMPTS}, got {}",
                        retry.attempts
                    ),
                ));
            }
            for (i, code) in retry.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    return Err(ConfigError::invalid(
                        format!("{at}.retry.codes[{i}]"),
                        format!("must be an HTTP status between 400 and 599, got {code}"),
                    ));
                }
            }
        }
        if let Some(fault) = &self.fault {
            fault.validate(&format!("{at}.fault"))?;
        }
        let path = self.matches.as_ref().and_then(|m| m.path.as_ref());
        self.filters.validate(&format!("{at}.filters"), path)
    }
}

impl RouteMatch {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match &self.path {
            Some(PathMatch::Exact(p)) | Some(PathMatch::Prefix(p)) if !p.starts_with('/') => {
                return Err(ConfigError::invalid(
                    format!("{at}.path"),
                    format!("{p:?} must start with '/'"),
                ))
            }
            Some(PathMatch::Regex(r)) => check_regex(&format!("{at}.path.regex"), r)?,
            _ => {}
        }
        for (field, list) in [("headers", &self.headers), ("query", &self.query)] {
            for (i, m) in list.iter().enumerate() {
                let here = format!("{at}.{field}[{i}]");
                if m.name.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{here}.name"),
                        "must not be empty",
                    ));
                }
                if field == "headers" && http::HeaderName::from_bytes(m.name.as_bytes()).is_err() {
                    return Err(ConfigError::invalid(
                        format!("{here}.name"),
                        format!("{:?} is not a valid header name", m.name),
                    ));
                }
                match (&m.exact, &m.regex) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(ConfigError::invalid(
                            here,
                            "give exactly one of `exact` or `regex`",
                        ))
                    }
                    (None, Some(r)) => check_regex(&format!("{here}.regex"), r)?,
                    (Some(_), None) => {}
                }
            }
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if host.is_empty()
                || host.parse::<http::uri::Authority>().is_err()
                || host.contains('@')
            {
                return Err(ConfigError::invalid(
                    format!("{at}.hosts[{i}]"),
                    format!("{host:?} is not a host name with an optional port"),
                ));
            }
        }
        if let Some(method) = &self.method {
            if http::Method::from_bytes(method.as_bytes()).is_err()
                || method.to_uppercase() != *method
            {
                return Err(ConfigError::invalid(
                    format!("{at}.method"),
                    format!("{method:?} is not an upper-case HTTP method such as GET or POST"),
                ));
            }
        }
        Ok(())
    }
}

fn check_regex(field: &str, pattern: &str) -> Result<(), ConfigError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(ConfigError::invalid(
            field,
            format!("longer than {MAX_REGEX_LEN} characters"),
        ));
    }
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        ConfigError::invalid(
            field,
            format!("invalid regular expression: {}", last_line(&e.to_string())),
        )
    })
}

/// The regex crate's messages end with the line that says what is wrong.
fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_string()
}
