//! Listening sockets and their accept loops: one task per listener that spawns one task
//! per connection, which (on an mTLS listener) terminates TLS or applies the listener's
//! plaintext policy, detects the protocol (or takes the declared one, or the one ALPN
//! named) and hands the stream to the HTTP server or the TCP forwarder. A `tls`
//! listener reads only the ClientHello and forwards the connection by its server name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use trellis_identity::SpiffeId;

use crate::config::ListenerProtocol;
use crate::detect::{self, Opening, Protocol};
use crate::drain::Watch;
use crate::io::PrefixedIo;
use crate::sni::{self, Hello};
use crate::state::Listener;
use crate::telemetry::ConnectionLabels;
use crate::tls::accept;
use crate::{http, sockopt, tcp, transparent, Shared};
use prometheus_client::metrics::gauge::Gauge;

/// Pending connections the kernel queues before `accept`.
const BACKLOG: u32 = 1024;

/// Binds a listening socket the way a proxy needs it: address reuse so a restarted proxy
/// can bind at once, a deep backlog for bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr)?)
}

/// [`bind`] without a runtime: the socket listens (connections queue in its backlog)
/// and is ready for the runtime that accepts on it later.
fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

/// Listening sockets bound before the configuration that names them, keyed by the
/// address each is bound to. A sidecar binds its listeners (port 0 for the kernel to
/// choose) before it registers, so the ports it reports are ones it already holds; the
/// proxy takes a socket from here when a configuration names a listener at its exact
/// address, instead of binding that address again, which nothing else can then have
/// taken in between.
#[derive(Debug, Default)]
pub struct Prebound {
    sockets: HashMap<SocketAddr, std::net::TcpListener>,
}

impl Prebound {
    /// Binds `addr` as the proxy binds a listener (port 0: one the kernel picks) and
    /// keeps the socket; returns the address it is bound to.
    pub fn bind(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        self.insert(bind_std(addr)?)
    }

    /// Keeps a listening socket bound elsewhere; returns the address it is bound to.
    pub fn insert(&mut self, socket: std::net::TcpListener) -> std::io::Result<SocketAddr> {
        socket.set_nonblocking(true)?;
        let address = socket.local_addr()?;
        self.sockets.insert(address, socket);
        Ok(address)
    }

    /// The addresses of the sockets held, sorted.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self.sockets.keys().copied().collect();
        addresses.sort_unstable();
        addresses
    }

    /// The socket bound to `addr`, taken out for a listener to serve on.
    pub(crate) fn take(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.sockets.remove(&addr)
    }
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
    let accepted = Instant::now();
    let _guard = shared.drain.track();
    let drain = shared.drain.watch();
    let snapshot = shared.state.load_full();
    let Some(mut listener) = snapshot.listeners.get(&name).cloned() else {
        return;
    };
    if let Some(table) = &listener.original_destination {
        // A captured connection: the listener serving its destination takes it from
        // here, unless it was passed through or refused.
        let dispatched = transparent::dispatch(stream, &listener, table, &snapshot, &shared);
        // Boxed, as every rarely taken branch below: a connection's task is as large as
        // the largest state of this function, held for the connection's whole life.
        let Some((captured, target)) = Box::pin(dispatched).await else {
            return;
        };
        (stream, listener) = (captured, target);
    }
    drop(snapshot);
    let _ = stream.set_nodelay(true);
    // The port the client dialled: for a connection the capture rules redirected to an
    // inbound listener, the original one, which authorization's port rules are about.
    let local_port = sockopt::original_dst(&stream)
        .or_else(|_| stream.local_addr())
        .map_or(listener.address.port(), |a| a.port());
    let deadlines = detect::Deadlines::new(
        listener.detect_timeout,
        accepted,
        listener.header_read_timeout,
    );
    // Room for a ClientHello or a request line in one read.
    let mut prefix = BytesMut::with_capacity(1024);

    if listener.protocol == ListenerProtocol::Tls {
        // The client's own TLS, passed through: only its ClientHello is read.
        let hello = sni::read(&mut stream, &mut prefix, listener.detect_timeout).await;
        let server_name = match hello {
            Ok(Hello::ServerName(name)) => Some(name),
            Ok(Hello::NoServerName) => None,
            Ok(Hello::NotTls | Hello::Incomplete) => {
                refuse(&listener, &shared, "not_tls");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection failed before its ClientHello");
                return;
            }
        };
        let io = PrefixedIo::new(prefix.freeze(), stream);
        let open = count_connection(&listener, &shared, "tls");
        let forwarded = Box::pin(tcp::forward(
            io,
            listener.clone(),
            server_name.as_deref(),
            shared.clone(),
            drain,
        ));
        if forwarded.await.is_none() {
            // An egress listener's routes are the declared external hosts.
            let reason = if listener.egress {
                tracing::info!(listener = %listener.name, server_name = ?server_name, "TLS connection to an undeclared external host refused");
                "undeclared_host"
            } else {
                "no_route"
            };
            refuse(&listener, &shared, reason);
        }
        open.dec();
        return;
    }
    if listener.mtls.enabled() {
        match detect::opening(&mut stream, &mut prefix, deadlines.silence).await {
            Ok(Opening::Tls) => {
                let io = PrefixedIo::new(prefix.freeze(), stream);
                let conn = Conn {
                    local_port,
                    accepted,
                };
                return Box::pin(mtls_connection(io, conn, listener, shared, drain)).await;
            }
            Ok(Opening::Plaintext) if accept::admit_plaintext(&listener, &shared) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection failed during TLS detection");
                return;
            }
        }
    }
    let protocol = match choose_protocol(&mut stream, &mut prefix, &listener, deadlines).await {
        Ok(protocol) => protocol,
        Err(e) => {
            tracing::debug!(error = %e, "connection failed during protocol detection");
            return;
        }
    };
    let io = PrefixedIo::new(prefix.freeze(), stream);
    let conn = Conn {
        local_port,
        accepted,
    };
    serve(io, protocol, None, conn, listener, shared, drain).await;
}

/// What the HTTP server needs to know of an accepted connection besides its stream.
#[derive(Debug, Clone, Copy)]
struct Conn {
    /// The port the client dialled.
    local_port: u16,
    /// When it was accepted: the clock of its first request head starts there.
    accepted: Instant,
}

/// Serves a connection that opened with a ClientHello on an mTLS listener: the
/// handshake, then what ALPN says the client speaks (or, without ALPN, what the
/// listener's protocol says).
async fn mtls_connection<I>(
    io: I,
    conn: Conn,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    drain: Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_deadline = conn.accepted + listener.header_read_timeout;
    let Some(accepted) = accept::terminate(io, &listener, &shared, head_deadline).await else {
        return;
    };
    let mut stream = accepted.stream;
    let mut prefix = BytesMut::new();
    let protocol = match accepted.protocol {
        Some(protocol) => protocol,
        None => {
            let deadlines = detect::Deadlines::new(
                listener.detect_timeout,
                conn.accepted,
                listener.header_read_timeout,
            );
            prefix.reserve(1024);
            match choose_protocol(&mut stream, &mut prefix, &listener, deadlines).await {
                Ok(protocol) => protocol,
                Err(e) => {
                    tracing::debug!(error = %e, "mTLS connection failed during protocol detection");
                    return;
                }
            }
        }
    };
    let io = PrefixedIo::new(prefix.freeze(), stream);
    let peer = Some(accepted.peer);
    serve(io, protocol, peer, conn, listener, shared, drain).await;
}

/// The listener's declared protocol, or for `auto` the one detected from the bytes in
/// `prefix` and those read until the deadlines.
async fn choose_protocol<I: AsyncRead + Unpin>(
    io: &mut I,
    prefix: &mut BytesMut,
    listener: &Listener,
    deadlines: detect::Deadlines,
) -> std::io::Result<Protocol> {
    Ok(match listener.protocol {
        ListenerProtocol::Auto => detect::detect_at(io, prefix, deadlines).await?,
        ListenerProtocol::Http1 => Protocol::Http1,
        ListenerProtocol::Http2 | ListenerProtocol::Grpc => Protocol::Http2,
        // A tls listener reads ClientHellos itself; on an mTLS connection its bytes are
        // opaque.
        ListenerProtocol::Tcp | ListenerProtocol::Tls => Protocol::Tcp,
    })
}

/// Hands a connection to the HTTP server or, if the listener's authorization admits
/// it, to the TCP forwarder. `peer` is the client proxy's identity when the connection
/// is mTLS.
async fn serve<I>(
    io: I,
    protocol: Protocol,
    peer: Option<SpiffeId>,
    conn: Conn,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    drain: Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let open = count_connection(&listener, &shared, protocol.as_str());
    match protocol {
        Protocol::Http1 => {
            http::serve(
                io,
                http::Version::Http1,
                peer,
                conn.local_port,
                conn.accepted,
                listener,
                shared.clone(),
                drain,
            )
            .await
        }
        Protocol::Http2 => {
            http::serve(
                io,
                http::Version::Http2,
                peer,
                conn.local_port,
                conn.accepted,
                listener,
                shared.clone(),
                drain,
            )
            .await
        }
        Protocol::Tcp => {
            // Dropping a denied connection closes it: opaque bytes have no way to say
            // why.
            let admitted = listener.authorization.as_ref().is_none_or(|authz| {
                authz
                    .check_connection(peer.as_ref(), conn.local_port, &shared)
                    .is_ok()
            });
            if admitted {
                Box::pin(tcp::forward(io, listener, None, shared.clone(), drain)).await;
            }
        }
    }
    open.dec();
}

/// Counts an accepted connection; the returned gauge counts it open until decremented.
fn count_connection(listener: &Listener, shared: &Shared, protocol: &'static str) -> Gauge {
    let labels = ConnectionLabels {
        listener: listener.name.clone(),
        protocol,
    };
    shared.metrics.connections.get_or_create(&labels).inc();
    let open = shared
        .metrics
        .connections_open
        .get_or_create(&labels)
        .clone();
    open.inc();
    open
}

/// Counts a connection closed without being forwarded.
fn refuse(listener: &Listener, shared: &Shared, reason: &'static str) {
    tracing::debug!(listener = %listener.name, reason, "closing connection");
    transparent::count_refused(shared, &listener.name, reason);
}
