//! Gateway API routes in the mesh (GAMMA): `HTTPRoute`, `GRPCRoute`, `TCPRoute` and
//! `TLSRoute` attach to a Service through `parentRefs` and send its traffic to weighted
//! `backendRefs`. This module holds what they share: parent and backend
//! references, list limits, and their checks.

pub mod filter;
pub mod grpc;
pub mod http;
pub mod tcp;
pub mod tls;

use serde::{Deserialize, Serialize};

use crate::error::{Checked, ValidationError};
use crate::kind::{Kind, TRELLIS_GROUP};
use crate::validate::{self, int_serde};
use crate::ObjectRef;

/// Most rules a route may hold.
pub const MAX_RULES: usize = 16;
/// Most matches a rule may hold.
pub const MAX_MATCHES: usize = 8;
/// Most filters a rule or backend reference may hold.
pub const MAX_FILTERS: usize = 16;
/// Most backend references a rule may hold.
pub const MAX_BACKEND_REFS: usize = 16;
/// Most parent references a route may hold.
pub const MAX_PARENT_REFS: usize = 32;
/// Most hostnames a route may hold.
pub const MAX_HOSTNAMES: usize = 16;
/// Most header or query parameter matches a match may hold.
pub const MAX_HEADER_MATCHES: usize = 16;
/// Largest backend weight; weights are relative, so sums never overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

fn default_service_kind() -> String {
    Kind::Service.name().to_string()
}

fn default_weight() -> u32 {
    1
}

/// What a route attaches to: in the mesh, the Service whose traffic it routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// API group of the parent: empty (core, the default) or `trellis.dev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the parent. Default `Service`, the only kind accepted.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Namespace of the parent. Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent Service.
    pub name: String,
    /// Name of a port of the parent Service; unset means all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port of the parent Service the route applies to; unset means all ports.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
}

impl ParentReference {
    /// A reference to Service `name` in the route's namespace, on all its ports.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            group: String::new(),
            kind: default_service_kind(),
            namespace: None,
            name: name.into(),
            section_name: None,
            port: None,
        }
    }

    fn check(&self, at: &str) -> Checked {
        service_kind(at, &self.group, &self.kind)?;
        validate::name(&format!("{at}.name"), &self.name)?;
        validate::opt_name(&format!("{at}.namespace"), self.namespace.as_deref())?;
        validate::opt_name(&format!("{at}.sectionName"), self.section_name.as_deref())?;
        validate::opt_port(&format!("{at}.port"), self.port)
    }

    fn object_ref(&self, namespace: &str) -> Option<ObjectRef> {
        object_ref(&self.kind, self.namespace.as_deref(), namespace, &self.name)
    }
}

/// A backend of a TCP rule: a Service and the share of connections it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// API group of the backend: empty (core, the default) or `trellis.dev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the backend. Default `Service`, the only kind accepted.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Name of the backend Service.
    pub name: String,
    /// Namespace of the backend. Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the backend Service. Unset: the Service's only port, or the port the
    /// traffic arrived on.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Share of traffic relative to the rule's other backends, 0 to 1000000; 0 sends
    /// none. Default 1.
    #[serde(default = "default_weight", deserialize_with = "int_serde::weight")]
    pub weight: u32,
}

/// A backend of an HTTP or gRPC rule: a Service, its share of requests, and filters
/// applied only to requests sent to it. `F` is the route's filter type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteBackendRef<F> {
    /// API group of the backend: empty (core, the default) or `trellis.dev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the backend. Default `Service`, the only kind accepted.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Name of the backend Service.
    pub name: String,
    /// Namespace of the backend. Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the backend Service. Unset: the Service's only port, or the port the
    /// request arrived on.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Share of requests relative to the rule's other backends, 0 to 1000000; 0 sends
    /// none. Default 1.
    #[serde(default = "default_weight", deserialize_with = "int_serde::weight")]
    pub weight: u32,
    /// Filters applied to requests sent to this backend only.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<F>,
}

/// A backend of an HTTP rule.
pub type HTTPBackendRef = RouteBackendRef<filter::HTTPRouteFilter>;
/// A backend of a gRPC rule.
pub type GRPCBackendRef = RouteBackendRef<filter::GRPCRouteFilter>;

impl<F> RouteBackendRef<F> {
    /// A reference to Service `name` in the route's namespace with weight `weight`.
    pub fn service(name: impl Into<String>, weight: u32) -> Self {
        Self {
            group: String::new(),
            kind: default_service_kind(),
            name: name.into(),
            namespace: None,
            port: None,
            weight,
            filters: Vec::new(),
        }
    }
}

/// A reference to a Service without a weight, as a request mirror's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// API group of the backend: empty (core, the default) or `trellis.dev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the backend. Default `Service`, the only kind accepted.
    #[serde(default = "default_service_kind")]
    pub kind: String,
    /// Name of the backend Service.
    pub name: String,
    /// Namespace of the backend. Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the backend Service.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
}

impl BackendObjectReference {
    pub(crate) fn check(&self, at: &str) -> Checked {
        check_backend(
            at,
            &self.group,
            &self.kind,
            &self.name,
            self.namespace.as_deref(),
            self.port,
        )
    }

    pub(crate) fn object_ref(&self, namespace: &str) -> Option<ObjectRef> {
        object_ref(&self.kind, self.namespace.as_deref(), namespace, &self.name)
    }
}

impl BackendRef {
    fn check(&self, at: &str) -> Checked {
        check_backend(
            at,
            &self.group,
            &self.kind,
            &self.name,
            self.namespace.as_deref(),
            self.port,
        )?;
        weight(&format!("{at}.weight"), self.weight)
    }

    fn object_ref(&self, namespace: &str) -> Option<ObjectRef> {
        object_ref(&self.kind, self.namespace.as_deref(), namespace, &self.name)
    }
}

impl<F> RouteBackendRef<F> {
    /// Checks the reference and its weight; the caller checks `filters`.
    fn check_ref(&self, at: &str) -> Checked {
        check_backend(
            at,
            &self.group,
            &self.kind,
            &self.name,
            self.namespace.as_deref(),
            self.port,
        )?;
        weight(&format!("{at}.weight"), self.weight)?;
        validate::max_items(&format!("{at}.filters"), &self.filters, MAX_FILTERS)
    }

    fn object_ref(&self, namespace: &str) -> Option<ObjectRef> {
        object_ref(&self.kind, self.namespace.as_deref(), namespace, &self.name)
    }
}

// === shared checks ===

/// The referenced object is a Service: kind `Service` in the core or `trellis.dev` group.
pub(crate) fn service_kind(at: &str, group: &str, kind: &str) -> Checked {
    if !(group.is_empty() || group == TRELLIS_GROUP) {
        return Err(ValidationError::new(
            format!("{at}.group"),
            format!("must be \"\" (core) or \"{TRELLIS_GROUP}\", got {group:?}"),
        ));
    }
    if kind != Kind::Service.name() {
        return Err(ValidationError::new(
            format!("{at}.kind"),
            format!("must be Service, got {kind:?}"),
        ));
    }
    Ok(())
}

fn check_backend(
    at: &str,
    group: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    port: Option<u16>,
) -> Checked {
    service_kind(at, group, kind)?;
    validate::name(&format!("{at}.name"), name)?;
    validate::opt_name(&format!("{at}.namespace"), namespace)?;
    validate::opt_port(&format!("{at}.port"), port)
}

fn weight(at: &str, weight: u32) -> Checked {
    if weight > MAX_WEIGHT {
        return Err(ValidationError::new(
            at,
            format!("must be between 0 and {MAX_WEIGHT}, got {weight}"),
        ));
    }
    Ok(())
}

/// A route's `parentRefs` and `hostnames`.
pub(crate) fn check_parents(
    parent_refs: &[ParentReference],
    hostnames: Option<&[String]>,
) -> Checked {
    if parent_refs.is_empty() {
        return Err(ValidationError::new(
            "spec.parentRefs",
            "at least one parentRef is required: the Service this route attaches to",
        ));
    }
    validate::max_items("spec.parentRefs", parent_refs, MAX_PARENT_REFS)?;
    for (i, p) in parent_refs.iter().enumerate() {
        p.check(&format!("spec.parentRefs[{i}]"))?;
    }
    if let Some(hostnames) = hostnames {
        validate::max_items("spec.hostnames", hostnames, MAX_HOSTNAMES)?;
        for (i, h) in hostnames.iter().enumerate() {
            validate::hostname(&format!("spec.hostnames[{i}]"), h)?;
        }
    }
    Ok(())
}

/// A rule list's length and its rules' optional names (unique DNS labels).
pub(crate) fn check_rule_names<'a>(
    names: impl ExactSizeIterator<Item = Option<&'a String>>,
) -> Checked {
    if names.len() > MAX_RULES {
        return Err(ValidationError::new(
            "spec.rules",
            format!("at most {MAX_RULES} rules are allowed, got {}", names.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.enumerate() {
        if let Some(name) = name {
            let at = format!("spec.rules[{i}].name");
            validate::name(&at, name)?;
            if !seen.insert(name) {
                return Err(ValidationError::new(
                    at,
                    format!("{name:?} names an earlier rule; rule names must be unique"),
                ));
            }
        }
    }
    Ok(())
}

/// The object a reference points at, with the route's namespace filled in; `None` for a
/// kind Trellis does not know (refused by validation).
fn object_ref(kind: &str, ns: Option<&str>, route_ns: &str, name: &str) -> Option<ObjectRef> {
    Some(ObjectRef {
        kind: Kind::from_name(kind)?,
        namespace: ns.unwrap_or(route_ns).to_string(),
        name: name.to_string(),
    })
}

pub(crate) fn parent_object_refs(parents: &[ParentReference], ns: &str) -> Vec<ObjectRef> {
    parents.iter().filter_map(|p| p.object_ref(ns)).collect()
}
