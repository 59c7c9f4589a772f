use super::*;
use crate::config::{BackendProtocol, LoadBalancer, RouteMatch, ValueMatch};

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(()).expect("request")
}

fn backend(name: &str) -> Arc<Backend> {
    let config = config::BackendConfig {
        name: name.into(),
        protocol: BackendProtocol::Http1,
        endpoints: vec![],
        load_balancer: LoadBalancer::Ewma,
        hash_on: None,
        locality: None,
        connect_timeout: config::Duration::from_secs(1),
        idle_timeout: config::Duration::from_secs(1),
        resilience: config::ResilienceConfig::default(),
        originate_tls: None,
    };
    Arc::new(Backend::build(
        &config,
        &Default::default(),
        None,
        None,
        None,
        &Default::default(),
    ))
}

fn route(matches: RouteMatch) -> Route {
    let config = RouteConfig {
        name: None,
        matches: Some(matches),
        backend: Some("b".into()),
        backends: vec![],
        timeout: None,
        filters: Default::default(),
        backend_timeout: None,
        retry: None,
        fault: None,
    };
    Route::build(&config, 0, &"l".into(), |n| Some(backend(n))).expect("builds")
}

fn exact(name: &str, value: &str) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        exact: Some(value.into()),
        regex: None,
    }
}

fn regex(name: &str, pattern: &str) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        exact: None,
        regex: Some(pattern.into()),
    }
}

#[test]
fn path_matches() {
    let cases: &[(PathMatch, &str, bool)] = &[
        (PathMatch::Exact("/books".into()), "/books", true),
        (PathMatch::Exact("/books".into()), "/books/1", false),
        (PathMatch::Prefix("/api".into()), "/api", true),
        (PathMatch::Prefix("/api".into()), "/api/books?x=1", true),
        (PathMatch::Prefix("/api".into()), "/apis", false),
        (PathMatch::Prefix("/api/".into()), "/api/x", true),
        (PathMatch::Prefix("/".into()), "/anything", true),
        (PathMatch::Regex("/books/[0-9]+".into()), "/books/42", true),
        (
            PathMatch::Regex("/books/[0-9]+".into()),
            "/books/42/reviews",
            false,
        ),
    ];
    for (path, uri, want) in cases {
        let r = route(RouteMatch {
            path: Some(path.clone()),
            ..Default::default()
        });
        assert_eq!(
            r.matches(&parts("GET", uri, &[])),
            *want,
            "{path:?} on {uri}"
        );
    }
}

#[test]
fn hosts_match_the_uri_authority_or_the_host_header() {
    let r = route(RouteMatch {
        hosts: vec!["books".into(), "books.shop:8080".into()],
        ..RouteMatch::default()
    });
    // An HTTP/1 request through a proxy port carries an absolute URI.
    assert!(r.matches(&parts("GET", "http://books/x", &[])));
    assert!(
        r.matches(&parts("GET", "http://BOOKS:9000/x", &[])),
        "any port"
    );
    assert!(r.matches(&parts("GET", "/x", &[("host", "books:80")])));
    assert!(r.matches(&parts("GET", "/x", &[("host", "books.shop:8080")])));
    assert!(
        !r.matches(&parts("GET", "/x", &[("host", "books.shop:8081")])),
        "wrong port"
    );
    assert!(!r.matches(&parts("GET", "/x", &[("host", "bookshop")])));
    assert!(!r.matches(&parts("GET", "/x", &[])), "no authority at all");
    assert!(
        !r.matches(&parts("GET", "http://ratings/x", &[("host", "books")])),
        "the URI's authority wins over the header"
    );
}

#[test]
fn headers_query_and_method_must_all_hold() {
    let r = route(RouteMatch {
        path: None,
        headers: vec![exact("x-canary", "true"), regex("user-agent", "curl/.*")],
        query: vec![exact("version", "2")],
        method: Some("POST".into()),
        hosts: vec![],
    });
    let good = [("x-canary", "true"), ("user-agent", "curl/8.0")];
    assert!(r.matches(&parts("POST", "/x?a=1&version=2", &good)));
    assert!(!r.matches(&parts("GET", "/x?version=2", &good)), "method");
    assert!(!r.matches(&parts("POST", "/x?version=3", &good)), "query");
    assert!(!r.matches(&parts("POST", "/x", &good)), "missing query");
    assert!(
        !r.matches(&parts("POST", "/x?version=2", &[("x-canary", "true")])),
        "header"
    );
    assert!(
        !r.matches(&parts(
            "POST",
            "/x?version=2",
            &[("x-canary", "TRUE"), ("user-agent", "curl/1")]
        )),
        "exact is case-sensitive"
    );
}

fn split(weights: &[(&str, u32)]) -> Route {
    let config = RouteConfig {
        name: Some("canary".into()),
        matches: None,
        backend: None,
        backends: weights
            .iter()
            .map(|(name, weight)| config::WeightedBackend::new(*name, *weight))
            .collect(),
        timeout: None,
        filters: Default::default(),
        backend_timeout: None,
        retry: None,
        fault: None,
    };
    Route::build(&config, 0, &"l".into(), |n| Some(backend(n))).expect("builds")
}

#[test]
fn weights_split_requests_in_proportion() {
    // Seeded, so the counts are the same on every run; many seeds, so the split is not
    // one lucky draw. The tolerance (a tenth of each share) is several standard
    // deviations wide at this many draws.
    const DRAWS: u32 = 20_000;
    let weights = [("v1", 70), ("v2", 20), ("v3", 10), ("off", 0)];
    let r = split(&weights);
    for seed in 0..20 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut counts = std::collections::HashMap::<&str, u32>::new();
        for _ in 0..DRAWS {
            let picked = r.pick_backend_with(&mut rng).expect("a backend");
            *counts.entry(&picked.backend.name).or_default() += 1;
        }
        for (name, weight) in weights {
            let got = counts.get(name).copied().unwrap_or_default();
            let want = DRAWS * weight / 100;
            assert!(
                got.abs_diff(want) <= want / 10,
                "seed {seed}: {name} (weight {weight}) got {got} of {DRAWS}, want about {want}"
            );
        }
    }
}

#[test]
fn all_zero_weights_pick_nothing() {
    let config = RouteConfig {
        name: None,
        matches: None,
        backend: None,
        backends: vec![config::WeightedBackend::new("v1", 0)],
        timeout: None,
        filters: Default::default(),
        backend_timeout: None,
        retry: None,
        fault: None,
    };
    let r = Route::build(&config, 0, &"l".into(), |n| Some(backend(n))).expect("builds");
    assert!(r.pick_backend().is_none());
}

#[test]
fn server_names_match_exact_and_wildcard_hosts() {
    let hosts = |hosts: &[&str]| {
        route(RouteMatch {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        })
    };
    let exact = hosts(&["books.example"]);
    assert!(exact.matches_server_name(Some("books.example")));
    assert!(!exact.matches_server_name(Some("api.books.example")));
    assert!(!exact.matches_server_name(None));
    let wildcard = hosts(&["*.example"]);
    for name in ["books.example", "api.books.example"] {
        assert!(wildcard.matches_server_name(Some(name)), "{name}");
    }
    for name in ["example", "books.example.org", "xexample"] {
        assert!(!wildcard.matches_server_name(Some(name)), "{name}");
    }
    let any = hosts(&[]);
    assert!(any.matches_server_name(None) && any.matches_server_name(Some("x.y")));
    // Wildcards hold for HTTP hosts too.
    assert!(wildcard.matches(&parts("GET", "http://api.example:8080/", &[])));
}
