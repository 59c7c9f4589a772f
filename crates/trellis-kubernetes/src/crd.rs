//! Trellis's own kinds as Kubernetes custom resources: one CustomResourceDefinition per
//! `trellis.dev` kind, version `v1alpha1`, with its OpenAPI schema generated from the
//! spec types of trellis-api (their `schemars` feature), so the API server checks a
//! document against exactly what the control plane reads.
//!
//! Each spec here wraps trellis-api's spec unchanged (`#[serde(transparent)]`): the
//! custom resource and the universal-mode document are the same bytes, and the typed
//! objects ([`BackendPolicy`], …) are what a `kube::Api` reads and writes. The status
//! is [`trellis_api::Status`], served through the `status` subresource.
//!
//! `Service` and `Workload`, though `trellis.dev` kinds in universal mode, are not
//! custom resources: on Kubernetes the mesh's Services and workloads are the cluster's
//! own Services and Pods, and a second kind named `Service` would only shadow the core
//! one in `kubectl`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::core::CustomResourceExt;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use trellis_api as api;
use trellis_api::Kind;

/// The kinds served as custom resources, in the order `crds.yaml` lists them.
pub const KINDS: [Kind; 6] = [
    Kind::MeshConfig,
    Kind::BackendPolicy,
    Kind::AuthorizationPolicy,
    Kind::FaultInjection,
    Kind::RateLimitPolicy,
    Kind::ExternalService,
];

/// The `kubectl get` category of every Trellis kind: `kubectl get trellis` lists them all.
pub const CATEGORY: &str = "trellis";

/// Label put on everything Trellis installs.
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "trellis");

/// Declares the spec of a custom resource: trellis-api's spec, unchanged; the derive
/// adds the resource itself (named by `kind`), with a [`trellis_api::Status`].
macro_rules! custom_resources {
    ($($(#[doc = $doc:tt])* $spec:ident($api:ty) { $($kube:tt)* })*) => {$(
        $(#[doc = $doc])*
        #[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[kube(
            group = "trellis.dev",
            version = "v1alpha1",
            status = "trellis_api::Status",
            derive = "PartialEq",
            category = "trellis",
            $($kube)*
        )]
        #[serde(transparent)]
        pub struct $spec(pub $api);
    )*};
}

custom_resources! {
    /// Spec of the `MeshConfig` custom resource: mesh-wide settings, read from the one
    /// named `default`.
    MeshConfigSpec(api::policy::MeshConfigSpec) {
        kind = "MeshConfig",
        doc = "Mesh-wide settings of Trellis; the control plane reads the one named `default`.",
    }

    /// Spec of the `BackendPolicy` custom resource: load balancing, timeouts and
    /// protection for traffic to one Service.
    BackendPolicySpec(api::policy::BackendPolicySpec) {
        kind = "BackendPolicy",
        namespaced,
        shortname = "bp",
        doc = "Load balancing, timeouts and protection for traffic to the Service named by targetRef.",
    }

    /// Spec of the `AuthorizationPolicy` custom resource: who may call one Service, and
    /// how.
    AuthorizationPolicySpec(api::authz::AuthorizationPolicySpec) {
        kind = "AuthorizationPolicy",
        namespaced,
        shortname = "authz",
        doc = "Allows or denies the requests to the Service named by targetRef that match its rules.",
    }

    /// Spec of the `FaultInjection` custom resource: delays and aborts for one route's
    /// requests.
    FaultInjectionSpec(api::fault::FaultInjectionSpec) {
        kind = "FaultInjection",
        namespaced,
        shortname = "fault",
        doc = "Delays and aborts injected into the requests of the HTTPRoute or GRPCRoute named by targetRef.",
    }

    /// Spec of the `RateLimitPolicy` custom resource: request rates one Service accepts.
    RateLimitPolicySpec(api::resilience::RateLimitPolicySpec) {
        kind = "RateLimitPolicy",
        namespaced,
        shortname = "rl",
        doc = "Request rates the Service named by targetRef accepts, enforced by its sidecars.",
    }

    /// Spec of the `ExternalService` custom resource: hosts outside the mesh that its
    /// applications may call.
    ExternalServiceSpec(api::external::ExternalServiceSpec) {
        kind = "ExternalService",
        namespaced,
        shortname = "es",
        doc = "Hosts outside the mesh that its applications may call, and on which ports.",
    }
}

/// The CustomResourceDefinition of `kind`, or `None` for a kind that is not a custom
/// resource (the Gateway API routes, `Service`, `Workload`).
pub fn definition(kind: Kind) -> Option<CustomResourceDefinition> {
    let mut crd = match kind {
        Kind::MeshConfig => MeshConfig::crd(),
        Kind::BackendPolicy => BackendPolicy::crd(),
        Kind::AuthorizationPolicy => AuthorizationPolicy::crd(),
        Kind::FaultInjection => FaultInjection::crd(),
        Kind::RateLimitPolicy => RateLimitPolicy::crd(),
        Kind::ExternalService => ExternalService::crd(),
        Kind::HTTPRoute
        | Kind::GRPCRoute
        | Kind::TCPRoute
        | Kind::TLSRoute
        | Kind::Service
        | Kind::Workload => return None,
    };
    crd.metadata
        .labels
        .get_or_insert_default()
        .insert(PART_OF.0.to_string(), PART_OF.1.to_string());
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(printer_columns(kind));
        let schema = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(schema) = schema {
            each_schema(schema, &mut kubernetes_format);
        }
    }
    Some(crd)
}

/// Every Trellis CustomResourceDefinition, in the order of [`KINDS`].
pub fn definitions() -> Vec<CustomResourceDefinition> {
    KINDS.into_iter().filter_map(definition).collect()
}

/// [`definitions`] as the YAML checked in as `deploy/kubernetes/crds.yaml`, for
/// `kubectl apply -f`.
pub fn definitions_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let header =
        "# Trellis's CustomResourceDefinitions (trellis.dev/v1alpha1), generated from the\n\
                  # Rust types of crates/trellis-api. Do not edit: regenerate with\n\
                  #   TRELLIS_REGENERATE=1 cargo test -p trellis-kubernetes --test crds\n";
    Ok(format!(
        "{header}{}",
        crate::yaml::documents(&definitions())?
    ))
}

/// The columns `kubectl get` shows for `kind`: what the object is about, whether the
/// control plane accepted it, and its age.
fn printer_columns(kind: Kind) -> Vec<CustomResourceColumnDefinition> {
    let column = |name: &str, type_: &str, json_path: &str| CustomResourceColumnDefinition {
        name: name.to_string(),
        type_: type_.to_string(),
        json_path: json_path.to_string(),
        ..Default::default()
    };
    let target = column("Target", "string", ".spec.targetRef.name");
    let mut columns = match kind {
        Kind::MeshConfig => vec![
            column("Trust Domain", "string", ".spec.trustDomain"),
            column("mTLS", "string", ".spec.mtls.mode"),
        ],
        Kind::BackendPolicy => vec![
            target,
            column("Load Balancer", "string", ".spec.loadBalancer.type"),
        ],
        Kind::AuthorizationPolicy => vec![target, column("Action", "string", ".spec.action")],
        Kind::FaultInjection => vec![
            column("Route Kind", "string", ".spec.targetRef.kind"),
            target,
        ],
        Kind::ExternalService => vec![
            column("Hosts", "string", ".spec.hosts"),
            column("Resolution", "string", ".spec.resolution"),
        ],
        _ => vec![target],
    };
    // The policies' conditions; MeshConfig and ExternalService have none to show.
    if !matches!(kind, Kind::MeshConfig | Kind::ExternalService) {
        columns.push(column(
            "Accepted",
            "string",
            ".status.conditions[?(@.type==\"Accepted\")].status",
        ));
    }
    // Named columns replace the default ones, Age among them.
    columns.push(column("Age", "date", ".metadata.creationTimestamp"));
    columns
}

/// Rewrites a format schemars writes but the API server does not know into one it
/// does, keeping the bounds serde enforces: an unsigned integer becomes `int32` or
/// `int64` with its range, and an IP address of either family (`ip`, for which
/// Kubernetes has no format) a plain string, as serde reads it.
fn kubernetes_format(schema: &mut JSONSchemaProps) {
    let (format, maximum) = match schema.format.as_deref() {
        Some("uint16") => (Some("int32"), Some(f64::from(u16::MAX))),
        Some("uint32") => (Some("int64"), Some(f64::from(u32::MAX))),
        Some("uint64") => (Some("int64"), None),
        Some("ip") => (None, None),
        _ => return,
    };
    schema.format = format.map(str::to_string);
    if schema.maximum.is_none() {
        schema.maximum = maximum;
    }
}

/// Calls `f` on `schema` and every schema inside it, parents first.
pub(crate) fn each_schema(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    let nested = schema.properties.iter_mut().flat_map(|p| p.values_mut());
    let items = schema.items.iter_mut().flat_map(|items| match items {
        JSONSchemaPropsOrArray::Schema(s) => std::slice::from_mut(&mut **s),
        JSONSchemaPropsOrArray::Schemas(all) => all.as_mut_slice(),
    });
    let additional = schema
        .additional_properties
        .iter_mut()
        .filter_map(|a| match a {
            JSONSchemaPropsOrBool::Schema(s) => Some(&mut **s),
            JSONSchemaPropsOrBool::Bool(_) => None,
        });
    let branches = [&mut schema.one_of, &mut schema.any_of, &mut schema.all_of]
        .into_iter()
        .flat_map(|b| b.iter_mut().flatten());
    for child in nested.chain(items).chain(additional).chain(branches) {
        each_schema(child, f);
    }
}

#[cfg(test)]
mod tests;
