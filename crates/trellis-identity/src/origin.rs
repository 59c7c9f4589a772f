//! TLS a proxy opens to a server outside the mesh (egress TLS origination): the
//! server proves a DNS name with a certificate chaining to roots given by the operator
//! (or the host's CA store), the way any HTTPS client checks a server. Nothing of the
//! mesh's identity is presented: the server is not part of the mesh.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::TlsError;
use crate::tls::provider;

/// Why roots for origination could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    #[error("the CA certificates do not decode as PEM: {0}")]
    Pem(String),
    #[error("no usable CA certificate in the PEM ({ignored} could not be used)")]
    NoRoots { ignored: usize },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A client config for TLS 1.2 or 1.3 to a server outside the mesh, trusting the
/// certificates of `roots_pem` and offering `alpn`. Certificates rustls cannot use as
/// trust anchors are skipped (a host's CA store holds a few), as long as one is left.
pub fn origination_client_config(
    roots_pem: &str,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, OriginationError> {
    let certs = CertificateDer::pem_slice_iter(roots_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OriginationError::Pem(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(OriginationError::NoRoots { ignored });
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;

    #[test]
    fn roots_must_hold_a_certificate() {
        assert!(matches!(
            origination_client_config("", &[]),
            Err(OriginationError::NoRoots { ignored: 0 })
        ));
        let ca = CertificateAuthority::generate_root(
            "trellis.local",
            std::time::Duration::from_secs(3600),
        )
        .expect("a CA");
        let config = origination_client_config(&ca.trust_bundle().to_pem(), &[b"http/1.1"])
            .expect("a config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
