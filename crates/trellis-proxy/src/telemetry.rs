//! The proxy's Prometheus metrics, named as DESIGN section 7 says (`trellis_*`), served
//! as OpenMetrics text on the admin port, and the limiter that keeps repeated warnings
//! to one log line per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tls::metrics::TlsMetrics;

/// Labels of one HTTP request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `inbound` (to this workload) or `outbound` (from it).
    pub direction: &'static str,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
    /// The caller's SPIFFE ID, on inbound requests over mTLS; else empty.
    pub peer_identity: Arc<str>,
    /// Whether the client connection was mutual TLS.
    pub tls: &'static str,
    pub status: u16,
    pub class: &'static str,
    /// A gRPC response's `grpc-status` (`0`…`16`, from its trailers, or its headers
    /// when it has no body); empty for other responses.
    pub grpc_status: &'static str,
    /// Why the proxy answered instead of the backend (`connect timeout`, …), else empty.
    pub error: &'static str,
}

/// Who a request came from, as the request series label it; made once per client
/// connection.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub direction: &'static str,
    pub peer_identity: Arc<str>,
    pub tls: &'static str,
    recent: RecentSeries,
}

impl CallLabels {
    pub fn new(direction: &'static str, peer_identity: Arc<str>, tls: &'static str) -> Self {
        Self {
            direction,
            peer_identity,
            tls,
            recent: RecentSeries::default(),
        }
    }
}

/// The series a connection's last request was counted in. A connection's requests
/// mostly take one route to one kind of answer, and finding their series again by
/// hashing every label is most of what counting a request costs.
#[derive(Debug, Default)]
struct RecentSeries(std::sync::Mutex<Option<Recent>>);

/// A copy of a connection's labels starts with nothing remembered.
impl Clone for RecentSeries {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[derive(Debug)]
struct Recent {
    /// Which [`Metrics`] the series belong to.
    metrics: u64,
    /// The route's own label values, compared by address: the route keeps them for as
    /// long as it lives, and a reload that makes new ones makes a miss, not a mistake.
    route: RouteLabels,
    status: u16,
    grpc_status: &'static str,
    error: &'static str,
    requests: Counter,
    duration: Histogram,
}

impl Recent {
    fn matches(&self, metrics: u64, route: &RouteLabels, answer: (u16, &str, &str)) -> bool {
        self.metrics == metrics
            && Arc::ptr_eq(&self.route.listener, &route.listener)
            && Arc::ptr_eq(&self.route.route, &route.route)
            && Arc::ptr_eq(&self.route.backend, &route.backend)
            && (self.status, self.grpc_status, self.error) == answer
    }
}

/// The series a family may hold before new label sets go to one overflow series
/// (`route="overflow"`), so a flood of distinct routes or callers cannot grow the
/// proxy's memory without bound.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// The label value of the overflow series.
pub const OVERFLOW: &str = "overflow";

/// Labels of request latency and TCP traffic: where it came in, which route took it,
/// which backend served it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
}

/// Labels of a mirrored request: the route and mirror backend, and how it went (the
/// response's status class, `failed`, `timeout`, `aborted` when the mirror fell behind
/// copying the body, `no endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MirrorLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub outcome: &'static str,
}

/// Labels of a retry: the route and backend, and why the attempt before failed (a
/// proxy error reason, or `status` for a retried response status).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub reason: &'static str,
}

/// Labels of an injected fault: the route, the fault's name and `delay` or `abort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub fault: Arc<str>,
    pub kind: &'static str,
}

/// Labels of accepted connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: Arc<str>,
    pub protocol: &'static str,
}

/// Labels of an authorization decision: where, and which policy decided (its name,
/// `default` or `no-allow-match`). Policy names come from the configuration, so the
/// series are bounded by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    pub listener: Arc<str>,
    pub policy: Arc<str>,
}

/// Labels of a captured outbound connection that left the mesh or was refused:
/// `reason` is `registry_only` (a destination outside the mesh under `registryOnly`),
/// `loop` (the proxy's own listener), `unknown_destination` (no original destination
/// could be read), `undeclared_host` (an egress listener's request or TLS server name
/// naming no declared external host), `not_tls` or `no_route`; passed-through
/// connections carry `allow_any`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutboundLabels {
    pub listener: Arc<str>,
    pub reason: &'static str,
}

/// Labels of a configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// Every metric the proxy keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this set of metrics from any other in the process.
    id: u64,
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub connections: Family<ConnectionLabels, Counter>,
    pub connections_open: Family<ConnectionLabels, Gauge>,
    pub tcp_connections: Family<RouteLabels, Counter>,
    pub tcp_connect_errors: Family<RouteLabels, Counter>,
    pub tcp_read_bytes: Family<RouteLabels, Counter>,
    pub tcp_write_bytes: Family<RouteLabels, Counter>,
    pub tcp_duration: Family<RouteLabels, Histogram>,
    pub reloads: Family<ReloadLabels, Counter>,
    /// Requests and TCP connections a listener's authorization allowed or denied.
    pub authz_allowed: Family<AuthzLabels, Counter>,
    pub authz_denied: Family<AuthzLabels, Counter>,
    /// Captured connections passed through to a destination outside the mesh.
    pub outbound_passthrough: Family<OutboundLabels, Counter>,
    /// Captured connections closed without being forwarded.
    pub outbound_refused: Family<OutboundLabels, Counter>,
    /// Attempts retried, by route, backend and the reason of the failed attempt.
    pub retries: Family<RetryLabels, Counter>,
    /// Delays and aborts injected by FaultInjections.
    pub faults: Family<FaultLabels, Counter>,
    /// Copies of requests sent to mirror backends, by outcome.
    pub mirrors: Family<MirrorLabels, Counter>,
    /// `trellis_tls_*`.
    pub tls: TlsMetrics,
    /// Request series made so far, against `max_series`.
    request_series: std::sync::atomic::AtomicUsize,
    max_series: std::sync::atomic::AtomicUsize,
    /// Whether requests are counted at all (`requestMetrics:`).
    count_requests: std::sync::atomic::AtomicBool,
    /// Access log lines lost to a full queue or a failed write.
    pub access_log_dropped: Counter,
    /// Requests recorded in the overflow series instead of their own.
    pub overflowed: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn connection_histogram() -> Histogram {
    Histogram::new([0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "trellis_requests",
            "HTTP requests answered, by listener, backend, status and proxy error",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "trellis_request_duration_seconds",
            "Time from receiving a request to sending its response headers",
            request_duration.clone(),
        );
        let connections = Family::default();
        registry.register(
            "trellis_connections",
            "Client connections accepted, by detected protocol",
            connections.clone(),
        );
        let connections_open = Family::default();
        registry.register(
            "trellis_connections_open",
            "Client connections currently open",
            connections_open.clone(),
        );
        let tcp_connections = Family::default();
        registry.register(
            "trellis_tcp_connections",
            "Opaque TCP connections forwarded to a backend",
            tcp_connections.clone(),
        );
        let tcp_connect_errors = Family::default();
        registry.register(
            "trellis_tcp_connect_errors",
            "Opaque TCP connections closed because no endpoint could be reached",
            tcp_connect_errors.clone(),
        );
        let tcp_read_bytes = Family::default();
        registry.register(
            "trellis_tcp_read_bytes",
            "Bytes read from clients of forwarded TCP connections",
            tcp_read_bytes.clone(),
        );
        let tcp_write_bytes = Family::default();
        registry.register(
            "trellis_tcp_write_bytes",
            "Bytes written to clients of forwarded TCP connections",
            tcp_write_bytes.clone(),
        );
        let tcp_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            connection_histogram as fn() -> _,
        );
        registry.register(
            "trellis_tcp_connection_duration_seconds",
            "Lifetime of forwarded TCP connections",
            tcp_duration.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "trellis_config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let authz_allowed = Family::default();
        registry.register(
            "trellis_authz_allowed",
            "HTTP requests and TCP connections allowed by the listener's authorization, by the deciding policy",
            authz_allowed.clone(),
        );
        let authz_denied = Family::default();
        registry.register(
            "trellis_authz_denied",
            "HTTP requests and TCP connections denied by the listener's authorization, by the deciding policy",
            authz_denied.clone(),
        );
        let outbound_passthrough = Family::default();
        registry.register(
            "trellis_outbound_passthrough",
            "Captured outbound connections passed through to a destination outside the mesh",
            outbound_passthrough.clone(),
        );
        let outbound_refused = Family::default();
        registry.register(
            "trellis_outbound_refused",
            "Captured outbound connections closed without being forwarded, by reason",
            outbound_refused.clone(),
        );
        let retries = Family::default();
        registry.register(
            "trellis_retries",
            "Attempts retried, by the reason the attempt before failed",
            retries.clone(),
        );
        let faults = Family::default();
        registry.register(
            "trellis_faults_injected",
            "Delays and aborts injected into requests, by route and fault",
            faults.clone(),
        );
        let mirrors = Family::default();
        registry.register(
            "trellis_mirror_requests",
            "Copies of requests sent to a route's mirror backends, by outcome",
            mirrors.clone(),
        );
        let tls = TlsMetrics::register(&mut registry);
        let overflowed = Counter::default();
        registry.register(
            "trellis_metric_series_overflow",
            "Requests counted in the overflow series because the request series reached their limit",
            overflowed.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "trellis_access_log_dropped",
            "Access log lines lost because the writer fell behind or a write failed",
            access_log_dropped.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            tls,
            request_series: std::sync::atomic::AtomicUsize::new(0),
            max_series: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_SERIES),
            count_requests: std::sync::atomic::AtomicBool::new(true),
            access_log_dropped,
            overflowed,
            requests,
            request_duration,
            connections,
            connections_open,
            tcp_connections,
            tcp_connect_errors,
            tcp_read_bytes,
            tcp_write_bytes,
            tcp_duration,
            reloads,
            authz_allowed,
            authz_denied,
            outbound_passthrough,
            outbound_refused,
            retries,
            faults,
            mirrors,
        }
    }

    /// The same, holding at most `max_series` request series.
    pub fn with_max_series(max_series: usize) -> Self {
        let metrics = Self::new();
        metrics.set_max_series(Some(max_series));
        metrics
    }

    /// Sets the request series limit (`None`: the default). Lowering it keeps the
    /// series that exist; only new label sets past the limit overflow.
    pub fn set_max_series(&self, max_series: Option<usize>) {
        self.max_series.store(
            max_series.unwrap_or(DEFAULT_MAX_SERIES),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Turns the request metrics on or off; the series counted so far stay.
    pub fn count_requests(&self, on: bool) {
        self.count_requests
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one answered HTTP request.
    pub fn record_request(
        &self,
        route: &RouteLabels,
        call: &CallLabels,
        status: u16,
        grpc_status: Option<u32>,
        error: &'static str,
        elapsed: Duration,
    ) {
        if !self
            .count_requests
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let grpc_status = grpc_status.map_or("", grpc_status_label);
        let seconds = elapsed.as_secs_f64();
        // The usual case: the series of the connection's last request.
        let mut recent = call.recent.0.try_lock().ok();
        if let Some(hit) = recent.as_deref().and_then(Option::as_ref) {
            if hit.matches(self.id, route, (status, grpc_status, error)) {
                hit.requests.inc();
                hit.duration.observe(seconds);
                return;
            }
        }
        let mut labels = RequestLabels {
            direction: call.direction,
            listener: route.listener.clone(),
            route: route.route.clone(),
            backend: route.backend.clone(),
            peer_identity: call.peer_identity.clone(),
            tls: call.tls,
            status,
            class: status_class(status),
            grpc_status,
            error,
        };
        let mut counted = |requests: Counter| {
            requests.inc();
            let duration = self.request_duration.get_or_create(route).clone();
            duration.observe(seconds);
            if let Some(recent) = recent.as_deref_mut() {
                *recent = Some(Recent {
                    metrics: self.id,
                    route: route.clone(),
                    status,
                    grpc_status,
                    error,
                    requests,
                    duration,
                });
            }
        };
        // A series that exists: one lookup.
        if let Some(requests) = self.requests.get(&labels).map(|c| c.clone()) {
            return counted(requests);
        }
        use std::sync::atomic::Ordering::Relaxed;
        if self.request_series.fetch_add(1, Relaxed) < self.max_series.load(Relaxed) {
            return counted(self.requests.get_or_create(&labels).clone());
        }
        self.request_series.fetch_sub(1, Relaxed);
        self.overflowed.inc();
        let overflow: Arc<str> = OVERFLOW.into();
        (labels.route, labels.backend, labels.peer_identity) =
            (overflow.clone(), overflow.clone(), overflow.clone());
        self.requests.get_or_create(&labels).inc();
        let overflow_route = RouteLabels {
            listener: route.listener.clone(),
            route: overflow.clone(),
            backend: overflow,
        };
        self.request_duration
            .get_or_create(&overflow_route)
            .observe(seconds);
    }

    /// Records one injected fault.
    pub fn record_fault(&self, route: &RouteLabels, fault: &Arc<str>, kind: &'static str) {
        let labels = FaultLabels {
            listener: route.listener.clone(),
            route: route.route.clone(),
            fault: fault.clone(),
            kind,
        };
        self.faults.get_or_create(&labels).inc();
    }

    /// Records one retry.
    pub fn record_retry(&self, route: &RouteLabels, reason: &'static str) {
        let labels = RetryLabels {
            listener: route.listener.clone(),
            route: route.route.clone(),
            backend: route.backend.clone(),
            reason,
        };
        self.retries.get_or_create(&labels).inc();
    }

    /// Records one mirrored request's outcome.
    pub fn record_mirror(&self, route: &RouteLabels, outcome: &'static str) {
        let labels = MirrorLabels {
            listener: route.listener.clone(),
            route: route.route.clone(),
            backend: route.backend.clone(),
            outcome,
        };
        self.mirrors.get_or_create(&labels).inc();
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep whatever was written.
            tracing::warn!("metrics encoding stopped early");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets a warning through at most once per interval and counts the ones it held back,
/// so a flood of refused connections or denied requests costs one log line per
/// interval, not one each.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    origin: Instant,
    /// Milliseconds since `origin` before which warnings are held back.
    next_ms: AtomicU64,
    held: AtomicU64,
}

const WARN_INTERVAL: Duration = Duration::from_secs(10);

// === impl WarnLimiter ===

impl WarnLimiter {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` when a warning may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now < next
            || self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

impl Default for WarnLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The label value of a gRPC status code; codes past the 17 gRPC defines share one.
fn grpc_status_label(code: u32) -> &'static str {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| CODES.get(i))
        .copied()
        .unwrap_or("unknown")
}

pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_and_held_ones_counted() {
        let limiter = WarnLimiter::new();
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        // Pretend the interval has passed.
        limiter.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(limiter.allow(), Some(2));
    }

    #[test]
    fn requests_are_encoded_with_their_labels() {
        let metrics = Metrics::new();
        let route = RouteLabels {
            listener: "web".into(),
            route: "0".into(),
            backend: "app".into(),
        };
        let call = CallLabels::new(
            "inbound",
            "spiffe://trellis.local/ns/default/sa/web".into(),
            "true",
        );
        metrics.record_request(
            &route,
            &call,
            503,
            None,
            "no endpoints",
            Duration::from_millis(3),
        );
        metrics.record_request(&route, &call, 200, Some(14), "", Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(r#"trellis_requests_total{direction="inbound",listener="web",route="0",backend="app",peer_identity="spiffe://trellis.local/ns/default/sa/web",tls="true",status="503",class="5xx",grpc_status="",error="no endpoints"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"status="200",class="2xx",grpc_status="14",error=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains("trellis_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn a_connections_requests_are_counted_in_their_own_series_whatever_it_last_saw() {
        let (first, second) = (Metrics::new(), Metrics::new());
        let route = || RouteLabels {
            listener: "web".into(),
            route: "0".into(),
            backend: "app".into(),
        };
        let (web, reloaded) = (route(), route());
        let call = CallLabels::new("outbound", "".into(), "false");
        let ms = Duration::from_millis(1);
        for (metrics, labels, status) in [
            (&first, &web, 200),
            (&first, &web, 200),
            (&first, &web, 503),
            (&first, &web, 200),
            // The same route after a reload: new values, the same series.
            (&first, &reloaded, 200),
            // The same connection counted in another set of metrics.
            (&second, &web, 200),
            (&first, &web, 200),
        ] {
            metrics.record_request(labels, &call, status, None, "", ms);
        }
        let count = |metrics: &Metrics, status: &str| {
            let text = metrics.encode();
            let series = format!(r#"status="{status}""#);
            let line = text
                .lines()
                .find(|l| l.starts_with("trellis_requests_total{") && l.contains(&series))
                .unwrap_or_else(|| panic!("no {status} series in\n{text}"))
                .to_owned();
            line.rsplit(' ').next().expect("a value").to_owned()
        };
        assert_eq!(count(&first, "200"), "5");
        assert_eq!(count(&first, "503"), "1");
        assert_eq!(count(&second, "200"), "1");
        assert!(first.encode().contains(
            r#"trellis_request_duration_seconds_count{listener="web",route="0",backend="app"} 6"#
        ));
    }

    #[test]
    fn series_past_the_limit_go_to_one_overflow_series() {
        let metrics = Metrics::with_max_series(3);
        let call = CallLabels::new("outbound", "".into(), "false");
        // A path explosion: every request its own route.
        for i in 0..1000 {
            let route = RouteLabels {
                listener: "out".into(),
                route: format!("route-{i}").into(),
                backend: "books".into(),
            };
            metrics.record_request(&route, &call, 200, None, "", Duration::from_millis(1));
        }
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("trellis_requests_total{"))
            .count();
        assert_eq!(series, 4, "three of their own and the overflow:\n{text}");
        assert!(
            text.contains(r#"route="overflow",backend="overflow""#),
            "{text}"
        );
        assert!(
            text.contains("trellis_metric_series_overflow_total 997"),
            "{text}"
        );
        // A series that exists keeps being counted as itself.
        let first = RouteLabels {
            listener: "out".into(),
            route: "route-0".into(),
            backend: "books".into(),
        };
        metrics.record_request(&first, &call, 200, None, "", Duration::from_millis(1));
        assert!(metrics
            .encode()
            .contains("trellis_metric_series_overflow_total 997"));
    }
}
