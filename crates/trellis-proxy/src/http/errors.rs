//! The one place where a failure of the proxy becomes the response a client sees: an
//! HTTP status with a short `trellis-error` reason, or for gRPC a trailers-only response
//! with the matching `grpc-status`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::authz::Denied;
use crate::endpoint::{BoxBody, EndpointError};
use crate::resilience::protection::Rejection;

/// Header naming why the proxy answered instead of the backend.
pub const ERROR_HEADER: &str = "trellis-error";

/// Header naming the limit that refused a request (`max-requests`,
/// `concurrency-limit`, …), so clients and dashboards can tell shedding from failure.
pub const OVERFLOW_HEADER: &str = "x-trellis-overflow";

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route on listener {listener} matches the request")]
    NoRoute { listener: Arc<str> },
    /// On an egress listener: the request's host is no declared ExternalService's.
    #[error("{host:?} is not a declared external host (ExternalService)")]
    UndeclaredHost { host: String },
    /// `CONNECT` to a target no route of the HTTP proxy port names, or without one.
    #[error("CONNECT to {target:?}: no Service or ExternalService of the mesh has that name")]
    ConnectRefused { target: String },
    #[error("route {route} has no backend with a weight above 0")]
    NoBackend { route: Arc<str> },
    #[error("backend {backend} has no endpoints")]
    NoEndpoints { backend: Arc<str> },
    #[error("no response within the route timeout of {0:?}")]
    RequestTimeout(Duration),
    #[error("no response headers from the backend within its attempt timeout of {0:?}")]
    BackendTimeout(Duration),
    /// The client's request body failed while the proxy held it for retries.
    #[error("reading the request body: {0}")]
    ClientBody(crate::endpoint::BoxError),
    #[error("backend {backend} speaks HTTP/2, which cannot carry an HTTP/1 upgrade")]
    UpgradeUnsupported { backend: Arc<str> },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The listener's authorization refused the request.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A circuit-breaker limit or the adaptive concurrency limit refused the request
    /// before it reached the backend.
    #[error("backend {backend} is at its limit: {}", rejection.reason())]
    Overflow {
        backend: Arc<str>,
        rejection: Rejection,
        /// For a request shed by the adaptive limit: when to try again.
        retry_after: Option<Duration>,
    },
    /// A rate limit of the listener found its bucket empty.
    #[error("rate limited by {policy}: at most {limit} at once; retry after {retry_after:?}")]
    RateLimited {
        policy: Arc<str>,
        /// The bucket's size.
        limit: u32,
        retry_after: Duration,
    },
    /// A FaultInjection aborted the request.
    #[error("aborted by fault {fault}")]
    FaultAbort {
        fault: Arc<str>,
        status: StatusCode,
        /// The gRPC status code for gRPC calls; `None`: the one matching `status`.
        grpc: Option<u32>,
    },
}

/// gRPC status codes the proxy answers with.
const GRPC_UNAVAILABLE: &str = "14";
const GRPC_DEADLINE_EXCEEDED: &str = "4";
const GRPC_UNIMPLEMENTED: &str = "12";
const GRPC_PERMISSION_DENIED: &str = "7";
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

impl ProxyError {
    /// The HTTP status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UndeclaredHost { .. } | ProxyError::ConnectRefused { .. } => {
                StatusCode::FORBIDDEN
            }
            ProxyError::NoBackend { .. }
            | ProxyError::NoEndpoints { .. }
            | ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RequestTimeout(_) | ProxyError::BackendTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::UpgradeUnsupported { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::FaultAbort { status, .. } => *status,
            ProxyError::Endpoint(e) => match e {
                EndpointError::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                EndpointError::Connect { .. }
                | EndpointError::Resolve { .. }
                | EndpointError::Origination { .. }
                | EndpointError::Tls { .. }
                | EndpointError::Handshake { .. }
                | EndpointError::Request { .. } => StatusCode::BAD_GATEWAY,
                EndpointError::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// A short, stable reason, used as a metric label and, except for denials (see
    /// [`ProxyError::header`]), sent in the `trellis-error` header.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Denied(_) => "denied",
            ProxyError::FaultAbort { .. } => "fault injected",
            ProxyError::NoRoute { .. } => "no route",
            ProxyError::UndeclaredHost { .. } => "undeclared external host",
            ProxyError::ConnectRefused { .. } => "connect refused",
            ProxyError::RateLimited { .. } => "rate limited",
            ProxyError::Overflow { rejection, .. } => rejection.reason(),
            ProxyError::NoBackend { .. } => "no backend",
            ProxyError::NoEndpoints { .. } => "no endpoints",
            ProxyError::RequestTimeout(_) => "request timeout",
            ProxyError::BackendTimeout(_) => "backend timeout",
            ProxyError::ClientBody(_) => "request body failed",
            ProxyError::UpgradeUnsupported { .. } => "upgrade unsupported",
            ProxyError::Endpoint(e) => match e {
                EndpointError::ConnectTimeout { .. } => "connect timeout",
                EndpointError::Connect { .. } => "connect failed",
                EndpointError::Resolve { .. } => "resolve failed",
                EndpointError::Origination { .. } => "tls origination failed",
                EndpointError::Tls { .. } => "tls handshake failed",
                EndpointError::Handshake { .. } => "handshake failed",
                EndpointError::Request { .. } => "upstream failed",
                EndpointError::Overflow(overflow) => overflow.reason(),
            },
        }
    }

    /// Whether another attempt could succeed where this one failed: the backend could
    /// not be reached, or did not answer in time or at all. Decided here, where the
    /// failure is named, so every retry follows the same rule.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProxyError::BackendTimeout(_) => true,
            ProxyError::Endpoint(e) => !matches!(e, EndpointError::Overflow(_)),
            _ => false,
        }
    }

    /// Whether the attempt never reached the endpoint: nothing of the request was
    /// sent, so another endpoint may take it whatever the route says about retries.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Endpoint(
                EndpointError::Connect { .. } | EndpointError::ConnectTimeout { .. }
            )
        )
    }

    /// The `trellis-error` header: the reason, or for a denial which policy decided
    /// (`denied by shop/deny-cart`).
    pub fn header(&self) -> HeaderValue {
        match self {
            ProxyError::Denied(denied) => HeaderValue::from_str(&denied.to_string())
                .unwrap_or(HeaderValue::from_static("denied")),
            _ => HeaderValue::from_static(self.reason()),
        }
    }

    fn grpc_status(&self) -> HeaderValue {
        if let ProxyError::FaultAbort {
            status, grpc: code, ..
        } = self
        {
            let code = code.unwrap_or_else(|| grpc_code_for(*status));
            return HeaderValue::from(code);
        }
        HeaderValue::from_static(match self.status() {
            StatusCode::FORBIDDEN => GRPC_PERMISSION_DENIED,
            StatusCode::TOO_MANY_REQUESTS => GRPC_RESOURCE_EXHAUSTED,
            StatusCode::GATEWAY_TIMEOUT => GRPC_DEADLINE_EXCEEDED,
            _ if matches!(
                self,
                ProxyError::UpgradeUnsupported { .. } | ProxyError::NoRoute { .. }
            ) =>
            {
                GRPC_UNIMPLEMENTED
            }
            _ => GRPC_UNAVAILABLE,
        })
    }

    /// The response the client gets. gRPC clients read the status from `grpc-status`,
    /// so they get HTTP 200 with a trailers-only response.
    pub fn to_response(&self, grpc: bool) -> Response<BoxBody> {
        let reason = self.header();
        let mut builder = Response::builder().header(ERROR_HEADER, reason.clone());
        if let ProxyError::RateLimited {
            limit, retry_after, ..
        } = self
        {
            let wait = crate::resilience::ratelimit::retry_after_secs(*retry_after);
            builder = builder
                .header(header::RETRY_AFTER, wait)
                .header(crate::resilience::ratelimit::RATELIMIT_LIMIT, *limit)
                .header("ratelimit-remaining", 0)
                .header("ratelimit-reset", wait);
        }
        if let ProxyError::Overflow {
            rejection,
            retry_after,
            ..
        } = self
        {
            builder = builder.header(OVERFLOW_HEADER, rejection.label());
            if let Some(wait) = retry_after {
                builder = builder.header(header::RETRY_AFTER, wait.as_secs().max(1));
            }
        }
        let body = if grpc {
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", self.grpc_status())
                .header("grpc-message", reason);
            Bytes::new()
        } else {
            builder = builder
                .status(self.status())
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            Bytes::from(format!("{}\n", self))
        };
        builder
            .body(full(body))
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }
}

/// The gRPC status for an HTTP status, as gRPC's "HTTP to gRPC status code mapping"
/// gives it.
fn grpc_code_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// True when the request is gRPC (`content-type: application/grpc…`).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn statuses_and_reasons() {
        let cases: Vec<(ProxyError, u16, &str, &str)> = vec![
            (
                ProxyError::NoEndpoints {
                    backend: "b".into(),
                },
                503,
                "no endpoints",
                "14",
            ),
            (
                ProxyError::RequestTimeout(Duration::from_secs(1)),
                504,
                "request timeout",
                "4",
            ),
            (
                EndpointError::ConnectTimeout {
                    addr: addr(),
                    timeout: Duration::from_secs(1),
                }
                .into(),
                504,
                "connect timeout",
                "4",
            ),
            (
                EndpointError::Connect {
                    addr: addr(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                }
                .into(),
                502,
                "connect failed",
                "14",
            ),
            (
                EndpointError::Tls {
                    addr: addr(),
                    reason: crate::tls::HandshakeReason::IdentityMismatch,
                    source: std::io::ErrorKind::InvalidData.into(),
                }
                .into(),
                502,
                "tls handshake failed",
                "14",
            ),
            (
                Denied {
                    policy: "shop/deny-cart".into(),
                    rule: Some(0),
                }
                .into(),
                403,
                "denied by shop/deny-cart",
                "7",
            ),
        ];
        for (err, status, reason, grpc) in cases {
            let resp = err.to_response(false);
            assert_eq!(resp.status().as_u16(), status, "{err}");
            assert_eq!(resp.headers()[ERROR_HEADER], reason);
            let resp = err.to_response(true);
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["grpc-status"], grpc, "{err}");
        }
    }

    #[test]
    fn refusals_say_which_limit_and_when_to_come_back() {
        use crate::resilience::breaker::Overflow;
        let shed = ProxyError::Overflow {
            backend: "b".into(),
            rejection: Rejection::ConcurrencyLimit,
            retry_after: Some(Duration::from_secs(2)),
        };
        let resp = shed.to_response(false);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[OVERFLOW_HEADER], "concurrency-limit");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let full = ProxyError::Overflow {
            backend: "b".into(),
            rejection: Rejection::Limit(Overflow::PendingRequests),
            retry_after: None,
        };
        let resp = full.to_response(true);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()[OVERFLOW_HEADER], "max-pending-requests");
        assert!(!resp.headers().contains_key(header::RETRY_AFTER));
        assert!(!full.is_retryable());

        let limited = ProxyError::RateLimited {
            policy: "shop/limits".into(),
            limit: 40,
            retry_after: Duration::from_millis(1500),
        };
        let resp = limited.to_response(false);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = resp.headers();
        assert_eq!(h["retry-after"], "2", "1.5 s rounds up");
        assert_eq!(h["ratelimit-reset"], "2");
        assert_eq!(h["ratelimit-limit"], "40");
        assert_eq!(limited.to_response(true).headers()["grpc-status"], "8");
    }
}
