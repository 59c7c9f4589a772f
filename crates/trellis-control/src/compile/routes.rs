//! Route resources into proxy routes: one proxy route per match of each rule (a proxy
//! route has one match, and a Gateway API rule ORs its matches), each with a key that
//! orders it by the Gateway API's precedence.
//!
//! HTTPRoute precedence, most specific first:
//! 1. an `Exact` path match;
//! 2. the longest path: a `PathPrefix` or `RegularExpression` value by its number of
//!    characters (a rule with no path counts as the prefix `/`); at equal length a
//!    prefix goes before a regular expression, whose reach is harder to judge;
//! 3. a method match;
//! 4. the most header matches;
//! 5. the most query parameter matches.
//!
//! GRPCRoute precedence, most specific first: the longest service, the longest method,
//! the most header matches. Method matches become path matches (`/<service>/<method>`
//! exact, `/<service>/` prefix, or a regular expression).
//!
//! Ties go to the oldest route (`metadata.creationTimestamp`), then the first by
//! `namespace/name`, then rule order, then match order within the rule.

use std::cmp::Reverse;

use trellis_api::proto::v1::{
    path_match, value_match, HeaderModifier, PathMatch, Retry, Route, RouteFilters, RouteMatch,
    ValueMatch, WeightedBackend,
};
use trellis_api::route::grpc::{
    GRPCHeaderMatch, GRPCMethodMatch, GRPCRouteMatch, GRPCRouteRule, GRPCRouteSpec,
};
use trellis_api::route::http::{
    HTTPHeaderMatch, HTTPMethod, HTTPQueryParamMatch, HTTPRouteMatch, HTTPRouteRule, HTTPRouteSpec,
    MatchType, PathMatchType,
};
use trellis_api::route::tcp::TCPRouteSpec;
use trellis_api::route::tls::TLSRouteSpec;
use trellis_api::route::{BackendRef, GRPCBackendRef, HTTPBackendRef};
use trellis_api::Resource;

use super::fault::ScopedFault;
use super::filters::{self, RuleFilters};
use super::index::timeout_ms;
use super::names::{backend_name, Created};
use super::ServiceKey;

/// Longest regular expression the proxy accepts.
const MAX_PROXY_REGEX_LEN: usize = 1024;

/// How specific a match is; compared element by element, larger first.
type Specificity = [Reverse<usize>; 6];

/// Where a compiled route goes among the routes of its parent Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Order {
    specificity: Specificity,
    created: Created,
    namespace: String,
    name: String,
    rule: usize,
    matched: usize,
}

/// One proxy route compiled from one match of a rule, for one parent Service.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub order: Order,
    /// For a consumer route (one in another namespace than its parent Service, as
    /// GAMMA defines it): the namespace whose proxies it applies to. `None` for a
    /// producer route, which applies to every proxy.
    pub consumer: Option<String>,
    /// The parent Service's port it is attached to; `None`: every port.
    pub port: Option<u16>,
    pub route: Route,
    /// The Services the route sends to, each a backend the proxy then needs.
    pub backends: Vec<ServiceKey>,
    /// The FaultInjection targeting the route resource, for the proxies it scopes.
    pub fault: Option<ScopedFault>,
}

impl Candidate {
    /// Whether the route applies to a proxy in `namespace`.
    pub fn applies_to(&self, namespace: &str) -> bool {
        self.consumer.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// Whether the route serves the parent's port `port`; `None`: a Service whose port
    /// numbers are not known, which every route serves.
    pub fn serves(&self, port: Option<u16>) -> bool {
        match (self.port, port) {
            (Some(mine), Some(port)) => mine == port,
            _ => true,
        }
    }
}

/// One backendRef of a rule: namespace, name, weight, and its request and response
/// header modifiers.
struct BackendSpec<'r> {
    namespace: Option<&'r str>,
    name: &'r str,
    weight: u32,
    headers: (Option<HeaderModifier>, Option<HeaderModifier>),
}

impl<'r> BackendSpec<'r> {
    fn http(b: &'r HTTPBackendRef) -> Self {
        Self {
            namespace: b.namespace.as_deref(),
            name: &b.name,
            weight: b.weight,
            headers: filters::backend(&b.filters),
        }
    }

    fn grpc(b: &'r GRPCBackendRef) -> Self {
        let as_http: Vec<_> = b.filters.iter().map(filters::grpc_as_http).collect();
        Self {
            namespace: b.namespace.as_deref(),
            name: &b.name,
            weight: b.weight,
            headers: filters::backend(&as_http),
        }
    }

    fn tcp(b: &'r BackendRef) -> Self {
        Self {
            namespace: b.namespace.as_deref(),
            name: &b.name,
            weight: b.weight,
            headers: (None, None),
        }
    }
}

/// What every candidate of one route resource and parent shares.
struct Base<'a> {
    resource: &'a Resource,
    parent: &'a ServiceKey,
    created: Created,
}

impl<'a> Base<'a> {
    fn new(resource: &'a Resource, parent: &'a ServiceKey) -> Self {
        Self {
            resource,
            parent,
            created: Created::parse(resource.metadata.creation_timestamp.as_deref()),
        }
    }

    /// `<route namespace>.<route name>.<rule name or index>`, the name metrics carry.
    /// The matches of one rule share it: they are one rule's alternatives.
    fn rule_name(&self, index: usize, name: Option<&str>) -> String {
        let m = &self.resource.metadata;
        match name {
            Some(rule) => format!("{}.{}.{rule}", m.namespace, m.name),
            None => format!("{}.{}.{index}", m.namespace, m.name),
        }
    }

    /// What every proxy route of rule `index` shares: its name, its backends (Service
    /// references with the route's namespace as default), timeout and filters.
    ///
    /// A rule without backends gets the parent's backend at weight 0, so the proxy
    /// answers its requests 503 `no backend` (or with its redirect) instead of letting
    /// them fall through to a less specific rule. Mirror targets are backends the proxy
    /// needs too.
    fn rule<'r>(
        &self,
        index: usize,
        name: Option<&str>,
        refs: impl Iterator<Item = BackendSpec<'r>>,
        limits: Limits,
        filters: RuleFilters,
    ) -> Rule {
        let route_ns = self.resource.metadata.namespace.as_str();
        let mut weighted = Vec::new();
        let mut keys = Vec::new();
        for spec in refs {
            // Cross-namespace references are honoured without a ReferenceGrant; the
            // API has no such kind yet.
            let key = ServiceKey::new(spec.namespace.unwrap_or(route_ns), spec.name);
            let (request_headers, response_headers) = spec.headers;
            weighted.push(WeightedBackend {
                name: backend_name(&key),
                weight: spec.weight,
                request_headers,
                response_headers,
            });
            keys.push(key);
        }
        if weighted.is_empty() {
            weighted.push(WeightedBackend {
                name: backend_name(self.parent),
                weight: 0,
                ..Default::default()
            });
            keys.push(self.parent.clone());
        }
        keys.extend(filters.mirrors);
        Rule {
            index,
            name: self.rule_name(index, name),
            backends: weighted,
            needs: keys,
            limits,
            filters: filters.filters,
        }
    }

    /// The proxy route of match `matched` of `rule`.
    fn candidate(
        &self,
        specificity: Specificity,
        rule: &Rule,
        matched: usize,
        route_match: Option<RouteMatch>,
    ) -> Candidate {
        let m = &self.resource.metadata;
        Candidate {
            order: Order {
                specificity,
                created: self.created,
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                rule: rule.index,
                matched,
            },
            consumer: (m.namespace != self.parent.namespace).then(|| m.namespace.clone()),
            port: None,
            route: Route {
                name: rule.name.clone(),
                r#match: route_match,
                backends: rule.backends.clone(),
                timeout_ms: rule.limits.timeout_ms,
                backend_timeout_ms: rule.limits.backend_timeout_ms,
                retry: rule.limits.retry.clone(),
                filters: rule.filters.clone(),
                fault: None,
            },
            backends: rule.needs.clone(),
            fault: None,
        }
    }
}

/// What the proxy routes of one rule share.
struct Rule {
    index: usize,
    name: String,
    backends: Vec<WeightedBackend>,
    /// Every Service the rule sends to, mirrors included.
    needs: Vec<ServiceKey>,
    limits: Limits,
    filters: Option<RouteFilters>,
}

/// A rule's timeouts and retries.
#[derive(Debug, Clone, Default)]
struct Limits {
    timeout_ms: Option<u64>,
    backend_timeout_ms: Option<u64>,
    retry: Option<Retry>,
}

/// Retries after the first attempt when a rule's `retry` does not say.
const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Wait before the first retry when a rule's `retry` does not say, in milliseconds.
const DEFAULT_RETRY_BACKOFF_MS: u64 = 25;

impl Limits {
    /// `timeouts.request` (else the parent's BackendPolicy `requestTimeout`),
    /// `timeouts.backendRequest` and `retry`; a zero duration is no limit.
    fn http(rule: &HTTPRouteRule, default_timeout: Option<u64>) -> Self {
        let timeouts = rule.timeouts.as_ref();
        Self {
            timeout_ms: match timeouts.and_then(|t| t.request) {
                Some(d) => timeout_ms(d),
                None => default_timeout,
            },
            backend_timeout_ms: timeouts
                .and_then(|t| t.backend_request)
                .and_then(timeout_ms),
            retry: rule.retry.as_ref().map(|r| Retry {
                codes: r.codes.iter().map(|c| u32::from(*c)).collect(),
                ..retry(r.attempts, r.backoff)
            }),
        }
    }

    /// A GRPCRoute rule's `retry` (statuses by name), with the parent's BackendPolicy
    /// `requestTimeout`: GRPCRoute has no timeouts of its own.
    fn grpc(rule: &GRPCRouteRule, default_timeout: Option<u64>) -> Self {
        Self {
            timeout_ms: default_timeout,
            backend_timeout_ms: None,
            retry: rule.retry.as_ref().map(|r| Retry {
                grpc_statuses: r.codes.iter().map(|c| c.code()).collect(),
                ..retry(r.attempts, r.backoff)
            }),
        }
    }
}

/// A retry's attempts and backoff, the defaults where the rule says nothing; no
/// statuses yet.
fn retry(attempts: Option<u32>, backoff: Option<trellis_api::Duration>) -> Retry {
    Retry {
        attempts: attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        backoff_ms: backoff.map_or(DEFAULT_RETRY_BACKOFF_MS, |d| timeout_ms(d).unwrap_or(0)),
        ..Retry::default()
    }
}

// === HTTPRoute ===

/// The candidates of an HTTPRoute attached to `parent`. `default_timeout` is the
/// parent's BackendPolicy `requestTimeout`, for rules that set none.
///
/// `hostnames` narrow nothing: in the mesh a route applies to every request addressed
/// to its parent Service, and the proxy's match has no host condition.
pub(super) fn http(
    resource: &Resource,
    spec: &HTTPRouteSpec,
    parent: &ServiceKey,
    default_timeout: Option<u64>,
) -> Vec<Candidate> {
    let base = Base::new(resource, parent);
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let compiled = base.rule(
            i,
            rule.name.as_deref(),
            rule.backend_refs.iter().map(BackendSpec::http),
            Limits::http(rule, default_timeout),
            filters::rule(&rule.filters, &resource.metadata.namespace),
        );
        if rule.matches.is_empty() {
            let any = http_specificity(None);
            out.push(base.candidate(any, &compiled, 0, None));
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let specificity = http_specificity(Some(m));
            out.push(base.candidate(specificity, &compiled, j, http_match(m)));
        }
    }
    out
}

fn http_specificity(m: Option<&HTTPRouteMatch>) -> Specificity {
    // No path condition is the prefix `/`, as the Gateway API defaults it.
    let (exact, len, not_regex) = match m.and_then(|m| m.path.as_ref()) {
        None => (false, 1, true),
        Some(p) => match p.type_ {
            PathMatchType::Exact => (true, p.value.len(), true),
            PathMatchType::PathPrefix => (false, p.value.len(), true),
            PathMatchType::RegularExpression => (false, p.value.len(), false),
        },
    };
    let method = m.is_some_and(|m| m.method.is_some());
    let headers = m.map_or(0, |m| m.headers.len());
    let query = m.map_or(0, |m| m.query_params.len());
    [
        usize::from(exact),
        len,
        usize::from(not_regex),
        usize::from(method),
        headers,
        query,
    ]
    .map(Reverse)
}

fn http_match(m: &HTTPRouteMatch) -> Option<RouteMatch> {
    let path = m.path.as_ref().map(|p| {
        let value = p.value.clone();
        let kind = match p.type_ {
            PathMatchType::Exact => path_match::Kind::Exact(value),
            PathMatchType::PathPrefix => path_match::Kind::Prefix(value),
            PathMatchType::RegularExpression => path_match::Kind::Regex(value),
        };
        PathMatch { kind: Some(kind) }
    });
    let headers = m.headers.iter().map(header).collect();
    let query = m.query_params.iter().map(query_param).collect();
    let method = m.method.map(method_name).unwrap_or_default();
    non_empty(RouteMatch {
        path,
        headers,
        query,
        method: method.to_string(),
        hosts: Vec::new(),
    })
}

fn header(h: &HTTPHeaderMatch) -> ValueMatch {
    value_match(&h.name, h.type_, &h.value)
}

fn query_param(q: &HTTPQueryParamMatch) -> ValueMatch {
    value_match(&q.name, q.type_, &q.value)
}

pub(super) fn value_match(name: &str, type_: MatchType, value: &str) -> ValueMatch {
    let value = value.to_string();
    let kind = match type_ {
        MatchType::Exact => value_match::Kind::Exact(value),
        MatchType::RegularExpression => value_match::Kind::Regex(value),
    };
    ValueMatch {
        name: name.to_string(),
        kind: Some(kind),
    }
}

fn method_name(method: HTTPMethod) -> &'static str {
    match method {
        HTTPMethod::Get => "GET",
        HTTPMethod::Head => "HEAD",
        HTTPMethod::Post => "POST",
        HTTPMethod::Put => "PUT",
        HTTPMethod::Delete => "DELETE",
        HTTPMethod::Connect => "CONNECT",
        HTTPMethod::Options => "OPTIONS",
        HTTPMethod::Trace => "TRACE",
        HTTPMethod::Patch => "PATCH",
    }
}

/// A match with no condition takes every request, which the proxy spells as no match.
fn non_empty(m: RouteMatch) -> Option<RouteMatch> {
    let empty =
        m.path.is_none() && m.headers.is_empty() && m.query.is_empty() && m.method.is_empty();
    (!empty).then_some(m)
}

// === GRPCRoute ===

/// The candidates of a GRPCRoute attached to `parent`; see [`http`] for
/// `default_timeout`.
pub(super) fn grpc(
    resource: &Resource,
    spec: &GRPCRouteSpec,
    parent: &ServiceKey,
    default_timeout: Option<u64>,
) -> Vec<Candidate> {
    let base = Base::new(resource, parent);
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let as_http: Vec<_> = rule.filters.iter().map(filters::grpc_as_http).collect();
        let compiled = base.rule(
            i,
            rule.name.as_deref(),
            rule.backend_refs.iter().map(BackendSpec::grpc),
            Limits::grpc(rule, default_timeout),
            filters::rule(&as_http, &resource.metadata.namespace),
        );
        if rule.matches.is_empty() {
            let any = grpc_specificity(None);
            out.push(base.candidate(any, &compiled, 0, None));
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let Some(route_match) = grpc_match(m) else {
                continue;
            };
            let specificity = grpc_specificity(Some(m));
            out.push(base.candidate(specificity, &compiled, j, route_match));
        }
    }
    out
}

fn grpc_specificity(m: Option<&GRPCRouteMatch>) -> Specificity {
    let method = m.and_then(|m| m.method.as_ref());
    let service = method
        .and_then(|mm| mm.service.as_deref())
        .map_or(0, |s| service_name(s).len());
    let name = method
        .and_then(|mm| mm.method.as_deref())
        .map_or(0, str::len);
    let headers = m.map_or(0, |m| m.headers.len());
    [service, name, headers, 0, 0, 0].map(Reverse)
}

/// The proxy match of a gRPC match: `Some(None)` matches every call; `None` is a match
/// the proxy cannot hold (a regular expression past its length limit), which is left
/// out rather than have the proxy refuse the whole configuration.
fn grpc_match(m: &GRPCRouteMatch) -> Option<Option<RouteMatch>> {
    let path = match &m.method {
        Some(method) => match grpc_path(method) {
            Some(path_match::Kind::Regex(r)) if r.len() > MAX_PROXY_REGEX_LEN => return None,
            kind => kind.map(|k| PathMatch { kind: Some(k) }),
        },
        None => None,
    };
    let headers = m.headers.iter().map(grpc_header).collect();
    // The method is always POST for gRPC; matching on it would add nothing.
    Some(non_empty(RouteMatch {
        path,
        headers,
        query: Vec::new(),
        method: String::new(),
        hosts: Vec::new(),
    }))
}

/// `/<service>/<method>` as a path condition.
fn grpc_path(m: &GRPCMethodMatch) -> Option<path_match::Kind> {
    let service = m.service.as_deref().map(service_name);
    let method = m.method.as_deref();
    match m.type_ {
        MatchType::Exact => match (service, method) {
            (Some(s), Some(m)) => Some(path_match::Kind::Exact(format!("/{s}/{m}"))),
            (Some(s), None) => Some(path_match::Kind::Prefix(format!("/{s}/"))),
            // A method name is an identifier: nothing in it needs escaping.
            (None, Some(m)) => Some(path_match::Kind::Regex(format!("/[^/]+/{m}"))),
            (None, None) => None,
        },
        MatchType::RegularExpression => {
            if service.is_none() && method.is_none() {
                return None;
            }
            let s = service.unwrap_or("[^/]+");
            let m = method.unwrap_or("[^/]+");
            Some(path_match::Kind::Regex(format!("/(?:{s})/(?:{m})")))
        }
    }
}

/// A fully qualified service as it appears in the path: without a leading dot.
fn service_name(s: &str) -> &str {
    s.strip_prefix('.').unwrap_or(s)
}

fn grpc_header(h: &GRPCHeaderMatch) -> ValueMatch {
    value_match(&h.name, h.type_, &h.value)
}

// === TCPRoute ===

/// The candidates of a TCPRoute attached to `parent`, one per rule, with no match and
/// no timeout. A TCP listener takes one route: the first candidate that applies.
pub(super) fn tcp(resource: &Resource, spec: &TCPRouteSpec, parent: &ServiceKey) -> Vec<Candidate> {
    let base = Base::new(resource, parent);
    spec.rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let compiled = base.rule(
                i,
                rule.name.as_deref(),
                rule.backend_refs.iter().map(BackendSpec::tcp),
                Limits::default(),
                RuleFilters::default(),
            );
            let none = [0; 6].map(Reverse);
            base.candidate(none, &compiled, 0, None)
        })
        .collect()
}

// === TLSRoute ===

/// The candidates of a TLSRoute attached to `parent`: its first rule, once per
/// hostname (or once, matching every server name, without hostnames). Ordered as the
/// Gateway API says: an exact name before a wildcard, a longer wildcard before a
/// shorter one, a route without hostnames last.
pub(super) fn tls(resource: &Resource, spec: &TLSRouteSpec, parent: &ServiceKey) -> Vec<Candidate> {
    let base = Base::new(resource, parent);
    let Some(rule) = spec.rules.first() else {
        return Vec::new();
    };
    let compiled = base.rule(
        0,
        rule.name.as_deref(),
        rule.backend_refs.iter().map(BackendSpec::tcp),
        Limits::default(),
        RuleFilters::default(),
    );
    if spec.hostnames.is_empty() {
        let none = [0; 6].map(Reverse);
        return vec![base.candidate(none, &compiled, 0, None)];
    }
    spec.hostnames
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let exact = usize::from(!host.starts_with("*."));
            let specificity = [exact, host.len(), 1, 0, 0, 0].map(Reverse);
            let route_match = RouteMatch {
                hosts: vec![host.clone()],
                ..Default::default()
            };
            base.candidate(specificity, &compiled, i, Some(route_match))
        })
        .collect()
}
