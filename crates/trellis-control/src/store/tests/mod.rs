//! The store contract, checked against every implementation: each case is written once
//! against `dyn Store` and instantiated for the in-memory and the embedded store by
//! `for_each_store!`. Tests of the embedded store's file live in `file.rs`.

mod file;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use super::{EmbeddedStore, Event, Expect, MemoryStore, Store, StoreError, StoreOptions, Watch};

/// Instantiates each case for every store implementation.
macro_rules! for_each_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Kind::Memory).await;
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
    watcher_behind_compaction_ends_with_compacted,
    watch_ends_when_store_is_dropped,
    concurrent_cas_increments_lose_nothing,
);

// === fixtures ===

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Embedded,
}

/// A store under test and the directory that holds its file, if any.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Kind {
    fn open(self) -> Fixture {
        self.open_with(StoreOptions::default())
    }

    fn open_with(self, options: StoreOptions) -> Fixture {
        match self {
            Kind::Memory => Fixture {
                store: Arc::new(MemoryStore::with_options(options)),
                _dir: None,
            },
            Kind::Embedded => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let store = EmbeddedStore::open_with(&dir.path().join("data"), options)
                    .expect("open the embedded store");
                Fixture {
                    store: Arc::new(store),
                    _dir: Some(dir),
                }
            }
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

async fn get_put_update_delete(kind: Kind) {
    let fixture = kind.open();
    let store = &*fixture.store;
    assert_eq!(store.get("a").await.expect("get"), None);
    assert_eq!(store.revision().await.expect("revision"), 0);

    assert_eq!(
        store
            .put("a", b"1".to_vec(), Expect::Absent)
            .await
            .expect("create"),
        1
    );
    assert_eq!(put(store, "b", "x").await, 2);
    assert_eq!(
        store
            .put("a", b"2".to_vec(), Expect::Revision(1))
            .await
            .expect("update"),
        3
    );
    let a = store.get("a").await.expect("get").expect("a exists");
    assert_eq!((a.key.as_str(), &a.value[..]), ("a", &b"2"[..]));
    assert_eq!(
        (a.revision, a.create_revision),
        (3, 1),
        "an update keeps the create revision"
    );

    assert_eq!(
        store.delete("a", Expect::Any).await.expect("delete"),
        Some(4)
    );
    assert_eq!(store.get("a").await.expect("get"), None);
    assert_eq!(
        store.delete("a", Expect::Any).await.expect("delete absent"),
        None
    );
    assert_eq!(
        store.revision().await.expect("revision"),
        4,
        "a no-op delete writes nothing"
    );

    assert_eq!(put(store, "a", "3").await, 5);
    let a = store.get("a").await.expect("get").expect("a exists");
    assert_eq!(
        (a.revision, a.create_revision),
        (5, 5),
        "a re-created key starts afresh"
    );
}

async fn preconditions(kind: Kind) {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        Put,
        Delete,
    }
    #[derive(Debug, PartialEq)]
    enum Want {
        Written(u64),
        Unchanged,
        Conflict(Option<u64>),
    }
    use Expect::{Absent, Any, Revision};
    // "a" is at revision 1, "b" at 2 and "z" is absent; a write succeeds at revision 3.
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
    for (op, key, expect, want) in cases {
        let fixture = kind.open();
        let store = &*fixture.store;
        put(store, "a", "1").await;
        put(store, "b", "2").await;
        let result = match op {
            Op::Put => store.put(key, b"new".to_vec(), expect).await.map(Some),
            Op::Delete => store.delete(key, expect).await,
        };
        let case = format!("{op:?} {key} expecting {expect:?}");
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
            if wrote { 3 } else { 2 },
            "{case}: only a write bumps"
        );
    }
}

async fn revisions_increase_by_one_across_keys(kind: Kind) {
    let fixture = kind.open();
    let store = &*fixture.store;
    // Puts to three keys, and every fourth write deletes one that exists.
    for round in 1..=20u64 {
        let key = format!("k{}", round % 3);
        let revision = if round % 4 == 0 {
            store.delete(&key, Expect::Any).await.expect("delete")
        } else {
            Some(put(store, &key, "v").await)
        };
        assert_eq!(revision, Some(round), "write {round} on {key}");
        assert_eq!(store.revision().await.expect("revision"), round);
        assert_eq!(store.list("").await.expect("list").1, round);
    }
}

async fn list_is_prefix_filtered_and_sorted(kind: Kind) {
    let fixture = kind.open();
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
        assert_eq!(revision, 7, "prefix {prefix:?}");
        for entry in &entries {
            assert_eq!(entry.value, entry.key.as_bytes(), "prefix {prefix:?}");
        }
    }
}

async fn watch_replays_history_then_streams_live(kind: Kind) {
    let fixture = kind.open();
    let store = &*fixture.store;
    put(store, "w/a", "1").await;
    put(store, "other/x", "1").await;
    put(store, "w/b", "2").await;
    store.delete("w/a", Expect::Any).await.expect("delete");

    let mut watch = store.watch("w/", 0).await.expect("watch");
    put(store, "w/c", "3").await;
    put(store, "other/y", "3").await;
    put(store, "w/b", "4").await;

    let events = until_key(&mut watch, "w/b").await;
    assert_eq!(revisions(&events), [1, 3], "history first");
    let events = until_key(&mut watch, "w/b").await;
    assert_eq!(
        revisions(&events),
        [4, 5, 7],
        "then live, filtered by prefix"
    );
    let Event::Put(b) = &events[2] else {
        panic!("expected a put, got {:?}", events[2]);
    };
    assert_eq!((&b.value[..], b.create_revision), (&b"4"[..], 3));
    assert_eq!(
        events[0],
        Event::Delete {
            key: "w/a".to_owned(),
            revision: 4
        }
    );
}

async fn watch_from_revision(kind: Kind) {
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
        let fixture = kind.open();
        let store = &*fixture.store;
        for value in ["1", "2", "3", "4", "5"] {
            put(store, &format!("w/{value}"), value).await;
        }
        put(store, "x/6", "6").await;
        let mut watch = store.watch("w/", after).await.expect("watch");
        for value in ["7", "8", "9"] {
            put(store, &format!("w/{value}"), value).await;
        }
        let events = until_key(&mut watch, "w/9").await;
        assert_eq!(revisions(&events), want, "watch after {after}");
    }
}

async fn resumed_watch_sees_nothing_twice(kind: Kind) {
    let fixture = kind.open();
    let store = &*fixture.store;
    for value in ["1", "2", "3", "4", "5"] {
        put(store, &format!("k/{value}"), value).await;
    }
    let mut watch = store.watch("k/", 0).await.expect("watch");
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
        (1..=8).collect::<Vec<_>>(),
        "every change once, in order"
    );
}

async fn watch_opened_during_writes_has_no_gap_or_duplicate(kind: Kind) {
    const WRITES: u64 = 150;
    let fixture = kind.open();
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
        let want: Vec<u64> = (after + 1..=WRITES).collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(next(&mut watch).await.revision());
        }
        assert_eq!(got, want, "after {after}");
    }
}

async fn watch_from_compacted_revision_fails(kind: Kind) {
    let fixture = kind.open_with(options(3, 16));
    let store = &*fixture.store;
    for value in ["1", "2", "3", "4", "5", "6"] {
        put(store, "k", value).await;
    }
    // Revisions 4, 5 and 6 are kept.
    for after in [0, 1, 2] {
        match store.watch("", after).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (after, 4), "watch after {after}");
            }
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        }
    }
    let mut watch = store
        .watch("", 3)
        .await
        .expect("the oldest kept revision is enough");
    put(store, "end", "end").await;
    assert_eq!(revisions(&until_key(&mut watch, "end").await), [4, 5, 6, 7]);
}

async fn slow_watcher_catches_up_from_the_log(kind: Kind) {
    // The live fan-out holds 2 events: a watcher that reads nothing while 40 are written
    // lags, and must catch up from the change log without a gap.
    let fixture = kind.open_with(options(1_000, 2));
    let store = &*fixture.store;
    let mut watch = store.watch("", 0).await.expect("watch");
    for i in 0..40 {
        put(store, &format!("k/{i}"), "v").await;
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        got.push(next(&mut watch).await.revision());
    }
    assert_eq!(got, (1..=40).collect::<Vec<_>>());
}

async fn watcher_behind_compaction_ends_with_compacted(kind: Kind) {
    let fixture = kind.open_with(options(4, 2));
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

async fn watch_ends_when_store_is_dropped(kind: Kind) {
    let Fixture { store, _dir } = kind.open();
    let mut watch = store.watch("", 0).await.expect("watch");
    put(&*store, "k", "v").await;
    assert_eq!(next(&mut watch).await.revision(), 1);
    drop(store);
    assert!(matches!(
        next_result(&mut watch).await,
        Err(StoreError::Closed)
    ));
}

async fn concurrent_cas_increments_lose_nothing(kind: Kind) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 50;
    let fixture = kind.open();
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
        TASKS * INCREMENTS + 1,
        "one revision per increment"
    );
    assert_eq!(counter.create_revision, 1);
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
