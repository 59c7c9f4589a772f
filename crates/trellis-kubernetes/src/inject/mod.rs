//! Sidecar injection: the change a Pod (or a workload's Pod template) gets so that its
//! traffic goes through a Trellis proxy.
//!
//! The mutation is a pure function of the Pod's metadata and spec and the
//! [`InjectSettings`]: [`inject_template`] decides whether the Pod is injected (the
//! [`Decision`] says why not when it is not) and adds
//!
//! - `trellis-init`, an init container running `trellis iptables install`, first, so
//!   that the Pod's traffic is captured before anything else runs;
//! - `trellis-proxy`, the proxy as a native sidecar (an init container with
//!   `restartPolicy: Always`: it starts before the application's containers, and stops
//!   after them), with the environment the contract with `trellis proxy --kubernetes`
//!   names;
//! - `trellis-token`, a projected ServiceAccount token for the audience `trellis`,
//!   with which the proxy proves its Pod to the control plane;
//! - the annotation `trellis.dev/injected: <version>`.
//!
//! [`patch_for`] turns the mutation into the JSONPatch an admission webhook answers
//! with ([`webhook`]) and `trellis inject -f` applies to manifests. Injecting twice is
//! injecting once: an injected Pod is recognised and left alone.

pub mod ca_bundle;
mod containers;
pub mod options;
pub mod patch;
pub mod serving;
pub mod webhook;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PodSpec, PodTemplateSpec, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use options::{AnnotationError, PodOptions};

/// The label (on a Namespace or Pod) or annotation (on a Pod) that turns injection on
/// (`enabled`) or off (`disabled`).
pub const INJECT: &str = "trellis.dev/inject";
/// The annotation an injected Pod carries; its value is the Trellis version.
pub const INJECTED: &str = "trellis.dev/injected";
/// The capture init container's name.
pub const INIT_CONTAINER: &str = "trellis-init";
/// The proxy sidecar's name.
pub const PROXY_CONTAINER: &str = "trellis-proxy";
/// The projected ServiceAccount token volume's name.
pub const TOKEN_VOLUME: &str = "trellis-token";
/// Where the token volume is mounted in the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/trellis.dev/serviceaccount";
/// The audience of the projected token: the control plane checks it with TokenReview.
pub const TOKEN_AUDIENCE: &str = "trellis";
/// How long a projected token lives, in seconds; the kubelet renews it before then.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// The Trellis version this crate was built as, written into `trellis.dev/injected`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the injector needs to know besides the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectSettings {
    /// The image with the `trellis` binary as its entrypoint, for both containers.
    pub image: String,
    /// The control plane's gRPC URL, for the proxy (`TRELLIS_CONTROL_GRPC`).
    pub control_grpc: String,
    /// The version written into `trellis.dev/injected`.
    pub version: String,
    /// The control plane's namespace: its Pods are never injected.
    pub control_namespace: String,
    /// The proxy's resources when the Pod's annotations say nothing.
    pub resources: ProxyResources,
    /// The proxy's log filter when the Pod's annotation says nothing (`TRELLIS_LOG`).
    pub log_level: String,
    /// The ports the capture rules send traffic to, and the proxy's admin port.
    pub ports: CapturePorts,
    /// The user the proxy runs as; the capture rules never redirect its connections.
    pub proxy_uid: i64,
}

impl InjectSettings {
    /// The defaults for this version: image `ghcr.io/trellis-mesh/trellis:<version>`,
    /// the control plane in `trellis-system`.
    pub fn new() -> Self {
        Self {
            image: format!("{DEFAULT_IMAGE}:{VERSION}"),
            control_grpc: DEFAULT_CONTROL_GRPC.to_owned(),
            version: VERSION.to_owned(),
            control_namespace: DEFAULT_CONTROL_NAMESPACE.to_owned(),
            resources: ProxyResources::default(),
            log_level: "info".to_owned(),
            ports: CapturePorts::default(),
            proxy_uid: PROXY_UID,
        }
    }
}

impl Default for InjectSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// The image repository of the default image.
pub const DEFAULT_IMAGE: &str = "ghcr.io/trellis-mesh/trellis";
/// The control plane's gRPC URL inside a cluster where `trellis install` put it: plain
/// gRPC, as proxies speak it to the control plane in universal mode too.
pub const DEFAULT_CONTROL_GRPC: &str = "http://trellis-control.trellis-system.svc:7100";
/// The namespace `trellis install` puts the control plane in.
pub const DEFAULT_CONTROL_NAMESPACE: &str = "trellis-system";
/// The proxy's user id. The capture rules exempt it (`--proxy-uid`), so the proxy's
/// own connections are never sent back to itself.
pub const PROXY_UID: i64 = 1337;

/// Kubernetes quantities (`100m`, `64Mi`) for the proxy; `None` sets nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    /// Requests of 100m CPU and 64Mi memory, no limits.
    fn default() -> Self {
        Self {
            cpu_request: Some("100m".to_owned()),
            memory_request: Some("64Mi".to_owned()),
            cpu_limit: None,
            memory_limit: None,
        }
    }
}

/// The ports `trellis iptables install` redirects to (its defaults) and the admin port
/// of `trellis proxy --kubernetes`, which the capture rules leave alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturePorts {
    /// Where inbound TCP goes; default 7143.
    pub inbound: u16,
    /// Where the application's outbound TCP goes; default 7140.
    pub outbound: u16,
    /// The proxy's admin server (`/ready`, `/live`, `/metrics`); default 15020.
    pub admin: u16,
}

impl Default for CapturePorts {
    fn default() -> Self {
        Self {
            inbound: 7143,
            outbound: 7140,
            admin: 15020,
        }
    }
}

/// Whether a Pod is injected, and why not when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The sidecar and the capture container were added.
    Injected,
    /// The Pod was left as it was.
    Skipped(SkipReason),
}

/// Why a Pod was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `trellis.dev/inject: disabled` on the Pod, as a label or an annotation.
    OptedOut,
    /// It carries `trellis.dev/injected` or already has a `trellis-proxy` or
    /// `trellis-init` container.
    AlreadyInjected,
    /// It shares its node's network: capturing its traffic would capture the node's.
    HostNetwork,
    /// It runs in the control plane's own namespace, which must not depend on itself.
    ControlPlaneNamespace,
    /// It has no spec to change.
    NoSpec,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::OptedOut => "the Pod says trellis.dev/inject: disabled",
            SkipReason::AlreadyInjected => "the Pod already has the Trellis containers",
            SkipReason::HostNetwork => "the Pod uses the host's network",
            SkipReason::ControlPlaneNamespace => "the Pod is in the control plane's namespace",
            SkipReason::NoSpec => "the Pod has no spec",
        })
    }
}

/// A Pod or Pod template that cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The object is not a Pod (or its template) as Kubernetes defines one.
    #[error("not a Pod: {0}")]
    NotAPod(#[source] serde_json::Error),
    /// The Pod read does not serialize back (never seen: the types are plain data).
    #[error("cannot encode the Pod: {0}")]
    Encode(#[source] serde_json::Error),
    /// One of the `trellis.dev/*` annotations has a value that means nothing.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
}

/// Injects a Pod template (a Pod's metadata and spec) in place, unless the Pod should
/// be left alone. `namespace` is the namespace the Pod is created in (an admission
/// request names it beside the object); `None` reads it from the metadata.
pub fn inject_template(
    template: &mut PodTemplateSpec,
    namespace: Option<&str>,
    settings: &InjectSettings,
) -> Result<Decision, AnnotationError> {
    let Some(spec) = template.spec.as_mut() else {
        return Ok(Decision::Skipped(SkipReason::NoSpec));
    };
    let empty = ObjectMeta::default();
    let meta = template.metadata.as_ref().unwrap_or(&empty);
    if let Some(reason) = skip_reason(meta, spec, namespace, settings) {
        return Ok(Decision::Skipped(reason));
    }
    let options = PodOptions::from_annotations(meta.annotations.as_ref(), settings)?;
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);

    let app_ports = containers::app_ports(spec, &options);
    let init = containers::capture(settings, &options);
    let proxy = containers::proxy(settings, &options, &app_ports);
    let init_containers = spec.init_containers.get_or_insert_with(Vec::new);
    init_containers.insert(0, init);
    init_containers.insert(1, proxy);
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(token_volume());
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED.to_owned(), settings.version.clone());
    Ok(Decision::Injected)
}

fn skip_reason(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: Option<&str>,
    settings: &InjectSettings,
) -> Option<SkipReason> {
    if says(&meta.labels, INJECT) == Some("disabled")
        || says(&meta.annotations, INJECT) == Some("disabled")
    {
        return Some(SkipReason::OptedOut);
    }
    // Either container alone is enough: adding the pair again would repeat a name,
    // which the API server refuses.
    let has_ours = spec
        .init_containers
        .iter()
        .chain(Some(&spec.containers))
        .flatten()
        .any(|c| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER);
    if has_ours || says(&meta.annotations, INJECTED).is_some() {
        return Some(SkipReason::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    // The admission request's namespace is the one the Pod is created in, whatever
    // its metadata says.
    let namespace = namespace.or(meta.namespace.as_deref());
    if namespace == Some(settings.control_namespace.as_str()) {
        return Some(SkipReason::ControlPlaneNamespace);
    }
    None
}

fn says<'a>(map: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map.as_ref().and_then(|m| m.get(key)).map(String::as_str)
}

fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.to_owned()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".to_owned(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The outcome of injecting one object: what was decided, and the JSONPatch that
/// makes the object what the decision says (empty when it was skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub decision: Decision,
    pub patch: json_patch::Patch,
}

/// Injects `object`, a Pod or a Pod template as JSON, and returns the patch that does
/// it. The patch only touches what injection changed, so the fields of the object this
/// crate's Kubernetes types do not know survive it.
pub fn patch_for(
    object: &Value,
    namespace: Option<&str>,
    settings: &InjectSettings,
) -> Result<Injection, InjectError> {
    let mut template: PodTemplateSpec =
        serde_json::from_value(object.clone()).map_err(InjectError::NotAPod)?;
    let before = serde_json::to_value(&template).map_err(InjectError::Encode)?;
    let decision = inject_template(&mut template, namespace, settings)?;
    let patch = match decision {
        Decision::Injected => {
            let after = serde_json::to_value(&template).map_err(InjectError::Encode)?;
            patch::diff(&before, &after)
        }
        Decision::Skipped(_) => json_patch::Patch(Vec::new()),
    };
    Ok(Injection { decision, patch })
}

#[cfg(test)]
mod tests;
