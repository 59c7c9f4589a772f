//! The routing half of `trellis explain`: the route a request would take to a Service
//! and the backends it could go to, evaluated on the routes the caller's proxy holds,
//! with the proxy's own match evaluation ([`trellis_api::routing`]).

use serde::Serialize;
use trellis_api::proto::v1::{path_match, value_match, Route, RouteMatch, ValueMatch};
use trellis_api::routing::{
    HeaderValues, MatchRequest, PathCondition, RequestMatcher, ValueCondition,
};

use crate::compile::describe_match;

/// The route a request takes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RouteTaken {
    /// `<namespace>.<route>.<rule>`, or `default` for the Service's catch-all.
    name: String,
    /// The match condition, as `trellis describe` writes it.
    #[serde(rename = "match")]
    condition: String,
    /// Each backend with its weight and share of the requests, in percent.
    backends: Vec<BackendShare>,
    /// Set when the route answers with a redirect instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_status: Option<u32>,
    /// The FaultInjection that applies to this caller's requests, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(super) struct BackendShare {
    name: String,
    weight: u32,
    percent: f64,
}

/// The request to route.
pub(super) struct Routed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a Vec<(String, String)>,
}

/// The first of `routes` (in the proxy's order) whose match the request meets.
pub(super) fn route_taken(routes: &[Route], req: &Routed<'_>) -> Option<RouteTaken> {
    let request = MatchRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers as &dyn HeaderValues,
    };
    let route = routes
        .iter()
        .find(|r| matcher(r.r#match.as_ref()).is_some_and(|m| m.matches(&request)))?;
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    let backends = route
        .backends
        .iter()
        .map(|b| BackendShare {
            name: b.name.clone(),
            weight: b.weight,
            percent: if total == 0 {
                0.0
            } else {
                (f64::from(b.weight) * 100.0 / total as f64 * 10.0).round() / 10.0
            },
        })
        .collect();
    let filters = route.filters.as_ref();
    Some(RouteTaken {
        name: route.name.clone(),
        condition: describe_match(route.r#match.as_ref()),
        backends,
        redirect_status: filters
            .and_then(|f| f.redirect.as_ref())
            .map(|r| r.status_code),
        fault: route.fault.as_ref().map(|f| f.name.clone()),
        timeout_ms: route.timeout_ms,
    })
}

/// The shared matcher for a compiled match; `None` for a pattern that does not
/// compile, which the compiler never sends.
fn matcher(m: Option<&RouteMatch>) -> Option<RequestMatcher> {
    let Some(m) = m else {
        return Some(RequestMatcher::default());
    };
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(path_match::Kind::Exact(p)) => Some(PathCondition::Exact(p.clone())),
        Some(path_match::Kind::Prefix(p)) => Some(PathCondition::prefix(p)),
        Some(path_match::Kind::Regex(r)) => Some(PathCondition::regex(r)?),
    };
    let values = |list: &[ValueMatch], lower: bool| {
        list.iter()
            .map(|v| {
                let name = if lower {
                    v.name.to_ascii_lowercase()
                } else {
                    v.name.clone()
                };
                let condition = match v.kind.as_ref()? {
                    value_match::Kind::Exact(e) => ValueCondition::Exact(e.clone()),
                    value_match::Kind::Regex(r) => ValueCondition::regex(r)?,
                };
                Some((name, condition))
            })
            .collect::<Option<Vec<_>>>()
    };
    Some(RequestMatcher {
        path,
        headers: values(&m.headers, true)?,
        query: values(&m.query, false)?,
        method: (!m.method.is_empty()).then(|| m.method.clone()),
    })
}
