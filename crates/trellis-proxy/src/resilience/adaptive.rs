//! An adaptive concurrency limit for one backend, learned from its latency with a
//! gradient, as Netflix's concurrency-limits (`Gradient2`) and Envoy's adaptive
//! concurrency filter do: a long-term baseline of the round-trip time says what the
//! backend does when healthy, the first quartile of the last few round trips what it
//! does now. The baseline follows a faster backend within seconds but a slower one only
//! over a minute, so a backend that slows down is held to a low limit while it stays
//! slow, not just for the first few hundred requests. A low quantile, not the mean:
//! queueing slows every request, while a backend whose calls are of several kinds, some
//! of which wait on a slow dependency of their own, slows only some; only the first is
//! this caller's to relieve.
//!
//! While the quartile stays within the tolerance of the baseline and the backend is busy
//! (at least half the limit in flight), the limit grows towards `tolerance × baseline /
//! quartile` times itself plus a queue allowance, smoothed: up to a fifth more per
//! window, so a burst on a healthy backend is admitted within some twenty windows while
//! a backend at its capacity is not pushed far past it before its latency says so. A
//! millisecond more than the tolerance allows still counts as within it: a backend that
//! answers in a millisecond is not queueing when it takes two, the machine's scheduling
//! is. When the quartile rises (the backend is queueing) the limit shrinks at once in
//! proportion, down to half per window, so a backend that slows down sheds within a few
//! windows rather than after its callers' queues have filled. A backend far from its
//! limit says nothing about what it could take, so the limit then drifts back towards
//! twice what was in flight, never below where it started: a limit grown in a busy hour
//! does not stay open to the next slowdown. It starts low (20).
//!
//! The limit binds only while latency says the backend is degraded: after a window
//! whose quartile passed the tolerance, or a single round trip past it while more
//! than the limit are in flight (until a window comes back within half of it without
//! the backend being held at the limit, or fewer than half the limit are in flight:
//! its queue is then gone), or while requests are in flight and none has completed
//! for twice the tolerated round trip (a second before there is a baseline). Until then, requests past the limit are
//! admitted, and the limit grows towards what they ask: a burst on a healthy backend,
//! however large, is never shed for what its latency has not shown. What matters in a
//! cascade is how many of a caller's workers the first slow round trips can tie up
//! before any of them completes: once none completes, a stall is declared within two
//! round trips, and from then on only the limit's worth of them. Requests past a
//! binding limit are shed at once, with 503 and `retry-after`, instead of queueing in
//! front of a backend that is already slow; when latency recovers, so does the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The limit's bounds and how it moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Where the limit starts, and the least it drifts back to while the backend is
    /// far from it. Default 20.
    pub initial_limit: f64,
    /// The limit never goes below or above these. Default 10 and 1000.
    pub min_limit: f64,
    pub max_limit: f64,
    /// How much slower than usual the backend may get before the limit shrinks.
    /// Default 1.25, as Envoy's adaptive concurrency buffer: compared on the first
    /// quartile of a window and with a millisecond of slack, ordinary jitter stays
    /// within it, and a backend at capacity is held to a short queue.
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
    /// lower one at once). Default 0.2, as Netflix's `Gradient2`: growing faster
    /// pushes a backend at its capacity past it, and the limit (and the latency with
    /// it) swings.
    pub smoothing: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            initial_limit: 20.0,
            min_limit: 10.0,
            max_limit: 1000.0,
            tolerance: 1.25,
            short_window: 20,
            baseline_rise: Duration::from_secs(60),
            baseline_fall: Duration::from_secs(5),
            smoothing: 0.2,
        }
    }
}

/// Latency beyond the tolerance that is still within it, in seconds: scheduling
/// jitter, not queueing, for a backend that answers within a millisecond or two.
const JITTER: f64 = 0.001;

/// How many tolerated round trips may pass with requests in flight and none completed
/// before the backend counts as stalled.
const STALL_ROUND_TRIPS: f64 = 2.0;

/// How long requests may wait with none completed before the backend counts as stalled
/// while there is no baseline yet.
const COLD_STALL: Duration = Duration::from_secs(1);

/// How far a limit far above its backend's demand drifts back per window: about a
/// twentieth, so some twenty windows (four hundred round trips) undo a burst's growth.
const IDLE_DRIFT: f64 = 0.05;

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
    /// Set by a window whose quartile passed the tolerance, or a round trip past it
    /// while over the limit; cleared by a window back within half of it while not held
    /// at the limit, or by fewer than half the limit in flight: while set, it binds.
    degraded: bool,
    /// When a request last completed, or the backend last went from idle to busy.
    progress: Option<Instant>,
}

impl Estimate {
    /// Whether requests have been in flight for too long with none completing.
    fn stalled(&self, config: &AdaptiveConfig, in_flight: usize, now: Instant) -> bool {
        let patience = match self.long_rtt {
            Some(long) => {
                Duration::from_secs_f64(STALL_ROUND_TRIPS * (long * config.tolerance + JITTER))
            }
            None => COLD_STALL,
        };
        in_flight > 0
            && self
                .progress
                .is_some_and(|p| now.saturating_duration_since(p) > patience)
    }
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
                degraded: false,
                progress: None,
            }),
            config,
            in_flight: Arc::default(),
        }
    }

    /// Admits a request if fewer than the limit are in flight, or if the backend's
    /// latency has not degraded; `None` sheds it.
    pub fn try_admit(&self) -> Option<Admitted> {
        self.try_admit_at(Instant::now())
    }

    /// [`Self::try_admit`] at `now`.
    pub fn try_admit_at(&self, now: Instant) -> Option<Admitted> {
        let mut e = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = e.limit as usize;
        let in_flight = self.in_flight.load(Ordering::Acquire);
        if in_flight < limit / 2 {
            // Mostly drained: whatever queue the backend had is gone. (A burst's last
            // windows are its slowest calls, late only behind the burst itself.) A
            // backend held at its limit, as in an overload, never gets here.
            e.degraded = false;
        }
        let binding = e.degraded || e.stalled(&self.config, in_flight, now);
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit || !binding).then_some(n + 1)
            })
            .ok()?;
        if before == 0 {
            e.progress = Some(now);
        }
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
        e.progress = Some(now);
        // Past the limit, each round trip is judged on its own: an overload that
        // starts from a quiet backend is caught at its first queued call, not a
        // window later.
        if in_flight as f64 > e.limit {
            let late = e
                .long_rtt
                .is_some_and(|long| rtt.as_secs_f64() > long * c.tolerance + JITTER);
            e.degraded |= late;
        }
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
        let allowed = long * c.tolerance + JITTER;
        let healthy = short <= allowed;
        let recovered = short <= long * (1.0 + (c.tolerance - 1.0) / 2.0) + JITTER;
        if !healthy {
            e.degraded = true;
        } else if recovered && peak < e.limit as usize {
            // Back near its usual latency without being held at the limit: a backend
            // held there looks fast only because the limit keeps its queue short.
            e.degraded = false;
        }
        if (peak as f64) < e.limit / 2.0 && healthy {
            // Far from the limit: it says nothing about what the backend could take.
            // Drift back towards twice the demand, never below the starting limit.
            let floor = (2.0 * peak as f64).max(c.initial_limit);
            if e.limit > floor {
                e.limit -= (e.limit - floor) * IDLE_DRIFT;
            }
            return;
        }
        let gradient = (allowed / short.max(f64::MIN_POSITIVE)).clamp(0.5, 2.0);
        // The queue allowance lets a healthy backend's limit grow past what it has
        // shown it can take; added to a falling limit, it would hold the latency above
        // the tolerance for good.
        let queue = if healthy { e.limit.sqrt() } else { 0.0 };
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
                    .filter_map(|_| self.limit.try_admit_at(self.now))
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
        // A long call keeps the backend from ever being idle between rounds.
        let _steady = backend.limit.try_admit_at(backend.now).expect("admitted");
        // Ten times slower, for 20 s: the limit comes down and stays down, and
        // requests past it are shed.
        backend.drive(200, 150, healthy * 10);
        let fallen = backend.limit.limit();
        assert!(fallen < grown / 4, "fell from {grown} to {fallen}");
        // Held busy at that limit by calls that come back late, it sheds the excess.
        let now = backend.now;
        let mut busy: Vec<_> = (0..fallen)
            .filter_map(|_| backend.limit.try_admit_at(now))
            .collect();
        let late = busy.pop().expect("admitted");
        backend.limit.complete(late, healthy * 10, now);
        assert!(backend.drive(1, 150, healthy * 10) > 0, "excess is shed");
        drop(busy);
        // Healthy again: it climbs back.
        backend.drive(1000, 150, healthy);
        let recovered = backend.limit.limit();
        assert!(recovered >= 150, "recovered to {recovered}");
    }

    #[test]
    fn a_burst_on_a_healthy_backend_is_never_shed() {
        let healthy = Duration::from_millis(50);
        // A fresh limit knows nothing of the backend: nothing to shed for.
        let mut cold = Backend::new(AdaptiveConfig::default());
        assert_eq!(cold.drive(1, 1000, healthy), 0);
        // A quiet backend with a baseline: a thousand at once, again and again, all
        // admitted, and the limit grows towards them.
        let mut backend = Backend::new(AdaptiveConfig::default());
        backend.drive(50, 4, healthy);
        assert_eq!(backend.limit.limit(), 20, "a quiet backend keeps its start");
        assert_eq!(backend.drive(10, 1000, healthy), 0);
        assert!(
            backend.limit.limit() > 100,
            "grew to {}",
            backend.limit.limit()
        );
    }

    #[test]
    fn a_backend_that_stops_answering_is_held_to_the_limit_within_two_round_trips() {
        let mut backend = Backend::new(AdaptiveConfig::default());
        let usual = Duration::from_millis(20);
        backend.drive(100, 4, usual);
        // It stops answering; a request arrives every millisecond. Those of the first
        // two tolerated round trips (2 × 26 ms) are admitted, then none past the limit.
        let mut held = Vec::new();
        for _ in 0..500 {
            backend.now += Duration::from_millis(1);
            held.extend(backend.limit.try_admit_at(backend.now));
        }
        assert!((50..=55).contains(&held.len()), "admitted {}", held.len());
        // A completion is progress, but the limit binds again once the wait resumes.
        let first = held.remove(0);
        backend
            .limit
            .complete(first, Duration::from_millis(500), backend.now);
        backend.now += Duration::from_millis(100);
        assert!(backend.limit.try_admit_at(backend.now).is_none());
    }

    #[test]
    fn a_slow_window_makes_the_limit_bind_while_busy_until_latency_is_back() {
        let mut backend = Backend::new(AdaptiveConfig::default());
        let usual = Duration::from_millis(100);
        backend.drive(100, 4, usual);
        // Seven long calls keep the backend busy throughout.
        let now = backend.now;
        let _busy: Vec<_> = (0..7)
            .filter_map(|_| backend.limit.try_admit_at(now))
            .collect();
        // Twice slower for a window: the limit falls and binds.
        backend.drive(5, 4, usual * 2);
        assert!(backend.limit.limit() < 20);
        assert!(backend.drive(1, 100, usual * 2) > 0);
        // Back at its usual latency, below the limit, for a window: bursts are
        // admitted again.
        backend.drive(10, 4, usual);
        assert_eq!(backend.drive(1, 100, usual), 0);
    }

    #[test]
    fn a_backend_that_drains_is_no_longer_held_to_its_limit() {
        let mut backend = Backend::new(AdaptiveConfig::default());
        let usual = Duration::from_millis(50);
        backend.drive(50, 4, usual);
        // Past the limit (20) with ten long calls, calls come back three times
        // slower: the first of them makes the limit bind ...
        let now = backend.now;
        let busy: Vec<_> = (0..10)
            .filter_map(|_| backend.limit.try_admit_at(now))
            .collect();
        assert_eq!(
            backend.drive(1, 20, usual * 3),
            0,
            "not yet known to be slow"
        );
        assert!(backend.drive(1, 1000, usual * 3) > 0);
        // ... until the backend has drained.
        drop(busy);
        assert_eq!(backend.drive(1, 1000, usual), 0);
    }

    #[test]
    fn a_limit_far_above_the_demand_drifts_back_to_where_it_started() {
        let mut backend = Backend::new(AdaptiveConfig::default());
        let healthy = Duration::from_millis(10);
        backend.drive(200, 300, healthy);
        let grown = backend.limit.limit();
        assert!(grown >= 300, "grew to {grown}");
        // A quiet hour: five in flight. The limit comes back down, but not below 20.
        backend.drive(2000, 5, healthy);
        let drifted = backend.limit.limit();
        assert!((20..=25).contains(&drifted), "drifted to {drifted}");
        // Twenty in flight: twice that is kept open.
        backend.drive(200, 300, healthy);
        backend.drive(2000, 20, healthy);
        let drifted = backend.limit.limit();
        assert!((40..=50).contains(&drifted), "drifted to {drifted}");
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
        let now = backend.now;
        let held: Vec<_> = (0..10)
            .filter_map(|_| backend.limit.try_admit_at(now))
            .collect();
        assert_eq!(held.len(), 10, "nothing says the backend is slow yet");
        assert_eq!(backend.limit.in_flight(), 10);
        drop(held);
        assert_eq!(backend.limit.in_flight(), 0);
        backend.drive(500, 10, Duration::from_millis(1));
        assert!(backend.limit.limit() <= 8);
        let _steady = backend.limit.try_admit_at(backend.now).expect("admitted");
        backend.drive(40, 10, Duration::from_millis(50));
        assert_eq!(backend.limit.limit(), 2);
        let now = backend.now;
        let held: Vec<_> = (0..10)
            .filter_map(|_| backend.limit.try_admit_at(now))
            .collect();
        assert_eq!(held.len(), 1, "a slow backend is held to its limit (2)");
        assert!(retry_after(&backend.limit) >= Duration::from_secs(1));
    }
}
