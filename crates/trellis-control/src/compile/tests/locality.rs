//! Zones: with `locality: prefer-zone` each caller gets every ready endpoint, and its
//! zone with the zone's size, so that its proxy can keep to the zone while enough of it
//! is healthy.

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
fn callers_get_every_ready_endpoint_and_their_zone_with_its_size() {
    // (policy, caller zone, readiness of a-1, a-2, b-1, endpoints, locality sent)
    type Case<'a> = (
        Option<&'a str>,
        &'a str,
        [bool; 3],
        &'a [&'a str],
        Option<(&'a str, u32, u32)>,
    );
    let all: &[&str] = &["10.0.0.1:7143", "10.0.0.2:7143", "10.0.1.1:7143"];
    let cases: &[Case<'_>] = &[
        (Some(""), "a", [true, true, true], all, Some(("a", 70, 2))),
        (Some(""), "b", [true, true, true], all, Some(("b", 70, 1))),
        // Unready endpoints are left out but still count in the zone's size, so the
        // caller's proxy sees half of zone a healthy.
        (
            Some(""),
            "a",
            [false, true, true],
            &["10.0.0.2:7143", "10.0.1.1:7143"],
            Some(("a", 70, 2)),
        ),
        (
            Some(""),
            "a",
            [false, false, true],
            &["10.0.1.1:7143"],
            Some(("a", 70, 2)),
        ),
        (
            Some("  zoneFailover: {minHealthyPercent: 40}\n"),
            "a",
            [true, true, true],
            all,
            Some(("a", 40, 2)),
        ),
        // A zone with no workloads, a caller without a zone, or no policy: no
        // preference.
        (Some(""), "c", [true, true, true], all, None),
        (Some(""), "", [true, true, true], all, None),
        (None, "a", [true, true, true], all, None),
    ];
    for (policy, zone, ready, want, locality) in cases {
        let mut resources = yaml(CART);
        if let Some(extra) = policy {
            resources.extend(yaml(&format!("{PREFER_ZONE}{extra}")));
        }
        resources.push(cart("cart-a-1", "10.0.0.1", "a", ready[0]));
        resources.push(cart("cart-a-2", "10.0.0.2", "a", ready[1]));
        resources.push(cart("cart-b-1", "10.0.1.1", "b", ready[2]));
        let config = compile(&resources, &web_in(zone));
        let backend = backend(&config, "cart.default");
        let context = format!("policy {policy:?}, zone {zone:?}, ready {ready:?}");
        assert_eq!(&endpoints(backend), want, "{context}");
        let got = backend
            .locality
            .as_ref()
            .map(|l| (l.zone.as_str(), l.min_healthy_percent, l.zone_size));
        assert_eq!(got, *locality, "{context}");
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
