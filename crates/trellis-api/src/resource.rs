//! The resource envelope (`apiVersion`, `kind`, `metadata`, `spec`, `status`), the
//! typed spec chosen by `kind`, and what a resource refers to.
//!
//! Reading goes through a `serde_json::Value` so that `apiVersion` and `kind` can be
//! read before the spec, whatever order the keys come in, while errors keep the full
//! path of the field at fault (`spec.rules[0].matches[0].path.type`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::authz::AuthorizationPolicySpec;
use crate::error::{from_value, Checked, ValidationError};
use crate::external::ExternalServiceSpec;
use crate::fault::FaultInjectionSpec;
use crate::kind::Kind;
use crate::meta::{is_rfc3339, Condition, ObjectMeta, Status};
use crate::policy::{BackendPolicySpec, MeshConfigSpec};
use crate::resilience::RateLimitPolicySpec;
use crate::route::grpc::GRPCRouteSpec;
use crate::route::http::HTTPRouteSpec;
use crate::route::tcp::TCPRouteSpec;
use crate::route::tls::TLSRouteSpec;
use crate::service::{ServiceSpec, WorkloadSpec};
use crate::validate;

/// Largest total size of a resource's annotations, keys and values, in bytes (as in
/// Kubernetes).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// One resource: the same document that is a custom resource on Kubernetes.
///
/// Deserializing checks the document's shape (types, unknown fields, `apiVersion`
/// against `kind`); [`Resource::validate`] checks the rest. [`crate::parse_documents`]
/// does both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// API group and version, e.g. `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// What the resource is; always `spec.kind()`.
    pub kind: Kind,
    /// Name, namespace, labels and store bookkeeping.
    pub metadata: ObjectMeta,
    /// The desired state, typed by kind.
    pub spec: Spec,
    /// The observed state, written by the control plane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The desired state of a resource, one variant per [`Kind`]. Serializes as the bare
/// spec; which variant to read is decided by the envelope's `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    HTTPRoute(HTTPRouteSpec),
    GRPCRoute(GRPCRouteSpec),
    TCPRoute(TCPRouteSpec),
    TLSRoute(TLSRouteSpec),
    Service(ServiceSpec),
    Workload(WorkloadSpec),
    MeshConfig(MeshConfigSpec),
    /// Boxed: its protection settings make it much larger than the other specs.
    BackendPolicy(Box<BackendPolicySpec>),
    AuthorizationPolicy(AuthorizationPolicySpec),
    FaultInjection(FaultInjectionSpec),
    RateLimitPolicy(RateLimitPolicySpec),
    ExternalService(ExternalServiceSpec),
}

/// A reference from one resource to another, with the namespace resolved (empty for
/// cluster-wide kinds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `Service default/ratings`, or `MeshConfig default` for a cluster-wide kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

// === impl Spec ===

impl Spec {
    /// The kind this spec belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::HTTPRoute(_) => Kind::HTTPRoute,
            Spec::GRPCRoute(_) => Kind::GRPCRoute,
            Spec::TCPRoute(_) => Kind::TCPRoute,
            Spec::TLSRoute(_) => Kind::TLSRoute,
            Spec::Service(_) => Kind::Service,
            Spec::Workload(_) => Kind::Workload,
            Spec::MeshConfig(_) => Kind::MeshConfig,
            Spec::BackendPolicy(_) => Kind::BackendPolicy,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::FaultInjection(_) => Kind::FaultInjection,
            Spec::RateLimitPolicy(_) => Kind::RateLimitPolicy,
            Spec::ExternalService(_) => Kind::ExternalService,
        }
    }

    /// Reads a spec of `kind` from `value`; errors carry paths starting at `spec`.
    pub fn from_value(kind: Kind, value: Value) -> Result<Spec, ValidationError> {
        // A missing or null spec reads as `{}`, so kinds whose fields all have defaults
        // (MeshConfig) need none and the others name the field that is missing.
        let value = match value {
            Value::Null => Value::Object(Map::new()),
            v => v,
        };
        const AT: &str = "spec";
        Ok(match kind {
            Kind::HTTPRoute => Spec::HTTPRoute(from_value(AT, value)?),
            Kind::GRPCRoute => Spec::GRPCRoute(from_value(AT, value)?),
            Kind::TCPRoute => Spec::TCPRoute(from_value(AT, value)?),
            Kind::TLSRoute => Spec::TLSRoute(from_value(AT, value)?),
            Kind::Service => Spec::Service(from_value(AT, value)?),
            Kind::Workload => Spec::Workload(from_value(AT, value)?),
            Kind::MeshConfig => Spec::MeshConfig(from_value(AT, value)?),
            Kind::BackendPolicy => Spec::BackendPolicy(Box::new(from_value(AT, value)?)),
            Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(from_value(AT, value)?),
            Kind::FaultInjection => Spec::FaultInjection(from_value(AT, value)?),
            Kind::RateLimitPolicy => Spec::RateLimitPolicy(from_value(AT, value)?),
            Kind::ExternalService => Spec::ExternalService(from_value(AT, value)?),
        })
    }

    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        match self {
            Spec::HTTPRoute(s) => s.validate(),
            Spec::GRPCRoute(s) => s.validate(),
            Spec::TCPRoute(s) => s.validate(),
            Spec::TLSRoute(s) => s.validate(),
            Spec::Service(s) => s.validate(),
            Spec::Workload(s) => s.validate(),
            Spec::MeshConfig(s) => s.validate(),
            Spec::BackendPolicy(s) => s.validate(),
            Spec::AuthorizationPolicy(s) => s.validate(),
            Spec::FaultInjection(s) => s.validate(),
            Spec::RateLimitPolicy(s) => s.validate(),
            Spec::ExternalService(s) => s.validate(),
        }
    }
}

// === impl Resource ===

const ENVELOPE_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

impl Resource {
    /// A resource of `spec`'s kind with that kind's `apiVersion` and no status.
    pub fn new(metadata: ObjectMeta, spec: Spec) -> Self {
        let kind = spec.kind();
        let mut metadata = metadata;
        if !kind.is_namespaced() {
            metadata.namespace.clear();
        }
        Self {
            api_version: kind.api_version().to_string(),
            kind,
            metadata,
            spec,
            status: None,
        }
    }

    /// Reads a resource from a parsed JSON or YAML document, checking its shape but not
    /// the rules [`Resource::validate`] checks.
    pub fn from_value(value: Value) -> Result<Resource, ValidationError> {
        let Value::Object(mut map) = value else {
            return Err(ValidationError::new(
                "",
                format!(
                    "expected a resource (a mapping with apiVersion, kind, metadata and \
                     spec), got {}",
                    describe(&value)
                ),
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !ENVELOPE_FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                unknown.clone(),
                format!(
                    "unknown field `{unknown}`, expected one of `apiVersion`, `kind`, \
                     `metadata`, `spec`, `status`"
                ),
            ));
        }
        let kind = read_kind(map.remove("kind"))?;
        let api_version = read_api_version(kind, map.remove("apiVersion"))?;
        let Some(metadata) = map.remove("metadata") else {
            return Err(ValidationError::new(
                "metadata",
                "missing field `metadata`: the resource needs at least metadata.name",
            ));
        };
        let mut metadata: ObjectMeta = from_value("metadata", metadata)?;
        if !kind.is_namespaced() {
            // As Kubernetes does for cluster-scoped kinds, a namespace is ignored.
            metadata.namespace.clear();
        }
        let spec = Spec::from_value(kind, map.remove("spec").unwrap_or(Value::Null))?;
        let status = match map.remove("status") {
            None | Some(Value::Null) => None,
            Some(v) => Some(from_value("status", v)?),
        };
        Ok(Resource {
            api_version,
            kind,
            metadata,
            spec,
            status,
        })
    }

    /// Checks everything the types alone cannot: names, labels, references' shapes,
    /// ranges, regular expressions, durations and limits. The first problem found is
    /// returned, with its path.
    pub fn validate(&self) -> Checked {
        if self.spec.kind() != self.kind {
            return Err(ValidationError::new(
                "spec",
                format!("is a {} spec but kind is {}", self.spec.kind(), self.kind),
            ));
        }
        check_api_version(self.kind, &self.api_version)?;
        self.validate_metadata()?;
        self.spec.validate()?;
        if let Some(status) = &self.status {
            validate_status(status)?;
        }
        Ok(())
    }

    fn validate_metadata(&self) -> Checked {
        let m = &self.metadata;
        validate::name("metadata.name", &m.name)?;
        if self.kind.is_namespaced() {
            validate::name("metadata.namespace", &m.namespace)?;
        } else if !m.namespace.is_empty() {
            return Err(ValidationError::new(
                "metadata.namespace",
                format!("{} is cluster-wide and takes no namespace", self.kind),
            ));
        }
        validate::labels("metadata.labels", &m.labels)?;
        let mut size = 0;
        for (key, value) in &m.annotations {
            validate::label_key(&format!("metadata.annotations.{key}"), key)?;
            size += key.len() + value.len();
        }
        if size > MAX_ANNOTATIONS_BYTES {
            return Err(ValidationError::new(
                "metadata.annotations",
                format!("must total at most {MAX_ANNOTATIONS_BYTES} bytes, got {size}"),
            ));
        }
        if let Some(rv) = &m.resource_version {
            if rv.is_empty() || !rv.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ValidationError::new(
                    "metadata.resourceVersion",
                    format!("{rv:?} is not a resource version: a decimal number set by the store"),
                ));
            }
        }
        if let Some(ts) = &m.creation_timestamp {
            timestamp("metadata.creationTimestamp", ts)?;
        }
        Ok(())
    }

    /// The objects this resource points at (parent, backend and mirror Services of a
    /// route, a policy's target), with namespaces resolved, each once, in document
    /// order. The control plane reports the ones that do not exist in `ResolvedRefs`.
    pub fn references(&self) -> Vec<ObjectRef> {
        let ns = self.metadata.namespace.as_str();
        let all = match &self.spec {
            Spec::HTTPRoute(s) => s.references(ns),
            Spec::GRPCRoute(s) => s.references(ns),
            Spec::TCPRoute(s) => s.references(ns),
            Spec::TLSRoute(s) => s.references(ns),
            Spec::BackendPolicy(s) => s.target_ref.object_ref(ns).into_iter().collect(),
            Spec::AuthorizationPolicy(s) => s.target_ref.object_ref(ns).into_iter().collect(),
            Spec::FaultInjection(s) => s.target(ns).into_iter().collect(),
            Spec::RateLimitPolicy(s) => s.target(ns).into_iter().collect(),
            Spec::Service(_)
            | Spec::Workload(_)
            | Spec::MeshConfig(_)
            | Spec::ExternalService(_) => Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        all.into_iter().filter(|r| seen.insert(r.clone())).collect()
    }

    /// This resource's own reference.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind,
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }

    /// Records a condition in the status (created if absent), stamping it with
    /// `metadata.generation` unless it names a generation itself. Returns whether the
    /// status changed; see [`Status::set_condition`].
    pub fn set_condition(&mut self, mut condition: Condition) -> bool {
        if condition.observed_generation.is_none() {
            condition.observed_generation = self.metadata.generation;
        }
        self.status
            .get_or_insert_with(Status::default)
            .set_condition(condition)
    }

    /// The resource as a YAML document.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Resource::from_value(value).map_err(serde::de::Error::custom)
    }
}

fn read_kind(value: Option<Value>) -> Result<Kind, ValidationError> {
    let known = || {
        Kind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match value {
        Some(Value::String(name)) => Kind::from_name(&name).ok_or_else(|| {
            ValidationError::new(
                "kind",
                format!("unknown kind {name:?}, expected one of {}", known()),
            )
        }),
        None | Some(Value::Null) => Err(ValidationError::new(
            "kind",
            format!("missing field `kind`, expected one of {}", known()),
        )),
        Some(other) => Err(ValidationError::new(
            "kind",
            format!("expected a kind name, got {}", describe(&other)),
        )),
    }
}

fn read_api_version(kind: Kind, value: Option<Value>) -> Result<String, ValidationError> {
    match value {
        Some(Value::String(v)) => {
            check_api_version(kind, &v)?;
            Ok(v)
        }
        None | Some(Value::Null) => Err(ValidationError::new(
            "apiVersion",
            format!(
                "missing field `apiVersion`; {kind} needs {:?}",
                kind.api_version()
            ),
        )),
        Some(other) => Err(ValidationError::new(
            "apiVersion",
            format!("expected a string, got {}", describe(&other)),
        )),
    }
}

fn check_api_version(kind: Kind, version: &str) -> Checked {
    let accepted = kind.accepted_api_versions();
    if accepted.contains(&version) {
        return Ok(());
    }
    let want = accepted
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(" or ");
    Err(ValidationError::new(
        "apiVersion",
        format!("{kind} needs {want}, got {version:?}"),
    ))
}

fn validate_status(status: &Status) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in status.conditions.iter().enumerate() {
        let at = format!("status.conditions[{i}]");
        if c.type_.is_empty() || c.type_.len() > 316 {
            return Err(ValidationError::new(
                format!("{at}.type"),
                "must be 1 to 316 characters, e.g. Accepted",
            ));
        }
        if !seen.insert(c.type_.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.type"),
                format!("{:?} appears twice; keep one condition per type", c.type_),
            ));
        }
        if let Some(ts) = &c.last_transition_time {
            timestamp(&format!("{at}.lastTransitionTime"), ts)?;
        }
    }
    Ok(())
}

fn timestamp(at: &str, ts: &str) -> Checked {
    if is_rfc3339(ts) {
        return Ok(());
    }
    Err(ValidationError::new(
        at,
        format!("{ts:?} is not an RFC 3339 time such as \"2026-11-05T10:00:00Z\""),
    ))
}

/// A short description of a value's type for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
