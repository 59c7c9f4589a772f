//! The Trellis data plane: the proxy that runs beside every service instance.
//!
//! Owns the request path (accept → mTLS termination → detect → HTTP server or TCP
//! forwarder → authorization → route → backend → balancer → endpoint, over mTLS to
//! other proxies), the
//! admin server and the proxy's metrics. It must not
//! depend on the control plane; configuration arrives as a [`config::ProxyConfig`].
//!
//! [`Proxy::start`] is the one wiring function: reading it shows how the pieces fit.

pub mod access_log;
mod admin;
mod app;
pub mod authz;
pub mod backend;
pub mod balance;
pub mod config;
pub mod control;
pub mod detect;
pub mod dns;
pub mod drain;
pub mod endpoint;
pub mod flow;
pub mod head;
pub mod http;
pub mod io;
pub mod linger;
mod listener;
pub mod resilience;
pub mod retry;
pub mod route;
pub mod sni;
pub mod sockopt;
pub mod state;
pub mod tap;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod transparent;

pub use app::{Proxy, Shared, StartError};
pub use config::ProxyConfig;
pub use listener::Prebound;
