//! Writing resources so that no concurrent update is lost and the bookkeeping stays
//! right: `metadata.generation` (1 on create, +1 when the spec changes),
//! `metadata.creationTimestamp` (set on create, kept after) and
//! `metadata.resourceVersion` (the revision of the write).
//!
//! A document that names a `resourceVersion` is a compare-and-swap against it: if the
//! object changed since, the write is refused. Without one, a create expects the key to
//! be absent and an update expects the revision just read, and a lost race is retried on
//! a fresh read, so two writers never silently overwrite each other's read.

use std::time::SystemTime;

use serde::Serialize;
use trellis_api::meta::rfc3339;
use trellis_api::{Kind, ObjectRef, Resource};

use super::storage::{self, StorageError};
use crate::store::{Expect, Store, StoreError};

/// How many times a write without `resourceVersion` re-reads and tries again after
/// losing a race to another writer of the same object.
const MAX_ATTEMPTS: usize = 32;

/// What a write did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    /// Spec, labels and annotations were already as stored: nothing was written.
    Unchanged,
}

/// One applied object, as `POST /api/v1/apply` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kind: Kind,
    /// Empty for cluster-wide kinds.
    pub namespace: String,
    pub name: String,
    pub action: Action,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The document's `resourceVersion` is not the object's current one.
    #[error("conflict: {target} was changed since resourceVersion {given} (now {now})")]
    Stale {
        target: ObjectRef,
        given: u64,
        now: u64,
    },
    /// The document names a `resourceVersion` but the object does not exist.
    #[error(
        "conflict: {target} does not exist, but the document names resourceVersion {given}; \
         remove metadata.resourceVersion to create it"
    )]
    Gone { target: ObjectRef, given: u64 },
    /// Other writers kept changing the object between each read and write.
    #[error(
        "conflict: {target} kept changing during {MAX_ATTEMPTS} attempts to write it; try again"
    )]
    Contended { target: ObjectRef },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Writes `resource` (already validated), creating or updating it. Its `status` is not
/// stored; its `generation` and `creationTimestamp` are replaced by the store's.
pub async fn apply(store: &dyn Store, resource: &Resource) -> Result<Applied, WriteError> {
    let key = storage::key_of(resource);
    let target = resource.object_ref();
    // Validation admits only digits; a number past u64 matches no revision, so it is
    // refused as stale like any other version the object is not at.
    let given = (resource.metadata.resource_version.as_deref())
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    for _ in 0..MAX_ATTEMPTS {
        let current = store.get(&key).await.map_err(StorageError::from)?;
        let stored = current.as_ref().map(storage::decode).transpose()?;
        let (expect, action, next) = match (&current, stored, given) {
            (None, _, Some(given)) => return Err(WriteError::Gone { target, given }),
            (Some(entry), _, Some(given)) if entry.revision != given => {
                let now = entry.revision;
                return Err(WriteError::Stale { target, given, now });
            }
            (Some(entry), Some(stored), _) => {
                if same_content(&stored, resource) {
                    return Ok(applied(resource, Action::Unchanged));
                }
                let next = updated(&stored, resource);
                (Expect::Revision(entry.revision), Action::Configured, next)
            }
            _ => (Expect::Absent, Action::Created, created(resource)),
        };
        let value = storage::encode(&next)?;
        match store.put(&key, value, expect).await {
            Ok(_) => return Ok(applied(resource, action)),
            Err(StoreError::Conflict { current, .. }) => {
                if let Some(given) = given {
                    return Err(match current {
                        Some(now) => WriteError::Stale { target, given, now },
                        None => WriteError::Gone { target, given },
                    });
                }
                // Another writer got in between our read and write: read again.
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(StorageError::from(e).into()),
        }
    }
    Err(WriteError::Contended { target })
}

/// Deletes one object and returns it as it was, or `None` if there was none.
pub async fn delete(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Resource>, WriteError> {
    delete_if(store, kind, namespace, name, |_| true).await
}

/// Deletes one object if `condition` holds for it as it is in the store at the moment
/// of the delete (a change in between makes it look again); returns it as it was, or
/// `None` if there was none or the condition did not hold.
pub async fn delete_if(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    name: &str,
    condition: impl Fn(&Resource) -> bool,
) -> Result<Option<Resource>, WriteError> {
    let key = storage::resource_key(kind, namespace, name);
    for _ in 0..MAX_ATTEMPTS {
        let Some(entry) = store.get(&key).await.map_err(StorageError::from)? else {
            return Ok(None);
        };
        let resource = storage::decode(&entry)?;
        if !condition(&resource) {
            return Ok(None);
        }
        // Expect what was read, so the object returned is exactly the one deleted.
        match store.delete(&key, Expect::Revision(entry.revision)).await {
            Ok(_) => return Ok(Some(resource)),
            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => return Err(StorageError::from(e).into()),
        }
    }
    let target = ObjectRef {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    Err(WriteError::Contended { target })
}

/// Whether applying `new` over `stored` would change nothing an operator wrote.
fn same_content(stored: &Resource, new: &Resource) -> bool {
    stored.spec == new.spec
        && stored.metadata.labels == new.metadata.labels
        && stored.metadata.annotations == new.metadata.annotations
}

fn created(resource: &Resource) -> Resource {
    let mut next = resource.clone();
    next.metadata.generation = Some(1);
    next.metadata.creation_timestamp = Some(rfc3339(SystemTime::now()));
    next
}

fn updated(stored: &Resource, resource: &Resource) -> Resource {
    let mut next = resource.clone();
    let generation = stored.metadata.generation.unwrap_or(0);
    next.metadata.generation = Some(if stored.spec == resource.spec {
        generation
    } else {
        generation + 1
    });
    next.metadata
        .creation_timestamp
        .clone_from(&stored.metadata.creation_timestamp);
    next
}

fn applied(resource: &Resource, action: Action) -> Applied {
    Applied {
        kind: resource.kind,
        namespace: resource.metadata.namespace.clone(),
        name: resource.metadata.name.clone(),
        action,
    }
}
