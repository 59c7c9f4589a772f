//! Outbound mutual TLS: the client side of a handshake with an endpoint that must prove
//! a given SPIFFE ID.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trellis_identity::rustls::pki_types::ServerName;
use trellis_identity::SpiffeId;

use super::metrics::Direction;
use super::{Alpn, HandshakeReason, Identity};
use crate::io::PrefixedIo;

/// An established mTLS connection to an endpoint. For HTTP/2 the server's first bytes
/// (its SETTINGS frame) have been read already and are replayed.
pub type MtlsStream = PrefixedIo<TlsStream<TcpStream>>;

/// Why an outbound handshake failed.
#[derive(Debug)]
pub(crate) struct ConnectError {
    pub reason: HandshakeReason,
    pub error: io::Error,
}

/// Runs the client side of an mTLS handshake on `tcp` until `deadline`, offering
/// `alpn` and accepting only a server that proves `peer`. `server_name` is the
/// endpoint's IP address: it is not checked (the SPIFFE ID is) and sends no SNI.
///
/// In TLS 1.3 the client finishes its handshake before the server has checked the
/// client's certificate, so a server refusing that certificate is only heard from on
/// the first read. HTTP/2 servers speak first, so for `Alpn::H2` that read happens
/// here: a refusal then counts as a failed handshake with its reason, instead of
/// surfacing as a broken first request. Opaque TCP and HTTP/1.1 servers may stay
/// silent, so for those a refusal shows only when the connection is used.
pub(crate) async fn connect(
    tcp: TcpStream,
    identity: &Identity,
    peer: &SpiffeId,
    server_name: ServerName<'static>,
    alpn: Alpn,
    deadline: Instant,
) -> Result<MtlsStream, ConnectError> {
    let result = handshake(tcp, identity, peer, server_name, alpn, deadline).await;
    let metrics = identity.metrics();
    match &result {
        Ok(_) => metrics.handshake(Direction::Outbound, Ok(())),
        Err(e) => {
            metrics.handshake(Direction::Outbound, Err(e.reason));
            tracing::debug!(%peer, reason = %e.reason, error = %e.error, "mTLS handshake with endpoint failed");
            if let Some(held) = identity.warn().allow() {
                tracing::warn!(
                    %peer,
                    reason = %e.reason,
                    error = %e.error,
                    failed_since_last_warning = held,
                    "mTLS handshakes with endpoints failing (see trellis_tls_handshakes_total)"
                );
            }
        }
    }
    result
}

async fn handshake(
    tcp: TcpStream,
    identity: &Identity,
    peer: &SpiffeId,
    server_name: ServerName<'static>,
    alpn: Alpn,
    deadline: Instant,
) -> Result<MtlsStream, ConnectError> {
    let connector = TlsConnector::from(identity.client_config(alpn, peer));
    let mut stream =
        match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await {
            Err(_elapsed) => return Err(timed_out()),
            Ok(Err(error)) => {
                return Err(ConnectError {
                    reason: HandshakeReason::of(&error),
                    error,
                })
            }
            Ok(Ok(stream)) => stream,
        };
    if alpn != Alpn::H2 {
        return Ok(PrefixedIo::new(Default::default(), stream));
    }
    let mut first = BytesMut::with_capacity(512);
    match tokio::time::timeout_at(deadline, stream.read_buf(&mut first)).await {
        Err(_elapsed) => Err(timed_out()),
        Ok(Err(error)) => Err(ConnectError {
            reason: HandshakeReason::of(&error),
            error,
        }),
        Ok(Ok(0)) => Err(ConnectError {
            reason: HandshakeReason::Other,
            error: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the endpoint closed the connection right after the handshake",
            ),
        }),
        Ok(Ok(_)) => Ok(PrefixedIo::new(first.freeze(), stream)),
    }
}

fn timed_out() -> ConnectError {
    ConnectError {
        reason: HandshakeReason::Timeout,
        error: io::Error::new(
            io::ErrorKind::TimedOut,
            "no complete mTLS handshake in time",
        ),
    }
}
