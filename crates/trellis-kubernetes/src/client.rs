//! Connecting to the API server: in-cluster (the Pod's ServiceAccount) by default, or
//! from a kubeconfig file.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the cluster: from `kubeconfig` when given, else the in-cluster
/// configuration, else the usual kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display())
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes configuration: not in a cluster and no kubeconfig ({e})")
        })?,
    };
    Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}
