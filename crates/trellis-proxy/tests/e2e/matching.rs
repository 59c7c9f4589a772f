//! Request → backend for every match condition, through a listener whose routes are in
//! the order the control plane sends them: the Gateway API's precedence (exact path,
//! longest path, method, most headers, most query parameters), which
//! `trellis-control`'s `compile/tests/precedence.rs` checks from HTTPRoute documents.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{start, url};

/// Each route goes to a backend named after the rule that made it.
const ROUTES: &str = r#"
      # HTTPRoute rules, most specific first.
      - {name: exact, match: {path: {exact: /books/featured}}, backend: exact}
      - {name: long-prefix, match: {path: {prefix: /books/reviews}}, backend: long-prefix}
      - {name: regex, match: {path: {regex: "/books/[0-9]+"}}, backend: regex}
      - {name: method, match: {path: {prefix: /books}, method: POST}, backend: method}
      - name: two-headers
        match:
          path: {prefix: /books}
          headers: [{name: x-tier, exact: gold}, {name: x-client, regex: "mobile-.*"}]
        backend: two-headers
      - {name: header, match: {path: {prefix: /books}, headers: [{name: x-tier, exact: gold}]}, backend: header}
      - {name: header-regex, match: {path: {prefix: /books}, headers: [{name: x-user, regex: "[a-m].*"}]}, backend: header-regex}
      - {name: query, match: {path: {prefix: /books}, query: [{name: version, exact: "2"}]}, backend: query}
      - {name: query-regex, match: {path: {prefix: /books}, query: [{name: id, regex: "[0-9]+"}]}, backend: query-regex}
      - {name: prefix, match: {path: {prefix: /books}}, backend: prefix}
      # GRPCRoute matches, as the control plane turns them into paths.
      - {name: grpc-method, match: {path: {exact: /shop.Books/Get}}, backend: grpc-method}
      - {name: grpc-service, match: {path: {prefix: /shop.Books/}}, backend: grpc-service}
      - {name: grpc-method-regex, match: {path: {regex: "/(?:shop\\.[A-Z][a-z]+)/(?:Watch.*)"}}, backend: grpc-method-regex}
      - {name: grpc-any-service, match: {path: {regex: "/[^/]+/Health"}}, backend: grpc-any-service}
      # No match: every request.
      - {name: fallback, backend: fallback}
"#;

const BACKENDS: [&str; 15] = [
    "exact",
    "long-prefix",
    "regex",
    "method",
    "two-headers",
    "header",
    "header-regex",
    "query",
    "query-regex",
    "prefix",
    "grpc-method",
    "grpc-service",
    "grpc-method-regex",
    "grpc-any-service",
    "fallback",
];

/// (method, path and query, headers, expected backend, why)
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

const CASES: &[Case] = &[
    // Paths.
    ("GET", "/books/featured", &[], "exact", "exact path"),
    (
        "POST",
        "/books/featured",
        &[("x-tier", "gold")],
        "exact",
        "exact beats method and headers",
    ),
    (
        "GET",
        "/books/featured/x",
        &[],
        "prefix",
        "exact is the whole path",
    ),
    (
        "GET",
        "/books/reviews/7",
        &[],
        "long-prefix",
        "longest prefix",
    ),
    (
        "GET",
        "/books/reviews",
        &[],
        "long-prefix",
        "a prefix takes itself",
    ),
    (
        "GET",
        "/books/reviewsx",
        &[],
        "prefix",
        "prefixes match whole segments",
    ),
    (
        "POST",
        "/books/reviews/7",
        &[],
        "long-prefix",
        "a longer prefix beats a method",
    ),
    ("GET", "/books/42", &[], "regex", "regular expression"),
    (
        "GET",
        "/books/42/x",
        &[],
        "prefix",
        "a regular expression matches the whole path",
    ),
    ("GET", "/books", &[], "prefix", "shortest prefix"),
    ("GET", "/Books", &[], "fallback", "paths are case-sensitive"),
    ("GET", "/", &[], "fallback", "no condition takes the rest"),
    // Method.
    ("POST", "/books", &[], "method", "method"),
    (
        "POST",
        "/books",
        &[("x-tier", "gold"), ("x-client", "mobile-ios")],
        "method",
        "a method beats headers",
    ),
    ("PUT", "/books", &[], "prefix", "another method"),
    // Headers.
    (
        "GET",
        "/books",
        &[("x-tier", "gold"), ("x-client", "mobile-ios")],
        "two-headers",
        "more headers first",
    ),
    (
        "GET",
        "/books",
        &[("X-Tier", "gold"), ("X-Client", "mobile-ios")],
        "two-headers",
        "header names ignore case",
    ),
    (
        "GET",
        "/books",
        &[("x-tier", "gold"), ("x-client", "desktop")],
        "header",
        "a regex header that does not match",
    ),
    (
        "GET",
        "/books",
        &[("x-tier", "gold")],
        "header",
        "exact header",
    ),
    (
        "GET",
        "/books",
        &[("x-tier", "Gold")],
        "prefix",
        "exact header values are case-sensitive",
    ),
    (
        "GET",
        "/books",
        &[("x-tier", "gold"), ("x-user", "alice")],
        "header",
        "equal header counts: rule order",
    ),
    (
        "GET",
        "/books",
        &[("x-user", "alice")],
        "header-regex",
        "regex header",
    ),
    (
        "GET",
        "/books",
        &[("x-user", "zoe")],
        "prefix",
        "regex header not matching",
    ),
    (
        "GET",
        "/books?version=2",
        &[("x-user", "bob")],
        "header-regex",
        "a header beats a query parameter",
    ),
    // Query parameters.
    (
        "GET",
        "/books?version=2",
        &[],
        "query",
        "exact query parameter",
    ),
    (
        "GET",
        "/books?a=1&version=2&b",
        &[],
        "query",
        "among other parameters",
    ),
    (
        "GET",
        "/books?version=20",
        &[],
        "prefix",
        "exact query values are whole",
    ),
    (
        "GET",
        "/books?Version=2",
        &[],
        "prefix",
        "query names are case-sensitive",
    ),
    (
        "GET",
        "/books?id=12",
        &[],
        "query-regex",
        "regex query parameter",
    ),
    (
        "GET",
        "/books?id=12a",
        &[],
        "prefix",
        "a regex matches the whole value",
    ),
    // gRPC methods.
    (
        "POST",
        "/shop.Books/Get",
        &[("content-type", "application/grpc")],
        "grpc-method",
        "service and method",
    ),
    (
        "POST",
        "/shop.Books/List",
        &[("content-type", "application/grpc")],
        "grpc-service",
        "service only",
    ),
    (
        "POST",
        "/shop.Ratings/WatchAll",
        &[("content-type", "application/grpc")],
        "grpc-method-regex",
        "regular expressions",
    ),
    (
        "POST",
        "/shop.RATINGS/WatchAll",
        &[("content-type", "application/grpc")],
        "fallback",
        "regular expressions on the whole service",
    ),
    (
        "POST",
        "/any.Service/Health",
        &[("content-type", "application/grpc")],
        "grpc-any-service",
        "method in any service",
    ),
];

#[tokio::test]
async fn every_match_condition_and_precedence_rule_picks_its_backend() {
    let mut servers = Vec::new();
    for name in BACKENDS {
        servers.push(
            HttpServer::start(name, ServerProtocol::Http1)
                .await
                .expect("server"),
        );
    }
    let backends: Vec<String> = BACKENDS
        .iter()
        .zip(&servers)
        .map(|(name, s)| format!("  - {{name: {name}, endpoints: [\"{}\"]}}", s.addr()))
        .collect();
    let yaml = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    routes:{ROUTES}backends:\n{}\n",
        backends.join("\n")
    );
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();
    let mut wrong = Vec::new();
    for (method, path, headers, want, why) in CASES {
        let mut req = Request::builder().method(*method).uri(url(&proxy, path));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let resp = client.send(req).await.expect("response");
        let got = resp
            .headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)");
        if got != *want {
            wrong.push(format!(
                "{method} {path} {headers:?}: {got}, want {want} ({why})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
