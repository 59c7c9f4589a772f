//! The HTTP side of a client connection: a hyper HTTP/1.1 or HTTP/2 server whose every
//! request goes through `forward::handle`, closed gracefully on drain or when idle.

mod connect;
pub mod errors;
pub mod forward;
pub mod mirror;
pub(crate) mod observe;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use trellis_identity::SpiffeId;

use self::forward::ConnContext;
use crate::drain;
use crate::head::{FrameScanner, HeadClock, HeadIo, Heads};
use crate::io::{Activity, PrefixedIo, TrackedIo};
use crate::state::Listener;
use crate::Shared;

/// Runs a hyper server connection (pinned) until it ends, asking it to finish when
/// draining or idle: HTTP/1 closes after the response in progress, HTTP/2 sends GOAWAY
/// and lets open streams end. Stops early, dropping (and so closing) the connection,
/// when a request head is late; and, returning `true`, when `park` resolves. A macro
/// because hyper's two connection types share no trait for it.
macro_rules! drive {
    ($conn:expr, $drain:expr, $idle:expr, $head:expr, $park:expr) => {{
        let mut conn = $conn;
        let drain = $drain;
        let idle = $idle;
        let head = $head;
        let park = $park;
        tokio::pin!(idle);
        tokio::pin!(head);
        tokio::pin!(park);
        let mut closing = false;
        let mut parked = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    break;
                }
                _ = drain.signaled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                // Dropping the connection closes it: a client that has not sent its
                // head in time gets no answer, as it may never read one.
                _ = &mut head => {
                    tracing::debug!("closing a client connection whose request head is late");
                    break;
                }
                _ = &mut idle, if !closing => {
                    tracing::debug!("closing idle client connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut park, if !closing => {
                    parked = true;
                    break;
                }
            }
        }
        parked
    }};
}

/// How long an HTTP/1 connection has nothing to do (no request in flight, no head
/// arriving, nothing left to write) before its HTTP state (hyper's read and write
/// buffers, some 16 KiB) is given back until the client's next byte.
const PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Which HTTP server to run on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Serves HTTP on one accepted connection until the client leaves, the connection is
/// idle past the listener's idle timeout, a request head takes longer than the
/// listener's header-read timeout, or the proxy drains. `peer` is the client proxy's
/// identity when the connection is mTLS; `local_port` the port the connection arrived
/// on; `accepted` when it was accepted, where the clock of its first head starts.
#[allow(clippy::too_many_arguments)]
pub async fn serve<I>(
    io: I,
    version: Version,
    peer: Option<SpiffeId>,
    local_port: u16,
    accepted: Instant,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    drain: drain::Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let active = Arc::new(AtomicUsize::new(0));
    let idle_timeout = listener.idle_timeout;
    let clock = HeadClock::new(accepted, listener.header_read_timeout);
    let max_header_bytes = shared.state.load().config.max_header_bytes;
    let call = crate::telemetry::CallLabels::new(
        if &*listener.name == crate::config::INBOUND_LISTENER {
            "inbound"
        } else {
            "outbound"
        },
        peer.as_ref()
            .map_or_else(|| "".into(), |id| id.as_uri().into()),
        if peer.is_some() { "true" } else { "false" },
    );
    let ctx = Arc::new(ConnContext {
        shared,
        listener,
        call,
        active: active.clone(),
        peer: peer
            .as_ref()
            .and_then(|id| HeaderValue::from_str(id.as_uri()).ok()),
        identity: peer,
        local_port,
    });
    let heads = match version {
        Version::Http1 => Heads::Http1 {
            active: active.clone(),
        },
        Version::Http2 => Heads::Http2(FrameScanner::default()),
    };
    // Closed lingering, so an error answered last reaches the client (`linger`).
    let io = crate::linger::Lingering::new(io);
    let io = TrackedIo::new(HeadIo::new(io, clock.clone(), heads), activity.clone());
    let mut drain = drain;

    match version {
        Version::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .keep_alive(true)
                // The head clock above times heads, from the accept for the first;
                // hyper's own would also close idle keep-alive connections.
                .header_read_timeout(None)
                // hyper's smallest allowed buffer; the head limit below is what counts.
                .max_buf_size(max_header_bytes.max(8192))
                .max_header_size(max_header_bytes);
            let service = {
                let clock = clock.clone();
                // A request's head is complete when hyper hands it over.
                service_fn(move |req| {
                    clock.finish();
                    forward::handle(req, ctx.clone())
                })
            };
            let mut next = Some((PrefixedIo::new(Bytes::new(), io), service));
            while let Some((io, service)) = next.take() {
                // Boxed, so a parked connection's task holds none of it.
                let mut conn = Box::new(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades(),
                );
                let idle = activity.idle(idle_timeout, || active.load(Ordering::Relaxed) > 0);
                let between_requests = || {
                    active.load(Ordering::Relaxed) == 0
                        && !clock.pending()
                        && !activity.write_blocked()
                };
                let park = activity.idle(PARK_AFTER, || !between_requests());
                let parked = drive!(
                    std::pin::Pin::new(&mut *conn),
                    &mut drain,
                    idle,
                    clock.expired(),
                    park
                );
                if !parked {
                    return;
                }
                // Nothing in flight and nothing unsent: the connection is between
                // requests, and hyper's state can go until the next byte arrives.
                // Unboxed first, so the box's memory goes now, not after the wait.
                let conn = unbox(conn);
                let Some(parts) = conn.into_parts() else {
                    return;
                };
                let (unread, mut io) = parts.io.into_inner().into_parts();
                let mut first = [0u8; 1];
                let read = tokio::select! {
                    read = io.read(&mut first) => read,
                    _ = drain.signaled() => return,
                    _ = activity.idle(idle_timeout, || false) => return,
                };
                if !matches!(read, Ok(1)) {
                    return;
                }
                let mut replay = BytesMut::with_capacity(parts.read_buf.len() + unread.len() + 1);
                replay.extend_from_slice(&parts.read_buf);
                replay.extend_from_slice(&unread);
                replay.extend_from_slice(&first);
                next = Some((PrefixedIo::new(replay.freeze(), io), parts.service));
            }
        }
        Version::Http2 => {
            let service = service_fn(move |req| forward::handle(req, ctx.clone()));
            let idle = activity.idle(idle_timeout, || active.load(Ordering::Relaxed) > 0);
            let mut conn = Box::pin(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                    // Fixed windows, not adaptive ones: see `flow` for why a stream's
                    // window stays small next to the connection's.
                    .initial_stream_window_size(crate::flow::STREAM_WINDOW)
                    .initial_connection_window_size(crate::flow::CONNECTION_WINDOW)
                    .max_concurrent_streams(crate::flow::MAX_CONCURRENT_STREAMS)
                    .serve_connection(TokioIo::new(io), service),
            );
            drive!(
                conn.as_mut(),
                &mut drain,
                idle,
                clock.expired(),
                std::future::pending::<()>()
            );
        }
    }
}

/// The value of a box, the box's memory freed at once: a box moved out of in place is
/// freed only where its variable goes out of scope, after the wait that follows.
#[allow(clippy::boxed_local)]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}
