//! The embedded [`Store`]: one redb file, `store.redb`, in the control plane's data
//! directory. Nothing to install, and it survives restarts.
//!
//! Three tables live in the file: `entries` (key → revision, create revision, value),
//! `changes` (revision → change, the change log watches replay from) and `meta` (the store
//! revision and the file's format version). A write updates all three in one transaction,
//! so the revision counter, the data and the log never disagree after a crash. The change
//! log keeps the latest [`StoreOptions::retained_events`] changes; each write drops the
//! ones that fall out of that window.
//!
//! redb is synchronous and a commit waits for the disk, so every operation runs on
//! tokio's blocking pool (`spawn_blocking`) rather than stalling a runtime thread. Writes
//! are serialized by a lock taken inside the blocking task, which also covers publishing
//! the change to live watches, so changes reach watches in revision order.

use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    WriteTransaction,
};

use super::apply::{self, Applied, Current, Write};
use super::error::During;
use super::watch::{self, ChangeLog, Fanout};
use super::{Event, Expect, Store, StoreError, StoreOptions, Versioned, Watch};

/// The file inside the data directory.
pub const FILE_NAME: &str = "store.redb";

/// key → (revision, create revision, value)
const ENTRIES: TableDefinition<'_, &str, (u64, u64, &[u8])> = TableDefinition::new("entries");
/// revision → the change made at that revision
const CHANGES: TableDefinition<'_, u64, Change<'_>> = TableDefinition::new("changes");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// A recorded change: the key, and (create revision, value) for a put or `None` for a
/// delete.
type Change<'a> = (&'a str, Option<(u64, &'a [u8])>);
type ChangeTable<'txn> = redb::Table<'txn, u64, Change<'static>>;

const META_REVISION: &str = "revision";
const META_FORMAT: &str = "format";
/// Bumped when the layout of the tables changes; a file of a newer format is refused.
const FORMAT_VERSION: u64 = 1;

/// The store in a redb file. Clones share the open database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Serializes writes together with their publication on `fanout`. Taken only inside a
    /// blocking task, never held across an await.
    writer: Mutex<()>,
    fanout: Fanout,
    options: StoreOptions,
}

#[derive(Debug, thiserror::Error)]
#[error("the file has format version {found}, but this build reads only version {FORMAT_VERSION}; use a newer trellis")]
struct UnsupportedFormat {
    found: u64,
}

// === impl EmbeddedStore ===

impl EmbeddedStore {
    /// Opens the store in `dir` with the default options, creating the directory (mode
    /// 0700) and the file if needed. Blocks while it checks the file's integrity: call it
    /// at start-up or from `spawn_blocking`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Like [`EmbeddedStore::open`], with options. Lowering `retained_events` below what
    /// the file holds compacts the change log right away.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        create_dir(dir).map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source: Box::new(source),
        })?;
        let path = dir.join(FILE_NAME);
        // Checking integrity on open turns a damaged file into an error instead of a
        // panic on first use; the file is small enough that the extra read is cheap.
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|error| open_error(&path, error))?;
        initialize(&db, &options).map_err(|error| match error {
            StoreError::Backend { source, .. } => StoreError::Open {
                path: path.clone(),
                source,
            },
            other => other,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                writer: Mutex::new(()),
                fanout: Fanout::new(options.watch_buffer),
                options,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        blocking(Arc::clone(&self.inner), op).await
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish()
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, u64), StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let key = key.to_owned();
        let write = Write::Put(Bytes::from(value));
        let applied = self
            .blocking(move |inner| inner.write(&key, write, expect))
            .await?;
        Ok(applied.revision)
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Option<u64>, StoreError> {
        let key = key.to_owned();
        let applied = self
            .blocking(move |inner| inner.write(&key, Write::Delete, expect))
            .await?;
        Ok(applied.deleted())
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        watch::open(&self.inner, prefix, after).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().during("begin a read")?;
            let meta = txn.open_table(META).during("open the meta table")?;
            read_revision(&meta)
        })
        .await
    }
}

// === impl Inner ===

impl Inner {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let txn = self.db.begin_read().during("begin a read")?;
        let entries = txn.open_table(ENTRIES).during("open the entries table")?;
        let entry = entries.get(key).during("read an entry")?;
        Ok(entry.map(|guard| versioned(key, guard.value())))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, u64), StoreError> {
        let txn = self.db.begin_read().during("begin a read")?;
        let meta = txn.open_table(META).during("open the meta table")?;
        let entries = txn.open_table(ENTRIES).during("open the entries table")?;
        let mut list = Vec::new();
        for row in entries.range::<&str>(prefix..).during("list entries")? {
            let (key, value) = row.during("list entries")?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            list.push(versioned(key, value.value()));
        }
        Ok((list, read_revision(&meta)?))
    }

    fn write(&self, key: &str, write: Write, expect: Expect) -> Result<Applied, StoreError> {
        let _serial = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().during("begin a write")?;
        // On a conflict, or when there is nothing to change, the transaction is dropped
        // uncommitted, which aborts it.
        let applied = self.stage(&txn, key, write, expect)?;
        let Some(event) = &applied.event else {
            return Ok(applied);
        };
        txn.commit().during("commit a write")?;
        self.fanout.publish(event);
        Ok(applied)
    }

    /// Makes a write inside `txn`: the entry, the recorded change, the compaction of the
    /// change log and the new store revision, all or nothing.
    fn stage(
        &self,
        txn: &WriteTransaction,
        key: &str,
        write: Write,
        expect: Expect,
    ) -> Result<Applied, StoreError> {
        let mut meta = txn.open_table(META).during("open the meta table")?;
        let mut entries = txn.open_table(ENTRIES).during("open the entries table")?;
        let mut changes = txn.open_table(CHANGES).during("open the change log")?;
        let revision = read_revision(&meta)?;
        let current = entries.get(key).during("read an entry")?.map(|guard| {
            let (revision, create_revision, _) = guard.value();
            Current {
                revision,
                create_revision,
            }
        });
        let Some(event) = apply::plan(key, write, expect, current, revision)? else {
            return Ok(Applied {
                event: None,
                revision,
            });
        };
        match &event {
            Event::Put(entry) => {
                let row = (entry.revision, entry.create_revision, entry.value.as_ref());
                entries.insert(key, row).during("write an entry")?;
            }
            Event::Delete { .. } => {
                entries.remove(key).during("delete an entry")?;
            }
        }
        record(&mut changes, &event)?;
        compact(&mut changes, event.revision(), &self.options)?;
        meta.insert(META_REVISION, event.revision())
            .during("write the revision")?;
        Ok(Applied {
            revision: event.revision(),
            event: Some(event),
        })
    }

    fn read_since(&self, prefix: &str, after: u64) -> Result<(Vec<Event>, u64), StoreError> {
        let txn = self.db.begin_read().during("begin a read")?;
        let meta = txn.open_table(META).during("open the meta table")?;
        let changes = txn.open_table(CHANGES).during("open the change log")?;
        let revision = read_revision(&meta)?;
        let first_kept = changes
            .first()
            .during("read the change log")?
            .map(|(revision, _)| revision.value());
        apply::check_retained(after, first_kept, revision)?;
        let mut events = Vec::new();
        let range = (Bound::Excluded(after), Bound::Unbounded);
        for row in changes.range(range).during("read the change log")? {
            let (revision, change) = row.during("read the change log")?;
            let (key, put) = change.value();
            if key.starts_with(prefix) {
                events.push(event(revision.value(), key, put));
            }
        }
        Ok((events, apply::replayed_through(after, revision)))
    }
}

impl ChangeLog for Inner {
    fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    fn since(
        self: Arc<Self>,
        prefix: String,
        after: u64,
    ) -> impl Future<Output = Result<(Vec<Event>, u64), StoreError>> + Send {
        blocking(self, move |inner| inner.read_since(&prefix, after))
    }
}

// === helpers ===

/// Runs a redb operation on the blocking pool.
async fn blocking<T, F>(inner: Arc<Inner>, op: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || op(&inner)).await {
        Ok(result) => result,
        // A panic in a store operation is a bug: let it reach the caller as one.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(StoreError::Closed),
    }
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    let path = path.to_owned();
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            StoreError::Corrupt { path, detail }
        }
        other => StoreError::Open {
            path,
            source: Box::new(other),
        },
    }
}

/// Creates the tables of a new file, checks the format of an existing one, and applies
/// the retention in `options` to its change log.
fn initialize(db: &Database, options: &StoreOptions) -> Result<(), StoreError> {
    let txn = db.begin_write().during("begin a write")?;
    {
        let mut meta = txn.open_table(META).during("open the meta table")?;
        txn.open_table(ENTRIES).during("open the entries table")?;
        let mut changes = txn.open_table(CHANGES).during("open the change log")?;
        let format = meta.get(META_FORMAT).during("read the format")?;
        match format.map(|guard| guard.value()) {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .during("write the format")?;
                meta.insert(META_REVISION, 0).during("write the revision")?;
            }
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(StoreError::Backend {
                    op: "read the file",
                    source: Box::new(UnsupportedFormat { found }),
                })
            }
        }
        let revision = read_revision(&meta)?;
        compact(&mut changes, revision, options)?;
    }
    txn.commit().during("commit the initial tables")
}

fn read_revision(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    let revision = meta.get(META_REVISION).during("read the revision")?;
    Ok(revision.map_or(0, |guard| guard.value()))
}

fn record(changes: &mut ChangeTable<'_>, event: &Event) -> Result<(), StoreError> {
    let row = match event {
        Event::Put(entry) => (
            entry.key.as_str(),
            Some((entry.create_revision, entry.value.as_ref())),
        ),
        Event::Delete { key, .. } => (key.as_str(), None),
    };
    changes
        .insert(event.revision(), row)
        .map(drop)
        .during("record a change")
}

/// Drops the changes older than the retention window ending at `revision`.
fn compact(
    changes: &mut ChangeTable<'_>,
    revision: u64,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let retained = u64::try_from(options.retained_events.get()).unwrap_or(u64::MAX);
    let cutoff = revision.saturating_sub(retained);
    if cutoff == 0 {
        return Ok(());
    }
    changes
        .retain_in(..=cutoff, |_, _| false)
        .during("compact the change log")
}

fn versioned(key: &str, (revision, create_revision, value): (u64, u64, &[u8])) -> Versioned {
    Versioned {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        revision,
        create_revision,
    }
}

fn event(revision: u64, key: &str, put: Option<(u64, &[u8])>) -> Event {
    match put {
        Some((create_revision, value)) => Event::Put(Versioned {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value),
            revision,
            create_revision,
        }),
        None => Event::Delete {
            key: key.to_owned(),
            revision,
        },
    }
}
