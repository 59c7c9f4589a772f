//! Peer certificate verification for mesh mTLS.
//!
//! Chain building, signatures, validity dates and extended key usage are checked by
//! rustls-webpki against the roots of the current [`TrustBundle`]; on top of that a
//! peer certificate must be a SPIFFE leaf naming exactly one SPIFFE ID. The client
//! side also requires that ID to be the one it meant to reach. DNS names play no
//! part: mesh peers are named by identity, not by host.
//!
//! Both verifiers read the bundle from the shared [`CertStore`] on every handshake,
//! so a rotated bundle applies to the next handshake without rebuilding any config.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, OtherError,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::TrustBundle;
use crate::error::PeerIdentityError;
use crate::spiffe::SpiffeId;
use crate::store::CertStore;
use crate::x509;

/// Handshake signature schemes TLS 1.3 permits (RFC 8446 §4.2.3): no PKCS#1 v1.5
/// and no SHA-1. Intersected with what the ring provider can verify.
const TLS13_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// The purpose a peer certificate must be issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a server: its leaf must allow TLS server authentication.
    Server,
    /// The peer is a client: its leaf must allow TLS client authentication.
    Client,
}

/// Verifies a peer's chain against `bundle` at time `now` and returns the SPIFFE ID
/// its leaf names.
///
/// The leaf must chain to one of the bundle's roots through `intermediates`, be
/// within its validity, carry the extended key usage for `role`, not be a CA (nor
/// allow certificate or CRL signing), and name exactly one SPIFFE ID as its only URI
/// SAN. CA certificates above it may omit the extended key usage; if they have one,
/// it must include the usage for `role`. Errors are rustls errors so they can be
/// returned from a handshake as is.
pub fn verify_peer(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, rustls::Error> {
    verify_with(&algorithms(), bundle, end_entity, intermediates, now, role)
}

fn verify_with(
    algs: &WebPkiSupportedAlgorithms,
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, rustls::Error> {
    let ee = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
    // webpki applies the usage to every certificate of the path, and CA certificates
    // commonly carry no EKU at all, so it is asked for "if present"; the leaf itself
    // must carry it, which is checked below.
    let eku = match role {
        PeerRole::Server => KeyUsage::server_auth(),
        PeerRole::Client => KeyUsage::client_auth(),
    };
    ee.verify_for_usage(
        algs.all,
        bundle.anchors(),
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map_err(pki_error)?;

    let cert = x509::parse(end_entity, 0).map_err(|_| CertificateError::BadEncoding)?;
    let leaf_eku = match cert.extended_key_usage() {
        Ok(Some(eku)) => match role {
            PeerRole::Server => eku.value.server_auth,
            PeerRole::Client => eku.value.client_auth,
        },
        _ => false,
    };
    if !leaf_eku {
        return Err(CertificateError::InvalidPurpose.into());
    }
    // webpki has refused a leaf whose basic constraints say CA; the SPIFFE leaf
    // profile also forbids signing key usages on a certificate used to authenticate.
    if let Ok(Some(ku)) = cert.key_usage() {
        if ku.value.key_cert_sign() || ku.value.crl_sign() {
            return Err(CertificateError::InvalidPurpose.into());
        }
    }
    x509::spiffe_id(&cert).map_err(identity_error)
}

/// The SPIFFE ID of the peer of an established connection (client or server side),
/// read from the certificate the verifiers of this crate accepted. `None` before the
/// handshake completes or when the peer sent no certificate.
pub fn peer_identity(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    x509::spiffe_id_of_der(leaf).ok()
}

/// Client-side verifier: the server must hold a certificate from the bundle naming
/// exactly `expected`.
///
/// One verifier, hence one `ClientConfig`, exists per expected identity; see
/// [`crate::ClientConfigs`] for why the identity is bound here rather than carried in
/// the `ServerName`.
pub struct SpiffeServerVerifier {
    store: Arc<CertStore>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// A verifier reading trust anchors from `store` and accepting only `expected`.
    pub fn new(store: Arc<CertStore>, expected: SpiffeId) -> Self {
        Self {
            store,
            expected,
            algs: algorithms(),
        }
    }

    /// The identity this verifier accepts.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected.to_string())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.store.trust_bundle();
        let presented = verify_with(
            &self.algs,
            &bundle,
            end_entity,
            intermediates,
            now,
            PeerRole::Server,
        )?;
        if presented != self.expected {
            return Err(identity_error(PeerIdentityError::Mismatch {
                expected: self.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls13_schemes(&self.algs)
    }
}

/// Server-side verifier: a client must present a certificate from the bundle
/// naming one SPIFFE ID. Which identities may call which service is decided after
/// the handshake, from [`peer_identity`].
pub struct SpiffeClientVerifier {
    store: Arc<CertStore>,
    algs: WebPkiSupportedAlgorithms,
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// A verifier reading trust anchors from `store`.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self {
            store,
            algs: algorithms(),
        }
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to borrow from the hot-swapped bundle; mesh clients hold
        // one certificate and send it regardless, so none are sent.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.store.trust_bundle();
        verify_with(
            &self.algs,
            &bundle,
            end_entity,
            intermediates,
            now,
            PeerRole::Client,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls13_schemes(&self.algs)
    }
}

/// A server verifier that accepts nothing: the placeholder in a client config until
/// the verifier for an expected identity is set, so a config that missed that step
/// fails closed.
#[derive(Debug)]
pub(crate) struct RefuseAll;

impl ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "no expected peer identity configured".to_owned(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "no expected peer identity configured".to_owned(),
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls13_schemes(&algorithms())
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::tls::provider().signature_verification_algorithms
}

fn tls13_schemes(algs: &WebPkiSupportedAlgorithms) -> Vec<SignatureScheme> {
    algs.supported_schemes()
        .into_iter()
        .filter(|s| TLS13_SCHEMES.contains(s))
        .collect()
}

/// The configs built here enable TLS 1.3 only, so rustls never asks for a TLS 1.2
/// signature; refusing keeps that true if someone changes the versions.
fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted by the Trellis mesh".to_owned())
}

fn identity_error(e: PeerIdentityError) -> rustls::Error {
    CertificateError::Other(OtherError(Arc::new(e))).into()
}

/// Maps a webpki failure to the rustls error that states it best; the date errors
/// keep their context so the message says when the certificate expired.
fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let cert_error = match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::InvalidCertValidity => CertificateError::Expired,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::CertRevoked => CertificateError::Revoked,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        #[allow(deprecated)]
        E::RequiredEkuNotFound => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    cert_error.into()
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
