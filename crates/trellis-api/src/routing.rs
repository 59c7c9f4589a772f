//! Whether a request meets a route's match conditions: the one evaluation the proxy
//! routes with and `trellis explain` reports, so the two cannot disagree.
//!
//! Paths: `Exact` is the whole path; `Prefix` matches whole segments (`/api` takes
//! `/api` and `/api/x`, not `/apis`; a trailing `/` is ignored); regular expressions
//! match the whole path or value. Header names compare case-insensitively (callers give
//! them in lower case) and a header matches when any of its values does; query
//! parameters compare as sent, not percent-decoded.

use regex::Regex;

/// A request as the matcher sees it.
pub struct MatchRequest<'a> {
    /// Upper case.
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a dyn HeaderValues,
}

/// Request headers, as whatever holds them can answer.
pub trait HeaderValues {
    /// Whether header `name` (lower case) has a value for which `pred` holds.
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl HeaderValues for Vec<(String, String)> {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && pred(v))
    }
}

/// A condition on the path.
#[derive(Debug)]
pub enum PathCondition {
    Exact(String),
    /// Without its trailing `/`.
    Prefix(String),
    Regex(Regex),
}

impl PathCondition {
    pub fn prefix(prefix: &str) -> Self {
        Self::Prefix(prefix.trim_end_matches('/').to_string())
    }

    /// `None` for an invalid pattern.
    pub fn regex(pattern: &str) -> Option<Self> {
        anchored(pattern).map(Self::Regex)
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.is_empty()),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

/// A condition on a header or query parameter value.
#[derive(Debug)]
pub enum ValueCondition {
    Exact(String),
    Regex(Regex),
}

impl ValueCondition {
    /// `None` for an invalid pattern.
    pub fn regex(pattern: &str) -> Option<Self> {
        anchored(pattern).map(Self::Regex)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// Patterns must match the whole value, as the Gateway API specifies.
fn anchored(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).ok()
}

/// Conditions a request must all meet; none takes every request.
#[derive(Debug, Default)]
pub struct RequestMatcher {
    pub path: Option<PathCondition>,
    /// Lower-case names.
    pub headers: Vec<(String, ValueCondition)>,
    pub query: Vec<(String, ValueCondition)>,
    /// Upper case.
    pub method: Option<String>,
}

impl RequestMatcher {
    pub fn matches(&self, req: &MatchRequest<'_>) -> bool {
        if self.method.as_deref().is_some_and(|m| m != req.method) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| !p.matches(req.path)) {
            return false;
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(name, c)| req.headers.any_value(name, &mut |v| c.matches(v)));
        if !headers_ok {
            return false;
        }
        let query = req.query.unwrap_or_default();
        self.query.iter().all(|(name, c)| {
            query
                .split('&')
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .any(|(k, v)| k == name && c.matches(v))
        })
    }
}
