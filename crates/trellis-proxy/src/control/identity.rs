//! The proxy's half of workload identity: it makes its key here, sends a CSR for the
//! identity the control plane names in `SessionInfo`, installs the certificate it gets
//! back, follows trust-bundle changes, and renews at about half the certificate's life,
//! with jitter. The key never leaves the process.
//!
//! State outlives sessions: after a reconnect the proxy keeps serving with the
//! credentials it has while it asks for new ones, and registers with the session token
//! of its last certificate, so an expired bootstrap token does not lock it out.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use trellis_api::proto::v1 as wire;
use trellis_identity::{renew_at, CertStore, Credentials, SpiffeId, TrustBundle, WorkloadKey};

use crate::Proxy;

/// How long to wait before asking again after the CA refused a CSR.
const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(30);

/// What the proxy knows of its identity, across sessions.
#[derive(Default)]
pub(super) struct IdentityState {
    store: Option<Arc<CertStore>>,
    /// The key of the last CSR sent: a certificate that comes back is for it (also one
    /// the control plane re-signed during a trust-anchor rotation).
    key: Option<WorkloadKey>,
    identity: Option<SpiffeId>,
    renew_at: Option<Instant>,
    /// Issued with the last certificate; registers the next session.
    session_token: Option<String>,
}

impl IdentityState {
    /// The token to register with: the last session token, else the configured one.
    pub(super) fn token<'a>(&'a self, configured: &'a str) -> &'a str {
        self.session_token.as_deref().unwrap_or(configured)
    }

    /// Forgets the session token, after the control plane refused it.
    pub(super) fn forget_session_token(&mut self) {
        self.session_token = None;
    }

    /// When to send the next CSR, if one is due.
    pub(super) fn renewal(&self) -> Option<Instant> {
        self.renew_at
    }

    /// A CSR from a new key, for the known identity; `None` before `SessionInfo`.
    pub(super) fn request(&mut self) -> Option<wire::proxy_message::Message> {
        let identity = self.identity.clone()?;
        self.renew_at = None;
        let key = match WorkloadKey::generate() {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a workload key");
                self.renew_at = Some(Instant::now() + RETRY_AFTER_REFUSAL);
                return None;
            }
        };
        let csr = match key.csr(&identity) {
            Ok(csr) => csr,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a CSR");
                self.renew_at = Some(Instant::now() + RETRY_AFTER_REFUSAL);
                return None;
            }
        };
        self.key = Some(key);
        Some(wire::proxy_message::Message::CertificateRequest(
            wire::CertificateRequest { csr_pem: csr },
        ))
    }

    /// Handles the identity messages of a session; returns a CSR to send, if any.
    pub(super) fn handle(
        &mut self,
        proxy: &Proxy,
        message: wire::control_message::Message,
    ) -> Option<wire::proxy_message::Message> {
        use wire::control_message::Message;
        match message {
            Message::SessionInfo(info) => match info.identity.parse::<SpiffeId>() {
                Ok(identity) => {
                    self.identity = Some(identity);
                    if !info.trust_bundle_pem.is_empty() {
                        self.trust(&info.trust_bundle_pem);
                    }
                    self.request()
                }
                Err(e) => {
                    tracing::error!(identity = %info.identity, error = %e, "the control plane named an invalid identity");
                    None
                }
            },
            Message::Certificate(certificate) => {
                self.install(proxy, &certificate);
                None
            }
            Message::TrustBundle(bundle) => {
                self.trust(&bundle.roots_pem);
                None
            }
            Message::Snapshot(_) | Message::TapStart(_) | Message::TapStop(_) => None,
        }
    }

    fn trust(&mut self, roots_pem: &str) {
        match TrustBundle::from_pem(roots_pem) {
            Ok(bundle) => {
                if let Some(store) = &self.store {
                    tracing::info!(roots = bundle.len(), "trust bundle updated");
                    store.set_trust_bundle(bundle);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the control plane sent an unreadable trust bundle")
            }
        }
    }

    fn install(&mut self, proxy: &Proxy, certificate: &wire::Certificate) {
        if !certificate.error.is_empty() {
            tracing::warn!(error = %certificate.error, "the control plane refused the certificate request");
            self.renew_at = Some(Instant::now() + RETRY_AFTER_REFUSAL);
            return;
        }
        let Some(key) = &self.key else {
            tracing::warn!("a certificate arrived for no request; ignored");
            return;
        };
        let credentials = match Credentials::new(key, &certificate.chain_pem) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the certificate does not match the key; asking again");
                self.renew_at = Some(Instant::now() + RETRY_AFTER_REFUSAL);
                return;
            }
        };
        let bundle = match TrustBundle::from_pem(&certificate.trust_bundle_pem) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "the certificate came with an unreadable trust bundle");
                return;
            }
        };
        let (not_before, not_after) = (credentials.leaf().not_before, credentials.leaf().not_after);
        match &self.store {
            Some(store) => {
                // Roots first, so the new certificate is trusted by the time it is shown.
                store.set_trust_bundle(bundle);
                store.set_credentials(credentials);
            }
            None => {
                let store = CertStore::new(credentials, bundle);
                if let Err(e) = proxy.set_identity(store.clone()) {
                    tracing::error!(error = %e, "cannot use the workload certificate");
                    return;
                }
                self.store = Some(store);
            }
        }
        if !certificate.session_token.is_empty() {
            self.session_token = Some(certificate.session_token.clone());
        }
        let at = renew_at(not_before, not_after, fastrand::f64());
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        self.renew_at = Some(Instant::now() + wait);
        tracing::info!(
            expires_in_secs = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            renew_in_secs = wait.as_secs(),
            "workload certificate installed"
        );
    }
}
