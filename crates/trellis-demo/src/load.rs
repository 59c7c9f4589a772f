//! `loadgen`: light, steady traffic to web, so that the mesh has something to show.
//!
//! One request at a time, at most [`MAX_RPS`] a second, cycling over the products
//! (`GET /api/products/{id}`). Each answer is counted as a success or a failure, and
//! successes by the ratings version in them, which is how a canary shows. The
//! `loadgen` role serves those counts as JSON on `GET /stats`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

use crate::catalog::{Book, BOOKS};
use crate::httpkit::{self, JsonClient};

/// The most requests a second the generator sends, whatever it is asked.
pub const MAX_RPS: u32 = 10;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of [`LoadReport::versions`] for answers without a rating.
pub const NO_RATING: &str = "none";

/// What the generator has seen so far; shared with whoever reports it.
#[derive(Debug, Default)]
pub struct LoadCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    versions: Mutex<BTreeMap<String, u64>>,
    /// Whether the last request failed, to log only when that changes.
    failing: AtomicBool,
}

/// Counts of requests: `{"ok": 95, "failed": 0, "versions": {"v1": 90, "v2": 5}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Answered 2xx with a product.
    pub ok: u64,
    /// Answered otherwise, or not within five seconds.
    pub failed: u64,
    /// Successes by the ratings version in the answer ([`NO_RATING`] for none).
    pub versions: BTreeMap<String, u64>,
}

/// How one request went.
#[derive(Debug)]
enum Outcome {
    Ok { version: Option<String> },
    Failed(String),
}

/// Sends `GET {target}/api/products/{id}`, one request at a time and at most `rps` a
/// second (clamped to 1..=[`MAX_RPS`]), until `stop` resolves; counts into `counters`
/// and returns their final state.
pub async fn generate_load(
    target: &str,
    rps: u32,
    counters: &LoadCounters,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    let client = JsonClient::new(REQUEST_TIMEOUT);
    let base = target.trim_end_matches('/').to_string();
    let send = |n: u64| {
        let id = BOOKS[(n % BOOKS.len() as u64) as usize].0;
        let url = format!("{base}/api/products/{id}");
        let client = client.clone();
        async move {
            match client.get_json::<Book>(&url).await {
                Ok(book) => Outcome::Ok {
                    version: book.rating.map(|r| r.version),
                },
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
    };
    drive(rps, counters, stop, send).await
}

/// The pacing: one `send` per tick of an `rps` clock, never two at once.
async fn drive<F, Fut>(
    rps: u32,
    counters: &LoadCounters,
    stop: impl Future<Output = ()>,
    mut send: F,
) -> LoadReport
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let rps = rps.clamp(1, MAX_RPS);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rps);
    // A slow answer delays the next request rather than causing a burst after it.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut n = 0;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let outcome = tokio::select! {
            () = &mut stop => break,
            outcome = send(n) => outcome,
        };
        counters.record(outcome);
        n += 1;
    }
    counters.report()
}

/// Runs the generator against `target` at `rps` and serves its counts on `listen`
/// (`GET /stats`), until the task is dropped.
pub async fn serve_loadgen(listen: SocketAddr, target: &str, rps: u32) -> io::Result<()> {
    serve_loadgen_on(TcpListener::bind(listen).await?, target, rps).await
}

/// [`serve_loadgen`] on a bound listener.
pub async fn serve_loadgen_on(listener: TcpListener, target: &str, rps: u32) -> io::Result<()> {
    let counters = Arc::new(LoadCounters::default());
    let stats = counters.clone();
    let server = httpkit::serve(listener, "loadgen", move |req| {
        let rsp = match httpkit::only_get(&req) {
            Some(refused) => refused,
            None if req.uri().path() == "/stats" => httpkit::json(StatusCode::OK, &stats.report()),
            None => httpkit::error(StatusCode::NOT_FOUND, "try /stats"),
        };
        std::future::ready(rsp)
    });
    tracing::info!(target, rps = rps.clamp(1, MAX_RPS), "sending traffic");
    tokio::join!(
        server,
        generate_load(target, rps, &counters, std::future::pending())
    );
    Ok(())
}

// === impl LoadCounters ===

impl LoadCounters {
    /// The counts so far.
    pub fn report(&self) -> LoadReport {
        LoadReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            versions: self.versions.lock().map(|v| v.clone()).unwrap_or_default(),
        }
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok { version } => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let version = version.unwrap_or_else(|| NO_RATING.to_string());
                if let Ok(mut versions) = self.versions.lock() {
                    *versions.entry(version).or_default() += 1;
                }
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("requests succeed again");
                }
            }
            Outcome::Failed(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%error, "request failed");
                } else {
                    tracing::warn!(%error, "requests started failing");
                }
            }
        }
    }
}

// === impl LoadReport ===

impl LoadReport {
    /// What happened between `earlier` and this report.
    pub fn since(&self, earlier: &LoadReport) -> LoadReport {
        let versions = self
            .versions
            .iter()
            .map(|(v, n)| {
                let before = earlier.versions.get(v).copied().unwrap_or(0);
                (v.clone(), n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        LoadReport {
            ok: self.ok.saturating_sub(earlier.ok),
            failed: self.failed.saturating_sub(earlier.failed),
            versions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn paced(rps: u32, secs: u64) -> LoadReport {
        let counters = LoadCounters::default();
        let stop = tokio::time::sleep(Duration::from_secs(secs));
        let send = |n: u64| {
            std::future::ready(if n % 4 == 3 {
                Outcome::Failed("asked to".into())
            } else {
                Outcome::Ok {
                    version: Some("v1".into()),
                }
            })
        };
        drive(rps, &counters, stop, send).await
    }

    #[tokio::test(start_paused = true)]
    async fn sends_at_most_the_asked_rate_capped_at_ten() {
        // (asked, seconds, most requests): the first tick fires at once.
        let cases = [
            (3, 10, 31),
            (10, 5, 51),
            (50, 5, 51),
            (u32::MAX, 2, 21),
            (0, 5, 6),
        ];
        for (rps, secs, most) in cases {
            let report = paced(rps, secs).await;
            let sent = report.ok + report.failed;
            assert!(
                (most - 1..=most).contains(&sent),
                "rps {rps} for {secs}s sent {sent}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_successes_failures_and_versions() {
        // Eight or nine requests; every fourth fails.
        let report = paced(4, 2).await;
        assert!((8..=9).contains(&(report.ok + report.failed)), "{report:?}");
        assert_eq!(report.failed, 2);
        assert_eq!(report.versions, [("v1".to_string(), report.ok)].into());
    }

    #[test]
    fn reports_subtract() {
        let earlier = LoadReport {
            ok: 10,
            failed: 1,
            versions: [("v1".to_string(), 10)].into(),
        };
        let later = LoadReport {
            ok: 25,
            failed: 1,
            versions: [("v1".to_string(), 20), ("v2".to_string(), 5)].into(),
        };
        let delta = later.since(&earlier);
        assert_eq!((delta.ok, delta.failed), (15, 0));
        assert_eq!(
            delta.versions,
            [("v1".to_string(), 10), ("v2".to_string(), 5)].into()
        );
    }
}
