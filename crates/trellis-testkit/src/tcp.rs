//! Raw TCP backends: an echo server that makes half-close observable end to
//! end, and a server-speaks-first server (like SMTP or MySQL) for testing
//! protocol detection timeouts.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::shutdown::{self, Shutdown, Trigger};

/// Echoes every byte back. When the client half-closes, the server finishes
/// echoing what it received and then shuts down its own write side, so the
/// client sees EOF only after all its bytes came back.
#[derive(Debug)]
pub struct TcpEchoServer {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    _trigger: Trigger,
}

/// Writes a fixed greeting as soon as a connection is accepted, before the
/// client sends anything, then echoes like [`TcpEchoServer`].
#[derive(Debug)]
pub struct SpeakFirstServer {
    addr: SocketAddr,
    _trigger: Trigger,
}

// === impl TcpEchoServer ===

impl TcpEchoServer {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub async fn start() -> io::Result<Self> {
        let connections = Arc::new(AtomicU64::new(0));
        let (addr, trigger) = serve(LOOPBACK, b"", connections.clone()).await?;
        Ok(Self {
            addr,
            connections,
            _trigger: trigger,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

// === impl SpeakFirstServer ===

impl SpeakFirstServer {
    /// Binds `127.0.0.1:0` and starts accepting; each connection first
    /// receives `greeting`.
    pub async fn start(greeting: &'static [u8]) -> io::Result<Self> {
        Self::start_on(LOOPBACK, greeting).await
    }

    /// Like [`SpeakFirstServer::start`], on `addr`.
    pub async fn start_on(addr: SocketAddr, greeting: &'static [u8]) -> io::Result<Self> {
        let (addr, trigger) = serve(addr, greeting, Arc::new(AtomicU64::new(0))).await?;
        Ok(Self {
            addr,
            _trigger: trigger,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Binds a listener and spawns the accept loop shared by both servers.
async fn serve(
    addr: SocketAddr,
    greeting: &'static [u8],
    connections: Arc<AtomicU64>,
) -> io::Result<(SocketAddr, Trigger)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (trigger, shutdown) = shutdown::channel();
    shutdown.spawn(accept_loop(
        listener,
        greeting,
        connections,
        shutdown.clone(),
    ));
    Ok((addr, trigger))
}

async fn accept_loop(
    listener: TcpListener,
    greeting: &'static [u8],
    connections: Arc<AtomicU64>,
    shutdown: Shutdown,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.fetch_add(1, Ordering::SeqCst);
                shutdown.spawn(async move {
                    if let Err(error) = echo(stream, greeting).await {
                        tracing::debug!(%error, "tcp test connection failed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "tcp test server failed to accept"),
        }
    }
}

/// Writes `greeting`, echoes until the client's EOF, then shuts down the
/// write side so the half-close travels back to the client.
async fn echo(mut stream: TcpStream, greeting: &[u8]) -> io::Result<()> {
    stream.write_all(greeting).await?;
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn echo_returns_bytes_and_propagates_half_close() {
        let server = TcpEchoServer::start().await.expect("start echo server");
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");

        stream.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.expect("read echo");
        assert_eq!(&buf, b"ping");

        // After our half-close the server must still deliver what we sent,
        // then end its side.
        stream.write_all(b"last words").await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read to EOF");
        assert_eq!(rest, b"last words");
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn echo_counts_connections() {
        let server = TcpEchoServer::start().await.expect("start echo server");
        for _ in 0..3 {
            let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
            stream.shutdown().await.expect("half-close");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.expect("read to EOF");
            assert!(rest.is_empty());
        }
        crate::assert_eventually!(server.connections() == 3);
    }

    #[tokio::test]
    async fn speak_first_sends_greeting_before_client_speaks() {
        let server = SpeakFirstServer::start(b"220 ready\r\n")
            .await
            .expect("start speak-first server");
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");

        let mut greeting = [0u8; 11];
        stream
            .read_exact(&mut greeting)
            .await
            .expect("read greeting");
        assert_eq!(&greeting, b"220 ready\r\n");

        stream.write_all(b"HELO").await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read to EOF");
        assert_eq!(rest, b"HELO");
    }

    #[tokio::test]
    async fn dropping_the_server_closes_open_connections() {
        let server = TcpEchoServer::start().await.expect("start echo server");
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        crate::assert_eventually!(server.connections() == 1);
        drop(server);
        let mut buf = [0u8; 1];
        let read = stream.read(&mut buf).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "connection still open: {read:?}"
        );
    }
}
