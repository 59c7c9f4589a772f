//! An adaptive concurrency limit for one backend, learned from its latency with a
//! gradient, as Netflix's concurrency-limits (`Gradient2`) and Envoy's adaptive
//! concurrency filter do: a long-term baseline of the round-trip time says what the
//! backend does when healthy, the first quartile of the last few round trips what it
//! does now.
//! The baseline follows a faster backend within seconds but a slower one only over a
//! minute, so a backend that slows down is held to a low limit while it stays slow, not
//! just for the first few hundred requests. A low quantile, not the mean: queueing slows
//! every request, while a backend whose calls are of several kinds, some of which wait
//! on a slow dependency of their own, slows only some; only the first is this caller's
//! to relieve. While they agree the limit grows (by a queue allowance, smoothed); when
//! the quartile rises (the backend is queueing) the limit shrinks at once in
//! proportion, down to half per adjustment, so a backend that slows down sheds within a
//! few windows rather than after its callers' queues have filled. Requests past the
//! limit are shed at once, with 503 and `retry-after`, instead of queueing in front of a
//! backend that is already slow; when latency recovers, so does the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The limit's bounds and how it moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Where the limit starts. Default 100.
    pub initial_limit: f64,
    /// The limit never goes below or above these. Default 10 and 1000.
    pub min_limit: f64,
    pub max_limit: f64,
    /// How much slower than usual the backend may get before the limit shrinks.
    /// Default 2.0: conservative, so ordinary jitter never sheds.
    pub tolerance: f64,
    /// Round trips in each short window, whose first quartile is compared with the
    /// baseline. Default 20.
    pub short_window: u32,
    /// Time constant of the baseline when the backend is slower than it: it takes
    /// about this long to accept a slower backend as the new normal. Default 60 s.
    pub baseline_rise: Duration,
    /// Time constant of the baseline when the backend is faster. Default 5 s.
    pub baseline_fall: Duration,
    /// How far one adjustment raises the limit towards its new value (it falls to a
    /// lower one at once). Default 0.5.
    pub smoothing: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            initial_limit: 100.0,
            min_limit: 10.0,
            max_limit: 1000.0,
            tolerance: 2.0,
            short_window: 20,
            baseline_rise: Duration::from_secs(60),
            baseline_fall: Duration::from_secs(5),
            smoothing: 0.5,
        }
    }
}

/// One backend's limit, shared by every request to it.
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConfig,
    in_flight: Arc<AtomicUsize>,
    state: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    limit: f64,
    long_rtt: Option<f64>,
    /// When the baseline last moved.
    updated: Option<Instant>,
    /// Round trips of the current short window, in seconds.
    short: Vec<f64>,
    /// Most requests in flight seen over the short window.
    peak_in_flight: usize,
}

/// A request admitted under the limit; give it back with [`AdaptiveLimit::complete`]
/// (or drop it, for a request whose latency says nothing, such as one cancelled).
#[derive(Debug)]
pub struct Admitted {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdaptiveLimit {
    pub fn new(config: AdaptiveConfig) -> Self {
        Self {
            state: Mutex::new(Estimate {
                limit: config
                    .initial_limit
                    .clamp(config.min_limit, config.max_limit),
                long_rtt: None,
                updated: None,
                short: Vec::with_capacity(config.short_window as usize),
                peak_in_flight: 0,
            }),
            config,
            in_flight: Arc::default(),
        }
    }

    /// Admits a request if fewer than the limit are in flight; `None` sheds it.
    pub fn try_admit(&self) -> Option<Admitted> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Admitted {
            in_flight: self.in_flight.clone(),
        })
    }

    /// Ends an admitted request that took `rtt`, finished at `now`, and adjusts the
    /// limit.
    pub fn complete(&self, admitted: Admitted, rtt: Duration, now: Instant) {
        self.record(rtt, now);
        drop(admitted);
    }

    /// Adjusts the limit with one round trip of an admitted request that finished at
    /// `now`, while its admission may still be held (the proxy holds it until the
    /// response body ends, but the backend's latency is its time to response headers).
    pub fn record(&self, rtt: Duration, now: Instant) {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let c = &self.config;
        let mut e = self.state.lock().unwrap_or_else(|e| e.into_inner());
        e.short.push(rtt.as_secs_f64());
        e.peak_in_flight = e.peak_in_flight.max(in_flight);
        if e.short.len() < c.short_window as usize {
            return;
        }
        e.short.sort_unstable_by(f64::total_cmp);
        let short = e.short[e.short.len() / 4];
        let peak = std::mem::take(&mut e.peak_in_flight);
        e.short.clear();
        let long = match (e.long_rtt, e.updated) {
            (Some(long), Some(then)) => {
                let tau = if short > long {
                    c.baseline_rise
                } else {
                    c.baseline_fall
                };
                let dt = now.saturating_duration_since(then).as_secs_f64();
                let weight = 1.0 - (-dt / tau.as_secs_f64().max(1e-3)).exp();
                long + (short - long) * weight
            }
            _ => short,
        };
        (e.long_rtt, e.updated) = (Some(long), Some(now));
        // A backend far from its limit says nothing about whether it could take more.
        if (peak as f64) < e.limit / 2.0 && short <= long * c.tolerance {
            return;
        }
        let gradient = (c.tolerance * long / short.max(f64::MIN_POSITIVE)).clamp(0.5, 1.0);
        let queue = e.limit.sqrt();
        let target = e.limit * gradient + queue;
        // Down at once, up smoothed: shedding late fills the callers' queues, growing
        // late only sheds a little longer.
        let limit = if target < e.limit {
            target
        } else {
            e.limit * (1.0 - c.smoothing) + target * c.smoothing
        };
        e.limit = limit.clamp(c.min_limit, c.max_limit);
    }

    /// The current limit, for metrics and admission.
    pub fn limit(&self) -> usize {
        let e = self.state.lock().unwrap_or_else(|e| e.into_inner());
        e.limit as usize
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// How long a shed caller should wait before trying again: about one usual round trip,
/// at least a second (the `retry-after` header counts whole seconds).
pub fn retry_after(limit: &AdaptiveLimit) -> Duration {
    let e = limit.state.lock().unwrap_or_else(|e| e.into_inner());
    let rtt = e.long_rtt.unwrap_or(0.0);
    Duration::from_secs_f64(rtt.max(1.0).ceil())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend under `concurrency` callers, on a clock of its own.
    struct Backend {
        limit: AdaptiveLimit,
        now: Instant,
    }

    impl Backend {
        fn new(config: AdaptiveConfig) -> Self {
            Self {
                limit: AdaptiveLimit::new(config),
                now: Instant::now(),
            }
        }

        /// Runs `rounds` of `concurrency` requests at once, each taking `rtt`; returns
        /// how many were shed.
        fn drive(&mut self, rounds: usize, concurrency: usize, rtt: Duration) -> usize {
            let mut shed = 0;
            for _ in 0..rounds {
                let admitted: Vec<_> = (0..concurrency)
                    .filter_map(|_| self.limit.try_admit())
                    .collect();
                shed += concurrency - admitted.len();
                self.now += rtt;
                for a in admitted {
                    self.limit.complete(a, rtt, self.now);
                }
            }
            shed
        }
    }

    #[test]
    fn the_limit_falls_when_latency_rises_and_recovers_with_it() {
        let mut backend = Backend::new(AdaptiveConfig::default());
        let healthy = Duration::from_millis(10);
        // A busy, healthy backend: the limit grows to what is asked of it.
        backend.drive(200, 150, healthy);
        let grown = backend.limit.limit();
        assert!(grown >= 150, "grew to {grown}");
        // Ten times slower, for 20 s: the limit comes down and stays down, and
        // requests past it are shed.
        backend.drive(200, 150, healthy * 10);
        let fallen = backend.limit.limit();
        assert!(fallen < grown / 4, "fell from {grown} to {fallen}");
        assert!(backend.drive(1, 150, healthy * 10) > 0, "excess is shed");
        // Healthy again: it climbs back.
        backend.drive(1000, 150, healthy);
        let recovered = backend.limit.limit();
        assert!(recovered >= 150, "recovered to {recovered}");
    }

    #[test]
    fn stays_within_its_bounds_and_counts_what_is_in_flight() {
        let config = AdaptiveConfig {
            initial_limit: 5.0,
            min_limit: 2.0,
            max_limit: 8.0,
            ..AdaptiveConfig::default()
        };
        let mut backend = Backend::new(config);
        let held: Vec<_> = (0..10).filter_map(|_| backend.limit.try_admit()).collect();
        assert_eq!(held.len(), 5);
        assert_eq!(backend.limit.in_flight(), 5);
        drop(held);
        assert_eq!(backend.limit.in_flight(), 0);
        backend.drive(500, 10, Duration::from_millis(1));
        assert!(backend.limit.limit() <= 8);
        backend.drive(500, 10, Duration::from_secs(5));
        assert!(backend.limit.limit() >= 2);
        assert!(retry_after(&backend.limit) >= Duration::from_secs(1));
    }
}
