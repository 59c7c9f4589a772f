//! Zones: with `locality: prefer-zone` a caller keeps to the ready endpoints of its own
//! zone while there are any, and fails over to the others when there are none.

use super::*;

const CART: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: cart}
spec:
  selector: {app: cart}
  ports: [{port: 80}]
"#;

const PREFER_ZONE: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: cart}
spec:
  targetRef: {kind: Service, name: cart}
  locality: prefer-zone
"#;

/// A cart workload at `address` in `zone`.
fn cart(name: &str, address: &str, zone: &str, ready: bool) -> Resource {
    let mut w = workload("default", name, &[("app", "cart")], address, Some(ready));
    if let Spec::Workload(spec) = &mut w.spec {
        spec.zone = Some(zone.to_string());
    }
    w
}

fn web_in(zone: &str) -> Workload {
    let mut p = proxy("default", "web", 8080, &[("cart", "", 9000)]);
    p.zone = zone.to_string();
    p
}

#[test]
fn callers_prefer_their_zone_and_fail_over() {
    // (policy, caller zone, readiness of a-1, a-2, b-1, endpoints the caller gets)
    let cases: &[(bool, &str, [bool; 3], &[&str])] = &[
        (
            true,
            "a",
            [true, true, true],
            &["10.0.0.1:7143", "10.0.0.2:7143"],
        ),
        (true, "b", [true, true, true], &["10.0.1.1:7143"]),
        // One of zone a's endpoints unready: the other still keeps the traffic local.
        (true, "a", [false, true, true], &["10.0.0.2:7143"]),
        // None ready in zone a: every ready endpoint elsewhere.
        (true, "a", [false, false, true], &["10.0.1.1:7143"]),
        // A zone with no endpoints at all, or a caller without a zone: all of them.
        (
            true,
            "c",
            [true, true, true],
            &["10.0.0.1:7143", "10.0.0.2:7143", "10.0.1.1:7143"],
        ),
        (
            true,
            "",
            [true, true, true],
            &["10.0.0.1:7143", "10.0.0.2:7143", "10.0.1.1:7143"],
        ),
        // Without the policy zones do not matter.
        (
            false,
            "a",
            [true, true, true],
            &["10.0.0.1:7143", "10.0.0.2:7143", "10.0.1.1:7143"],
        ),
    ];
    for (policy, zone, ready, want) in cases {
        let mut resources = yaml(CART);
        if *policy {
            resources.extend(yaml(PREFER_ZONE));
        }
        resources.push(cart("cart-a-1", "10.0.0.1", "a", ready[0]));
        resources.push(cart("cart-a-2", "10.0.0.2", "a", ready[1]));
        resources.push(cart("cart-b-1", "10.0.1.1", "b", ready[2]));
        let config = compile(&resources, &web_in(zone));
        let got = endpoints(backend(&config, "cart.default"));
        assert_eq!(
            &got, want,
            "policy {policy}, zone {zone:?}, ready {ready:?}"
        );
    }
}

#[test]
fn endpoints_carry_their_zone() {
    let mut resources = yaml(CART);
    resources.push(cart("cart-a-1", "10.0.0.1", "a", true));
    let config = compile(&resources, &web_in(""));
    let zones: Vec<&str> = backend(&config, "cart.default")
        .endpoints
        .iter()
        .map(|e| e.zone.as_str())
        .collect();
    assert_eq!(zones, ["a"]);
}
