//! A client for the `Echo` service: a hand-written equivalent of tonic's
//! generated client over a plaintext HTTP/2 channel.

use std::net::SocketAddr;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{path, EchoReply, EchoRequest};
use crate::BoxError;

/// A client for `trellis.testkit.Echo` on one plaintext (h2c) channel.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    inner: Grpc<Channel>,
}

// === impl GrpcClient ===

impl GrpcClient {
    /// Connects to `http://{addr}` over HTTP/2 with prior knowledge.
    pub async fn connect(addr: SocketAddr) -> Result<Self, BoxError> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(Self {
            inner: Grpc::new(channel),
        })
    }

    /// Calls `Unary` with `msg` and returns the reply.
    pub async fn unary(&mut self, msg: &str) -> Result<EchoReply, Status> {
        self.ready().await?;
        let rsp = self
            .inner
            .unary(Request::new(request(msg)), method(path::UNARY), codec())
            .await?;
        Ok(rsp.into_inner())
    }

    /// Calls `ServerStream` with `msg` and collects every reply's message.
    pub async fn server_stream(&mut self, msg: &str) -> Result<Vec<String>, Status> {
        self.ready().await?;
        let rsp = self
            .inner
            .server_streaming(
                Request::new(request(msg)),
                method(path::SERVER_STREAM),
                codec(),
            )
            .await?;
        collect(rsp.into_inner()).await
    }

    /// Calls `ClientStream` with one request per entry of `msgs` and returns
    /// the single reply's message.
    pub async fn client_stream(&mut self, msgs: Vec<String>) -> Result<String, Status> {
        self.ready().await?;
        let rsp = self
            .inner
            .client_streaming(requests(msgs), method(path::CLIENT_STREAM), codec())
            .await?;
        Ok(rsp.into_inner().message)
    }

    /// Calls `Bidi`, sends every entry of `msgs`, and collects every reply's
    /// message until the server ends the stream.
    pub async fn bidi(&mut self, msgs: Vec<String>) -> Result<Vec<String>, Status> {
        self.ready().await?;
        let rsp = self
            .inner
            .streaming(requests(msgs), method(path::BIDI), codec())
            .await?;
        collect(rsp.into_inner()).await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("service was not ready: {e}")))
    }
}

/// Reads replies until the server ends the stream.
async fn collect(mut replies: Streaming<EchoReply>) -> Result<Vec<String>, Status> {
    let mut messages = Vec::new();
    while let Some(reply) = replies.message().await? {
        messages.push(reply.message);
    }
    Ok(messages)
}

fn request(msg: &str) -> EchoRequest {
    EchoRequest {
        message: msg.to_owned(),
    }
}

fn requests(msgs: Vec<String>) -> Request<impl tokio_stream::Stream<Item = EchoRequest>> {
    let msgs = msgs.into_iter().map(|message| EchoRequest { message });
    Request::new(futures_util::stream::iter(msgs))
}

fn method(path: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(path)
}

fn codec() -> ProstCodec<EchoRequest, EchoReply> {
    ProstCodec::default()
}
