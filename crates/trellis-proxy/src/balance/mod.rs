//! Load balancing: which endpoint of a backend gets the next request or connection.
//!
//! Three policies share one shape: a `Balancer` picks from a slice of weighted endpoints
//! using the load each endpoint reports (requests in flight, peak-EWMA latency).

mod ewma;
mod maglev;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LoadBalancer;
use crate::endpoint::Endpoint;

pub use self::ewma::PeakEwma;
pub use self::maglev::Maglev;

/// An endpoint with its weight inside one backend.
#[derive(Debug, Clone)]
pub struct Weighted {
    pub weight: u32,
    pub endpoint: Arc<Endpoint>,
}

/// The load an endpoint reports to balancers. Lives as long as the endpoint, across
/// configuration reloads.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    latency: Mutex<PeakEwma>,
}

impl Load {
    pub fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            latency: Mutex::new(PeakEwma::new(Instant::now())),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records one round-trip time (request sent to response headers received).
    pub fn observe_rtt(&self, rtt: Duration) {
        if let Ok(mut ewma) = self.latency.lock() {
            ewma.observe(rtt, Instant::now());
        }
    }

    fn latency_ns(&self) -> f64 {
        self.latency
            .lock()
            .map(|e| e.estimate_ns(Instant::now()))
            .unwrap_or(f64::MAX)
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a request as in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.load().in_flight.fetch_add(1, Ordering::Relaxed);
        Self { endpoint }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint
            .load()
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A load-balancing policy with whatever state it keeps between picks.
#[derive(Debug)]
pub enum Balancer {
    PeakEwma,
    LeastRequest,
    RoundRobin(Mutex<SmoothWeighted>),
    /// A Maglev table over the endpoints' addresses.
    ConsistentHash(Maglev),
}

impl Balancer {
    pub fn new(policy: LoadBalancer, endpoints: &[Weighted]) -> Self {
        match policy {
            LoadBalancer::Ewma => Balancer::PeakEwma,
            LoadBalancer::LeastRequest => Balancer::LeastRequest,
            LoadBalancer::RoundRobin => {
                Balancer::RoundRobin(Mutex::new(SmoothWeighted::new(endpoints.len())))
            }
            LoadBalancer::ConsistentHash => {
                let names: Vec<String> = endpoints
                    .iter()
                    .map(|w| w.endpoint.addr().to_string())
                    .collect();
                Balancer::ConsistentHash(Maglev::new(&names))
            }
        }
    }

    /// Picks the endpoint for the next request, or `None` when there are none.
    pub fn pick<'a>(&self, endpoints: &'a [Weighted]) -> Option<&'a Weighted> {
        self.pick_keyed(endpoints, None)
    }

    /// Picks the endpoint for a request with this consistent-hash key; a consistent
    /// hash without a key, and the other balancers, ignore it.
    pub fn pick_keyed<'a>(
        &self,
        endpoints: &'a [Weighted],
        key: Option<&[u8]>,
    ) -> Option<&'a Weighted> {
        match endpoints.len() {
            0 => return None,
            1 => return endpoints.first(),
            _ => {}
        }
        match self {
            Balancer::ConsistentHash(table) => match key {
                Some(key) => endpoints.get(table.lookup(key)?),
                None => Some(p2c(endpoints, |w| {
                    w.endpoint.load().in_flight() as f64 + 1.0
                })),
            },
            Balancer::PeakEwma => Some(p2c(endpoints, |w| {
                let load = w.endpoint.load();
                load.latency_ns() * (load.in_flight() as f64 + 1.0) / f64::from(w.weight)
            })),
            Balancer::LeastRequest => Some(p2c(endpoints, |w| {
                (w.endpoint.load().in_flight() as f64 + 1.0) / f64::from(w.weight)
            })),
            Balancer::RoundRobin(state) => {
                let i = state.lock().ok()?.next(endpoints);
                endpoints.get(i)
            }
        }
    }
}

/// Power of two choices: of two distinct endpoints drawn at random, the cheaper one.
/// Drawing two keeps the choice cheap and avoids the herd that always-the-least causes.
fn p2c(endpoints: &[Weighted], cost: impl Fn(&Weighted) -> f64) -> &Weighted {
    let n = endpoints.len();
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    let (ea, eb) = (&endpoints[a], &endpoints[b]);
    if cost(eb) < cost(ea) {
        eb
    } else {
        ea
    }
}

/// Smooth weighted round robin: each pick adds every endpoint's weight to its credit and
/// takes the endpoint with the most credit, which then pays the total weight. Weights
/// 5:1:1 give `a a b a c a a`, not `a a a a a b c`.
#[derive(Debug)]
pub struct SmoothWeighted {
    credit: Vec<i64>,
}

impl SmoothWeighted {
    pub fn new(n: usize) -> Self {
        Self { credit: vec![0; n] }
    }

    fn next(&mut self, endpoints: &[Weighted]) -> usize {
        if self.credit.len() != endpoints.len() {
            self.credit = vec![0; endpoints.len()];
        }
        let total: i64 = endpoints.iter().map(|e| i64::from(e.weight)).sum();
        let mut best = 0;
        for (i, e) in endpoints.iter().enumerate() {
            self.credit[i] += i64::from(e.weight);
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        self.credit[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests;
