//! `trellis control --kubernetes`: the control plane with the cluster as its source.
//!
//! The store is in memory and mirrors the cluster ([`crate::source`]); the proxies'
//! credentials are their Pods' ServiceAccount tokens ([`crate::identity`]). The rest —
//! compiler, push, CA, HTTP API, dashboard — is the universal-mode control plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;
use trellis_control::secrets::Secrets;
use trellis_control::server::{ControlPlane, ControlSettings, ExtraRoutes};
use trellis_control::store::{MemoryStore, Store};

use crate::identity::KubernetesPlatform;
use crate::inject::serving::{WebhookServer, WebhookSettings};
use crate::lease::{Leadership, LEASE_DURATION};
use crate::source::KubernetesSource;

/// Where the control plane runs in the cluster.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Its own namespace: the Secret with the mesh's CA and the Lease are there.
    pub namespace: String,
    /// How long the leader's Lease holds without renewal ([`crate::lease`]).
    pub lease_duration: Duration,
    /// The injection webhook to serve; `None` serves none (Pods are then injected
    /// offline, with `trellis inject`).
    pub webhook: Option<WebhookSettings>,
}

impl KubernetesSettings {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_duration: LEASE_DURATION,
            webhook: None,
        }
    }
}

/// A control plane serving the mesh a cluster describes. Stops on drop.
pub struct KubernetesControlPlane {
    pub control: ControlPlane,
    pub source: KubernetesSource,
    /// Its part in the replicas' election.
    pub leadership: Leadership,
    /// The cluster mirrored, and the state shared through the Secret.
    pub store: Arc<dyn Store>,
    /// The injection webhook, when it serves one.
    pub webhook: Option<WebhookServer>,
    /// Keeps the store's CA and the Secret equal ([`crate::state::share`]).
    state: AbortOnDrop,
}

/// A task that stops when its owner goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KubernetesControlPlane {
    /// Starts watching the cluster through `client` and serving the proxies; the
    /// control plane's own state is shared with the other replicas through a Secret
    /// in its namespace ([`crate::state`]), and they elect the one that writes status.
    pub async fn start(
        client: Client,
        cluster: KubernetesSettings,
        settings: ControlSettings,
        extra: Option<ExtraRoutes>,
    ) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let namespace = cluster.namespace.as_str();
        crate::state::load_or_create(&client, namespace, store.as_ref(), &settings).await?;
        let state = AbortOnDrop(tokio::spawn(crate::state::share(
            client.clone(),
            namespace.to_owned(),
            store.clone(),
        )));
        let leadership = Leadership::campaign(
            client.clone(),
            namespace,
            replica_identity(),
            cluster.lease_duration,
        );
        let source = KubernetesSource::start(client.clone(), store.clone(), leadership.leading());
        let secrets = Secrets::new(store.clone(), settings.ca.encryption_key.clone());
        let token = trellis_control::api::token::share(&secrets, &settings.data_dir).await?;
        let platform = Arc::new(KubernetesPlatform::new(client.clone()));
        let control =
            ControlPlane::start_on_platform(store.clone(), token, settings, platform, extra)
                .await?;
        let webhook = match cluster.webhook {
            Some(webhook) => Some(
                WebhookServer::start(
                    webhook,
                    namespace,
                    control.ca.clone(),
                    client,
                    leadership.leading(),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            control,
            source,
            leadership,
            store,
            webhook,
            state,
        })
    }
}

impl KubernetesControlPlane {
    /// Stops following the cluster, then stops serving: proxies keep their
    /// configuration. Returns once the store is closed, or after a few seconds.
    pub async fn stop(self) {
        let Self {
            control,
            source,
            leadership,
            store,
            webhook,
            state,
        } = self;
        // What holds the store goes first, so that it can close.
        drop((state, webhook, leadership, source, store));
        control.stop().await;
    }
}

/// This replica's name in the election: its Pod's name (`HOSTNAME`) and a number that
/// tells replicas in one process apart.
fn replica_identity() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "trellis-control".into());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}
