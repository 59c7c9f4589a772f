//! A Pod's volumes as directories in the agent's own temporary directory, filled as
//! the kubelet fills them: `emptyDir` empty, `configMap` and `secret` with their keys,
//! `downwardAPI` with `fieldRef` values, `projected` with all of those plus
//! ServiceAccount tokens from the TokenRequest API (audience, expiry, bound to the Pod),
//! and `hostPath` as the host's own path. [`mounts`] turns a container's
//! `volumeMounts` into the bind mounts its process starts with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::process::Mount;
use super::spec::{field_ref, SpecError};
use super::NodeError;

/// A volume's files, by volume name.
pub type Volumes = HashMap<String, PathBuf>;

/// Fills every volume of `pod` under `dir` (one directory per volume).
pub async fn prepare(client: &Client, pod: &Pod, dir: &Path) -> Result<Volumes, SpecError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| SpecError("a Pod without spec".into()))?;
    let mut volumes = Volumes::new();
    for volume in spec.volumes.iter().flatten() {
        let path = match &volume.host_path {
            Some(host) => PathBuf::from(&host.path),
            None => {
                let path = dir.join(&volume.name);
                create_dir(&path)?;
                fill(client, pod, volume, &path).await?;
                path
            }
        };
        volumes.insert(volume.name.clone(), path);
    }
    Ok(volumes)
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> SpecError {
    SpecError(format!("cannot {what} {}: {err}", path.display()))
}

fn create_dir(path: &Path) -> Result<(), SpecError> {
    std::fs::create_dir_all(path).map_err(|e| io_error("create", path, e))
}

fn write(dir: &Path, relative: &str, contents: &[u8]) -> Result<(), SpecError> {
    if relative
        .split('/')
        .any(|part| part == ".." || part.is_empty())
    {
        return Err(SpecError(format!(
            "volume file path {relative:?} must be relative, without '..'"
        )));
    }
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(&path, contents).map_err(|e| io_error("write", &path, e))
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

async fn fill(client: &Client, pod: &Pod, volume: &Volume, dir: &Path) -> Result<(), SpecError> {
    if volume.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(source) = &volume.config_map {
        let optional = source.optional.unwrap_or(false);
        return write_object(
            client,
            pod,
            Keys::ConfigMap,
            &source.name,
            source.items.as_deref(),
            optional,
            dir,
        )
        .await;
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        return write_object(
            client,
            pod,
            Keys::Secret,
            &name,
            source.items.as_deref(),
            optional,
            dir,
        )
        .await;
    }
    if let Some(source) = &volume.downward_api {
        return write_downward(pod, source.items.as_deref().unwrap_or_default(), dir);
    }
    if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                write_token(client, pod, token, dir).await?;
            }
            if let Some(map) = &source.config_map {
                // A missing ConfigMap is skipped: no controller of the test bed
                // publishes `kube-root-ca.crt`, which every automounted API token
                // volume names.
                write_object(
                    client,
                    pod,
                    Keys::ConfigMap,
                    &map.name,
                    map.items.as_deref(),
                    true,
                    dir,
                )
                .await?;
            }
            if let Some(secret) = &source.secret {
                let optional = secret.optional.unwrap_or(false);
                write_object(
                    client,
                    pod,
                    Keys::Secret,
                    &secret.name,
                    secret.items.as_deref(),
                    optional,
                    dir,
                )
                .await?;
            }
            if let Some(downward) = &source.downward_api {
                write_downward(pod, downward.items.as_deref().unwrap_or_default(), dir)?;
            }
        }
        return Ok(());
    }
    Err(SpecError(format!(
        "volume {:?}: only emptyDir, configMap, secret, downwardAPI, projected and hostPath \
         volumes are supported by the node agent",
        volume.name
    )))
}

/// Writes `data` as files: every key, or only `items` (key → path) when given.
fn write_keys(
    dir: &Path,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    what: &str,
) -> Result<(), SpecError> {
    match items {
        None => {
            for (key, value) in &data {
                write(dir, key, value)?;
            }
        }
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| SpecError(format!("{what} has no key {:?}", item.key)))?;
                write(dir, &item.path, value)?;
            }
        }
    }
    Ok(())
}

/// Where keys come from: a ConfigMap or a Secret.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    ConfigMap,
    Secret,
}

impl Keys {
    /// The keys of the object `name` in `namespace` and their values; `None` when it
    /// is missing and `optional`.
    pub async fn fetch(
        self,
        client: &Client,
        namespace: &str,
        name: &str,
        optional: bool,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, SpecError> {
        let (kind, found) = match self {
            Keys::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                let found = api.get_opt(name).await.map(|map| {
                    map.map(|map| {
                        let text = map.data.unwrap_or_default().into_iter();
                        let binary = map.binary_data.unwrap_or_default().into_iter();
                        text.map(|(k, v)| (k, v.into_bytes()))
                            .chain(binary.map(|(k, v)| (k, v.0)))
                            .collect()
                    })
                });
                ("configmap", found)
            }
            Keys::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let found = api.get_opt(name).await.map(|secret| {
                    secret.map(|secret| {
                        let data = secret.data.unwrap_or_default().into_iter();
                        let text = secret.string_data.unwrap_or_default().into_iter();
                        data.map(|(k, v)| (k, v.0))
                            .chain(text.map(|(k, v)| (k, v.into_bytes())))
                            .collect()
                    })
                });
                ("secret", found)
            }
        };
        match found {
            Ok(Some(data)) => Ok(Some(data)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(SpecError(format!("{kind} {name:?} not found"))),
            Err(err) => Err(SpecError(format!("{kind} {name:?}: {err}"))),
        }
    }
}

/// Writes the keys of a ConfigMap or Secret as files.
async fn write_object(
    client: &Client,
    pod: &Pod,
    keys: Keys,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    dir: &Path,
) -> Result<(), SpecError> {
    match keys.fetch(client, namespace(pod), name, optional).await? {
        Some(data) => write_keys(dir, data, items, &format!("{keys:?} {name:?}")),
        None => Ok(()),
    }
}

fn write_downward(pod: &Pod, items: &[DownwardAPIVolumeFile], dir: &Path) -> Result<(), SpecError> {
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(SpecError(format!(
                "downwardAPI file {:?}: only fieldRef items are supported",
                item.path
            )));
        };
        write(
            dir,
            &item.path,
            field_ref(pod, &field.field_path)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// A token for the Pod's ServiceAccount from the TokenRequest API, bound to the Pod
/// (so it dies with it), with the projection's audience and expiry.
async fn write_token(
    client: &Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
    dir: &Path,
) -> Result<(), SpecError> {
    let audiences = projection.audience.iter().cloned().collect();
    let expiration = projection.expiration_seconds.unwrap_or(3600);
    let token = bound_token(client, pod, audiences, expiration)
        .await
        .map_err(|e| SpecError(e.0))?;
    write(dir, &projection.path, token.as_bytes())
}

/// A token of the Pod's ServiceAccount from the TokenRequest API, bound to the Pod (the
/// API server refuses it once the Pod is gone), for `audiences`, valid
/// `expiration_seconds`: what the kubelet projects into a Pod.
pub async fn bound_token(
    client: &Client,
    pod: &Pod,
    audiences: Vec<String>,
    expiration_seconds: i64,
) -> Result<String, NodeError> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace(pod));
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| NodeError(format!("TokenRequest for serviceaccount {account:?}: {e}")))?;
    answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| NodeError(format!("TokenRequest for {account:?} returned no token")))
}

/// The bind mounts of `container`'s `volumeMounts`.
pub fn mounts(container: &Container, volumes: &Volumes) -> Result<Vec<Mount>, SpecError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let Some(source) = volumes.get(&mount.name) else {
                return Err(SpecError(format!(
                    "container {:?} mounts volume {:?}, which the Pod does not have",
                    container.name, mount.name
                )));
            };
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => source.join(sub),
                _ => source.clone(),
            };
            Ok(Mount {
                source,
                target: mount.mount_path.clone(),
            })
        })
        .collect()
}
