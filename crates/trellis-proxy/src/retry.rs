//! Retries of replay-safe requests (the Gateway API's experimental `retry`: attempts,
//! codes, backoff).
//!
//! Only a request that may be sent twice is retried: an idempotent method, and a body
//! the proxy holds whole (a known length of at most [`MAX_REPLAY_BODY`]). A retry is
//! decided on an attempt's outcome before anything reaches the client: a failure to
//! connect or to get response headers, an attempt that ran out of its backend timeout,
//! or response headers whose status is one of the route's codes. Once a response is
//! handed to the client it is never retried.
//!
//! gRPC calls are POSTs, so they are retried only on routes that list gRPC statuses,
//! and only while the whole call fits in [`MAX_REPLAY_BODY`]: their body streams to the
//! first attempt as it arrives and a copy is kept (`retry/tape.rs`). A gRPC status is
//! read from the response headers (a trailers-only response) or, when the headers carry
//! none, from trailers that come before any message: the caller peeks at the first
//! frame of the body for that, before anything is passed on.
//!
//! Each retry is counted with its reason, and must be allowed by the backend's retry
//! budget, which the caller asks before every retry. Routes without a `retry` still get
//! [`CONNECT_FAILURES`]: an attempt that could not connect reached no one, so a
//! replay-safe request goes to another endpoint instead of failing.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, BodyStream, StreamBody};

use crate::config::RetryConfig;
use crate::endpoint::{BoxBody, BoxError};
use crate::http::errors::{is_grpc, ProxyError};
use crate::http::observe::grpc_status;

mod tape;

use self::tape::Tape;

/// Largest request body held for replay, in bytes.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Longest wait between two attempts, whatever the backoff doubles to.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A route's retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    codes: Vec<StatusCode>,
    backoff: Duration,
    /// gRPC status codes that are retried; non-empty makes gRPC calls replayable.
    grpc_statuses: Vec<u32>,
    /// Retry only attempts that could not connect.
    connect_failures_only: bool,
}

/// What a retry decision reads of an answer: its HTTP status, and for a gRPC call the
/// `grpc-status` the proxy saw before passing anything on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub grpc_status: Option<u32>,
}

impl From<StatusCode> for Answer {
    fn from(status: StatusCode) -> Self {
        Self {
            status,
            grpc_status: None,
        }
    }
}

/// The retries of a route that asks for none: up to two more endpoints for an attempt
/// that could not connect, at once (nothing was sent, and another endpoint is no
/// busier for it).
pub const CONNECT_FAILURES: RetryPolicy = RetryPolicy {
    attempts: 2,
    codes: Vec::new(),
    backoff: Duration::ZERO,
    grpc_statuses: Vec::new(),
    connect_failures_only: true,
};

impl RetryPolicy {
    pub fn build(config: &RetryConfig) -> Self {
        Self {
            attempts: config.attempts,
            codes: config
                .codes
                .iter()
                .filter_map(|c| StatusCode::from_u16(*c).ok())
                .collect(),
            backoff: config.backoff.get(),
            grpc_statuses: config.grpc_statuses.iter().map(|s| s.code()).collect(),
            connect_failures_only: false,
        }
    }

    /// Whether gRPC statuses are retried, so a gRPC response's status must be known
    /// before the response is passed on.
    pub fn retries_grpc(&self) -> bool {
        !self.grpc_statuses.is_empty()
    }

    /// Why an attempt with this outcome is retried, or `None` when it is final.
    pub fn should_retry<T>(
        &self,
        outcome: &Result<T, ProxyError>,
        answer: impl Fn(&T) -> Answer,
    ) -> Option<&'static str> {
        match outcome {
            Err(e) if self.connect_failures_only => e.is_connect_failure().then(|| e.reason()),
            Ok(resp) => {
                let answer = answer(resp);
                if self.codes.contains(&answer.status) {
                    Some("status")
                } else if answer
                    .grpc_status
                    .is_some_and(|g| self.grpc_statuses.contains(&g))
                {
                    Some("grpc status")
                } else {
                    None
                }
            }
            Err(e) if e.is_retryable() => Some(e.reason()),
            Err(_) => None,
        }
    }

    /// The wait before retry number `retry` (1 for the first): the backoff doubled for
    /// each earlier retry, then a random part of it (between half and all) so that
    /// clients that failed together do not retry together.
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        doubled / 2 + doubled.mul_f64(rng.f64() / 2.0)
    }
}

/// Methods a client may send twice with the same effect (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// A request the proxy can send again: its head and its body.
struct Replayable {
    head: http::request::Parts,
    body: ReplayBody,
}

enum ReplayBody {
    /// The whole body, read before the first attempt.
    Held {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// The body as attempts read it (gRPC calls).
    Taped(Tape),
}

impl Replayable {
    /// Reads the body of a replay-safe request, or starts taping a gRPC call's when
    /// `grpc` (the route retries gRPC statuses); gives the request back when it is
    /// neither (a method that is not idempotent, or a body of unknown or too large
    /// size).
    async fn hold(
        req: Request<BoxBody>,
        grpc: bool,
    ) -> Result<Result<Self, Request<BoxBody>>, BoxError> {
        if grpc && is_grpc(&req) {
            let (head, body) = req.into_parts();
            let body = ReplayBody::Taped(Tape::new(body));
            return Ok(Ok(Self { head, body }));
        }
        let known_small = req
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= MAX_REPLAY_BODY);
        if !is_idempotent(req.method()) || !(known_small || req.body().is_end_stream()) {
            return Ok(Err(req));
        }
        let (head, body) = req.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let body = ReplayBody::Held {
            data: collected.to_bytes(),
            trailers,
        };
        Ok(Ok(Self { head, body }))
    }

    /// Whether the request can still be sent again whole.
    fn replayable(&self) -> bool {
        match &self.body {
            ReplayBody::Held { .. } => true,
            ReplayBody::Taped(tape) => tape.replayable(),
        }
    }

    /// A fresh copy of the request.
    fn request(&self) -> Request<BoxBody> {
        let body = match &self.body {
            ReplayBody::Held { data, trailers } => {
                let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::new();
                if !data.is_empty() {
                    frames.push(Ok(Frame::data(data.clone())));
                }
                if let Some(t) = trailers {
                    frames.push(Ok(Frame::trailers(t.clone())));
                }
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
            ReplayBody::Taped(tape) => tape.body().boxed(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        req
    }
}

/// An answer's gRPC status as a retry decision needs it, before anything of the answer
/// is passed on: from the headers (a trailers-only response), or, when `peek` and the
/// headers of a gRPC response carry none, from trailers that come before any message.
/// The first frame of such a body is read for that and put back, so the body is given
/// back whole; a body whose first frame is a message has no status yet (`None`), and
/// a call whose message has begun is never retried.
pub async fn grpc_status_of(
    resp: Response<BoxBody>,
    peek: bool,
) -> (Response<BoxBody>, Option<u32>) {
    let from_headers = grpc_status(resp.headers());
    let is_grpc = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if from_headers.is_some() || !peek || !is_grpc || resp.body().is_end_stream() {
        return (resp, from_headers);
    }
    let (parts, mut body) = resp.into_parts();
    let first = body.frame().await;
    let status = match &first {
        Some(Ok(frame)) => frame.trailers_ref().and_then(grpc_status),
        _ => None,
    };
    let body = match first {
        None => body,
        Some(first) => {
            let rest = BodyStream::new(body);
            let frames = futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest);
            StreamBody::new(frames).boxed()
        }
    };
    (Response::from_parts(parts, body), status)
}

/// Sends `req` with `attempt`, and again while the policy says so and `may_retry` (the
/// retry budget) allows. `on_retry` is told the reason of each retry. Without a policy,
/// or for a request that is not replay-safe, there is exactly one attempt.
pub async fn send<T, F, Fut>(
    policy: Option<&RetryPolicy>,
    req: Request<BoxBody>,
    mut attempt: F,
    answer: impl Fn(&T) -> Answer,
    mut on_retry: impl FnMut(&'static str),
    mut may_retry: impl FnMut() -> bool,
) -> Result<T, ProxyError>
where
    F: FnMut(Request<BoxBody>) -> Fut,
    Fut: Future<Output = Result<T, ProxyError>>,
{
    let Some(policy) = policy.filter(|p| p.attempts > 0) else {
        return attempt(req).await;
    };
    let replay = match Replayable::hold(req, policy.retries_grpc()).await {
        Ok(Ok(replay)) => replay,
        Ok(Err(req)) => return attempt(req).await,
        Err(e) => return Err(ProxyError::ClientBody(e)),
    };
    let mut rng = fastrand::Rng::new();
    let mut retries = 0;
    loop {
        let outcome = attempt(replay.request()).await;
        match policy.should_retry(&outcome, &answer) {
            Some(reason) if retries < policy.attempts && replay.replayable() && may_retry() => {
                retries += 1;
                on_retry(reason);
                // The failed attempt's response, if any, is dropped here, unread.
                drop(outcome);
                tokio::time::sleep(policy.backoff(retries, &mut rng)).await;
            }
            _ => return outcome,
        }
    }
}

#[cfg(test)]
mod tests;
