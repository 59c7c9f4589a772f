//! The protection settings to and from the proxy API's messages: the control plane
//! sends a policy's settings as written (unset stays unset), and the proxy fills in its
//! defaults.

use super::*;
use crate::proto::v1 as pb;

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX))
}

fn duration(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl From<&ResilienceSpec> for pb::Resilience {
    fn from(s: &ResilienceSpec) -> Self {
        pb::Resilience {
            retry_budget: s.retry_budget.as_ref().map(|b| pb::RetryBudget {
                enabled: b.enabled,
                ratio: b.ratio.map(|r| r.0),
                min_per_second: b.min_per_second,
                window_ms: ms(b.window),
            }),
            circuit_breaker: s.circuit_breaker.as_ref().map(|c| pb::CircuitBreaker {
                enabled: c.enabled,
                max_connections: c.max_connections,
                max_pending_requests: c.max_pending_requests,
                max_requests: c.max_requests,
            }),
            outlier_detection: s.outlier_detection.as_ref().map(|o| pb::OutlierDetection {
                enabled: o.enabled,
                consecutive_failures: o.consecutive_failures,
                failure_rate: o.failure_rate.map(|r| r.0),
                failure_rate_min_requests: o.failure_rate_min_requests,
                interval_ms: ms(o.interval),
                base_ejection_time_ms: ms(o.base_ejection_time),
                max_ejection_time_ms: ms(o.max_ejection_time),
                max_ejection_percent: o.max_ejection_percent,
            }),
            adaptive_concurrency: s.adaptive_concurrency.as_ref().map(|a| {
                pb::AdaptiveConcurrency {
                    enabled: a.enabled,
                    initial_limit: a.initial_limit,
                    min_limit: a.min_limit,
                    max_limit: a.max_limit,
                    tolerance: a.tolerance.map(|t| t.0),
                }
            }),
            health_check: s.health_check.as_ref().map(|h| pb::HealthCheck {
                r#type: match h.type_ {
                    HealthCheckType::Http => pb::HealthCheckType::Http,
                    HealthCheckType::Grpc => pb::HealthCheckType::Grpc,
                    HealthCheckType::Tcp => pb::HealthCheckType::Tcp,
                } as i32,
                path: h.path.clone().unwrap_or_default(),
                service: h.service.clone().unwrap_or_default(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                unhealthy_threshold: h.unhealthy_threshold,
                healthy_threshold: h.healthy_threshold,
            }),
        }
    }
}

impl From<&pb::Resilience> for ResilienceSpec {
    fn from(p: &pb::Resilience) -> Self {
        ResilienceSpec {
            retry_budget: p.retry_budget.as_ref().map(|b| RetryBudgetSpec {
                enabled: b.enabled,
                ratio: b.ratio.map(Ratio),
                min_per_second: b.min_per_second,
                window: duration(b.window_ms),
            }),
            circuit_breaker: p.circuit_breaker.as_ref().map(|c| CircuitBreakerSpec {
                enabled: c.enabled,
                max_connections: c.max_connections,
                max_pending_requests: c.max_pending_requests,
                max_requests: c.max_requests,
            }),
            outlier_detection: p.outlier_detection.as_ref().map(|o| OutlierDetectionSpec {
                enabled: o.enabled,
                consecutive_failures: o.consecutive_failures,
                failure_rate: o.failure_rate.map(Ratio),
                failure_rate_min_requests: o.failure_rate_min_requests,
                interval: duration(o.interval_ms),
                base_ejection_time: duration(o.base_ejection_time_ms),
                max_ejection_time: duration(o.max_ejection_time_ms),
                max_ejection_percent: o.max_ejection_percent,
            }),
            adaptive_concurrency: p.adaptive_concurrency.as_ref().map(|a| {
                AdaptiveConcurrencySpec {
                    enabled: a.enabled,
                    initial_limit: a.initial_limit,
                    min_limit: a.min_limit,
                    max_limit: a.max_limit,
                    tolerance: a.tolerance.map(Factor),
                }
            }),
            health_check: p.health_check.as_ref().map(|h| HealthCheckSpec {
                type_: match h.r#type() {
                    pb::HealthCheckType::Http => HealthCheckType::Http,
                    pb::HealthCheckType::Grpc => HealthCheckType::Grpc,
                    pb::HealthCheckType::Tcp => HealthCheckType::Tcp,
                },
                path: (!h.path.is_empty()).then(|| h.path.clone()),
                service: (!h.service.is_empty()).then(|| h.service.clone()),
                interval: duration(h.interval_ms),
                timeout: duration(h.timeout_ms),
                unhealthy_threshold: h.unhealthy_threshold,
                healthy_threshold: h.healthy_threshold,
            }),
        }
    }
}

impl From<RateLimitKey> for pb::RateLimitKey {
    fn from(k: RateLimitKey) -> Self {
        match k {
            RateLimitKey::Service => pb::RateLimitKey::Service,
            RateLimitKey::Route => pb::RateLimitKey::Route,
            RateLimitKey::Source => pb::RateLimitKey::Source,
        }
    }
}

impl From<pb::RateLimitKey> for RateLimitKey {
    fn from(k: pb::RateLimitKey) -> Self {
        match k {
            pb::RateLimitKey::Service => RateLimitKey::Service,
            pb::RateLimitKey::Route => RateLimitKey::Route,
            pb::RateLimitKey::Source => RateLimitKey::Source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_cross_the_wire_unchanged() {
        let yaml = r#"
retryBudget: {ratio: 0.1, window: 5s}
circuitBreaker: {maxRequests: 7}
outlierDetection: {enabled: false, failureRate: 0.3, baseEjectionTime: 2s}
adaptiveConcurrency: {minLimit: 3, tolerance: 1.5}
healthCheck: {type: grpc, service: books, interval: 500ms}
"#;
        let spec: ResilienceSpec = serde_saphyr::from_str(yaml).expect("parses");
        let wire = pb::Resilience::from(&spec);
        assert_eq!(ResilienceSpec::from(&wire), spec);
        assert_eq!(
            ResilienceSpec::from(&pb::Resilience::default()),
            ResilienceSpec::default()
        );
    }
}
