//! A route's filters, compiled once per snapshot: header changes, the redirect it
//! answers with, the rewrite it makes before forwarding, and the backends it mirrors to.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{request, Request, Uri};

use crate::config::{self, PathModifier};
use crate::state::Backend;
use crate::telemetry::RouteLabels;

/// Header changes, names and values checked.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// `None` when a name or value is invalid, which validation has refused.
    pub fn build(config: &config::HeaderModifier) -> Option<Self> {
        let pairs = |list: &[config::Header]| {
            list.iter()
                .map(|h| {
                    Some((
                        HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                        HeaderValue::from_str(&h.value).ok()?,
                    ))
                })
                .collect::<Option<Vec<_>>>()
        };
        Some(Self {
            set: pairs(&config.set)?,
            add: pairs(&config.add)?,
            remove: config
                .remove
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect::<Option<_>>()?,
        })
    }

    /// Compiles an optional modifier; `Some(None)` when there is none.
    pub fn build_opt(config: Option<&config::HeaderModifier>) -> Option<Option<Self>> {
        match config {
            None => Some(None),
            Some(c) => Self::build(c).map(Some),
        }
    }

    /// Removes, then sets, then adds, so a header can be replaced and extended in one
    /// modifier.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Applies an optional set of header changes.
pub fn edit_headers(edits: Option<&HeaderEdits>, headers: &mut HeaderMap) {
    if let Some(edits) = edits {
        edits.apply(headers);
    }
}

/// A path change.
#[derive(Debug)]
enum PathEdit {
    Full(String),
    /// Replaces `matched` (the route's prefix, without a trailing `/`) with `with`
    /// (also without one).
    Prefix {
        matched: String,
        with: String,
    },
}

impl PathEdit {
    fn build(config: &PathModifier, matched_prefix: &str) -> Self {
        match config {
            PathModifier::Full(p) => PathEdit::Full(p.clone()),
            PathModifier::Prefix(p) => PathEdit::Prefix {
                matched: matched_prefix.trim_end_matches('/').to_string(),
                with: p.trim_end_matches('/').to_string(),
            },
        }
    }

    /// The new path; the query is the caller's to keep.
    fn apply(&self, path: &str) -> String {
        match self {
            PathEdit::Full(p) => p.clone(),
            PathEdit::Prefix { matched, with } => {
                // The route matched whole segments, so the rest is empty or starts with
                // `/`; joining keeps exactly one `/` between the parts, as the Gateway
                // API's ReplacePrefixMatch examples do.
                let rest = path.strip_prefix(matched.as_str()).unwrap_or(path);
                let joined = format!("{with}{rest}");
                if joined.is_empty() {
                    "/".to_string()
                } else {
                    joined
                }
            }
        }
    }

    /// The request's path and query with the path changed.
    fn apply_to(&self, uri: &Uri) -> Option<PathAndQuery> {
        let path = self.apply(uri.path());
        let with_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        with_query.parse().ok()
    }
}

/// Answers requests with a redirect.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<PathEdit>,
    port: Option<u16>,
    pub status: http::StatusCode,
}

impl Redirect {
    fn build(config: &config::Redirect, matched_prefix: &str) -> Option<Self> {
        Some(Self {
            scheme: config.scheme.clone(),
            hostname: config.hostname.clone(),
            path: config
                .path
                .as_ref()
                .map(|p| PathEdit::build(p, matched_prefix)),
            port: config.port,
            status: http::StatusCode::from_u16(config.status_code).ok()?,
        })
    }

    /// The `Location` for a request: each part from the filter when it sets it, else
    /// from the request. The port is the filter's, else the well-known port of the
    /// filter's scheme, else the request's; 80 for http and 443 for https are left out.
    pub fn location<B>(&self, req: &Request<B>) -> String {
        let authority = super::request_authority(req);
        let scheme = self
            .scheme
            .as_deref()
            .or(req.uri().scheme_str())
            .unwrap_or("http");
        let host = match (&self.hostname, &authority) {
            (Some(h), _) => h.as_str(),
            (None, Some(a)) => a.host(),
            (None, None) => "localhost",
        };
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => authority.as_ref().and_then(Authority::port_u16),
        };
        let port = port
            .filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)))
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let uri = req.uri();
        let path = match &self.path {
            Some(edit) => edit.apply(uri.path()),
            None => uri.path().to_string(),
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{host}{port}{path}{query}")
    }
}

/// Changes the host or path of a request before it is forwarded.
#[derive(Debug)]
pub struct Rewrite {
    hostname: Option<HeaderValue>,
    path: Option<PathEdit>,
}

impl Rewrite {
    fn build(config: &config::Rewrite, matched_prefix: &str) -> Option<Self> {
        Some(Self {
            hostname: match &config.hostname {
                Some(h) => Some(HeaderValue::from_str(h).ok()?),
                None => None,
            },
            path: config
                .path
                .as_ref()
                .map(|p| PathEdit::build(p, matched_prefix)),
        })
    }

    pub fn apply(&self, parts: &mut request::Parts) {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        if let Some(host) = &self.hostname {
            // The request goes on in origin form with the new `Host`; the backend's
            // protocol then decides whether it travels as `Host` or `:authority`.
            uri.scheme = None;
            uri.authority = None;
            parts.headers.insert(header::HOST, host.clone());
        }
        if let (Some(edit), Some(pq)) = (&self.path, &uri.path_and_query) {
            let current = Uri::from(pq.clone());
            if let Some(changed) = edit.apply_to(&current) {
                uri.path_and_query = Some(changed);
            }
        }
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    }
}

/// Copies a share of the route's requests to a backend.
#[derive(Debug)]
pub struct Mirror {
    pub backend: Arc<Backend>,
    pub share: Share,
    /// Labels of the mirrored requests' metric.
    pub labels: RouteLabels,
}

/// `numerator / denominator` of the requests, drawn at random request by request.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    numerator: u32,
    denominator: u32,
}

impl Share {
    /// A denominator of 0 counts as 1.
    pub fn new(numerator: u32, denominator: u32) -> Self {
        Self {
            numerator,
            denominator: denominator.max(1),
        }
    }

    pub fn percent(percent: u32) -> Self {
        Self::new(percent, 100)
    }

    /// Whether this request is one of the share.
    pub fn sampled(&self) -> bool {
        self.sampled_with(&mut fastrand::Rng::new())
    }

    /// [`Share::sampled`] drawing from `rng`, so tests can seed it.
    pub fn sampled_with(&self, rng: &mut fastrand::Rng) -> bool {
        self.numerator >= self.denominator || rng.u32(..self.denominator) < self.numerator
    }
}

/// Every filter of a route.
#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
}

impl Filters {
    /// `None` when something validation refuses is found. `matched_prefix` is the
    /// route's path prefix (`""` when it has no path condition).
    pub fn build(
        config: &config::RouteFilters,
        matched_prefix: &str,
        labels: impl Fn(&Arc<Backend>) -> RouteLabels,
        lookup: impl Fn(&str) -> Option<Arc<Backend>>,
    ) -> Option<Self> {
        let mirrors = config
            .mirrors
            .iter()
            .map(|m| {
                let backend = lookup(&m.backend)?;
                Some(Mirror {
                    labels: labels(&backend),
                    backend,
                    share: Share::new(m.numerator, m.denominator),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            request_headers: HeaderEdits::build_opt(config.request_headers.as_ref())?,
            response_headers: HeaderEdits::build_opt(config.response_headers.as_ref())?,
            redirect: match &config.redirect {
                Some(r) => Some(Redirect::build(r, matched_prefix)?),
                None => None,
            },
            rewrite: match &config.rewrite {
                Some(r) => Some(Rewrite::build(r, matched_prefix)?),
                None => None,
            },
            mirrors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_one_slash() {
        // (route prefix, replacement, request path, forwarded path), from the Gateway
        // API's ReplacePrefixMatch examples.
        let cases = [
            ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo", "/xyz"),
            ("/foo", "/xyz", "/foo/", "/xyz/"),
            ("/foo", "/", "/foo", "/"),
            ("/foo", "/", "/foo/", "/"),
            ("/foo", "/", "/foo/bar", "/bar"),
            ("/", "/v2", "/books", "/v2/books"),
            ("", "/v2", "/books", "/v2/books"),
        ];
        for (prefix, with, path, want) in cases {
            let edit = PathEdit::build(&PathModifier::Prefix(with.into()), prefix);
            assert_eq!(edit.apply(path), want, "{prefix} → {with} on {path}");
        }
    }

    fn redirect(yaml: &str) -> Redirect {
        let config: config::Redirect = serde_saphyr::from_str(yaml).expect("redirect");
        Redirect::build(&config, "/old").expect("builds")
    }

    #[test]
    fn redirect_locations() {
        let req = |uri: &str, host: Option<&str>| {
            let mut b = Request::get(uri);
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            b.body(()).expect("request")
        };
        // (filter, request URI, Host, Location)
        let cases = [
            (
                "{}",
                "/a?x=1",
                Some("books:8080"),
                "http://books:8080/a?x=1",
            ),
            (
                "{scheme: https}",
                "/a",
                Some("books:8080"),
                "https://books/a",
            ),
            (
                "{scheme: https, port: 8443}",
                "/a",
                Some("books"),
                "https://books:8443/a",
            ),
            (
                "{hostname: shop.example}",
                "/a",
                Some("books:80"),
                "http://shop.example/a",
            ),
            ("{port: 80}", "/a", Some("books:8080"), "http://books/a"),
            (
                "{path: {prefix: /new}}",
                "/old/x?q",
                Some("books"),
                "http://books/new/x?q",
            ),
            (
                "{path: {full: /}}",
                "/old/x",
                Some("books"),
                "http://books/",
            ),
            ("{}", "http://books:9000/a", None, "http://books:9000/a"),
        ];
        for (filter, uri, host, want) in cases {
            assert_eq!(
                redirect(filter).location(&req(uri, host)),
                want,
                "{filter} on {uri}"
            );
        }
    }

    #[test]
    fn rewrite_changes_host_and_path() {
        let config = config::Rewrite {
            hostname: Some("internal.books".into()),
            path: Some(PathModifier::Prefix("/v2".into())),
        };
        let rewrite = Rewrite::build(&config, "/api").expect("builds");
        let (mut parts, ()) = Request::get("http://books:8080/api/list?page=2")
            .body(())
            .expect("request")
            .into_parts();
        rewrite.apply(&mut parts);
        assert_eq!(parts.uri, "/v2/list?page=2");
        assert_eq!(parts.headers[header::HOST], "internal.books");
    }

    #[test]
    fn shares_sample_their_fraction() {
        let mut rng = fastrand::Rng::with_seed(7);
        assert!((0..1000).all(|_| Share::percent(100).sampled_with(&mut rng)));
        assert!((0..1000).all(|_| !Share::percent(0).sampled_with(&mut rng)));
        // A third, over seeded draws: within a tenth of the expected count.
        const DRAWS: u32 = 30_000;
        let third = Share::new(1, 3);
        for seed in 0..10 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let got = (0..DRAWS).filter(|_| third.sampled_with(&mut rng)).count();
            let got = u32::try_from(got).expect("fits");
            assert!(got.abs_diff(DRAWS / 3) <= DRAWS / 30, "seed {seed}: {got}");
        }
    }

    #[test]
    fn header_edits_remove_then_set_then_add() {
        let config: config::HeaderModifier = serde_saphyr::from_str(
            "{set: [{name: x-a, value: set}], add: [{name: x-b, value: added}], remove: [x-c, x-a]}",
        )
        .expect("modifier");
        let edits = HeaderEdits::build(&config).expect("builds");
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-b", HeaderValue::from_static("kept"));
        headers.insert("x-c", HeaderValue::from_static("gone"));
        edits.apply(&mut headers);
        assert_eq!(headers["x-a"], "set");
        let b: Vec<_> = headers.get_all("x-b").iter().collect();
        assert_eq!(b, ["kept", "added"]);
        assert!(!headers.contains_key("x-c"));
    }
}
