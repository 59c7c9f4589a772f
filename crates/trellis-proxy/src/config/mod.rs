//! The proxy's static configuration: the YAML document `trellis proxy --config FILE`
//! reads, parsed once into typed structs and validated before anything is bound.
//!
//! Every error names the field it is about (`listeners[0].routes[0].backend: …`), so an
//! operator can find the mistake without reading the proxy's source.

mod access_log;
mod duration;
mod egress;
mod filter;
mod original_dst;
mod resilience;
mod route;
mod sidecar;
mod tracing;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use trellis_api::authz::AuthorizationConfig;
/// What a consistent hash keys requests on (the BackendPolicy's own shape).
pub use trellis_api::policy::HashOn;
use trellis_identity::SpiffeId;

pub use self::access_log::{AccessLogConfig, AccessLogFormat, AccessLogOutput};
pub use self::duration::{Duration, ParseDurationError};
pub use self::egress::{ExternalHost, OriginateTlsConfig};
pub use self::filter::{
    FaultAbortConfig, FaultConfig, FaultDelayConfig, Header, HeaderModifier, Mirror, PathModifier,
    Redirect, Rewrite, RouteFilters,
};
pub use self::original_dst::{
    DestinationAddress, DestinationTarget, EgressMode, MeshService, OriginalDestination,
    WorkloadTarget,
};
pub use self::resilience::{
    AdaptiveConcurrencyConfig, CircuitBreakerConfig, HealthCheckConfig, HealthCheckProtocol,
    OutlierDetectionConfig, RateLimitConfig, RateLimitKey, RateShare, ResilienceConfig,
    RetryBudgetConfig,
};
pub use self::route::{
    PathMatch, RetryConfig, RouteConfig, RouteMatch, ValueMatch, WeightedBackend,
    MAX_RETRY_ATTEMPTS,
};
pub use self::sidecar::{INBOUND_LISTENER, LOCAL_APP_BACKEND};
pub use self::tracing::{OtlpProtocol, TracingConfig};

/// The whole proxy configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the proxy accepts traffic.
    pub listeners: Vec<ListenerConfig>,
    /// Named groups of endpoints that routes send traffic to.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Address of the admin server (`/live`, `/ready`, `/metrics`, `/config`).
    /// Default `127.0.0.1:7191`.
    #[serde(default = "defaults::admin")]
    pub admin: SocketAddr,
    /// How long a draining proxy waits for in-flight requests before it exits.
    /// Default `30s`.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes; larger heads
    /// are answered with 431. Default 65536.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// The mesh's Services and their virtual IPs, which a transparent sidecar's DNS
    /// answers for. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MeshService>,
    /// Hosts outside the mesh (ExternalServices) and their virtual IPs, which a
    /// transparent sidecar's DNS answers for. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_hosts: Vec<ExternalHost>,
    /// `SO_MARK` set on every connection the proxy opens, so capture rules that skip
    /// this mark let the proxy's own traffic through (a transparent sidecar running as
    /// the same user as its application). Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mark: Option<u32>,
    /// The DNS server (`IP:PORT`) asked for the addresses of endpoints given by name
    /// (hosts of ExternalServices). A transparent sidecar sets its DNS upstream here:
    /// its own resolver is its own DNS server, which answers those hosts with virtual
    /// IPs. Unset: the host's resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<SocketAddr>,
    /// Spans for every request, exported over OTLP; see `tracing.rs`. Unset: none
    /// (trace headers still pass through unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// One line per answered request; see `access_log.rs`. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// Request series (label sets of `trellis_requests_total`) kept before new ones are
    /// counted in one `overflow` series; at least 1. Unset: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_series: Option<usize>,
    /// Whether requests are counted in `trellis_requests_total` and
    /// `trellis_request_duration_seconds`. Default true; `false` leaves the other
    /// metrics, for a proxy that must cost as little as possible (and for measuring
    /// what the request metrics cost).
    #[serde(default = "defaults::request_metrics")]
    pub request_metrics: bool,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Address to bind; port 0 picks a free port.
    pub address: SocketAddr,
    /// What the listener expects its clients to speak. Default `auto`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// With `protocol: auto`, how long to wait for the client's first bytes before
    /// treating the connection as opaque TCP (so server-speaks-first protocols work).
    /// Bytes that may still begin an HTTP request wait for `headerReadTimeout` instead.
    /// Default `1s`.
    #[serde(default = "defaults::detect_timeout")]
    pub detect_timeout: Duration,
    /// A client connection with no bytes moving and no request in flight for this long
    /// is closed. Default `5m`.
    #[serde(default = "defaults::listener_idle_timeout")]
    pub idle_timeout: Duration,
    /// Time an HTTP client has to send a request's head (HTTP/1 request line and
    /// headers; HTTP/2 connection preface, frame headers and header blocks), counted
    /// from the accept for the first, so an mTLS handshake and protocol detection fall
    /// within it; a client still sending is disconnected. Default `10s`.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Where traffic goes: the first route whose `match` fits the request. A `tcp`
    /// listener has exactly one route, without `match`.
    pub routes: Vec<RouteConfig>,
    /// Whether clients are other proxies of the mesh speaking mutual TLS. Default
    /// `disabled`.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Who may use the listener: policies checked on every HTTP request before routing
    /// and on every TCP connection when accepted. Unset: everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationConfig>,
    /// Whether the proxy binds `address`. An unbound listener is reached only through
    /// an original-destination listener's targets. Default `true`.
    #[serde(default = "defaults::bind", skip_serializing_if = "is_true")]
    pub bind: bool,
    /// Makes this the listener of captured outbound connections: each is routed by the
    /// address its client dialled (`SO_ORIGINAL_DST`) to a target listener, or passed
    /// through or refused by `egress`. Such a listener has no routes. Unset: a plain
    /// listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_destination: Option<OriginalDestination>,
    /// Serves hosts outside the mesh: a request whose `Host`, or a TLS connection whose
    /// server name, no route names is refused (HTTP 403) and counted in
    /// `trellis_outbound_refused_total{reason="undeclared_host"}`, instead of being
    /// answered 404 or closed as `no_route`. Default `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub egress: bool,
    /// Makes this an HTTP forward proxy's port (the application's `HTTP_PROXY`): a
    /// `CONNECT host:port` whose host a route names is answered `200` and the tunnel
    /// served as a new connection of this listener (HTTP/1.1 or HTTP/2 inside, routed
    /// like any request), or, when it opens with a TLS ClientHello, passed through to
    /// the route's backend; a `CONNECT` to any other host gets `403`. Default `false`:
    /// `CONNECT` is forwarded to the backend like any request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub connect: bool,
    /// Token buckets every HTTP request must find a token in; see `RateLimitConfig`.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitConfig>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Mutual TLS on a listener. With `permissive` or `strict`, a connection that opens
/// with a TLS ClientHello is terminated with the proxy's workload certificate (the
/// client must present one from the trust bundle) and its inner protocol is chosen by
/// ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Plaintext only: TLS bytes are treated like any other (opaque TCP on `auto`).
    #[default]
    Disabled,
    /// mTLS and plaintext both accepted; plaintext is counted.
    Permissive,
    /// mTLS only: plaintext connections are closed at once and counted.
    Strict,
}

impl MtlsMode {
    /// Whether the listener looks for a TLS ClientHello.
    pub fn enabled(self) -> bool {
        self != MtlsMode::Disabled
    }
}

/// The protocol a listener expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// Detect HTTP/2, HTTP/1 or opaque TCP from the first bytes.
    #[default]
    Auto,
    Http1,
    Http2,
    /// HTTP/2 carrying gRPC: proxy errors are answered as gRPC statuses.
    Grpc,
    Tcp,
    /// TLS passed through unopened: each connection goes to the route whose `hosts`
    /// hold the server name (SNI) of its ClientHello.
    Tls,
}

impl ListenerProtocol {
    /// Whether connections are forwarded as bytes, without reading requests.
    pub fn is_opaque(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }
}

/// A named set of endpoints and how to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// What the endpoints speak. Default `http1`; gRPC traffic needs `http2`.
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// `host:port` strings, or `{address, weight}` maps.
    pub endpoints: Vec<EndpointConfig>,
    /// Default `ewma`.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// With `consistent-hash`: what requests are keyed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Prefer the endpoints of one zone while enough of them are healthy. Default: no
    /// preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityConfig>,
    /// Time allowed to open a TCP connection to an endpoint. Default `1s`.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Idle pooled connections to endpoints are closed after this long. Default `90s`.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub idle_timeout: Duration,
    /// Retry budget, circuit breaking, outlier detection, adaptive concurrency and
    /// active health checks. Default: all but health checks on, with their defaults.
    #[serde(default, skip_serializing_if = "ResilienceConfig::is_default")]
    pub resilience: ResilienceConfig,
    /// TLS opened by the proxy to the endpoints (egress TLS origination); needs
    /// `protocol: http1` and endpoints without identity. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_tls: Option<OriginateTlsConfig>,
}

/// A backend's zone preference: requests go to the endpoints whose `zone` is `zone`
/// while at least `minHealthyPercent` of the zone is healthy (not ejected, passing
/// health checks); below that, the zone keeps `healthy / minHealthy` of the requests
/// and the rest go to the healthy endpoints elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityConfig {
    pub zone: String,
    /// 1 to 100. Default 70.
    #[serde(default = "defaults::min_healthy_percent")]
    pub min_healthy_percent: u32,
    /// How many endpoints the zone has, counting those not in `endpoints` (not ready);
    /// default: those of `endpoints` in the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_size: Option<u32>,
}

/// The protocol a backend's endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    #[default]
    Http1,
    Http2,
}

/// How a backend spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency weighted by outstanding requests.
    #[default]
    Ewma,
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices over outstanding requests.
    LeastRequest,
    /// A Maglev table keyed by `hashOn`: the same key, the same endpoint (weights are
    /// not used). Requests without the key get least-request.
    ConsistentHash,
}

/// One endpoint of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointFields {
    address: String,
    #[serde(default = "defaults::weight")]
    weight: u32,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    hostname: Option<String>,
}

/// One endpoint of a backend: an address, a relative weight (default 1) and, for a
/// proxy of the mesh, the identity it must prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointConfig {
    pub address: SocketAddr,
    pub weight: u32,
    /// The SPIFFE ID (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`)
    /// the endpoint must present. Once the proxy has its own certificate, connections
    /// to such an endpoint are mutual TLS (HTTP as one multiplexed HTTP/2 connection,
    /// TCP as ALPN `trellis-tcp`); before that they are plaintext. Default: none,
    /// plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The zone the endpoint runs in, for a backend's `locality`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// A DNS name resolved each time a connection is opened (an endpoint outside the
    /// mesh); `address` then gives only the port. Written `api.example:443` in place of
    /// an address. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Reads `IP:PORT`, or `NAME:PORT` for an endpoint the proxy resolves (the address is
/// then `0.0.0.0:PORT`).
fn endpoint_address(v: &str) -> Result<(SocketAddr, Option<String>), String> {
    if let Ok(address) = v.parse() {
        return Ok((address, None));
    }
    let named = v.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok()?;
        egress::rustls_name(host).then(|| (SocketAddr::from(([0, 0, 0, 0], port)), host))
    });
    match named {
        Some((address, host)) => Ok((address, Some(host.to_ascii_lowercase()))),
        None => Err(format!(
            "invalid endpoint address {v:?}: expected IP:PORT or a DNS name and port (api.example:443)"
        )),
    }
}

impl<'de> Deserialize<'de> for EndpointConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = EndpointConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address such as \"127.0.0.1:8080\" or a map {address, weight, identity, zone}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointConfig, E> {
                let (address, hostname) = endpoint_address(v).map_err(E::custom)?;
                Ok(EndpointConfig {
                    address,
                    weight: defaults::weight(),
                    identity: None,
                    zone: None,
                    hostname,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointConfig, A::Error> {
                let fields =
                    EndpointFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let (address, named) =
                    endpoint_address(&fields.address).map_err(de::Error::custom)?;
                Ok(EndpointConfig {
                    address,
                    weight: fields.weight,
                    identity: fields.identity,
                    zone: fields.zone,
                    hostname: fields.hostname.or(named),
                })
            }
        }
        d.deserialize_any(EndpointVisitor)
    }
}

/// Defaults of optional fields, for configurations built in code.
pub mod defaults {
    use super::Duration;
    use std::net::SocketAddr;

    pub fn admin() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7191))
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn request_metrics() -> bool {
        true
    }
    pub fn min_healthy_percent() -> u32 {
        trellis_api::policy::ZoneFailover::DEFAULT_MIN_HEALTHY_PERCENT
    }
    pub fn detect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn listener_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn bind() -> bool {
        true
    }
}

/// A configuration that cannot be used, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Largest weight accepted, so weight sums never overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

impl ProxyConfig {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates a YAML document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut failed_at = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, ProxyConfig>(de).map_err(|e| {
                failed_at = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let config = parsed.map_err(|e| {
            let field = failed_at
                .filter(|p| p != ".")
                .unwrap_or_else(|| "config".into());
            // The parser's message may carry a source snippet over several lines; the
            // first line says what is wrong, and the field path says where.
            ConfigError::invalid(field, parser_message(&e.to_string()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot: unique names, references that resolve,
    /// combinations that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tracing) = &self.tracing {
            tracing.validate()?;
        }
        if self.max_request_series == Some(0) {
            return Err(ConfigError::invalid(
                "maxRequestSeries",
                "must be at least 1",
            ));
        }
        if self.listeners.is_empty() {
            return Err(ConfigError::invalid(
                "listeners",
                "at least one listener is required",
            ));
        }
        let mut backend_names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("backends[{i}]");
            check_name(&format!("{at}.name"), &b.name)?;
            if !backend_names.insert(b.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate backend name {:?}", b.name),
                ));
            }
            let hashing = b.load_balancer == LoadBalancer::ConsistentHash;
            let one_key = b.hash_on.as_ref().is_some_and(|h| {
                let keys = [
                    h.header
                        .as_ref()
                        .is_some_and(|n| http::HeaderName::from_bytes(n.as_bytes()).is_ok()),
                    h.cookie.as_ref().is_some_and(|n| !n.is_empty()),
                    h.source_identity == Some(true),
                ];
                keys.iter().filter(|k| **k).count() == 1
            });
            if hashing != one_key || (b.hash_on.is_some() && !hashing) {
                return Err(ConfigError::invalid(
                    format!("{at}.hashOn"),
                    "loadBalancer consistent-hash needs hashOn with exactly one of a valid \
                     header name, a cookie name or sourceIdentity: true; other balancers \
                     take none",
                ));
            }
            if let Some(locality) = &b.locality {
                if !(1..=100).contains(&locality.min_healthy_percent) {
                    return Err(ConfigError::invalid(
                        format!("{at}.locality.minHealthyPercent"),
                        format!(
                            "must be between 1 and 100, got {}",
                            locality.min_healthy_percent
                        ),
                    ));
                }
            }
            for (j, e) in b.endpoints.iter().enumerate() {
                if e.weight == 0 || e.weight > MAX_WEIGHT {
                    return Err(ConfigError::invalid(
                        format!("{at}.endpoints[{j}].weight"),
                        format!("must be between 1 and {MAX_WEIGHT}, got {}", e.weight),
                    ));
                }
                if let Some(hostname) = &e.hostname {
                    if !egress::rustls_name(hostname) || e.identity.is_some() {
                        return Err(ConfigError::invalid(
                            format!("{at}.endpoints[{j}].hostname"),
                            format!(
                                "{hostname:?}: a hostname is one DNS name, of an endpoint \
                                 outside the mesh (no identity)"
                            ),
                        ));
                    }
                }
                if let Some(identity) = &e.identity {
                    if let Err(error) = identity.parse::<SpiffeId>() {
                        return Err(ConfigError::invalid(
                            format!("{at}.endpoints[{j}].identity"),
                            error.to_string(),
                        ));
                    }
                }
            }
            b.resilience.validate(&format!("{at}.resilience"))?;
            if let Some(tls) = &b.originate_tls {
                tls.validate(&format!("{at}.originateTls"))?;
                if b.protocol != BackendProtocol::Http1
                    || b.endpoints.iter().any(|e| e.identity.is_some())
                {
                    return Err(ConfigError::invalid(
                        format!("{at}.originateTls"),
                        "TLS origination needs protocol http1 and endpoints outside the mesh \
                         (no identity)",
                    ));
                }
            }
            if b.connect_timeout.get().is_zero() {
                return Err(ConfigError::invalid(
                    format!("{at}.connectTimeout"),
                    "must be greater than 0",
                ));
            }
        }

        let mut listener_names = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            check_name(&format!("{at}.name"), &l.name)?;
            if !listener_names.insert(l.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            if l.bind && l.address.port() != 0 && !addresses.insert(l.address) {
                return Err(ConfigError::invalid(
                    format!("{at}.address"),
                    format!("{} is used by another listener", l.address),
                ));
            }
            if l.header_read_timeout.get().is_zero() {
                return Err(ConfigError::invalid(
                    format!("{at}.headerReadTimeout"),
                    "must be greater than 0",
                ));
            }
            if let Some(authorization) = &l.authorization {
                authorization
                    .validate(&format!("{at}.authorization"))
                    .map_err(|e| ConfigError::invalid(e.path, e.message))?;
            }
            for (j, limit) in l.rate_limits.iter().enumerate() {
                limit.validate(&format!("{at}.rateLimits[{j}]"))?;
            }
            if let Some(table) = &l.original_destination {
                table.validate(&at, l, &self.listeners)?;
            }
            if l.bind && l.address == self.admin && l.address.port() != 0 {
                return Err(ConfigError::invalid(
                    format!("{at}.address"),
                    format!("{} is the admin address", l.address),
                ));
            }
            // An HTTP listener without routes answers 404 `no route`; bytes of a TCP
            // listener would have nowhere to go.
            if l.routes.is_empty() && l.protocol.is_opaque() && l.original_destination.is_none() {
                return Err(ConfigError::invalid(
                    format!("{at}.routes"),
                    "a TCP or TLS listener needs a route",
                ));
            }
            if l.protocol == ListenerProtocol::Tls && l.mtls != MtlsMode::Disabled {
                return Err(ConfigError::invalid(
                    format!("{at}.mtls"),
                    "a tls listener passes its clients' TLS through and cannot terminate mTLS",
                ));
            }
            if l.protocol == ListenerProtocol::Tcp && l.routes.len() > 1 {
                return Err(ConfigError::invalid(
                    format!("{at}.routes[1]"),
                    "a tcp listener has exactly one route: bytes carry nothing to match on",
                ));
            }
            for (j, r) in l.routes.iter().enumerate() {
                let field = format!("{at}.routes[{j}]");
                r.validate(&field)?;
                if l.protocol == ListenerProtocol::Tcp && r.matches.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{field}.match"),
                        "a tcp listener cannot match on requests",
                    ));
                }
                let request_match = r.matches.as_ref().is_some_and(|m| {
                    m.path.is_some()
                        || !m.headers.is_empty()
                        || !m.query.is_empty()
                        || m.method.is_some()
                });
                if l.protocol == ListenerProtocol::Tls && request_match {
                    return Err(ConfigError::invalid(
                        format!("{field}.match"),
                        "a tls listener matches on server names (hosts) only",
                    ));
                }
                if l.protocol.is_opaque()
                    && (r.timeout.is_some()
                        || r.backend_timeout.is_some()
                        || r.retry.is_some()
                        || r.fault.is_some()
                        || !r.filters.is_empty())
                {
                    return Err(ConfigError::invalid(
                        field.clone(),
                        "timeouts, retries, filters and faults apply to HTTP; a tcp or tls listener has none",
                    ));
                }
                for (k, m) in r.filters.mirrors.iter().enumerate() {
                    self.backend_named(
                        &format!("{field}.filters.mirrors[{k}].backend"),
                        &m.backend,
                    )?;
                }
                for (k, wb) in r.weighted_backends().iter().enumerate() {
                    let field = if r.backend.is_some() {
                        format!("{field}.backend")
                    } else {
                        format!("{field}.backends[{k}].name")
                    };
                    let backend = self.backend_named(&field, &wb.name)?;
                    if l.protocol == ListenerProtocol::Grpc
                        && backend.protocol != BackendProtocol::Http2
                    {
                        return Err(ConfigError::invalid(
                            field,
                            format!(
                                "gRPC needs HTTP/2 end to end, but backend {:?} has protocol http1",
                                backend.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ProxyConfig {
    /// The backend a route names at `field`.
    fn backend_named(&self, field: &str, name: &str) -> Result<&BackendConfig, ConfigError> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
                ConfigError::invalid(
                    field,
                    format!("no backend named {name:?} (known: {})", known.join(", ")),
                )
            })
    }
}

/// Turns the YAML parser's `error: line 6 column 18: what` (possibly followed by a source
/// snippet) into `what (line 6, column 18)`.
fn parser_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let located = first.strip_prefix("line ").and_then(|rest| {
        let (line, rest) = rest.split_once(" column ")?;
        let (column, what) = rest.split_once(": ")?;
        Some(format!("{what} (line {line}, column {column})"))
    });
    located.unwrap_or_else(|| first.to_string())
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("{name:?} is not a valid name: use 1 to 63 letters, digits, '-', '_' or '.'"),
        ))
    }
}

#[cfg(test)]
mod tests;
