//! An in-memory [`Store`] with the same semantics as the embedded one, for tests of the
//! components built on the store. Nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::{self, Future};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::apply::{self, Applied, Current, Write};
use super::election::{Campaign, LocalElections};
use super::watch::{self, ChangeLog, Fanout};
use super::{Event, Expect, Store, StoreError, StoreOptions, Versioned, Watch};

/// A store in memory. Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Held only for the few steps of one operation, never across an await; writes also
    // publish to `fanout` while holding it so changes go out in revision order.
    state: Mutex<State>,
    fanout: Fanout,
    options: StoreOptions,
    elections: Arc<LocalElections>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Versioned>,
    log: VecDeque<Event>,
    revision: u64,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store with the default options.
    pub fn new() -> Self {
        Self::with_options(StoreOptions::default())
    }

    pub fn with_options(options: StoreOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                fanout: Fanout::new(options.watch_buffer),
                options,
                elections: Arc::default(),
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("revision", &self.inner.lock().revision)
            .field("options", &self.inner.options)
            .finish()
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.inner.lock().entries.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, u64), StoreError> {
        let state = self.inner.lock();
        let entries = state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry.clone())
            .collect();
        Ok((entries, state.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let applied = self
            .inner
            .write(key, Write::Put(Bytes::from(value)), expect)?;
        Ok(applied.revision)
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.write(key, Write::Delete, expect)?.deleted())
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        watch::open(&self.inner, prefix, after).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().revision)
    }

    fn campaign(&self, name: &str, candidate: &str) -> Campaign {
        self.inner.elections.campaign(name, candidate)
    }
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every write checks before it changes anything, so a panic elsewhere cannot have
        // left the state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, key: &str, write: Write, expect: Expect) -> Result<Applied, StoreError> {
        let mut state = self.lock();
        let current = state.entries.get(key).map(|entry| Current {
            revision: entry.revision,
            create_revision: entry.create_revision,
        });
        let Some(event) = apply::plan(key, write, expect, current, state.revision)? else {
            return Ok(Applied {
                event: None,
                revision: state.revision,
            });
        };
        match &event {
            Event::Put(entry) => {
                state.entries.insert(key.to_owned(), entry.clone());
            }
            Event::Delete { .. } => {
                state.entries.remove(key);
            }
        }
        state.revision = event.revision();
        state.log.push_back(event.clone());
        while state.log.len() > self.options.retained_events.get() {
            state.log.pop_front();
        }
        self.fanout.publish(&event);
        Ok(Applied {
            revision: state.revision,
            event: Some(event),
        })
    }

    fn read_since(&self, prefix: &str, after: u64) -> Result<(Vec<Event>, u64), StoreError> {
        let state = self.lock();
        let first_kept = state.log.front().map(Event::revision);
        apply::check_retained(after, first_kept, state.revision)?;
        let events = state
            .log
            .iter()
            .filter(|event| event.revision() > after && event.key().starts_with(prefix))
            .cloned()
            .collect();
        Ok((events, apply::replayed_through(after, state.revision)))
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
        future::ready(self.read_since(&prefix, after))
    }
}
