use std::collections::HashMap;

use super::*;
use crate::config::ProxyConfig;
use crate::resilience::outlier::Outcome;
use crate::state::Snapshot;

/// A proxy configuration whose one backend, `app`, is `backend` (YAML lines under
/// `- name: app`).
fn backend(backend: &str) -> Arc<Backend> {
    let yaml = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    routes: [{{backend: app}}]\n\
         backends:\n  - name: app\n{backend}"
    );
    let config = ProxyConfig::from_yaml(&yaml).expect("valid");
    let identity = crate::tls::IdentitySlot::default();
    Snapshot::build(config, None, &identity).backends["app"].clone()
}

/// Two endpoints in zone `a` (indices 0 and 1), two in `b` (2 and 3); outlier detection
/// may eject them all, so a test can take a whole zone out. Round robin, so that the
/// zones' shares come from the zone preference alone.
fn zoned(locality: &str) -> Arc<Backend> {
    backend(&format!(
        "    endpoints:\n\
         \x20     - {{address: 127.0.0.1:1, zone: a}}\n\
         \x20     - {{address: 127.0.0.1:2, zone: a}}\n\
         \x20     - {{address: 127.0.0.1:3, zone: b}}\n\
         \x20     - {{address: 127.0.0.1:4, zone: b}}\n\
         \x20   loadBalancer: round-robin\n\
         \x20   resilience: {{outlierDetection: {{maxEjectionPercent: 100}}}}\n\
         {locality}"
    ))
}

fn eject(backend: &Backend, index: usize) {
    let now = tokio::time::Instant::now();
    for _ in 0..5 {
        backend.protection.record(index, Outcome::Failure, now);
    }
}

/// How many of `n` picks land in zone `a` (endpoint indices 0 and 1).
fn in_zone_a(backend: &Backend, n: usize) -> usize {
    (0..n)
        .filter(|_| backend.pick_for(None, 0).expect("an endpoint").index < 2)
        .count()
}

#[test]
fn ejected_endpoints_and_those_tried_are_left_out_while_others_remain() {
    let backend = backend("    endpoints: [127.0.0.1:1, 127.0.0.1:2]\n");
    for _ in 0..20 {
        assert_eq!(backend.pick_for(None, 0b01).expect("one").index, 1);
        assert_eq!(backend.pick_for(None, 0b10).expect("one").index, 0);
    }
    // Every endpoint tried: all are candidates again.
    assert!(backend.pick_for(None, 0b11).is_some());
    eject(&backend, 0);
    for _ in 0..20 {
        assert_eq!(backend.pick_for(None, 0).expect("one").index, 1);
    }
}

#[test]
fn a_healthy_zone_keeps_all_its_callers_requests() {
    fastrand::seed(7);
    let backend = zoned("    locality: {zone: a}\n");
    assert_eq!(in_zone_a(&backend, 1000), 1000);
    // The other zone's failures change nothing.
    eject(&backend, 2);
    assert_eq!(in_zone_a(&backend, 1000), 1000);
    // Without a preference, the zones share the requests.
    let any = zoned("");
    let share = in_zone_a(&any, 2000);
    assert!((800..=1200).contains(&share), "{share} of 2000 in zone a");
}

#[test]
fn a_zone_below_its_healthy_share_sends_the_rest_elsewhere() {
    fastrand::seed(11);
    // One of two healthy is 50 %, under 70 %: the zone keeps 50/70 of the requests.
    let backend = zoned("    locality: {zone: a}\n");
    eject(&backend, 0);
    let share = in_zone_a(&backend, 4000) as f64 / 4000.0;
    assert!((0.66..=0.77).contains(&share), "zone a kept {share}");
    // The zone's requests go to its healthy endpoint only.
    for _ in 0..200 {
        assert_ne!(backend.pick_for(None, 0).expect("one").index, 0);
    }
    // At 50 % required, one of two is enough.
    let lenient = zoned("    locality: {zone: a, minHealthyPercent: 50}\n");
    eject(&lenient, 0);
    assert_eq!(in_zone_a(&lenient, 1000), 1000);
    // Nothing healthy left in the zone: everything fails over.
    eject(&backend, 1);
    assert_eq!(in_zone_a(&backend, 1000), 0);
}

#[test]
fn unready_endpoints_count_against_the_zone() {
    fastrand::seed(13);
    // The zone has four workloads but only two are ready (and listed): 50 % healthy.
    let backend = zoned("    locality: {zone: a, zoneSize: 4}\n");
    let share = in_zone_a(&backend, 4000) as f64 / 4000.0;
    assert!((0.66..=0.77).contains(&share), "zone a kept {share}");
}

#[test]
fn zones_do_not_matter_when_the_callers_has_no_endpoints_or_all_look_bad() {
    fastrand::seed(17);
    let elsewhere = zoned("    locality: {zone: c}\n");
    let share = in_zone_a(&elsewhere, 2000);
    assert!((800..=1200).contains(&share), "{share} of 2000 in zone a");
    // Every endpoint ejected: still tried rather than failed.
    let backend = zoned("    locality: {zone: a}\n");
    (0..4).for_each(|i| eject(&backend, i));
    assert!(backend.pick_for(None, 0).is_some());
    // A retry that tried the zone's only healthy endpoint goes to the other zone.
    let retry = zoned("    locality: {zone: a, minHealthyPercent: 50}\n");
    eject(&retry, 0);
    for _ in 0..100 {
        assert!(retry.pick_for(None, 0b10).expect("one").index >= 2);
    }
}

#[test]
fn the_source_identity_is_the_peers_else_the_proxys_own() {
    let backend = backend(
        "    endpoints: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]\n\
         \x20   loadBalancer: consistent-hash\n\
         \x20   hashOn: {sourceIdentity: true}\n",
    );
    let own = || Some("spiffe://trellis.local/ns/default/sa/web".to_string());
    let mut headers = http::HeaderMap::new();
    let key = backend.hash_key(&headers, own).expect("own identity");
    assert_eq!(&*key, b"spiffe://trellis.local/ns/default/sa/web");
    assert!(backend.hash_key(&headers, || None).is_none());
    headers.insert(
        PEER_IDENTITY_HEADER,
        http::HeaderValue::from_static("spiffe://trellis.local/ns/default/sa/cart"),
    );
    let key = backend.hash_key(&headers, own).expect("peer identity");
    assert_eq!(&*key, b"spiffe://trellis.local/ns/default/sa/cart");
}

#[test]
fn each_caller_keeps_to_one_endpoint_and_callers_spread() {
    let backend = backend(
        "    endpoints: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3, 127.0.0.1:4]\n\
         \x20   loadBalancer: consistent-hash\n\
         \x20   hashOn: {sourceIdentity: true}\n",
    );
    let mut per_endpoint: HashMap<SocketAddr, usize> = HashMap::new();
    for caller in 0..200 {
        let id = format!("spiffe://trellis.local/ns/default/sa/caller-{caller}");
        let first = backend
            .pick_connection(|| Some(id.clone()))
            .expect("endpoint");
        for _ in 0..5 {
            let again = backend
                .pick_connection(|| Some(id.clone()))
                .expect("endpoint");
            assert_eq!(again.addr(), first.addr(), "{id} moved");
        }
        *per_endpoint.entry(first.addr()).or_default() += 1;
    }
    // Maglev spreads 200 callers over 4 endpoints, each with a fair part.
    assert_eq!(per_endpoint.len(), 4, "{per_endpoint:?}");
    assert!(
        per_endpoint.values().all(|n| (25..=75).contains(n)),
        "{per_endpoint:?}"
    );
}
