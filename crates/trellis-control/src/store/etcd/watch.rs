//! Watches on etcd: an etcd watch from a revision, resumed on another member when its
//! member fails, ending with [`StoreError::Compacted`] when etcd's history no longer
//! reaches back to it.
//!
//! A watch after revision `after` asks etcd for events from `after` itself, not
//! `after + 1`, and drops those at `after`. etcd accepts a watch that starts exactly at
//! its compaction revision, but compaction has removed the deletions made at that
//! revision, so such a watch would silently miss them. Starting one revision earlier makes
//! etcd refuse precisely when a change after `after` may be gone, and the oldest revision
//! whose changes are all still there is the compaction revision plus one.
//!
//! A task per watch reads the etcd stream and forwards converted events into the
//! watch's bounded channel; while the consumer is slow it stops reading, and etcd's own
//! flow control holds the rest. It remembers the last revision it has passed on (and the
//! revisions etcd's progress notifications vouch for), so a stream that breaks is
//! reopened after it with no gap and no duplicate.

use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};
use tokio::sync::{mpsc, watch as signal};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::call::Op;
use super::{from_etcd, to_etcd, Conn, MAX_MESSAGE};
use crate::store::{Event, StoreError, Watch};

/// What etcd says about a read at a revision it has compacted.
pub(super) const COMPACTED_MESSAGE: &str = "required revision has been compacted";
/// What etcd says about a read at a revision it has not reached yet.
const FUTURE_MESSAGE: &str = "required revision is a future revision";

/// Opens a watch of the changes under `prefix` after revision `after`.
pub(super) async fn open(
    conn: Conn,
    closed: signal::Receiver<()>,
    prefix: &str,
    after: u64,
) -> Result<Watch, StoreError> {
    let start = after.max(1);
    let mut stream = subscribe(&conn, prefix, start).await?;
    // etcd reports a compacted start revision only later on the stream; a read at that
    // revision tells at once, so the caller gets the error from `watch` itself.
    if let Err(error) = check_history(&conn, start).await {
        return Err(match error {
            StoreError::Compacted { .. } => compaction(&conn, &mut stream, after, start).await,
            other => other,
        });
    }
    let (tx, rx) = mpsc::channel(conn.watch_buffer);
    let forwarder = Forwarder {
        conn,
        prefix: prefix.to_owned(),
        seen: after,
        tx,
        closed,
    };
    tokio::spawn(forwarder.run(stream));
    Ok(Watch::from_channel(rx))
}

/// An etcd watch stream of the keys under `prefix` from `start`, confirmed by etcd.
async fn subscribe(conn: &Conn, prefix: &str, start: u64) -> Result<WatchStream, StoreError> {
    let key = conn.key(prefix);
    let start = to_etcd(start)?;
    conn.call(Op::Read("open a watch"), |client| {
        let key = key.clone();
        async move {
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(start)
                // Lets a quiet watch advance its resume point past other meshes' writes.
                .with_progress_notify();
            let mut watch = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
            let mut stream = watch.watch(key, Some(options)).await?;
            match stream.message().await? {
                Some(response) if response.canceled() => {
                    // Refused at creation (permissions): no point trying elsewhere.
                    let reason = format!("etcd refused the watch: {}", response.cancel_reason());
                    Err(Status::new(Code::FailedPrecondition, reason).into())
                }
                Some(response) if response.created() => Ok(stream),
                _ => Err(etcd_client::Error::WatchError(
                    "the watch stream closed before etcd confirmed it".to_owned(),
                )),
            }
        }
    })
    .await
}

/// Whether etcd still holds every revision from `start` on.
async fn check_history(conn: &Conn, start: u64) -> Result<(), StoreError> {
    let root = conn.root.clone();
    let revision = to_etcd(start)?;
    let read = conn
        .call(Op::Read("check the watch's history"), |mut client| {
            let root = root.clone();
            let options = GetOptions::new().with_revision(revision).with_count_only();
            async move { client.get(root, Some(options)).await }
        })
        .await;
    match read {
        Ok(_) => Ok(()),
        Err(StoreError::Backend { source, .. })
            if source.to_string().contains(COMPACTED_MESSAGE) =>
        {
            Err(StoreError::Compacted {
                requested: start,
                oldest: start + 1,
            })
        }
        // A watch may start ahead of the store; etcd waits for the revision.
        Err(StoreError::Backend { source, .. }) if source.to_string().contains(FUTURE_MESSAGE) => {
            Ok(())
        }
        Err(other) => Err(other),
    }
}

/// The error for a watch from before the compaction revision, which etcd sends on the
/// stream within its next sync of lagging watchers (every 100 ms).
async fn compaction(conn: &Conn, stream: &mut WatchStream, after: u64, start: u64) -> StoreError {
    let deadline = Instant::now() + conn.caller.timeout;
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(deadline, stream.message()).await {
        if let Ok(compacted) = u64::try_from(response.compact_revision()) {
            if compacted > 0 {
                return StoreError::Compacted {
                    requested: after,
                    oldest: compacted + 1,
                };
            }
        }
    }
    // The read already proved the compaction; its exact revision is only known to be
    // past the one asked for.
    StoreError::Compacted {
        requested: after,
        oldest: start + 2,
    }
}

struct Forwarder {
    conn: Conn,
    prefix: String,
    /// Every change up to this revision has been forwarded or was not under the prefix.
    seen: u64,
    tx: mpsc::Sender<Result<Event, StoreError>>,
    /// Fails once the store is dropped.
    closed: signal::Receiver<()>,
}

impl Forwarder {
    async fn run(mut self, mut stream: WatchStream) {
        let end = 'stream: loop {
            let message = tokio::select! {
                _ = self.closed.changed() => break StoreError::Closed,
                () = self.tx.closed() => return, // the watch was dropped
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => {
                    if let Err(error) = &message {
                        tracing::debug!(%error, "etcd watch stream failed; resuming");
                    }
                    match self.resume().await {
                        Ok(resumed) => {
                            stream = resumed;
                            continue;
                        }
                        Err(error) => break error,
                    }
                }
            };
            if response.canceled() {
                match u64::try_from(response.compact_revision()) {
                    Ok(compacted) if compacted > 0 => {
                        break StoreError::Compacted {
                            requested: self.seen,
                            oldest: compacted + 1,
                        }
                    }
                    _ => {
                        tracing::debug!(
                            reason = response.cancel_reason(),
                            "etcd canceled a watch; resuming"
                        );
                        match self.resume().await {
                            Ok(resumed) => stream = resumed,
                            Err(error) => break error,
                        }
                        continue;
                    }
                }
            }
            if response.events().is_empty() {
                // A progress notification: every change up to its revision has been sent.
                // (The confirmation of a new watch carries a revision too, but one the
                // watch may not have caught up with yet.)
                if !response.created() {
                    if let Some(revision) = response.header().map(|h| h.revision()) {
                        self.seen = self.seen.max(u64::try_from(revision).unwrap_or(0));
                    }
                }
                continue;
            }
            // A response holds whole revisions, so anything at or below the resume point
            // was forwarded before.
            let floor = self.seen;
            let events: Result<Vec<Event>, StoreError> =
                response.events().iter().map(|e| self.convert(e)).collect();
            let events = match events {
                Ok(events) => events,
                Err(error) => break error,
            };
            for event in events.into_iter().filter(|e| e.revision() > floor) {
                self.seen = self.seen.max(event.revision());
                tokio::select! {
                    _ = self.closed.changed() => break 'stream StoreError::Closed,
                    sent = self.tx.send(Ok(event)) => if sent.is_err() { return },
                }
            }
        };
        // The consumer may be gone already; then there is no one to tell.
        let _ = self.tx.send(Err(end)).await;
    }

    /// Reopens the watch after the last change forwarded, on whichever member answers.
    async fn resume(&mut self) -> Result<WatchStream, StoreError> {
        tokio::select! {
            _ = self.closed.changed() => Err(StoreError::Closed),
            stream = subscribe(&self.conn, &self.prefix, self.seen.max(1)) => stream,
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Event, StoreError> {
        let kv = event.kv().ok_or_else(|| StoreError::Backend {
            op: "read a watch event",
            source: "etcd sent an event without its key".into(),
        })?;
        Ok(match event.event_type() {
            EventType::Put => Event::Put(self.conn.versioned(kv)?),
            EventType::Delete => Event::Delete {
                key: self.conn.strip(kv.key())?,
                revision: from_etcd(kv.mod_revision())?,
            },
        })
    }
}
