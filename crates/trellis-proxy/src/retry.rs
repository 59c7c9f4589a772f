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
//! Each retry is counted with its reason, and must be allowed by the backend's retry
//! budget, which the caller asks before every retry. Routes without a `retry` still get
//! [`CONNECT_FAILURES`]: an attempt that could not connect reached no one, so a
//! replay-safe request goes to another endpoint instead of failing.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};

use crate::config::RetryConfig;
use crate::endpoint::{BoxBody, BoxError};
use crate::http::errors::ProxyError;

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
    /// Retry only attempts that could not connect.
    connect_failures_only: bool,
}

/// The retries of a route that asks for none: up to two more endpoints for an attempt
/// that could not connect, at once (nothing was sent, and another endpoint is no
/// busier for it).
pub const CONNECT_FAILURES: RetryPolicy = RetryPolicy {
    attempts: 2,
    codes: Vec::new(),
    backoff: Duration::ZERO,
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
            connect_failures_only: false,
        }
    }

    /// Why an attempt with this outcome is retried, or `None` when it is final.
    pub fn should_retry<T>(
        &self,
        outcome: &Result<T, ProxyError>,
        status: impl Fn(&T) -> StatusCode,
    ) -> Option<&'static str> {
        match outcome {
            Err(e) if self.connect_failures_only => e.is_connect_failure().then(|| e.reason()),
            Ok(resp) if self.codes.contains(&status(resp)) => Some("status"),
            Ok(_) => None,
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

/// A request the proxy can send again: its head and its whole body.
struct Replayable {
    head: http::request::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Replayable {
    /// Reads the body of a replay-safe request; gives the request back when it is not
    /// one (a method that is not idempotent, or a body of unknown or too large size).
    async fn hold(req: Request<BoxBody>) -> Result<Result<Self, Request<BoxBody>>, BoxError> {
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
        Ok(Ok(Self {
            head,
            data: collected.to_bytes(),
            trailers,
        }))
    }

    /// A fresh copy of the request.
    fn request(&self) -> Request<BoxBody> {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::new();
        if !self.data.is_empty() {
            frames.push(Ok(Frame::data(self.data.clone())));
        }
        if let Some(t) = &self.trailers {
            frames.push(Ok(Frame::trailers(t.clone())));
        }
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        req
    }
}

/// Sends `req` with `attempt`, and again while the policy says so and `may_retry` (the
/// retry budget) allows. `on_retry` is told the reason of each retry. Without a policy,
/// or for a request that is not replay-safe, there is exactly one attempt.
pub async fn send<T, F, Fut>(
    policy: Option<&RetryPolicy>,
    req: Request<BoxBody>,
    mut attempt: F,
    status: impl Fn(&T) -> StatusCode,
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
    let replay = match Replayable::hold(req).await {
        Ok(Ok(replay)) => replay,
        Ok(Err(req)) => return attempt(req).await,
        Err(e) => return Err(ProxyError::ClientBody(e)),
    };
    let mut rng = fastrand::Rng::new();
    let mut retries = 0;
    loop {
        let outcome = attempt(replay.request()).await;
        match policy.should_retry(&outcome, &status) {
            Some(reason) if retries < policy.attempts && may_retry() => {
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
