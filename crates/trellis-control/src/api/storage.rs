//! How resources are laid out in the [`Store`], shared by everything that reads or
//! writes them (the API, the compiler, the push layer writing Workloads).
//!
//! - Key: `/resources/<Kind name>/<namespace>/<name>`, e.g.
//!   `/resources/HTTPRoute/bookinfo/ratings`. Cluster-wide kinds use `-` as the
//!   namespace (`/resources/MeshConfig/-/default`); `-` is never a valid namespace.
//! - Value: the resource as JSON, without `status` (computed on read, see
//!   [`super::status`]) and without `metadata.resourceVersion`, which is the entry's store
//!   revision and is filled in by [`decode`]. `metadata.generation` and
//!   `metadata.creationTimestamp` are stored.
//!
//! Write through [`super::write`](mod@super::write), which keeps those fields right.

use trellis_api::{Kind, Resource};

use crate::store::{Store, StoreError, Versioned};

/// Prefix of every resource key.
pub const PREFIX: &str = "/resources/";

/// The namespace segment of cluster-wide kinds, in store keys and API paths.
pub const CLUSTER_NAMESPACE: &str = "-";

/// Why resources could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value is not a resource; nothing here writes such a value, so the store
    /// was written by something else or damaged.
    #[error("the value stored at {key} is not a resource: {reason}")]
    Corrupt { key: String, reason: String },
    /// A resource could not be turned into JSON.
    #[error("cannot encode {key} as JSON: {reason}")]
    Encode { key: String, reason: String },
}

/// The store key of one object: `/resources/<Kind>/<namespace>/<name>`, with `-` as the
/// namespace of cluster-wide kinds whatever `namespace` says.
pub fn resource_key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}{name}", namespace_prefix(kind, namespace))
}

/// The key of `resource`.
pub fn key_of(resource: &Resource) -> String {
    resource_key(
        resource.kind,
        &resource.metadata.namespace,
        &resource.metadata.name,
    )
}

/// The prefix of every key of `kind`: `/resources/<Kind>/`.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{PREFIX}{}/", kind.name())
}

/// The prefix of every key of `kind` in `namespace`: `/resources/<Kind>/<namespace>/`.
pub fn namespace_prefix(kind: Kind, namespace: &str) -> String {
    let namespace = if kind.is_namespaced() {
        namespace
    } else {
        CLUSTER_NAMESPACE
    };
    format!("{PREFIX}{}/{namespace}/", kind.name())
}

/// Reads a stored entry, with `metadata.resourceVersion` set to its revision.
pub fn decode(entry: &Versioned) -> Result<Resource, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: entry.key.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&entry.value).map_err(|e| corrupt(e.to_string()))?;
    let mut resource = Resource::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    resource.metadata.resource_version = Some(entry.revision.to_string());
    resource.status = None;
    Ok(resource)
}

/// The value stored for `resource`: its JSON without status and resourceVersion.
pub fn encode(resource: &Resource) -> Result<Vec<u8>, StorageError> {
    let mut stored = resource.clone();
    stored.status = None;
    stored.metadata.resource_version = None;
    serde_json::to_vec(&stored).map_err(|e| StorageError::Encode {
        key: key_of(resource),
        reason: e.to_string(),
    })
}

/// One object, if it exists.
pub async fn read(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Resource>, StorageError> {
    match store.get(&resource_key(kind, namespace, name)).await? {
        Some(entry) => decode(&entry).map(Some),
        None => Ok(None),
    }
}

/// Every resource of every kind, sorted by key (kind, namespace, name).
pub async fn read_all(store: &dyn Store) -> Result<Vec<Resource>, StorageError> {
    read_prefix(store, PREFIX).await.map(|(all, _)| all)
}

/// Every resource under `prefix` (see [`kind_prefix`], [`namespace_prefix`]), sorted by
/// key, and the store revision the list is consistent with, to watch from.
pub async fn read_prefix(
    store: &dyn Store,
    prefix: &str,
) -> Result<(Vec<Resource>, u64), StorageError> {
    let (entries, revision) = store.list(prefix).await?;
    let resources = entries.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((resources, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let cases = [
            (
                Kind::HTTPRoute,
                "bookinfo",
                "ratings",
                "/resources/HTTPRoute/bookinfo/ratings",
            ),
            (
                Kind::Service,
                "default",
                "web",
                "/resources/Service/default/web",
            ),
            (
                Kind::MeshConfig,
                "",
                "default",
                "/resources/MeshConfig/-/default",
            ),
            (
                Kind::MeshConfig,
                "ignored",
                "default",
                "/resources/MeshConfig/-/default",
            ),
        ];
        for (kind, ns, name, want) in cases {
            assert_eq!(resource_key(kind, ns, name), want);
            assert!(want.starts_with(&kind_prefix(kind)));
            assert!(want.starts_with(&namespace_prefix(kind, ns)));
        }
    }
}
