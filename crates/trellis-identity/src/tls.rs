//! rustls configurations for mesh mTLS: TLS 1.3 only, the ring provider, ALPN from
//! the caller, client certificates required, certificates and roots read from a
//! [`CertStore`] at each handshake.
//!
//! Session resumption is off on both sides. A resumed TLS 1.3 session skips
//! certificate verification, so it would let a peer keep using a certificate or a
//! root that has since been replaced; with 24 h certificates a full handshake per
//! connection is the cheaper guarantee.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::error::TlsError;
use crate::spiffe::SpiffeId;
use crate::store::CertStore;
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// Past this many cached client configs the cache starts over; identities in a mesh
/// are far fewer, so this only bounds memory against a misbehaving caller.
const MAX_CACHED_CONFIGS: usize = 4096;

/// The one crypto provider of the tree (ring), built once.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A server config presenting the store's current certificate and requiring a
/// client certificate that chains to the store's current bundle.
///
/// `alpn` lists the protocols offered, most preferred first (for example `h2`,
/// `http/1.1` and the name the proxy gives opaque TCP).
pub fn server_config(
    store: &Arc<CertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(store.clone())))
        .with_cert_resolver(store.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client config presenting the store's current certificate and accepting only a
/// server that proves `expected`. Prefer [`ClientConfigs`], which builds each of
/// these once.
pub fn client_config(
    store: &Arc<CertStore>,
    alpn: &[&[u8]],
    expected: &SpiffeId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = base_client_config(store, alpn)?;
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            store.clone(),
            expected.clone(),
        )));
    Ok(Arc::new(config))
}

/// Client configs per expected server identity, built on first use and kept.
///
/// # Why the expected identity lives in the config
///
/// A rustls `ServerCertVerifier` sees only the certificates and the `ServerName`. The
/// identity a caller expects could be smuggled through the `ServerName` as an
/// encoded DNS name, but SPIFFE IDs do not fit DNS syntax without an escaping scheme,
/// the name would also go out in clear as SNI, and rustls keys its session cache by
/// that name. Binding the expected identity into the verifier of a config of its own
/// keeps the check typed and explicit; the configs cost one clone each and are cached
/// here, and since certificates and roots are read from the shared [`CertStore`],
/// a cached config never goes stale.
///
/// The `ServerName` given to the connector is not checked; pass the endpoint's IP
/// address, which also keeps rustls from sending SNI.
///
/// All configs of one `ClientConfigs` offer the same ALPN list; a proxy that speaks
/// HTTP and opaque TCP to the mesh keeps one `ClientConfigs` per list.
pub struct ClientConfigs {
    store: Arc<CertStore>,
    base: ClientConfig,
    cache: Mutex<HashMap<SpiffeId, Arc<ClientConfig>>>,
}

// === impl ClientConfigs ===

impl ClientConfigs {
    /// Configs presenting `store`'s certificate and offering `alpn`.
    pub fn new(store: Arc<CertStore>, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let base = base_client_config(&store, alpn)?;
        Ok(Self {
            store,
            base,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The config that accepts only a server proving `expected`.
    pub fn for_peer(&self, expected: &SpiffeId) -> Arc<ClientConfig> {
        // A poisoned lock only means another thread panicked while inserting; the
        // map is still a valid cache.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = cache.get(expected) {
            return config.clone();
        }
        if cache.len() >= MAX_CACHED_CONFIGS {
            cache.clear();
        }
        let mut config = self.base.clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
                self.store.clone(),
                expected.clone(),
            )));
        let config = Arc::new(config);
        cache.insert(expected.clone(), config.clone());
        config
    }

    /// Number of identities with a cached config.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl fmt::Debug for ClientConfigs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfigs")
            .field("alpn", &self.base.alpn_protocols)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

/// A client config whose verifier refuses every server: the per-identity verifier
/// replaces it. Starting from a refusing verifier means a config that somehow missed
/// that step fails closed.
fn base_client_config(store: &Arc<CertStore>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::verify::RefuseAll))
        .with_client_cert_resolver(store.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::csr::WorkloadKey;
    use crate::store::Credentials;

    fn store() -> Arc<CertStore> {
        let ca = CertificateAuthority::generate_root("trellis.local", Duration::from_secs(3600))
            .expect("root");
        let id = SpiffeId::in_default_domain("shop", "cart").expect("id");
        let key = WorkloadKey::generate().expect("key");
        let issued = ca
            .sign_csr(&key.csr(&id).expect("csr"), &id, Duration::from_secs(60))
            .expect("signed");
        CertStore::new(
            Credentials::new(&key, &issued.chain_pem).expect("creds"),
            ca.trust_bundle(),
        )
    }

    #[test]
    fn configs_are_tls13_only_with_alpn() {
        let store = store();
        let server = server_config(&store, &[b"h2", b"http/1.1"]).expect("server config");
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(server.send_tls13_tickets, 0);
        assert!(server
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13));

        let id = SpiffeId::in_default_domain("shop", "db").expect("id");
        let client = client_config(&store, &[b"trellis-tcp"], &id).expect("client config");
        assert_eq!(client.alpn_protocols, vec![b"trellis-tcp".to_vec()]);
    }

    #[test]
    fn client_configs_are_cached_per_identity() {
        let configs = ClientConfigs::new(store(), &[b"h2"]).expect("configs");
        let a = SpiffeId::in_default_domain("shop", "a").expect("id");
        let b = SpiffeId::in_default_domain("shop", "b").expect("id");
        let a1 = configs.for_peer(&a);
        let a2 = configs.for_peer(&a);
        let b1 = configs.for_peer(&b);
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert_eq!(configs.cached(), 2);
        assert!(format!("{configs:?}").contains("cached: 2"));
    }
}
