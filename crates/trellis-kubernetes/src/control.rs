//! `trellis control --kubernetes`: the control plane with the cluster as its source.
//!
//! The store is in memory and mirrors the cluster ([`crate::source`]); the proxies'
//! credentials are their Pods' ServiceAccount tokens ([`crate::identity`]). The rest —
//! compiler, push, CA, HTTP API, dashboard — is the universal-mode control plane.

use std::sync::Arc;

use kube::Client;
use trellis_control::secrets::Secrets;
use trellis_control::server::{ControlError, ControlPlane, ControlSettings, ExtraRoutes};
use trellis_control::store::{MemoryStore, Store};

use crate::identity::KubernetesPlatform;
use crate::source::KubernetesSource;

/// A control plane serving the mesh a cluster describes. Stops on drop.
pub struct KubernetesControlPlane {
    pub control: ControlPlane,
    pub source: KubernetesSource,
}

impl KubernetesControlPlane {
    /// Starts watching the cluster through `client` and serving the proxies.
    pub async fn start(
        client: Client,
        settings: ControlSettings,
        extra: Option<ExtraRoutes>,
    ) -> Result<Self, ControlError> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let source = KubernetesSource::start(client.clone(), store.clone());
        let secrets = Secrets::new(store.clone(), settings.ca.encryption_key.clone());
        let token = trellis_control::api::token::share(&secrets, &settings.data_dir).await?;
        let platform = Arc::new(KubernetesPlatform::new(client));
        let control =
            ControlPlane::start_on_platform(store, token, settings, platform, extra).await?;
        Ok(Self { control, source })
    }
}
