//! The store contract, checked against every implementation: each case is written once
//! against `dyn Store` and instantiated for the in-memory, the embedded and the etcd store
//! by `for_each_store!`. Revisions are counted from the store's revision when the case
//! opened it: 0 for a new embedded or in-memory store, wherever the cluster is for etcd.
//! Tests of the embedded store's file live in `file.rs`, of etcd clusters in `etcd.rs`.

mod etcd;
mod file;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use trellis_testkit::etcd::EtcdCluster;

use super::{
    EmbeddedStore, EtcdSettings, EtcdStore, Event, Expect, MemoryStore, Store, StoreError,
    StoreOptions, Watch,
};

/// Instantiates each case for every store implementation; those after `only_local:` do
/// not run on etcd.
macro_rules! for_each_store {
    ($($case:ident),* $(,)? ; only_local: $($local:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Kind::Memory).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $local() {
                    super::$local(super::Kind::Memory).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Kind::Embedded).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $local() {
                    super::$local(super::Kind::Embedded).await;
                }
            )*
        }
        mod etcd_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    // One single-member cluster per case; each store a case opens gets a
                    // key prefix of its own on it.
                    let cluster = trellis_testkit::etcd::EtcdCluster::start(1).await;
                    super::$case(super::Kind::Etcd(&cluster)).await;
                }
            )*
        }
    };
}

for_each_store!(
    get_put_update_delete,
    preconditions,
    revisions_increase_by_one_across_keys,
    list_is_prefix_filtered_and_sorted,
    watch_replays_history_then_streams_live,
    watch_from_revision,
    resumed_watch_sees_nothing_twice,
    watch_opened_during_writes_has_no_gap_or_duplicate,
    watch_from_compacted_revision_fails,
    slow_watcher_catches_up_from_the_log,
    watch_ends_when_store_is_dropped,
    concurrent_cas_increments_lose_nothing;
    // etcd does not end a slow watch when compaction passes it: what it has already sent
    // stays deliverable, and it cancels only watchers that lag its own send buffer.
    only_local: watcher_behind_compaction_ends_with_compacted,
);

// === fixtures ===

#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Memory,
    Embedded,
    Etcd(&'a EtcdCluster),
}

/// A store under test, its revision when opened, and what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    /// The store revision when the case opened it; the case counts its writes from here.
    base: u64,
    options: StoreOptions,
    /// For etcd, a client of the cluster's own to compact it: etcd's history is trimmed
    /// by its operator, not by the store.
    compactor: Option<etcd_client::Client>,
    _dir: Option<TempDir>,
}

impl Kind<'_> {
    async fn open(self) -> Fixture {
        self.open_with(StoreOptions::default()).await
    }

    async fn open_with(self, options: StoreOptions) -> Fixture {
        let (store, compactor, dir): (Arc<dyn Store>, _, _) = match self {
            Kind::Memory => (Arc::new(MemoryStore::with_options(options)), None, None),
            Kind::Embedded => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let store = EmbeddedStore::open_with(&dir.path().join("data"), options)
                    .expect("open the embedded store");
                (Arc::new(store), None, Some(dir))
            }
            Kind::Etcd(cluster) => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let mut settings = EtcdSettings::new(cluster.endpoints());
                settings.prefix = format!("/case-{}", NEXT.fetch_add(1, Ordering::Relaxed));
                settings.watch_buffer = options.watch_buffer;
                let store = EtcdStore::connect(settings).await.expect("connect to etcd");
                let compactor = etcd_client::Client::connect(cluster.endpoints(), None)
                    .await
                    .expect("connect to etcd");
                (Arc::new(store), Some(compactor), None)
            }
        };
        let base = store.revision().await.expect("revision");
        Fixture {
            store,
            base,
            options,
            compactor,
            _dir: dir,
        }
    }
}

impl Fixture {
    /// The store revision of the case's `n`th write.
    fn rev(&self, n: u64) -> u64 {
        self.base + n
    }

    /// Trims the change log to `retained_events`, as the local stores do on every write:
    /// for etcd, compacts so that the oldest revision kept whole is the first in the
    /// window.
    async fn enforce_retention(&mut self) {
        let Some(compactor) = &mut self.compactor else {
            return;
        };
        let revision = self.store.revision().await.expect("revision");
        let retained = u64::try_from(self.options.retained_events.get()).expect("u64");
        let compact = revision.saturating_sub(retained);
        if compact > 0 {
            compactor
                .compact(i64::try_from(compact).expect("i64"), None)
                .await
                .expect("compact etcd");
        }
    }
}

fn options(retained_events: usize, watch_buffer: usize) -> StoreOptions {
    StoreOptions {
        retained_events: NonZeroUsize::new(retained_events).expect("non-zero"),
        watch_buffer: NonZeroUsize::new(watch_buffer).expect("non-zero"),
    }
}

/// The next event; fails the test on an error, or if none comes in time (a hang is a bug).
async fn next(watch: &mut Watch) -> Event {
    match next_result(watch).await {
        Ok(event) => event,
        Err(error) => panic!("watch failed: {error}"),
    }
}

async fn next_result(watch: &mut Watch) -> Result<Event, StoreError> {
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("a watch event within 30s")
}

/// Events until (and including) the one for `key`; used after writing a sentinel to show
/// that nothing else was pending.
async fn until_key(watch: &mut Watch, key: &str) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = next(watch).await;
        let done = event.key() == key;
        events.push(event);
        if done {
            return events;
        }
    }
}

fn revisions(events: &[Event]) -> Vec<u64> {
    events.iter().map(Event::revision).collect()
}

async fn put(store: &dyn Store, key: &str, value: &str) -> u64 {
    store
        .put(key, value.as_bytes().to_vec(), Expect::Any)
        .await
        .expect("put")
}

// === cases ===

async fn get_put_update_delete(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let store = &*fixture.store;
    let rev = |n| fixture.rev(n);
    assert_eq!(store.get("a").await.expect("get"), None);
    assert_eq!(store.revision().await.expect("revision"), rev(0));

    assert_eq!(
        store
            .put("a", b"1".to_vec(), Expect::Absent)
            .await
            .expect("create"),
        rev(1)
    );
    assert_eq!(put(store, "b", "x").await, rev(2));
    assert_eq!(
        store
            .put("a", b"2".to_vec(), Expect::Revision(rev(1)))
            .await
            .expect("update"),
        rev(3)
    );
    let a = store.get("a").await.expect("get").expect("a exists");
    assert_eq!((a.key.as_str(), &a.value[..]), ("a", &b"2"[..]));
    assert_eq!(
        (a.revision, a.create_revision),
        (rev(3), rev(1)),
        "an update keeps the create revision"
    );

    assert_eq!(
        store.delete("a", Expect::Any).await.expect("delete"),
        Some(rev(4))
    );
    assert_eq!(store.get("a").await.expect("get"), None);
    assert_eq!(
        store.delete("a", Expect::Any).await.expect("delete absent"),
        None
    );
    assert_eq!(
        store.revision().await.expect("revision"),
        rev(4),
        "a no-op delete writes nothing"
    );

    assert_eq!(put(store, "a", "3").await, rev(5));
    let a = store.get("a").await.expect("get").expect("a exists");
    assert_eq!(
        (a.revision, a.create_revision),
        (rev(5), rev(5)),
        "a re-created key starts afresh"
    );
}

async fn preconditions(kind: Kind<'_>) {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        Put,
        Delete,
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Written(u64),
        Unchanged,
        Conflict(Option<u64>),
    }
    /// A precondition, with revisions counted from the case's base.
    #[derive(Debug, Clone, Copy)]
    enum Given {
        Any,
        Absent,
        Revision(u64),
    }
    use Given::{Absent, Any, Revision};
    // "a" is at revision 1, "b" at 2 and "z" is absent; a write succeeds at revision 3.
    // `Revision(0)` never holds.
    let cases = [
        (Op::Put, "a", Any, Want::Written(3)),
        (Op::Put, "a", Absent, Want::Conflict(Some(1))),
        (Op::Put, "a", Revision(1), Want::Written(3)),
        (Op::Put, "a", Revision(2), Want::Conflict(Some(1))),
        (Op::Put, "z", Absent, Want::Written(3)),
        (Op::Put, "z", Revision(1), Want::Conflict(None)),
        (Op::Delete, "a", Any, Want::Written(3)),
        (Op::Delete, "a", Revision(1), Want::Written(3)),
        (Op::Delete, "a", Revision(2), Want::Conflict(Some(1))),
        (Op::Delete, "a", Absent, Want::Conflict(Some(1))),
        (Op::Delete, "z", Any, Want::Unchanged),
        (Op::Delete, "z", Absent, Want::Unchanged),
        (Op::Delete, "z", Revision(1), Want::Conflict(None)),
    ];
    for (op, key, given, want) in cases {
        let fixture = kind.open().await;
        let store = &*fixture.store;
        let rev = |n| fixture.rev(n);
        put(store, "a", "1").await;
        put(store, "b", "2").await;
        let expect = match given {
            Any => Expect::Any,
            Absent => Expect::Absent,
            Revision(n) => Expect::Revision(rev(n)),
        };
        let want = match want {
            Want::Written(n) => Want::Written(rev(n)),
            Want::Conflict(current) => Want::Conflict(current.map(rev)),
            Want::Unchanged => Want::Unchanged,
        };
        let result = match op {
            Op::Put => store.put(key, b"new".to_vec(), expect).await.map(Some),
            Op::Delete => store.delete(key, expect).await,
        };
        let case = format!("{op:?} {key} expecting {given:?}");
        let got = match result {
            Ok(Some(revision)) => Want::Written(revision),
            Ok(None) => Want::Unchanged,
            Err(StoreError::Conflict {
                key: conflict_key,
                expected,
                current,
            }) => {
                assert_eq!((conflict_key.as_str(), expected), (key, expect), "{case}");
                Want::Conflict(current)
            }
            Err(error) => panic!("{case}: {error}"),
        };
        let wrote = matches!(got, Want::Written(_));
        assert_eq!(got, want, "{case}");
        let revision = store.revision().await.expect("revision");
        assert_eq!(
            revision,
            rev(if wrote { 3 } else { 2 }),
            "{case}: only a write bumps"
        );
    }
    // A revision that never was conflicts on a present key and an absent one alike.
    let fixture = kind.open().await;
    let store = &*fixture.store;
    put(store, "a", "1").await;
    for key in ["a", "z"] {
        let put = store.put(key, b"new".to_vec(), Expect::Revision(0)).await;
        let delete = store.delete(key, Expect::Revision(0)).await;
        for result in [put.map(Some), delete] {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{key}: {result:?}"
            );
        }
    }
    assert_eq!(store.revision().await.expect("revision"), fixture.rev(1));
}

async fn revisions_increase_by_one_across_keys(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let store = &*fixture.store;
    // Puts to three keys, and every fourth write deletes one that exists.
    for round in 1..=20u64 {
        let key = format!("k{}", round % 3);
        let revision = if round % 4 == 0 {
            store.delete(&key, Expect::Any).await.expect("delete")
        } else {
            Some(put(store, &key, "v").await)
        };
        let want = fixture.rev(round);
        assert_eq!(revision, Some(want), "write {round} on {key}");
        assert_eq!(store.revision().await.expect("revision"), want);
        assert_eq!(store.list("").await.expect("list").1, want);
    }
}

async fn list_is_prefix_filtered_and_sorted(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let store = &*fixture.store;
    for key in [
        "svc/b",
        "svc/a",
        "svc2/x",
        "sv",
        "svc/a/deep",
        "other",
        "svc/",
    ] {
        put(store, key, key).await;
    }
    let cases: [(&str, &[&str]); 5] = [
        ("svc/", &["svc/", "svc/a", "svc/a/deep", "svc/b"]),
        ("svc", &["svc/", "svc/a", "svc/a/deep", "svc/b", "svc2/x"]),
        (
            "",
            &[
                "other",
                "sv",
                "svc/",
                "svc/a",
                "svc/a/deep",
                "svc/b",
                "svc2/x",
            ],
        ),
        ("svc/a/", &["svc/a/deep"]),
        ("nothing/", &[]),
    ];
    for (prefix, want) in cases {
        let (entries, revision) = store.list(prefix).await.expect("list");
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, want, "prefix {prefix:?}");
        assert_eq!(revision, fixture.rev(7), "prefix {prefix:?}");
        for entry in &entries {
            assert_eq!(entry.value, entry.key.as_bytes(), "prefix {prefix:?}");
        }
    }
}

async fn watch_replays_history_then_streams_live(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let store = &*fixture.store;
    let rev = |n| fixture.rev(n);
    put(store, "w/a", "1").await;
    put(store, "other/x", "1").await;
    put(store, "w/b", "2").await;
    store.delete("w/a", Expect::Any).await.expect("delete");

    let mut watch = store.watch("w/", rev(0)).await.expect("watch");
    put(store, "w/c", "3").await;
    put(store, "other/y", "3").await;
    put(store, "w/b", "4").await;

    let events = until_key(&mut watch, "w/b").await;
    assert_eq!(revisions(&events), [rev(1), rev(3)], "history first");
    let events = until_key(&mut watch, "w/b").await;
    assert_eq!(
        revisions(&events),
        [rev(4), rev(5), rev(7)],
        "then live, filtered by prefix"
    );
    let Event::Put(b) = &events[2] else {
        panic!("expected a put, got {:?}", events[2]);
    };
    assert_eq!((&b.value[..], b.create_revision), (&b"4"[..], rev(3)));
    assert_eq!(
        events[0],
        Event::Delete {
            key: "w/a".to_owned(),
            revision: rev(4)
        }
    );
}

async fn watch_from_revision(kind: Kind<'_>) {
    // Watching after `after` sees exactly the changes with a greater revision: recorded ones
    // replayed, later ones live, even when `after` is ahead of the store.
    let cases: [(u64, &[u64]); 5] = [
        (0, &[1, 2, 3, 4, 5, 7, 8, 9]),
        (2, &[3, 4, 5, 7, 8, 9]),
        (5, &[7, 8, 9]),
        (6, &[7, 8, 9]),
        (8, &[9]),
    ];
    for (after, want) in cases {
        let fixture = kind.open().await;
        let store = &*fixture.store;
        for value in ["1", "2", "3", "4", "5"] {
            put(store, &format!("w/{value}"), value).await;
        }
        put(store, "x/6", "6").await;
        let mut watch = store.watch("w/", fixture.rev(after)).await.expect("watch");
        for value in ["7", "8", "9"] {
            put(store, &format!("w/{value}"), value).await;
        }
        let events = until_key(&mut watch, "w/9").await;
        let want: Vec<u64> = want.iter().map(|&n| fixture.rev(n)).collect();
        assert_eq!(revisions(&events), want, "watch after {after}");
    }
}

async fn resumed_watch_sees_nothing_twice(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let store = &*fixture.store;
    for value in ["1", "2", "3", "4", "5"] {
        put(store, &format!("k/{value}"), value).await;
    }
    let mut watch = store.watch("k/", fixture.rev(0)).await.expect("watch");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut watch).await.revision());
    }
    drop(watch);
    put(store, "k/6", "6").await;

    let last = seen[seen.len() - 1];
    let mut resumed = store.watch("k/", last).await.expect("resume");
    put(store, "k/7", "7").await;
    put(store, "k/end", "end").await;
    seen.extend(revisions(&until_key(&mut resumed, "k/end").await));
    assert_eq!(
        seen,
        (1..=8).map(|n| fixture.rev(n)).collect::<Vec<_>>(),
        "every change once, in order"
    );
}

async fn watch_opened_during_writes_has_no_gap_or_duplicate(kind: Kind<'_>) {
    const WRITES: u64 = 150;
    let fixture = kind.open().await;
    let store = Arc::clone(&fixture.store);
    let writer = tokio::spawn(async move {
        for i in 1..=WRITES {
            put(&*store, &format!("k/{}", i % 7), "v").await;
            // The memory store never waits; let the watches open in between.
            tokio::task::yield_now().await;
        }
    });
    // Open watches while the writer runs, each from wherever the store is at.
    let mut watches = Vec::new();
    for _ in 0..5 {
        let after = fixture.store.revision().await.expect("revision");
        let watch = fixture.store.watch("k/", after).await.expect("watch");
        watches.push((after, watch));
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
    for (after, mut watch) in watches {
        let want: Vec<u64> = (after + 1..=fixture.rev(WRITES)).collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(next(&mut watch).await.revision());
        }
        assert_eq!(got, want, "after {after}");
    }
}

async fn watch_from_compacted_revision_fails(kind: Kind<'_>) {
    let mut fixture = kind.open_with(options(3, 16)).await;
    for value in ["1", "2", "3", "4", "5", "6"] {
        put(&*fixture.store, "k", value).await;
    }
    fixture.enforce_retention().await;
    let store = &*fixture.store;
    let rev = |n| fixture.rev(n);
    // Revisions 4, 5 and 6 are kept.
    for after in [0, 1, 2] {
        match store.watch("", rev(after)).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!(
                    (requested, oldest),
                    (rev(after), rev(4)),
                    "watch after {after}"
                );
            }
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        }
    }
    let mut watch = store
        .watch("", rev(3))
        .await
        .expect("the oldest kept revision is enough");
    put(store, "end", "end").await;
    assert_eq!(
        revisions(&until_key(&mut watch, "end").await),
        [rev(4), rev(5), rev(6), rev(7)]
    );
}

async fn slow_watcher_catches_up_from_the_log(kind: Kind<'_>) {
    // The live fan-out holds 2 events: a watcher that reads nothing while 40 are written
    // lags, and must catch up from the change log without a gap.
    let fixture = kind.open_with(options(1_000, 2)).await;
    let store = &*fixture.store;
    let mut watch = store.watch("", fixture.rev(0)).await.expect("watch");
    for i in 0..40 {
        put(store, &format!("k/{i}"), "v").await;
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        got.push(next(&mut watch).await.revision());
    }
    assert_eq!(got, (1..=40).map(|n| fixture.rev(n)).collect::<Vec<_>>());
}

async fn watcher_behind_compaction_ends_with_compacted(kind: Kind<'_>) {
    let fixture = kind.open_with(options(4, 2)).await;
    let store = &*fixture.store;
    let mut watch = store.watch("", 0).await.expect("watch");
    for i in 0..40 {
        put(store, &format!("k/{i}"), "v").await;
    }
    // Whatever was buffered before the watcher fell behind arrives in order; then the
    // watch ends because revisions it still needs were compacted.
    let mut expected = 1;
    let error = loop {
        match next_result(&mut watch).await {
            Ok(event) => {
                assert_eq!(event.revision(), expected);
                expected += 1;
            }
            Err(error) => break error,
        }
    };
    let last = expected - 1;
    assert!(
        matches!(error, StoreError::Compacted { requested, oldest } if requested == last && oldest > last + 1),
        "got {error:?} after revision {last}"
    );
    assert!(matches!(watch.next().await, Err(StoreError::Closed)));
}

async fn watch_ends_when_store_is_dropped(kind: Kind<'_>) {
    let fixture = kind.open().await;
    let after = fixture.rev(0);
    let Fixture { store, .. } = fixture;
    let mut watch = store.watch("", after).await.expect("watch");
    put(&*store, "k", "v").await;
    assert_eq!(next(&mut watch).await.revision(), after + 1);
    drop(store);
    assert!(matches!(
        next_result(&mut watch).await,
        Err(StoreError::Closed)
    ));
}

async fn concurrent_cas_increments_lose_nothing(kind: Kind<'_>) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 50;
    let fixture = kind.open().await;
    let store = &fixture.store;
    store
        .put("counter", b"0".to_vec(), Expect::Absent)
        .await
        .expect("create the counter");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    increment(&*store, "counter").await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("increment task");
    }
    let counter = store.get("counter").await.expect("get").expect("counter");
    assert_eq!(counter.value, (TASKS * INCREMENTS).to_string().as_bytes());
    assert_eq!(
        counter.revision,
        fixture.rev(TASKS * INCREMENTS + 1),
        "one revision per increment"
    );
    assert_eq!(counter.create_revision, fixture.rev(1));
}

/// Read, add one, write back only if nobody wrote in between; retry on conflict.
async fn increment(store: &dyn Store, key: &str) {
    loop {
        let current = store.get(key).await.expect("get").expect("counter exists");
        let n: u64 = std::str::from_utf8(&current.value)
            .expect("utf-8")
            .parse()
            .expect("a number");
        let next = (n + 1).to_string().into_bytes();
        match store
            .put(key, next, Expect::Revision(current.revision))
            .await
        {
            Ok(_) => return,
            Err(error) if error.is_conflict() => continue,
            Err(error) => panic!("increment: {error}"),
        }
    }
}
