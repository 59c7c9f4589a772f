//! The sample HTTP service: one accept loop, one task per connection, and a
//! handler that routes on the request path.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::shutdown::{self, Shutdown, Trigger};
use crate::BoxError;

type Body = BoxBody<Bytes, BoxError>;

/// Which HTTP versions an [`HttpServer`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerProtocol {
    /// HTTP/1.1 only (keep-alive, upgrades).
    Http1,
    /// HTTP/2 with prior knowledge (h2c) only.
    Http2,
    /// Either, chosen per connection by hyper-util's auto builder from the
    /// connection preface.
    Auto,
}

/// A sample HTTP service on `127.0.0.1:0`, stopped (with all its
/// connections) when dropped.
///
/// Paths, for any method:
///
/// | path | response |
/// |---|---|
/// | `/` | 200 `hello from {name}\n` |
/// | `/echo` | 200, the request body streamed back, `content-type` copied |
/// | `/delay/{ms}` | sleeps `ms` milliseconds, then 200 `slept {ms}\n` |
/// | `/status/{code}` | that status, body `status {code}\n` |
/// | `/headers` | 200, `version: HTTP/1.1` (or `HTTP/2.0`), then `:authority: …` when the URI has one, then one `name: value` line per request header, sorted by name |
/// | `/trailers` | 200 `with trailers\n`, then the trailer `x-checksum: ok` (HTTP/1.1 sends trailers only when the request carries `te: trailers`) |
/// | `/stream/{n}` | 200, `n` body frames `chunk {i}\n` |
/// | `/ws` | with `upgrade: websocket`: 101, then raw byte echo on the upgraded connection until EOF; otherwise 400 |
/// | anything else | 404 |
///
/// Every response carries `x-served-by: {name}`.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    state: Arc<State>,
    _trigger: Trigger,
}

/// What the handler needs from its server, shared by every connection.
#[derive(Debug)]
struct State {
    name: String,
    served_by: HeaderValue,
    requests: AtomicU64,
    connections: AtomicU64,
    shutdown: Shutdown,
}

// === impl HttpServer ===

impl HttpServer {
    /// Binds `127.0.0.1:0` and starts serving `protocol`, answering as `name`.
    pub async fn start(name: &str, protocol: ServerProtocol) -> io::Result<HttpServer> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), name, protocol).await
    }

    /// Binds `addr` and starts serving `protocol`, answering as `name`; for the demo
    /// application, which needs known ports.
    pub async fn start_on(
        addr: SocketAddr,
        name: &str,
        protocol: ServerProtocol,
    ) -> io::Result<HttpServer> {
        let served_by = HeaderValue::from_str(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (trigger, shutdown) = shutdown::channel();
        let state = Arc::new(State {
            name: name.to_owned(),
            served_by,
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            shutdown: shutdown.clone(),
        });
        shutdown.spawn(accept_loop(listener, protocol.builder(), state.clone()));
        tracing::debug!(%addr, name, ?protocol, "test http server listening");
        Ok(HttpServer {
            addr,
            state,
            _trigger: trigger,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far, on any path.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

// === impl ServerProtocol ===

impl ServerProtocol {
    fn builder(self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No cap on concurrent streams, as gRPC servers have none by default: a burst
        // reaches the handlers rather than queueing in front of hyper's 200.
        builder.http2().max_concurrent_streams(None);
        match self {
            ServerProtocol::Http1 => builder.http1_only(),
            ServerProtocol::Http2 => builder.http2_only(),
            ServerProtocol::Auto => builder,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    state: Arc<State>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "test http server failed to accept");
                continue;
            }
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let builder = builder.clone();
        let handler_state = state.clone();
        let service = service_fn(move |req| handle(handler_state.clone(), req));
        state.shutdown.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "test http connection ended with an error");
            }
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let mut rsp = match path.as_str() {
        "/" => text(StatusCode::OK, format!("hello from {}\n", state.name)),
        "/echo" => echo(req),
        "/headers" => text(StatusCode::OK, describe_headers(&req)),
        "/trailers" => with_trailers(),
        "/ws" => upgrade_echo(&state, req),
        _ => {
            if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("slept {ms}\n"))
            } else if let Some(code) = path.strip_prefix("/status/").and_then(parse_status) {
                text(code, format!("status {}\n", code.as_u16()))
            } else if let Some(n) = path.strip_prefix("/stream/").and_then(|n| n.parse().ok()) {
                chunks(n)
            } else {
                text(StatusCode::NOT_FOUND, format!("no route for {path}\n"))
            }
        }
    };
    rsp.headers_mut()
        .insert("x-served-by", state.served_by.clone());
    Ok(rsp)
}

fn parse_status(code: &str) -> Option<StatusCode> {
    StatusCode::from_bytes(code.as_bytes()).ok()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut rsp = Response::new(full(body));
    *rsp.status_mut() = status;
    rsp
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Streams the request body (and any request trailers) straight back.
fn echo(req: Request<Incoming>) -> Response<Body> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let mut rsp = Response::new(req.into_body().map_err(BoxError::from).boxed());
    if let Some(content_type) = content_type {
        rsp.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    rsp
}

fn describe_headers(req: &Request<Incoming>) -> String {
    let mut pairs: Vec<(&str, &HeaderValue)> = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    // A stable sort keeps repeated headers in the order they arrived.
    pairs.sort_by_key(|(name, _)| *name);
    let mut body = format!("version: {:?}\n", req.version());
    // HTTP/2 carries the host as the `:authority` pseudo-header, part of the URI.
    if let Some(authority) = req.uri().authority() {
        body.push_str(&format!(":authority: {authority}\n"));
    }
    for (name, value) in pairs {
        body.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    body
}

fn with_trailers() -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("ok"));
    let frames = [
        Frame::data(Bytes::from_static(b"with trailers\n")),
        Frame::trailers(trailers),
    ];
    let mut rsp = Response::new(frames_body(frames.into_iter()));
    // HTTP/1.1 only sends trailer fields that the head announces.
    rsp.headers_mut()
        .insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
    rsp
}

fn chunks(n: u32) -> Response<Body> {
    let frames = (0..n).map(|i| Frame::data(Bytes::from(format!("chunk {i}\n"))));
    Response::new(frames_body(frames))
}

/// A body that yields each frame separately, with no known length, so each
/// becomes its own HTTP/1.1 chunk or HTTP/2 DATA frame.
fn frames_body<I>(frames: I) -> Body
where
    I: Iterator<Item = Frame<Bytes>> + Send + Sync + 'static,
{
    let stream = futures_util::stream::iter(frames.map(Ok::<_, BoxError>));
    BodyExt::boxed(StreamBody::new(stream))
}

/// Answers an HTTP/1.1 upgrade with 101 and echoes raw bytes on the
/// upgraded connection; no WebSocket framing is involved.
fn upgrade_echo(state: &State, mut req: Request<Incoming>) -> Response<Body> {
    let wants_websocket = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants_websocket {
        return text(
            StatusCode::BAD_REQUEST,
            "expected upgrade: websocket\n".into(),
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    state.shutdown.spawn(async move {
        let result = async {
            let mut io = TokioIo::new(upgrade.await?);
            let (mut read, mut write) = tokio::io::split(&mut io);
            tokio::io::copy(&mut read, &mut write).await?;
            tokio::io::AsyncWriteExt::shutdown(&mut write).await?;
            Ok::<_, BoxError>(())
        };
        if let Err(error) = result.await {
            tracing::debug!(%error, "test upgrade echo ended with an error");
        }
    });
    let mut rsp = Response::new(full(Bytes::new()));
    *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = rsp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    rsp
}
