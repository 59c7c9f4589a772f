//! Request mirroring, fire and forget: a copy of the request goes to each sampled mirror
//! backend on a task of its own, its response is read and dropped, and its outcome is
//! counted (`trellis_mirror_requests_total`).
//!
//! The primary request never waits for a mirror. Its body is copied frame by frame into
//! a bounded channel per mirror without blocking: a mirror that falls behind loses its
//! copy (its request is aborted and counted as `aborted`), never the primary its pace.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{request, Request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{mpsc, oneshot};

use super::forward::to_backend;
use crate::balance::InFlight;
use crate::endpoint::{BoxBody, BoxError};
use crate::route::filter::Mirror;
use crate::telemetry::status_class;
use crate::Shared;

/// Marks a mirrored copy, so its receiver can tell it from live traffic.
pub const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-trellis-mirror");

/// Frames of the request body a mirror may lag behind the primary before its copy is
/// given up.
const COPY_FRAMES: usize = 64;

/// How long a mirrored request may take when its route sets no timeout.
const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a copy of the request (`parts` as it is being forwarded, and `body`) to each
/// sampled mirror, and returns the body the primary request sends instead of `body`.
pub(super) fn start(
    mirrors: &[Mirror],
    parts: &request::Parts,
    body: BoxBody,
    timeout: Option<Duration>,
    shared: &Arc<Shared>,
) -> BoxBody {
    let sampled: Vec<&Mirror> = mirrors.iter().filter(|m| m.share.sampled()).collect();
    if sampled.is_empty() {
        return body;
    }
    let limit = timeout.unwrap_or(DEFAULT_MIRROR_TIMEOUT);
    if body.is_end_stream() {
        for mirror in sampled {
            let empty = Empty::new().map_err(BoxError::from).boxed();
            send(mirror, parts, empty, None, limit, shared);
        }
        return body;
    }
    let size = body.size_hint();
    let mut copies = Vec::new();
    for mirror in sampled {
        let (tx, rx) = mpsc::channel(COPY_FRAMES);
        let (gone, cut) = oneshot::channel();
        let complete = Arc::new(AtomicBool::new(false));
        let copied = Copied {
            rx,
            complete: complete.clone(),
            size,
        };
        let cut = Cut {
            copy_gone: cut,
            complete: complete.clone(),
        };
        send(mirror, parts, copied.boxed(), Some(cut), limit, shared);
        copies.push(Copy {
            tx,
            complete,
            _gone: gone,
        });
    }
    Tee {
        inner: body,
        copies,
    }
    .boxed()
}

/// Tells a mirrored request that its body copy was cut short. Its client may never
/// notice by itself: a backend that stops reading leaves the client waiting to write,
/// not reading the body that would say so.
struct Cut {
    copy_gone: oneshot::Receiver<()>,
    complete: Arc<AtomicBool>,
}

impl Cut {
    /// Resolves when the copy was given up; never when it was whole.
    async fn wait(cut: Option<Cut>) {
        if let Some(cut) = cut {
            let _ = cut.copy_gone.await;
            if !cut.complete.load(Ordering::Acquire) {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Spawns the mirrored request and counts how it ends.
fn send(
    mirror: &Mirror,
    parts: &request::Parts,
    body: BoxBody,
    cut: Option<Cut>,
    limit: Duration,
    shared: &Arc<Shared>,
) {
    let Some(endpoint) = mirror.backend.pick() else {
        shared.metrics.record_mirror(&mirror.labels, "no endpoints");
        return;
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut()
        .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
    let identity = match endpoint.identity() {
        Some(_) => shared.tls.identity(),
        None => None,
    };
    let req = to_backend(req, endpoint.protocol(identity.as_deref()), endpoint.addr());
    let shared = shared.clone();
    let labels = mirror.labels.clone();
    tokio::spawn(async move {
        let _in_flight = InFlight::new(endpoint.clone());
        let exchange = async {
            let resp = endpoint.send(req, identity.as_deref(), None).await?;
            let status = resp.status().as_u16();
            // Read to the end so the connection can be used again.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, BoxError>(status)
        };
        let outcome = tokio::select! {
            result = tokio::time::timeout(limit, exchange) => match result {
                Ok(Ok(status)) => status_class(status),
                Ok(Err(e)) => {
                    tracing::debug!(backend = %labels.backend, error = %e, "mirrored request failed");
                    "failed"
                }
                Err(_) => "timeout",
            },
            () = Cut::wait(cut) => "aborted",
        };
        shared.metrics.record_mirror(&labels, outcome);
    });
}

/// The sending side of one mirror's copy of the body.
struct Copy {
    tx: mpsc::Sender<Frame<Bytes>>,
    /// Set before `tx` is dropped when the whole body was copied; a copy whose sender
    /// goes without it was cut short.
    complete: Arc<AtomicBool>,
    /// Dropped with the copy, which wakes the mirrored request's [`Cut`].
    _gone: oneshot::Sender<()>,
}

/// The primary request's body, copying each frame to the mirrors as it passes.
struct Tee {
    inner: BoxBody,
    copies: Vec<Copy>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // A full channel is a mirror that cannot keep up; dropping its sender
                // aborts its request.
                this.copies
                    .retain(|c| copy_frame(frame).is_some_and(|f| c.tx.try_send(f).is_ok()));
            }
            Poll::Ready(None) => finish(&mut this.copies),
            // The primary's body failed: the copies are cut short with it.
            Poll::Ready(Some(Err(_))) => this.copies.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // The primary's client may stop polling once the body says it has ended, never
        // asking for the final `None`.
        if self.inner.is_end_stream() {
            finish(&mut self.copies);
        }
    }
}

fn finish(copies: &mut Vec<Copy>) {
    for c in copies.drain(..) {
        c.complete.store(true, Ordering::Release);
    }
}

fn copy_frame(frame: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(data) = frame.data_ref() {
        return Some(Frame::data(data.clone()));
    }
    frame.trailers_ref().map(|t| Frame::trailers(t.clone()))
}

/// A mirror's copy of the request body.
struct Copied {
    rx: mpsc::Receiver<Frame<Bytes>>,
    complete: Arc<AtomicBool>,
    size: SizeHint,
}

/// The copy of a body lost frames: the mirror fell behind or the primary's body failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not copied whole to the mirror")]
struct CopyCutShort;

impl Body for Copied {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(CopyCutShort.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
