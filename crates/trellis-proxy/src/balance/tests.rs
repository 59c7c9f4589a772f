use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::config::BackendProtocol;
use crate::endpoint::ConnectSettings;

fn endpoints(weights: &[u32]) -> Vec<Weighted> {
    let settings = ConnectSettings {
        protocol: BackendProtocol::Http1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        mark: None,
        resolver: None,
    };
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Weighted {
            weight: *w,
            endpoint: Arc::new(Endpoint::new(
                SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                settings,
                None,
            )),
        })
        .collect()
}

fn counts(balancer: &Balancer, eps: &[Weighted], picks: usize) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let picked = balancer.pick(eps).expect("endpoint");
        *counts.entry(picked.endpoint.addr().port()).or_default() += 1;
    }
    counts
}

#[test]
fn no_endpoints_no_pick() {
    for policy in [
        LoadBalancer::Ewma,
        LoadBalancer::RoundRobin,
        LoadBalancer::LeastRequest,
    ] {
        assert!(Balancer::new(policy, &[]).pick(&[]).is_none());
    }
}

#[test]
fn round_robin_follows_weights_exactly_and_smoothly() {
    let eps = endpoints(&[5, 1, 1]);
    let balancer = Balancer::new(LoadBalancer::RoundRobin, &eps);
    let order: Vec<u16> = (0..7)
        .map(|_| {
            balancer
                .pick(&eps)
                .expect("endpoint")
                .endpoint
                .addr()
                .port()
                - 1000
        })
        .collect();
    assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    let c = counts(&balancer, &eps, 700);
    assert_eq!((c[&1000], c[&1001], c[&1002]), (500, 100, 100));
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let eps = endpoints(&[1, 1, 1]);
    let balancer = Balancer::new(LoadBalancer::LeastRequest, &eps);
    let _busy: Vec<InFlight> = (0..10)
        .map(|_| InFlight::new(eps[0].endpoint.clone()))
        .collect();
    let c = counts(&balancer, &eps, 3000);
    assert_eq!(c.get(&1000), None, "busy endpoint picked: {c:?}");
    assert!(c[&1001] > 1200 && c[&1002] > 1200, "{c:?}");
}

#[test]
fn least_request_spreads_idle_load_evenly_by_weight() {
    let eps = endpoints(&[1, 3]);
    let balancer = Balancer::new(LoadBalancer::LeastRequest, &eps);
    // With nothing in flight cost is 1/weight: the heavier endpoint always wins a pair.
    let c = counts(&balancer, &eps, 1000);
    assert_eq!(c[&1001], 1000, "{c:?}");
}

#[test]
fn ewma_prefers_the_faster_endpoint() {
    let eps = endpoints(&[1, 1]);
    eps[0]
        .endpoint
        .load()
        .observe_rtt(Duration::from_millis(50));
    eps[1].endpoint.load().observe_rtt(Duration::from_millis(1));
    let balancer = Balancer::new(LoadBalancer::Ewma, &eps);
    let c = counts(&balancer, &eps, 1000);
    assert_eq!(c.get(&1000), None, "{c:?}");
}

#[test]
fn ewma_weighs_latency_by_requests_in_flight() {
    let eps = endpoints(&[1, 1]);
    eps[0].endpoint.load().observe_rtt(Duration::from_millis(2));
    eps[1].endpoint.load().observe_rtt(Duration::from_millis(1));
    // 1 ms with 4 in flight costs 5 ms; 2 ms with none costs 2 ms.
    let _busy: Vec<InFlight> = (0..4)
        .map(|_| InFlight::new(eps[1].endpoint.clone()))
        .collect();
    let balancer = Balancer::new(LoadBalancer::Ewma, &eps);
    let c = counts(&balancer, &eps, 100);
    assert_eq!(c[&1000], 100, "{c:?}");
}
