//! A request body that streams to the backend as it arrives and keeps a copy, so that a
//! retry can send it again. gRPC calls need this: they are POSTs of unknown length, and
//! a streaming call's client may wait for a reply before it sends more, so holding the
//! whole body before the first attempt (as idempotent HTTP requests are held) could wait
//! forever.
//!
//! Each attempt reads through its own [`TapeBody`]: first what earlier attempts already
//! read from the client, then on from the client. Only the newest attempt may read on;
//! an older one still being polled by its connection gets an error, so no frame is ever
//! taken from the client by an attempt that was given up. Past [`MAX_REPLAY_BODY`]
//! bytes the copy is dropped and the request can no longer be retried.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use super::MAX_REPLAY_BODY;
use crate::endpoint::{BoxBody, BoxError};

/// The client's body and what attempts have read of it.
pub(super) struct Tape {
    state: Arc<Mutex<State>>,
}

struct State {
    source: BoxBody,
    recorded: Vec<Recorded>,
    bytes: u64,
    /// More than [`MAX_REPLAY_BODY`] was read, or the client's body failed: there is no
    /// whole copy to send again.
    lost: bool,
    ended: bool,
    /// The attempt allowed to read on.
    generation: u64,
}

enum Recorded {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// What an attempt sends: the recorded frames, then the rest of the client's body.
pub(super) struct TapeBody {
    state: Arc<Mutex<State>>,
    generation: u64,
    next: usize,
}

/// The error an attempt given up on gets if its connection still reads its body.
#[derive(Debug, thiserror::Error)]
#[error("request body taken over by a retry")]
struct Superseded;

// === impl Tape ===

impl Tape {
    pub(super) fn new(source: BoxBody) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                source,
                recorded: Vec::new(),
                bytes: 0,
                lost: false,
                ended: false,
                generation: 0,
            })),
        }
    }

    /// The body of a new attempt; every earlier attempt's body stops reading.
    pub(super) fn body(&self) -> TapeBody {
        let mut state = lock(&self.state);
        state.generation += 1;
        TapeBody {
            state: self.state.clone(),
            generation: state.generation,
            next: 0,
        }
    }

    /// Whether a new attempt could send the whole request again.
    pub(super) fn replayable(&self) -> bool {
        !lock(&self.state).lost
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl TapeBody ===

impl Body for TapeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = lock(&this.state);
        if state.generation != this.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(frame) = state.recorded.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(match frame {
                Recorded::Data(data) => Frame::data(data.clone()),
                Recorded::Trailers(t) => Frame::trailers(t.clone()),
            })));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        let polled = ready!(Pin::new(&mut state.source).poll_frame(cx));
        match polled {
            None => state.ended = true,
            Some(Err(_)) => state.lost = true,
            Some(Ok(ref frame)) if !state.lost => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                state.bytes += len;
                if state.bytes > MAX_REPLAY_BODY {
                    state.lost = true;
                    state.recorded = Vec::new();
                } else if let Some(data) = frame.data_ref() {
                    state.recorded.push(Recorded::Data(data.clone()));
                } else if let Some(trailers) = frame.trailers_ref() {
                    state.recorded.push(Recorded::Trailers(trailers.clone()));
                }
                this.next = state.recorded.len();
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(polled)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    /// A client body fed frame by frame from the test.
    fn client() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, BoxBody) {
        let (tx, rx) = mpsc::channel(8);
        (tx, StreamBody::new(ReceiverStream::new(rx)).boxed())
    }

    async fn next_data(body: &mut TapeBody) -> Bytes {
        let frame = body.frame().await.expect("a frame").expect("not an error");
        frame.into_data().expect("data")
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_read_then_reads_on() {
        let (tx, source) = client();
        let tape = Tape::new(source);
        let mut first = tape.body();
        tx.send(Ok(Frame::data(Bytes::from("a"))))
            .await
            .expect("send");
        assert_eq!(next_data(&mut first).await, "a");

        // The first attempt failed after reading "a"; the retry gets "a" again, then
        // what the client sends next, then the end.
        let mut second = tape.body();
        assert!(tape.replayable());
        assert_eq!(next_data(&mut second).await, "a");
        tx.send(Ok(Frame::data(Bytes::from("b"))))
            .await
            .expect("send");
        assert_eq!(next_data(&mut second).await, "b");
        drop(tx);
        assert!(second.frame().await.is_none());

        // The attempt given up on reads nothing more of the client's body.
        assert!(first.frame().await.expect("a frame").is_err());
        // A third attempt sends the whole body, which has ended.
        let third = tape.body().collect().await.expect("body").to_bytes();
        assert_eq!(third, "ab");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_not_replayable() {
        let big = Bytes::from(vec![b'x'; usize::try_from(MAX_REPLAY_BODY).expect("fits")]);
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(big.clone())),
            Ok(Frame::data(Bytes::from("y"))),
        ];
        let tape = Tape::new(StreamBody::new(stream::iter(frames)).boxed());
        let sent = tape.body().collect().await.expect("body").to_bytes();
        assert_eq!(sent.len(), big.len() + 1, "the attempt gets it all");
        assert!(!tape.replayable());
    }

    #[tokio::test]
    async fn a_broken_client_body_is_not_replayable() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Err("reset".into())];
        let tape = Tape::new(StreamBody::new(stream::iter(frames)).boxed());
        assert!(tape.body().collect().await.is_err());
        assert!(!tape.replayable());
    }
}
