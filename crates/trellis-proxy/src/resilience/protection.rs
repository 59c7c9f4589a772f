//! One backend's protection as the request path uses it: the retry budget, the
//! circuit breaker, outlier detection, active health and the adaptive concurrency
//! limit, built from the backend's `resilience` settings and carried across
//! configuration reloads that leave those settings (and, for per-endpoint state, the
//! endpoints) unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::{self, AdaptiveConfig, AdaptiveLimit, Admitted};
use super::breaker::{Breaker, BreakerConfig, Overflow, Permit};
use super::budget::{BudgetConfig, RetryBudget};
use super::health::HealthStatus;
use super::outlier::{Outcome, OutlierConfig, OutlierDetector};
use crate::config::ResilienceConfig;
use crate::endpoint::Endpoint;
use crate::tls::IdentitySlot;
use trellis_identity::SpiffeId;

/// Why a request was refused before reaching the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A circuit-breaker limit.
    Limit(Overflow),
    /// The adaptive concurrency limit.
    ConcurrencyLimit,
}

impl Rejection {
    /// The `x-trellis-overflow` header value and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Limit(Overflow::Connections) => "max-connections",
            Rejection::Limit(Overflow::PendingRequests) => "max-pending-requests",
            Rejection::Limit(Overflow::Requests) => "max-requests",
            Rejection::ConcurrencyLimit => "concurrency-limit",
        }
    }

    /// The `trellis-error` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Limit(overflow) => overflow.reason(),
            Rejection::ConcurrencyLimit => "concurrency limit",
        }
    }
}

/// A request admitted to a backend: held until its response ends.
#[derive(Debug)]
pub struct Admission {
    _request: Option<Permit>,
    _adaptive: Option<Admitted>,
}

/// The protection of one backend, shared by every request to it.
#[derive(Debug)]
pub struct Protection {
    config: ResilienceConfig,
    /// The endpoints' addresses, in the order per-endpoint state is indexed by.
    endpoints: Vec<(SocketAddr, Option<SpiffeId>)>,
    budget: Option<Arc<RetryBudget>>,
    breaker: Option<Arc<Breaker>>,
    outlier: Option<Arc<OutlierDetector>>,
    adaptive: Option<Arc<AdaptiveLimit>>,
    health: Option<Arc<HealthStatus>>,
}

impl Protection {
    /// Builds a backend's protection; the parts of `previous` whose settings are
    /// unchanged are kept with their state (per-endpoint parts only if `same_endpoints`).
    /// Health probes reach `targets` (the backend's endpoints) with the identity in
    /// `identity`.
    pub fn build(
        config: &ResilienceConfig,
        targets: &[Arc<Endpoint>],
        identity: &IdentitySlot,
        previous: Option<&Protection>,
    ) -> Self {
        let keys: Vec<_> = targets
            .iter()
            .map(|e| (e.addr(), e.identity().cloned()))
            .collect();
        let endpoints = keys.len();
        let same_endpoints = previous.is_some_and(|p| p.endpoints == keys);
        let now = Instant::now();
        let kept = |same: bool| previous.filter(|_| same);
        let old = previous.map(|p| &p.config);
        let b = &config.retry_budget;
        let budget = match kept(old.map(|o| &o.retry_budget) == Some(b)) {
            Some(p) => p.budget.clone(),
            None => b.enabled.then(|| {
                Arc::new(RetryBudget::new(
                    BudgetConfig {
                        ratio: b.ratio,
                        min_per_second: b.min_per_second,
                        window: b.window.get(),
                    },
                    now,
                ))
            }),
        };
        let c = &config.circuit_breaker;
        let breaker = match kept(old.map(|o| &o.circuit_breaker) == Some(c)) {
            Some(p) => p.breaker.clone(),
            None => c.enabled.then(|| {
                Arc::new(Breaker::new(BreakerConfig {
                    max_connections: Some(c.max_connections as usize),
                    max_pending_requests: Some(c.max_pending_requests as usize),
                    max_requests: Some(c.max_requests as usize),
                }))
            }),
        };
        let o = &config.outlier_detection;
        let outlier = match kept(old.map(|x| &x.outlier_detection) == Some(o) && same_endpoints) {
            Some(p) => p.outlier.clone(),
            None => o.enabled.then(|| {
                let config = OutlierConfig {
                    consecutive_failures: o.consecutive_failures,
                    failure_rate: (o.failure_rate > 0.0).then_some(o.failure_rate),
                    min_requests: o.failure_rate_min_requests,
                    window: o.interval.get(),
                    base_ejection: o.base_ejection_time.get(),
                    max_ejection: o.max_ejection_time.get(),
                    max_ejected_percent: o.max_ejection_percent,
                };
                Arc::new(OutlierDetector::new(config, endpoints))
            }),
        };
        let a = &config.adaptive_concurrency;
        let adaptive = match kept(old.map(|x| &x.adaptive_concurrency) == Some(a)) {
            Some(p) => p.adaptive.clone(),
            None => a.enabled.then(|| {
                Arc::new(AdaptiveLimit::new(AdaptiveConfig {
                    initial_limit: f64::from(a.initial_limit),
                    min_limit: f64::from(a.min_limit),
                    max_limit: f64::from(a.max_limit),
                    tolerance: a.tolerance,
                    ..AdaptiveConfig::default()
                }))
            }),
        };
        let h = &config.health_check;
        let health = match kept(old.map(|x| &x.health_check) == Some(h) && same_endpoints) {
            Some(p) => p.health.clone(),
            None => h.as_ref().map(|h| {
                let status = Arc::new(HealthStatus::new(h.clone(), endpoints));
                status.start(targets.to_vec(), identity.clone());
                status
            }),
        };
        Self {
            config: config.clone(),
            endpoints: keys,
            budget,
            breaker,
            outlier,
            adaptive,
            health,
        }
    }

    /// Admits a request under the breaker's request limit and the adaptive limit.
    pub fn admit(&self) -> Result<Admission, Rejection> {
        let request = match &self.breaker {
            Some(b) => Some(
                b.try_acquire(Overflow::Requests)
                    .map_err(Rejection::Limit)?,
            ),
            None => None,
        };
        let adaptive = match &self.adaptive {
            Some(limit) => Some(limit.try_admit().ok_or(Rejection::ConcurrencyLimit)?),
            None => None,
        };
        Ok(Admission {
            _request: request,
            _adaptive: adaptive,
        })
    }

    /// How long a caller shed by the adaptive limit should wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.adaptive.as_deref().map(adaptive::retry_after)
    }

    /// The breaker, for the connection and pending-request limits the endpoints apply.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// The endpoints balancing must skip now (ejected or failing their health checks),
    /// by index; `None` when it skips none.
    pub fn excluded(&self, now: Instant) -> Option<Vec<bool>> {
        let ejected = self.outlier.as_ref().and_then(|o| o.ejected_set(now));
        let unhealthy = self.health.as_ref().and_then(|h| h.unhealthy_set());
        match (ejected, unhealthy) {
            (None, None) => None,
            (Some(set), None) | (None, Some(set)) => Some(set),
            (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| *x || *y).collect()),
        }
    }

    /// Records what endpoint `i` answered; true if that ejected it.
    pub fn record(&self, i: usize, outcome: Outcome, now: Instant) -> bool {
        self.outlier
            .as_ref()
            .is_some_and(|o| o.record(i, outcome, now))
    }

    /// Feeds one round trip to the adaptive limit.
    pub fn observe_rtt(&self, rtt: Duration, now: Instant) {
        if let Some(limit) = &self.adaptive {
            limit.record(rtt, now);
        }
    }

    /// Counts a request sent to the backend for the first time.
    pub fn deposit(&self, now: Instant) {
        if let Some(budget) = &self.budget {
            budget.deposit(now);
        }
    }

    /// Takes one retry from the budget; false when it is spent. Without a budget,
    /// every retry the route asks for is allowed.
    pub fn try_retry(&self, now: Instant) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_withdraw(now))
    }

    /// The current adaptive limit, for metrics.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.adaptive.as_ref().map(|a| a.limit())
    }

    /// Endpoints ejected now, for metrics.
    pub fn ejected(&self, now: Instant) -> usize {
        self.outlier.as_ref().map_or(0, |o| o.ejected(now))
    }

    /// The active health state, for the checker.
    pub fn health(&self) -> Option<&Arc<HealthStatus>> {
        self.health.as_ref()
    }

    /// The settings in force.
    pub fn config(&self) -> &ResilienceConfig {
        &self.config
    }
}
