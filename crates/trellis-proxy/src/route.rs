//! Route selection on the request path: the first route whose match fits the request,
//! then one of its backends by weight. The route's filters are in `filter`.

pub mod fault;
pub mod filter;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use trellis_api::routing::{
    HeaderValues, MatchRequest, PathCondition, RequestMatcher, ValueCondition,
};

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

    /// Whether a TLS connection asking for `server_name` (lower case) takes this route:
    /// one of its hosts names it (`*.example.com` names every subdomain), or it has no
    /// hosts.
    pub fn matches_server_name(&self, server_name: Option<&str>) -> bool {
        let hosts = &self.matcher.hosts;
        hosts.is_empty()
            || server_name.is_some_and(|name| hosts.iter().any(|h| h.matches_name(name)))
    }

    /// Whether one of this route's hosts names `authority` (a `CONNECT` target). A
    /// route without hosts names nothing: a tunnel must be for a host the mesh knows.
    pub fn names_authority(&self, authority: &http::uri::Authority) -> bool {
        self.matcher.hosts.iter().any(|h| h.matches(authority))
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

/// Compiled match conditions: the host here, the rest in the shared
/// [`RequestMatcher`].
#[derive(Debug, Default)]
struct Matcher {
    request: RequestMatcher,
    hosts: Vec<HostMatcher>,
}

/// A host name, lower case, and the port it must come with, if any. A name written
/// `*.example.com` is kept as its suffix `.example.com` and matches every name that
/// ends with it (Gateway API wildcard hostnames), not `example.com` itself.
#[derive(Debug)]
struct HostMatcher {
    name: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostMatcher {
    fn build(host: &str) -> Option<Self> {
        let (wildcard, host) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => (true, &host[2..]),
            _ => (false, host),
        };
        let authority: http::uri::Authority = host.parse().ok()?;
        let name = authority.host().to_ascii_lowercase();
        Some(Self {
            name: if wildcard { format!(".{name}") } else { name },
            wildcard,
            port: authority.port_u16(),
        })
    }

    fn matches(&self, authority: &http::uri::Authority) -> bool {
        self.matches_name(authority.host())
            && self.port.is_none_or(|p| authority.port_u16() == Some(p))
    }

    fn matches_name(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len()
                && host
                    .get(host.len() - self.name.len()..)
                    .is_some_and(|end| end.eq_ignore_ascii_case(&self.name))
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }
}

/// The authority a request is for: its URI's (HTTP/2, or an HTTP/1 proxy request in
/// absolute form), else its `Host` header.
pub(crate) fn request_authority<B>(req: &Request<B>) -> Option<http::uri::Authority> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.clone());
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

/// A request's headers as the shared matcher asks for them.
struct Headers<'a>(&'a http::HeaderMap);

impl HeaderValues for Headers<'_> {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *pred))
    }
}

fn value_condition(m: &config::ValueMatch) -> Option<ValueCondition> {
    match (&m.exact, &m.regex) {
        (Some(v), _) => Some(ValueCondition::Exact(v.clone())),
        (None, Some(r)) => ValueCondition::regex(r),
        (None, None) => None,
    }
}

impl Matcher {
    fn build(config: Option<&config::RouteMatch>) -> Option<Self> {
        let Some(config) = config else {
            return Some(Self::default());
        };
        let path = match &config.path {
            None => None,
            Some(PathMatch::Exact(p)) => Some(PathCondition::Exact(p.clone())),
            Some(PathMatch::Prefix(p)) => Some(PathCondition::prefix(p)),
            Some(PathMatch::Regex(r)) => Some(PathCondition::regex(r)?),
        };
        let headers = config
            .headers
            .iter()
            .map(|h| Some((h.name.to_ascii_lowercase(), value_condition(h)?)))
            .collect::<Option<Vec<_>>>()?;
        let query = config
            .query
            .iter()
            .map(|q| Some((q.name.clone(), value_condition(q)?)))
            .collect::<Option<Vec<_>>>()?;
        let hosts = config
            .hosts
            .iter()
            .map(|h| HostMatcher::build(h))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            request: RequestMatcher {
                path,
                headers,
                query,
                method: config.method.clone(),
            },
            hosts,
        })
    }

    fn matches<B>(&self, req: &Request<B>) -> bool {
        if !self.hosts.is_empty() {
            let Some(authority) = request_authority(req) else {
                return false;
            };
            if !self.hosts.iter().any(|h| h.matches(&authority)) {
                return false;
            }
        }
        self.request.matches(&MatchRequest {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: &Headers(req.headers()),
        })
    }
}

#[cfg(test)]
mod tests;
