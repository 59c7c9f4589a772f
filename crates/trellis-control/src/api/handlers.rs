//! One function per route: read the request, call [`storage`], [`write`] or the
//! registry, answer JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};
use trellis_api::{parse_documents, Kind, Resource, Spec};

use super::status::Existing;
use super::storage::{self, CLUSTER_NAMESPACE};
use super::write::{self, Applied};
use super::{ApiError, ApiState};
use crate::registry::ProxyStatus;

type Shared = State<Arc<ApiState>>;
type Answer<T> = Result<Json<T>, ApiError>;

/// `{"items": [...]}`, the shape every list takes.
#[derive(Serialize)]
pub(super) struct Items<T> {
    items: Vec<T>,
}

impl<T> Items<T> {
    pub(super) fn new(items: Vec<T>) -> Self {
        Self { items }
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    namespace: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ApplyResults {
    results: Vec<Applied>,
}

#[derive(Serialize)]
pub(super) struct Deleted {
    deleted: Resource,
}

#[derive(Serialize)]
pub(super) struct Health {
    status: &'static str,
    revision: u64,
    #[serde(rename = "proxyApi", skip_serializing_if = "Option::is_none")]
    proxy_api: Option<String>,
}

/// `GET /api/v1/resources/{kind}[?namespace=NS]`
pub(super) async fn list(
    State(api): Shared,
    Path(kind): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Answer<Items<Resource>> {
    let kind = parse_kind(&kind)?;
    let Query(query) = query?;
    let namespace = query.namespace.filter(|ns| !ns.is_empty());
    let all = storage::read_all(api.store.as_ref()).await?;
    let (vips, _) = crate::vip::read(api.store.as_ref())
        .await
        .map_err(storage::StorageError::from)?;
    let existing = Existing::new(&all).with_vips(vips);
    let mut items: Vec<Resource> = all
        .into_iter()
        .filter(|r| r.kind == kind)
        // A namespace filter means nothing to cluster-wide kinds.
        .filter(|r| {
            !kind.is_namespaced()
                || namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == r.metadata.namespace)
        })
        .map(|r| existing.with_status(r))
        .collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(Json(Items { items }))
}

/// `GET /api/v1/resources/{kind}/{namespace}/{name}`
pub(super) async fn get_one(
    State(api): Shared,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Answer<Resource> {
    find_one(&api, &kind, &namespace, &name).await.map(Json)
}

/// One resource with its status, by the kind and namespace as written in a path.
pub(super) async fn find_one(
    api: &ApiState,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Resource, ApiError> {
    let (kind, namespace) = parse_object(kind, namespace)?;
    let all = storage::read_all(api.store.as_ref()).await?;
    let (vips, _) = crate::vip::read(api.store.as_ref())
        .await
        .map_err(storage::StorageError::from)?;
    let existing = Existing::new(&all).with_vips(vips);
    all.into_iter()
        .find(|r| r.kind == kind && r.metadata.namespace == namespace && r.metadata.name == name)
        .map(|r| existing.with_status(r))
        .ok_or_else(|| not_found(kind, &namespace, name))
}

/// `POST /api/v1/apply`: validates every document, then writes each in order.
pub(super) async fn apply(
    State(api): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Answer<ApplyResults> {
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not UTF-8 text: {e}")))?;
    let resources = parse_documents(text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if resources.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body holds no resources: send YAML or JSON documents".into(),
        ));
    }
    check_certificates(&resources).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut results = Vec::with_capacity(resources.len());
    for resource in &resources {
        match write::apply(api.store.as_ref(), resource).await {
            Ok(applied) => results.push(applied),
            Err(e) => return Err(ApiError::from_write(e, results)),
        }
    }
    Ok(Json(ApplyResults { results }))
}

/// Refuses an ExternalService whose `tls.caCertificates` would not give the proxies a
/// usable trust anchor: they would refuse every configuration holding it, not only
/// its calls. (The API crate checks only the PEM armour; certificates are parsed here,
/// where the tree's TLS stack is.)
fn check_certificates(resources: &[Resource]) -> Result<(), trellis_api::ValidationError> {
    for (i, resource) in resources.iter().enumerate() {
        let Spec::ExternalService(spec) = &resource.spec else {
            continue;
        };
        let Some(pem) = spec.tls.as_ref().and_then(|t| t.ca_certificates.as_deref()) else {
            continue;
        };
        if let Err(e) = trellis_identity::origination_client_config(pem, &[]) {
            let error = trellis_api::ValidationError::new("spec.tls.caCertificates", e.to_string());
            return Err(match resources.len() {
                1 => error,
                _ => error.in_document(i + 1),
            });
        }
    }
    Ok(())
}

/// `DELETE /api/v1/resources/{kind}/{namespace}/{name}`
pub(super) async fn delete(
    State(api): Shared,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Answer<Deleted> {
    let (kind, namespace) = parse_object(&kind, &namespace)?;
    match write::delete(api.store.as_ref(), kind, &namespace, &name).await {
        Ok(Some(deleted)) => Ok(Json(Deleted { deleted })),
        Ok(None) => Err(not_found(kind, &namespace, &name)),
        Err(e) => Err(ApiError::from_write(e, Vec::new())),
    }
}

/// `GET /api/v1/proxies`
pub(super) async fn proxies(State(api): Shared) -> Json<Items<ProxyStatus>> {
    Json(Items {
        items: api.registry.list(),
    })
}

/// `GET /api/v1/prometheus/targets`: the proxies connected here, in Prometheus's HTTP
/// service-discovery format, so Prometheus follows the mesh as proxies come and go
/// (`trellis prometheus-config` writes the scrape configuration that reads it).
pub(super) async fn prometheus_targets(State(api): Shared) -> Json<Vec<serde_json::Value>> {
    let targets = api
        .registry
        .list()
        .into_iter()
        .filter(|p| !p.admin_address.is_empty())
        .map(|p| {
            serde_json::json!({
                "targets": [p.admin_address],
                "labels": {
                    "mesh_workload": p.workload,
                    "mesh_namespace": p.namespace,
                    "mesh_service": p.service,
                },
            })
        })
        .collect();
    Json(targets)
}

/// `GET /api/v1/control-planes`: the replicas on this store and which one leads.
pub(super) async fn control_planes(State(api): Shared) -> Json<crate::leader::ReplicaView> {
    Json(match &api.membership {
        Some(membership) => membership.view(),
        None => crate::leader::ReplicaView {
            this: String::new(),
            leader: None,
            members: Vec::new(),
        },
    })
}

/// `GET /api/v1/health`
pub(super) async fn health(State(api): Shared) -> Answer<Health> {
    let revision = api
        .store
        .revision()
        .await
        .map_err(storage::StorageError::from)?;
    Ok(Json(Health {
        status: "ok",
        revision,
        proxy_api: api.proxy_api.clone(),
    }))
}

/// Anything no route matches.
pub(super) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint: {method} {}; the API is under /api/v1/",
        uri.path()
    ))
}

/// A route that exists, with a method it does not take.
pub(super) async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}

fn parse_kind(word: &str) -> Result<Kind, ApiError> {
    Kind::from_cli(word).ok_or_else(|| {
        let accepted: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        ApiError::BadRequest(format!(
            "unknown kind {word:?}: expected one of {} (singular, plural or short names such as svc)",
            accepted.join(", ")
        ))
    })
}

/// The kind and the namespace as stored (empty for cluster-wide kinds) of an object
/// path.
fn parse_object(kind: &str, namespace: &str) -> Result<(Kind, String), ApiError> {
    let kind = parse_kind(kind)?;
    match (kind.is_namespaced(), namespace == CLUSTER_NAMESPACE) {
        (true, false) => Ok((kind, namespace.to_string())),
        (false, true) => Ok((kind, String::new())),
        (true, true) => Err(ApiError::BadRequest(format!(
            "{kind} is namespaced: name a namespace instead of {CLUSTER_NAMESPACE}"
        ))),
        (false, false) => Err(ApiError::BadRequest(format!(
            "{kind} is cluster-wide: use {CLUSTER_NAMESPACE} as the namespace, got {namespace:?}"
        ))),
    }
}

fn not_found(kind: Kind, namespace: &str, name: &str) -> ApiError {
    let what = if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    ApiError::NotFound(format!("{what} not found"))
}
