//! The control plane's own state on Kubernetes — the CA's keys and roots, the token
//! key and the admin token — kept in one Secret of its namespace, so that every
//! replica signs with the same CA and accepts the same tokens.
//!
//! The first replica makes the state (as a control plane on a new store would) and
//! creates the Secret; when several start together, one creation wins and the others
//! read the winner's. Each replica seeds its in-memory store from the Secret before it
//! starts. Values are copied as the store holds them: sealed with the operator's key
//! when one is given (`--ca-encryption-key`), else in plaintext, where whoever reads
//! the Secret can mint identities (restrict it with RBAC, as the install does).
//!
//! While they run, [`share`] keeps each replica's store and the Secret equal: what a
//! replica changes (a trust-anchor rotation started through its API, or a step of one
//! it paces) is written to the Secret, and what the Secret holds is written into the
//! store, where the CA follows it ([`MeshCa::follow_store`]). So a rotation started on
//! one replica reaches every replica's proxies, and survives restarts. Each key is
//! written only when it differs; concurrent writers agree, since every replica takes
//! the same rotation steps from the same record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use trellis_control::ca::MeshCa;
use trellis_control::secrets::Secrets;
use trellis_control::server::ControlSettings;
use trellis_control::store::{Expect, MemoryStore, Store};

/// The Secret holding the control plane's state.
pub const SECRET: &str = "trellis-control-state";
/// The store prefixes shared through it.
const SHARED: [&str; 2] = ["/ca/", "/admin/"];

/// Puts the shared state into `store`, from the Secret in `namespace`, making it first
/// if there is none.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    store: &dyn Store,
    settings: &ControlSettings,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let state = loop {
        let existing = secrets
            .get_opt(SECRET)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the Secret {namespace}/{SECRET}: {e}"))?;
        if let Some(secret) = existing {
            break secret.data.unwrap_or_default();
        }
        let data = make(settings).await?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/part-of".to_string(),
                        "trellis".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    secret = SECRET,
                    "made the mesh's CA and stored it"
                );
                break data;
            }
            // Another replica made it first: take that one.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => anyhow::bail!("cannot create the Secret {namespace}/{SECRET}: {e}"),
        }
    };
    for (name, value) in state {
        let Some(key) = store_key(&name) else {
            continue;
        };
        store
            .put(&key, value.0, Expect::Any)
            .await
            .map_err(|e| anyhow::anyhow!("cannot seed the store with {key}: {e}"))?;
    }
    Ok(())
}

/// How long to wait before watching again after the store or the API server failed.
const RETRY: Duration = Duration::from_secs(1);

/// Keeps the shared keys of `store` and the Secret in `namespace` equal, both ways,
/// until the task is aborted.
pub async fn share(client: Client, namespace: String, store: Arc<dyn Store>) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let by_name = watcher::Config::default().fields(&format!("metadata.name={SECRET}"));
    let changes = watcher(secrets.clone(), by_name).default_backoff();
    let mut changes = std::pin::pin!(changes);
    loop {
        let watch = match store.revision().await {
            // The CA's keys are the ones that change (the admin token never does).
            Ok(revision) => store.watch("/ca/", revision).await,
            Err(e) => Err(e),
        };
        let mut local = match watch {
            Ok(watch) => watch,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the store; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                event = local.next() => match event {
                    Ok(_) => {
                        if let Err(e) = to_secret(&secrets, store.as_ref()).await {
                            tracing::warn!(error = %e, "cannot write the CA's state to the Secret {namespace}/{SECRET}; retrying");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "store watch ended; watching again");
                        break;
                    }
                },
                event = changes.next() => match event {
                    Some(Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret))) => {
                        if let Err(e) = to_store(&secret, store.as_ref()).await {
                            tracing::warn!(error = %e, "cannot take the Secret's state into the store");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "watching the Secret"),
                    None => return,
                },
            }
        }
    }
}

/// Writes the shared keys the Secret lacks or holds otherwise, with a merge patch of
/// those keys alone.
async fn to_secret(secrets: &Api<Secret>, store: &dyn Store) -> anyhow::Result<()> {
    let held = secrets.get(SECRET).await?.data.unwrap_or_default();
    let mut changed = serde_json::Map::new();
    for prefix in SHARED {
        let (entries, _) = store.list(prefix).await?;
        for entry in entries {
            let name = secret_key(&entry.key);
            let value = ByteString(entry.value.to_vec());
            if held.get(&name) != Some(&value) {
                changed.insert(name, serde_json::to_value(&value)?);
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = changed.keys().cloned().collect();
    let patch = Patch::Merge(serde_json::json!({ "data": changed }));
    secrets
        .patch(SECRET, &PatchParams::default(), &patch)
        .await?;
    tracing::info!(?keys, "wrote the CA's state to the Secret");
    Ok(())
}

/// Writes the Secret's shared keys the store lacks or holds otherwise.
async fn to_store(secret: &Secret, store: &dyn Store) -> anyhow::Result<()> {
    for (name, value) in secret.data.iter().flatten() {
        let Some(key) = store_key(name) else {
            continue;
        };
        let held = store.get(&key).await?;
        if held.as_ref().map(|v| v.value.as_ref()) != Some(value.0.as_slice()) {
            store.put(&key, value.0.clone(), Expect::Any).await?;
        }
    }
    Ok(())
}

/// New shared state, made in a scratch store exactly as a control plane makes it.
async fn make(settings: &ControlSettings) -> anyhow::Result<BTreeMap<String, ByteString>> {
    let scratch: Arc<dyn Store> = Arc::new(MemoryStore::new());
    MeshCa::start(scratch.clone(), settings.ca.clone()).await?;
    let secrets = Secrets::new(scratch.clone(), settings.ca.encryption_key.clone());
    trellis_control::api::token::share(&secrets, &settings.data_dir).await?;
    let mut data = BTreeMap::new();
    for prefix in SHARED {
        let (entries, _) = scratch.list(prefix).await?;
        for entry in entries {
            data.insert(secret_key(&entry.key), ByteString(entry.value.to_vec()));
        }
    }
    Ok(data)
}

/// A store key as a Secret's data key (`/ca/token-key` → `ca.token-key`): Secret keys
/// may hold only letters, digits, `-`, `_` and `.`.
fn secret_key(key: &str) -> String {
    key.trim_start_matches('/').replace('/', ".")
}

fn store_key(name: &str) -> Option<String> {
    let key = format!("/{}", name.replace('.', "/"));
    SHARED.iter().any(|p| key.starts_with(p)).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_survive_the_secrets_key_alphabet() {
        for key in ["/ca/signer", "/ca/token-key", "/ca/bundle", "/admin/token"] {
            assert_eq!(store_key(&secret_key(key)).as_deref(), Some(key));
        }
        assert_eq!(store_key("resources.Service.x"), None);
    }
}
