//! A backend's protection settings: retry budget, circuit-breaking limits, outlier
//! detection, adaptive concurrency and active health checks. All but health checks are
//! on by default with conservative values, so a backend is protected without anyone
//! configuring it; each block takes `enabled: false` to turn it off.

use serde::{Deserialize, Serialize};
/// What a rate limit keeps one bucket per (the RateLimitPolicy's own shape).
pub use trellis_api::resilience::RateLimitKey;
use trellis_api::resilience::{HealthCheckType, ResilienceSpec};

use super::{ConfigError, Duration};

fn enabled() -> bool {
    true
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Retries to a backend may add at most `ratio` of its live request rate, plus
/// `minPerSecond`, whatever the routes ask for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Default `true`; `false` lets routes retry without a budget.
    pub enabled: bool,
    /// Retries allowed per request sent, 0 to 1. Default 0.2.
    pub ratio: f64,
    /// Retries per second allowed however quiet the backend is. Default 10.
    pub min_per_second: u32,
    /// How far back requests and retries count. Default `10s`.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Limits on what one backend may hold of this proxy; what overflows is answered 503
/// at once with `x-trellis-overflow` naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Connections open to the backend's endpoints at once. Default 1024.
    pub max_connections: u32,
    /// Requests waiting for a new connection at once. Default 1024.
    pub max_pending_requests: u32,
    /// Requests in flight to the backend at once. Default 1024.
    pub max_requests: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
        }
    }
}

/// Passive health: endpoints that fail are left out of balancing for a while.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetectionConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Failures in a row (5xx, 429, connect failures, resets, attempt timeouts) that
    /// eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// Share of failed requests over `interval` that ejects, 0 to 1; 0 turns the check
    /// off. Default 0.5.
    pub failure_rate: f64,
    /// Requests an endpoint must have had in `interval` before its rate counts.
    /// Default 20.
    pub failure_rate_min_requests: u32,
    /// Window of the failure rate. Default `10s`.
    pub interval: Duration,
    /// First ejection; each next one lasts this much longer. Default `30s`.
    pub base_ejection_time: Duration,
    /// Longest ejection. Default `300s`.
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (one may always be). Default 50.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetectionConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            consecutive_failures: 5,
            failure_rate: 0.5,
            failure_rate_min_requests: 20,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// A concurrency limit per backend learned from its latency (gradient); requests past
/// it are answered 503 with `retry-after`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdaptiveConcurrencyConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Where the limit starts, and the least it drifts back to while the backend is
    /// far from it. Default 20.
    pub initial_limit: u32,
    /// The limit stays within these. Default 10 and 1000.
    pub min_limit: u32,
    pub max_limit: u32,
    /// How many times slower than its usual latency the backend may get before the
    /// limit shrinks, at least 1. Default 1.25.
    pub tolerance: f64,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            initial_limit: 20,
            min_limit: 10,
            max_limit: 1000,
            tolerance: 1.25,
        }
    }
}

/// How an active health check probes an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    /// `GET path`; any 2xx is healthy.
    #[default]
    Http,
    /// `grpc.health.v1.Health/Check`; `SERVING` is healthy.
    Grpc,
    /// A TCP connection that opens is healthy.
    Tcp,
}

/// Active health checks: each endpoint probed every `interval`; an endpoint failing
/// `unhealthyThreshold` probes in a row is left out until it passes `healthyThreshold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Default `http`.
    #[serde(default, rename = "type")]
    pub protocol: HealthCheckProtocol,
    /// For `http`: the path probed. Default `/`.
    #[serde(default = "root")]
    pub path: String,
    /// For `grpc`: the service asked about. Default `""` (the whole server).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Default `10s`.
    #[serde(default = "ten_seconds")]
    pub interval: Duration,
    /// Time allowed for one probe. Default `1s`.
    #[serde(default = "one_second")]
    pub timeout: Duration,
    /// Default 3.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
    /// Default 2.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
}

fn root() -> String {
    "/".into()
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn three() -> u32 {
    3
}
fn two() -> u32 {
    2
}

/// Every protection setting of one backend.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResilienceConfig {
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry_budget: RetryBudgetConfig,
    #[serde(default, skip_serializing_if = "is_default")]
    pub circuit_breaker: CircuitBreakerConfig,
    #[serde(default, skip_serializing_if = "is_default")]
    pub outlier_detection: OutlierDetectionConfig,
    #[serde(default, skip_serializing_if = "is_default")]
    pub adaptive_concurrency: AdaptiveConcurrencyConfig,
    /// Unset: no active checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
}

impl ResilienceConfig {
    /// True for the defaults, which the configuration leaves unwritten.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Everything off: no budget, limits, ejection or shedding (for comparisons).
    pub fn all_off() -> Self {
        Self {
            retry_budget: RetryBudgetConfig {
                enabled: false,
                ..RetryBudgetConfig::default()
            },
            circuit_breaker: CircuitBreakerConfig {
                enabled: false,
                ..CircuitBreakerConfig::default()
            },
            outlier_detection: OutlierDetectionConfig {
                enabled: false,
                ..OutlierDetectionConfig::default()
            },
            adaptive_concurrency: AdaptiveConcurrencyConfig {
                enabled: false,
                ..AdaptiveConcurrencyConfig::default()
            },
            health_check: None,
        }
    }

    /// Checks the values the types allow but the mechanisms cannot use; `at` is the
    /// backend's path (`backends[0]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str| {
            Err(ConfigError::invalid(format!("{at}.{field}"), message))
        };
        let b = &self.retry_budget;
        if !(0.0..=1.0).contains(&b.ratio) {
            return bad(
                "retryBudget.ratio",
                &format!("must be between 0 and 1, got {}", b.ratio),
            );
        }
        if b.window.get().is_zero() {
            return bad("retryBudget.window", "must be greater than 0");
        }
        let c = &self.circuit_breaker;
        for (field, value) in [
            ("maxConnections", c.max_connections),
            ("maxPendingRequests", c.max_pending_requests),
            ("maxRequests", c.max_requests),
        ] {
            if value == 0 {
                return bad(&format!("circuitBreaker.{field}"), "must be at least 1");
            }
        }
        let o = &self.outlier_detection;
        if o.consecutive_failures == 0 {
            return bad("outlierDetection.consecutiveFailures", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&o.failure_rate) {
            let message = format!("must be between 0 and 1, got {}", o.failure_rate);
            return bad("outlierDetection.failureRate", &message);
        }
        if o.max_ejection_percent > 100 {
            let message = format!("must be between 0 and 100, got {}", o.max_ejection_percent);
            return bad("outlierDetection.maxEjectionPercent", &message);
        }
        if o.interval.get().is_zero() {
            return bad("outlierDetection.interval", "must be greater than 0");
        }
        if o.base_ejection_time.get().is_zero() {
            return bad(
                "outlierDetection.baseEjectionTime",
                "must be greater than 0",
            );
        }
        if o.max_ejection_time < o.base_ejection_time {
            return bad(
                "outlierDetection.maxEjectionTime",
                "must be at least baseEjectionTime",
            );
        }
        let a = &self.adaptive_concurrency;
        if a.min_limit == 0 || a.min_limit > a.max_limit {
            return bad(
                "adaptiveConcurrency.minLimit",
                &format!(
                    "must be between 1 and maxLimit ({}), got {}",
                    a.max_limit, a.min_limit
                ),
            );
        }
        if !(a.min_limit..=a.max_limit).contains(&a.initial_limit) {
            let message = format!(
                "must be between minLimit ({}) and maxLimit ({}), got {}",
                a.min_limit, a.max_limit, a.initial_limit
            );
            return bad("adaptiveConcurrency.initialLimit", &message);
        }
        if !(a.tolerance >= 1.0 && a.tolerance.is_finite()) {
            let message = format!("must be at least 1, got {}", a.tolerance);
            return bad("adaptiveConcurrency.tolerance", &message);
        }
        if let Some(h) = &self.health_check {
            if h.protocol == HealthCheckProtocol::Http && !h.path.starts_with('/') {
                let message = format!("must start with '/', got {:?}", h.path);
                return bad("healthCheck.path", &message);
            }
            if h.interval.get().is_zero() {
                return bad("healthCheck.interval", "must be greater than 0");
            }
            if h.timeout.get().is_zero() {
                return bad("healthCheck.timeout", "must be greater than 0");
            }
            if h.unhealthy_threshold == 0 {
                return bad("healthCheck.unhealthyThreshold", "must be at least 1");
            }
            if h.healthy_threshold == 0 {
                return bad("healthCheck.healthyThreshold", "must be at least 1");
            }
        }
        Ok(())
    }
}

impl ResilienceConfig {
    /// The defaults with what a BackendPolicy sets (`spec`) written over them: the
    /// settings in force for its Service.
    pub fn from_spec(spec: &ResilienceSpec) -> Self {
        let mut c = Self::default();
        let d = |d: trellis_api::Duration| Duration(d.get());
        if let Some(s) = &spec.retry_budget {
            let b = &mut c.retry_budget;
            set(&mut b.enabled, s.enabled);
            set(&mut b.ratio, s.ratio.map(|r| r.0));
            set(&mut b.min_per_second, s.min_per_second);
            set(&mut b.window, s.window.map(d));
        }
        if let Some(s) = &spec.circuit_breaker {
            let b = &mut c.circuit_breaker;
            set(&mut b.enabled, s.enabled);
            set(&mut b.max_connections, s.max_connections);
            set(&mut b.max_pending_requests, s.max_pending_requests);
            set(&mut b.max_requests, s.max_requests);
        }
        if let Some(s) = &spec.outlier_detection {
            let o = &mut c.outlier_detection;
            set(&mut o.enabled, s.enabled);
            set(&mut o.consecutive_failures, s.consecutive_failures);
            set(&mut o.failure_rate, s.failure_rate.map(|r| r.0));
            set(
                &mut o.failure_rate_min_requests,
                s.failure_rate_min_requests,
            );
            set(&mut o.interval, s.interval.map(d));
            set(&mut o.base_ejection_time, s.base_ejection_time.map(d));
            set(&mut o.max_ejection_time, s.max_ejection_time.map(d));
            set(&mut o.max_ejection_percent, s.max_ejection_percent);
        }
        if let Some(s) = &spec.adaptive_concurrency {
            let a = &mut c.adaptive_concurrency;
            set(&mut a.enabled, s.enabled);
            set(&mut a.initial_limit, s.initial_limit);
            set(&mut a.min_limit, s.min_limit);
            set(&mut a.max_limit, s.max_limit);
            set(&mut a.tolerance, s.tolerance.map(|t| t.0));
            // A policy that narrows the bounds moves the start inside them.
            a.initial_limit = a
                .initial_limit
                .clamp(a.min_limit, a.max_limit.max(a.min_limit));
        }
        c.health_check = spec.health_check.as_ref().map(|s| HealthCheckConfig {
            protocol: match s.type_ {
                HealthCheckType::Http => HealthCheckProtocol::Http,
                HealthCheckType::Grpc => HealthCheckProtocol::Grpc,
                HealthCheckType::Tcp => HealthCheckProtocol::Tcp,
            },
            path: s.path.clone().unwrap_or_else(root),
            service: s.service.clone().unwrap_or_default(),
            interval: s.interval.map_or_else(ten_seconds, d),
            timeout: s.timeout.map_or_else(one_second, d),
            unhealthy_threshold: s.unhealthy_threshold.unwrap_or_else(three),
            healthy_threshold: s.healthy_threshold.unwrap_or_else(two),
        });
        c
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// A token bucket per key on a listener (what a RateLimitPolicy compiles to): a
/// request that finds its bucket empty is answered 429 with `retry-after` and
/// `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// In metrics (`trellis_rate_limited_total{policy}`). Default `rate-limit`.
    #[serde(default = "rate_limit_name")]
    pub name: String,
    /// Average requests per second, at least 1.
    pub requests_per_second: u32,
    /// Requests allowed at once after a quiet spell. Default: `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `service` (one bucket for the listener), `route` or `source` (the caller's
    /// identity). Default `service`.
    #[serde(default)]
    pub per: RateLimitKey,
    /// The part of `requestsPerSecond` and `burst` this proxy enforces: a global
    /// limit's share for this replica, which the control plane computes. Default: all
    /// of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<RateShare>,
}

/// `weight` out of `total`: a replica's part of a limit shared by all replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateShare {
    pub weight: u32,
    pub total: u32,
}

fn rate_limit_name() -> String {
    "rate-limit".into()
}

impl RateLimitConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.requests_per_second == 0 {
            return Err(ConfigError::invalid(
                format!("{at}.requestsPerSecond"),
                "must be at least 1",
            ));
        }
        if self.burst == Some(0) {
            return Err(ConfigError::invalid(
                format!("{at}.burst"),
                "must be at least 1",
            ));
        }
        if let Some(share) = self.share {
            if share.weight == 0 || share.weight > share.total {
                return Err(ConfigError::invalid(
                    format!("{at}.share"),
                    format!(
                        "weight must be between 1 and total, got {} of {}",
                        share.weight, share.total
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The rate and bucket size this proxy enforces: its share of both. The bucket
    /// holds at least one token, or no request could ever pass.
    pub fn rate(&self) -> (f64, u32) {
        let burst = self.burst.unwrap_or(self.requests_per_second);
        match self.share {
            Some(RateShare { weight, total }) if total > 0 => {
                let part = f64::from(weight) / f64::from(total);
                let burst = u64::from(burst) * u64::from(weight) / u64::from(total);
                (
                    f64::from(self.requests_per_second) * part,
                    u32::try_from(burst).unwrap_or(u32::MAX).max(1),
                )
            }
            _ => (f64::from(self.requests_per_second), burst),
        }
    }
}
