//! A sample HTTP backend and a pooled HTTP client to drive it.
//!
//! [`HttpServer`] answers a fixed set of paths (see its docs) over HTTP/1.1,
//! HTTP/2 prior knowledge (h2c) or both, so proxy tests can check bodies,
//! headers, trailers, streaming and upgrades end to end. [`HttpClient`]
//! collects whole responses, trailers included, into a [`TestResponse`].

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use self::client::{HttpClient, TestResponse};
pub use self::server::{HttpServer, ServerProtocol};
pub use crate::BoxError;
