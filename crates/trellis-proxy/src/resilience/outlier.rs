//! Outlier detection (passive health): the endpoints of one backend, judged by the
//! answers they give. An endpoint is ejected — left out of balancing — after a run of
//! consecutive failures, or when its failure rate over a window passes a threshold.
//! Overload answers (429, and 503 from a proxy shedding load) count as failures, so an
//! overloaded endpoint is given room. Each ejection lasts longer than the last
//! (`base × times ejected`, up to `max`); an endpoint that stays healthy for a while
//! after returning is forgiven one ejection. Never more than a share of the endpoints
//! is ejected at once, so detection cannot empty a backend.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When to eject, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive failures that eject. Default 5.
    pub consecutive_failures: u32,
    /// Failure rate over `window` that ejects, once `min_requests` were seen in it.
    /// Default 0.5 over at least 20 requests; `None` turns the check off.
    pub failure_rate: Option<f64>,
    pub min_requests: u32,
    pub window: Duration,
    /// First ejection; each next one lasts this much longer. Default 30 s.
    pub base_ejection: Duration,
    /// Longest ejection. Default 300 s.
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, in percent (at least one may always be).
    /// Default 50.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            min_requests: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// What an answer says about the endpoint that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx, a connection that failed or reset, or an overload answer (429).
    Failure,
}

impl Outcome {
    /// The outcome of an HTTP status; `None` for a status that says nothing about the
    /// endpoint's health (4xx other than 429).
    pub fn of_status(status: u16) -> Option<Outcome> {
        match status {
            429 | 500..=599 => Some(Outcome::Failure),
            100..=399 => Some(Outcome::Success),
            _ => None,
        }
    }
}

/// One backend's endpoints, by index in its endpoint list.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Mutex<Vec<EndpointHealth>>,
}

#[derive(Debug, Clone, Default)]
struct EndpointHealth {
    consecutive: u32,
    window_start: Option<Instant>,
    requests: u32,
    failures: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
    /// Since when it has been back without failing enough to be ejected.
    healthy_since: Option<Instant>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig, endpoints: usize) -> Self {
        Self {
            config,
            endpoints: Mutex::new(vec![EndpointHealth::default(); endpoints]),
        }
    }

    /// Records an answer from endpoint `i`; true if it has just been ejected.
    pub fn record(&self, i: usize, outcome: Outcome, now: Instant) -> bool {
        let mut all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let ejected_now = all.iter().filter(|e| e.is_ejected(now)).count();
        let limit = (all.len() * self.config.max_ejected_percent as usize / 100).max(1);
        let config = &self.config;
        let Some(endpoint) = all.get_mut(i) else {
            return false;
        };
        if endpoint.is_ejected(now) {
            return false;
        }
        endpoint.forgive(config, now);
        if endpoint
            .window_start
            .is_none_or(|s| now.duration_since(s) >= config.window)
        {
            (endpoint.window_start, endpoint.requests, endpoint.failures) = (Some(now), 0, 0);
        }
        endpoint.requests += 1;
        match outcome {
            Outcome::Success => endpoint.consecutive = 0,
            Outcome::Failure => {
                endpoint.consecutive += 1;
                endpoint.failures += 1;
            }
        }
        let by_run = endpoint.consecutive >= config.consecutive_failures;
        let by_rate = config.failure_rate.is_some_and(|rate| {
            endpoint.requests >= config.min_requests
                && f64::from(endpoint.failures) >= rate * f64::from(endpoint.requests)
        });
        if !(by_run || by_rate) || ejected_now >= limit {
            return false;
        }
        endpoint.times_ejected += 1;
        let length = (config.base_ejection * endpoint.times_ejected).min(config.max_ejection);
        endpoint.ejected_until = Some(now + length);
        endpoint.healthy_since = None;
        (endpoint.consecutive, endpoint.requests, endpoint.failures) = (0, 0, 0);
        endpoint.window_start = None;
        true
    }

    /// Whether endpoint `i` is left out of balancing now.
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        let all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        all.get(i).is_some_and(|e| e.is_ejected(now))
    }

    /// Which endpoints are ejected now, by index; `None` when none is, the usual case,
    /// so that balancing skips nothing without building a list.
    pub fn ejected_set(&self, now: Instant) -> Option<Vec<bool>> {
        let all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if !all.iter().any(|e| e.is_ejected(now)) {
            return None;
        }
        Some(all.iter().map(|e| e.is_ejected(now)).collect())
    }

    /// How many endpoints are ejected now.
    pub fn ejected(&self, now: Instant) -> usize {
        let all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter(|e| e.is_ejected(now)).count()
    }
}

impl EndpointHealth {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// An endpoint back for a base ejection's time without being ejected again has one
    /// ejection forgiven, so a long-healthy endpoint starts short again.
    fn forgive(&mut self, config: &OutlierConfig, now: Instant) {
        let Some(until) = self.ejected_until else {
            return;
        };
        let since = *self.healthy_since.get_or_insert(until);
        if self.times_ejected > 0 && now.duration_since(since) >= config.base_ejection {
            self.times_ejected -= 1;
            self.healthy_since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            failure_rate: None,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..OutlierConfig::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_for_longer_each_time_then_return() {
        let t = Instant::now();
        let d = OutlierDetector::new(config(), 4);
        assert!(!d.record(0, Outcome::Failure, t));
        assert!(
            !d.record(0, Outcome::Success, t),
            "a success breaks the run"
        );
        d.record(0, Outcome::Failure, t);
        d.record(0, Outcome::Failure, t);
        assert!(d.record(0, Outcome::Failure, t), "third in a row");
        assert!(d.is_ejected(0, t + Duration::from_secs(9)));
        // Back after the first ejection (10 s); ejected again, for 20 s; then capped.
        let back = t + Duration::from_secs(10);
        assert!(!d.is_ejected(0, back));
        for _ in 0..3 {
            d.record(0, Outcome::Failure, back);
        }
        assert!(d.is_ejected(0, back + Duration::from_secs(19)));
        assert!(!d.is_ejected(0, back + Duration::from_secs(20)));
        let third = back + Duration::from_secs(20);
        for _ in 0..3 {
            d.record(0, Outcome::Failure, third);
        }
        assert!(d.is_ejected(0, third + Duration::from_secs(24)));
        assert!(
            !d.is_ejected(0, third + Duration::from_secs(25)),
            "capped at max"
        );
        // Overload counts; a 404 says nothing.
        assert_eq!(Outcome::of_status(429), Some(Outcome::Failure));
        assert_eq!(Outcome::of_status(404), None);
    }

    #[test]
    fn a_high_failure_rate_ejects_without_a_run() {
        let t = Instant::now();
        let config = OutlierConfig {
            consecutive_failures: 100,
            failure_rate: Some(0.5),
            min_requests: 10,
            ..config()
        };
        let d = OutlierDetector::new(config, 2);
        let mut ejected = false;
        for i in 0..20 {
            let outcome = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            ejected |= d.record(1, outcome, t);
        }
        assert!(ejected && d.is_ejected(1, t));
    }

    #[test]
    fn never_more_than_the_share_is_ejected() {
        let t = Instant::now();
        let d = OutlierDetector::new(config(), 4);
        for i in 0..4 {
            for _ in 0..3 {
                d.record(i, Outcome::Failure, t);
            }
        }
        assert_eq!(d.ejected(t), 2, "50 % of four");
        // The share is at least one endpoint, so the one bad endpoint of a small
        // backend is still ejected.
        let single = OutlierDetector::new(config(), 1);
        for _ in 0..3 {
            single.record(0, Outcome::Failure, t);
        }
        assert_eq!(single.ejected(t), 1);
    }

    #[test]
    fn a_long_healthy_endpoint_is_forgiven() {
        let t = Instant::now();
        let d = OutlierDetector::new(config(), 2);
        for _ in 0..3 {
            d.record(0, Outcome::Failure, t);
        }
        // Back at 10 s, healthy until 40 s: one ejection forgiven, so the next is 10 s.
        let later = t + Duration::from_secs(40);
        d.record(0, Outcome::Success, later);
        for _ in 0..3 {
            d.record(0, Outcome::Failure, later);
        }
        assert!(d.is_ejected(0, later + Duration::from_secs(9)));
        assert!(!d.is_ejected(0, later + Duration::from_secs(10)));
    }
}
