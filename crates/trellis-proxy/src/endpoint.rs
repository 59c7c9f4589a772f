//! One endpoint of a backend and the connections to it: a keep-alive pool of HTTP/1.1
//! connections, or one multiplexed HTTP/2 connection, plus plain TCP for opaque traffic.
//!
//! An endpoint with an identity is another proxy of the mesh. Once this proxy has a
//! certificate of its own, everything to such an endpoint goes over mutual TLS: HTTP
//! requests on one shared HTTP/2 connection whatever the backend's protocol (the proxy
//! at the other end speaks that protocol to its application), upgrades on an HTTP/1.1
//! connection of their own, and opaque TCP on one connection each.
//!
//! An endpoint outside the mesh (an ExternalService's host) may be a DNS name, resolved
//! at each new connection, and may have TLS opened to it by the proxy (origination):
//! its HTTP/1.1 connections then run inside a TLS client session checked against the
//! operator's CA certificates.
//!
//! An `Endpoint` outlives configuration reloads that keep its address, settings and
//! identity, so its pooled connections and load statistics carry over.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trellis_identity::rustls::pki_types::ServerName;
use trellis_identity::rustls::ClientConfig;
use trellis_identity::SpiffeId;

use crate::balance::Load;
use crate::config::{BackendProtocol, OriginateTlsConfig};
use crate::resilience::breaker::{Breaker, Overflow, Permit};
use crate::sockopt;
use crate::tls::connect::{self, MtlsStream};
use crate::tls::{Alpn, Generation, HandshakeReason, Identity};

/// Request bodies sent to endpoints.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they finish.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// How connections to an endpoint are made. Two endpoints with equal settings and
/// address are the same endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectSettings {
    pub protocol: BackendProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// `SO_MARK` on every connection made ([`crate::sockopt::connect`]).
    pub mark: Option<u32>,
    /// The DNS server that resolves endpoints given by name; `None`: the host's
    /// resolver.
    pub resolver: Option<SocketAddr>,
}

/// Why a request or connection to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("mTLS handshake with {addr} failed ({reason}): {source}")]
    Tls {
        addr: SocketAddr,
        reason: HandshakeReason,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    /// TLS to an endpoint outside the mesh could not be opened: a certificate that does
    /// not verify, a server that does not speak TLS, unusable CA certificates.
    #[error("TLS to {server_name} ({addr}) failed: {reason}")]
    Origination {
        server_name: Arc<str>,
        addr: SocketAddr,
        reason: String,
    },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {addr} failed: {source}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The backend's circuit breaker refused a new connection or another request
    /// waiting for one.
    #[error("{}", .0.reason())]
    Overflow(Overflow),
}

/// Takes a permit of `kind` from the backend's breaker, if it has one.
fn permit(breaker: Option<&Breaker>, kind: Overflow) -> Result<Option<Permit>, EndpointError> {
    breaker
        .map(|b| b.try_acquire(kind))
        .transpose()
        .map_err(EndpointError::Overflow)
}

struct IdleConn {
    sender: http1::SendRequest<BoxBody>,
    since: Instant,
}

/// The shared HTTP/2 connection, and for mTLS the credentials and roots it was made
/// with: it serves requests only while those are still the current ones.
struct SharedH2 {
    sender: http2::SendRequest<BoxBody>,
    made_with: Option<Generation>,
}

/// A connection for opaque TCP, or for a health probe.
pub enum Opaque {
    Plain(TcpStream),
    /// Boxed: a TLS stream carries its record buffers inline.
    Mtls(Box<MtlsStream>),
}

/// What reaching an endpoint over mTLS needs: this proxy's identity and the one the
/// endpoint must prove.
#[derive(Clone, Copy)]
struct Mtls<'a> {
    identity: &'a Identity,
    peer: &'a SpiffeId,
}

/// What makes two originations the same: the configuration and the CA certificates
/// read for it (or why none could be), so new certificates in a CA file replace the
/// endpoints, and their pooled connections, at the next configuration.
pub type OriginationKey = (OriginateTlsConfig, Result<String, String>);

/// TLS the proxy opens to an endpoint outside the mesh, built once per configuration.
pub struct Origination {
    pub key: OriginationKey,
    /// The client config, or why there is none (unreadable or unusable CA
    /// certificates): connections then fail with that reason instead of going out
    /// unchecked.
    client: Result<Arc<ClientConfig>, String>,
    server_name: Result<ServerName<'static>, String>,
}

impl Origination {
    pub fn new(config: &OriginateTlsConfig) -> Self {
        let roots = config.roots_pem();
        let client = roots.clone().and_then(|pem| {
            trellis_identity::origination_client_config(&pem, &[b"http/1.1"])
                .map_err(|e| e.to_string())
        });
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| format!("server name {:?}: {e}", config.server_name));
        if let Err(reason) = &client {
            tracing::warn!(server_name = %config.server_name, %reason, "TLS origination has no usable CA certificates");
        }
        Self {
            key: (config.clone(), roots),
            client,
            server_name,
        }
    }
}

/// An endpoint: where it is, how to reach it, its pooled connections and its load.
pub struct Endpoint {
    addr: SocketAddr,
    /// A DNS name resolved at each new connection (an endpoint outside the mesh); the
    /// port is `addr`'s.
    hostname: Option<Arc<str>>,
    origination: Option<Arc<Origination>>,
    settings: ConnectSettings,
    /// The SPIFFE ID the endpoint must prove; `None` for endpoints outside the mesh.
    identity: Option<SpiffeId>,
    /// The endpoint's IP address in the form rustls wants, made once: it sends no SNI,
    /// and the SPIFFE ID, not a name, is what gets checked.
    server_name: ServerName<'static>,
    load: Load,
    idle_h1: Mutex<Vec<IdleConn>>,
    h2: Mutex<Option<SharedH2>>,
    /// Serializes HTTP/2 connection attempts so concurrent requests share one connection.
    h2_connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("settings", &self.settings)
            .field("identity", &self.identity)
            .field("hostname", &self.hostname)
            .field("in_flight", &self.load.in_flight())
            .finish()
    }
}

impl Endpoint {
    pub fn new(addr: SocketAddr, settings: ConnectSettings, identity: Option<SpiffeId>) -> Self {
        Self {
            addr,
            hostname: None,
            origination: None,
            settings,
            identity,
            server_name: ServerName::from(addr.ip()),
            load: Load::new(),
            idle_h1: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// An endpoint outside the mesh: reached by resolving `hostname` (if set), with
    /// TLS opened by the proxy (if `origination` is set).
    pub fn outside(
        mut self,
        hostname: Option<Arc<str>>,
        origination: Option<Arc<Origination>>,
    ) -> Self {
        self.hostname = hostname;
        self.origination = origination;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DNS name resolved for each connection, if any.
    pub fn hostname(&self) -> Option<&Arc<str>> {
        self.hostname.as_ref()
    }

    /// The TLS the proxy opens to this endpoint, if any.
    pub fn origination(&self) -> Option<&OriginationKey> {
        self.origination.as_deref().map(|o| &o.key)
    }

    pub fn settings(&self) -> ConnectSettings {
        self.settings
    }

    pub fn load(&self) -> &Load {
        &self.load
    }

    /// The SPIFFE ID the endpoint must prove over mTLS.
    pub fn identity(&self) -> Option<&SpiffeId> {
        self.identity.as_ref()
    }

    /// The HTTP version requests to this endpoint are sent in, given this proxy's
    /// identity: HTTP/2 over mTLS, else the backend's protocol.
    pub fn protocol(&self, identity: Option<&Identity>) -> BackendProtocol {
        match self.mtls(identity) {
            Some(_) => BackendProtocol::Http2,
            None => self.settings.protocol,
        }
    }

    /// Whether an HTTP/1.1 upgrade (WebSocket and the like) can reach this endpoint. A
    /// mesh endpoint is a proxy's inbound listener, which takes HTTP/1.1 on a connection
    /// of its own (ALPN `http/1.1` over mTLS) whatever the backend's protocol says
    /// requests share; an application that speaks only HTTP/2 cannot switch protocols.
    pub fn carries_upgrades(&self) -> bool {
        self.identity.is_some() || self.settings.protocol == BackendProtocol::Http1
    }

    /// mTLS applies when the endpoint has an identity and this proxy has one too. An
    /// endpoint with an identity is reached in plaintext until this proxy has its
    /// certificate; its listener, if permissive, accepts that.
    fn mtls<'a>(&'a self, identity: Option<&'a Identity>) -> Option<Mtls<'a>> {
        Some(Mtls {
            identity: identity?,
            peer: self.identity.as_ref()?,
        })
    }

    /// Opens a TCP connection, within the connect timeout (which includes resolving the
    /// endpoint's name, if it has one).
    pub async fn connect_tcp(&self) -> Result<TcpStream, EndpointError> {
        let timeout = self.settings.connect_timeout;
        let connect = async {
            let addr = self.resolve().await?;
            sockopt::connect(addr, self.settings.mark)
                .await
                .map_err(|source| EndpointError::Connect { addr, source })
        };
        let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            EndpointError::ConnectTimeout {
                addr: self.addr,
                timeout,
            }
        })??;
        // Proxied requests are small writes that must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// The address to connect to: the endpoint's own, or the first its name resolves
    /// to, IPv4 first (the mesh's pods are IPv4).
    async fn resolve(&self) -> Result<SocketAddr, EndpointError> {
        let Some(host) = &self.hostname else {
            return Ok(self.addr);
        };
        let resolve_error = |source| EndpointError::Resolve {
            host: host.clone(),
            source,
        };
        let port = self.addr.port();
        let found: Vec<SocketAddr> = match self.settings.resolver {
            Some(upstream) => crate::dns::lookup_ipv4(upstream, host)
                .await
                .map_err(resolve_error)?
                .into_iter()
                .map(|ip| SocketAddr::from((ip, port)))
                .collect(),
            None => tokio::net::lookup_host((&**host, port))
                .await
                .map_err(resolve_error)?
                .collect(),
        };
        found
            .iter()
            .find(|a| a.is_ipv4())
            .or(found.first())
            .copied()
            .ok_or_else(|| {
                resolve_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no addresses",
                ))
            })
    }

    /// Opens TLS to an endpoint outside the mesh over `tcp`, within the connect
    /// timeout, checking its certificate as the origination's configuration says.
    async fn originate(
        &self,
        origination: &Origination,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, EndpointError> {
        let addr = tcp.peer_addr().unwrap_or(self.addr);
        let failed = |reason: String| EndpointError::Origination {
            server_name: origination.key.0.server_name.as_str().into(),
            addr,
            reason,
        };
        let client = origination.client.clone().map_err(failed)?;
        let server_name = origination.server_name.clone().map_err(failed)?;
        let handshake = TlsConnector::from(client).connect(server_name, tcp);
        match tokio::time::timeout(self.settings.connect_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!(
                "no TLS handshake within {:?}",
                self.settings.connect_timeout
            ))),
        }
    }

    /// Opens an mTLS connection carrying `alpn`; TCP connect and handshake each get the
    /// connect timeout.
    async fn connect_mtls(&self, mtls: Mtls<'_>, alpn: Alpn) -> Result<MtlsStream, EndpointError> {
        let tcp = self.connect_tcp().await?;
        let timeout = self.settings.connect_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let server_name = self.server_name.clone();
        connect::connect(tcp, mtls.identity, mtls.peer, server_name, alpn, deadline)
            .await
            .map_err(|e| match e.reason {
                HandshakeReason::Timeout => EndpointError::ConnectTimeout {
                    addr: self.addr,
                    timeout,
                },
                reason => EndpointError::Tls {
                    addr: self.addr,
                    reason,
                    source: e.error,
                },
            })
    }

    /// Opens a connection for opaque TCP: mTLS (ALPN `trellis-tcp`) when `identity`
    /// and the endpoint's identity say so, else plain TCP.
    pub async fn open_tcp(&self, identity: Option<&Identity>) -> Result<Opaque, EndpointError> {
        self.open(identity, Alpn::Tcp).await
    }

    /// Opens a connection the way requests reach this endpoint: mTLS carrying `alpn`
    /// when `identity` and the endpoint's identity say so, else plain TCP. Health
    /// probes use it, so a callee that accepts only mTLS can be probed.
    pub async fn open(
        &self,
        identity: Option<&Identity>,
        alpn: Alpn,
    ) -> Result<Opaque, EndpointError> {
        match self.mtls(identity) {
            Some(mtls) => Ok(Opaque::Mtls(Box::new(self.connect_mtls(mtls, alpn).await?))),
            None => Ok(Opaque::Plain(self.connect_tcp().await?)),
        }
    }

    /// Sends a request over a pooled connection. The request must already have the form
    /// [`Self::protocol`] needs (see `http::forward`). A new connection, and the wait
    /// for it, each take a permit from `breaker` (the backend's circuit breaker); the
    /// connection's permit is held as long as it stays open.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<BoxBody>,
        identity: Option<&Identity>,
        breaker: Option<&Breaker>,
    ) -> Result<Response<Incoming>, EndpointError> {
        if let Some(mtls) = self.mtls(identity) {
            return self.send_h2(req, Some(mtls), breaker).await;
        }
        // Validation keeps origination to HTTP/1.1 backends.
        if self.origination.is_some() {
            return self.send_h1(req, breaker).await;
        }
        match self.settings.protocol {
            BackendProtocol::Http1 => self.send_h1(req, breaker).await,
            BackendProtocol::Http2 => self.send_h2(req, None, breaker).await,
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<BoxBody>,
        breaker: Option<&Breaker>,
    ) -> Result<Response<Incoming>, EndpointError> {
        // A pooled connection may have been closed by the endpoint since it was last
        // used. Hyper hands the request back when it was not written, so it is sent again
        // on another connection; at most a few times, then on a fresh one.
        for _ in 0..3 {
            let Some(mut sender) = self.take_idle_h1() else {
                break;
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.return_to_pool(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(EndpointError::Request {
                            addr: self.addr,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
        let pending = permit(breaker, Overflow::PendingRequests)?;
        let connection = permit(breaker, Overflow::Connections)?;
        let mut sender = self.connect_h1(false, connection).await?;
        drop(pending);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| EndpointError::Request {
                addr: self.addr,
                source,
            })?;
        self.return_to_pool(sender);
        Ok(resp)
    }

    /// Sends a request that asks to upgrade the connection (WebSocket and the like) on a
    /// connection of its own, which is never pooled; over mTLS that connection is
    /// HTTP/1.1 (ALPN `http/1.1`), since HTTP/2 cannot carry an upgrade.
    pub async fn send_upgrade(
        &self,
        req: Request<BoxBody>,
        identity: Option<&Identity>,
    ) -> Result<Response<Incoming>, EndpointError> {
        let mut sender = match self.mtls(identity) {
            Some(mtls) => {
                let stream = self.connect_mtls(mtls, Alpn::Http1).await?;
                self.handshake_h1(stream, true, None).await?
            }
            None => self.connect_h1(true, None).await?,
        };
        sender
            .send_request(req)
            .await
            .map_err(|source| EndpointError::Request {
                addr: self.addr,
                source,
            })
    }

    async fn connect_h1(
        &self,
        with_upgrades: bool,
        permit: Option<Permit>,
    ) -> Result<http1::SendRequest<BoxBody>, EndpointError> {
        let stream = self.connect_tcp().await?;
        match &self.origination {
            Some(origination) => {
                let tls = self.originate(origination, stream).await?;
                self.handshake_h1(tls, with_upgrades, permit).await
            }
            None => self.handshake_h1(stream, with_upgrades, permit).await,
        }
    }

    /// `permit`, the connection's place under the breaker, lives as long as the
    /// connection.
    async fn handshake_h1<I>(
        &self,
        stream: I,
        with_upgrades: bool,
        permit: Option<Permit>,
    ) -> Result<http1::SendRequest<BoxBody>, EndpointError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| EndpointError::Handshake {
                addr: self.addr,
                source,
            })?;
        let addr = self.addr;
        if with_upgrades {
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(%addr, error = %e, "endpoint connection ended");
                }
            });
        } else {
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "endpoint connection ended");
                }
            });
        }
        Ok(sender)
    }

    /// A pooled connection ready for a request, newest first. Connections still
    /// reading an earlier response stay in the pool; closed and expired ones leave it.
    fn take_idle_h1(&self) -> Option<http1::SendRequest<BoxBody>> {
        let mut idle = self.idle_h1.lock().ok()?;
        let max_idle = self.settings.idle_timeout;
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let conn = &idle[i];
            if conn.sender.is_closed() || conn.since.elapsed() >= max_idle {
                idle.swap_remove(i);
            } else if conn.sender.is_ready() {
                return Some(idle.swap_remove(i).sender);
            }
        }
        None
    }

    /// Puts a connection back in the pool as soon as its response headers are in. It
    /// becomes ready for the next request when that response's body has been read;
    /// until then `take_idle_h1` passes it over.
    fn return_to_pool(self: &Arc<Self>, sender: http1::SendRequest<BoxBody>) {
        let Ok(mut idle) = self.idle_h1.lock() else {
            return;
        };
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes pooled connections idle for longer than the idle timeout.
    pub fn close_idle(&self) {
        let max_idle = self.settings.idle_timeout;
        if let Ok(mut idle) = self.idle_h1.lock() {
            idle.retain(|c| c.since.elapsed() < max_idle && !c.sender.is_closed());
        }
    }

    /// Idle HTTP/1.1 connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle_h1.lock().map(|i| i.len()).unwrap_or(0)
    }

    async fn send_h2(
        &self,
        req: Request<BoxBody>,
        mtls: Option<Mtls<'_>>,
        breaker: Option<&Breaker>,
    ) -> Result<Response<Incoming>, EndpointError> {
        let request_error = |source| EndpointError::Request {
            addr: self.addr,
            source,
        };
        let generation = mtls.map(|m| m.identity.generation());
        let mut sender = self.h2_sender(mtls, generation.as_ref(), breaker).await?;
        sender.ready().await.map_err(request_error)?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                // The connection went away (GOAWAY, reset) before the request was sent:
                // forget it and send once more on a new one.
                Some(unsent) => {
                    self.forget_h2();
                    let mut sender = self.h2_sender(mtls, generation.as_ref(), breaker).await?;
                    sender.ready().await.map_err(request_error)?;
                    sender.send_request(unsent).await.map_err(request_error)
                }
                None => Err(request_error(e.into_error())),
            },
        }
    }

    /// Drops the shared HTTP/2 connection so the next request opens a new one. If
    /// another request already replaced it, that costs one extra connection, which is
    /// rare and harmless.
    fn forget_h2(&self) {
        if let Ok(mut slot) = self.h2.lock() {
            *slot = None;
        }
    }

    /// The shared HTTP/2 connection, opened if there is none, if it closed, or if it was
    /// made with other credentials or roots than `generation`. A replaced connection is
    /// only dropped from the slot: requests already on it finish, then it closes.
    async fn h2_sender(
        &self,
        mtls: Option<Mtls<'_>>,
        generation: Option<&Generation>,
        breaker: Option<&Breaker>,
    ) -> Result<http2::SendRequest<BoxBody>, EndpointError> {
        if let Some(sender) = self.open_h2(generation) {
            return Ok(sender);
        }
        let _pending = permit(breaker, Overflow::PendingRequests)?;
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.open_h2(generation) {
            return Ok(sender);
        }
        let connection = permit(breaker, Overflow::Connections)?;
        let sender = match mtls {
            Some(mtls) => {
                let stream = self.connect_mtls(mtls, Alpn::H2).await?;
                self.handshake_h2(stream, connection).await?
            }
            None => {
                let stream = self.connect_tcp().await?;
                self.handshake_h2(stream, connection).await?
            }
        };
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some(SharedH2 {
                sender: sender.clone(),
                made_with: generation.cloned(),
            });
        }
        Ok(sender)
    }

    async fn handshake_h2<I>(
        &self,
        stream: I,
        permit: Option<Permit>,
    ) -> Result<http2::SendRequest<BoxBody>, EndpointError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(crate::flow::STREAM_WINDOW)
            .initial_connection_window_size(crate::flow::CONNECTION_WINDOW)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| EndpointError::Handshake {
                addr: self.addr,
                source,
            })?;
        let addr = self.addr;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "endpoint connection ended");
            }
        });
        Ok(sender)
    }

    fn open_h2(&self, generation: Option<&Generation>) -> Option<http2::SendRequest<BoxBody>> {
        let slot = self.h2.lock().ok()?;
        slot.as_ref()
            .filter(|c| !c.sender.is_closed() && c.made_with.as_ref() == generation)
            .map(|c| c.sender.clone())
    }
}
