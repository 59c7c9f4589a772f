//! The control planes sharing a store, and the work exactly one of them does.
//!
//! Every control plane joins the store's election ([`crate::store::election`]) as a
//! [`Replica`]: its instance id and addresses. The members are the live replicas; the
//! first leads. The leader alone runs the singleton work: removing workloads whose
//! control plane is gone ([`sweep_orphans`]) and pacing trust-anchor rotations
//! ([`crate::ca::MeshCa::drive_rotation`]). Work starts when a replica comes to lead
//! and is stopped the moment it no longer does.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_api::{Kind, Resource};

use crate::api::{storage, write};
use crate::push::REGISTRATION;
use crate::store::{Campaign, Standing, Store};

/// The election every control plane on a store joins.
pub const ELECTION: &str = "control-planes";

/// A control plane, as the other members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    /// Random per process; a workload's registration names it.
    pub instance: String,
    /// Its HTTP API.
    pub http: String,
    /// Its gRPC API, which proxies connect to.
    pub grpc: String,
}

/// This control plane's membership.
pub struct Membership {
    campaign: Campaign,
    me: Replica,
}

/// The replicas, for `GET /api/v1/control-planes`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// The one that answered.
    pub this: String,
    /// The leader's instance, when known.
    pub leader: Option<String>,
    /// The live replicas, the leader first.
    pub members: Vec<Replica>,
}

impl Membership {
    pub fn join(store: &dyn Store, me: Replica) -> Self {
        let candidate = serde_json::to_string(&me).unwrap_or_else(|_| me.instance.clone());
        Self {
            campaign: store.campaign(ELECTION, &candidate),
            me,
        }
    }

    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.campaign.standing()
    }

    pub fn view(&self) -> ReplicaView {
        let standing = self.campaign.standing().borrow().clone();
        let members: Vec<Replica> = standing
            .members
            .iter()
            .filter_map(|m| Replica::from_candidate(m))
            .collect();
        ReplicaView {
            this: self.me.instance.clone(),
            leader: standing
                .leader
                .as_deref()
                .and_then(Replica::from_candidate)
                .map(|r| r.instance),
            members,
        }
    }
}

impl Replica {
    /// The replica an election member's candidate value names.
    pub fn from_candidate(candidate: &str) -> Option<Replica> {
        serde_json::from_str(candidate).ok()
    }
}

/// Runs `work` whenever this replica leads, and aborts it as soon as it does not.
/// Returns when the membership ends.
pub async fn while_leading<F, Fut>(mut standing: watch::Receiver<Standing>, what: &str, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        if standing.wait_for(|s| s.leading).await.is_err() {
            return;
        }
        tracing::info!(work = what, "leading: starting");
        let task = tokio::spawn(work());
        let ended = standing.wait_for(|s| !s.leading).await.is_err();
        task.abort();
        if ended {
            return;
        }
        tracing::info!(work = what, "no longer leading: stopped");
    }
}

/// Removes the workloads registered through a control plane that is no longer a
/// member, once that has lasted `grace`: their proxies did not reconnect anywhere
/// (a reconnect re-registers, which changes the mark) and nobody else will remove
/// them. A workload without a registration mark was written by hand and is left alone.
pub async fn sweep_orphans(
    store: Arc<dyn Store>,
    standing: watch::Receiver<Standing>,
    grace: Duration,
) {
    let mut orphaned: HashMap<(String, String), (String, Instant)> = HashMap::new();
    let every = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let live: HashSet<String> = standing
            .borrow()
            .members
            .iter()
            .filter_map(|m| Replica::from_candidate(m))
            .map(|r| r.instance)
            .collect();
        if live.is_empty() {
            continue;
        }
        let workloads =
            match storage::read_prefix(store.as_ref(), &storage::kind_prefix(Kind::Workload)).await
            {
                Ok((workloads, _)) => workloads,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot list workloads to find orphans");
                    continue;
                }
            };
        let now = Instant::now();
        let mut seen = HashSet::new();
        for workload in &workloads {
            let Some(registration) = orphan_registration(workload, &live) else {
                continue;
            };
            let id = (
                workload.metadata.namespace.clone(),
                workload.metadata.name.clone(),
            );
            seen.insert(id.clone());
            let since = orphaned
                .entry(id.clone())
                .and_modify(|(mark, since)| {
                    if *mark != registration {
                        (*mark, *since) = (registration.clone(), now);
                    }
                })
                .or_insert_with(|| (registration.clone(), now))
                .1;
            if now.duration_since(since) < grace {
                continue;
            }
            let (namespace, name) = &id;
            let still =
                |w: &Resource| w.metadata.annotations.get(REGISTRATION) == Some(&registration);
            match write::delete_if(store.as_ref(), Kind::Workload, namespace, name, still).await {
                Ok(Some(_)) => {
                    tracing::info!(workload = %name, %registration, "removed a workload whose control plane is gone")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(workload = %name, error = %e, "cannot remove an orphaned workload")
                }
            }
        }
        orphaned.retain(|id, _| seen.contains(id));
    }
}

/// The registration mark of a workload registered through a control plane that is not
/// in `live`.
fn orphan_registration(workload: &Resource, live: &HashSet<String>) -> Option<String> {
    let registration = workload.metadata.annotations.get(REGISTRATION)?;
    let (instance, _) = registration.split_once('/')?;
    (!live.contains(instance)).then(|| registration.clone())
}
