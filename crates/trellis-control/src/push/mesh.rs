//! The mesh state proxies are compiled from, kept current from the store: a full read
//! at start and after any watch failure, then one re-read per burst of changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::storage::{self, PREFIX};
use crate::compile::{MeshIndex, MeshState};
use crate::store::Store;
use crate::vip::{self, VipError};

/// The mesh at one store revision, indexed for compiling.
#[derive(Debug, Default)]
pub struct MeshVersion {
    /// The store revision this state reflects; snapshots compiled from it carry it as
    /// their version, so versions only grow, across restarts too.
    pub revision: u64,
    pub index: MeshIndex,
}

/// Publishes a new [`MeshVersion`] after every burst of store changes.
#[derive(Clone)]
pub struct MeshWatcher {
    current: watch::Receiver<Arc<MeshVersion>>,
}

/// Pause before retrying after the store failed.
const RETRY: Duration = Duration::from_millis(500);

impl MeshWatcher {
    pub fn start(
        store: Arc<dyn Store>,
        debounce: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = watch::channel(Arc::new(MeshVersion::default()));
        tokio::spawn(async move {
            tokio::select! {
                () = watch_store(store, debounce, tx) => {}
                _ = stop.wait_for(|stopping| *stopping) => {}
            }
        });
        Self { current: rx }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshVersion>> {
        self.current.clone()
    }

    pub fn current(&self) -> Arc<MeshVersion> {
        self.current.borrow().clone()
    }
}

/// Reads the recorded virtual IPs, assigns the Services that have none, and hands the
/// table to the index. Returns the revision of the last write, if any.
async fn with_vips(store: &dyn Store, index: &mut MeshIndex) -> Result<Option<u64>, VipError> {
    let (mut table, _) = vip::read(store).await?;
    let keys = index.service_keys().chain(index.external_host_keys());
    let written = vip::assign(store, &mut table, keys).await?;
    index.set_vips(table);
    Ok(written)
}

async fn watch_store(
    store: Arc<dyn Store>,
    debounce: Duration,
    tx: watch::Sender<Arc<MeshVersion>>,
) {
    loop {
        let (resources, listed) = match storage::read_prefix(store.as_ref(), PREFIX).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the mesh state; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut index = MeshIndex::new(&MeshState::new(resources));
        // Every Service gets its virtual IP before any proxy is compiled against it; the
        // snapshot version is then the revision of the last address written, so it still
        // names everything the snapshot holds. The watch goes on from the list's
        // revision, so a resource written meanwhile is not missed.
        let revision = match with_vips(store.as_ref(), &mut index).await {
            Ok(written) => written.map_or(listed, |w| w.max(listed)),
            Err(e) => {
                tracing::error!(error = %e, "cannot assign virtual IPs; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if tx.send(Arc::new(MeshVersion { revision, index })).is_err() {
            return; // nobody listens any more
        }
        let mut watch = match store.watch(PREFIX, listed).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the store; re-reading");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Wait for the first change, then let the burst finish before re-reading.
        if let Err(e) = watch.next().await {
            tracing::debug!(error = %e, "store watch ended; re-reading");
            continue;
        }
        tokio::time::sleep(debounce).await;
    }
}
