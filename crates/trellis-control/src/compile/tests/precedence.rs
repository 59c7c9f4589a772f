//! Route order on an HTTP listener: the Gateway API's precedence, then creation time,
//! then name.

use super::*;

const SERVICE: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 80}]
"#;

fn api_routes(routes_yaml: &str) -> Vec<String> {
    let resources = yaml(&format!("{SERVICE}\n---\n{routes_yaml}"));
    let config = compile(
        &resources,
        &proxy("default", "web", 8080, &[("api", "", 9000)]),
    );
    routes(listener(&config, "outbound-default-api"))
}

#[test]
fn rules_are_ordered_by_specificity() {
    // Rules are named after what makes them specific, listed out of order.
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: api}]
  rules:
    - name: any
      backendRefs: [{name: api}]
    - name: regex-short
      matches: [{path: {type: RegularExpression, value: "/ap."}}]
      backendRefs: [{name: api}]
    - name: prefix-short
      matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: api}]
    - name: query
      matches: [{path: {value: /api}, queryParams: [{name: v, value: "2"}]}]
      backendRefs: [{name: api}]
    - name: header
      matches: [{path: {value: /api}, headers: [{name: a, value: "1"}]}]
      backendRefs: [{name: api}]
    - name: headers
      matches:
        - path: {value: /api}
          headers: [{name: a, value: "1"}, {name: b, type: RegularExpression, value: "x.*"}]
      backendRefs: [{name: api}]
    - name: method
      matches: [{path: {value: /api}, method: GET}]
      backendRefs: [{name: api}]
    - name: regex-long
      matches: [{path: {type: RegularExpression, value: "/api/b.+"}}]
      backendRefs: [{name: api}]
    - name: prefix-long
      matches: [{path: {type: PathPrefix, value: /api/books}}]
      backendRefs: [{name: api}]
    - name: either
      matches:
        - path: {type: Exact, value: /zz}
        - headers: [{name: x-either, value: "1"}]
      backendRefs: [{name: api}]
    - name: exact-short
      matches: [{path: {type: Exact, value: /a}}]
      backendRefs: [{name: api}]
    - name: exact-long
      matches: [{path: {type: Exact, value: /api/books/1}}]
      backendRefs: [{name: api}]
"#;
    let got: Vec<String> = api_routes(route)
        .into_iter()
        .map(|line| line.split(" | ").take(2).collect::<Vec<_>>().join(" | "))
        .collect();
    let want = [
        // Exact paths first, longest first.
        "default.r.exact-long | exact:/api/books/1",
        "default.r.either | exact:/zz",
        "default.r.exact-short | exact:/a",
        // Then prefixes and regular expressions by length.
        "default.r.prefix-long | prefix:/api/books",
        "default.r.regex-long | regex:/api/b.+",
        // At equal path: a method, then more headers, then more query parameters.
        "default.r.method | prefix:/api m:GET",
        "default.r.headers | prefix:/api h:a=1 h:b~x.*",
        "default.r.header | prefix:/api h:a=1",
        "default.r.query | prefix:/api q:v=2",
        "default.r.prefix-short | prefix:/api",
        // At equal length a prefix goes before a regular expression.
        "default.r.regex-short | regex:/ap.",
        // No path is the prefix `/`: a header still counts.
        "default.r.either | h:x-either=1",
        "default.r.any | *",
        "default | *",
    ];
    assert_eq!(got, want);
}

#[test]
fn ties_go_to_the_oldest_route_then_by_name() {
    // Identical matches in several routes: (name, creationTimestamp or none).
    let routes: [(&str, Option<&str>); 5] = [
        ("no-time", None),
        ("d", Some("2026-11-05T10:00:01Z")),
        ("c", Some("2026-11-05T10:00:01Z")),
        ("zz-oldest", Some("2026-11-05T10:00:00Z")),
        // Half a second after c and d, written with an offset.
        ("b", Some("2026-11-05T11:00:01.5+01:00")),
    ];
    let docs: Vec<String> = routes
        .iter()
        .map(|(name, ts)| {
            let ts = ts
                .map(|t| format!(", creationTimestamp: \"{t}\""))
                .unwrap_or_default();
            format!(
                r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}{ts}}}
spec:
  parentRefs: [{{name: api}}]
  rules:
    - matches: [{{path: {{value: /x}}}}]
      backendRefs: [{{name: api}}]
    - matches: [{{path: {{value: /x}}}}]
      backendRefs: [{{name: api}}]
"#
            )
        })
        .collect();
    let got: Vec<String> = api_routes(&docs.join("---\n"))
        .into_iter()
        .map(|line| line.split(" | ").next().unwrap_or_default().to_string())
        .collect();
    let want = [
        "default.zz-oldest.0",
        "default.zz-oldest.1",
        "default.c.0",
        "default.c.1",
        "default.d.0",
        "default.d.1",
        "default.b.0",
        "default.b.1",
        "default.no-time.0",
        "default.no-time.1",
        "default",
    ];
    assert_eq!(got, want);
}
