//! What taps and traces see of a request: taken once before the request is sent on,
//! reported when its response is, and only when a tap runs or tracing is on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Request;
use hyper::body::Incoming;

use super::forward::ConnContext;
use crate::telemetry::RouteLabels;
use crate::trace::otlp::{Finished, Kind};
use crate::trace::tracer::Tracer;

/// A request's method, authority and path.
pub(super) struct Seen {
    method: http::Method,
    authority: String,
    path: String,
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
        }
    }

    /// Hands the request to the taps that match it.
    pub(super) fn tap(
        &self,
        ctx: &ConnContext,
        labels: &RouteLabels,
        status: u16,
        latency: Duration,
    ) {
        let inbound = ctx.call.direction == "inbound";
        ctx.shared.taps.observe(&crate::tap::Observed {
            inbound,
            source_identity: if inbound { &ctx.call.peer_identity } else { "" },
            destination_identity: "",
            method: self.method.as_str(),
            authority: &self.authority,
            path: &self.path,
            status,
            latency,
            route: &labels.route,
            backend: &labels.backend,
            workload: "",
        });
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
        Some(Self {
            tracer,
            span,
            start: SystemTime::now(),
        })
    }

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
