//! `ratings`: the gRPC service `trellis.demo.Ratings`, and a client for it.
//!
//! The messages and the service glue are written by hand (no `protoc`), in the shape
//! tonic's generated code takes:
//!
//! ```proto
//! package trellis.demo;
//! message GetRating { uint32 book_id = 1; }
//! message Rating { uint32 book_id = 1; uint32 stars = 2; string version = 3; }
//! service Ratings { rpc Get(GetRating) returns (Rating); }
//! ```
//!
//! Each instance answers with the version it was started with (`--version v1`) and the
//! stars that version gives ([`stars_for`]), so a traffic split between versions shows
//! in every answer.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The request of `Get`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRating {
    #[prost(uint32, tag = "1")]
    pub book_id: u32,
}

/// The answer of `Get`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rating {
    #[prost(uint32, tag = "1")]
    pub book_id: u32,
    /// 1 to 5.
    #[prost(uint32, tag = "2")]
    pub stars: u32,
    /// The version of the instance that answered.
    #[prost(string, tag = "3")]
    pub version: String,
}

/// The request path of `Get`.
pub const GET_PATH: &str = "/trellis.demo.Ratings/Get";

/// How long a call may take, connecting included; books answers without a rating after
/// that rather than keep its own caller waiting.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Stars a version gives every book: `v2` is the generous new release (5), anything
/// else the current one (4).
pub fn stars_for(version: &str) -> u32 {
    if version == "v2" {
        5
    } else {
        4
    }
}

/// Serves `trellis.demo.Ratings` (gRPC, HTTP/2 with prior knowledge) on `listen`,
/// answering as `version`, until the task is dropped or serving fails.
pub async fn serve_ratings(listen: SocketAddr, version: &str) -> io::Result<()> {
    serve_ratings_on(TcpListener::bind(listen).await?, version).await
}

/// [`serve_ratings`] on a bound listener.
pub async fn serve_ratings_on(listener: TcpListener, version: &str) -> io::Result<()> {
    let ratings = Ratings {
        version: version.into(),
    };
    tonic::transport::Server::builder()
        .serve_with_incoming(ratings, TcpListenerStream::new(listener))
        .await
        .map_err(io::Error::other)
}

/// The service and its one method handler; cheap to clone.
#[derive(Clone, Debug)]
struct Ratings {
    version: Arc<str>,
}

// === impl Ratings ===

impl Service<http::Request<Body>> for Ratings {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let ratings = self.clone();
        Box::pin(async move {
            let rsp = match req.uri().path() {
                GET_PATH => {
                    let mut grpc = Grpc::new(ProstCodec::<Rating, GetRating>::default());
                    grpc.unary(ratings, req).await
                }
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            };
            Ok(rsp)
        })
    }
}

impl UnaryService<GetRating> for Ratings {
    type Response = Rating;
    type Future = BoxFuture<Response<Rating>, Status>;

    fn call(&mut self, req: Request<GetRating>) -> Self::Future {
        let book_id = req.into_inner().book_id;
        let rating = Rating {
            book_id,
            stars: stars_for(&self.version),
            version: self.version.to_string(),
        };
        tracing::debug!(book_id, version = %self.version, "rated");
        Box::pin(std::future::ready(Ok(Response::new(rating))))
    }
}

/// A client for `trellis.demo.Ratings` at one address (in the mesh: the caller's local
/// upstream port). Connects on first use and again after a failure; cheap to clone.
#[derive(Clone, Debug)]
pub struct RatingsClient {
    inner: tonic::client::Grpc<Channel>,
}

// === impl RatingsClient ===

impl RatingsClient {
    /// A client for `http://{authority}` (`IP:PORT`, or `NAME:PORT` resolved when
    /// dialling); nothing is dialled until the first call.
    pub fn new(authority: impl fmt::Display) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{authority}"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            inner: tonic::client::Grpc::new(channel),
        })
    }

    /// Calls `Get` for `book_id`.
    pub async fn get(&mut self, book_id: u32) -> Result<Rating, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("ratings is not ready: {e}")))?;
        let rsp = self
            .inner
            .unary(
                Request::new(GetRating { book_id }),
                PathAndQuery::from_static(GET_PATH),
                ProstCodec::<GetRating, Rating>::default(),
            )
            .await?;
        Ok(rsp.into_inner())
    }
}
