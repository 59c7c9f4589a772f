//! The control plane's durable state: a key-value store with etcd's semantics.
//!
//! Every successful write bumps one store-wide revision and records the change in a
//! bounded change log, so a reader can list a prefix at some revision and then watch from
//! that revision without missing or repeating a change. Writes take a compare-and-swap
//! precondition ([`Expect`]) so concurrent writers never lose an update.
//!
//! [`Store`] is the contract; [`EmbeddedStore`] keeps the state in a redb file in the data
//! directory (the default: nothing to install), [`MemoryStore`] keeps it in memory for tests
//! of other components, and [`EtcdStore`] keeps it in an etcd cluster so several
//! control-plane replicas can share state. The semantics are etcd's, so that all three
//! behave alike: `revision` is etcd's `mod_revision`, `create_revision` is etcd's, and a
//! watch resumed from a compacted revision fails with [`StoreError::Compacted`].

mod apply;
pub mod election;
pub mod embedded;
mod error;
pub mod etcd;
pub mod memory;
pub mod migrate;
mod watch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::num::NonZeroUsize;

use bytes::Bytes;

pub use self::election::{Campaign, Standing};
pub use self::embedded::EmbeddedStore;
pub use self::error::StoreError;
pub use self::etcd::{EtcdSettings, EtcdStore};
pub use self::memory::MemoryStore;
pub use self::watch::Watch;

/// One stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub key: String,
    pub value: Bytes,
    /// The store revision of the write that last changed this key (etcd's `mod_revision`).
    pub revision: u64,
    /// The store revision of the write that created this key, kept across updates and
    /// reset when the key is deleted and written again (etcd's `create_revision`).
    pub create_revision: u64,
}

/// The precondition of a write (compare-and-swap).
///
/// Revisions start at 1, so `Revision(0)` never holds; use `Absent` for "create only".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// Write whatever the key holds.
    #[default]
    Any,
    /// Write only if the key does not exist.
    Absent,
    /// Write only if the key exists and was last changed at this revision.
    Revision(u64),
}

/// One change, as a watch delivers it. The revision is the store revision of the write
/// that made the change; for a put it is the new [`Versioned::revision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Versioned),
    Delete { key: String, revision: u64 },
}

/// Tuning shared by the store implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many of the latest changes the change log keeps for watches that resume from
    /// an older revision. Older changes are compacted: a watch from before them fails with
    /// [`StoreError::Compacted`] and must list again. Default 10 000 events.
    pub retained_events: NonZeroUsize,
    /// How many events each watch buffers, and how many the live fan-out to all watches
    /// holds, before a slow watcher stops being fed live and catches up from the change log
    /// instead. Default 1 024 events.
    pub watch_buffer: NonZeroUsize,
}

/// The contract every store implements: the embedded one, the in-memory one and etcd.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The entry at `key`, if there is one.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Every entry whose key starts with `prefix`, sorted by key, and the store revision
    /// the list is consistent with: watching from that revision sees every later change.
    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, u64), StoreError>;

    /// Writes `value` at `key` if `expect` holds and returns the new store revision. Every
    /// successful write bumps the store-wide revision by one (on an etcd cluster shared
    /// with other meshes, their writes bump it too); a failed one changes nothing.
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError>;

    /// Deletes `key` if it is present and `expect` holds. `Ok(Some(revision))` when it was
    /// deleted; `Ok(None)` when it was already absent and `expect` allows that (`Any` or
    /// `Absent`), in which case the revision does not change.
    async fn delete(&self, key: &str, expect: Expect) -> Result<Option<u64>, StoreError>;

    /// Changes to keys under `prefix` with a revision greater than `after`: first those
    /// already recorded in the change log, then live ones, in revision order with no gap
    /// and no duplicate. Fails with [`StoreError::Compacted`] if the log no longer holds
    /// every change after `after`; the caller then lists again and watches from the list's
    /// revision. See [`Watch`] for how a watch ends.
    async fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError>;

    /// The current store revision: that of the latest write; 0 for a new embedded or
    /// in-memory store, 1 for a new etcd cluster.
    async fn revision(&self) -> Result<u64, StoreError>;

    /// Joins the election `name` as `candidate` (a value unique to this process) until
    /// the campaign is dropped; see [`election`]. The default suits a store that only
    /// one process opens, as the embedded one is: its candidate leads.
    fn campaign(&self, name: &str, candidate: &str) -> Campaign {
        let _ = name;
        Campaign::sole(candidate)
    }
}

// === impl Expect ===

impl Expect {
    /// Whether the precondition holds for a key last changed at `current` (`None`: absent).
    pub fn holds(self, current: Option<u64>) -> bool {
        match (self, current) {
            (Expect::Any, _) | (Expect::Absent, None) => true,
            (Expect::Revision(expected), Some(current)) => expected == current,
            (Expect::Absent, Some(_)) | (Expect::Revision(_), None) => false,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => f.write_str("any revision"),
            Expect::Absent => f.write_str("the key to be absent"),
            Expect::Revision(revision) => write!(f, "revision {revision}"),
        }
    }
}

// === impl Event ===

impl Event {
    /// The store revision of the write that made this change.
    pub fn revision(&self) -> u64 {
        match self {
            Event::Put(entry) => entry.revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this change is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(entry) => &entry.key,
            Event::Delete { key, .. } => key,
        }
    }
}

// === impl StoreOptions ===

const DEFAULT_RETAINED_EVENTS: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

const DEFAULT_WATCH_BUFFER: NonZeroUsize = match NonZeroUsize::new(1_024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retained_events: DEFAULT_RETAINED_EVENTS,
            watch_buffer: DEFAULT_WATCH_BUFFER,
        }
    }
}
