//! The `Echo` service: a hand-written equivalent of tonic's generated
//! server, routing on the request path to one handler per method kind.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, BoxStream, Service};
use tonic::server::{
    ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{path, EchoReply, EchoRequest};
use crate::shutdown::{self, Trigger};

/// The `trellis.testkit.Echo` service on `127.0.0.1:0`, served by
/// `tonic::transport::Server` and stopped when dropped.
///
/// - `Unary` echoes the message; `fail:{code}` instead fails with that
///   `tonic::Code` and the message `asked to fail` (a trailers-only response).
/// - `flaky:{n}:{code}` fails the first `n` calls carrying that message with `code`
///   and echoes from then on: `Unary` as above, `ServerStream` with response headers
///   and then the status in trailers, before any reply.
/// - `ServerStream` replies `{message} 0`, `{message} 1`, `{message} 2`.
/// - `ClientStream` replies once with all messages joined by `,`.
/// - `Bidi` echoes each message as it arrives.
///
/// Every reply's `served_by` is the server's name.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    echo: Echo,
    _trigger: Trigger,
}

/// The service and each of its method handlers; cheap to clone.
#[derive(Clone, Debug)]
struct Echo {
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    /// Calls seen per `flaky:` message.
    flaky: Arc<Mutex<HashMap<String, u32>>>,
}

// === impl GrpcServer ===

impl GrpcServer {
    /// Binds `127.0.0.1:0` and starts serving, answering as `name`.
    pub async fn start(name: &str) -> io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), name).await
    }

    /// Binds `addr` and starts serving, answering as `name`; for an application that
    /// needs a known port.
    pub async fn start_on(addr: SocketAddr, name: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let echo = Echo {
            name: name.into(),
            requests: Arc::new(AtomicU64::new(0)),
            flaky: Arc::default(),
        };
        let (trigger, shutdown) = shutdown::channel();
        let serve = tonic::transport::Server::builder().serve_with_incoming_shutdown(
            echo.clone(),
            TcpListenerStream::new(listener),
            shutdown.signalled(),
        );
        tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::warn!(%error, "test grpc server failed");
            }
        });
        tracing::debug!(%addr, name, "test grpc server listening");
        Ok(Self {
            addr,
            echo,
            _trigger: trigger,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// RPCs received so far, on any path.
    pub fn requests(&self) -> u64 {
        self.echo.requests.load(Ordering::SeqCst)
    }
}

// === impl Echo ===

impl Echo {
    /// The status a `flaky:{n}:{code}` call fails with while it is among the first `n`
    /// with its message.
    fn flaky(&self, message: &str) -> Option<Status> {
        let mut spec = message.strip_prefix("flaky:")?.split(':');
        let n: u32 = spec.next()?.parse().ok()?;
        let code: i32 = spec.next()?.parse().ok()?;
        let mut seen = self.flaky.lock().unwrap_or_else(|e| e.into_inner());
        let calls = seen.entry(message.to_owned()).or_default();
        *calls += 1;
        (*calls <= n).then(|| Status::new(Code::from_i32(code), "flaky"))
    }

    fn reply(&self, message: String) -> EchoReply {
        EchoReply {
            message,
            served_by: self.name.to_string(),
        }
    }
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let echo = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            let rsp = match req.uri().path() {
                path::UNARY => grpc.unary(Unary(echo), req).await,
                path::SERVER_STREAM => grpc.server_streaming(ServerStream(echo), req).await,
                path::CLIENT_STREAM => grpc.client_streaming(ClientStream(echo), req).await,
                path::BIDI => grpc.streaming(Bidi(echo), req).await,
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            };
            Ok(rsp)
        })
    }
}

/// Handles `Unary`.
struct Unary(Echo);
/// Handles `ServerStream`.
struct ServerStream(Echo);
/// Handles `ClientStream`.
struct ClientStream(Echo);
/// Handles `Bidi`.
struct Bidi(Echo);

impl UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let message = req.into_inner().message;
        let result = match message.strip_prefix("fail:").map(str::parse::<i32>) {
            Some(Ok(code)) => Err(Status::new(Code::from_i32(code), "asked to fail")),
            _ => match self.0.flaky(&message) {
                Some(status) => Err(status),
                None => Ok(Response::new(self.0.reply(message))),
            },
        };
        Box::pin(std::future::ready(result))
    }
}

impl ServerStreamingService<EchoRequest> for ServerStream {
    type Response = EchoReply;
    type ResponseStream = BoxStream<EchoReply>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let message = req.into_inner().message;
        // A failure as the stream's first item: tonic sends the response headers, then
        // the status in trailers.
        let replies: Vec<Result<EchoReply, Status>> = match self.0.flaky(&message) {
            Some(status) => vec![Err(status)],
            None => (0..3)
                .map(|i| Ok(self.0.reply(format!("{message} {i}"))))
                .collect(),
        };
        let stream: Self::ResponseStream = Box::pin(futures_util::stream::iter(replies));
        Box::pin(std::future::ready(Ok(Response::new(stream))))
    }
}

impl ClientStreamingService<EchoRequest> for ClientStream {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let echo = self.0.clone();
        Box::pin(async move {
            let mut requests = req.into_inner();
            let mut messages = Vec::new();
            while let Some(req) = requests.message().await? {
                messages.push(req.message);
            }
            Ok(Response::new(echo.reply(messages.join(","))))
        })
    }
}

impl StreamingService<EchoRequest> for Bidi {
    type Response = EchoReply;
    type ResponseStream = BoxStream<EchoReply>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let echo = self.0.clone();
        let replies = req
            .into_inner()
            .map(move |req| req.map(|req| echo.reply(req.message)));
        let stream: Self::ResponseStream = Box::pin(replies);
        Box::pin(std::future::ready(Ok(Response::new(stream))))
    }
}
