//! The Trellis resource model: the documents operators apply (`HTTPRoute`,
//! `GRPCRoute`, `TCPRoute`, `TLSRoute` from the Kubernetes Gateway API; `Service`,
//! `Workload`, `MeshConfig`, `BackendPolicy`, `AuthorizationPolicy`, `FaultInjection`,
//! `RateLimitPolicy` and `ExternalService` under
//! `trellis.dev/v1alpha1`), their typed specs, and their validation, with errors that
//! give the path of the field at fault.
//!
//! Shapes and field names follow the Gateway API, so the same documents can become
//! custom resources on Kubernetes; today they are read from files, the control plane's
//! store or etcd, and no Kubernetes API server backs them. Read input with [`parse_documents`]; build resources in code
//! with [`Resource::new`] and check them with [`Resource::validate`].
//!
//! [`proto`] is the control plane's gRPC API for proxies. [`authz`] holds the one
//! evaluation of authorization policies, and [`routing`] the one evaluation of route
//! matches, that the proxy and `trellis explain` share.
//!
//! With the `schemars` feature, the specs of the `trellis.dev` kinds and everything in
//! them also describe themselves as JSON Schemas, matching what serde reads and writes;
//! trellis-kubernetes makes its CustomResourceDefinitions from them.
//!
//! This crate is the contract between the control plane and the proxy: it must not
//! depend on `trellis-proxy` or `trellis-control`.

pub mod authz;
pub mod duration;
mod error;
pub mod external;
pub mod fault;
pub mod grpc_status;
pub mod kind;
pub mod meta;
mod parse;
pub mod policy;
pub mod proto;
pub mod resilience;
mod resource;
pub mod route;
pub mod routing;
pub mod service;
mod validate;

pub use crate::duration::{Duration, ParseDurationError};
pub use crate::error::ValidationError;
pub use crate::kind::Kind;
pub use crate::meta::{Condition, ConditionStatus, ObjectMeta, Status};
pub use crate::parse::parse_documents;
pub use crate::resource::{ObjectRef, Resource, Spec, MAX_ANNOTATIONS_BYTES};

#[cfg(test)]
mod tests;
