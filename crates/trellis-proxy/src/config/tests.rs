use super::*;

const EXAMPLE: &str = r#"
listeners:
  - name: web
    address: 127.0.0.1:8000
    protocol: auto
    routes:
      - backend: web-app
backends:
  - name: web-app
    endpoints: [127.0.0.1:8080]
    loadBalancer: ewma
admin: 127.0.0.1:7191
"#;

#[test]
fn parses_the_documented_example_with_defaults() {
    let config = ProxyConfig::from_yaml(EXAMPLE).expect("example parses");
    let l = &config.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.protocol, ListenerProtocol::Auto);
    assert_eq!(l.detect_timeout, Duration::from_secs(1));
    let b = &config.backends[0];
    assert_eq!(b.protocol, BackendProtocol::Http1);
    assert_eq!(b.load_balancer, LoadBalancer::Ewma);
    assert_eq!(
        b.endpoints,
        vec![EndpointConfig {
            address: "127.0.0.1:8080".parse().expect("addr"),
            weight: 1,
            identity: None,
            zone: None,
            hostname: None,
        }]
    );
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
}

#[test]
fn endpoints_take_weights_in_map_form() {
    let yaml = EXAMPLE.replace(
        "endpoints: [127.0.0.1:8080]",
        "endpoints:\n      - 127.0.0.1:8080\n      - {address: 127.0.0.1:8081, weight: 3}",
    );
    let config = ProxyConfig::from_yaml(&yaml).expect("parses");
    let weights: Vec<u32> = config.backends[0]
        .endpoints
        .iter()
        .map(|e| e.weight)
        .collect();
    assert_eq!(weights, vec![1, 3]);
}

#[test]
fn mtls_and_endpoint_identities() {
    let yaml = EXAMPLE
        .replace("protocol: auto", "protocol: auto\n    mtls: strict")
        .replace(
            "endpoints: [127.0.0.1:8080]",
            "endpoints:\n      - {address: 127.0.0.1:7143, weight: 2, identity: \"spiffe://trellis.local/ns/shop/sa/cart\"}",
        );
    let config = ProxyConfig::from_yaml(&yaml).expect("parses");
    assert_eq!(config.listeners[0].mtls, MtlsMode::Strict);
    let endpoint = &config.backends[0].endpoints[0];
    assert_eq!(endpoint.weight, 2);
    assert_eq!(
        endpoint.identity.as_deref(),
        Some("spiffe://trellis.local/ns/shop/sa/cart")
    );
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(json["listeners"][0]["mtls"], "strict");
    assert_eq!(
        json["backends"][0]["endpoints"][0]["identity"],
        "spiffe://trellis.local/ns/shop/sa/cart"
    );
    let back: ProxyConfig = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, config);

    let plain = ProxyConfig::from_yaml(EXAMPLE).expect("parses");
    assert_eq!(plain.listeners[0].mtls, MtlsMode::Disabled);
    let json = serde_json::to_value(&plain).expect("serializes");
    assert!(json["backends"][0]["endpoints"][0]
        .get("identity")
        .is_none());
}

#[test]
fn effective_config_round_trips_through_json() {
    let config = ProxyConfig::from_yaml(EXAMPLE).expect("parses");
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(json["listeners"][0]["detectTimeout"], "1s");
    assert_eq!(json["backends"][0]["loadBalancer"], "ewma");
    let back: ProxyConfig = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, config);
}

/// Each broken document and the start of the error it must produce.
#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("- backend: web-app", "- backends: [{name: web-app, weight: 2000000}]", "listeners[0].routes[0].backends[0].weight: must be between 0 and 1000000"),
        ("- backend: web-app", "- backends: [{name: nope}]", "listeners[0].routes[0].backends[0].name: no backend named \"nope\""),
        ("- backend: web-app", "- backend: web-app\n        backends: [{name: web-app}]", "listeners[0].routes[0].backends: give either"),
        ("- backend: web-app", "- timeout: 1s", "listeners[0].routes[0].backend: a route needs"),
        ("- backend: web-app", "- backend: web-app\n        match: {path: {prefix: api}}", "listeners[0].routes[0].match.path: \"api\" must start with '/'"),
        ("- backend: web-app", "- backend: web-app\n        match: {path: {regex: \"(\"}}", "listeners[0].routes[0].match.path.regex: invalid regular expression"),
        ("- backend: web-app", "- backend: web-app\n        match: {headers: [{name: x, exact: a, regex: b}]}", "listeners[0].routes[0].match.headers[0]: give exactly one"),
        ("- backend: web-app", "- backend: web-app\n        match: {method: get}", "listeners[0].routes[0].match.method: \"get\" is not"),
        ("- backend: web-app", "- backend: web-app\n        match: {hosts: [books, 'a b']}", "listeners[0].routes[0].match.hosts[1]: \"a b\" is not a host name"),
        ("- backend: web-app", "- backend: web-app\n        match: {colour: red}", "listeners[0].routes[0].match.colour: unknown field"),
        ("- backend: web-app", "- backend: web-app\n        filters: {requestHeaders: {set: [{name: 'a b', value: x}]}}", "listeners[0].routes[0].filters.requestHeaders.set[0].name: \"a b\" is not a valid header name"),
        ("- backend: web-app", "- backend: web-app\n        filters: {responseHeaders: {remove: ['']}}", "listeners[0].routes[0].filters.responseHeaders.remove[0]: \"\" is not a valid header name"),
        ("- backend: web-app", "- backends: [{name: web-app, requestHeaders: {add: [{name: x, value: \"a\\nb\"}]}}]", "listeners[0].routes[0].backends[0].requestHeaders.add[0].value: "),
        ("- backend: web-app", "- backend: web-app\n        filters: {redirect: {statusCode: 200}}", "listeners[0].routes[0].filters.redirect.statusCode: must be one of 301, 302, 303, 307, 308, got 200"),
        ("- backend: web-app", "- backend: web-app\n        filters: {redirect: {scheme: ftp}}", "listeners[0].routes[0].filters.redirect.scheme: must be http or https"),
        ("- backend: web-app", "- backend: web-app\n        filters: {redirect: {}, rewrite: {}}", "listeners[0].routes[0].filters.rewrite: a route answering with a redirect"),
        ("- backend: web-app", "- backend: web-app\n        match: {path: {exact: /a}}\n        filters: {rewrite: {path: {prefix: /b}}}", "listeners[0].routes[0].filters.rewrite.path.prefix: replacing the matched prefix needs"),
        ("- backend: web-app", "- backend: web-app\n        filters: {rewrite: {path: {full: b}}}", "listeners[0].routes[0].filters.rewrite.path.full: \"b\" is not a path"),
        ("- backend: web-app", "- backend: web-app\n        filters: {rewrite: {hostname: 'a/b'}}", "listeners[0].routes[0].filters.rewrite.hostname: \"a/b\" is not a host name"),
        ("- backend: web-app", "- backend: web-app\n        filters: {mirrors: [{backend: shadow}]}", "listeners[0].routes[0].filters.mirrors[0].backend: no backend named \"shadow\""),
        ("- backend: web-app", "- backend: web-app\n        filters: {mirrors: [{backend: web-app, numerator: 3, denominator: 2}]}", "listeners[0].routes[0].filters.mirrors[0]: numerator must be at most denominator"),
        ("- backend: web-app", "- backend: web-app\n        filters: {mirror: {}}", "listeners[0].routes[0].filters.mirror: unknown field"),
        ("- backend: web-app", "- backend: web-app\n        retry: {attempts: 11}", "listeners[0].routes[0].retry.attempts: must be at most 10, got 11"),
        ("- backend: web-app", "- backend: web-app\n        retry: {codes: [503, 200]}", "listeners[0].routes[0].retry.codes[1]: must be an HTTP status between 400 and 599, got 200"),
        ("- backend: web-app", "- backend: web-app\n        retry: {backoff: soon}", "listeners[0].routes[0].retry.backoff: invalid duration"),
        ("protocol: auto", "protocol: tcp\n    routes:\n      - backend: web-app\n        match: {method: GET}\n    x-unused: 1", "listeners[0].x-unused: unknown field"),
        ("protocol: auto", "protocol: htp", "listeners[0].protocol: "),
        (
            "loadBalancer: ewma",
            "loadBalancer: random",
            "backends[0].loadBalancer: ",
        ),
        (
            "loadBalancer: ewma",
            "loadBalancer: consistent-hash",
            "backends[0].hashOn: loadBalancer consistent-hash needs hashOn",
        ),
        (
            "loadBalancer: ewma",
            "loadBalancer: ewma\n    hashOn: {header: x-user}",
            "backends[0].hashOn: ",
        ),
        (
            "loadBalancer: ewma",
            "loadBalancer: ewma\n    colour: red",
            "backends[0]",
        ),
        (
            "- backend: web-app",
            "- backend: nope",
            "listeners[0].routes[0].backend: no backend named \"nope\"",
        ),
        (
            "address: 127.0.0.1:8000",
            "address: nowhere",
            "listeners[0].address: ",
        ),
        (
            "[127.0.0.1:8080]",
            "[localhost]",
            "backends[0].endpoints[0]: ",
        ),
        (
            "[127.0.0.1:8080]",
            "[{address: 127.0.0.1:1, weight: 0}]",
            "backends[0].endpoints[0].weight: must be between",
        ),
        ("name: web\n", "name: \"we b\"\n", "listeners[0].name: "),
        (
            "protocol: auto\n    routes:\n      - backend: web-app",
            "protocol: tcp\n    routes: []",
            "listeners[0].routes: a TCP or TLS listener needs a route",
        ),
        (
            "protocol: auto\n    routes:\n      - backend: web-app",
            "protocol: tls\n    routes:\n      - backend: web-app\n        match: {path: {prefix: /}}",
            "listeners[0].routes[0].match: a tls listener matches on server names (hosts) only",
        ),
        (
            "protocol: auto",
            "protocol: tls\n    mtls: strict",
            "listeners[0].mtls: a tls listener passes its clients' TLS through",
        ),
        (
            "protocol: auto",
            "protocol: tcp\n    idleTimeout: soon",
            "listeners[0].idleTimeout: invalid duration",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    mtls: required",
            "listeners[0].mtls: unknown variant `required`, expected one of disabled, permissive, strict",
        ),
        (
            "[127.0.0.1:8080]",
            "[{address: 127.0.0.1:1, identity: \"spiffe://trellis.local/cart\"}]",
            "backends[0].endpoints[0].identity: \"spiffe://trellis.local/cart\" does not have the shape",
        ),
        (
            "[127.0.0.1:8080]",
            "[127.0.0.1:1, {address: 127.0.0.1:2, identity: cart}]",
            "backends[0].endpoints[1].identity: \"cart\" is not a SPIFFE ID",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    authorization: {defaultAction: maybe}",
            "listeners[0].authorization.defaultAction: unknown variant `maybe`, expected one of allow, deny",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    authorization: {policies: [{name: p, rules: [{from: [{principals: [a]}]}]}]}",
            "listeners[0].authorization.policies[0].rules[0].from[0].principals: unknown field",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    authorization: {policies: [{name: p, rules: [{from: [{identities: [\"spiffe://td/ns/*/sa/a\"]}]}]}]}",
            "listeners[0].authorization.policies[0].rules[0].from[0].identities[0]: \"spiffe://td/ns/*/sa/a\" has a '*' before its end",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    authorization: {policies: [{name: p, rules: [{to: [{ports: [0]}]}]}]}",
            "listeners[0].authorization.policies[0].rules[0].to[0].ports[0]: must be between 1 and 65535, got 0",
        ),
        (
            "protocol: auto",
            "protocol: auto\n    authorization: {policies: [{name: p, action: deny}]}",
            "listeners[0].authorization.policies[0].rules: a deny policy needs at least one rule",
        ),
        ("loadBalancer: ewma", "resilience: {retryBudget: {ratio: 2}}", "backends[0].resilience.retryBudget.ratio: must be between 0 and 1, got 2"),
        ("loadBalancer: ewma", "resilience: {circuitBreaker: {maxRequests: 0}}", "backends[0].resilience.circuitBreaker.maxRequests: must be at least 1"),
        ("loadBalancer: ewma", "resilience: {outlierDetection: {maxEjectionPercent: 101}}", "backends[0].resilience.outlierDetection.maxEjectionPercent: must be between 0 and 100"),
        ("loadBalancer: ewma", "resilience: {adaptiveConcurrency: {initialLimit: 5}}", "backends[0].resilience.adaptiveConcurrency.initialLimit: must be between minLimit (10)"),
        ("loadBalancer: ewma", "resilience: {healthCheck: {path: healthz}}", "backends[0].resilience.healthCheck.path: must start with '/'"),
        ("loadBalancer: ewma", "resilience: {breaker: {}}", "backends[0].resilience.breaker: unknown field"),
        ("protocol: auto", "protocol: auto\n    rateLimits: [{requestsPerSecond: 0}]", "listeners[0].rateLimits[0].requestsPerSecond: must be at least 1"),
        ("protocol: auto", "protocol: auto\n    rateLimits: [{requestsPerSecond: 9, share: {weight: 4, total: 3}}]", "listeners[0].rateLimits[0].share: weight must be between 1 and total, got 4 of 3"),
    ];
    for (from, to, want) in cases {
        let yaml = EXAMPLE.replacen(from, to, 1);
        assert_ne!(yaml, EXAMPLE, "case {to:?} did not change the document");
        let err = ProxyConfig::from_yaml(&yaml).expect_err(to).to_string();
        assert!(
            err.starts_with(want),
            "case {to:?}: got {err:?}, want prefix {want:?}"
        );
        assert!(!err.contains('\n'), "error spans lines: {err:?}");
    }
}

#[test]
fn authorization_is_read_and_shown() {
    let yaml = EXAMPLE.replace(
        "protocol: auto",
        "protocol: auto\n    authorization:\n      defaultAction: deny\n      port: 8080\n      policies:\n        - name: shop/allow-web\n          rules:\n            - from: [{namespaces: [shop]}]\n              to: [{methods: [GET], paths: [{prefix: /api}]}]",
    );
    let config = ProxyConfig::from_yaml(&yaml).expect("parses");
    let authz = config.listeners[0]
        .authorization
        .as_ref()
        .expect("authorization");
    assert_eq!(authz.port, Some(8080));
    assert_eq!(authz.policies[0].rules[0].to[0].methods, ["GET"]);
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(
        json["listeners"][0]["authorization"]["defaultAction"],
        "deny"
    );
    assert_eq!(
        json["listeners"][0]["authorization"]["policies"][0]["action"],
        "allow"
    );
    let back: ProxyConfig = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, config);
    let plain = serde_json::to_value(ProxyConfig::from_yaml(EXAMPLE).expect("parses"));
    assert!(plain.expect("serializes")["listeners"][0]
        .get("authorization")
        .is_none());
}

#[test]
fn unknown_field_error_names_the_field() {
    let yaml = EXAMPLE.replace("loadBalancer: ewma", "loadBalancer: ewma\n    colour: red");
    let err = ProxyConfig::from_yaml(&yaml)
        .expect_err("unknown field")
        .to_string();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn grpc_listener_needs_an_http2_backend() {
    let yaml = EXAMPLE.replace("protocol: auto", "protocol: grpc");
    let err = ProxyConfig::from_yaml(&yaml)
        .expect_err("grpc over http1")
        .to_string();
    assert!(err.contains("gRPC needs HTTP/2"), "{err}");
}

#[test]
fn duplicate_names_are_refused() {
    let yaml = EXAMPLE.replace(
        "admin: 127.0.0.1:7191",
        "  - name: web-app\n    endpoints: []\nadmin: 127.0.0.1:7191",
    );
    let err = ProxyConfig::from_yaml(&yaml)
        .expect_err("duplicate")
        .to_string();
    assert_eq!(err, "backends[1].name: duplicate backend name \"web-app\"");
}

#[test]
fn not_yaml_is_an_error_not_a_panic() {
    for text in ["", "{", "listeners: 3", "- a\n- b", "\u{0}\u{1}"] {
        assert!(ProxyConfig::from_yaml(text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn unreadable_file_names_the_path() {
    let err = ProxyConfig::load(Path::new("/nonexistent/trellis.yaml")).expect_err("missing");
    assert!(err
        .to_string()
        .starts_with("cannot read config file /nonexistent/trellis.yaml"));
}

const TRANSPARENT: &str = r#"
listeners:
  - name: outbound
    address: 127.0.0.1:7140
    routes: []
    originalDestination:
      egress: registryOnly
      targets:
        - addresses: [240.240.0.9, "10.0.0.7:8080"]
          listener: to-web
        - addresses: ["10.0.0.8:8080"]
          workload: {address: "10.0.0.8:7143", identity: "spiffe://trellis.local/ns/shop/sa/web"}
  - name: to-web
    address: 0.0.0.0:0
    bind: false
    routes: [{backend: web-app}]
backends:
  - name: web-app
    endpoints: [127.0.0.1:8080]
services: [{name: web, namespace: shop, virtualIp: 240.240.0.9}]
socketMark: 0x7e11
"#;

#[test]
fn transparent_mode_is_read_and_checked() {
    let config = ProxyConfig::from_yaml(TRANSPARENT).expect("parses");
    let table = config.listeners[0]
        .original_destination
        .as_ref()
        .expect("a table");
    assert_eq!(table.egress, EgressMode::RegistryOnly);
    assert_eq!(
        table.targets[0].addresses,
        [
            DestinationAddress::Ip("240.240.0.9".parse().expect("ip")),
            DestinationAddress::Socket("10.0.0.7:8080".parse().expect("addr")),
        ]
    );
    let workload = table.targets[1]
        .workload
        .as_ref()
        .expect("a workload target");
    assert_eq!(workload.address.to_string(), "10.0.0.8:7143");
    assert!(table.targets[1].listener.is_empty());
    assert!(!config.listeners[1].bind);
    assert_eq!(config.socket_mark, Some(0x7e11));
    assert_eq!(config.services[0].virtual_ip.to_string(), "240.240.0.9");

    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("listener: to-web", "listener: nowhere",
         "listeners[0].originalDestination.targets[0].listener: no listener named \"nowhere\""),
        ("    bind: false\n", "",
         "listeners[0].originalDestination.targets[0].listener: listener \"to-web\" must be unbound"),
        ("routes: []", "routes: [{backend: web-app}]",
         "listeners[0].routes: an original-destination listener has no routes"),
        ("\"10.0.0.7:8080\"", "\"10.0.0.7:port\"",
         "listeners[0].originalDestination.targets[0].addresses[1]: invalid destination"),
        ("[\"10.0.0.8:8080\"]\n          workload", "[\"10.0.0.8:8080\"]\n          listener: to-web\n          workload",
         "listeners[0].originalDestination.targets[1].listener: a target names a listener or a workload, not both"),
        ("sa/web\"}", "sa\"}",
         "listeners[0].originalDestination.targets[1].workload.identity: "),
        ("[\"10.0.0.8:8080\"]", "[]",
         "listeners[0].originalDestination.targets[1].addresses: at least one address is required"),
    ];
    for (from, to, want) in cases {
        let yaml = TRANSPARENT.replace(from, to);
        let err = ProxyConfig::from_yaml(&yaml).expect_err(want).to_string();
        assert!(err.starts_with(want), "{want}: got {err}");
    }
}

#[test]
fn a_shared_rate_limit_enforces_its_share() {
    let limit = |burst, share| RateLimitConfig {
        name: "shop/limits".into(),
        requests_per_second: 300,
        burst,
        per: RateLimitKey::Service,
        share,
    };
    assert_eq!(limit(None, None).rate(), (300.0, 300));
    let third = Some(RateShare {
        weight: 1,
        total: 3,
    });
    assert_eq!(limit(Some(600), third).rate(), (100.0, 200));
    // A bucket smaller than one token would admit nothing: it keeps one.
    assert_eq!(limit(Some(2), third).rate(), (100.0, 1));
}

/// The example of docs/proxy.md's "Egress".
const EGRESS: &str = r#"
listeners:
  - name: payments
    address: 127.0.0.1:7150
    protocol: http1
    egress: true
    routes:
      - match: {hosts: [api.payments.example]}
        backend: payments
backends:
  - name: payments
    endpoints: ["api.payments.example:443"]
    originateTls:
      serverName: api.payments.example
      caFile: /etc/trellis/payments-ca.pem
resolver: 10.0.0.2:53
externalHosts: [{host: api.payments.example, virtualIp: 240.240.1.1}]
"#;

#[test]
fn egress_is_read_and_checked() {
    let config = ProxyConfig::from_yaml(EGRESS).expect("parses");
    assert!(config.listeners[0].egress);
    let endpoint = &config.backends[0].endpoints[0];
    assert_eq!(endpoint.hostname.as_deref(), Some("api.payments.example"));
    assert_eq!(endpoint.address.port(), 443);
    let tls = config.backends[0].originate_tls.as_ref().expect("tls");
    assert_eq!(tls.server_name, "api.payments.example");
    assert_eq!(config.resolver, Some("10.0.0.2:53".parse().expect("addr")));
    assert_eq!(config.external_hosts[0].host, "api.payments.example");
    // What /config shows reads back the same.
    let shown = serde_json::to_string(&config).expect("serializes");
    let back: ProxyConfig = serde_json::from_str(&shown).expect("reads back");
    assert_eq!(back, config);

    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("\"api.payments.example:443\"", "\"api.payments.example\"",
         "backends[0].endpoints[0]: invalid endpoint address \"api.payments.example\""),
        ("\"api.payments.example:443\"", "\"*.payments.example:443\"",
         "backends[0].endpoints[0]: invalid endpoint address"),
        ("\"api.payments.example:443\"", "{address: \"api.payments.example:443\", identity: \"spiffe://trellis.local/ns/a/sa/b\"}",
         "backends[0].endpoints[0].hostname: \"api.payments.example\": a hostname is one DNS name, of an endpoint outside the mesh"),
        ("serverName: api.payments.example", "serverName: 10.0.0.9",
         "backends[0].originateTls.serverName: \"10.0.0.9\" is not a DNS name"),
        ("caFile: /etc/trellis/payments-ca.pem", "caPem: not a certificate",
         "backends[0].originateTls.caPem: no usable CA certificate"),
        ("caFile: /etc/trellis/payments-ca.pem", "caFile: /a.pem\n      caPem: x",
         "backends[0].originateTls.caFile: give caPem or caFile, not both"),
        ("  - name: payments\n    endpoints", "  - name: payments\n    protocol: http2\n    endpoints",
         "backends[0].originateTls: TLS origination needs protocol http1"),
    ];
    for (from, to, want) in cases {
        assert!(EGRESS.contains(from), "{from:?}");
        let yaml = EGRESS.replacen(from, to, 1);
        let err = ProxyConfig::from_yaml(&yaml).expect_err(want).to_string();
        assert!(err.starts_with(want), "{want}: got {err}");
    }
}
