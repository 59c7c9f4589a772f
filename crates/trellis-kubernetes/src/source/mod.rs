//! The cluster as the source of the mesh's resources: watches of Services, Pods,
//! EndpointSlices, the Gateway API routes and the `trellis.dev` kinds, translated
//! ([`translate`]) and written into the control plane's store, which then compiles and
//! pushes to the proxies exactly as in universal mode.
//!
//! Each replica keeps its own view, as every Kubernetes controller does: the store is
//! in memory and mirrors the cluster. After every change (collected for
//! [`DEBOUNCE`], so a burst costs one pass) the whole cluster state is translated
//! again and only the entries that differ are written or deleted.
//!
//! A kind whose CRD is not installed (the Gateway API is the cluster owner's to
//! install) is retried with a growing back-off and logged; the rest of the mesh works
//! without it.

pub mod grants;
pub mod selection;
mod status;
pub mod translate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use trellis_api::{Kind, ObjectRef};
use trellis_control::api::storage;
use trellis_control::store::{Expect, Store};

use self::status::StatusWriter;
pub use self::status::CONTROLLER_NAME;
use self::translate::{translate, ClusterState, Translated};

/// kubectl's copy of an object it applied, which Trellis never reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How long changes are collected before the cluster state is translated again.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The Gateway API kinds read from the cluster, all at version `v1`.
pub const ROUTE_KINDS: [Kind; 4] = [
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TCPRoute,
    Kind::TLSRoute,
];

/// The Trellis kinds that are custom resources in the cluster (Services and Workloads
/// come from core Services and Pods instead).
pub fn trellis_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.group() == trellis_api::kind::TRELLIS_GROUP)
        .filter(|k| !matches!(k, Kind::Service | Kind::Workload))
}

/// The `ApiResource` of a Gateway API or `trellis.dev` kind, at the version read.
pub fn api_resource(kind: Kind) -> ApiResource {
    let version = if ROUTE_KINDS.contains(&kind) {
        "v1"
    } else {
        "v1alpha1"
    };
    let gvk = GroupVersionKind::gvk(kind.group(), version, kind.name());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// Objects of the cluster that Trellis could not read, and why, for their status.
pub type Refusals = Arc<Mutex<Vec<(ObjectRef, String)>>>;

/// The running watches and the task that mirrors them into the store; stops on drop.
pub struct KubernetesSource {
    tasks: Vec<JoinHandle<()>>,
    refusals: Refusals,
}

impl KubernetesSource {
    /// Starts watching the cluster through `client` and mirroring it into `store`;
    /// status is written back while `leading` says this replica leads.
    pub fn start(
        client: Client,
        store: Arc<dyn Store>,
        mut leading: watch::Receiver<bool>,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        // A new leader writes every status at once.
        let wake = changed.clone();
        let status_leading = leading.clone();
        tasks.push(tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                wake.notify_one();
            }
        }));
        let services = watch::<Service>(
            "Service",
            Api::all(client.clone()),
            (),
            &changed,
            &mut tasks,
        );
        let pods = watch::<Pod>("Pod", Api::all(client.clone()), (), &changed, &mut tasks);
        let slices = watch::<EndpointSlice>(
            "EndpointSlice",
            Api::all(client.clone()),
            (),
            &changed,
            &mut tasks,
        );
        let documents: Vec<(Kind, reflector::Store<DynamicObject>)> = ROUTE_KINDS
            .into_iter()
            .chain(trellis_kinds())
            .map(|kind| {
                let resource = api_resource(kind);
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                (
                    kind,
                    watch(kind.name(), api, resource, &changed, &mut tasks),
                )
            })
            .collect();
        let grant_resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant"),
            "referencegrants",
        );
        let grants = watch(
            "ReferenceGrant",
            Api::<DynamicObject>::all_with(client.clone(), &grant_resource),
            grant_resource,
            &changed,
            &mut tasks,
        );
        let refusals = Refusals::default();
        let mirror = Mirror {
            status: StatusWriter::new(client.clone()),
            leading: status_leading,
            store,
            written: BTreeMap::new(),
            refusals: refusals.clone(),
        };
        tasks.push(tokio::spawn(mirror.run(changed, move || {
            ClusterState {
                services: cloned(&services),
                pods: cloned(&pods),
                endpoint_slices: cloned(&slices),
                documents: documents
                    .iter()
                    .flat_map(|(kind, store)| {
                        store.state().into_iter().map(|o| (*kind, (*o).clone()))
                    })
                    .collect(),
                reference_grants: cloned(&grants),
            }
        })));
        Self { tasks, refusals }
    }

    /// The objects last found unreadable, and why.
    pub fn refusals(&self) -> Vec<(ObjectRef, String)> {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn cloned<K: kube::Resource + Clone>(store: &reflector::Store<K>) -> Vec<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state().into_iter().map(|o| (*o).clone()).collect()
}

/// Starts a watch of `api` into a local cache, waking `changed` on every event.
fn watch<K>(
    what: &'static str,
    api: Api<K>,
    dyntype: K::DynamicType,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> reflector::Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let changed = changed.clone();
    tasks.push(tokio::spawn(async move {
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            // What Trellis never reads is not cached: at thousands of Pods the
            // field-manager records and kubectl's copy of each object are most of it.
            .modify(|object: &mut K| {
                object.managed_fields_mut().clear();
                object.annotations_mut().remove(LAST_APPLIED);
            })
            .reflect(writer);
        futures_util::pin_mut!(events);
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => {
                    failing = false;
                    changed.notify_one();
                }
                // Logged once per outage, not at every retry of the back-off.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(kind = what, error = %e, "cannot watch the cluster (is its CRD installed?); retrying");
                }
                Err(_) => {}
            }
        }
    }));
    reader
}

/// Writes the translation of the cluster into the store, entry by entry.
struct Mirror {
    store: Arc<dyn Store>,
    /// What this mirror wrote last, by key: only differences are written.
    written: BTreeMap<String, Vec<u8>>,
    refusals: Refusals,
    status: StatusWriter,
    leading: watch::Receiver<bool>,
}

impl Mirror {
    async fn run(mut self, changed: Arc<Notify>, read: impl Fn() -> ClusterState) {
        loop {
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            let state = read();
            let translated = translate(&state);
            if *self.leading.borrow() {
                self.status.write(&state, &translated).await;
            } else {
                self.status.forget();
            }
            if let Err(e) = self.write(translated).await {
                tracing::warn!(error = %e, "cannot write the cluster's state to the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                changed.notify_one();
            }
        }
    }

    async fn write(&mut self, translated: Translated) -> Result<(), String> {
        let mut desired = BTreeMap::new();
        for resource in &translated.resources {
            let value = storage::encode(resource).map_err(|e| e.to_string())?;
            desired.insert(storage::key_of(resource), value);
        }
        for (service, ip) in &translated.virtual_ips {
            let name = format!("{}/{}", service.namespace, service.name);
            desired.insert(
                format!("/vips/by-service/{name}"),
                ip.to_string().into_bytes(),
            );
            desired.insert(format!("/vips/by-address/{ip}"), name.into_bytes());
        }
        for (key, value) in &desired {
            if self.written.get(key) != Some(value) {
                self.store
                    .put(key, value.clone(), Expect::Any)
                    .await
                    .map_err(|e| e.to_string())?;
                self.written.insert(key.clone(), value.clone());
            }
        }
        let gone: Vec<String> = (self.written.keys())
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.store
                .delete(&key, Expect::Any)
                .await
                .map_err(|e| e.to_string())?;
            self.written.remove(&key);
        }
        let known = self.refusals.lock().map(|r| r.clone()).unwrap_or_default();
        for (object, why) in translated.refused.iter().filter(|r| !known.contains(r)) {
            tracing::warn!(kind = object.kind.name(), namespace = %object.namespace, name = %object.name, reason = %why, "cannot read a cluster object; it is left out of the mesh");
        }
        if let Ok(mut refusals) = self.refusals.lock() {
            *refusals = translated.refused;
        }
        Ok(())
    }
}
