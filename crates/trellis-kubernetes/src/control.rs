//! `trellis control --kubernetes`: the control plane with the cluster as its source.
//!
//! The store is in memory and mirrors the cluster ([`crate::source`]); the proxies'
//! credentials are their Pods' ServiceAccount tokens ([`crate::identity`]). The rest —
//! compiler, push, CA, HTTP API, dashboard — is the universal-mode control plane.

use std::sync::Arc;

use kube::Client;
use trellis_control::secrets::Secrets;
use trellis_control::server::{ControlPlane, ControlSettings, ExtraRoutes};
use trellis_control::store::{MemoryStore, Store};

use crate::identity::KubernetesPlatform;
use crate::source::KubernetesSource;

/// A control plane serving the mesh a cluster describes. Stops on drop.
pub struct KubernetesControlPlane {
    pub control: ControlPlane,
    pub source: KubernetesSource,
    /// The cluster mirrored, and the state shared through the Secret.
    pub store: Arc<dyn Store>,
}

impl KubernetesControlPlane {
    /// Starts watching the cluster through `client` and serving the proxies; the
    /// control plane's own state is shared with the other replicas through a Secret
    /// in `namespace` ([`crate::state`]).
    pub async fn start(
        client: Client,
        namespace: &str,
        settings: ControlSettings,
        extra: Option<ExtraRoutes>,
    ) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        crate::state::load_or_create(&client, namespace, store.as_ref(), &settings).await?;
        let source = KubernetesSource::start(client.clone(), store.clone());
        let secrets = Secrets::new(store.clone(), settings.ca.encryption_key.clone());
        let token = trellis_control::api::token::share(&secrets, &settings.data_dir).await?;
        let platform = Arc::new(KubernetesPlatform::new(client));
        let control =
            ControlPlane::start_on_platform(store.clone(), token, settings, platform, extra)
                .await?;
        Ok(Self {
            control,
            source,
            store,
        })
    }
}
