//! Listening sockets and their accept loops: one task per listener that spawns one task
//! per connection, which detects the protocol (or takes the declared one) and hands the
//! stream to the HTTP server or the TCP forwarder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::ListenerProtocol;
use crate::detect::{self, Protocol};
use crate::io::PrefixedIo;
use crate::telemetry::ConnectionLabels;
use crate::{http, tcp, Shared};

/// Pending connections the kernel queues before `accept`.
const BACKLOG: u32 = 1024;

/// Binds a listening socket the way a proxy needs it: address reuse so a restarted proxy
/// can bind at once, a deep backlog for bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// A listener whose accept loop is running.
#[derive(Debug)]
pub struct Running {
    pub address: SocketAddr,
    /// The configured address, to tell whether a reload changed it.
    pub configured: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting. Connections already accepted carry on.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// Starts the accept loop of the listener named `name` on `socket`.
pub fn spawn(
    name: String,
    configured: SocketAddr,
    socket: TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<Running> {
    let address = socket.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let span = tracing::info_span!("listener", name = %name, %address);
    let task = tokio::spawn(accept_loop(name, socket, shared, stop_rx).instrument(span));
    Ok(Running {
        address,
        configured,
        stop: Some(stop_tx),
        task,
    })
}

async fn accept_loop(
    name: String,
    socket: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut drain = shared.drain.watch();
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = &mut stop => return,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = tracing::debug_span!("conn", %peer);
                tokio::spawn(connection(name.clone(), stream, shared.clone()).instrument(span));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(name: String, mut stream: TcpStream, shared: Arc<Shared>) {
    let _guard = shared.drain.track();
    let drain = shared.drain.watch();
    let Some(listener) = shared.state.load().listeners.get(&name).cloned() else {
        return;
    };
    let _ = stream.set_nodelay(true);

    let (protocol, prefix) = match listener.protocol {
        ListenerProtocol::Auto => {
            match detect::detect(&mut stream, listener.detect_timeout).await {
                Ok((protocol, buf)) => (protocol, buf.freeze()),
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed during protocol detection");
                    return;
                }
            }
        }
        ListenerProtocol::Http1 => (Protocol::Http1, Bytes::new()),
        ListenerProtocol::Http2 | ListenerProtocol::Grpc => (Protocol::Http2, Bytes::new()),
        ListenerProtocol::Tcp => (Protocol::Tcp, Bytes::new()),
    };
    let labels = ConnectionLabels {
        listener: listener.name.clone(),
        protocol: protocol.as_str(),
    };
    shared.metrics.connections.get_or_create(&labels).inc();
    let open = shared
        .metrics
        .connections_open
        .get_or_create(&labels)
        .clone();
    open.inc();

    let io = PrefixedIo::new(prefix, stream);
    match protocol {
        Protocol::Http1 => {
            http::serve(io, http::Version::Http1, listener, shared.clone(), drain).await
        }
        Protocol::Http2 => {
            http::serve(io, http::Version::Http2, listener, shared.clone(), drain).await
        }
        Protocol::Tcp => tcp::forward(io, listener, shared.clone(), drain).await,
    }
    open.dec();
}
