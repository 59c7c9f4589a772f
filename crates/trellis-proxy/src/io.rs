//! Stream wrappers shared by every connection path: replaying bytes consumed by protocol
//! detection, and recording activity so idle connections can be found.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Implements `AsyncWrite` for a pin-projected stream wrapper whose wrapped stream is
/// its `inner` field, passing every write straight through: for wrappers that only
/// look at what is read.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.project().inner.poll_write(cx, buf)
            }
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.project().inner.poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.project().inner.poll_flush(cx)
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.project().inner.poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

pin_project_lite::pin_project! {
    /// A stream that first yields `prefix` (bytes already read while detecting the
    /// protocol), then reads from the inner stream. Writes go straight through.
    pub struct PrefixedIo<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> PrefixedIo<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not yet replayed, and the inner stream.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Release the detection buffer now, not when the connection ends.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

write_through!(PrefixedIo);

/// When a connection last moved a byte, as milliseconds since a fixed origin, and
/// whether its last write found the socket full, shared between the stream and whoever
/// watches it for idleness.
#[derive(Debug, Clone)]
pub struct Activity {
    origin: Instant,
    state: Arc<ActivityState>,
}

#[derive(Debug, Default)]
struct ActivityState {
    last_ms: AtomicU64,
    write_blocked: AtomicBool,
}

impl Activity {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            state: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.state.last_ms.store(ms, Ordering::Relaxed);
    }

    fn wrote<T>(&self, res: &Poll<io::Result<T>>) {
        let blocked = res.is_pending();
        self.state.write_blocked.store(blocked, Ordering::Relaxed);
        if !blocked {
            self.touch();
        }
    }

    /// Time since the last byte moved.
    pub fn idle_for(&self) -> std::time::Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        let last = self.state.last_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(now.saturating_sub(last))
    }

    /// Whether the last write found the socket full: the writer still holds bytes the
    /// peer has not taken.
    pub fn write_blocked(&self) -> bool {
        self.state.write_blocked.load(Ordering::Relaxed)
    }
}

impl Activity {
    /// Resolves once no byte has moved for `timeout` while `busy` said no. Checks again
    /// when the timeout could next have passed, and at least every 100 ms while busy.
    pub async fn idle(&self, timeout: std::time::Duration, busy: impl Fn() -> bool) {
        loop {
            let idle_for = self.idle_for();
            if idle_for >= timeout && !busy() {
                return;
            }
            let wait = timeout
                .saturating_sub(idle_for)
                .max(std::time::Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

pin_project_lite::pin_project! {
    /// A stream that records activity and counts the bytes read from and written to it.
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        activity: Activity,
        read: u64,
        written: u64,
    }
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        Self {
            inner,
            activity,
            read: 0,
            written: 0,
        }
    }

    /// Bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Bytes written to the stream so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            *this.read += n as u64;
            this.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            *this.written += n as u64;
        }
        this.activity.wrote(&res);
        res
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            *this.written += n as u64;
        }
        this.activity.wrote(&res);
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.expect("write");
        drop(a);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn a_write_that_finds_the_peer_full_is_blocked_until_one_goes_through() {
        let (a, mut b) = tokio::io::duplex(4);
        let activity = Activity::new();
        let mut io = TrackedIo::new(a, activity.clone());
        io.write_all(b"abcd").await.expect("write");
        assert!(!activity.write_blocked());
        let full = tokio::time::timeout(std::time::Duration::from_millis(50), io.write_all(b"e"));
        assert!(full.await.is_err(), "the peer has taken nothing");
        assert!(activity.write_blocked());
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.expect("read");
        io.write_all(b"e").await.expect("write");
        assert!(!activity.write_blocked());
    }

    #[tokio::test]
    async fn tracked_io_counts_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = TrackedIo::new(a, Activity::new());
        io.write_all(b"abc").await.expect("write");
        b.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!((io.bytes_read(), io.bytes_written()), (5, 3));
    }
}
