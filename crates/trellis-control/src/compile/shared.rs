//! The part of a transparent sidecar's configuration that many proxies share: a
//! listener per Service, the original-destination table, egress, and the backends they
//! send to. It depends on a few of the proxy's facts only (its namespace, its port for
//! captured connections, and its identity and zone where the mesh makes them matter),
//! so a [`MeshIndex`] compiles it once per such [`OutboundKey`] and every matching
//! session holds the same [`SharedOutbound`]. With a thousand Services, this part is
//! nearly the whole configuration; compiling it once per key instead of once per proxy
//! is what lets a change reach a thousand proxies in time, and holding it once is what
//! keeps the control plane's memory per proxy small.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use prost::Message;
use trellis_api::proto::v1::{Backend, ExternalHost, Listener, MeshService};

use super::index::Tables;
use super::{Caller, MeshIndex, ServiceKey, TRANSPARENT_LISTENER};

/// What the shared part of a proxy's configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboundKey {
    pub(super) namespace: String,
    /// The caller's SPIFFE ID, when a FaultInjection scopes a fault to some callers;
    /// empty otherwise.
    pub(super) identity: String,
    /// The caller's zone, when a BackendPolicy prefers the caller's zone; empty
    /// otherwise.
    pub(super) zone: String,
    /// Loopback port of the original-destination listener.
    pub(super) port: u16,
    /// Listener names the proxy's own listeners took first, sorted.
    pub(super) taken: Vec<String>,
}

/// One compiled shared part. Items are sorted by name and carry a hash of their
/// encoding, so two versions are compared item by item without a deep comparison.
#[derive(Debug, Default)]
pub struct SharedOutbound {
    pub(super) listeners: Vec<Hashed<Listener>>,
    pub(super) backends: Vec<Hashed<Backend>>,
    /// The Services its routes send to; `true` when a gRPC listener does (its backend
    /// is HTTP/2).
    pub(super) reach: BTreeMap<ServiceKey, bool>,
    pub(super) services: Vec<MeshService>,
    pub(super) external_hosts: Vec<ExternalHost>,
}

/// An item of a shared part and the hash of its protobuf encoding.
#[derive(Debug, Clone)]
pub(super) struct Hashed<T> {
    pub item: T,
    pub hash: u64,
}

impl<T: Message> Hashed<T> {
    fn new(item: T) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        item.encode_to_vec().hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            item,
        }
    }
}

/// Shared parts compiled from one index, by key. Each key is compiled once: sessions
/// that ask for it meanwhile wait for the first.
#[derive(Debug, Default)]
pub(super) struct SharedCache {
    parts: Mutex<HashMap<OutboundKey, Arc<OnceLock<Arc<SharedOutbound>>>>>,
    /// Some fault applies to some callers only, so callers' identities change what
    /// they are compiled.
    faults_depend_on_caller: bool,
    /// Some Service's backend depends on the caller's zone.
    zones_matter: bool,
}

impl SharedCache {
    /// An empty cache for an index of `tables`.
    pub fn new(tables: &Tables) -> Self {
        let faults_depend_on_caller = tables.attached.values().any(|a| {
            [&a.http, &a.grpc, &a.tcp, &a.tls]
                .into_iter()
                .flatten()
                .any(|c| c.fault.as_ref().is_some_and(|f| f.is_scoped()))
        });
        Self {
            parts: Mutex::default(),
            faults_depend_on_caller,
            zones_matter: tables.policies.values().any(|p| p.prefer_zone.is_some()),
        }
    }

    pub fn clear(&mut self) {
        if let Ok(parts) = self.parts.get_mut() {
            parts.clear();
        }
    }
}

impl MeshIndex {
    /// The key of the shared part for `caller`, whose original-destination listener is
    /// on `port` and whose own listeners took the names in `taken`.
    pub(super) fn outbound_key(
        &self,
        caller: &Caller<'_>,
        port: u16,
        taken: &HashSet<String>,
    ) -> OutboundKey {
        let mut taken: Vec<String> = taken.iter().cloned().collect();
        taken.sort();
        OutboundKey {
            namespace: caller.namespace.to_string(),
            identity: if self.shared.faults_depend_on_caller {
                caller.identity.clone()
            } else {
                String::new()
            },
            zone: if self.shared.zones_matter {
                caller.zone.to_string()
            } else {
                String::new()
            },
            port,
            taken,
        }
    }

    /// The shared part for `key`, compiled on first use.
    pub(super) fn shared_outbound(&self, key: &OutboundKey) -> Arc<SharedOutbound> {
        let cell = match self.shared.parts.lock() {
            Ok(mut parts) => parts.entry(key.clone()).or_default().clone(),
            // A panic while compiling poisoned the cache: compile without it.
            Err(_) => Arc::default(),
        };
        cell.get_or_init(|| Arc::new(self.compile_shared(key)))
            .clone()
    }

    fn compile_shared(&self, key: &OutboundKey) -> SharedOutbound {
        let caller = Caller {
            namespace: &key.namespace,
            identity: key.identity.clone(),
            zone: &key.zone,
        };
        let mut names: HashSet<String> = key.taken.iter().cloned().collect();
        let mut reach = BTreeMap::new();
        let mut transparent = self.transparent(&caller, key.port, &mut names, &mut reach);
        let egress = self.egress(&mut names);
        let table = transparent
            .listeners
            .iter_mut()
            .find(|l| l.name == TRANSPARENT_LISTENER)
            .and_then(|l| l.original_destination.as_mut());
        if let Some(table) = table {
            table.targets.extend(egress.targets);
        }
        let mut listeners = transparent.listeners;
        listeners.extend(egress.listeners);
        let mut backends = egress.backends;
        backends.extend(
            reach
                .iter()
                .map(|(service, h2)| self.backend(service, *h2, caller.zone)),
        );
        listeners.sort_by(|a, b| a.name.cmp(&b.name));
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        backends.dedup_by(|a, b| a.name == b.name);
        SharedOutbound {
            listeners: listeners.into_iter().map(Hashed::new).collect(),
            backends: backends.into_iter().map(Hashed::new).collect(),
            reach,
            services: transparent.services,
            external_hosts: egress.hosts,
        }
    }
}
