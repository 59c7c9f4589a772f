//! Closing a served connection without losing its last words.
//!
//! A socket closed while bytes from the peer wait unread makes the kernel answer with
//! a reset, and a reset discards what the proxy wrote last but the peer had not read
//! yet: the HTTP/2 `GOAWAY` that says why a flood was refused, or an HTTP/1.1 error
//! response to a request whose body was not read. The peer then sees "connection reset"
//! instead of the reason. So a connection the proxy is done with is closed as servers
//! have long done it (a "lingering close"): shut down the sending side, which still
//! delivers everything written, then read and drop what the peer sends until it closes
//! too, for at most [`LINGER`] and [`MAX_DISCARD`] bytes, and only then close.
//!
//! [`Lingering`] does this when it is dropped, on a task of its own, so whatever owned
//! the connection (hyper's connection state) is released at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// How long a closing connection waits for its peer to close.
pub const LINGER: Duration = Duration::from_secs(2);
/// How much a closing connection reads and drops before it gives up on its peer.
pub const MAX_DISCARD: usize = 1 << 20;

/// A served connection that closes lingering when dropped.
#[derive(Debug)]
pub struct Lingering<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always `Some` until dropped.
    inner: Option<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<T> {
    pub fn new(inner: T) -> Self {
        Self { inner: Some(inner) }
    }

    fn inner(&mut self) -> Pin<&mut T> {
        Pin::new(self.inner.as_mut().expect("used after drop"))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<T> {
    fn drop(&mut self) {
        let Some(io) = self.inner.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) there is no one left to tell.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close(io));
        }
    }
}

/// Shuts the sending side down, then drops what the peer still sends until it
/// closes, [`LINGER`] passes or [`MAX_DISCARD`] bytes were dropped.
pub async fn close<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let _ = tokio::time::timeout(LINGER, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut discard = [0u8; 4096];
        let mut dropped = 0;
        while dropped < MAX_DISCARD {
            match io.read(&mut discard).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner().poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// The server writes its last words and is dropped while the client's bytes are
    /// still unread: the client reads every last word, then the end, and no reset.
    #[tokio::test]
    async fn last_words_survive_unread_input() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // The client sends a lot the server will never read.
        client.write_all(&[7u8; 64 * 1024]).await.expect("send");
        let mut server = Lingering::new(server);
        let last_words = vec![b'x'; 64 * 1024];
        server.write_all(&last_words).await.expect("last words");
        drop(server);
        let mut read = Vec::new();
        client
            .read_to_end(&mut read)
            .await
            .expect("an orderly end, not a reset");
        assert_eq!(read, last_words);
    }

    /// A peer that never closes is not waited for past the linger time.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_not_waited_for_forever() {
        let (server, _peer) = tokio::io::duplex(64);
        let closing = tokio::spawn(close(server));
        tokio::time::advance(LINGER + Duration::from_millis(1)).await;
        closing.await.expect("closed after the linger time");
    }
}
