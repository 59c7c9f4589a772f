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
//!
//! Step 1 is taken by the control plane asked to rotate; it records the rotation, with
//! the new root's key and when the next step is due, in the store (`/ca/rotation`).
//! The leader among the control planes on the store takes the later steps
//! ([`MeshCa::drive_rotation`]), each a compare-and-swap on that record, so a rotation
//! carries on when the replica that started it, or the leader, is gone. Every replica
//! applies each step from its watch of the store ([`super::follow`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use trellis_identity::CertificateAuthority;

use super::storage::{self, StoredSigner};
use super::{CaError, Current, MeshCa};
use crate::registry::now_rfc3339;
use crate::secrets::SecretError;
use crate::store::{Expect, StoreError};

/// How often the leader looks for a rotation to advance when none is due sooner.
const POLL: Duration = Duration::from_millis(500);

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
    /// Unix milliseconds when the leader takes the next step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rotation as the store keeps it (`/ca/rotation`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredRotation {
    /// `distributing`, `reissuing` or `done`.
    phase: String,
    new_root: String,
    since: String,
    /// Unix milliseconds when the next step is due.
    next_step_at: u64,
    overlap_ms: u64,
    /// The new root, until it becomes the signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_signer: Option<StoredSigner>,
}

impl StoredRotation {
    fn running(&self) -> bool {
        matches!(self.phase.as_str(), "distributing" | "reissuing")
    }

    fn phase(&self) -> &'static str {
        match self.phase.as_str() {
            "distributing" => "distributing",
            "reissuing" => "reissuing",
            "done" => "done",
            _ => "failed",
        }
    }

    /// The record after a step into `phase`, the next step due half an overlap later.
    fn advanced(&self, phase: &str) -> Self {
        Self {
            phase: phase.to_owned(),
            new_root: self.new_root.clone(),
            since: now_rfc3339(),
            next_step_at: now_ms() + self.overlap_ms / 2,
            overlap_ms: self.overlap_ms,
            next_signer: None,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where this control plane last saw the rotation, for `GET /api/v1/ca`.
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

    pub(super) fn show(&self, stored: &StoredRotation) {
        if let Ok(mut s) = self.status.lock() {
            *s = RotationStatus {
                phase: stored.phase(),
                new_root: Some(stored.new_root.clone()),
                since: Some(stored.since.clone()),
                next_step_at: stored.running().then_some(stored.next_step_at),
                error: None,
            };
        }
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
        let running = || CaError::Rotation("a trust-anchor rotation is already running".into());
        let previous = storage::load_rotation(&self.secrets).await?;
        if previous.as_ref().is_some_and(|(r, _)| r.running()) {
            return Err(running());
        }
        let root = CertificateAuthority::generate_root(
            &self.settings.trust_domain,
            self.settings.root_validity,
        )
        .map_err(|e| CaError::Create(e.to_string()))?;
        let fingerprint = root.certificate().fingerprint.clone();
        let overlap_ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
        let record = StoredRotation {
            phase: "distributing".into(),
            new_root: fingerprint.clone(),
            since: now_rfc3339(),
            next_step_at: now_ms() + overlap_ms / 2,
            overlap_ms,
            next_signer: Some(StoredSigner::of(&root)),
        };
        // One rotation at a time, whichever control planes are asked at once.
        let expect = previous.map_or(Expect::Absent, |(_, revision)| Expect::Revision(revision));
        match storage::save_rotation(&self.secrets, &record, expect).await {
            Err(CaError::Secret(SecretError::Store(StoreError::Conflict { .. }))) => {
                return Err(running())
            }
            other => other?,
        }
        // Step 1 here, so the answer comes after the new root is distributed.
        self.distribute(&root).await?;
        self.rotation.show(&record);
        tracing::info!(new_root = %fingerprint, "trust-anchor rotation: new root distributed");
        Ok(fingerprint)
    }

    /// Adds `root` to the bundle, in the store and for this control plane's proxies.
    async fn distribute(&self, root: &CertificateAuthority) -> Result<(), CaError> {
        let mut bundle = self.current.load().bundle.clone();
        if let Some(stored) = storage::load_bundle(self.store.as_ref()).await? {
            bundle.merge(&stored);
        }
        bundle.merge(&root.trust_bundle());
        storage::save_bundle(self.store.as_ref(), &bundle, Expect::Any).await?;
        let signer = self.current.load().signer.clone();
        self.current.store(Arc::new(Current { signer, bundle }));
        self.publish(false);
        Ok(())
    }

    /// Takes the later steps of every rotation, as they fall due; run by the leader
    /// only ([`crate::leader::while_leading`]), for as long as it leads.
    pub async fn drive_rotation(self: Arc<Self>) {
        loop {
            let pause = match self.rotation_step().await {
                Ok(pause) => pause,
                Err(e) => {
                    tracing::warn!(error = %e, "trust-anchor rotation step failed; trying again");
                    POLL
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Takes the next step if it is due; returns how long to wait before looking again.
    async fn rotation_step(&self) -> Result<Duration, CaError> {
        let Some((record, revision)) = storage::load_rotation(&self.secrets).await? else {
            return Ok(POLL);
        };
        let now = now_ms();
        if !record.running() {
            return Ok(POLL);
        }
        if now < record.next_step_at {
            return Ok(Duration::from_millis(record.next_step_at - now).min(POLL));
        }
        let next = match record.phase.as_str() {
            "distributing" => {
                let stored = record
                    .next_signer
                    .as_ref()
                    .ok_or_else(|| CaError::Stored("the rotation has lost its new root".into()))?;
                let root = stored.open(storage::ROTATION)?;
                // Again, in case the replica that started the rotation stopped before
                // it wrote the bundle.
                self.distribute(&root).await?;
                storage::save_signer(&self.secrets, &root, Expect::Any).await?;
                tracing::info!("trust-anchor rotation: certificates re-issued from the new root");
                record.advanced("reissuing")
            }
            _ => {
                let signer = storage::load_signer(&self.secrets)
                    .await?
                    .ok_or_else(|| CaError::Stored("the signer vanished".into()))?;
                storage::save_bundle(self.store.as_ref(), &signer.trust_bundle(), Expect::Any)
                    .await?;
                tracing::info!("trust-anchor rotation: old root retired");
                record.advanced("done")
            }
        };
        // A compare-and-swap: a leader that lost its place mid-step changes nothing.
        storage::save_rotation(&self.secrets, &next, Expect::Revision(revision)).await?;
        self.reload().await?;
        Ok(Duration::ZERO)
    }
}
