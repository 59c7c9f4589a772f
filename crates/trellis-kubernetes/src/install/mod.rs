//! The manifests `trellis install kubernetes` prints: the control plane's Namespace,
//! Trellis's CustomResourceDefinitions, its ServiceAccount and least-privilege RBAC, a
//! Deployment of `trellis control --kubernetes` with its PodDisruptionBudget and
//! Service, and the MutatingWebhookConfiguration that sends new Pods to the injector.
//! [`Manifests::deletions`] is what `trellis uninstall kubernetes` prints.
//!
//! The objects are k8s-openapi's types, so tests read them as values; only printing
//! turns them into YAML.

mod control;
mod rbac;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use crate::crd;

pub use self::webhook::{INJECT_LABEL, WEBHOOK_CONFIGURATION, WEBHOOK_PATH};

/// The control plane's namespace unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "trellis-system";
/// Name of the control plane's ServiceAccount, RBAC objects, Deployment,
/// PodDisruptionBudget and Service.
pub const CONTROL: &str = "trellis-control";
/// Port of the gRPC API proxies connect to.
pub const GRPC_PORT: i32 = 7100;
/// Port of the HTTP API and dashboard.
pub const HTTP_PORT: i32 = 7180;
/// Port the control plane serves the injection webhook on; the Service exposes it on 443.
pub const WEBHOOK_PORT: i32 = 7443;
/// Trellis's version, which the default image is tagged with.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What to install, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSettings {
    /// Namespace of the control plane. Default [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Image holding the `trellis` binary (deploy/kubernetes/Dockerfile builds it).
    /// Default `trellis:<version>`.
    pub image: String,
    /// Control-plane replicas. Default 2.
    pub replicas: i32,
    /// What the API server does with a Pod when the injection webhook cannot answer.
    /// Default [`FailurePolicy::Fail`].
    pub failure_policy: FailurePolicy,
}

impl Default for InstallSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_string(),
            image: default_image(),
            replicas: 2,
            failure_policy: FailurePolicy::Fail,
        }
    }
}

/// The image tag a release builds: `trellis:<version>`.
pub fn default_image() -> String {
    format!("trellis:{VERSION}")
}

/// The webhook's `failurePolicy`: whether a Pod is refused or admitted without a sidecar
/// when the injector cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailurePolicy {
    /// Refuse the Pod: no Pod of an injected namespace ever runs outside the mesh, but
    /// none starts while the control plane is down.
    #[default]
    Fail,
    /// Admit the Pod without a sidecar.
    Ignore,
}

impl FailurePolicy {
    /// As the API server spells it (`Fail`, `Ignore`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure policy that is neither `Fail` nor `Ignore`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure policy {0:?}: expected Fail or Ignore")]
pub struct UnknownFailurePolicy(String);

impl FromStr for FailurePolicy {
    type Err = UnknownFailurePolicy;

    /// `Fail` or `Ignore`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(Self::Fail),
            "ignore" => Ok(Self::Ignore),
            _ => Err(UnknownFailurePolicy(s.to_string())),
        }
    }
}

/// Why the manifests could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot turn a manifest into JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// Everything `trellis install kubernetes` creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    pub namespace: Namespace,
    pub crds: Vec<CustomResourceDefinition>,
    pub service_account: ServiceAccount,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub service: Service,
    pub deployment: Deployment,
    pub disruption_budget: PodDisruptionBudget,
    pub webhook: MutatingWebhookConfiguration,
}

impl Manifests {
    /// The manifests for `settings`.
    pub fn new(settings: &InstallSettings) -> Self {
        let ns = settings.namespace.as_str();
        let mut namespace_meta = metadata(ns, None);
        // The control plane's own Pods are never injected.
        namespace_meta
            .labels
            .get_or_insert_default()
            .insert(INJECT_LABEL.to_string(), "disabled".to_string());
        Self {
            namespace: Namespace {
                metadata: namespace_meta,
                ..Namespace::default()
            },
            crds: crd::definitions(),
            service_account: ServiceAccount {
                metadata: metadata(CONTROL, Some(ns)),
                ..ServiceAccount::default()
            },
            cluster_role: rbac::cluster_role(),
            cluster_role_binding: rbac::cluster_role_binding(ns),
            role: rbac::role(ns),
            role_binding: rbac::role_binding(ns),
            service: control::service(ns),
            deployment: control::deployment(settings),
            disruption_budget: control::disruption_budget(ns),
            webhook: webhook::configuration(settings),
        }
    }

    /// Every object, in the order to apply them: the namespace and the definitions
    /// first, the webhook last, once what serves it is declared.
    pub fn objects(&self) -> Result<Vec<Value>, ManifestError> {
        let mut objects = vec![serde_json::to_value(&self.namespace)?];
        for crd in &self.crds {
            objects.push(serde_json::to_value(crd)?);
        }
        objects.extend([
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.cluster_role)?,
            serde_json::to_value(&self.cluster_role_binding)?,
            serde_json::to_value(&self.role)?,
            serde_json::to_value(&self.role_binding)?,
            serde_json::to_value(&self.service)?,
            serde_json::to_value(&self.deployment)?,
            serde_json::to_value(&self.disruption_budget)?,
            serde_json::to_value(&self.webhook)?,
        ]);
        Ok(objects)
    }

    /// The manifests as multi-document YAML, for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        Ok(crate::yaml::documents(&self.objects()?)?)
    }

    /// What `trellis uninstall kubernetes` deletes, in the order to delete it: the
    /// webhook first, so that no Pod waits on an injector that is going away, the
    /// namespace (and with it the CA and tokens) last. Each object is named by its
    /// `apiVersion`, `kind` and `metadata` alone. The definitions, and so every
    /// Trellis resource in the cluster, only `with_crds`.
    pub fn deletions(&self, with_crds: bool) -> Result<Vec<Value>, ManifestError> {
        let mut objects = self.objects()?;
        objects.reverse();
        Ok(objects
            .into_iter()
            .filter(|o| with_crds || o["kind"] != "CustomResourceDefinition")
            .map(|o| {
                let mut name = json!({"name": o["metadata"]["name"]});
                if let Some(ns) = o["metadata"].get("namespace") {
                    name["namespace"] = ns.clone();
                }
                json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": name})
            })
            .collect())
    }

    /// [`Manifests::deletions`] as multi-document YAML, for `kubectl delete -f -`.
    pub fn deletions_yaml(&self, with_crds: bool) -> Result<String, ManifestError> {
        Ok(crate::yaml::documents(&self.deletions(with_crds)?)?)
    }
}

/// The labels every object Trellis installs carries.
fn part_of() -> BTreeMap<String, String> {
    BTreeMap::from([(crd::PART_OF.0.to_string(), crd::PART_OF.1.to_string())])
}

/// Metadata naming an object, in `namespace` if it lives in one, labelled as Trellis's.
fn metadata(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(part_of()),
        ..ObjectMeta::default()
    }
}
