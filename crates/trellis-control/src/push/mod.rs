//! Configuration push: the `ProxyApi` gRPC service. Each proxy holds one `Session`
//! stream; the control plane registers its workload, compiles its configuration from the
//! current mesh state, sends a new snapshot whenever a change alters that configuration,
//! and records the proxy's ACKs and NACKs in the registry.
//!
//! One watcher task turns store changes into mesh-state versions, debounced so a burst
//! of writes (an apply of many documents, many workloads joining) costs one recompile
//! per proxy. A proxy whose stream ends stays registered for a grace period, so a
//! reconnect (or a control-plane restart) does not remove its endpoints.

mod mesh;
mod session;
mod tap;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trellis_api::proto::v1::{proxy_api_server::ProxyApi, ControlMessage, ProxyMessage};

pub use self::mesh::{MeshVersion, MeshWatcher};
pub use self::session::REGISTRATION;
pub use self::tap::{TapHub, TapStream};
use crate::ca::MeshCa;
use crate::platform::Platform;
use crate::registry::Registry;
use crate::store::{Standing, Store};

/// Tuning of the push layer.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The admin token, which a proxy may present in its `Hello` instead of a
    /// bootstrap token.
    pub token: String,
    /// How long a disconnected proxy's workload stays registered. Default 10 s.
    pub grace: Duration,
    /// How long store changes are collected before proxies are recompiled. Default 50 ms.
    pub debounce: Duration,
    /// The platform that owns the workloads and checks the proxies' credentials, if
    /// any ([`crate::platform`]); `None`: universal mode.
    pub platform: Option<Arc<dyn Platform>>,
}

impl PushSettings {
    pub fn new(token: String) -> Self {
        Self {
            token,
            grace: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
            platform: None,
        }
    }
}

/// The `ProxyApi` service.
#[derive(Clone)]
pub struct PushService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Set when the control plane stops: sessions and the mesh watcher end, releasing
    /// the store.
    stopping: tokio::sync::watch::Sender<bool>,
    registry: Arc<Registry>,
    mesh: MeshWatcher,
    ca: Arc<MeshCa>,
    settings: PushSettings,
    /// Sessions started per workload, so a grace-period expiry can tell whether the
    /// workload has reconnected since.
    sessions: Mutex<HashMap<String, u64>>,
    /// Random per process: tells this control plane's registrations from those of
    /// other replicas on the same store.
    instance: String,
    /// The Workload resources of the sessions connected here, by store key, as
    /// registered: restored if the leader removed them while this replica was cut off
    /// from the store ([`PushService::restore_on_rejoin`]).
    live: Mutex<HashMap<String, trellis_api::Resource>>,
    /// Taps asked for through the API, which sessions start on their proxies.
    taps: Arc<TapHub>,
}

impl PushService {
    /// Starts watching the store; the service is ready to take sessions.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        ca: Arc<MeshCa>,
        settings: PushSettings,
    ) -> Self {
        let stopping = tokio::sync::watch::channel(false).0;
        let mesh = MeshWatcher::start(store.clone(), settings.debounce, stopping.subscribe());
        Self {
            inner: Arc::new(Inner {
                store,
                stopping,
                registry,
                mesh,
                ca,
                settings,
                sessions: Mutex::new(HashMap::new()),
                instance: instance_id(),
                live: Mutex::new(HashMap::new()),
                taps: Arc::default(),
            }),
        }
    }

    /// Ends every session and stops watching the store. Proxies keep their
    /// configuration and reconnect to whichever control plane answers next.
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Writes back the workloads of this replica's live sessions each time it rejoins
    /// the election after dropping out of it: while it could not renew its lease the
    /// leader may have taken it for dead and removed them, though their proxies were
    /// still connected here. Runs until the membership ends.
    pub fn restore_on_rejoin(
        &self,
        mut standing: tokio::sync::watch::Receiver<Standing>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // The first term is the first membership; every later one is a rejoin. The
        // current one is read now, so a rejoin right after the call is not missed.
        let mut term = standing.borrow().term;
        let push = self.clone();
        async move { push.restore_terms(&mut standing, &mut term).await }
    }

    async fn restore_terms(
        &self,
        standing: &mut tokio::sync::watch::Receiver<Standing>,
        term: &mut u64,
    ) {
        loop {
            let rejoined = standing.wait_for(|s| s.term != 0 && s.term != *term).await;
            let Ok(now) = rejoined.map(|s| s.term) else {
                return;
            };
            let first = *term == 0;
            *term = now;
            if first {
                continue;
            }
            let live: Vec<trellis_api::Resource> = self
                .inner
                .live
                .lock()
                .map(|l| l.values().cloned().collect())
                .unwrap_or_default();
            let store = self.inner.store.as_ref();
            let mut restored = 0;
            for workload in &live {
                let key = crate::api::storage::key_of(workload);
                match store.get(&key).await {
                    Ok(None) => {
                        if crate::api::write::apply(store, workload).await.is_ok() {
                            restored += 1;
                        }
                    }
                    Ok(Some(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot check a live session's workload"),
                }
            }
            tracing::info!(restored, live = live.len(), "rejoined the control planes");
        }
    }

    /// The taps running through this control plane.
    pub fn taps(&self) -> Arc<TapHub> {
        self.inner.taps.clone()
    }

    /// This control plane's instance id, which its registrations carry.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The mesh state proxies are compiled from.
    pub fn mesh(&self) -> &MeshWatcher {
        &self.inner.mesh
    }
}

#[cfg(test)]
mod tests;

/// Eight random hex digits (the time, should the system have no randomness to give).
fn instance_id() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    trellis_identity::hex::encode(&bytes)
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ProxyApi for PushService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = session::read_hello(&mut inbound).await?;
        let (tx, rx) = mpsc::channel(4);
        let registered = session::register(&self.inner, &hello).await?;
        tokio::spawn(session::run(self.inner.clone(), registered, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
