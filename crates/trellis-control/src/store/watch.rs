//! Watches, shared by the store implementations: a replay of the change log merged with
//! the live fan-out of new changes, with no gap and no duplicate.
//!
//! A store publishes every committed change on a `broadcast` channel, in revision order
//! (it sends while it still holds its write lock, so the next write cannot overtake).
//! Opening a watch subscribes to that channel *before* reading the change log, so every
//! change is in the replay, in the subscription, or in both; live changes at or below the
//! revision the replay is complete through are skipped.
//!
//! A task per watch forwards changes into the watch's bounded channel. When the consumer
//! is slow, the forwarder waits for it and the live channel overflows; the forwarder then
//! notices the lag (or a gap in revisions) and catches up from the change log instead of
//! failing. Only when the consumer falls so far behind that the change log has compacted
//! the revisions it still needs does the watch end, with [`StoreError::Compacted`].

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::{Event, StoreError};

/// A stream of changes under one prefix, from [`Store::watch`](super::Store::watch).
///
/// Yields changes in revision order. It ends with one error and then yields nothing more:
/// [`StoreError::Closed`] when the store has shut down, [`StoreError::Compacted`] when the
/// consumer fell further behind than the change log keeps (list again, then watch from the
/// list's revision), or a backend error if the change log could not be read. Dropping the
/// watch stops it.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
}

impl Watch {
    /// A watch fed by a task of the store's, which ends it by sending one error.
    pub(crate) fn from_channel(rx: mpsc::Receiver<Result<Event, StoreError>>) -> Self {
        Self { rx }
    }

    /// The next change. After the watch has ended, returns [`StoreError::Closed`].
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        self.rx.recv().await.unwrap_or(Err(StoreError::Closed))
    }
}

impl futures_util::Stream for Watch {
    type Item = Result<Event, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The live fan-out a store publishes each committed change on, in revision order.
#[derive(Debug)]
pub(crate) struct Fanout {
    live: broadcast::Sender<Event>,
    buffer: usize,
}

impl Fanout {
    pub(crate) fn new(buffer: NonZeroUsize) -> Self {
        Self {
            live: broadcast::channel(buffer.get()).0,
            buffer: buffer.get(),
        }
    }

    /// Sends a committed change to every open watch. The store must call this while it
    /// still holds its write lock, so that changes go out in revision order.
    pub(crate) fn publish(&self, event: &Event) {
        // An error only means nobody is watching.
        let _ = self.live.send(event.clone());
    }
}

/// What a store offers its watches: the live fan-out and the recorded changes.
pub(crate) trait ChangeLog: Send + Sync + 'static {
    fn fanout(&self) -> &Fanout;

    /// The recorded changes under `prefix` with a revision greater than `after`, and the
    /// revision the answer is complete through (at least `after`). Fails with
    /// [`StoreError::Compacted`] if the log no longer holds them all.
    fn since(
        self: Arc<Self>,
        prefix: String,
        after: u64,
    ) -> impl Future<Output = Result<(Vec<Event>, u64), StoreError>> + Send;
}

/// Opens a watch on `log`: subscribes, replays, then forwards live changes.
pub(crate) async fn open<L: ChangeLog>(
    log: &Arc<L>,
    prefix: &str,
    after: u64,
) -> Result<Watch, StoreError> {
    let live = log.fanout().live.subscribe();
    let (replay, through) = Arc::clone(log).since(prefix.to_owned(), after).await?;
    let (tx, rx) = mpsc::channel(log.fanout().buffer);
    let forwarder = Forwarder {
        // Weak, so a forgotten watch does not keep the store (or its file) open.
        log: Arc::downgrade(log),
        live,
        prefix: prefix.to_owned(),
        seen: through,
        tx,
    };
    tokio::spawn(forwarder.run(replay));
    Ok(Watch::from_channel(rx))
}

struct Forwarder<L> {
    log: Weak<L>,
    live: broadcast::Receiver<Event>,
    prefix: String,
    /// Every change up to this revision has been forwarded or did not match the prefix.
    seen: u64,
    tx: mpsc::Sender<Result<Event, StoreError>>,
}

impl<L: ChangeLog> Forwarder<L> {
    async fn run(mut self, mut batch: Vec<Event>) {
        let end = loop {
            for event in batch.drain(..) {
                if self.tx.send(Ok(event)).await.is_err() {
                    return; // the watch was dropped
                }
            }
            let received = tokio::select! {
                () = self.tx.closed() => return,
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) if event.revision() <= self.seen => {}
                Ok(event) if event.revision() == self.seen + 1 => {
                    self.seen = event.revision();
                    if event.key().starts_with(&self.prefix) {
                        batch.push(event);
                    }
                }
                // A gap cannot happen while stores send in revision order, but the log
                // covers it the same way it covers a lag: everything after `seen` that was
                // committed before the change we just received is recorded there.
                Ok(_) | Err(RecvError::Lagged(_)) => match self.catch_up().await {
                    Ok(events) => batch = events,
                    Err(error) => break error,
                },
                Err(RecvError::Closed) => break StoreError::Closed,
            }
        };
        // The consumer may be gone already; then there is no one to tell.
        let _ = self.tx.send(Err(end)).await;
    }

    async fn catch_up(&mut self) -> Result<Vec<Event>, StoreError> {
        let log = self.log.upgrade().ok_or(StoreError::Closed)?;
        let (events, through) = log.since(self.prefix.clone(), self.seen).await?;
        self.seen = through;
        Ok(events)
    }
}
