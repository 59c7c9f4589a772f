//! What the control plane keeps of each proxy's metrics between scrapes, and the golden
//! signals over a window computed from it.
//!
//! A scrape is reduced at once to one [`Counts`] per [`SeriesKey`] (listener, route,
//! caller): requests, failures and the cumulative latency buckets, so a proxy costs a few hundred numbers
//! per scrape kept, whatever its label cardinality. A window's figures are the
//! difference between the newest scrape and the one at the window's start; a counter
//! that went down (the proxy restarted) counts from zero.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::parse::{Sample, DURATION_BUCKETS, REQUESTS};

/// Requests, failures (5xx) and the cumulative latency histogram of one series group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: f64,
    pub failures: f64,
    /// `(upper bound in seconds, cumulative count)`, by increasing bound.
    pub buckets: Vec<(f64, f64)>,
}

/// What a scrape's series are reduced by. Latency buckets carry no caller, so theirs
/// sit under an empty `peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub listener: String,
    pub route: String,
    /// The caller's SPIFFE ID on inbound mTLS, else empty.
    pub peer: String,
    /// `true` when the caller's connection was mutual TLS.
    pub tls: bool,
}

/// One scrape, by series key.
pub type Snapshot = BTreeMap<SeriesKey, Counts>;

/// The snapshot of a scrape's samples.
pub fn snapshot(samples: &[Sample]) -> Snapshot {
    let mut out = Snapshot::new();
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    for s in samples {
        let key = SeriesKey {
            listener: label(s, "listener"),
            route: label(s, "route"),
            peer: label(s, "peer_identity"),
            tls: s.labels.get("tls").is_some_and(|t| t == "true"),
        };
        let counts = out.entry(key).or_default();
        if s.name == REQUESTS {
            counts.requests += s.value;
            if s.labels.get("class").is_some_and(|c| c == "5xx") {
                counts.failures += s.value;
            }
        } else if s.name == DURATION_BUCKETS {
            let le = match s.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(v) => v.parse().unwrap_or(f64::INFINITY),
                None => continue,
            };
            match counts.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += s.value,
                None => counts.buckets.push((le, s.value)),
            }
        }
    }
    for counts in out.values_mut() {
        counts.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The scrapes kept of one proxy, oldest first.
#[derive(Debug, Default)]
pub struct History {
    scrapes: VecDeque<(Instant, Snapshot)>,
}

impl History {
    /// Adds a scrape and forgets those older than `retention`.
    pub fn push(&mut self, at: Instant, snapshot: Snapshot, retention: Duration) {
        self.scrapes.push_back((at, snapshot));
        while let Some((first, _)) = self.scrapes.front() {
            if at.saturating_duration_since(*first) <= retention || self.scrapes.len() <= 2 {
                break;
            }
            self.scrapes.pop_front();
        }
    }

    /// What happened over the last `window` (as far as the scrapes reach back), per
    /// (listener, route), and how many seconds that covers; `None` before two scrapes.
    pub fn delta(&self, window: Duration) -> Option<(Snapshot, f64)> {
        let (newest_at, newest) = self.scrapes.back()?;
        let start = newest_at.checked_sub(window).unwrap_or(*newest_at);
        let (base_at, base) = self
            .scrapes
            .iter()
            .rev()
            .skip(1)
            .find(|(at, _)| *at <= start)
            .or_else(|| self.scrapes.front().filter(|(at, _)| at < newest_at))?;
        let seconds = newest_at.duration_since(*base_at).as_secs_f64();
        let delta = newest
            .iter()
            .map(|(key, now)| {
                let then = base.get(key).cloned().unwrap_or_default();
                (key.clone(), difference(now, &then))
            })
            .collect();
        Some((delta, seconds))
    }
}

fn difference(now: &Counts, then: &Counts) -> Counts {
    // A counter below its earlier value means the proxy restarted: count from zero.
    if now.requests < then.requests {
        return now.clone();
    }
    let buckets = now
        .buckets
        .iter()
        .map(|(le, n)| {
            let before = then
                .buckets
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, (n - before).max(0.0))
        })
        .collect();
    Counts {
        requests: now.requests - then.requests,
        failures: (now.failures - then.failures).max(0.0),
        buckets,
    }
}

impl Counts {
    /// Adds `other` (another proxy's, another route's) to these.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.failures += other.failures;
        for (le, n) in &other.buckets {
            match self.buckets.iter_mut().find(|(b, _)| b == le) {
                Some((_, m)) => *m += n,
                None => self.buckets.push((*le, *n)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The latency below which a share `q` of requests fell, in seconds, interpolated
    /// within its bucket as Prometheus's `histogram_quantile` does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let within = count - lower.1;
                let share = if within > 0.0 {
                    (rank - lower.1) / within
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::parse::samples;

    fn scrape(ok: u32, failed: u32, fast: u32, slow: u32) -> Snapshot {
        let text = format!(
            "trellis_requests_total{{listener=\"inbound\",route=\"0\",backend=\"app\",status=\"200\",class=\"2xx\",error=\"\"}} {ok}\n\
             trellis_requests_total{{listener=\"inbound\",route=\"0\",backend=\"app\",status=\"500\",class=\"5xx\",error=\"\"}} {failed}\n\
             trellis_request_duration_seconds_bucket{{listener=\"inbound\",route=\"0\",backend=\"app\",le=\"0.01\"}} {fast}\n\
             trellis_request_duration_seconds_bucket{{listener=\"inbound\",route=\"0\",backend=\"app\",le=\"0.1\"}} {}\n\
             trellis_request_duration_seconds_bucket{{listener=\"inbound\",route=\"0\",backend=\"app\",le=\"+Inf\"}} {}\n",
            fast + slow,
            fast + slow
        );
        snapshot(&samples(&text))
    }

    fn key() -> SeriesKey {
        SeriesKey {
            listener: "inbound".into(),
            route: "0".into(),
            ..SeriesKey::default()
        }
    }

    #[test]
    fn a_window_is_the_difference_between_its_ends() {
        let t = Instant::now();
        let mut history = History::default();
        assert!(history.delta(Duration::from_secs(60)).is_none());
        history.push(t, scrape(100, 0, 100, 0), Duration::from_secs(120));
        history.push(
            t + Duration::from_secs(10),
            scrape(190, 10, 150, 50),
            Duration::from_secs(120),
        );
        let (delta, seconds) = history.delta(Duration::from_secs(60)).expect("two scrapes");
        assert_eq!(seconds, 10.0);
        let counts = &delta[&key()];
        assert_eq!((counts.requests, counts.failures), (100.0, 10.0));
        // 50 fast (≤ 10 ms), 50 slow (10–100 ms): the median is at 10 ms, p99 near 100.
        let p50 = counts.quantile(0.5).expect("p50");
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = counts.quantile(0.99).expect("p99");
        assert!((p99 - 0.0982).abs() < 1e-3, "{p99}");
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero_and_old_scrapes_are_forgotten() {
        let t = Instant::now();
        let mut history = History::default();
        let keep = Duration::from_secs(30);
        for i in 0..10u32 {
            history.push(
                t + Duration::from_secs(u64::from(i) * 10),
                scrape(i * 10, 0, i * 10, 0),
                keep,
            );
        }
        assert_eq!(history.scrapes.len(), 4, "30 s of 10 s scrapes, both ends");
        // The proxy restarted: its counters start again below the last scrape.
        history.push(t + Duration::from_secs(100), scrape(5, 0, 5, 0), keep);
        let (delta, _) = history.delta(Duration::from_secs(10)).expect("delta");
        assert_eq!(delta[&key()].requests, 5.0);
    }
}
