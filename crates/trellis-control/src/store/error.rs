//! What a store operation can fail with, and what the caller should do about it.

use std::path::PathBuf;

use super::Expect;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A compare-and-swap precondition did not hold; nothing was written. Retryable after
    /// reading the key again.
    #[error("conflict on key {key:?}: expected {expected}, but {}", describe_current(*.current))]
    Conflict {
        key: String,
        expected: Expect,
        /// The revision the key is at, `None` if it is absent.
        current: Option<u64>,
    },

    /// A watch asked for changes the change log no longer holds. The caller must list
    /// again and watch from the revision the list returns.
    #[error(
        "cannot watch from after revision {requested}: the change log starts at revision \
         {oldest}; list again and watch from the list's revision"
    )]
    Compacted {
        /// The revision the watch asked to resume after.
        requested: u64,
        /// The oldest revision the change log still holds.
        oldest: u64,
    },

    /// Another process (or another handle in this one) has the store open.
    #[error(
        "cannot open store at {}: it is already open in another process; stop that process \
         or use another data directory",
        path.display()
    )]
    Locked { path: PathBuf },

    /// The store's file is damaged and was not opened, so nothing was lost by starting.
    #[error(
        "cannot open store at {}: the file is corrupt ({detail}); restore it from a backup \
         or move it aside to start with an empty store",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// The store could not be opened for another reason (permissions, a missing directory,
    /// a file written by a newer version).
    #[error("cannot open store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The storage backend failed while doing `op`.
    #[error("store failed to {op}: {source}")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The store has shut down; a watch ends with this once its store is gone.
    #[error("the store is closed")]
    Closed,

    /// The backend cannot serve requests now: no etcd member answered within the request
    /// timeout, or the cluster has lost its quorum. Retryable later. A write that fails
    /// this way while it was in flight may or may not have been applied; the reason says
    /// so.
    #[error("the store is unavailable: {reason}")]
    Unavailable { reason: String },

    /// The store's settings cannot be used: no endpoint, an endpoint that is not
    /// `host:port`, a certificate file that cannot be read.
    #[error("invalid store settings: {reason}")]
    Settings { reason: String },
}

impl StoreError {
    /// Whether the operation may succeed if tried again after reading the current state
    /// (a conflict), as opposed to needing a relist (compacted) or an operator.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// Whether the backend could not be reached or had no quorum: the operation may
    /// succeed later without any change on the caller's side.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

fn describe_current(current: Option<u64>) -> String {
    match current {
        Some(revision) => format!("it is at revision {revision}"),
        None => "the key is absent".to_owned(),
    }
}

/// Tags a backend error with the operation that failed.
pub(crate) trait During<T> {
    fn during(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T, E> During<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn during(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Backend {
            op,
            source: Box::new(source),
        })
    }
}
