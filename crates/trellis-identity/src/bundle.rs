//! The trust bundle: the root certificates a workload accepts peers from.
//!
//! During trust-anchor rotation the bundle holds the old and the new root at once,
//! so certificates from either verify; once every workload has a leaf from the new
//! root, the old one is removed and its certificates stop verifying.

use std::fmt;

use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::error::PemError;
use crate::x509::{self, CertInfo};

/// A set of trusted root certificates, each parsed once into a webpki trust anchor.
///
/// Roots are kept in the order given, without duplicates (by fingerprint).
#[derive(Clone, Default)]
pub struct TrustBundle {
    roots: Vec<Root>,
    /// The same roots in the form webpki wants, kept ready so a handshake does not
    /// re-parse them.
    anchors: Vec<TrustAnchor<'static>>,
}

#[derive(Clone)]
struct Root {
    der: CertificateDer<'static>,
    info: CertInfo,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// Builds a bundle from DER certificates. Each must parse and be a CA certificate.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self, PemError> {
        let mut bundle = Self::default();
        for (index, der) in roots.into_iter().enumerate() {
            bundle.insert(index, der)?;
        }
        Ok(bundle)
    }

    /// Reads a bundle from concatenated PEM `CERTIFICATE` blocks.
    pub fn from_pem(pem: &str) -> Result<Self, PemError> {
        Self::new(x509::certs_from_pem(pem)?)
    }

    /// The bundle as concatenated PEM blocks, in order.
    pub fn to_pem(&self) -> String {
        x509::certs_to_pem(self.roots.iter().map(|r| &r.der))
    }

    /// Facts about each root, for status pages and "seconds until expiry" metrics.
    pub fn roots(&self) -> impl ExactSizeIterator<Item = &CertInfo> + '_ {
        self.roots.iter().map(|r| &r.info)
    }

    /// The DER certificates, in order.
    pub fn certificates(&self) -> impl ExactSizeIterator<Item = &CertificateDer<'static>> + '_ {
        self.roots.iter().map(|r| &r.der)
    }

    /// Number of roots.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether the bundle trusts nothing.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Whether a root with this SHA-256 fingerprint (lowercase hex) is present.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.roots.iter().any(|r| r.info.fingerprint == fingerprint)
    }

    /// Adds the roots of `other` that are not present yet: the start of a rotation
    /// overlap.
    pub fn merge(&mut self, other: &TrustBundle) {
        for root in &other.roots {
            if !self.contains(&root.info.fingerprint) {
                self.roots.push(root.clone());
            }
        }
        self.rebuild_anchors();
    }

    /// Removes the root with this fingerprint, returning whether it was present: the
    /// end of a rotation overlap.
    pub fn remove(&mut self, fingerprint: &str) -> bool {
        let before = self.roots.len();
        self.roots.retain(|r| r.info.fingerprint != fingerprint);
        self.rebuild_anchors();
        self.roots.len() != before
    }

    /// Keeps only the roots `keep` accepts, e.g. those not yet expired.
    pub fn retain(&mut self, mut keep: impl FnMut(&CertInfo) -> bool) {
        self.roots.retain(|r| keep(&r.info));
        self.rebuild_anchors();
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    fn insert(&mut self, index: usize, der: CertificateDer<'static>) -> Result<(), PemError> {
        let info = CertInfo::from_der(&der).map_err(|e| match e {
            PemError::BadCertificate { reason, .. } => PemError::BadCertificate { index, reason },
            other => other,
        })?;
        if !info.is_ca {
            return Err(PemError::NotCa {
                index,
                subject: info.subject,
            });
        }
        if self.contains(&info.fingerprint) {
            return Ok(());
        }
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| PemError::BadCertificate {
                index,
                reason: e.to_string(),
            })?
            .to_owned();
        self.anchors.push(anchor);
        self.roots.push(Root { der, info });
        Ok(())
    }

    fn rebuild_anchors(&mut self) {
        // Every root parsed as an anchor when it was inserted, so this cannot drop
        // one; filter_map only avoids a panic path.
        self.anchors = self
            .roots
            .iter()
            .filter_map(|r| webpki::anchor_from_trusted_cert(&r.der).ok())
            .map(|a| a.to_owned())
            .collect();
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.roots
                    .iter()
                    .map(|r| (&r.info.subject, &r.info.fingerprint)),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::CertificateAuthority;

    fn root(td: &str) -> CertificateAuthority {
        CertificateAuthority::generate_root(td, Duration::from_secs(3600)).expect("root")
    }

    #[test]
    fn pem_round_trip_keeps_order_and_drops_duplicates() {
        let a = root("a.local").trust_bundle();
        let b = root("b.local").trust_bundle();
        let pem = format!("{}{}{}", a.to_pem(), b.to_pem(), a.to_pem());
        let bundle = TrustBundle::from_pem(&pem).expect("parses");
        assert_eq!(bundle.len(), 2);
        let subjects: Vec<_> = bundle.roots().map(|r| r.subject.clone()).collect();
        assert!(subjects[0].contains("a.local"), "{subjects:?}");
        assert!(subjects[1].contains("b.local"), "{subjects:?}");
        assert_eq!(
            TrustBundle::from_pem(&bundle.to_pem())
                .expect("parses")
                .len(),
            2
        );
        assert_eq!(bundle.anchors().len(), 2);
    }

    #[test]
    fn merge_and_remove() {
        let old = root("trellis.local").trust_bundle();
        let new = root("trellis.local").trust_bundle();
        let mut bundle = old.clone();
        bundle.merge(&new);
        bundle.merge(&new);
        assert_eq!(bundle.len(), 2);
        let old_fp = old.roots().next().expect("one root").fingerprint.clone();
        assert!(bundle.contains(&old_fp));
        assert!(bundle.remove(&old_fp));
        assert!(!bundle.remove(&old_fp));
        assert_eq!(bundle.len(), 1);
        assert_eq!(bundle.anchors().len(), 1);
        bundle.retain(|_| false);
        assert!(bundle.is_empty());
        assert!(bundle.anchors().is_empty());
    }

    #[test]
    fn root_facts() {
        let bundle = root("trellis.local").trust_bundle();
        let info = bundle.roots().next().expect("one root");
        assert!(info.is_ca);
        assert_eq!(info.fingerprint.len(), 64);
        assert!(
            info.subject.contains("Trellis root CA trellis.local"),
            "{}",
            info.subject
        );
        let left = info.seconds_until_expiry(info.not_after - Duration::from_secs(90));
        assert_eq!(left, 90.0);
        let past = info.seconds_until_expiry(info.not_after + Duration::from_secs(5));
        assert_eq!(past, -5.0);
    }

    #[test]
    fn refuses_leaf_certificates_and_garbage() {
        let ca = root("trellis.local");
        let key = crate::csr::WorkloadKey::generate().expect("key");
        let id = crate::SpiffeId::in_default_domain("a", "b").expect("id");
        let leaf = ca
            .sign_csr(&key.csr(&id).expect("csr"), &id, Duration::from_secs(60))
            .expect("signed");
        assert!(matches!(
            TrustBundle::from_pem(&leaf.cert_pem),
            Err(PemError::NotCa { index: 0, .. })
        ));
        assert!(matches!(
            TrustBundle::from_pem("nothing"),
            Err(PemError::NoCertificate)
        ));
    }
}
