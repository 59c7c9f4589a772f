//! HTTPRoute and GRPCRoute filters reach the proxy route of every match of their rule.

use trellis_api::proto::v1::{path_modifier, Header, HeaderModifier, Mirror, Route};

use super::*;

const SERVICES: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 80}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  ports: [{port: 50051, appProtocol: grpc}]
"#;

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: api}]
  rules:
    - name: legacy
      matches: [{path: {value: /v1}}, {path: {value: /old}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Rewritten, value: "yes"}]
            remove: [Cookie]
        - type: RequestMirror
          requestMirror: {backendRef: {name: api-shadow}, percent: 10}
        - type: RequestMirror
          requestMirror: {backendRef: {name: audit, namespace: ops}, fraction: {numerator: 1, denominator: 3}}
      backendRefs:
        - name: api
          filters:
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: X-Backend, value: api}]}
    - name: moved
      matches: [{path: {type: Exact, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: shop.example, port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /here}, statusCode: 301}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter}
spec:
  parentRefs: [{name: greeter}]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: x-greeter, value: v1}]}
        - type: RequestMirror
          requestMirror: {backendRef: {name: greeter-shadow}}
      backendRefs: [{name: greeter}]
"#;

fn compiled() -> ProxyConfig {
    let resources = yaml(&format!("{SERVICES}\n---\n{ROUTES}"));
    compile(
        &resources,
        &proxy(
            "default",
            "web",
            8080,
            &[("api", "", 9000), ("greeter", "", 9001)],
        ),
    )
}

fn route<'a>(config: &'a ProxyConfig, listener_name: &str, name: &str) -> Vec<&'a Route> {
    listener(config, listener_name)
        .routes
        .iter()
        .filter(|r| r.name == name)
        .collect()
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn every_match_of_a_rule_carries_its_filters() {
    let config = compiled();
    let legacy = route(&config, "outbound-default-api", "default.api.legacy");
    assert_eq!(legacy.len(), 2, "one proxy route per match");
    assert_eq!(legacy[0].filters, legacy[1].filters);
    let f = legacy[0].filters.clone().expect("filters");
    let rewrite = f.rewrite.expect("rewrite");
    assert_eq!(rewrite.hostname, "api.internal");
    assert_eq!(
        rewrite.path.and_then(|p| p.kind),
        Some(path_modifier::Kind::Prefix("/v2".into()))
    );
    assert_eq!(
        f.request_headers,
        Some(HeaderModifier {
            set: vec![header("x-rewritten", "yes")],
            add: vec![],
            remove: vec!["cookie".into()],
        }),
        "header names in lower case"
    );
    assert_eq!(
        f.mirrors,
        [
            Mirror {
                backend: "api-shadow.default".into(),
                numerator: 10,
                denominator: 100,
            },
            Mirror {
                backend: "audit.ops".into(),
                numerator: 1,
                denominator: 3,
            },
        ]
    );
    // Mirror targets are backends of the proxy, even without endpoints yet.
    assert!(endpoints(backend(&config, "api-shadow.default")).is_empty());
    assert!(endpoints(backend(&config, "audit.ops")).is_empty());
    let api = &legacy[0].backends[0];
    assert_eq!(api.request_headers, None);
    assert_eq!(
        api.response_headers.as_ref().map(|h| h.add.clone()),
        Some(vec![header("x-backend", "api")])
    );
}

#[test]
fn a_redirect_rule_without_backends_redirects() {
    let config = compiled();
    let moved = route(&config, "outbound-default-api", "default.api.moved");
    let redirect = moved[0]
        .filters
        .clone()
        .and_then(|f| f.redirect)
        .expect("redirect");
    assert_eq!(
        (
            redirect.scheme.as_str(),
            redirect.hostname.as_str(),
            redirect.port,
            redirect.status_code
        ),
        ("https", "shop.example", 8443, 301)
    );
    assert_eq!(
        redirect.path.and_then(|p| p.kind),
        Some(path_modifier::Kind::Full("/here".into()))
    );
    // The parent at weight 0: nothing falls through to a less specific rule.
    assert_eq!(moved[0].backends[0].weight, 0);
}

#[test]
fn grpc_routes_carry_header_modifiers_and_mirrors() {
    let config = compiled();
    let greeter = route(&config, "outbound-default-greeter", "default.greeter.0");
    let f = greeter[0].filters.clone().expect("filters");
    assert_eq!(
        f.response_headers.map(|h| h.set),
        Some(vec![header("x-greeter", "v1")])
    );
    assert_eq!(f.mirrors[0].backend, "greeter-shadow.default");
    assert_eq!(
        (f.mirrors[0].numerator, f.mirrors[0].denominator),
        (100, 100)
    );
    assert_eq!(
        backend(&config, "greeter-shadow.default").protocol,
        http2(),
        "mirrors of gRPC calls speak HTTP/2"
    );
}

#[test]
fn routes_without_filters_carry_none() {
    let plain = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: api}]
  rules: [{matches: [{path: {value: /a}}], backendRefs: [{name: api}]}]
"#;
    let resources = yaml(&format!("{SERVICES}\n---\n{plain}"));
    let config = compile(
        &resources,
        &proxy("default", "web", 8080, &[("api", "", 9000)]),
    );
    for r in &listener(&config, "outbound-default-api").routes {
        assert_eq!(r.filters, None, "{}", r.name);
    }
}
