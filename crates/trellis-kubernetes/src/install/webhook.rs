//! The MutatingWebhookConfiguration that sends new Pods to the control plane's
//! injector. Two webhooks, because a webhook's namespace and object selectors must both
//! match: one for the Pods of namespaces labelled `trellis.dev/inject: enabled` (unless
//! the Pod is labelled `disabled`), one for Pods labelled `enabled` in namespaces that
//! say neither. The control plane's own namespace is never matched. The `caBundle` is
//! left empty: the control plane fills it with its CA and keeps it current.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{metadata, InstallSettings, CONTROL};

/// Name of the MutatingWebhookConfiguration, the one the control plane may patch.
pub const WEBHOOK_CONFIGURATION: &str = "trellis";
/// The injector's path on the control plane's webhook port.
pub const WEBHOOK_PATH: &str = "/inject";
/// The label (on Namespaces and Pods) that turns injection on (`enabled`) or off
/// (`disabled`).
pub const INJECT_LABEL: &str = "trellis.dev/inject";
/// The label the API server gives every Namespace, holding its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(requirements),
        ..LabelSelector::default()
    }
}

/// A webhook on Pod creation, calling the injector through the control plane's Service.
fn webhook(
    name: &str,
    settings: &InstallSettings,
    namespaces: LabelSelector,
    pods: LabelSelector,
) -> MutatingWebhook {
    MutatingWebhook {
        name: name.to_string(),
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: CONTROL.to_string(),
                namespace: settings.namespace.clone(),
                path: Some(WEBHOOK_PATH.to_string()),
                port: Some(443),
            }),
            ..WebhookClientConfig::default()
        },
        rules: Some(vec![RuleWithOperations {
            operations: Some(vec!["CREATE".to_string()]),
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_string()]),
            resources: Some(vec!["pods".to_string()]),
            scope: Some("Namespaced".to_string()),
        }]),
        namespace_selector: Some(namespaces),
        object_selector: Some(pods),
        failure_policy: Some(settings.failure_policy.as_str().to_string()),
        match_policy: Some("Equivalent".to_string()),
        side_effects: "None".to_string(),
        admission_review_versions: vec!["v1".to_string()],
        // Run again if a later webhook changes the Pod, so the sidecar sees its
        // final containers.
        reinvocation_policy: Some("IfNeeded".to_string()),
        timeout_seconds: Some(10),
        ..MutatingWebhook::default()
    }
}

/// The configuration named [`WEBHOOK_CONFIGURATION`].
pub(super) fn configuration(settings: &InstallSettings) -> MutatingWebhookConfiguration {
    let not_control = requirement(NAMESPACE_NAME_LABEL, "NotIn", &[&settings.namespace]);
    MutatingWebhookConfiguration {
        metadata: metadata(WEBHOOK_CONFIGURATION, None),
        webhooks: Some(vec![
            webhook(
                "namespace.inject.trellis.dev",
                settings,
                selector(vec![
                    requirement(INJECT_LABEL, "In", &["enabled"]),
                    not_control.clone(),
                ]),
                selector(vec![requirement(INJECT_LABEL, "NotIn", &["disabled"])]),
            ),
            webhook(
                "pod.inject.trellis.dev",
                settings,
                selector(vec![
                    requirement(INJECT_LABEL, "NotIn", &["enabled", "disabled"]),
                    not_control,
                ]),
                selector(vec![requirement(INJECT_LABEL, "In", &["enabled"])]),
            ),
        ]),
    }
}
