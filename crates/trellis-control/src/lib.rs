//! The Trellis control plane: the process that configures the proxies.
//!
//! Owns the mesh's durable state ([`store`]) and, as it grows, the registry of running
//! workloads, the compiler that turns resources into each proxy's configuration, the CA
//! and the push streams. It must never depend on `trellis-proxy`: the control plane and
//! the data plane speak only through the types and protocol in `trellis-api`.

pub mod api;
pub mod ca;
pub mod compile;
pub mod leader;
pub mod platform;
pub mod push;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod vip;
