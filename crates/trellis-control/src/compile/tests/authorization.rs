//! AuthorizationPolicy: which policies a proxy's inbound listener holds, in what order,
//! with which default and port; outbound listeners hold none.

use trellis_api::authz::AuthorizationConfig;
use trellis_api::proto::v1::{Authorization, AuthorizationAction};

use super::*;

/// `policy(namespace, name, target, action, rules)`.
fn policy(ns: &str, name: &str, target: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  targetRef: {{kind: Service, name: {target}}}
  action: {action}
  rules: {rules}
---
"
    )
}

const CART: &str = "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
---
";

const DENY_BY_DEFAULT: &str = "apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {name: default}
spec: {defaultAuthorization: deny}
---
";

/// One line for the default and port, then one per policy: `name action rules=N`.
fn summary(a: &Authorization) -> Vec<String> {
    let action = |wire: i32| match AuthorizationAction::try_from(wire) {
        Ok(AuthorizationAction::Allow) => "allow",
        Ok(AuthorizationAction::Deny) => "deny",
        Err(_) => "unknown",
    };
    let mut lines = vec![format!(
        "default={} port={}",
        action(a.default_action),
        a.port
    )];
    lines.extend(
        a.policies
            .iter()
            .map(|p| format!("{} {} rules={}", p.name, action(p.action), p.rules.len())),
    );
    lines
}

fn inbound_authorization(resources: &[Resource], proxy: &Workload) -> Authorization {
    let config = compile(resources, proxy);
    let inbound = listener(&config, "inbound");
    let authz = inbound
        .authorization
        .clone()
        .expect("inbound authorization");
    // The proxy would accept it: it reads and validates like any configuration.
    AuthorizationConfig::from_wire(&authz, "authorization")
        .and_then(|c| c.validate("authorization"))
        .unwrap_or_else(|e| panic!("the proxy would refuse it: {e}"));
    authz
}

#[test]
fn inbound_listeners_hold_the_policies_of_their_service() {
    let web_only = "[{from: [{identities: [\"spiffe://trellis.local/ns/shop/sa/web\"]}]}]";
    let deletes = "[{to: [{methods: [DELETE]}]}, {to: [{paths: [{prefix: /admin}]}]}]";
    let ours = format!(
        "{}{}{}",
        policy("shop", "z-allow-web", "cart", "Allow", web_only),
        policy("shop", "a-deny-deletes", "cart", "Deny", deletes),
        policy("shop", "allow-nothing", "cart", "Allow", "[]"),
    );
    let others = format!(
        "{}{}",
        // Another Service of the namespace, and a Service of the same name elsewhere.
        policy("shop", "web-policy", "web", "Allow", "[{}]"),
        policy("other", "cart-elsewhere", "cart", "Deny", "[{}]"),
    );
    // (documents, the proxy's namespace and service, app port, want)
    let cases: Vec<(String, &str, &str, u32, Vec<&str>)> = vec![
        (
            format!("{CART}{ours}{others}"),
            "shop",
            "cart",
            8080,
            vec![
                "default=allow port=8080",
                "shop/a-deny-deletes deny rules=2",
                "shop/allow-nothing allow rules=0",
                "shop/z-allow-web allow rules=1",
            ],
        ),
        (
            format!("{DENY_BY_DEFAULT}{CART}{ours}"),
            "shop",
            "cart",
            8080,
            vec![
                "default=deny port=8080",
                "shop/a-deny-deletes deny rules=2",
                "shop/allow-nothing allow rules=0",
                "shop/z-allow-web allow rules=1",
            ],
        ),
        // An implicit Service gets its policies too.
        (
            others.clone(),
            "shop",
            "web",
            3000,
            vec!["default=allow port=3000", "shop/web-policy allow rules=1"],
        ),
        (
            format!("{DENY_BY_DEFAULT}{others}"),
            "shop",
            "payments",
            0,
            vec!["default=deny port=0"],
        ),
        (
            others,
            "other",
            "cart",
            8080,
            vec![
                "default=allow port=8080",
                "other/cart-elsewhere deny rules=1",
            ],
        ),
    ];
    for (docs, ns, service, app_port, want) in cases {
        let resources = yaml(&docs);
        let authz = inbound_authorization(&resources, &proxy(ns, service, app_port, &[]));
        assert_eq!(summary(&authz), want, "{ns}/{service}");
    }
}

#[test]
fn rules_reach_the_proxy_as_written() {
    let rules = r#"
    - from: [{identities: ["spiffe://trellis.local/ns/shop/*"], namespaces: [shop, ops]}]
      to:
        - ports: [8080]
          methods: [GET, POST]
          paths: [{exact: /cart}, {prefix: /api}]
          headers: [{name: X-Tenant, value: acme}]"#;
    let resources = yaml(&format!(
        "{CART}{}",
        policy("shop", "p", "cart", "Allow", rules)
    ));
    let authz = inbound_authorization(&resources, &proxy("shop", "cart", 8080, &[]));
    let config = AuthorizationConfig::from_wire(&authz, "a").expect("reads");
    let Some(Spec::AuthorizationPolicy(spec)) = resources.last().map(|r| &r.spec) else {
        panic!("the last resource is the policy");
    };
    assert_eq!(config.policies[0].rules, spec.rules);
}

#[test]
fn only_inbound_listeners_are_authorized() {
    let mut resources = yaml(&format!(
        "{DENY_BY_DEFAULT}{CART}{}",
        policy("shop", "p", "cart", "Allow", "[{}]")
    ));
    resources.push(workload(
        "shop",
        "cart-1",
        &[("app", "cart")],
        "10.0.0.9",
        None,
    ));
    let mut p = proxy("shop", "web", 3000, &[("cart", "shop", 9000)]);
    p.http_proxy_port = 9001;
    let config = compile(&resources, &p);
    for l in &config.listeners {
        assert_eq!(
            l.authorization.is_some(),
            l.name == "inbound",
            "listener {}",
            l.name
        );
    }
}

#[test]
fn compiling_twice_gives_the_same_bytes() {
    let docs = format!(
        "{CART}{}{}",
        policy("shop", "b", "cart", "Allow", "[{}]"),
        policy("shop", "a", "cart", "Deny", "[{to: [{ports: [1]}]}]")
    );
    let mut resources = yaml(&docs);
    let p = proxy("shop", "cart", 8080, &[]);
    let first = compile(&resources, &p);
    resources.reverse();
    assert_eq!(compile(&resources, &p), first);
}
