//! Moving a mesh's state from one store to another: `trellis store migrate` copies an
//! embedded installation into etcd, to run several control planes on it.
//!
//! Every key is copied as it is (resources, the CA, the admin token), each written
//! create-only, into a target that must be empty: a migration never overwrites another
//! mesh's state. Revisions are the target's own, and configuration versions are store
//! revisions, so the target's revision is then moved past the source's: a proxy that
//! served version N from the old store gets a version above N from the new one, never
//! the same number for another configuration.

use super::{Expect, Store, StoreError};

/// Written over and over to move the target's revision past the source's.
const REVISION_KEY: &str = "/migration/revision";

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Keys copied.
    pub keys: usize,
    /// Of those, resources (`/resources/…`).
    pub resources: usize,
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the target store is not empty ({keys} keys, among them {first:?}): migrate only into an empty store or prefix")]
    TargetNotEmpty { keys: usize, first: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Copies every entry of `from` into the empty store `to`.
pub async fn migrate(from: &dyn Store, to: &dyn Store) -> Result<Migrated, MigrateError> {
    let (existing, _) = to.list("").await?;
    if let Some(first) = existing.first() {
        return Err(MigrateError::TargetNotEmpty {
            keys: existing.len(),
            first: first.key.clone(),
        });
    }
    let (entries, source_revision) = from.list("").await?;
    let mut migrated = Migrated {
        keys: 0,
        resources: 0,
    };
    for entry in entries {
        to.put(&entry.key, entry.value.to_vec(), Expect::Absent)
            .await?;
        migrated.keys += 1;
        if entry.key.starts_with("/resources/") {
            migrated.resources += 1;
        }
    }
    while to.revision().await? <= source_revision {
        to.put(REVISION_KEY, Vec::new(), Expect::Any).await?;
    }
    to.delete(REVISION_KEY, Expect::Any).await?;
    Ok(migrated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn copies_everything_into_an_empty_store_only() {
        let from = MemoryStore::new();
        for key in [
            "/resources/Service/default/books",
            "/ca/signer",
            "/admin/token",
        ] {
            from.put(key, key.as_bytes().to_vec(), Expect::Any)
                .await
                .expect("put");
        }
        for _ in 0..20 {
            from.put(
                "/resources/Service/default/books",
                b"v".to_vec(),
                Expect::Any,
            )
            .await
            .expect("put");
        }
        let to = MemoryStore::new();
        let migrated = migrate(&from, &to).await.expect("migrate");
        assert_eq!(
            migrated,
            Migrated {
                keys: 3,
                resources: 1
            }
        );
        let (copied, _) = to.list("").await.expect("list");
        let keys: Vec<_> = copied
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_ref()))
            .collect();
        assert!(keys.contains(&("/ca/signer", b"/ca/signer".as_slice())));
        assert_eq!(keys.len(), 3);
        // Versions only grow across the move.
        let from_revision = from.revision().await.expect("revision");
        assert!(to.revision().await.expect("revision") > from_revision);
        // A second run finds the target in use and writes nothing.
        let again = migrate(&from, &to).await;
        assert!(matches!(
            again,
            Err(MigrateError::TargetNotEmpty { keys: 3, .. })
        ));
    }
}
