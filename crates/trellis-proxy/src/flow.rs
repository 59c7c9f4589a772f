//! How bodies flow through the proxy: the HTTP/2 flow-control windows of the proxy's
//! server and client connections, and [`Coalesce`], which joins small chunks that are
//! ready together into one before they are passed on.
//!
//! Both exist for streams of many small messages (gRPC streams, server-sent events,
//! log tails). An HTTP/2 peer (hyper's `h2` among them) refuses a connection whose
//! unread small DATA frames cost more than a budget: `ENHANCE_YOUR_CALM`
//! `too_many_data_frames`, which ends every stream on the connection. A relay buffers
//! whenever its next hop reads more slowly than its previous hop writes, so:
//!
//! - the windows bound what one stream can leave unread at the proxy: a stream window
//!   small next to the connection window, whose half is `h2`'s budget. With 128 KiB
//!   per stream and 64 MiB per connection, a stalled stream of empty gRPC messages
//!   (5-byte frames, the worst case an honest client sends) spends a fifth of the
//!   budget, and one of 10-byte messages a fifteenth, while a flood of tiny frames
//!   over many streams, or of empty frames, is still refused;
//! - [`Coalesce`] keeps the proxy from passing that cost on: chunks that arrived while
//!   the next hop was not reading leave as one frame, so the proxy never sends a peer
//!   more frames than its own client sent, and usually far fewer. Nothing waits:
//!   only chunks already there are joined.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// The receive window of each HTTP/2 stream, server and client side. Also bounds
/// what one stream of one client can make the proxy hold.
pub const STREAM_WINDOW: u32 = 128 * 1024;

/// The receive window of each HTTP/2 connection: room for every stream's window
/// several hundred times over, since it only sets the small-frame budget (half of it)
/// and what all streams together may hold; each stream is bounded by its own window.
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Streams one HTTP/2 client may have open at once on a connection to the proxy.
/// hyper's default is 200, and a client past it queues its calls: a burst of 1,000
/// gRPC calls on one channel then reaches the backend in waves, the later ones after
/// the first have made the backend look slow. A proxy-to-proxy connection carries
/// every call from one sidecar to another, so it needs room for all of a burst.
/// What the streams may hold together is still bounded by [`CONNECTION_WINDOW`].
pub const MAX_CONCURRENT_STREAMS: u32 = 4096;

/// Chunks smaller than this are joined with those ready after them, up to this size:
/// HTTP/2's default largest frame, so a joined chunk is still one frame.
pub const COALESCE_BYTES: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A body whose small data chunks that are ready at once come out as one. Trailers
    /// and the end pass through after the data before them.
    pub struct Coalesce<B: Body> {
        #[pin]
        inner: B,
        // A frame read past the data joined so far: trailers, an error or a large
        // chunk, given out at the next poll.
        held: Option<Result<Frame<Bytes>, B::Error>>,
        done: bool,
    }
}

impl<B> Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            held: None,
            done: false,
        }
    }
}

impl<B> Body for Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let first = loop {
            let frame = match this.held.take() {
                Some(held) => held,
                None if *this.done => return Poll::Ready(None),
                None => match this.inner.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(frame)) => frame,
                    Poll::Ready(None) => {
                        *this.done = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                },
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match frame.into_data() {
                // An empty chunk carries nothing, and HTTP/2 peers count empty DATA
                // frames against a small allowance per connection.
                Ok(data) if data.is_empty() => {}
                Ok(data) if data.len() < COALESCE_BYTES => break data,
                Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            }
        };
        let mut joined: Option<BytesMut> = None;
        loop {
            let size = joined.as_ref().map_or(first.len(), BytesMut::len);
            if size >= COALESCE_BYTES {
                break;
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if size + data.len() <= COALESCE_BYTES => {
                        let buf = joined.get_or_insert_with(|| {
                            let mut buf = BytesMut::with_capacity(COALESCE_BYTES);
                            buf.extend_from_slice(&first);
                            buf
                        });
                        buf.extend_from_slice(data.chunk());
                    }
                    Ok(data) => {
                        *this.held = Some(Ok(Frame::data(data)));
                        break;
                    }
                    Err(frame) => {
                        *this.held = Some(Ok(frame));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    *this.held = Some(Err(e));
                    break;
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    break;
                }
                // Nothing more is there yet: what is ready goes now.
                Poll::Pending => break,
            }
        }
        let data = joined.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn frames(
        frames: Vec<Frame<Bytes>>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        StreamBody::new(stream::iter(frames.into_iter().map(Ok)))
    }

    async fn collect(body: impl Body<Data = Bytes, Error = Infallible>) -> Vec<Frame<Bytes>> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.expect("frame"));
        }
        out
    }

    fn data(frame: &Frame<Bytes>) -> Option<&[u8]> {
        frame.data_ref().map(|d| &d[..])
    }

    #[tokio::test]
    async fn ready_small_chunks_leave_as_one_with_trailers_after_them() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        let mut input: Vec<Frame<Bytes>> = (0..1000u32)
            .map(|i| Frame::data(Bytes::from(format!("{i:04}"))))
            .collect();
        input.push(Frame::trailers(trailers.clone()));
        let out = collect(Coalesce::new(frames(input))).await;
        let joined: Vec<u8> = out.iter().filter_map(data).flatten().copied().collect();
        let expected: String = (0..1000u32).map(|i| format!("{i:04}")).collect();
        assert_eq!(joined, expected.as_bytes());
        assert_eq!(out.len(), 2, "4,000 bytes are one chunk, then the trailers");
        assert_eq!(out[1].trailers_ref(), Some(&trailers));
    }

    #[tokio::test]
    async fn empty_chunks_are_dropped() {
        let input = vec![
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b"a")),
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b"b")),
            Frame::data(Bytes::new()),
        ];
        let out = collect(Coalesce::new(frames(input))).await;
        assert_eq!(out.len(), 1);
        assert_eq!(data(&out[0]), Some(&b"ab"[..]));
        let only_empty = vec![Frame::data(Bytes::new()), Frame::data(Bytes::new())];
        assert!(collect(Coalesce::new(frames(only_empty))).await.is_empty());
    }

    #[tokio::test]
    async fn joined_chunks_stay_within_one_frame_and_large_ones_pass_untouched() {
        let small = Bytes::from(vec![1u8; 1000]);
        let large = Bytes::from(vec![2u8; COALESCE_BYTES * 2]);
        let mut input: Vec<Frame<Bytes>> = (0..40).map(|_| Frame::data(small.clone())).collect();
        input.push(Frame::data(large.clone()));
        let out = collect(Coalesce::new(frames(input))).await;
        let sizes: Vec<usize> = out.iter().filter_map(data).map(<[u8]>::len).collect();
        assert!(sizes.iter().all(|&s| s <= COALESCE_BYTES * 2));
        assert_eq!(sizes, vec![16_000, 16_000, 8_000, COALESCE_BYTES * 2]);
        assert_eq!(data(&out[3]), Some(&large[..]));
    }

    #[tokio::test]
    async fn a_chunk_not_yet_there_is_not_waited_for() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut body = std::pin::pin!(Coalesce::new(body));
        let send = |chunk: &'static [u8]| Ok(Frame::data(Bytes::from_static(chunk)));
        tx.send(send(b"first")).await.expect("send");
        tx.send(send(b"second")).await.expect("send");
        let frame = body.frame().await.expect("frame").expect("data");
        assert_eq!(data(&frame), Some(&b"firstsecond"[..]));
        tx.send(send(b"third")).await.expect("send");
        drop(tx);
        let frame = body.frame().await.expect("frame").expect("data");
        assert_eq!(data(&frame), Some(&b"third"[..]));
        assert!(body.frame().await.is_none());
    }
}
