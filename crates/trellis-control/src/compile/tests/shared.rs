//! The shared part of transparent sidecars' configurations: compiled once for every
//! proxy with the same inputs, apart where the caller's identity or zone changes it, and
//! merged with each proxy's own part into the configuration it would get on its own.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::compile::{Compiled, ServiceKey};
use crate::vip::VipTable;

const MESH: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{port: 80}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
    - matches: [{path: {value: /v2}}]
      backendRefs: [{name: ratings, port: 80}]
"#;

const FAULT_FOR_WEB: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: FaultInjection
metadata: {name: chaos, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: ratings}
  match:
    from: {identities: ["spiffe://trellis.local/ns/shop/sa/web"]}
  abort: {httpStatus: 500}
"#;

const PREFER_ZONE: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: BackendPolicy
metadata: {name: books, namespace: shop}
spec:
  targetRef: {kind: Service, name: books}
  locality: prefer-zone
"#;

/// An index of `MESH` and `extra`, every Service with a virtual IP.
fn index(extra: &str) -> MeshIndex {
    let mut resources = yaml(&format!("{MESH}---{extra}"));
    for (name, address, zone) in [("books-1", "10.0.0.7", "a"), ("books-2", "10.0.0.8", "b")] {
        let mut w = workload("shop", name, &[("app", "books")], address, Some(true));
        if let Spec::Workload(spec) = &mut w.spec {
            spec.zone = Some(zone.to_string());
        }
        resources.push(w);
    }
    let mut index = MeshIndex::new(&MeshState::new(resources));
    let mut keys: Vec<ServiceKey> = index.service_keys().cloned().collect();
    keys.sort();
    let vips: VipTable = keys
        .into_iter()
        .zip(1u8..)
        .map(|(key, n)| (key, Ipv4Addr::new(240, 240, 0, n)))
        .collect();
    index.set_vips(vips);
    index
}

/// A transparent proxy of `service` in `namespace` and `zone`.
fn caller(namespace: &str, service: &str, zone: &str) -> Workload {
    let mut p = proxy(namespace, service, 8080, &[]);
    p.outbound_port = 7140;
    p.zone = zone.to_string();
    p
}

fn same_part(a: &Compiled, b: &Compiled) -> bool {
    match (&a.shared, &b.shared) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[test]
fn proxies_of_one_namespace_share_one_part_and_keep_their_own() {
    let index = index("");
    let web = index.compile_parts(&caller("shop", "web", "a"));
    let cart = index.compile_parts(&caller("shop", "cart", "b"));
    let other = index.compile_parts(&caller("store", "web", "a"));
    assert!(
        same_part(&web, &cart),
        "identities and zones do not matter here"
    );
    assert!(
        !same_part(&web, &other),
        "a namespace sees routes of its own"
    );
    assert!(web
        .listeners()
        .any(|l| l.name == "transparent-shop-ratings"));
    // Each keeps its own inbound listener, for its own workload.
    let inbound = |c: &Compiled| c.listeners().find(|l| l.name == "inbound").cloned();
    assert!(inbound(&web).is_some());
    // What a proxy is sent whole is its own part and the shared one, merged.
    let config = web.to_config();
    assert_acceptable(&config);
    let (listeners, backends) = names(&config);
    let mut sorted = listeners.clone();
    sorted.sort_unstable();
    assert_eq!(listeners, sorted);
    assert!(
        backends.contains(&"local-app") && backends.contains(&"books.shop"),
        "{backends:?}"
    );
    assert_eq!(config.services.len(), 2);
    assert_eq!(web.delta_from(&web.clone(), 1), None);
}

#[test]
fn a_fault_for_some_callers_gives_each_identity_its_own_part() {
    let index = index(FAULT_FOR_WEB);
    let web = index.compile_parts(&caller("shop", "web", ""));
    let cart = index.compile_parts(&caller("shop", "cart", ""));
    assert!(!same_part(&web, &cart));
    let fault = |c: &Compiled| {
        c.listeners()
            .find(|l| l.name == "transparent-shop-ratings")
            .and_then(|l| l.routes.iter().find_map(|r| r.fault.clone()))
    };
    assert!(fault(&web).is_some(), "web is the fault's source");
    assert_eq!(fault(&cart), None);
    // Two proxies of the same identity still share.
    let mut web2 = caller("shop", "web", "");
    web2.name = "web-1".into();
    assert!(same_part(&web, &index.compile_parts(&web2)));
}

#[test]
fn a_zone_preferring_policy_gives_each_zone_its_own_part() {
    let index = index(PREFER_ZONE);
    let a = index.compile_parts(&caller("shop", "web", "a"));
    let b = index.compile_parts(&caller("shop", "web", "b"));
    assert!(!same_part(&a, &b));
    let zone = |c: &Compiled| {
        c.backends()
            .find(|b| b.name == "books.shop")
            .and_then(|b| b.locality.clone())
            .map(|l| l.zone)
    };
    assert_eq!(zone(&a).as_deref(), Some("a"));
    assert_eq!(zone(&b).as_deref(), Some("b"));
}

#[test]
fn a_new_index_compiles_a_new_part_and_the_delta_names_what_changed() {
    let before = index("").compile_parts(&caller("shop", "web", ""));
    let after = index(FAULT_FOR_WEB).compile_parts(&caller("shop", "web", ""));
    let delta = after
        .delta_from(&before, 4)
        .expect("the fault changed a route");
    let names: Vec<&str> = delta.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["transparent-shop-ratings"]);
    assert!(delta.backends.is_empty() && delta.others.is_none());
    let mut applied = before.to_config();
    applied.apply_delta(delta);
    assert_eq!(applied, after.to_config());
}
