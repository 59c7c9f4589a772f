//! Authorization: the `AuthorizationPolicy` resource, the compiled form a proxy holds
//! on a listener ([`AuthorizationConfig`], also the `Authorization` message of the
//! proxy API), and the one evaluation both the proxy and `trellis explain` use
//! ([`Authorizer`]).
//!
//! The flow: the control plane's compiler turns the policies targeting a Service into
//! an `Authorization` message for its workloads' inbound listeners; the proxy reads it
//! with [`AuthorizationConfig::from_wire`], validates it, and compiles it once per
//! configuration version into an [`Authorizer`], which every request is then checked
//! against. `trellis explain` compiles the same message the same way.
//!
//! Semantics, after Istio's `AuthorizationPolicy`: a request is denied when a Deny
//! policy matches it; otherwise, when Allow policies exist, it is allowed only if one
//! matches; otherwise the default action (MeshConfig `defaultAuthorization`) decides. A
//! policy matches when any of its rules does; a rule when any `from` entry matches the
//! caller (or it has none) and any `to` entry matches the request (or it has none).

mod config;
mod eval;
mod resource;
mod rules;

#[cfg(test)]
mod tests;

pub use self::config::{
    action_to_wire, Action, AuthorizationConfig, PolicyConfig, DEFAULT_DECIDER, MAX_POLICIES,
    NO_ALLOW_MATCH_DECIDER,
};
pub use self::eval::{
    normalize_path, Authorizer, DecidedBy, Decision, HeaderLookup, HttpRequest, Peer, Request,
};
pub use self::resource::{AuthorizationAction, AuthorizationPolicySpec};
pub use self::rules::{
    HeaderPattern, Operation, PathPattern, Rule, Source, MAX_ENTRIES, MAX_RULES, MAX_VALUES,
};
