//! Trellis on Kubernetes: the one place that speaks to the Kubernetes API.
//!
//! Kubernetes is a second source of the same model, not a second mesh: the cluster's
//! Services, EndpointSlices, Pods and Gateway API routes, and Trellis's own kinds as
//! custom resources, become the same resources the compiler reads in universal mode,
//! and the control plane serves the proxies from them unchanged.
pub mod check;
pub mod client;
pub mod control;
pub mod crd;
pub mod identity;
pub mod inject;
pub mod install;
pub mod lease;
pub mod source;
pub mod state;
pub mod yaml;
