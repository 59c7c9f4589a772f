//! The etcd [`Store`]: the mesh's state in an etcd v3 cluster, so that several
//! control-plane replicas can share it.
//!
//! The semantics are the embedded store's, mapped onto etcd's: a store revision is the
//! cluster's revision (a response header's), an entry's `revision` and `create_revision`
//! are etcd's `mod_revision` and `create_revision`, a precondition is a transaction that
//! compares them (`create_revision == 0` for "absent"), and a watch is an etcd watch
//! resumed from a revision. The change log watches replay from is etcd's history, which
//! the cluster's operator compacts (`--auto-compaction-*`); a watch from before the
//! compaction fails with [`StoreError::Compacted`].
//!
//! Every key lives under a prefix (`/trellis/` by default), so several meshes can share
//! a cluster. Their writes share the cluster's revision counter too: with a shared
//! cluster the store revision still only grows, but by more than one per write of this
//! mesh.
//!
//! A request goes to any member and is retried on another when that is safe
//! ([`call`]); past the request timeout it fails with [`StoreError::Unavailable`], as it
//! does when the cluster has lost its quorum.

mod call;
mod election;
mod settings;
mod watch;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, GetResponse, KeyValue, ResponseHeader, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use tokio::sync::watch as signal;
use tokio::time::Instant;

use self::call::{Caller, Failure, Op};
pub use self::settings::{EtcdAuth, EtcdSettings, EtcdTls, DEFAULT_PREFIX, URL_SCHEME};
use super::{Campaign, Expect, Store, StoreError, Versioned, Watch};

/// How many entries one read of a list returns; a long list is read in pages at one
/// revision, so no single response nears gRPC's message size limit.
const PAGE: i64 = 500;

/// Raised from tonic's 4 MiB default so a page of large values or a burst of watch
/// events still decodes; etcd bounds a single value at 1.5 MiB by default.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The store in an etcd cluster. Clones share the connections.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    /// Dropped with the last clone of the store, which ends every watch with
    /// [`StoreError::Closed`].
    _open: signal::Sender<()>,
    closed: signal::Receiver<()>,
}

/// What requests need: the client and the key prefix. Watches hold their own copy, not
/// the store, so a forgotten watch does not keep the store open.
#[derive(Clone)]
struct Conn {
    caller: Caller,
    /// The key prefix, ending with `/`.
    root: String,
    watch_buffer: usize,
    /// Lifetime of the leases elections hold.
    lease_ttl: std::time::Duration,
}

// === impl EtcdStore ===

impl EtcdStore {
    /// Connects to the cluster and checks that a member with a leader answers, so that a
    /// wrong endpoint, certificate or password fails here rather than at first use.
    pub async fn connect(settings: EtcdSettings) -> Result<Self, StoreError> {
        let root = settings.root()?;
        let options = settings.connect_options()?;
        let endpoints = settings.describe_endpoints();
        let client = connect_client(&settings, options).await?;
        let (open, closed) = signal::channel(());
        let store = Self {
            inner: Arc::new(Inner {
                conn: Conn {
                    caller: Caller {
                        client,
                        endpoints,
                        timeout: settings.request_timeout,
                    },
                    root,
                    watch_buffer: settings.watch_buffer.get(),
                    lease_ttl: settings.lease_ttl,
                },
                _open: open,
                closed,
            }),
        };
        store.revision().await?;
        Ok(store)
    }

    /// The prefix every key is stored under, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.inner.conn.root
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.conn.caller.endpoints)
            .field("prefix", &self.inner.conn.root)
            .finish()
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let conn = &self.inner.conn;
        let full = conn.key(key);
        let response = conn
            .call(Op::Read("read an entry"), |mut client| {
                let full = full.clone();
                async move { client.get(full, None).await }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| conn.versioned(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Versioned>, u64), StoreError> {
        let conn = &self.inner.conn;
        let op = Op::Read("list entries");
        let deadline = Instant::now() + conn.caller.timeout;
        loop {
            match conn.list_at_one_revision(prefix).await {
                // A compaction between two pages took the revision the first page was read
                // at; start again at a newer one.
                Err(StoreError::Compacted { .. }) if Instant::now() < deadline => continue,
                Err(StoreError::Compacted { .. }) => return Err(conn.caller.timed_out(op, None)),
                result => return result,
            }
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let conn = &self.inner.conn;
        let full = conn.key(key);
        let op = Op::Write("write an entry");
        let guard = match expect {
            Expect::Any => {
                let response = conn
                    .call(op, |mut client| {
                        let (full, value) = (full.clone(), value.clone());
                        async move { client.put(full, value, None).await }
                    })
                    .await?;
                return header_revision(response.header());
            }
            Expect::Absent => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            Expect::Revision(0) => return Err(self.conflict(key, expect).await),
            Expect::Revision(revision) => {
                Compare::mod_revision(full.clone(), CompareOp::Equal, to_etcd(revision)?)
            }
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(full.clone(), value, None)])
            .or_else([TxnOp::get(full, None)]);
        let response = conn.txn(op, txn).await?;
        if response.succeeded() {
            header_revision(response.header())
        } else {
            Err(conflict(key, expect, current_revision(&response)?))
        }
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<Option<u64>, StoreError> {
        let conn = &self.inner.conn;
        let full = conn.key(key);
        let op = Op::Write("delete an entry");
        match expect {
            Expect::Any => {
                let response = conn
                    .call(op, |mut client| {
                        let full = full.clone();
                        async move { client.delete(full, None).await }
                    })
                    .await?;
                if response.deleted() == 0 {
                    return Ok(None);
                }
                header_revision(response.header()).map(Some)
            }
            // Nothing to write either way: absent is success, present a conflict.
            Expect::Absent => match self.get(key).await? {
                None => Ok(None),
                Some(entry) => Err(conflict(key, expect, Some(entry.revision))),
            },
            Expect::Revision(0) => Err(self.conflict(key, expect).await),
            Expect::Revision(revision) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        to_etcd(revision)?,
                    )])
                    .and_then([TxnOp::delete(full.clone(), None)])
                    .or_else([TxnOp::get(full, None)]);
                let response = conn.txn(op, txn).await?;
                if response.succeeded() {
                    header_revision(response.header()).map(Some)
                } else {
                    Err(conflict(key, expect, current_revision(&response)?))
                }
            }
        }
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        let inner = &self.inner;
        watch::open(inner.conn.clone(), inner.closed.clone(), prefix, after).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let conn = &self.inner.conn;
        // The cheapest linearizable read: whether one key exists.
        let root = conn.root.clone();
        let response = conn
            .call(Op::Read("read the revision"), |mut client| {
                let options = GetOptions::new().with_count_only();
                let root = root.clone();
                async move { client.get(root, Some(options)).await }
            })
            .await?;
        header_revision(response.header())
    }

    fn campaign(&self, name: &str, candidate: &str) -> Campaign {
        let conn = self.inner.conn.clone();
        let ttl = conn.lease_ttl;
        election::campaign(conn, name, candidate, ttl)
    }
}

impl EtcdStore {
    /// The conflict for a precondition that can never hold (`Revision(0)`), with the
    /// key's current revision.
    async fn conflict(&self, key: &str, expect: Expect) -> StoreError {
        match self.get(key).await {
            Ok(current) => conflict(key, expect, current.map(|entry| entry.revision)),
            Err(error) => error,
        }
    }
}

// === impl Conn ===

impl Conn {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    async fn call<T, F, Fut>(&self, op: Op, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.caller.call(op, attempt).await
    }

    async fn txn(&self, op: Op, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.call(op, |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// Every entry under `prefix`, read in pages all at the revision of the first.
    async fn list_at_one_revision(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Versioned>, u64), StoreError> {
        let start = self.key(prefix);
        let end = prefix_end(start.as_bytes());
        let mut from = start.clone().into_bytes();
        let mut at = None;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(revision) = at {
                options = options.with_revision(revision);
            }
            let key = from.clone();
            let response: GetResponse = self
                .call(Op::Read("list entries"), |client| {
                    let (key, options) = (key.clone(), options.clone());
                    async move {
                        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
                        kv.get(key, Some(options)).await
                    }
                })
                .await
                .map_err(|error| compacted_as_such(error, at))?;
            let revision = header_revision(response.header())?;
            at.get_or_insert(to_etcd(revision)?);
            for kv in response.kvs() {
                entries.push(self.versioned(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    // The next page starts just after the last key read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    let revision = at.map_or(Ok(revision), from_etcd)?;
                    return Ok((entries, revision));
                }
            }
        }
    }

    /// An entry as the store shows it: its key without the prefix.
    fn versioned(&self, kv: &KeyValue) -> Result<Versioned, StoreError> {
        Ok(Versioned {
            key: self.strip(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            revision: from_etcd(kv.mod_revision())?,
            create_revision: from_etcd(kv.create_revision())?,
        })
    }

    fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key).map_err(|error| StoreError::Backend {
            op: "read a key",
            source: Box::new(error),
        })?;
        key.strip_prefix(&self.root)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend {
                op: "read a key",
                source: format!("etcd returned {key:?}, outside the prefix {:?}", self.root).into(),
            })
    }
}

// === helpers ===

/// Connects, retrying within the connect timeout: with credentials the client
/// authenticates at once, through whichever member the balancer picks, which may be down.
async fn connect_client(
    settings: &EtcdSettings,
    options: etcd_client::ConnectOptions,
) -> Result<Client, StoreError> {
    let deadline = Instant::now() + settings.connect_timeout;
    loop {
        let attempt = tokio::time::timeout_at(
            deadline,
            Client::connect(&settings.endpoints, Some(options.clone())),
        )
        .await;
        let error = match attempt {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(StoreError::Unavailable {
                    reason: format!(
                        "cannot connect to etcd at {} within {:?}",
                        settings.describe_endpoints(),
                        settings.connect_timeout
                    ),
                })
            }
        };
        match call::classify(&error) {
            Failure::NotSent | Failure::InFlight if Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Failure::NotSent | Failure::InFlight => {
                return Err(StoreError::Unavailable {
                    reason: format!(
                        "cannot connect to etcd at {}: {}",
                        settings.describe_endpoints(),
                        call::describe(&error)
                    ),
                })
            }
            Failure::Refused => {
                return Err(StoreError::Backend {
                    op: "connect to etcd",
                    source: call::describe(&error).into(),
                })
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a
/// prefix); `\0` (no end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn conflict(key: &str, expected: Expect, current: Option<u64>) -> StoreError {
    StoreError::Conflict {
        key: key.to_owned(),
        expected,
        current,
    }
}

/// The key's revision from the `get` a failed transaction ran instead of its write.
fn current_revision(response: &TxnResponse) -> Result<Option<u64>, StoreError> {
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get
                .kvs()
                .first()
                .map(|kv| from_etcd(kv.mod_revision()))
                .transpose();
        }
    }
    Err(StoreError::Backend {
        op: "read a transaction's result",
        source: "etcd answered a failed transaction without the key's state".into(),
    })
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<u64, StoreError> {
    let header = header.ok_or_else(|| StoreError::Backend {
        op: "read a response",
        source: "etcd answered without a response header".into(),
    })?;
    from_etcd(header.revision())
}

fn from_etcd(revision: i64) -> Result<u64, StoreError> {
    u64::try_from(revision).map_err(|_| StoreError::Backend {
        op: "read a revision",
        source: format!("etcd returned a negative revision {revision}").into(),
    })
}

fn to_etcd(revision: u64) -> Result<i64, StoreError> {
    i64::try_from(revision).map_err(|_| StoreError::Backend {
        op: "write",
        source: format!("revision {revision} is beyond etcd's range").into(),
    })
}

/// A read at a pinned revision that etcd has compacted since becomes
/// [`StoreError::Compacted`], so the caller can read again at a newer one.
fn compacted_as_such(error: StoreError, at: Option<i64>) -> StoreError {
    match (&error, at) {
        (StoreError::Backend { source, .. }, Some(at))
            if source.to_string().contains(watch::COMPACTED_MESSAGE) =>
        {
            let requested = u64::try_from(at).unwrap_or(0);
            StoreError::Compacted {
                requested,
                oldest: requested + 1,
            }
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"/trellis/", b"/trellis0"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        }
    }
}
