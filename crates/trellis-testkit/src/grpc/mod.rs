//! A gRPC echo service, `trellis.testkit.Echo`, with one method of each
//! streaming kind, and a client for it.
//!
//! The messages and the service glue are written by hand (no `protoc`), in
//! the shape tonic's generated code takes:
//!
//! ```proto
//! package trellis.testkit;
//! message EchoRequest { string message = 1; }
//! message EchoReply { string message = 1; string served_by = 2; }
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc ServerStream(EchoRequest) returns (stream EchoReply);
//!   rpc ClientStream(stream EchoRequest) returns (EchoReply);
//!   rpc Bidi(stream EchoRequest) returns (stream EchoReply);
//! }
//! ```

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use self::client::GrpcClient;
pub use self::server::GrpcServer;
pub use crate::BoxError;

/// The request message of every `Echo` method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// The text to echo. `fail:{code}` makes `Unary` fail with that
    /// `tonic::Code`; `flaky:{n}:{code}` fails the first `n` such calls.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The reply message of every `Echo` method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The echoed text.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The name the answering server was started with.
    #[prost(string, tag = "2")]
    pub served_by: String,
}

/// Request paths, one per method.
mod path {
    pub(super) const UNARY: &str = "/trellis.testkit.Echo/Unary";
    pub(super) const SERVER_STREAM: &str = "/trellis.testkit.Echo/ServerStream";
    pub(super) const CLIENT_STREAM: &str = "/trellis.testkit.Echo/ClientStream";
    pub(super) const BIDI: &str = "/trellis.testkit.Echo/Bidi";
}
