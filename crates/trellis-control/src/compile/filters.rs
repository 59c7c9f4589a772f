//! HTTPRoute and GRPCRoute filters into the proxy's `RouteFilters`: header modifiers,
//! redirects, URL rewrites and mirrors of a rule, and the header modifiers of a
//! backendRef (validation allows no other filter there).
//!
//! A GRPCRoute's filters are a subset of an HTTPRoute's with the same settings, so they
//! are compiled as HTTPRoute filters.

use trellis_api::proto::v1::{
    path_modifier, Header, HeaderModifier, Mirror, PathModifier, Redirect, Rewrite, RouteFilters,
};
use trellis_api::route::filter::{
    GRPCRouteFilter, HTTPHeaderFilter, HTTPPathModifier, HTTPRequestMirrorFilter, HTTPRouteFilter,
    RedirectScheme,
};

use super::names::backend_name;
use super::ServiceKey;

/// A rule's filters as the proxy takes them, and the Services it mirrors to (each a
/// backend the proxy then needs).
#[derive(Debug, Default)]
pub(super) struct RuleFilters {
    pub filters: Option<RouteFilters>,
    pub mirrors: Vec<ServiceKey>,
}

/// The same filter as an HTTPRoute filter.
pub(super) fn grpc_as_http(f: &GRPCRouteFilter) -> HTTPRouteFilter {
    match f {
        GRPCRouteFilter::RequestHeaderModifier(h) => {
            HTTPRouteFilter::RequestHeaderModifier(h.clone())
        }
        GRPCRouteFilter::ResponseHeaderModifier(h) => {
            HTTPRouteFilter::ResponseHeaderModifier(h.clone())
        }
        GRPCRouteFilter::RequestMirror(m) => HTTPRouteFilter::RequestMirror(m.clone()),
    }
}

/// Compiles a rule's filters; `route_ns` is the namespace a mirror's backendRef
/// defaults to.
pub(super) fn rule<'a>(
    filters: impl IntoIterator<Item = &'a HTTPRouteFilter>,
    route_ns: &str,
) -> RuleFilters {
    let mut out = RouteFilters::default();
    let mut mirrors = Vec::new();
    for f in filters {
        match f {
            HTTPRouteFilter::RequestHeaderModifier(h) => {
                out.request_headers = Some(header_modifier(h))
            }
            HTTPRouteFilter::ResponseHeaderModifier(h) => {
                out.response_headers = Some(header_modifier(h))
            }
            HTTPRouteFilter::RequestRedirect(r) => {
                out.redirect = Some(Redirect {
                    scheme: match r.scheme {
                        Some(RedirectScheme::Http) => "http".into(),
                        Some(RedirectScheme::Https) => "https".into(),
                        None => String::new(),
                    },
                    hostname: r.hostname.clone().unwrap_or_default(),
                    path: r.path.as_ref().map(path_modifier),
                    port: r.port.map_or(0, u32::from),
                    status_code: u32::from(r.status_code),
                })
            }
            HTTPRouteFilter::URLRewrite(r) => {
                out.rewrite = Some(Rewrite {
                    hostname: r.hostname.clone().unwrap_or_default(),
                    path: r.path.as_ref().map(path_modifier),
                })
            }
            HTTPRouteFilter::RequestMirror(m) => {
                let key = mirror_target(m, route_ns);
                let (numerator, denominator) = mirror_share(m);
                out.mirrors.push(Mirror {
                    backend: backend_name(&key),
                    numerator,
                    denominator,
                });
                mirrors.push(key);
            }
        }
    }
    RuleFilters {
        filters: (out != RouteFilters::default()).then_some(out),
        mirrors,
    }
}

/// A backendRef's request and response header modifiers.
pub(super) fn backend<'a>(
    filters: impl IntoIterator<Item = &'a HTTPRouteFilter>,
) -> (Option<HeaderModifier>, Option<HeaderModifier>) {
    let (mut request, mut response) = (None, None);
    for f in filters {
        match f {
            HTTPRouteFilter::RequestHeaderModifier(h) => request = Some(header_modifier(h)),
            HTTPRouteFilter::ResponseHeaderModifier(h) => response = Some(header_modifier(h)),
            // Refused on a backendRef by validation.
            _ => {}
        }
    }
    (request, response)
}

/// Header names are case-insensitive; the proxy gets them in lower case.
fn header_modifier(h: &HTTPHeaderFilter) -> HeaderModifier {
    let headers = |list: &[trellis_api::route::filter::HTTPHeader]| {
        list.iter()
            .map(|h| Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            })
            .collect()
    };
    HeaderModifier {
        set: headers(&h.set),
        add: headers(&h.add),
        remove: h.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    }
}

fn path_modifier(p: &HTTPPathModifier) -> PathModifier {
    let kind = match p {
        HTTPPathModifier::ReplaceFullPath(v) => path_modifier::Kind::Full(v.clone()),
        HTTPPathModifier::ReplacePrefixMatch(v) => path_modifier::Kind::Prefix(v.clone()),
    };
    PathModifier { kind: Some(kind) }
}

fn mirror_target(m: &HTTPRequestMirrorFilter, route_ns: &str) -> ServiceKey {
    let b = &m.backend_ref;
    ServiceKey::new(b.namespace.as_deref().unwrap_or(route_ns), &b.name)
}

/// `percent`, else `fraction`, else every request.
fn mirror_share(m: &HTTPRequestMirrorFilter) -> (u32, u32) {
    match (m.percent, m.fraction) {
        (Some(p), _) => (p, 100),
        (None, Some(f)) => (f.numerator, f.denominator),
        (None, None) => (100, 100),
    }
}
