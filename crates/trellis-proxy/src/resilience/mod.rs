//! The mechanisms that keep one slow or failing backend from taking its callers down:
//!
//! - [`budget`]: a retry budget, so retries add at most a share of the live request
//!   rate (plus a small floor) and a failing backend never sees a retry storm;
//! - [`breaker`]: circuit-breaking limits on a backend's connections, pending and
//!   concurrent requests, rejecting what overflows at once;
//! - [`outlier`]: passive health, ejecting an endpoint after consecutive failures or a
//!   high failure rate, for longer each time, never more than a share of them;
//! - [`adaptive`]: a concurrency limit per backend that follows its latency (a
//!   gradient, as in Netflix's concurrency-limits), shedding what exceeds it;
//! - [`ratelimit`]: token buckets per service, route or caller;
//! - [`health`]: active health checks (HTTP, gRPC health protocol, TCP connect);
//! - [`protection`]: one backend's set of them, as the request path uses it.
//!
//! Each is a small state machine driven by the caller with the current time, so that
//! it is tested with a clock the test controls and shared by reference across
//! connections. None of them does I/O but the health checker, which probes endpoints
//! on a task of its own.

pub mod adaptive;
pub mod breaker;
pub mod budget;
pub mod health;
pub mod metrics;
pub mod outlier;
pub mod protection;
pub mod ratelimit;
