//! `MeshConfig` and `BackendPolicy` (`trellis.dev/v1alpha1`): mesh-wide settings, and
//! settings for traffic to one Service attached through `targetRef` (Gateway API policy
//! attachment).

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::error::{Checked, ValidationError};
use crate::resilience::{
    AdaptiveConcurrencySpec, CircuitBreakerSpec, HealthCheckSpec, OutlierDetectionSpec,
    RetryBudgetSpec,
};
use crate::route::service_kind;
use crate::validate;

/// Trust domain of a mesh that names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "trellis.local";

/// Mesh-wide settings. Cluster-wide; the control plane reads the one named `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    /// SPIFFE trust domain of workload identities
    /// (`spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`). Default
    /// `trellis.local`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Mutual TLS between proxies. Default: permissive.
    #[serde(default)]
    pub mtls: MtlsConfig,
    /// What happens to a request no authorization policy speaks about. Default `allow`.
    #[serde(default)]
    pub default_authorization: DefaultAuthorization,
    /// Access logging by the sidecars: every service's, or the listed services' only.
    /// Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// The sidecars' Prometheus metrics. Unset: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// Where captured traffic to addresses outside the mesh may go. Default: anywhere.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Spans from every sidecar, exported over OTLP. Unset: no tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

/// Mesh-wide tracing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSpec {
    /// Share of new traces recorded, 0 to 1. Default 0.01; a request that arrives with a
    /// sampling decision keeps it.
    #[serde(default = "default_sampling")]
    pub sampling: Ratio,
    /// The OpenTelemetry collector.
    pub otlp: OtlpSpec,
}

/// Where spans are exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpSpec {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP).
    pub endpoint: String,
    /// `grpc` (default) or `http` (HTTP/protobuf).
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

/// A number from 0 to 1 (validation refuses anything else, NaN included, which is why
/// it can be `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Ratio(#[cfg_attr(feature = "schemars", schemars(range(min = 0, max = 1)))] pub f64);

impl Eq for Ratio {}

fn default_sampling() -> Ratio {
    Ratio(0.01)
}

impl Default for MeshConfigSpec {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            mtls: MtlsConfig::default(),
            default_authorization: DefaultAuthorization::default(),
            access_log: None,
            metrics: None,
            egress: EgressConfig::default(),
            tracing: None,
        }
    }
}

/// Outbound traffic to destinations that are not Services of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressConfig {
    /// Default `allowAny`.
    #[serde(default)]
    pub mode: EgressMode,
}

/// What a sidecar does with a captured connection whose destination is no Service's
/// virtual IP and no workload of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum EgressMode {
    /// Pass it through to the address the application dialled, as plain TCP.
    #[default]
    AllowAny,
    /// Close it, and count and log it: only the mesh's Services are reachable.
    RegistryOnly,
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_string()
}

/// Mutual TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsConfig {
    /// Default `permissive`.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// Whether inbound proxies accept plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Accept mTLS and plaintext; plaintext is counted.
    #[default]
    Permissive,
    /// Refuse plaintext to the inbound port.
    Strict,
}

/// The verdict for requests no authorization policy matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DefaultAuthorization {
    #[default]
    Allow,
    Deny,
}

/// Access log settings: one line per request a sidecar answers, inbound and outbound.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Line format. Default `json`.
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stdout` (the default) or an absolute file path on each sidecar's host, appended
    /// to.
    #[serde(default = "default_access_log_output")]
    pub output: String,
    /// Only these services' sidecars log, each with its own format or output if given.
    /// Empty (the default): every sidecar logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<AccessLogService>,
}

/// One service whose sidecars log requests, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogService {
    pub name: String,
    /// Default `default`.
    #[serde(default = "crate::meta::default_namespace")]
    pub namespace: String,
    /// Unset: the mesh-wide format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AccessLogFormat>,
    /// Unset: the mesh-wide output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn default_access_log_output() -> String {
    ACCESS_LOG_STDOUT.to_string()
}

/// The `output` that means the sidecar's standard output.
pub const ACCESS_LOG_STDOUT: &str = "stdout";

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per request.
    #[default]
    Json,
    /// One human-readable line per request.
    Text,
}

impl AccessLogConfig {
    /// How the sidecars of service `namespace/name` log, or `None` if they don't.
    pub fn for_service(&self, namespace: &str, name: &str) -> Option<(AccessLogFormat, &str)> {
        if self.services.is_empty() {
            return Some((self.format, &self.output));
        }
        let own = self
            .services
            .iter()
            .find(|s| s.name == name && s.namespace == namespace)?;
        Some((
            own.format.unwrap_or(self.format),
            own.output.as_deref().unwrap_or(&self.output),
        ))
    }

    fn check(&self) -> Checked {
        check_access_log_output("spec.accessLog.output", &self.output)?;
        for (i, service) in self.services.iter().enumerate() {
            let at = format!("spec.accessLog.services[{i}]");
            if service.name.is_empty() {
                return Err(ValidationError::new(
                    format!("{at}.name"),
                    "must not be empty",
                ));
            }
            if let Some(output) = &service.output {
                check_access_log_output(&format!("{at}.output"), output)?;
            }
        }
        Ok(())
    }
}

fn check_access_log_output(at: &str, output: &str) -> Checked {
    if output == ACCESS_LOG_STDOUT || (output.starts_with('/') && !output.ends_with('/')) {
        return Ok(());
    }
    Err(ValidationError::new(
        at,
        format!("expected \"stdout\" or an absolute file path, got {output:?}"),
    ))
}

/// The sidecars' metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// Request series (distinct label sets of `trellis_requests_total`) a sidecar keeps
    /// before it counts new ones in one `overflow` series; at least 1. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_series: Option<u32>,
}

/// Settings for traffic to the Service named by `targetRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPolicySpec {
    /// The Service the policy applies to, in the policy's namespace.
    pub target_ref: PolicyTargetReference,
    /// How requests are spread over endpoints. Unset: `ewma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerConfig>,
    /// Time allowed to open a connection to an endpoint; more than 0. Unset: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Time allowed for a request to the Service when no route sets one; `0s` means no
    /// limit. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Protocol to the endpoints. Unset: from the Service port's `appProtocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// Which endpoints a caller uses by zone. Default `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// With `locality: prefer-zone`: how much of the caller's zone must be healthy to
    /// keep all its traffic there. Unset: 70 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_failover: Option<ZoneFailover>,
    /// Retries to the Service may add at most a share of its request rate. Unset: on,
    /// 20 % plus 10 per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudgetSpec>,
    /// Connection and request limits in each caller. Unset: on, 1024 of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Ejection of failing endpoints. Unset: on (5 failures in a row, or half of 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// A concurrency limit learned from latency. Unset: on (starts at 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<AdaptiveConcurrencySpec>,
    /// Active health checks. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// Zone preference of the Service's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// Every ready endpoint, whatever its zone.
    #[default]
    Any,
    /// The endpoints in the caller's zone while enough of them are healthy in the
    /// caller's own view (ready, not ejected, passing health checks); as their healthy
    /// share falls below `zoneFailover.minHealthyPercent`, a matching part of the
    /// traffic goes to the other zones. A caller without a zone, or a zone without
    /// endpoints, uses them all.
    PreferZone,
}

/// When a caller's traffic starts leaving its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneFailover {
    /// 1 to 100. While at least this share of the zone's endpoints is healthy, all
    /// traffic stays in the zone; below it, the zone keeps `healthy / minHealthy` of the
    /// traffic and the rest goes to the healthy endpoints of the other zones. Unset: 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_percent: Option<u32>,
}

impl ZoneFailover {
    /// The default `minHealthyPercent`.
    pub const DEFAULT_MIN_HEALTHY_PERCENT: u32 = 70;
}

/// The object a policy attaches to (Gateway API `LocalPolicyTargetReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group: empty (core, the default) or `trellis.dev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the target; must be `Service`.
    pub kind: String,
    /// Name of the target Service.
    pub name: String,
}

impl PolicyTargetReference {
    /// The targeted object, in the policy's namespace `ns`; `None` for a kind Trellis
    /// does not know (refused by validation).
    pub fn object_ref(&self, ns: &str) -> Option<crate::ObjectRef> {
        Some(crate::ObjectRef {
            kind: crate::Kind::from_name(&self.kind)?,
            namespace: ns.to_string(),
            name: self.name.clone(),
        })
    }
}

/// Load balancer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// The algorithm.
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
    /// With `consistent-hash`: what requests are keyed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
}

/// The request attribute a consistent hash keys on; exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashOn {
    /// A header's value (name case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `true`: the caller's identity, so each calling workload keeps to one endpoint
    /// for all its requests and connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<bool>,
}

/// How a backend spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancerType {
    /// Power of two choices over peak-EWMA latency weighted by outstanding requests.
    #[default]
    Ewma,
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices over outstanding requests.
    LeastRequest,
    /// A Maglev table over the endpoints, keyed by `hashOn`: requests with the same key
    /// go to the same endpoint, and adding or removing one endpoint of N moves about
    /// 1/N of the keys. Requests without the key get least-request.
    ConsistentHash,
}

/// The HTTP version spoken to endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    Http1,
    Http2,
}

// === checks ===

impl MeshConfigSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let td = &self.trust_domain;
        let ok = !td.is_empty()
            && td.len() <= 255
            && td.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_')
            });
        if !ok {
            return Err(ValidationError::new(
                "spec.trustDomain",
                format!(
                    "{td:?} is not a valid trust domain: 1 to 255 lowercase letters, digits, \
                     '.', '-' or '_', e.g. \"trellis.local\""
                ),
            ));
        }
        if let Some(tracing) = &self.tracing {
            let sampling = tracing.sampling.0;
            if !(0.0..=1.0).contains(&sampling) {
                return Err(ValidationError::new(
                    "spec.tracing.sampling",
                    format!("must be between 0 and 1, got {sampling}"),
                ));
            }
            let endpoint = &tracing.otlp.endpoint;
            let host_port = endpoint.strip_prefix("http://").unwrap_or_default();
            let valid = host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ValidationError::new(
                    "spec.tracing.otlp.endpoint",
                    format!("expected http://HOST:PORT, got {endpoint:?}"),
                ));
            }
        }
        if let Some(access_log) = &self.access_log {
            access_log.check()?;
        }
        if self.metrics.and_then(|m| m.max_request_series) == Some(0) {
            return Err(ValidationError::new(
                "spec.metrics.maxRequestSeries",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl LoadBalancerConfig {
    fn check(&self, at: &str) -> Checked {
        let hashing = self.type_ == LoadBalancerType::ConsistentHash;
        match &self.hash_on {
            None if hashing => Err(ValidationError::new(
                format!("{at}.hashOn"),
                "consistent-hash needs hashOn: {header: NAME}, {cookie: NAME} or \
                 {sourceIdentity: true}",
            )),
            Some(_) if !hashing => Err(ValidationError::new(
                format!("{at}.hashOn"),
                "hashOn applies only to type consistent-hash",
            )),
            Some(h) => match (&h.header, &h.cookie, h.source_identity) {
                (Some(name), None, None) => {
                    validate::header_name(&format!("{at}.hashOn.header"), name)
                }
                (None, Some(name), None) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                    Ok(())
                }
                (None, Some(name), None) => Err(ValidationError::new(
                    format!("{at}.hashOn.cookie"),
                    format!("{name:?} is not a cookie name"),
                )),
                (None, None, Some(true)) => Ok(()),
                (None, None, Some(false)) => Err(ValidationError::new(
                    format!("{at}.hashOn.sourceIdentity"),
                    "only `true` means something here; leave hashOn out to stop hashing",
                )),
                _ => Err(ValidationError::new(
                    format!("{at}.hashOn"),
                    "set exactly one of header, cookie or sourceIdentity",
                )),
            },
            None => Ok(()),
        }
    }
}

impl BackendPolicySpec {
    /// A policy for Service `name` that changes nothing.
    pub fn for_service(name: impl Into<String>) -> Self {
        Self {
            target_ref: PolicyTargetReference {
                group: String::new(),
                kind: crate::Kind::Service.name().to_string(),
                name: name.into(),
            },
            load_balancer: None,
            connect_timeout: None,
            request_timeout: None,
            protocol: None,
            locality: None,
            zone_failover: None,
            retry_budget: None,
            circuit_breaker: None,
            outlier_detection: None,
            adaptive_concurrency: None,
            health_check: None,
        }
    }

    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let t = &self.target_ref;
        service_kind("spec.targetRef", &t.group, &t.kind)?;
        validate::name("spec.targetRef.name", &t.name)?;
        if let Some(lb) = &self.load_balancer {
            lb.check("spec.loadBalancer")?;
        }
        if self.connect_timeout.is_some_and(Duration::is_zero) {
            return Err(ValidationError::new(
                "spec.connectTimeout",
                "must be greater than 0s, e.g. \"1s\"",
            ));
        }
        if let Some(failover) = &self.zone_failover {
            if self.locality != Some(Locality::PreferZone) {
                return Err(ValidationError::new(
                    "spec.zoneFailover",
                    "applies only with locality: prefer-zone",
                ));
            }
            if let Some(p) = failover.min_healthy_percent {
                if !(1..=100).contains(&p) {
                    return Err(ValidationError::new(
                        "spec.zoneFailover.minHealthyPercent",
                        format!("must be between 1 and 100, got {p}"),
                    ));
                }
            }
        }
        if let Some(b) = &self.retry_budget {
            b.check("spec.retryBudget")?;
        }
        if let Some(c) = &self.circuit_breaker {
            c.check("spec.circuitBreaker")?;
        }
        if let Some(o) = &self.outlier_detection {
            o.check("spec.outlierDetection")?;
        }
        if let Some(a) = &self.adaptive_concurrency {
            a.check("spec.adaptiveConcurrency")?;
        }
        if let Some(h) = &self.health_check {
            h.check("spec.healthCheck")?;
        }
        Ok(())
    }
}
