//! What metrics, taps, traces and access logs see of a request.
//!
//! The request's method, authority and path are taken once before it is sent on, and
//! only when a tap runs, tracing is on or access logs are written. Most requests are
//! counted when their response headers are sent; a gRPC response is counted when its
//! body ends, since its `grpc-status` comes in the trailers. Taps and access logs also
//! wait for the body's end, to report the bytes sent. Nothing of this wraps the body
//! when nothing needs it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Request, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::forward::ConnContext;
use crate::access_log::{AccessLogger, Entry};
use crate::telemetry::RouteLabels;
use crate::trace::otlp::{Finished, Kind};
use crate::trace::tracer::Tracer;

/// A request's method, authority, path and HTTP version.
pub(super) struct Seen {
    method: http::Method,
    authority: String,
    path: String,
    version: Version,
}

/// This hop's span of a traced request: started before the request is sent on (its
/// context headers rewritten to name this span as the parent), exported when the
/// response is sent if the trace is sampled.
pub(super) struct Traced {
    tracer: Arc<Tracer>,
    span: crate::trace::Span,
    start: SystemTime,
}

impl Seen {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                let host = req.headers().get(http::header::HOST)?;
                host.to_str().ok().map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            method: req.method().clone(),
            authority,
            path: req.uri().path().to_owned(),
            version: req.version(),
        }
    }
}

impl Traced {
    pub(super) fn start(req: &mut Request<Incoming>, ctx: &ConnContext) -> Option<Self> {
        let tracer = ctx.shared.tracing.current()?;
        let incoming = crate::trace::extract(req.headers());
        let span = crate::trace::start(incoming.as_ref(), tracer.config.sampling, &mut || {
            fastrand::u64(..)
        });
        span.inject(req.headers_mut());
        // Only a recorded span needs its start time.
        let start = if span.sampled {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        Some(Self {
            tracer,
            span,
            start,
        })
    }

    /// The trace's id, as logs show it.
    pub(super) fn trace_id(&self) -> String {
        self.span.trace_id_hex()
    }

    /// Whether the span is recorded; an unsampled one only passes its context on.
    pub(super) fn sampled(&self) -> bool {
        self.span.sampled
    }

    /// Exports the span if it is sampled; `seen` is there whenever it is.
    pub(super) fn finish(self, seen: &Seen, ctx: &ConnContext, labels: &RouteLabels, status: u16) {
        if !self.span.sampled {
            return;
        }
        let mut attributes = vec![
            ("http.request.method", seen.method.to_string()),
            ("url.path", seen.path.clone()),
            ("http.response.status_code", status.to_string()),
            ("trellis.listener", labels.listener.to_string()),
            ("trellis.route", labels.route.to_string()),
            ("trellis.backend", labels.backend.to_string()),
        ];
        if !ctx.call.peer_identity.is_empty() {
            attributes.push(("trellis.peer.identity", ctx.call.peer_identity.to_string()));
        }
        self.tracer.exporter.record(Finished {
            span: self.span,
            name: format!("{} {}", seen.method, labels.route),
            kind: if ctx.call.direction == "inbound" {
                Kind::Server
            } else {
                Kind::Client
            },
            start: self.start,
            end: SystemTime::now(),
            attributes,
            error: status >= 500,
        });
    }
}

/// A gRPC response's `grpc-status`, if these headers (or trailers) carry one.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// What is still to be reported when a response body ends.
pub(super) struct Completion {
    pub ctx: Arc<ConnContext>,
    pub labels: RouteLabels,
    pub started: Instant,
    pub status: u16,
    pub error: &'static str,
    /// The response's gRPC status, once known; it may come in the trailers.
    pub grpc_status: Option<u32>,
    /// Whether the request is still to be counted (a gRPC response waiting for its
    /// trailers).
    pub count: bool,
    /// What taps and the access log show, when either wants it.
    pub seen: Option<Seen>,
    pub tapped: bool,
    pub log: Option<Arc<AccessLogger>>,
    pub trace_id: Option<String>,
}

impl Completion {
    /// Reports the finished response: its count, its taps, its log line.
    fn report(self, response_bytes: u64) {
        let elapsed = self.started.elapsed();
        let shared = &self.ctx.shared;
        if self.count {
            shared.metrics.record_request(
                &self.labels,
                &self.ctx.call,
                self.status,
                self.grpc_status,
                self.error,
                elapsed,
            );
        }
        let Some(seen) = &self.seen else { return };
        if self.tapped {
            self.tap(seen, elapsed, response_bytes);
        }
        if let Some(log) = &self.log {
            self.log(log, seen, elapsed, response_bytes);
        }
    }

    fn tap(&self, seen: &Seen, latency: Duration, response_bytes: u64) {
        let inbound = self.ctx.call.direction == "inbound";
        self.ctx.shared.taps.observe(&crate::tap::Observed {
            inbound,
            source_identity: if inbound {
                &self.ctx.call.peer_identity
            } else {
                ""
            },
            destination_identity: "",
            method: seen.method.as_str(),
            authority: &seen.authority,
            path: &seen.path,
            status: self.status,
            grpc_status: self.grpc_status,
            latency,
            response_bytes,
            route: &self.labels.route,
            backend: &self.labels.backend,
            workload: "",
        });
    }

    fn log(&self, log: &AccessLogger, seen: &Seen, elapsed: Duration, response_bytes: u64) {
        let call = &self.ctx.call;
        log.log(&Entry {
            time: crate::access_log::now(),
            direction: call.direction,
            method: seen.method.as_str(),
            authority: &seen.authority,
            path: &seen.path,
            protocol: version_name(seen.version),
            status: self.status,
            grpc_status: self.grpc_status,
            duration_ms: crate::access_log::millis(elapsed),
            response_bytes,
            listener: &self.labels.listener,
            route: &self.labels.route,
            backend: &self.labels.backend,
            peer_identity: &call.peer_identity,
            tls: call.tls == "true",
            error: self.error,
            trace_id: self.trace_id.clone(),
        });
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes it passes, reads `grpc-status` from the
    /// trailers, and reports the request when it ends, or when it is dropped before
    /// (the client went away).
    pub(super) struct Observed<B> {
        #[pin]
        inner: B,
        bytes: u64,
        completion: Option<Completion>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(completion) = this.completion.take() {
                completion.report(*this.bytes);
            }
        }
    }
}

impl<B> Observed<B> {
    pub(super) fn new(inner: B, completion: Completion) -> Self {
        Self {
            inner,
            bytes: 0,
            completion: Some(completion),
        }
    }
}

impl<B: Body> Body for Observed<B>
where
    B::Data: bytes::Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += bytes::Buf::remaining(data) as u64;
                } else if let (Some(trailers), Some(completion)) =
                    (frame.trailers_ref(), this.completion.as_mut())
                {
                    completion.grpc_status = completion.grpc_status.or(grpc_status(trailers));
                }
            }
            None => {
                if let Some(completion) = this.completion.take() {
                    completion.report(*this.bytes);
                }
            }
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
