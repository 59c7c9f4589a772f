//! Trust-anchor rotation, run as one background task per rotation:
//!
//! 1. **distribute**: a new root joins the bundle; every proxy is sent old and new
//!    roots, so each trusts certificates from either;
//! 2. **reissue**: the new root becomes the signer; every session re-signs its proxy's
//!    last CSR with it and sends the new certificate;
//! 3. **retire**: after the overlap the old root leaves the bundle.
//!
//! Each step waits half the overlap before the next, so proxies have the bundle before
//! any certificate from the new root is presented, and every proxy holds a new
//! certificate before the old root stops being trusted. Connections already open are
//! untouched: TLS verifies a peer once, at the handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use trellis_identity::CertificateAuthority;

use super::storage;
use super::{CaError, Current, MeshCa};
use crate::registry::now_rfc3339;
use crate::store::Expect;

/// Where a rotation stands, for `GET /api/v1/ca`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// `idle`, `distributing`, `reissuing`, `retiring`, `done` or `failed`.
    pub phase: &'static str,
    /// Fingerprint of the root being introduced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_root: Option<String>,
    /// RFC 3339 time of the last phase change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Rotation {
    status: Mutex<RotationStatus>,
}

impl Rotation {
    pub(super) fn status(&self) -> RotationStatus {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        if status.phase.is_empty() {
            RotationStatus {
                phase: "idle",
                ..status
            }
        } else {
            status
        }
    }

    fn set(&self, phase: &'static str, new_root: Option<String>, error: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            *s = RotationStatus {
                phase,
                new_root: new_root.or(s.new_root.take()),
                since: Some(now_rfc3339()),
                error,
            };
        }
    }

    fn running(&self) -> bool {
        matches!(
            self.status().phase,
            "distributing" | "reissuing" | "retiring"
        )
    }
}

impl MeshCa {
    /// Starts a trust-anchor rotation with `overlap` between its steps (see the module
    /// doc) and returns the new root's fingerprint. Refused while one runs, and for an
    /// operator-given CA, which the operator rotates.
    pub async fn rotate(self: &Arc<Self>, overlap: Duration) -> Result<String, CaError> {
        if self.settings.operator.is_some() {
            return Err(CaError::Rotation(
                "the signing CA is the operator's (--ca-cert): rotate it by restarting with the new one"
                    .into(),
            ));
        }
        if self.rotation.running() {
            return Err(CaError::Rotation(
                "a trust-anchor rotation is already running".into(),
            ));
        }
        let root = CertificateAuthority::generate_root(
            &self.settings.trust_domain,
            self.settings.root_validity,
        )
        .map_err(|e| CaError::Create(e.to_string()))?;
        let fingerprint = root.certificate().fingerprint.clone();
        // Step 1 here, so the answer comes after the new root is distributed.
        let mut bundle = self.current.load().bundle.clone();
        bundle.merge(&root.trust_bundle());
        storage::save_bundle(self.store.as_ref(), &bundle, Expect::Any).await?;
        let signer = self.current.load().signer.clone();
        self.current.store(Arc::new(Current { signer, bundle }));
        self.rotation
            .set("distributing", Some(fingerprint.clone()), None);
        self.publish(false);
        tracing::info!(new_root = %fingerprint, "trust-anchor rotation: new root distributed");

        let ca = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = ca.finish_rotation(root, overlap).await {
                tracing::error!(error = %e, "trust-anchor rotation failed");
                ca.rotation.set("failed", None, Some(e.to_string()));
            }
        });
        Ok(fingerprint)
    }

    async fn finish_rotation(
        &self,
        root: CertificateAuthority,
        overlap: Duration,
    ) -> Result<(), CaError> {
        tokio::time::sleep(overlap / 2).await;
        storage::save_signer(self.store.as_ref(), &root, Expect::Any).await?;
        let new_bundle = root.trust_bundle();
        let bundle = self.current.load().bundle.clone();
        self.current.store(Arc::new(Current {
            signer: Arc::new(root),
            bundle,
        }));
        self.rotation.set("reissuing", None, None);
        self.publish(true);
        tracing::info!("trust-anchor rotation: certificates re-issued from the new root");

        tokio::time::sleep(overlap / 2).await;
        self.rotation.set("retiring", None, None);
        storage::save_bundle(self.store.as_ref(), &new_bundle, Expect::Any).await?;
        let signer = self.current.load().signer.clone();
        self.current.store(Arc::new(Current {
            signer,
            bundle: new_bundle,
        }));
        self.publish(false);
        self.rotation.set("done", None, None);
        tracing::info!("trust-anchor rotation: old root retired");
        Ok(())
    }
}
