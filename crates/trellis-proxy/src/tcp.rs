//! Opaque TCP: a client connection joined to a connection to one endpoint of the route's
//! backend (mTLS with ALPN `trellis-tcp` when the endpoint is a proxy of the mesh), bytes
//! copied both ways. When one side finishes sending, the other side's
//! write half is shut down and the opposite direction keeps flowing (half-close).
//!
//! Each relayed connection holds one of its backend's circuit-breaker connections
//! (`maxConnections`, shared with HTTP connections to the same backend) while it is
//! open; a client connection that finds them all taken is closed at once, before any
//! endpoint is dialled, and counted as a `max-connections` rejection.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::balance::InFlight;
use crate::drain;
use crate::endpoint::Opaque;
use crate::io::{Activity, TrackedIo};
use crate::resilience::breaker::Overflow;
use crate::resilience::protection::Rejection;
use crate::state::Listener;
use crate::telemetry::RouteLabels;
use crate::Shared;

/// Forwards one client connection until both directions are done, the connection is
/// idle for the listener's idle timeout, or the drain deadline ends the process. The
/// route is the first that takes `server_name` (a tcp listener's one route takes
/// every connection); `None` when none does and the connection was closed.
pub async fn forward<I>(
    client: I,
    listener: Arc<Listener>,
    server_name: Option<&str>,
    shared: Arc<Shared>,
    _drain: drain::Watch,
) -> Option<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &shared.metrics;
    let route = listener
        .routes
        .iter()
        .find(|r| r.matches_server_name(server_name))?;
    let Some(target) = route.pick_backend() else {
        tracing::warn!(listener = %listener.name, "no backend; closing TCP connection");
        return Some(());
    };
    let labels = &target.labels;
    let backend = &target.backend;
    let breaker = backend.protection.breaker();
    let _connection = match breaker.map(|b| b.try_acquire(Overflow::Connections)) {
        Some(Err(overflow)) => {
            tracing::debug!(listener = %listener.name, backend = %backend.name, "max connections; closing TCP connection");
            let rejection = Rejection::Limit(overflow);
            shared.resilience.record_rejection(&backend.name, rejection);
            return Some(());
        }
        Some(Ok(permit)) => Some(permit),
        None => None,
    };
    let Some(endpoint) = backend.pick_connection(|| shared.tls.spiffe_id()) else {
        tracing::warn!(listener = %listener.name, backend = %target.backend.name, "no endpoints; closing TCP connection");
        metrics.tcp_connect_errors.get_or_create(labels).inc();
        return Some(());
    };
    let _in_flight = InFlight::new(endpoint.clone());
    let identity = match endpoint.identity() {
        Some(_) => shared.tls.identity(),
        None => None,
    };
    let upstream = match endpoint.open_tcp(identity.as_deref()).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(listener = %listener.name, error = %e, "closing TCP connection");
            metrics.tcp_connect_errors.get_or_create(labels).inc();
            return Some(());
        }
    };
    metrics.tcp_connections.get_or_create(labels).inc();
    match upstream {
        Opaque::Plain(upstream) => relay(client, upstream, labels, &listener, &shared).await,
        Opaque::Mtls(upstream) => relay(client, upstream, labels, &listener, &shared).await,
    }
    Some(())
}

/// Copies bytes both ways and records the connection's traffic.
async fn relay<I, U>(
    client: I,
    upstream: U,
    labels: &RouteLabels,
    listener: &Listener,
    shared: &Shared,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &shared.metrics;
    let started = Instant::now();
    let (read, written) = splice(client, upstream, listener).await;
    metrics.tcp_read_bytes.get_or_create(labels).inc_by(read);
    metrics
        .tcp_write_bytes
        .get_or_create(labels)
        .inc_by(written);
    metrics
        .tcp_duration
        .get_or_create(labels)
        .observe(started.elapsed().as_secs_f64());
}

/// Copies bytes both ways, with half-close, until both directions are done or nothing
/// moved for the listener's idle timeout. Returns the bytes read from and written to
/// the client.
pub(crate) async fn splice<I, U>(client: I, upstream: U, listener: &Listener) -> (u64, u64)
where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = TrackedIo::new(client, activity.clone());
    let mut upstream = TrackedIo::new(upstream, activity.clone());
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = res {
                tracing::debug!(listener = %listener.name, error = %e, "TCP connection ended");
            }
        }
        _ = activity.idle(listener.idle_timeout, || false) => {
            tracing::debug!(listener = %listener.name, "closing idle TCP connection");
        }
    }
    (client.bytes_read(), client.bytes_written())
}
