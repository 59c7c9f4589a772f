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
//! Not yet: a trust-anchor rotation started on one replica is not written back to the
//! Secret, so on Kubernetes rotate by replacing the Secret and restarting the replicas.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
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
