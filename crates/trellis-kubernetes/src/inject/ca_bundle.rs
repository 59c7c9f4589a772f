//! Keeps the `caBundle` of the webhook configuration `trellis install` wrote equal to
//! the mesh's trust bundle, so the API server trusts the certificate the webhook
//! serves ([`super::serving`]) through every rotation.
//!
//! The leader writes it: when it starts leading, when the trust bundle changes, when
//! the configuration changes (it is watched: installed after the control plane, or
//! its bundle changed by someone else), and every [`RESYNC`]. The patch
//! names each webhook it writes (a JSON Patch `test` on its name), so a configuration
//! edited in between is read again instead of patched at the wrong place. A missing
//! configuration (Trellis installed without injection, or removed) is not an error:
//! there is nothing to keep current until it comes back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;
use trellis_control::ca::MeshCa;

use crate::install::WEBHOOK_CONFIGURATION;

/// How often the configuration is checked even when nothing changed here.
pub const RESYNC: Duration = Duration::from_secs(30);
/// The field manager Trellis's patches are recorded under.
const MANAGER: &str = "trellis-control";

/// Writes the trust bundle into the configuration's `caBundle`s while `leading` says
/// so, until the task is aborted.
pub async fn keep_current(client: Client, ca: Arc<MeshCa>, mut leading: watch::Receiver<bool>) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut versions = ca.subscribe();
    // Only this configuration: the control plane may watch no other.
    let by_name =
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_CONFIGURATION}"));
    let changes = watcher(api.clone(), by_name).default_backoff();
    let mut changes = std::pin::pin!(changes);
    loop {
        if *leading.borrow_and_update() {
            let bundle = versions.borrow_and_update().bundle_pem.clone();
            match reconcile(&api, bundle.as_bytes()).await {
                Ok(Outcome::Written(n)) => {
                    tracing::info!(webhooks = n, "injection webhook caBundle updated");
                }
                Ok(Outcome::Current | Outcome::NotInstalled) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update the injection webhook's caBundle; retrying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESYNC) => {}
            changed = leading.changed() => if changed.is_err() { return },
            changed = versions.changed() => if changed.is_err() { return },
            event = changes.next() => match event {
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "watching the webhook configuration"),
                None => return,
            },
        }
    }
}

/// What one pass did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This many webhooks had another bundle and now have the mesh's.
    Written(usize),
    /// Every webhook already had it.
    Current,
    /// There is no configuration named [`WEBHOOK_CONFIGURATION`].
    NotInstalled,
}

/// Reads the configuration and writes `bundle_pem` into each webhook whose
/// `caBundle` differs.
pub async fn reconcile(
    api: &Api<MutatingWebhookConfiguration>,
    bundle_pem: &[u8],
) -> Result<Outcome, kube::Error> {
    let Some(configuration) = api.get_opt(WEBHOOK_CONFIGURATION).await? else {
        return Ok(Outcome::NotInstalled);
    };
    let operations = patch_for(&configuration, bundle_pem);
    if operations.is_empty() {
        return Ok(Outcome::Current);
    }
    let written = operations.len() / 2;
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(operations)).map_err(kube::Error::SerdeError)?;
    api.patch(
        WEBHOOK_CONFIGURATION,
        &PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(Outcome::Written(written))
}

/// The JSON Patch operations that give every webhook of `configuration` the bundle:
/// for each one that differs, a `test` of its name and the write.
fn patch_for(configuration: &MutatingWebhookConfiguration, bundle_pem: &[u8]) -> Vec<Value> {
    let wanted = ByteString(bundle_pem.to_vec());
    let encoded = serde_json::to_value(&wanted).unwrap_or(Value::Null);
    let mut operations = Vec::new();
    for (i, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() == Some(&wanted) {
            continue;
        }
        operations.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
        );
        operations.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    operations
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    use super::*;

    fn webhook(name: &str, bundle: Option<&[u8]>) -> MutatingWebhook {
        MutatingWebhook {
            name: name.to_owned(),
            client_config: WebhookClientConfig {
                ca_bundle: bundle.map(|b| ByteString(b.to_vec())),
                ..WebhookClientConfig::default()
            },
            ..MutatingWebhook::default()
        }
    }

    #[test]
    fn only_webhooks_with_another_bundle_are_written_each_guarded_by_its_name() {
        let configuration = MutatingWebhookConfiguration {
            webhooks: Some(vec![
                webhook("namespace.inject.trellis.dev", None),
                webhook("pod.inject.trellis.dev", Some(b"ROOT")),
                webhook("old.inject.trellis.dev", Some(b"OLD")),
            ]),
            ..MutatingWebhookConfiguration::default()
        };
        let operations = patch_for(&configuration, b"ROOT");
        assert_eq!(
            operations,
            vec![
                json!({"op": "test", "path": "/webhooks/0/name", "value": "namespace.inject.trellis.dev"}),
                json!({"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Uk9PVA=="}),
                json!({"op": "test", "path": "/webhooks/2/name", "value": "old.inject.trellis.dev"}),
                json!({"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "Uk9PVA=="}),
            ]
        );
        assert!(patch_for(&configuration, b"OLD").len() == 4);
        let current = MutatingWebhookConfiguration {
            webhooks: Some(vec![webhook("pod.inject.trellis.dev", Some(b"ROOT"))]),
            ..MutatingWebhookConfiguration::default()
        };
        assert!(patch_for(&current, b"ROOT").is_empty());
    }
}
