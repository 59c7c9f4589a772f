//! Mutual TLS between proxies of the mesh: the workload identity the proxy holds, the
//! ALPN names of what an mTLS connection carries, and why handshakes fail.
//!
//! Nothing here builds a rustls config per connection. `Identity::new` builds the
//! server config and the client configs once, when the workload's first certificate is
//! installed; they read the certificate and the trust bundle from the shared
//! [`CertStore`] at every handshake, so renewals and trust-bundle rotations apply to the
//! next handshake without rebuilding anything.
//!
//! `accept` is the inbound side (terminating mTLS on a listener), `connect` the outbound
//! side (mTLS to an endpoint that has an identity).

pub mod accept;
pub mod connect;
pub mod metrics;

use std::fmt;
use std::io;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio_rustls::TlsAcceptor;
use trellis_identity::rustls::{self, CertificateError, ClientConfig, OtherError};
use trellis_identity::{
    server_config, CertStore, ClientConfigs, Credentials, PeerIdentityError, SpiffeId, TlsError,
    TrustBundle,
};

use self::metrics::TlsMetrics;
use crate::telemetry::WarnLimiter;

/// ALPN name of HTTP/2 over mTLS: every HTTP request between proxies, whatever the
/// backend's own protocol, so one multiplexed connection per endpoint carries them all.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1 over mTLS: only for requests that upgrade the connection
/// (WebSocket), which HTTP/2 cannot carry.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN name of opaque TCP over mTLS: the bytes of one client connection, relayed to
/// the route of the listener that accepts it.
pub const ALPN_TCP: &[u8] = b"trellis-tcp";

/// Header carrying the SPIFFE ID of the proxy a request came from over mTLS. Set only by
/// the proxy that terminated the mTLS connection; removed from every other request.
pub const PEER_IDENTITY_HEADER: &str = "x-trellis-peer-identity";

/// What an outbound mTLS connection carries, which decides its ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http1,
    Tcp,
}

/// The workload identity of a proxy: its certificate store and the TLS configs built
/// from it.
pub struct Identity {
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    h2: ClientConfigs,
    http1: ClientConfigs,
    tcp: ClientConfigs,
    metrics: TlsMetrics,
    warn: WarnLimiter,
}

// === impl Identity ===

impl Identity {
    /// Builds the server config and one set of client configs per ALPN over `store`.
    pub(crate) fn new(store: Arc<CertStore>, metrics: TlsMetrics) -> Result<Self, TlsError> {
        let server = server_config(&store, &[ALPN_H2, ALPN_HTTP1, ALPN_TCP])?;
        Ok(Self {
            acceptor: TlsAcceptor::from(server),
            h2: ClientConfigs::new(store.clone(), &[ALPN_H2])?,
            http1: ClientConfigs::new(store.clone(), &[ALPN_HTTP1])?,
            tcp: ClientConfigs::new(store.clone(), &[ALPN_TCP])?,
            store,
            metrics,
            warn: WarnLimiter::new(),
        })
    }

    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// The SPIFFE ID of the current certificate.
    pub fn id(&self) -> SpiffeId {
        self.store.identity()
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    pub(crate) fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    pub(crate) fn warn(&self) -> &WarnLimiter {
        &self.warn
    }

    /// The client config that offers `alpn` and accepts only a server proving `peer`;
    /// cached per identity, so this allocates only the first time.
    pub(crate) fn client_config(&self, alpn: Alpn, peer: &SpiffeId) -> Arc<ClientConfig> {
        match alpn {
            Alpn::H2 => self.h2.for_peer(peer),
            Alpn::Http1 => self.http1.for_peer(peer),
            Alpn::Tcp => self.tcp.for_peer(peer),
        }
    }

    /// The credentials and trust bundle in force now.
    pub(crate) fn generation(&self) -> Generation {
        Generation {
            credentials: self.store.credentials(),
            bundle: self.store.trust_bundle(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The credentials and trust bundle a connection was made with. A shared HTTP/2
/// connection is only reused while its generation is the store's current one: after a
/// renewal or a bundle rotation the next request opens a connection that proves the new
/// certificate and was verified against the new roots, and the old one closes once its
/// requests finish. Holding the `Arc`s (rather than comparing addresses of values that
/// may have been freed) makes the comparison exact.
#[derive(Clone)]
pub(crate) struct Generation {
    credentials: Arc<Credentials>,
    bundle: Arc<TrustBundle>,
}

impl PartialEq for Generation {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.credentials, &other.credentials)
            && Arc::ptr_eq(&self.bundle, &other.bundle)
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("serial", &self.credentials.leaf().serial)
            .field("roots", &self.bundle.len())
            .finish()
    }
}

/// The TLS side of a running proxy: its identity once one is installed.
#[derive(Debug, Default)]
pub struct TlsState {
    identity: IdentitySlot,
    /// Plaintext refused by strict listeners, logged at most once per interval.
    pub(crate) plaintext_warn: WarnLimiter,
    /// Inbound handshake failures, logged at most once per interval.
    pub(crate) handshake_warn: WarnLimiter,
}

// === impl TlsState ===

impl TlsState {
    /// The proxy's identity, if it has one yet.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.get()
    }

    /// The proxy's SPIFFE ID as text, if it has an identity yet: the key of a backend
    /// that hashes on the source identity, for this proxy's own application.
    pub fn spiffe_id(&self) -> Option<String> {
        self.identity().map(|id| id.id().to_string())
    }

    pub(crate) fn install(&self, identity: Identity) {
        self.identity.0.store(Some(Arc::new(identity)));
    }

    /// A handle that reads the identity as it is whenever asked, for work that outlives
    /// a request (health probes).
    pub fn slot(&self) -> IdentitySlot {
        self.identity.clone()
    }
}

/// Where the proxy's identity is, shared: it is installed and renewed after the
/// configuration that needs it was built.
#[derive(Clone, Default)]
pub struct IdentitySlot(Arc<ArcSwapOption<Identity>>);

impl IdentitySlot {
    /// The identity now, if the proxy has one yet.
    pub fn get(&self) -> Option<Arc<Identity>> {
        self.0.load_full()
    }
}

impl fmt::Debug for IdentitySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentitySlot")
            .field(&self.get().map(|i| i.id()))
            .finish()
    }
}

/// Why a TLS handshake failed: a closed set, used as the `reason` label of
/// `trellis_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeReason {
    /// The peer's certificate does not chain to the trust bundle, or is not a valid
    /// SPIFFE workload certificate.
    Untrusted,
    /// The peer's certificate is expired or not valid yet.
    Expired,
    /// The server proved another identity than the endpoint's.
    IdentityMismatch,
    /// The client sent no certificate.
    NoCertificate,
    /// The peer refused the handshake with an alert, usually about this proxy's
    /// certificate.
    PeerRefused,
    /// Not TLS 1.3 as the mesh speaks it: malformed messages, no common ALPN or cipher.
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
    /// This proxy has no certificate yet.
    NoIdentity,
    /// Anything else, such as the connection closing mid-handshake.
    Other,
}

// === impl HandshakeReason ===

impl HandshakeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeReason::Untrusted => "untrusted",
            HandshakeReason::Expired => "expired",
            HandshakeReason::IdentityMismatch => "identity_mismatch",
            HandshakeReason::NoCertificate => "no_certificate",
            HandshakeReason::PeerRefused => "peer_refused",
            HandshakeReason::Protocol => "protocol",
            HandshakeReason::Timeout => "timeout",
            HandshakeReason::NoIdentity => "no_identity",
            HandshakeReason::Other => "other",
        }
    }

    /// Classifies the error a tokio-rustls handshake (or the first read after it)
    /// returned.
    pub fn of(error: &io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::of_tls(tls),
            None if error.kind() == io::ErrorKind::TimedOut => HandshakeReason::Timeout,
            None => HandshakeReason::Other,
        }
    }

    fn of_tls(error: &rustls::Error) -> Self {
        use rustls::Error as E;
        match error {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => HandshakeReason::Expired,
                CertificateError::Other(OtherError(inner))
                    if matches!(
                        inner.downcast_ref::<PeerIdentityError>(),
                        Some(PeerIdentityError::Mismatch { .. })
                    ) =>
                {
                    HandshakeReason::IdentityMismatch
                }
                _ => HandshakeReason::Untrusted,
            },
            E::NoCertificatesPresented => HandshakeReason::NoCertificate,
            E::AlertReceived(_) => HandshakeReason::PeerRefused,
            E::NoApplicationProtocol
            | E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerIncompatible(_)
            | E::PeerMisbehaved(_)
            | E::PeerSentOversizedRecord
            | E::DecryptError => HandshakeReason::Protocol,
            _ => HandshakeReason::Other,
        }
    }
}

impl fmt::Display for HandshakeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn handshake_errors_are_classified() {
        let id = |sa: &str| SpiffeId::in_default_domain("shop", sa).expect("id");
        let mismatch = PeerIdentityError::Mismatch {
            expected: id("a"),
            presented: id("b"),
        };
        let cases: Vec<(rustls::Error, HandshakeReason)> = vec![
            (
                CertificateError::UnknownIssuer.into(),
                HandshakeReason::Untrusted,
            ),
            (
                CertificateError::BadSignature.into(),
                HandshakeReason::Untrusted,
            ),
            (CertificateError::Expired.into(), HandshakeReason::Expired),
            (
                CertificateError::Other(OtherError(Arc::new(mismatch))).into(),
                HandshakeReason::IdentityMismatch,
            ),
            (
                CertificateError::Other(OtherError(Arc::new(PeerIdentityError::Missing))).into(),
                HandshakeReason::Untrusted,
            ),
            (
                rustls::Error::NoCertificatesPresented,
                HandshakeReason::NoCertificate,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                HandshakeReason::PeerRefused,
            ),
            (
                rustls::Error::NoApplicationProtocol,
                HandshakeReason::Protocol,
            ),
            (rustls::Error::General("x".into()), HandshakeReason::Other),
        ];
        for (error, want) in cases {
            let io = io::Error::new(io::ErrorKind::InvalidData, error);
            assert_eq!(HandshakeReason::of(&io), want, "{io}");
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(HandshakeReason::of(&eof), HandshakeReason::Other);
    }
}
