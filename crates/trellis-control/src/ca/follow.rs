//! Control planes sharing a store follow each other's CA changes: a rotation paced by
//! one of them writes the bundle and the signer to the store, and every other one
//! picks them up from its watch and pushes them to its own proxies, so proxies trust
//! and present the same roots whichever control plane they are connected to.

use std::sync::Arc;
use std::time::Duration;

use super::{storage, Current, MeshCa};

/// Pause before watching again after the store failed.
const RETRY: Duration = Duration::from_millis(500);

impl MeshCa {
    /// Watches the CA's keys in the store for as long as the task runs (abort it to
    /// stop), applying what other control planes write.
    pub async fn follow_store(self: Arc<Self>) {
        loop {
            let watch = match self.store.revision().await {
                Ok(revision) => self.store.watch(storage::PREFIX, revision).await,
                Err(e) => Err(e),
            };
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the CA's keys; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                if let Err(e) = watch.next().await {
                    tracing::debug!(error = %e, "CA watch ended; watching again");
                    break;
                }
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "cannot read the CA from the store");
                }
            }
            // Changes made while the watch was down.
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot read the CA from the store");
            }
        }
    }

    /// Takes the store's bundle and signer if they differ from the ones in use.
    pub(super) async fn reload(&self) -> Result<(), super::CaError> {
        if let Some((rotation, _)) = storage::load_rotation(&self.secrets).await? {
            self.rotation.show(&rotation);
        }
        let current = self.current.load_full();
        let bundle = storage::load_bundle(self.store.as_ref())
            .await?
            .unwrap_or_else(|| current.bundle.clone());
        // An operator-given signer is the operator's, never the store's.
        let signer = match (
            &self.settings.operator,
            storage::load_signer(&self.secrets).await?,
        ) {
            (None, Some(stored))
                if stored.certificate().fingerprint != current.signer.certificate().fingerprint =>
            {
                Arc::new(stored)
            }
            _ => current.signer.clone(),
        };
        let signer_changed = !Arc::ptr_eq(&signer, &current.signer);
        let bundle_changed = bundle.to_pem() != current.bundle.to_pem();
        if !signer_changed && !bundle_changed {
            return Ok(());
        }
        tracing::info!(
            signer_changed,
            roots = bundle.len(),
            "took another control plane's CA change"
        );
        self.current.store(Arc::new(Current { signer, bundle }));
        self.publish(signer_changed);
        Ok(())
    }
}
