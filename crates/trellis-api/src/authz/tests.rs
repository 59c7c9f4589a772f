//! Table-driven tests of evaluation, validation and the wire form.

use super::*;
use crate::proto::v1 as wire;

const WEB: &str = "spiffe://trellis.local/ns/shop/sa/web";
const CART: &str = "spiffe://trellis.local/ns/shop/sa/cart";
const ADMIN: &str = "spiffe://trellis.local/ns/ops/sa/admin";

/// A validated configuration from YAML.
fn config(yaml: &str) -> AuthorizationConfig {
    let config: AuthorizationConfig =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("test YAML: {e}\n{yaml}"));
    config
        .validate("authorization")
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
    config
}

/// One request: caller, port, and for HTTP the method, path and headers.
struct Call {
    from: Option<&'static str>,
    port: Option<u16>,
    http: Option<HttpCall>,
}

struct HttpCall {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
}

fn get(from: Option<&'static str>, path: &'static str) -> Call {
    Call {
        from,
        port: Some(8080),
        http: Some(HttpCall {
            method: "GET",
            path,
            headers: Vec::new(),
        }),
    }
}

fn with_method(mut call: Call, method: &'static str) -> Call {
    if let Some(http) = &mut call.http {
        http.method = method;
    }
    call
}

fn with_header(mut call: Call, name: &str, value: &str) -> Call {
    if let Some(http) = &mut call.http {
        http.headers.push((name.to_string(), value.to_string()));
    }
    call
}

fn on_port(mut call: Call, port: Option<u16>) -> Call {
    call.port = port;
    call
}

fn tcp(from: Option<&'static str>, port: u16) -> Call {
    Call {
        from,
        port: Some(port),
        http: None,
    }
}

/// `allow p#0`, `deny default`, `deny no-allow-match`.
fn decide(authorizer: &Authorizer, call: &Call) -> String {
    let request = Request {
        peer: call.from.map(Peer::from_identity),
        port: call.port,
        http: call.http.as_ref().map(|h| HttpRequest {
            method: h.method,
            path: h.path,
            headers: &h.headers,
        }),
    };
    let decision = authorizer.evaluate(&request);
    let verdict = if decision.allowed { "allow" } else { "deny" };
    match decision.decided_by {
        DecidedBy::Rule { policy, rule, .. } => format!("{verdict} {policy}#{rule}"),
        other => format!("{verdict} {}", other.name()),
    }
}

fn allow(rule: &str) -> String {
    format!("policies: [{{name: p, action: allow, rules: [{rule}]}}]")
}

fn deny(rule: &str) -> String {
    format!("policies: [{{name: d, action: deny, rules: [{rule}]}}]")
}

#[test]
fn each_kind_of_rule_allows_and_denies() {
    let by_ids = |ids: &str| allow(&format!("{{from: [{{identities: [{ids}]}}]}}"));
    let to = |field: &str| allow(&format!("{{to: [{{{field}}}]}}"));
    #[rustfmt::skip]
    let cases: Vec<(&str, String, Call, &str)> = vec![
        ("no policies, default allow", String::new(), get(Some(WEB), "/"), "allow default"),
        ("no policies, default deny", "defaultAction: deny".into(), get(Some(WEB), "/"), "deny default"),
        ("identity exact", by_ids(&format!("\"{WEB}\"")), get(Some(WEB), "/"), "allow p#0"),
        ("identity exact, other caller", by_ids(&format!("\"{WEB}\"")), get(Some(CART), "/"), "deny no-allow-match"),
        ("identity prefix", by_ids("\"spiffe://trellis.local/ns/shop/*\""), get(Some(CART), "/"), "allow p#0"),
        ("identity prefix, other namespace", by_ids("\"spiffe://trellis.local/ns/shop/*\""), get(Some(ADMIN), "/"), "deny no-allow-match"),
        ("any identity", by_ids("\"*\""), get(Some(ADMIN), "/"), "allow p#0"),
        ("any identity, plaintext", by_ids("\"*\""), get(None, "/"), "deny no-allow-match"),
        ("namespace", allow("{from: [{namespaces: [ops]}]}"), get(Some(ADMIN), "/"), "allow p#0"),
        ("namespace, other", allow("{from: [{namespaces: [ops]}]}"), get(Some(WEB), "/"), "deny no-allow-match"),
        ("namespace, plaintext", allow("{from: [{namespaces: [ops]}]}"), get(None, "/"), "deny no-allow-match"),
        ("identity and namespace must both match", allow(&format!("{{from: [{{identities: [\"{WEB}\"], namespaces: [ops]}}]}}")), get(Some(WEB), "/"), "deny no-allow-match"),
        ("port", to("ports: [8080]"), get(Some(WEB), "/"), "allow p#0"),
        ("port, other", to("ports: [9090]"), get(Some(WEB), "/"), "deny no-allow-match"),
        ("method", to("methods: [GET, HEAD]"), get(Some(WEB), "/"), "allow p#0"),
        ("method, other", to("methods: [GET, HEAD]"), with_method(get(Some(WEB), "/"), "POST"), "deny no-allow-match"),
        ("path exact", to("paths: [{exact: /cart}]"), get(Some(WEB), "/cart"), "allow p#0"),
        ("path exact, longer", to("paths: [{exact: /cart}]"), get(Some(WEB), "/cart/1"), "deny no-allow-match"),
        ("path prefix", to("paths: [{prefix: /api}]"), get(Some(WEB), "/api/v1"), "allow p#0"),
        ("path prefix, the prefix itself", to("paths: [{prefix: /api}]"), get(Some(WEB), "/api"), "allow p#0"),
        ("path prefix, not a segment", to("paths: [{prefix: /api}]"), get(Some(WEB), "/apis"), "deny no-allow-match"),
        ("path prefix /", to("paths: [{prefix: /}]"), get(Some(WEB), "/anything"), "allow p#0"),
        ("header", to("headers: [{name: X-User, value: alice}]"), with_header(get(Some(WEB), "/"), "x-user", "alice"), "allow p#0"),
        ("header, other value", to("headers: [{name: x-user, value: alice}]"), with_header(get(Some(WEB), "/"), "x-user", "bob"), "deny no-allow-match"),
        ("header, absent", to("headers: [{name: x-user, value: alice}]"), get(Some(WEB), "/"), "deny no-allow-match"),
        ("every field of an entry", to("methods: [GET], paths: [{prefix: /api}]"), with_method(get(Some(WEB), "/api/x"), "DELETE"), "deny no-allow-match"),
        ("any entry", allow("{to: [{methods: [POST]}, {paths: [{exact: /ok}]}]}"), get(Some(WEB), "/ok"), "allow p#0"),
        ("second rule", "policies: [{name: p, rules: [{to: [{methods: [POST]}]}, {to: [{methods: [GET]}]}]}]".into(), get(Some(WEB), "/"), "allow p#1"),
        ("empty rule matches all", allow("{}"), get(None, "/"), "allow p#0"),
        ("allow without rules matches nothing", "policies: [{name: p, action: allow}]".into(), get(Some(WEB), "/"), "deny no-allow-match"),
        ("deny", deny(&format!("{{from: [{{identities: [\"{WEB}\"]}}]}}")), get(Some(WEB), "/"), "deny d#0"),
        ("deny, other caller gets the default", deny(&format!("{{from: [{{identities: [\"{WEB}\"]}}]}}")), get(Some(CART), "/"), "allow default"),
        ("deny, plaintext is not an identity", deny("{from: [{identities: [\"*\"]}]}"), get(None, "/"), "allow default"),
        ("deny by path", deny("{to: [{paths: [{prefix: /admin}]}]}"), get(Some(WEB), "/admin/users"), "deny d#0"),
    ];
    for (case, yaml, call, want) in cases {
        let authorizer = Authorizer::new(&config(&yaml));
        assert_eq!(decide(&authorizer, &call), want, "{case}");
    }
}

#[test]
fn deny_wins_and_default_applies_only_without_allow_policies() {
    let yaml = format!(
        r#"
defaultAction: deny
policies:
  - name: shop/allow-shop
    rules: [{{from: [{{namespaces: [shop]}}]}}]
  - name: shop/deny-cart
    action: deny
    rules:
      - {{to: [{{methods: [DELETE]}}]}}
      - {{from: [{{identities: ["{CART}"]}}], to: [{{paths: [{{prefix: /admin}}]}}]}}
"#
    );
    let authorizer = Authorizer::new(&config(&yaml));
    let cases = [
        (get(Some(WEB), "/"), "allow shop/allow-shop#0"),
        (get(Some(CART), "/"), "allow shop/allow-shop#0"),
        (get(Some(CART), "/admin"), "deny shop/deny-cart#1"),
        (get(Some(WEB), "/admin"), "allow shop/allow-shop#0"),
        (
            with_method(get(Some(WEB), "/"), "DELETE"),
            "deny shop/deny-cart#0",
        ),
        (get(Some(ADMIN), "/"), "deny no-allow-match"),
        (get(None, "/"), "deny no-allow-match"),
    ];
    for (call, want) in cases {
        assert_eq!(decide(&authorizer, &call), want, "{:?}", call.from);
    }
    let names: Vec<&str> = authorizer.policy_names().iter().map(|n| &**n).collect();
    assert_eq!(names, ["shop/allow-shop", "shop/deny-cart"]);
}

/// TCP connections and explained requests lack some facts; conditions on them fail
/// closed: never matching an Allow rule, always matching a Deny rule.
#[test]
fn unknown_facts_fail_closed() {
    let cases: Vec<(String, Call, &str)> = vec![
        (
            allow("{to: [{ports: [5432]}]}"),
            tcp(Some(WEB), 5432),
            "allow p#0",
        ),
        (
            allow("{to: [{ports: [5432]}]}"),
            tcp(Some(WEB), 5433),
            "deny no-allow-match",
        ),
        (
            allow("{to: [{methods: [GET]}]}"),
            tcp(Some(WEB), 5432),
            "deny no-allow-match",
        ),
        (
            deny("{to: [{paths: [{prefix: /admin}]}]}"),
            tcp(Some(WEB), 5432),
            "deny d#0",
        ),
        (
            deny("{to: [{ports: [9090], methods: [GET]}]}"),
            tcp(Some(WEB), 5432),
            "allow default",
        ),
        (
            allow("{to: [{ports: [8080]}]}"),
            on_port(get(Some(WEB), "/"), None),
            "deny no-allow-match",
        ),
        (
            deny("{to: [{ports: [8080]}]}"),
            on_port(get(Some(WEB), "/"), None),
            "deny d#0",
        ),
        (
            allow(&format!("{{from: [{{identities: [\"{WEB}\"]}}]}}")),
            tcp(Some(WEB), 1),
            "allow p#0",
        ),
    ];
    for (yaml, call, want) in cases {
        let authorizer = Authorizer::new(&config(&yaml));
        assert_eq!(decide(&authorizer, &call), want, "{yaml}");
    }
}

#[test]
fn paths_are_normalized_before_matching() {
    let authorizer = Authorizer::new(&config(&deny("{to: [{paths: [{prefix: /admin}]}]}")));
    for path in [
        "/admin",
        "//admin",
        "/public/../admin",
        "/./admin/x",
        "/%61dmin",
        "/%2e%2e/admin",
        "\\admin",
        "/public/..%2fadmin/..",
    ] {
        let want = if path == "/public/..%2fadmin/.." {
            // `%2F` is not a separator: `..%2fadmin` is one segment, which the `..` after it
            // removes, leaving `/public/`.
            "allow default"
        } else {
            "deny d#0"
        };
        assert_eq!(decide(&authorizer, &get(Some(WEB), path)), want, "{path}");
    }
    let cases = [
        ("/a/b", "/a/b"),
        ("/a//b/", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/a/b/.", "/a/b/"),
        ("/%7Euser/%2F", "/~user/%2F"),
        ("/100%", "/100%"),
        ("", ""),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw), want, "{raw}");
    }
    assert!(matches!(
        normalize_path("/plain/path"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn peers_know_their_namespace() {
    assert_eq!(Peer::from_identity(WEB).namespace, "shop");
    assert_eq!(Peer::from_identity("spiffe://td/x/shop").namespace, "");
    assert_eq!(Peer::from_identity("web").namespace, "");
}

#[test]
fn configurations_are_checked_with_field_paths() {
    #[rustfmt::skip]
    let cases = [
        ("port: 0", "authorization.port", "between 1 and 65535"),
        ("policies: [{name: \"a b\"}]", "authorization.policies[0].name", "not a valid policy name"),
        ("policies: [{name: default}]", "authorization.policies[0].name", "reserved"),
        ("policies: [{name: a}, {name: a}]", "authorization.policies[1].name", "names an earlier policy"),
        ("policies: [{name: a, action: deny}]", "authorization.policies[0].rules", "needs at least one rule"),
        ("policies: [{name: a, rules: [{from: [{}]}]}]", "authorization.policies[0].rules[0].from[0]", "name identities, namespaces or both"),
        ("policies: [{name: a, rules: [{to: [{}]}]}]", "authorization.policies[0].rules[0].to[0]", "name ports, methods"),
        ("policies: [{name: a, rules: [{from: [{identities: [web]}]}]}]", "authorization.policies[0].rules[0].from[0].identities[0]", "is not an identity pattern"),
        ("policies: [{name: a, rules: [{from: [{identities: [\"spiffe://td/ns/*/sa/web\"]}]}]}]", "authorization.policies[0].rules[0].from[0].identities[0]", "'*' before its end"),
        ("policies: [{name: a, rules: [{from: [{identities: [\"spiffe://td/web\"]}]}]}]", "authorization.policies[0].rules[0].from[0].identities[0]", "not a SPIFFE ID of the mesh"),
        ("policies: [{name: a, rules: [{from: [{namespaces: [Shop]}]}]}]", "authorization.policies[0].rules[0].from[0].namespaces[0]", "not a valid name"),
        ("policies: [{name: a, rules: [{to: [{methods: [get]}]}]}]", "authorization.policies[0].rules[0].to[0].methods[0]", "not an HTTP method"),
        ("policies: [{name: a, rules: [{to: [{paths: [{exact: cart}]}]}]}]", "authorization.policies[0].rules[0].to[0].paths[0].exact", "must start with '/'"),
        ("policies: [{name: a, rules: [{to: [{paths: [{prefix: /a//b}]}]}]}]", "authorization.policies[0].rules[0].to[0].paths[0].prefix", "must not contain '//'"),
        ("policies: [{name: a, rules: [{to: [{headers: [{name: \"x y\", value: v}]}]}]}]", "authorization.policies[0].rules[0].to[0].headers[0].name", "not a valid header name"),
    ];
    for (yaml, path, message) in cases {
        let parsed: AuthorizationConfig = serde_saphyr::from_str(yaml).expect(yaml);
        let err = parsed.validate("authorization").expect_err(yaml);
        assert_eq!(err.path, path, "{yaml}: {err}");
        assert!(err.message.contains(message), "{yaml}: {err}");
    }
}

#[test]
fn the_wire_form_round_trips_and_bad_messages_are_refused() {
    let original = config(&format!(
        r#"
defaultAction: deny
port: 8080
policies:
  - name: shop/a
    rules:
      - from: [{{identities: ["{WEB}", "spiffe://trellis.local/ns/ops/*"], namespaces: [shop]}}]
        to: [{{ports: [8080], methods: [GET], paths: [{{exact: /x}}, {{prefix: /y}}], headers: [{{name: h, value: v}}]}}]
  - name: shop/b
    action: deny
    rules: [{{}}]
"#
    ));
    let w = original.to_wire();
    assert_eq!(w.default_action, wire::AuthorizationAction::Deny as i32);
    assert_eq!(
        AuthorizationConfig::from_wire(&w, "a").expect("reads"),
        original
    );

    let mut bad_action = w.clone();
    bad_action.policies[1].action = 7;
    let mut bad_port = w.clone();
    bad_port.policies[0].rules[0].to[0].ports[0] = 70_000;
    let mut no_path = w.clone();
    no_path.policies[0].rules[0].to[0].paths[1].kind = None;
    let cases = [
        (bad_action, "a.policies[1].action"),
        (bad_port, "a.policies[0].rules[0].to[0].ports[0]"),
        (no_path, "a.policies[0].rules[0].to[0].paths[1]"),
    ];
    for (message, path) in cases {
        let err = AuthorizationConfig::from_wire(&message, "a").expect_err(path);
        assert_eq!(err.path, path, "{err}");
    }
}
