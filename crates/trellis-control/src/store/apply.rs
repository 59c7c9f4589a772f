//! The rules every store applies the same way, kept in one place so the implementations
//! cannot drift apart: how a write turns into a change (precondition, next revision,
//! create revision) and when the change log is too short for a watch.

use bytes::Bytes;

use super::{Event, Expect, StoreError, Versioned};

/// The revisions of a key as it is before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    pub revision: u64,
    pub create_revision: u64,
}

/// A requested write, before its precondition is checked.
#[derive(Debug)]
pub(crate) enum Write {
    Put(Bytes),
    Delete,
}

/// Decides what a write does to `key`, which is at `current`, in a store at
/// `store_revision`: the change to record and apply, `None` for a delete of an absent key
/// that the precondition allows (nothing changes), or a conflict.
pub(crate) fn plan(
    key: &str,
    write: Write,
    expect: Expect,
    current: Option<Current>,
    store_revision: u64,
) -> Result<Option<Event>, StoreError> {
    let current_revision = current.map(|c| c.revision);
    if !expect.holds(current_revision) {
        return Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: expect,
            current: current_revision,
        });
    }
    let revision = store_revision + 1;
    Ok(match (write, current) {
        (Write::Put(value), current) => Some(Event::Put(Versioned {
            key: key.to_owned(),
            value,
            revision,
            create_revision: current.map_or(revision, |c| c.create_revision),
        })),
        (Write::Delete, Some(_)) => Some(Event::Delete {
            key: key.to_owned(),
            revision,
        }),
        (Write::Delete, None) => None,
    })
}

/// What a write did: the change it made, if any, and the store revision after it (for a
/// put, the new revision).
#[derive(Debug)]
pub(crate) struct Applied {
    pub event: Option<Event>,
    pub revision: u64,
}

impl Applied {
    /// What [`Store::delete`](super::Store::delete) returns.
    pub(crate) fn deleted(&self) -> Option<u64> {
        self.event.as_ref().map(Event::revision)
    }
}

/// Fails with [`StoreError::Compacted`] unless a change log whose oldest event is
/// `first_kept` (`None`: empty) in a store at `store_revision` holds every change after
/// `after`.
pub(crate) fn check_retained(
    after: u64,
    first_kept: Option<u64>,
    store_revision: u64,
) -> Result<(), StoreError> {
    let oldest = first_kept.unwrap_or(store_revision + 1);
    if after.saturating_add(1) < oldest {
        return Err(StoreError::Compacted {
            requested: after,
            oldest,
        });
    }
    Ok(())
}

/// The revision a replay of the change log is complete through: the store's, or the
/// requested one if the watch starts in the future.
pub(crate) fn replayed_through(after: u64, store_revision: u64) -> u64 {
    after.max(store_revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_window() {
        // (after, first kept, store revision, ok?)
        let cases = [
            (0, None, 0, true),
            (0, Some(1), 5, true),
            (0, Some(2), 5, false),
            (1, Some(2), 5, true),
            (5, Some(6), 5, true),
            (9, Some(3), 5, true),
            (3, None, 5, false),
            (5, None, 5, true),
        ];
        for (after, first_kept, revision, ok) in cases {
            let result = check_retained(after, first_kept, revision);
            assert_eq!(
                result.is_ok(),
                ok,
                "after {after}, first kept {first_kept:?}, revision {revision}: {result:?}"
            );
        }
    }
}
