//! The recent past of every service's golden signals, for the service page's charts: a
//! bounded ring of `GET /api/v1/stat?by=service` answers, one every [`EVERY`], the last
//! [`KEEP`] of them. Memory stays bounded whatever runs: at most `KEEP` samples of one
//! row per service.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::api::{stat_path, Items, StatRow};
use crate::Dashboard;

/// How often a sample is taken: about as often as the control plane scrapes.
pub const EVERY: Duration = Duration::from_secs(5);
/// How many samples are kept: 15 minutes.
pub const KEEP: usize = 180;

/// One service's figures at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at: SystemTime,
    pub success_rate: Option<f64>,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

struct Sample {
    at: SystemTime,
    rows: Vec<StatRow>,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Adds a sample taken at `at`, dropping the oldest past [`KEEP`].
    pub fn record(&self, at: SystemTime, rows: Vec<StatRow>) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        samples.push_back(Sample { at, rows });
        while samples.len() > KEEP {
            samples.pop_front();
        }
    }

    /// When the newest sample was taken.
    pub fn newest(&self) -> Option<SystemTime> {
        self.samples.lock().ok()?.back().map(|s| s.at)
    }

    /// One service's points, oldest first; a sample without the service is a point
    /// without requests.
    pub fn series(&self, namespace: &str, name: &str) -> Vec<Point> {
        let Ok(samples) = self.samples.lock() else {
            return Vec::new();
        };
        samples
            .iter()
            .map(|s| {
                let row = s
                    .rows
                    .iter()
                    .find(|r| r.name == name && r.namespace == namespace);
                Point {
                    at: s.at,
                    success_rate: row.and_then(|r| r.success_rate),
                    requests_per_second: row.map_or(0.0, |r| r.requests_per_second),
                    p50_ms: row.and_then(|r| r.p50_ms),
                    p99_ms: row.and_then(|r| r.p99_ms),
                }
            })
            .collect()
    }

    /// Takes a sample now unless the newest is younger than [`EVERY`].
    pub async fn sample_if_due(dashboard: &Dashboard) {
        let due = dashboard
            .history
            .newest()
            .and_then(|at| at.elapsed().ok())
            .is_none_or(|age| age >= EVERY);
        if !due {
            return;
        }
        match dashboard
            .api
            .get::<Items<StatRow>>(&stat_path("service", None), None)
            .await
        {
            Ok(answer) => dashboard.history.record(SystemTime::now(), answer.items),
            Err(e) => tracing::debug!(error = %e, "dashboard: no stat sample"),
        }
    }
}

/// Samples every [`EVERY`] for as long as the dashboard exists.
pub(crate) async fn keep_sampling(dashboard: Weak<Dashboard>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(dashboard) = dashboard.upgrade() else {
            return;
        };
        History::sample_if_due(&dashboard).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rps: f64) -> StatRow {
        StatRow {
            name: name.into(),
            namespace: "default".into(),
            requests_per_second: rps,
            success_rate: Some(1.0),
            ..StatRow::default()
        }
    }

    #[test]
    fn keeps_a_bounded_ring_and_fills_gaps() {
        let history = History::default();
        for i in 0..(KEEP + 10) {
            let rows = if i % 2 == 0 {
                vec![row("web", 1.0)]
            } else {
                Vec::new()
            };
            history.record(
                SystemTime::UNIX_EPOCH + EVERY * u32::try_from(i).expect("small"),
                rows,
            );
        }
        let series = history.series("default", "web");
        assert_eq!(series.len(), KEEP);
        assert_eq!(series[0].at, SystemTime::UNIX_EPOCH + EVERY * 10);
        assert_eq!(series[0].requests_per_second, 1.0);
        assert_eq!(series[1].success_rate, None);
    }
}
