//! The embedded store's file: what survives a restart, who may open it, and how a damaged
//! or foreign file is reported.

use std::path::{Path, PathBuf};

use super::{next, options, put, revisions, until_key};
use crate::store::embedded::FILE_NAME;
use crate::store::{EmbeddedStore, Event, Store, StoreError};

/// Prepares a data directory for a case.
type Prepare = fn(&Path);

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("data");
    (tmp, dir)
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("open the store")
}

#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        put(&store, "svc/a", "1").await;
        put(&store, "svc/b", "2").await;
        put(&store, "svc/a", "3").await;
        store
            .delete("svc/b", crate::store::Expect::Any)
            .await
            .expect("delete");
    }

    let store = open(&dir);
    assert_eq!(store.revision().await.expect("revision"), 4);
    let (entries, revision) = store.list("svc/").await.expect("list");
    assert_eq!(revision, 4);
    assert_eq!(entries.len(), 1);
    let a = &entries[0];
    assert_eq!(
        (a.key.as_str(), &a.value[..], a.revision, a.create_revision),
        ("svc/a", &b"3"[..], 3, 1)
    );

    // The change log survived too: a watch from the start replays the old history, and a
    // watch from the persisted revision continues with the next write.
    let mut from_start = store.watch("svc/", 0).await.expect("watch from 0");
    let mut from_now = store.watch("svc/", revision).await.expect("watch from now");
    assert_eq!(put(&store, "svc/c", "5").await, 5);
    assert_eq!(
        revisions(&until_key(&mut from_start, "svc/c").await),
        [1, 2, 3, 4, 5]
    );
    let event = next(&mut from_now).await;
    assert_eq!((event.key(), event.revision()), ("svc/c", 5));
}

#[tokio::test]
async fn second_open_is_refused_while_the_store_is_open() {
    let (_tmp, dir) = data_dir();
    let first = open(&dir);
    match EmbeddedStore::open(&dir) {
        Err(error @ StoreError::Locked { .. }) => {
            let message = error.to_string();
            assert!(message.contains(FILE_NAME), "{message}");
            assert!(message.contains("already open"), "{message}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    let reopened = open(&dir);
    assert_eq!(reopened.revision().await.expect("revision"), 0);
}

#[test]
fn damaged_or_foreign_files_are_reported_not_panicked_on() {
    // Each case prepares the data directory, then opening it must fail with a message that
    // names the file.
    let cases: [(&str, Prepare); 5] = [
        ("garbage", |dir| {
            write_file(&dir.join(FILE_NAME), &[0xab; 8192])
        }),
        ("truncated", |dir| {
            let bytes = valid_file_bytes(dir);
            write_file(&dir.join(FILE_NAME), &bytes[..bytes.len() / 2]);
        }),
        ("overwritten middle", |dir| {
            let mut bytes = valid_file_bytes(dir);
            let middle = bytes.len() / 2;
            bytes[middle..middle + 4096].fill(0x5a);
            write_file(&dir.join(FILE_NAME), &bytes);
        }),
        ("a directory in place of the file", |dir| {
            std::fs::create_dir_all(dir.join(FILE_NAME)).expect("mkdir");
        }),
        ("newer format", |dir| {
            let db = redb::Database::create(dir.join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("write");
            {
                let meta = redb::TableDefinition::<&str, u64>::new("meta");
                let mut table = txn.open_table(meta).expect("meta");
                table.insert("format", 99).expect("insert");
            }
            txn.commit().expect("commit");
        }),
    ];
    for (name, prepare) in cases {
        let (_tmp, dir) = data_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        prepare(&dir);
        match EmbeddedStore::open(&dir) {
            Ok(_) => panic!("{name}: opened"),
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains(FILE_NAME), "{name}: {message}");
                assert!(
                    matches!(error, StoreError::Corrupt { .. } | StoreError::Open { .. }),
                    "{name}: {error:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn data_dir_that_is_a_file_is_reported() {
    let (tmp, _) = data_dir();
    let file = tmp.path().join("not-a-dir");
    write_file(&file, b"x");
    let error = EmbeddedStore::open(&file).expect_err("a file is not a data directory");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("not-a-dir"), "{error}");
}

#[cfg(unix)]
#[tokio::test]
async fn data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = data_dir();
    let nested = dir.join("nested");
    let _store = open(&nested);
    for created in [&dir, &nested] {
        let mode = std::fs::metadata(created)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{}", created.display());
    }
}

#[tokio::test]
async fn lowering_retention_on_reopen_compacts_the_log() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        for i in 1..=10 {
            put(&store, &format!("k/{i}"), "v").await;
        }
    }
    let store = EmbeddedStore::open_with(&dir, options(3, 16)).expect("reopen");
    match store.watch("", 5).await {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (5, 8)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut watch = store
        .watch("", 7)
        .await
        .expect("watch from the oldest kept");
    put(&store, "end", "v").await;
    let events = until_key(&mut watch, "end").await;
    assert_eq!(revisions(&events), [8, 9, 10, 11]);
    assert!(matches!(&events[0], Event::Put(entry) if entry.key == "k/8"));
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write file");
}

/// The bytes of a closed store holding a few hundred entries, built in `dir`.
fn valid_file_bytes(dir: &Path) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = open(dir);
        let value = "v".repeat(512);
        for i in 0..300 {
            put(&store, &format!("k/{i}"), &value).await;
        }
    });
    std::fs::read(dir.join(FILE_NAME)).expect("read the store file")
}
