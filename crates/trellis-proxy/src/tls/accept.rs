//! Inbound mutual TLS on a listener with `mtls: permissive | strict`: terminating a
//! connection that opened with a ClientHello, and deciding what happens to one that
//! opened in plaintext.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use trellis_identity::{peer_identity, SpiffeId};

use super::metrics::Direction;
use super::{HandshakeReason, ALPN_H2, ALPN_HTTP1, ALPN_TCP};
use crate::config::MtlsMode;
use crate::detect::Protocol;
use crate::state::Listener;
use crate::Shared;

/// A connection whose mTLS handshake succeeded.
pub struct Accepted<I> {
    pub stream: TlsStream<I>,
    /// The client proxy's identity, from the certificate it proved.
    pub peer: SpiffeId,
    /// What the client said it will speak (ALPN); `None` when it offered nothing, and
    /// the decrypted stream is then treated like a plaintext one.
    pub protocol: Option<Protocol>,
}

/// Whether a plaintext connection to an mTLS listener may be served: refused (and
/// closed by the caller) when the listener is strict; counted either way.
pub(crate) fn admit_plaintext(listener: &Listener, shared: &Shared) -> bool {
    let refused = listener.mtls == MtlsMode::Strict;
    shared.metrics.tls.plaintext(&listener.name, refused);
    if refused {
        tracing::debug!(listener = %listener.name, "plaintext connection refused: the listener requires mTLS");
        if let Some(held) = shared.tls.plaintext_warn.allow() {
            tracing::warn!(
                listener = %listener.name,
                refused_since_last_warning = held,
                "refusing plaintext connections: the listener requires mTLS (see trellis_tls_plaintext_connections_total)"
            );
        }
    } else {
        tracing::debug!(listener = %listener.name, "plaintext connection on a permissive mTLS listener");
    }
    !refused
}

/// Completes the server side of an mTLS handshake on `io`, whose first bytes were a
/// ClientHello, by `deadline` (the connection's header-read deadline: a handshake is
/// part of what comes before the first request). `None` when it failed; the failure is
/// counted and logged here.
pub(crate) async fn terminate<I>(
    io: I,
    listener: &Listener,
    shared: &Shared,
    deadline: Instant,
) -> Option<Accepted<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Some(identity) = shared.tls.identity() else {
        refused(
            listener,
            shared,
            HandshakeReason::NoIdentity,
            &"this proxy has no workload certificate yet",
        );
        return None;
    };
    let stream = match tokio::time::timeout_at(deadline, identity.acceptor().accept(io)).await {
        Err(_elapsed) => {
            refused(
                listener,
                shared,
                HandshakeReason::Timeout,
                &"no complete handshake in time",
            );
            return None;
        }
        Ok(Err(error)) => {
            refused(listener, shared, HandshakeReason::of(&error), &error);
            return None;
        }
        Ok(Ok(stream)) => stream,
    };
    let conn = stream.get_ref().1;
    // The verifier requires a client certificate naming one SPIFFE ID, so this only
    // fails if that contract is broken; refusing is the safe answer.
    let Some(peer) = peer_identity(conn) else {
        refused(
            listener,
            shared,
            HandshakeReason::NoCertificate,
            &"the client certificate names no SPIFFE ID",
        );
        return None;
    };
    let protocol = match conn.alpn_protocol() {
        Some(ALPN_H2) => Some(Protocol::Http2),
        Some(ALPN_HTTP1) => Some(Protocol::Http1),
        Some(ALPN_TCP) => Some(Protocol::Tcp),
        _ => None,
    };
    shared.metrics.tls.handshake(Direction::Inbound, Ok(()));
    tracing::debug!(listener = %listener.name, %peer, ?protocol, "mTLS connection accepted");
    Some(Accepted {
        stream,
        peer,
        protocol,
    })
}

fn refused(
    listener: &Listener,
    shared: &Shared,
    reason: HandshakeReason,
    error: &dyn std::fmt::Display,
) {
    shared
        .metrics
        .tls
        .handshake(Direction::Inbound, Err(reason));
    tracing::debug!(listener = %listener.name, %reason, %error, "mTLS handshake refused");
    if let Some(held) = shared.tls.handshake_warn.allow() {
        tracing::warn!(
            listener = %listener.name,
            %reason,
            %error,
            failed_since_last_warning = held,
            "mTLS handshakes failing (see trellis_tls_handshakes_total)"
        );
    }
}
