//! `trellis check --kubernetes`: what a cluster needs before Trellis is installed, and
//! whether an installed control plane works.
//!
//! Before: the API server's version (native sidecars), the Gateway API's CRDs at a
//! version whose kinds Trellis reads, and whether the caller may create every object
//! of the install. After: the same cluster checks, Trellis's own CRDs, the control
//! plane's replicas, the webhook configuration's `caBundle`, and a server-side dry run
//! of a Pod the webhook must inject, which only passes when the API server reaches the
//! webhook over TLS and it answers. Each check is one [`Finding`]; a failing check
//! says what to do.

use std::fmt;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{PostParams, ResourceExt as _};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::crd;
use crate::inject::PROXY_CONTAINER;
use crate::install::{Manifests, CONTROL, INJECT_LABEL, WEBHOOK_CONFIGURATION};
use crate::source::{api_resource, ROUTE_KINDS};

/// The oldest Kubernetes whose native sidecars (init containers with `restartPolicy:
/// Always`) are on by default; the injector needs them.
pub const MIN_KUBERNETES: (u32, u32) = (1, 29);
/// The oldest Gateway API release whose GRPCRoute is `v1`, the version Trellis reads.
pub const MIN_GATEWAY_API: (u32, u32) = (1, 1);
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, with something missing or soon wrong.
    Warn,
    /// Trellis will not work (or not install) until it is fixed.
    Fail,
}

/// One check's outcome, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl Finding {
    pub fn new(level: Level, text: impl Into<String>) -> Self {
        Self {
            level,
            text: text.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag}  {}", self.text)
    }
}

/// The checks before `trellis install kubernetes | kubectl apply -f -`.
pub async fn before_install(client: &Client, manifests: &Manifests) -> Vec<Finding> {
    let mut findings = cluster(client).await;
    findings.extend(permissions(client, manifests).await);
    findings
}

/// The checks of a control plane installed in `namespace`.
pub async fn after_install(client: &Client, namespace: &str) -> Vec<Finding> {
    let mut findings = cluster(client).await;
    findings.push(trellis_crds(client).await);
    findings.push(replicas(client, namespace).await);
    findings.push(ca_bundle(client).await);
    findings.push(injection(client).await);
    findings
}

/// The API server's version and the Gateway API's CRDs.
async fn cluster(client: &Client) -> Vec<Finding> {
    let mut findings = vec![match client.apiserver_version().await {
        Ok(info) => version_finding(&info.git_version, &info.major, &info.minor),
        Err(e) => {
            return vec![Finding::new(
                Level::Fail,
                format!("cannot reach the API server: {e}"),
            )]
        }
    }];
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ROUTE_KINDS {
        let resource = api_resource(kind);
        let name = format!("{}.{GATEWAY_GROUP}", resource.plural);
        findings.push(match crds.get_opt(&name).await {
            Ok(crd) => gateway_crd_finding(kind.name(), &name, crd.as_ref()),
            Err(e) => Finding::new(Level::Fail, format!("cannot read CRD {name}: {e}")),
        });
    }
    findings
}

fn version_finding(git_version: &str, major: &str, minor: &str) -> Finding {
    let number = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_KUBERNETES => Finding::new(
            Level::Ok,
            format!("Kubernetes {git_version} (native sidecars)"),
        ),
        (Some(_), Some(_)) => Finding::new(
            Level::Fail,
            format!(
                "Kubernetes {git_version} is older than {}.{}: injected proxies need native sidecars",
                MIN_KUBERNETES.0, MIN_KUBERNETES.1
            ),
        ),
        _ => Finding::new(
            Level::Warn,
            format!("Kubernetes version {git_version:?} ({major}.{minor}) is not one Trellis can read"),
        ),
    }
}

/// Whether a Gateway API CRD serves `v1` at a supported release. HTTPRoute is needed;
/// the other routes only for what they route, so their absence is a warning.
fn gateway_crd_finding(kind: &str, name: &str, crd: Option<&CustomResourceDefinition>) -> Finding {
    let missing = if kind == "HTTPRoute" {
        Level::Fail
    } else {
        Level::Warn
    };
    let Some(crd) = crd else {
        return Finding::new(
            missing,
            format!("{kind} is not installed (CRD {name}): install the Gateway API's CRDs, v{}.{} or later",
                MIN_GATEWAY_API.0, MIN_GATEWAY_API.1),
        );
    };
    let release = crd.annotations().get(BUNDLE_VERSION).cloned();
    let serves_v1 = crd.spec.versions.iter().any(|v| v.name == "v1" && v.served);
    if !serves_v1 {
        return Finding::new(
            missing,
            format!(
                "{kind} is installed at Gateway API {} without version v1, which Trellis reads",
                release.as_deref().unwrap_or("(unknown release)")
            ),
        );
    }
    match release.as_deref().and_then(parse_release) {
        Some(found) if found >= MIN_GATEWAY_API => Finding::new(
            Level::Ok,
            format!("{kind} v1 (Gateway API {})", release.unwrap_or_default()),
        ),
        Some(_) => Finding::new(
            Level::Warn,
            format!(
                "{kind} is from Gateway API {}, older than v{}.{}",
                release.unwrap_or_default(),
                MIN_GATEWAY_API.0,
                MIN_GATEWAY_API.1
            ),
        ),
        None => Finding::new(
            Level::Warn,
            format!("{kind} v1 is served, but its CRD does not say its Gateway API release"),
        ),
    }
}

/// `v1.6.3` as `(1, 6)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.strip_prefix('v')?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.split('-').next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the caller may create every object of the install.
async fn permissions(client: &Client, manifests: &Manifests) -> Vec<Finding> {
    let objects = match manifests.objects() {
        Ok(objects) => objects,
        Err(e) => return vec![Finding::new(Level::Fail, e.to_string())],
    };
    let mut asked = std::collections::BTreeSet::new();
    let mut denied = Vec::new();
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for object in &objects {
        let Some(attributes) = create_attributes(object) else {
            continue;
        };
        let key = (
            attributes.group.clone(),
            attributes.resource.clone(),
            attributes.namespace.clone(),
        );
        if !asked.insert(key) {
            continue;
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attributes.clone()),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let allowed = match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            Err(e) => {
                return vec![Finding::new(
                    Level::Fail,
                    format!("cannot ask the API server what you may do: {e}"),
                )]
            }
        };
        if !allowed {
            denied.push(describe(&attributes));
        }
    }
    if denied.is_empty() {
        vec![Finding::new(
            Level::Ok,
            format!(
                "you may create the install's {} kinds of object",
                asked.len()
            ),
        )]
    } else {
        vec![Finding::new(
            Level::Fail,
            format!("you may not create: {}", denied.join(", ")),
        )]
    }
}

/// The access review attributes of creating `object`.
fn create_attributes(object: &Value) -> Option<ResourceAttributes> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let group = api_version
        .rsplit_once('/')
        .map_or("", |(group, _)| group)
        .to_owned();
    // Every kind the install writes has the regular plural.
    let resource = format!("{}s", kind.to_lowercase());
    Some(ResourceAttributes {
        verb: Some("create".to_owned()),
        group: Some(group),
        resource: Some(resource),
        namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
        ..ResourceAttributes::default()
    })
}

fn describe(attributes: &ResourceAttributes) -> String {
    let resource = attributes.resource.as_deref().unwrap_or_default();
    let group = attributes.group.as_deref().unwrap_or_default();
    let what = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    match &attributes.namespace {
        Some(namespace) => format!("{what} in {namespace}"),
        None => what,
    }
}

/// Whether every `trellis.dev` CRD is installed.
async fn trellis_crds(client: &Client) -> Finding {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for definition in crd::definitions() {
        let name = definition.name_any();
        match crds.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(name),
            Err(e) => return Finding::new(Level::Fail, format!("cannot read CRD {name}: {e}")),
        }
    }
    if missing.is_empty() {
        Finding::new(Level::Ok, "Trellis's CRDs are installed")
    } else {
        Finding::new(
            Level::Fail,
            format!(
                "Trellis's CRDs are missing ({}): apply `trellis install kubernetes`",
                missing.join(", ")
            ),
        )
    }
}

/// Whether the control plane's Deployment has its replicas ready.
async fn replicas(client: &Client, namespace: &str) -> Finding {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = match deployments.get_opt(CONTROL).await {
        Ok(Some(deployment)) => deployment,
        Ok(None) => {
            return Finding::new(
                Level::Fail,
                format!("no Deployment {CONTROL} in {namespace}: is Trellis installed there?"),
            )
        }
        Err(e) => return Finding::new(Level::Fail, format!("cannot read the Deployment: {e}")),
    };
    let wanted = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let text = format!("control plane: {ready} of {wanted} replicas ready");
    let level = match ready {
        0 => Level::Fail,
        r if r < wanted => Level::Warn,
        _ => Level::Ok,
    };
    Finding::new(level, text)
}

/// Whether every webhook of the configuration has a `caBundle`.
async fn ca_bundle(client: &Client) -> Finding {
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match configurations.get_opt(WEBHOOK_CONFIGURATION).await {
        Ok(Some(configuration)) => {
            let webhooks = configuration.webhooks.unwrap_or_default();
            let empty: Vec<_> = webhooks
                .iter()
                .filter(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_none_or(|b| b.0.is_empty())
                })
                .map(|w| w.name.clone())
                .collect();
            if empty.is_empty() {
                Finding::new(
                    Level::Ok,
                    format!("webhook configuration {WEBHOOK_CONFIGURATION}: caBundle set on {} webhooks", webhooks.len()),
                )
            } else {
                Finding::new(
                    Level::Fail,
                    format!(
                        "webhooks without a caBundle ({}): no control plane has written it yet (is one running and leading?)",
                        empty.join(", ")
                    ),
                )
            }
        }
        Ok(None) => Finding::new(
            Level::Fail,
            format!(
                "no MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}: Pods are not injected"
            ),
        ),
        Err(e) => Finding::new(
            Level::Fail,
            format!("cannot read the webhook configuration: {e}"),
        ),
    }
}

/// The namespace the injection dry run creates its Pod in.
const PROBE_NAMESPACE: &str = "default";

/// A server-side dry run of a Pod that asks to be injected: it comes back with the
/// proxy only when the API server called the webhook and it answered.
async fn injection(client: &Client) -> Finding {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let probe: Pod = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "trellis-check-", "labels": {INJECT_LABEL: "enabled"}},
        "spec": {"containers": [{"name": "app", "image": "trellis-check"}]}
    })) {
        Ok(pod) => pod,
        Err(e) => return Finding::new(Level::Fail, format!("the probe Pod: {e}")),
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods.create(&dry_run, &probe).await {
        Ok(pod) => {
            let injected = pod
                .spec
                .and_then(|s| s.init_containers)
                .is_some_and(|c| c.iter().any(|c| c.name == PROXY_CONTAINER));
            if injected {
                Finding::new(
                    Level::Ok,
                    "the injection webhook answers: a Pod labelled for injection gets the proxy",
                )
            } else {
                Finding::new(
                    Level::Fail,
                    format!("a Pod labelled {INJECT_LABEL}=enabled in {PROBE_NAMESPACE} comes back without the proxy: is the namespace labelled disabled, or is the webhook configuration missing?"),
                )
            }
        }
        Err(e) => Finding::new(
            Level::Fail,
            format!("the injection webhook does not answer: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests;
