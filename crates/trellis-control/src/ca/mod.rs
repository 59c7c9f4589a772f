//! The mesh's certificate authority: signs the CSRs proxies send over their session
//! for the identity their token is bound to, issues bootstrap tokens, and rotates the
//! trust anchors.
//!
//! The signing CA is a root generated on first start and kept in the store (`/ca/…`,
//! [`storage`]), or an intermediate the operator gives (`--ca-cert`, `--ca-key`),
//! chained to the organisation's root, which is then the trust anchor. Proxies follow
//! [`MeshCa::subscribe`]: a new trust bundle is pushed to every proxy, and a new signer
//! makes every session re-sign its proxy's last CSR (the key never leaves the proxy;
//! the CSR is public), so rotation needs nothing from the proxies but to apply what
//! they receive.

mod follow;
mod rotate;
mod storage;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use trellis_identity::token::{self, Claims, TokenKey};
use trellis_identity::{CaPem, CertificateAuthority, CsrError, IssuedCert, SpiffeId, TrustBundle};

use crate::secrets::Secrets;
use crate::store::{Store, StoreError};

pub use self::rotate::RotationStatus;

/// How the CA runs.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The SPIFFE trust domain of the identities issued.
    pub trust_domain: String,
    /// Lifetime of workload certificates. Default 24 h.
    pub workload_validity: Duration,
    /// Lifetime of a root generated here. Default 10 years.
    pub root_validity: Duration,
    /// An operator-given signing CA (PEM chain ending with the root, and its key),
    /// instead of a root kept in the store.
    pub operator: Option<CaPem>,
    /// The operator's key that seals the CA's secrets in the store
    /// (`--ca-encryption-key`); plaintext without one.
    pub encryption_key: Option<Arc<trellis_identity::SealingKey>>,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self::new(trellis_identity::DEFAULT_TRUST_DOMAIN)
    }
}

impl CaSettings {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            workload_validity: Duration::from_secs(24 * 3600),
            root_validity: Duration::from_secs(10 * 365 * 24 * 3600),
            operator: None,
            encryption_key: None,
        }
    }
}

/// Why the CA could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the CA kept in the store is unusable: {0}")]
    Stored(String),
    #[error("the operator's CA: {0}")]
    Operator(#[source] trellis_identity::CaError),
    #[error("cannot create the CA: {0}")]
    Create(String),
    #[error("{0}")]
    Rotation(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
}

/// What proxies must hold: the trust bundle, and which signer issues certificates.
#[derive(Debug, Clone)]
pub struct CaVersion {
    /// Roots to trust, PEM.
    pub bundle_pem: Arc<str>,
    /// Grows each time the signer changes; sessions then re-sign their proxy's CSR.
    pub signer_generation: u64,
}

struct Current {
    signer: Arc<CertificateAuthority>,
    bundle: TrustBundle,
}

/// The mesh CA. Cheap to share (`Arc<MeshCa>`).
pub struct MeshCa {
    settings: CaSettings,
    store: Arc<dyn Store>,
    secrets: Secrets,
    current: ArcSwap<Current>,
    token_key: TokenKey,
    version: watch::Sender<CaVersion>,
    rotation: rotate::Rotation,
}

impl MeshCa {
    /// Loads the CA from the store (or the operator's), creating a root and a token
    /// key on first start.
    pub async fn start(store: Arc<dyn Store>, settings: CaSettings) -> Result<Self, CaError> {
        let secrets = Secrets::new(store.clone(), settings.encryption_key.clone());
        let sealed = secrets.seal_at_rest(&storage::SECRETS).await?;
        if sealed > 0 {
            tracing::info!(sealed, "encrypted the CA's secrets in the store");
        }
        let (signer, bundle) = match &settings.operator {
            Some(pem) => {
                let signer = CertificateAuthority::from_pem(&pem.cert_chain, &pem.key)
                    .map_err(CaError::Operator)?;
                // Roots still being retired by a rotation stay trusted.
                let mut bundle = signer.trust_bundle();
                if let Some(stored) = storage::load_bundle(store.as_ref()).await? {
                    bundle.merge(&stored);
                }
                (signer, bundle)
            }
            None => storage::load_or_create(store.as_ref(), &secrets, &settings).await?,
        };
        let token_key = storage::load_or_create_token_key(&secrets).await?;
        let rotation = storage::load_rotation(&secrets).await?;
        let ca = Self::assemble(store, secrets, settings, signer, bundle, token_key);
        if let Some((rotation, _)) = rotation {
            ca.rotation.show(&rotation);
        }
        Ok(ca)
    }

    /// A CA with a new root and token key that are not written to `store` (rotation
    /// writes there): for tests and throwaway meshes.
    pub fn ephemeral(store: Arc<dyn Store>, settings: CaSettings) -> Result<Self, CaError> {
        let signer =
            CertificateAuthority::generate_root(&settings.trust_domain, settings.root_validity)
                .map_err(|e| CaError::Create(e.to_string()))?;
        let bundle = signer.trust_bundle();
        let token_key = TokenKey::generate().map_err(|e| CaError::Create(e.to_string()))?;
        let secrets = Secrets::new(store.clone(), settings.encryption_key.clone());
        Ok(Self::assemble(
            store, secrets, settings, signer, bundle, token_key,
        ))
    }

    fn assemble(
        store: Arc<dyn Store>,
        secrets: Secrets,
        settings: CaSettings,
        signer: CertificateAuthority,
        bundle: TrustBundle,
        token_key: TokenKey,
    ) -> Self {
        let version = watch::Sender::new(CaVersion {
            bundle_pem: bundle.to_pem().into(),
            signer_generation: 1,
        });
        tracing::info!(
            signer = %signer.certificate().subject,
            roots = bundle.len(),
            "certificate authority ready"
        );
        Self {
            secrets,
            settings,
            store,
            current: ArcSwap::from_pointee(Current {
                signer: Arc::new(signer),
                bundle,
            }),
            token_key,
            version,
            rotation: rotate::Rotation::default(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.settings.trust_domain
    }

    /// The identity of a workload in this trust domain.
    pub fn identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, trellis_identity::SpiffeIdError> {
        SpiffeId::new(&self.settings.trust_domain, namespace, service_account)
    }

    /// Follows trust-bundle and signer changes.
    pub fn subscribe(&self) -> watch::Receiver<CaVersion> {
        self.version.subscribe()
    }

    pub fn trust_bundle(&self) -> TrustBundle {
        self.current.load().bundle.clone()
    }

    /// The signing CA's certificate facts.
    pub fn signer(&self) -> trellis_identity::CertInfo {
        self.current.load().signer.certificate().clone()
    }

    /// Signs `csr_pem` for `identity`; refuses a CSR for any other identity.
    pub fn sign(&self, csr_pem: &str, identity: &SpiffeId) -> Result<IssuedCert, CsrError> {
        let current = self.current.load();
        current
            .signer
            .sign_csr(csr_pem, identity, self.settings.workload_validity)
    }

    /// Signs `csr_pem` for a TLS server of the control plane known by DNS names
    /// (the admission webhook): only names in `allowed`, for as long as a workload's
    /// certificate. The current trust bundle verifies it.
    pub fn sign_server(
        &self,
        csr_pem: &str,
        allowed: &[String],
    ) -> Result<trellis_identity::ServerCert, CsrError> {
        self.current.load().signer.sign_server_csr(
            csr_pem,
            allowed,
            self.settings.workload_validity,
        )
    }

    /// A bootstrap token bound to `identity`, valid for `ttl`.
    pub fn issue_token(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<String, trellis_identity::TokenError> {
        token::issue(&self.token_key, identity, ttl)
    }

    /// The claims of a token this CA issued, if it is genuine and not expired.
    pub fn verify_token(&self, token: &str) -> Result<Claims, trellis_identity::TokenError> {
        token::verify(&self.token_key, token, SystemTime::now())
    }

    /// Where a trust-anchor rotation stands.
    pub fn rotation_status(&self) -> RotationStatus {
        self.rotation.status()
    }

    fn publish(&self, signer_changed: bool) {
        let bundle_pem: Arc<str> = self.current.load().bundle.to_pem().into();
        self.version.send_modify(|v| {
            v.bundle_pem = bundle_pem;
            if signer_changed {
                v.signer_generation += 1;
            }
        });
    }
}

#[cfg(test)]
mod tests;
