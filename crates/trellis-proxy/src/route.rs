//! Route selection on the request path: the first route whose match fits the request,
//! then one of its backends by weight. The route's filters are in `filter`.

pub mod fault;
pub mod filter;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use regex::Regex;

use crate::config::{self, PathMatch, RouteConfig};
use crate::retry::RetryPolicy;
use crate::state::Backend;
use crate::telemetry::RouteLabels;

use self::fault::Fault;
use self::filter::{Filters, HeaderEdits};

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    matcher: Matcher,
    backends: Vec<RouteBackend>,
    total_weight: u64,
    /// Limit on the whole request, retries included, to response headers.
    pub timeout: Option<Duration>,
    /// Limit on each attempt, to response headers.
    pub backend_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub filters: Filters,
    pub fault: Option<Fault>,
}

/// One backend of a route, with the metric labels of the pair.
#[derive(Debug)]
pub struct RouteBackend {
    pub weight: u32,
    pub backend: Arc<Backend>,
    pub labels: RouteLabels,
    /// Header changes for this backend, after the route's.
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

impl Route {
    /// Compiles a validated route. `None` if a backend or a pattern is missing, which
    /// validation has already refused.
    pub fn build(
        config: &RouteConfig,
        index: usize,
        listener: &Arc<str>,
        lookup: impl Fn(&str) -> Option<Arc<Backend>>,
    ) -> Option<Self> {
        let name: Arc<str> = match &config.name {
            Some(n) => n.as_str().into(),
            None => index.to_string().into(),
        };
        let labels = |backend: &Arc<Backend>| RouteLabels {
            listener: listener.clone(),
            route: name.clone(),
            backend: backend.name.clone(),
        };
        let backends = config
            .weighted_backends()
            .into_iter()
            .map(|wb| {
                let backend = lookup(&wb.name)?;
                Some(RouteBackend {
                    weight: wb.weight,
                    labels: labels(&backend),
                    request_headers: HeaderEdits::build_opt(wb.request_headers.as_ref())?,
                    response_headers: HeaderEdits::build_opt(wb.response_headers.as_ref())?,
                    backend,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let matched_prefix = match config.matches.as_ref().and_then(|m| m.path.as_ref()) {
            Some(PathMatch::Prefix(p)) => p.as_str(),
            _ => "",
        };
        let filters = Filters::build(&config.filters, matched_prefix, labels, &lookup)?;
        let fault = match &config.fault {
            Some(f) => Some(Fault::build(f)?),
            None => None,
        };
        Some(Self {
            fault,
            filters,
            matcher: Matcher::build(config.matches.as_ref())?,
            total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
            backends,
            name,
            timeout: config.timeout.map(|t| t.get()),
            backend_timeout: config.backend_timeout.map(|t| t.get()),
            retry: config.retry.as_ref().map(RetryPolicy::build),
        })
    }

    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        self.matcher.matches(req)
    }

    /// A backend chosen in proportion to the weights; `None` when every weight is 0.
    pub fn pick_backend(&self) -> Option<&RouteBackend> {
        self.pick_backend_with(&mut fastrand::Rng::new())
    }

    /// [`Route::pick_backend`] drawing from `rng`, so tests can seed it.
    pub fn pick_backend_with(&self, rng: &mut fastrand::Rng) -> Option<&RouteBackend> {
        match self.backends.as_slice() {
            [only] if only.weight > 0 => Some(only),
            _ if self.total_weight == 0 => None,
            backends => {
                let mut ticket = rng.u64(..self.total_weight);
                backends.iter().find(|b| {
                    let w = u64::from(b.weight);
                    if ticket < w {
                        true
                    } else {
                        ticket -= w;
                        false
                    }
                })
            }
        }
    }

    /// The first backend, for labelling a failure that happened before one was chosen.
    pub fn first_backend(&self) -> Option<&RouteBackend> {
        self.backends.first()
    }
}

/// Compiled match conditions.
#[derive(Debug, Default)]
struct Matcher {
    path: Option<PathMatcher>,
    headers: Vec<(http::HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
    method: Option<http::Method>,
    hosts: Vec<HostMatcher>,
}

/// A host name, lower case, and the port it must come with, if any.
#[derive(Debug)]
struct HostMatcher {
    name: String,
    port: Option<u16>,
}

impl HostMatcher {
    fn build(host: &str) -> Option<Self> {
        let authority: http::uri::Authority = host.parse().ok()?;
        Some(Self {
            name: authority.host().to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }

    fn matches(&self, authority: &http::uri::Authority) -> bool {
        authority.host().eq_ignore_ascii_case(&self.name)
            && self.port.is_none_or(|p| authority.port_u16() == Some(p))
    }
}

/// The authority a request is for: its URI's (HTTP/2, or an HTTP/1 proxy request in
/// absolute form), else its `Host` header.
fn request_authority<B>(req: &Request<B>) -> Option<http::uri::Authority> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.clone());
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn build(m: &config::ValueMatch) -> Option<Self> {
        match (&m.exact, &m.regex) {
            (Some(v), _) => Some(Self::Exact(v.clone())),
            (None, Some(r)) => Some(Self::Regex(anchored(r)?)),
            (None, None) => None,
        }
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

impl Matcher {
    fn build(config: Option<&config::RouteMatch>) -> Option<Self> {
        let Some(config) = config else {
            return Some(Self::default());
        };
        let path = match &config.path {
            None => None,
            Some(PathMatch::Exact(p)) => Some(PathMatcher::Exact(p.clone())),
            Some(PathMatch::Prefix(p)) => {
                Some(PathMatcher::Prefix(p.trim_end_matches('/').to_string()))
            }
            Some(PathMatch::Regex(r)) => Some(PathMatcher::Regex(anchored(r)?)),
        };
        let headers = config
            .headers
            .iter()
            .map(|h| {
                let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                Some((name, ValueMatcher::build(h)?))
            })
            .collect::<Option<Vec<_>>>()?;
        let query = config
            .query
            .iter()
            .map(|q| Some((q.name.clone(), ValueMatcher::build(q)?)))
            .collect::<Option<Vec<_>>>()?;
        let method = match &config.method {
            Some(m) => Some(http::Method::from_bytes(m.as_bytes()).ok()?),
            None => None,
        };
        let hosts = config
            .hosts
            .iter()
            .map(|h| HostMatcher::build(h))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            path,
            headers,
            query,
            method,
            hosts,
        })
    }

    fn matches<B>(&self, req: &Request<B>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != req.method()) {
            return false;
        }
        if !self.hosts.is_empty() {
            let Some(authority) = request_authority(req) else {
                return false;
            };
            if !self.hosts.iter().any(|h| h.matches(&authority)) {
                return false;
            }
        }
        let path = req.uri().path();
        let path_ok = match &self.path {
            None => true,
            Some(PathMatcher::Exact(p)) => path == p,
            Some(PathMatcher::Prefix(p)) => {
                // Whole segments only: `/api` takes `/api` and `/api/x`, not `/apis`.
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.is_empty())
            }
            Some(PathMatcher::Regex(r)) => r.is_match(path),
        };
        if !path_ok {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, m)| {
            req.headers()
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| m.matches(v)))
        });
        if !headers_ok {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let query = req.uri().query().unwrap_or_default();
        self.query.iter().all(|(name, m)| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .any(|(k, v)| k == name && m.matches(v))
        })
    }
}

#[cfg(test)]
mod tests;
