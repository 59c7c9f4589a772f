//! Protection settings of a `BackendPolicy` (retry budget, circuit breaker, outlier
//! detection, adaptive concurrency, active health checks) and the `RateLimitPolicy`
//! kind. Every field is optional: what a policy leaves out keeps the proxy's default,
//! so a Service is protected without any policy at all.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::error::{Checked, ValidationError};
use crate::policy::{PolicyTargetReference, Ratio};
use crate::route::service_kind;
use crate::validate;

/// A positive number, such as a latency tolerance (validation refuses NaN and
/// infinities, which is why it can be `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Factor(#[cfg_attr(feature = "schemars", schemars(range(min = 1)))] pub f64);

impl Eq for Factor {}

/// `retryBudget`: retries may add at most `ratio` of the live request rate, plus
/// `minPerSecond`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudgetSpec {
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// 0 to 1. Default 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
    /// Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// `circuitBreaker`: limits per backend in each caller's proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// `outlierDetection`: passive health.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// 0 to 1; 0 turns the rate check off. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<Ratio>,
    /// Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_min_requests: Option<u32>,
    /// Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Default `300s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// 0 to 100. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// `adaptiveConcurrency`: a concurrency limit learned from latency.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveConcurrencySpec {
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Default 20, or `minLimit` when that is higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_limit: Option<u32>,
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_limit: Option<u32>,
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<u32>,
    /// At least 1. Default 1.25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Factor>,
}

/// How a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    #[default]
    Http,
    Grpc,
    Tcp,
}

/// `healthCheck`: active probes of every endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Default `http`.
    #[serde(default, rename = "type")]
    pub type_: HealthCheckType,
    /// For `http`. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `grpc`: the service asked about. Default: the whole server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

fn positive(at: &str, d: Option<Duration>) -> Checked {
    match d {
        Some(d) if d.is_zero() => Err(ValidationError::new(at, "must be greater than 0s")),
        _ => Ok(()),
    }
}

fn at_least_one(at: &str, n: Option<u32>) -> Checked {
    match n {
        Some(0) => Err(ValidationError::new(at, "must be at least 1")),
        _ => Ok(()),
    }
}

fn ratio(at: &str, r: Option<Ratio>) -> Checked {
    match r {
        Some(Ratio(x)) if !(0.0..=1.0).contains(&x) => Err(ValidationError::new(
            at,
            format!("must be between 0 and 1, got {x}"),
        )),
        _ => Ok(()),
    }
}

impl RetryBudgetSpec {
    pub fn check(&self, at: &str) -> Checked {
        ratio(&format!("{at}.ratio"), self.ratio)?;
        positive(&format!("{at}.window"), self.window)
    }
}

impl CircuitBreakerSpec {
    pub fn check(&self, at: &str) -> Checked {
        at_least_one(&format!("{at}.maxConnections"), self.max_connections)?;
        at_least_one(
            &format!("{at}.maxPendingRequests"),
            self.max_pending_requests,
        )?;
        at_least_one(&format!("{at}.maxRequests"), self.max_requests)
    }
}

impl OutlierDetectionSpec {
    pub fn check(&self, at: &str) -> Checked {
        at_least_one(
            &format!("{at}.consecutiveFailures"),
            self.consecutive_failures,
        )?;
        ratio(&format!("{at}.failureRate"), self.failure_rate)?;
        positive(&format!("{at}.interval"), self.interval)?;
        positive(&format!("{at}.baseEjectionTime"), self.base_ejection_time)?;
        if let Some(p) = self.max_ejection_percent.filter(|p| *p > 100) {
            return Err(ValidationError::new(
                format!("{at}.maxEjectionPercent"),
                format!("must be between 0 and 100, got {p}"),
            ));
        }
        if let (Some(base), Some(max)) = (self.base_ejection_time, self.max_ejection_time) {
            if max < base {
                return Err(ValidationError::new(
                    format!("{at}.maxEjectionTime"),
                    format!("must be at least baseEjectionTime ({base})"),
                ));
            }
        }
        Ok(())
    }
}

impl AdaptiveConcurrencySpec {
    pub fn check(&self, at: &str) -> Checked {
        at_least_one(&format!("{at}.minLimit"), self.min_limit)?;
        at_least_one(&format!("{at}.initialLimit"), self.initial_limit)?;
        at_least_one(&format!("{at}.maxLimit"), self.max_limit)?;
        if let (Some(min), Some(max)) = (self.min_limit, self.max_limit) {
            if min > max {
                return Err(ValidationError::new(
                    format!("{at}.minLimit"),
                    format!("must be at most maxLimit ({max}), got {min}"),
                ));
            }
        }
        match self.tolerance {
            Some(Factor(t)) if !(t.is_finite() && t >= 1.0) => Err(ValidationError::new(
                format!("{at}.tolerance"),
                format!("must be at least 1, got {t}"),
            )),
            _ => Ok(()),
        }
    }
}

impl HealthCheckSpec {
    pub fn check(&self, at: &str) -> Checked {
        if let Some(path) = self.path.as_ref().filter(|p| !p.starts_with('/')) {
            return Err(ValidationError::new(
                format!("{at}.path"),
                format!("must start with '/', got {path:?}"),
            ));
        }
        positive(&format!("{at}.interval"), self.interval)?;
        positive(&format!("{at}.timeout"), self.timeout)?;
        at_least_one(
            &format!("{at}.unhealthyThreshold"),
            self.unhealthy_threshold,
        )?;
        at_least_one(&format!("{at}.healthyThreshold"), self.healthy_threshold)
    }
}

/// `RateLimitPolicy`: request rates a Service accepts, enforced by each of its
/// replicas' sidecars on arrival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// The Service whose replicas enforce the limits, in the policy's namespace.
    pub target_ref: PolicyTargetReference,
    /// Token buckets on each replica, each at the full rate; a request must find a
    /// token in every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local: Vec<TokenBucket>,
    /// Rates for the whole Service: the control plane gives each ready replica a share
    /// in proportion to its weight (a third each of three), so together the replicas
    /// admit at most the rate; recomputed as replicas come and go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub global: Vec<TokenBucket>,
}

/// What a local limit keeps one bucket per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    /// One bucket for the whole Service (per replica).
    #[default]
    Service,
    /// One per route of the Service.
    Route,
    /// One per caller identity (SPIFFE ID; callers without one share a bucket).
    Source,
}

/// One token bucket per key: the shape of `local` and `global` limits alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBucket {
    /// Average requests per second allowed, at least 1.
    pub requests_per_second: u32,
    /// Requests allowed at once after a quiet spell. Default: `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Default `service`.
    #[serde(default)]
    pub per: RateLimitKey,
}

impl RateLimitPolicySpec {
    /// The targeted Service, in namespace `ns`.
    pub fn target(&self, ns: &str) -> Option<crate::ObjectRef> {
        self.target_ref.object_ref(ns)
    }

    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let t = &self.target_ref;
        service_kind("spec.targetRef", &t.group, &t.kind)?;
        validate::name("spec.targetRef.name", &t.name)?;
        if self.local.is_empty() && self.global.is_empty() {
            return Err(ValidationError::new(
                "spec.local",
                "at least one limit is required in local or global, e.g. \
                 local: [{requestsPerSecond: 100}]",
            ));
        }
        for (field, limits) in [("local", &self.local), ("global", &self.global)] {
            for (i, limit) in limits.iter().enumerate() {
                at_least_one(
                    &format!("spec.{field}[{i}].requestsPerSecond"),
                    Some(limit.requests_per_second),
                )?;
                at_least_one(&format!("spec.{field}[{i}].burst"), limit.burst)?;
            }
        }
        Ok(())
    }
}

/// A BackendPolicy's protection settings together, as the proxy API carries them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResilienceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudgetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<AdaptiveConcurrencySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

impl crate::policy::BackendPolicySpec {
    /// The policy's protection settings.
    pub fn resilience(&self) -> ResilienceSpec {
        ResilienceSpec {
            retry_budget: self.retry_budget.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
            outlier_detection: self.outlier_detection.clone(),
            adaptive_concurrency: self.adaptive_concurrency.clone(),
            health_check: self.health_check.clone(),
        }
    }
}

mod wire;
