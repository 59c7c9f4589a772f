//! Metrics of the protection mechanisms, appended to the admin `/metrics` output:
//! counters of what they did (retries refused by the budget, requests refused by a
//! limit, ejections, rate-limited requests) labelled by backend or listener, and gauges
//! of their state (the adaptive limit, ejected endpoints) read from the current
//! snapshot at each scrape, so they never go stale when a backend is removed.
//! Retries themselves are `trellis_retries_total` of the request metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::protection::Rejection;
use crate::state::Snapshot;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectionLabels {
    pub backend: Arc<str>,
    pub reason: &'static str,
}

/// A rate-limited request: the listener it arrived on, the policy's name and what the
/// bucket was keyed by (`service`, `route`, `source`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub listener: Arc<str>,
    pub policy: Arc<str>,
    pub key: &'static str,
}

/// The protection metrics of one proxy.
#[derive(Debug)]
pub struct ResilienceMetrics {
    registry: Registry,
    budget_exhausted: Family<BackendLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    ejections: Family<BackendLabels, Counter>,
    rate_limited: Family<RateLimitLabels, Counter>,
    ejected: Family<BackendLabels, Gauge>,
    concurrency_limit: Family<BackendLabels, Gauge>,
}

impl ResilienceMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let budget_exhausted = Family::default();
        registry.register(
            "trellis_retry_budget_exhausted",
            "Retries a route asked for that the backend's retry budget refused",
            budget_exhausted.clone(),
        );
        let rejections = Family::default();
        registry.register(
            "trellis_circuit_rejections",
            "Requests refused at once by a backend's circuit breaker or concurrency limit",
            rejections.clone(),
        );
        let ejections = Family::default();
        registry.register(
            "trellis_outlier_ejections",
            "Endpoints ejected by outlier detection",
            ejections.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "trellis_rate_limited",
            "Requests answered 429 by a rate limit",
            rate_limited.clone(),
        );
        let ejected = Family::default();
        registry.register(
            "trellis_outlier_ejected",
            "Endpoints of the backend ejected now",
            ejected.clone(),
        );
        let concurrency_limit = Family::default();
        registry.register(
            "trellis_concurrency_limit",
            "The backend's adaptive concurrency limit now",
            concurrency_limit.clone(),
        );
        Self {
            registry,
            budget_exhausted,
            rejections,
            ejections,
            rate_limited,
            ejected,
            concurrency_limit,
        }
    }

    pub fn record_budget_exhausted(&self, backend: &Arc<str>) {
        let labels = BackendLabels {
            backend: backend.clone(),
        };
        self.budget_exhausted.get_or_create(&labels).inc();
    }

    pub fn record_rejection(&self, backend: &Arc<str>, rejection: Rejection) {
        let labels = RejectionLabels {
            backend: backend.clone(),
            reason: rejection.label(),
        };
        self.rejections.get_or_create(&labels).inc();
    }

    pub fn record_ejection(&self, backend: &Arc<str>) {
        let labels = BackendLabels {
            backend: backend.clone(),
        };
        self.ejections.get_or_create(&labels).inc();
    }

    pub fn record_rate_limited(&self, listener: &Arc<str>, policy: &Arc<str>, key: &'static str) {
        let labels = RateLimitLabels {
            listener: listener.clone(),
            policy: policy.clone(),
            key,
        };
        self.rate_limited.get_or_create(&labels).inc();
    }

    /// The metrics as OpenMetrics text without the closing `# EOF`, with the gauges
    /// read from `snapshot`'s backends.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        self.ejected.clear();
        self.concurrency_limit.clear();
        let now = tokio::time::Instant::now();
        for backend in snapshot.backends.values() {
            let labels = BackendLabels {
                backend: backend.name.clone(),
            };
            let protection = &backend.protection;
            if let Some(limit) = protection.concurrency_limit() {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                self.concurrency_limit.get_or_create(&labels).set(limit);
            }
            let ejected = i64::try_from(protection.ejected(now)).unwrap_or(i64::MAX);
            self.ejected.get_or_create(&labels).set(ejected);
        }
        let mut out = String::with_capacity(2048);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("resilience metrics encoding stopped early");
        }
        strip_eof(out)
    }
}

impl Default for ResilienceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// OpenMetrics text without its closing `# EOF` line, so another encoding can follow.
pub fn strip_eof(mut text: String) -> String {
    if let Some(at) = text.rfind("# EOF") {
        text.truncate(at);
    }
    text
}

/// The whole admin `/metrics` text: the request metrics, then these, then `# EOF`.
pub fn join(request_metrics: String, resilience: String) -> String {
    let mut out = strip_eof(request_metrics);
    out.push_str(&resilience);
    out.push_str("# EOF\n");
    out
}
