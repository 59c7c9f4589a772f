//! Golden signals for `trellis stat`: the control plane scrapes the `/metrics` of the
//! proxies connected to it ([`Telemetry::run`]) and keeps, per proxy, a few minutes of
//! reduced scrapes ([`window`]), from which it answers success rate, requests per
//! second and latency percentiles per service, workload or route over a window.
//!
//! Pull, not push: the proxies already serve `/metrics` for Prometheus, so the control
//! plane reads the same numbers Prometheus does, the proxies carry no second reporting
//! path, and a proxy pays nothing for it but answering a scrape now and then.
//! ARCHITECTURE.md says more.

pub mod parse;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use self::window::{Counts, History};
use crate::registry::Registry;

/// How often each proxy is scraped, and how long scrapes are kept.
#[derive(Debug, Clone, Copy)]
pub struct TelemetrySettings {
    /// Default 10 s; zero turns scraping off.
    pub interval: Duration,
    /// Default 10 min: the longest window `stat` can answer for.
    pub retention: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            retention: Duration::from_secs(600),
        }
    }
}

/// What `stat` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Requests a service's workloads received (their inbound proxies).
    Service,
    /// Requests one workload received.
    Workload,
    /// Requests proxies sent through a route (outbound).
    Route,
}

/// One line of `stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatRow {
    pub name: String,
    pub namespace: String,
    /// The window's raw counts, which rows from several control planes add up.
    pub counts: Counts,
    /// Seconds the counts cover.
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Share of requests not answered 5xx; `None` without requests.
    pub success_rate: Option<f64>,
    /// Milliseconds.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl StatRow {
    /// Fills the derived figures from the counts.
    pub fn derive(mut self) -> Self {
        let c = &self.counts;
        self.requests_per_second = if self.seconds > 0.0 {
            c.requests / self.seconds
        } else {
            0.0
        };
        self.success_rate = (c.requests > 0.0).then(|| 1.0 - c.failures / c.requests);
        let ms = |q| c.quantile(q).map(|s| s * 1e3);
        (self.p50_ms, self.p95_ms, self.p99_ms) = (ms(0.5), ms(0.95), ms(0.99));
        self
    }

    /// Adds another control plane's row for the same name.
    pub fn merge(&mut self, other: &StatRow) {
        self.counts.add(&other.counts);
        self.seconds = self.seconds.max(other.seconds);
    }
}

/// The scrapes of the proxies connected to this control plane.
pub struct Telemetry {
    registry: Arc<Registry>,
    settings: TelemetrySettings,
    proxies: Mutex<HashMap<String, History>>,
    /// When the last round of scrapes ended; one at a time.
    last_round: tokio::sync::Mutex<Option<Instant>>,
}

/// A `stat` asked for more than a second after the last scrape gets a fresh one, so
/// its window ends now.
const FRESH: Duration = Duration::from_secs(1);

/// How many proxies are scraped at once.
const PARALLEL_SCRAPES: usize = 32;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

impl Telemetry {
    pub fn new(registry: Arc<Registry>, settings: TelemetrySettings) -> Self {
        Self {
            registry,
            settings,
            proxies: Mutex::new(HashMap::new()),
            last_round: tokio::sync::Mutex::new(None),
        }
    }

    /// Scrapes now unless a round ended within the last second.
    pub async fn refresh(&self) {
        let mut last = self.last_round.lock().await;
        if last.is_some_and(|at| at.elapsed() < FRESH) {
            return;
        }
        self.round().await;
        *last = Some(Instant::now());
    }

    /// Scrapes every connected proxy every interval, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        if self.settings.interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.refresh().await;
        }
    }

    /// One round of scrapes.
    async fn round(&self) {
        let targets: Vec<(String, String)> = self
            .registry
            .list()
            .into_iter()
            .filter(|p| !p.admin_address.is_empty())
            .map(|p| (p.workload, p.admin_address))
            .collect();
        let results: Vec<(String, Option<String>)> = futures_util::stream::iter(targets)
            .map(|(workload, address)| async move {
                let text = tokio::time::timeout(SCRAPE_TIMEOUT, get(&address, "/metrics", None))
                    .await
                    .ok()
                    .and_then(Result::ok);
                (workload, text)
            })
            .buffer_unordered(PARALLEL_SCRAPES)
            .collect()
            .await;
        let now = Instant::now();
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        for (workload, text) in results {
            let Some(text) = text else { continue };
            let snapshot = window::snapshot(&parse::samples(&text));
            proxies
                .entry(workload)
                .or_default()
                .push(now, snapshot, self.settings.retention);
        }
        // Proxies that left are forgotten.
        let live: std::collections::HashSet<String> = self
            .registry
            .list()
            .into_iter()
            .map(|p| p.workload)
            .collect();
        proxies.retain(|workload, _| live.contains(workload));
    }

    /// Each connected proxy's workload → (service, namespace).
    fn services(&self) -> HashMap<String, (String, String)> {
        self.registry
            .list()
            .into_iter()
            .map(|p| (p.workload, (p.service, p.namespace)))
            .collect()
    }

    /// The rows for `by` over `window`, optionally only `name`, sorted by name.
    pub fn stat(&self, by: By, name: Option<&str>, window: Duration) -> Vec<StatRow> {
        let statuses = self.services();
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: BTreeMap<(String, String), StatRow> = BTreeMap::new();
        for (workload, history) in proxies.iter() {
            let Some((service, namespace)) = statuses.get(workload) else {
                continue;
            };
            let Some((delta, seconds)) = history.delta(window) else {
                continue;
            };
            for (series, counts) in delta {
                let inbound = series.listener == INBOUND_LISTENER;
                let key = match by {
                    By::Service if inbound => service.clone(),
                    By::Workload if inbound => workload.clone(),
                    By::Route if !inbound => series.route,
                    _ => continue,
                };
                if name.is_some_and(|n| n != key) {
                    continue;
                }
                let row = rows
                    .entry((namespace.clone(), key.clone()))
                    .or_insert_with(|| StatRow {
                        name: key,
                        namespace: namespace.clone(),
                        ..StatRow::default()
                    });
                row.merge(&StatRow {
                    counts,
                    seconds,
                    ..StatRow::default()
                });
            }
        }
        rows.into_values().map(StatRow::derive).collect()
    }
}

impl Telemetry {
    /// Who called whom over `window`, from what the callees' proxies received: one row
    /// per (caller identity, callee service, mTLS or not). A caller without mTLS has no
    /// identity (`source` empty).
    pub fn edges(&self, window: Duration) -> Vec<EdgeRow> {
        let statuses = self.services();
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: BTreeMap<(String, String, String, bool), EdgeRow> = BTreeMap::new();
        for (workload, history) in proxies.iter() {
            let (Some((service, namespace)), Some((delta, seconds))) =
                (statuses.get(workload), history.delta(window))
            else {
                continue;
            };
            for (series, counts) in delta {
                // Latency buckets sit under no caller: edges count requests only.
                if series.listener != INBOUND_LISTENER || counts.requests <= 0.0 {
                    continue;
                }
                let key = (
                    series.peer.clone(),
                    namespace.clone(),
                    service.clone(),
                    series.tls,
                );
                let row = rows.entry(key).or_insert_with(|| EdgeRow {
                    source: series.peer.clone(),
                    destination: service.clone(),
                    namespace: namespace.clone(),
                    mtls: series.tls,
                    ..EdgeRow::default()
                });
                row.merge(&EdgeRow {
                    requests: counts.requests,
                    failures: counts.failures,
                    seconds,
                    ..EdgeRow::default()
                });
            }
        }
        rows.into_values().map(EdgeRow::derive).collect()
    }
}

/// One caller → callee edge of `trellis edges`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRow {
    /// The caller's SPIFFE ID; empty when it called without mTLS.
    pub source: String,
    /// The service called, and its namespace.
    pub destination: String,
    pub namespace: String,
    pub mtls: bool,
    pub requests: f64,
    pub failures: f64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub success_rate: Option<f64>,
}

impl EdgeRow {
    pub fn derive(mut self) -> Self {
        self.requests_per_second = if self.seconds > 0.0 {
            self.requests / self.seconds
        } else {
            0.0
        };
        self.success_rate = (self.requests > 0.0).then(|| 1.0 - self.failures / self.requests);
        self
    }

    pub fn merge(&mut self, other: &EdgeRow) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.seconds = self.seconds.max(other.seconds);
    }

    /// Whether `service` in `namespace` is at either end.
    pub fn touches(&self, service: &str, namespace: &str) -> bool {
        let caller = format!("/ns/{namespace}/sa/{service}");
        (self.destination == service && self.namespace == namespace)
            || self.source.ends_with(&caller)
    }
}

/// The name of a sidecar's inbound listener (`trellis_proxy::config::INBOUND_LISTENER`,
/// which this crate cannot name).
const INBOUND_LISTENER: &str = "inbound";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `GET http://{address}{path}`, with `token` as a bearer token if given: the
/// response, once its status says success, with its body still to read.
pub async fn open(
    address: &str,
    path: &str,
    token: Option<&str>,
) -> Result<hyper::Response<hyper::body::Incoming>, BoxError> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, address);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("{address}{path} answered {}", response.status()).into());
    }
    Ok(response)
}

/// The same, with the whole body as text.
pub async fn get(address: &str, path: &str, token: Option<&str>) -> Result<String, BoxError> {
    use http_body_util::BodyExt;
    let body = open(address, path, token)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
