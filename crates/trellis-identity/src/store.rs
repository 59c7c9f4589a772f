//! The workload's current TLS material, swappable while connections run.
//!
//! [`CertStore`] holds the current [`Credentials`] (certificate chain and key) and the
//! current [`TrustBundle`], each behind an `ArcSwap`. The TLS configs read them at
//! every handshake through the store's certificate resolvers and the verifiers of
//! [`crate::verify`], so a renewed certificate or a rotated bundle is used by the next
//! handshake, while connections already established keep the keys they negotiated.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::bundle::TrustBundle;
use crate::csr::WorkloadKey;
use crate::error::CredentialsError;
use crate::spiffe::SpiffeId;
use crate::x509::{self, CertInfo};

/// A workload certificate chain with its private key, ready for rustls.
#[derive(Clone)]
pub struct Credentials {
    certified: Arc<CertifiedKey>,
    id: SpiffeId,
    leaf: CertInfo,
}

// === impl Credentials ===

impl Credentials {
    /// Pairs `key` with the chain the CA returned for it ([`crate::IssuedCert::chain_pem`]:
    /// leaf first, then intermediates). The leaf must carry `key`'s public key and
    /// exactly one SPIFFE ID.
    pub fn new(key: &WorkloadKey, chain_pem: &str) -> Result<Self, CredentialsError> {
        let chain = x509::certs_from_pem(chain_pem)?;
        let Some(leaf_der) = chain.first() else {
            return Err(crate::error::PemError::NoCertificate.into());
        };
        let leaf = x509::parse(leaf_der, 0)?;
        if leaf.public_key().raw != key.public_key_der().as_slice() {
            return Err(CredentialsError::KeyMismatch(format!(
                "the leaf certificate (serial {:x}) certifies another public key",
                leaf.serial
            )));
        }
        let id = x509::spiffe_id(&leaf)?;
        let info = CertInfo::from_der(leaf_der)?;
        drop(leaf);
        let certified =
            CertifiedKey::from_der(chain, key.private_key_der(), &crate::tls::provider())
                .map_err(|e| CredentialsError::KeyMismatch(e.to_string()))?;
        Ok(Self {
            certified: Arc::new(certified),
            id,
            leaf: info,
        })
    }

    /// The identity the leaf names.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Facts about the leaf (serial, validity, fingerprint).
    pub fn leaf(&self) -> &CertInfo {
        &self.leaf
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.leaf.not_after
    }

    /// The chain and signing key in rustls form.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id.to_string())
            .field("serial", &self.leaf.serial)
            .field("not_after", &self.leaf.not_after)
            .finish_non_exhaustive()
    }
}

/// The current credentials and trust bundle of a workload, shared by every TLS
/// config built from it.
pub struct CertStore {
    credentials: ArcSwap<Credentials>,
    bundle: ArcSwap<TrustBundle>,
}

// === impl CertStore ===

impl CertStore {
    /// A store starting with `credentials` and `bundle`.
    pub fn new(credentials: Credentials, bundle: TrustBundle) -> Arc<Self> {
        Arc::new(Self {
            credentials: ArcSwap::from_pointee(credentials),
            bundle: ArcSwap::from_pointee(bundle),
        })
    }

    /// Replaces the certificate presented from the next handshake on.
    ///
    /// During trust-anchor rotation, install the bundle holding the new root
    /// ([`Self::set_trust_bundle`]) on every workload before handing out leaves from
    /// it, or peers still on the old bundle will refuse them.
    pub fn set_credentials(&self, credentials: Credentials) {
        self.credentials.store(Arc::new(credentials));
    }

    /// Replaces the roots peers are verified against from the next handshake on.
    pub fn set_trust_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Arc::new(bundle));
    }

    /// The current credentials.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// The current trust bundle.
    pub fn trust_bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }

    /// The identity of the current certificate.
    pub fn identity(&self) -> SpiffeId {
        self.credentials.load().id.clone()
    }

    /// End of validity of the current leaf, for "seconds until expiry" metrics and
    /// for scheduling renewal ([`crate::renew_at`]).
    pub fn not_after(&self) -> SystemTime {
        self.credentials.load().leaf.not_after
    }

    /// Each trust anchor with its end of validity, in bundle order.
    pub fn trust_anchors(&self) -> Vec<CertInfo> {
        self.bundle.load().roots().cloned().collect()
    }

    fn current_key(&self) -> Arc<CertifiedKey> {
        self.credentials.load().certified.clone()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("credentials", &*self.credentials.load())
            .field("bundle", &*self.bundle.load())
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A workload has one identity and serves it whatever name the client asked
        // for; the client checks the SPIFFE ID, not a host name.
        Some(self.current_key())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::CertificateAuthority;

    fn issue(ca: &CertificateAuthority, id: &SpiffeId) -> (WorkloadKey, String) {
        let key = WorkloadKey::generate().expect("key");
        let csr = key.csr(id).expect("csr");
        let issued = ca
            .sign_csr(&csr, id, Duration::from_secs(600))
            .expect("signed");
        (key, issued.chain_pem)
    }

    #[test]
    fn credentials_check_the_key() {
        let ca = CertificateAuthority::generate_root("trellis.local", Duration::from_secs(3600))
            .expect("root");
        let id = SpiffeId::in_default_domain("shop", "cart").expect("id");
        let (key, chain) = issue(&ca, &id);
        let creds = Credentials::new(&key, &chain).expect("matching key");
        assert_eq!(creds.id(), &id);
        assert_eq!(creds.certified_key().cert.len(), 1);

        let other = WorkloadKey::generate().expect("key");
        let err = Credentials::new(&other, &chain).expect_err("wrong key");
        assert!(matches!(err, CredentialsError::KeyMismatch(_)), "{err:?}");
        assert!(err.to_string().contains("does not match"), "{err}");

        let err = Credentials::new(&key, "").expect_err("no chain");
        assert!(matches!(err, CredentialsError::Chain(_)), "{err:?}");
    }

    #[test]
    fn store_swaps_and_reports_expiry() {
        let ca = CertificateAuthority::generate_root("trellis.local", Duration::from_secs(3600))
            .expect("root");
        let id = SpiffeId::in_default_domain("shop", "cart").expect("id");
        let (key, chain) = issue(&ca, &id);
        let first = Credentials::new(&key, &chain).expect("creds");
        let first_serial = first.leaf().serial.clone();
        let store = CertStore::new(first, ca.trust_bundle());
        assert_eq!(store.identity(), id);
        assert_eq!(store.trust_anchors().len(), 1);
        assert_eq!(store.not_after(), store.credentials().not_after());

        let (key, chain) = issue(&ca, &id);
        store.set_credentials(Credentials::new(&key, &chain).expect("creds"));
        let resolved = ResolvesClientCert::resolve(&*store, &[], &[]).expect("a key");
        let leaf = CertInfo::from_der(&resolved.cert[0]).expect("parses");
        assert_ne!(leaf.serial, first_serial);
        assert_eq!(leaf.serial, store.credentials().leaf().serial);

        let mut bundle = ca.trust_bundle();
        bundle.merge(
            &CertificateAuthority::generate_root("trellis.local", Duration::from_secs(60))
                .expect("root")
                .trust_bundle(),
        );
        store.set_trust_bundle(bundle);
        assert_eq!(store.trust_anchors().len(), 2);
        assert!(format!("{store:?}").contains("ns/shop/sa/cart"));
    }
}
