//! `GET /api/v1/explain`: whether a request from one identity to a Service would be
//! allowed, and what decided it; and which route and backends it would take. What
//! `trellis explain` shows.
//!
//! The Service's authorization is compiled from the current resources by the compiler,
//! exactly as its proxies receive it ([`MeshIndex::authorization`]), then read and
//! evaluated the way the proxies do ([`trellis_api::authz`]), so the answer is the
//! proxies' answer.
//!
//! Query: `from=SPIFFE_ID` (absent: a caller without a verified identity),
//! `to=SERVICE`, `namespace=NS` (default `default`), `method=M` (default `GET`),
//! `path=P` (default `/`), `port=N` (the application's port; default: the first port's
//! `targetPort` of a declared Service, else unknown), and `header=name:value`, any
//! number of times.
//!
//! The route is the first, in the caller's proxy's order, whose match the request
//! meets (`explain_route.rs`); the caller is the namespace of `from`, else the
//! Service's own.
//!
//! Answer: `{allowed, decidedBy, defaultAction, service, request, policies, route}`, where
//! `decidedBy` is `{"policy": "shop/allow-web", "rule": 0}`, `"default"` (no policy
//! spoke) or `"noAllowMatch"` (Allow policies exist and none matched).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use trellis_api::authz::{
    Action, AuthorizationConfig, Authorizer, DecidedBy, HttpRequest, Peer, PolicyConfig, Request,
};
use trellis_api::meta::DEFAULT_NAMESPACE;
use trellis_identity::SpiffeId;

use super::explain_route::{route_taken, RouteTaken, Routed};
use super::storage;
use super::{ApiError, ApiState};
use crate::compile::{MeshIndex, MeshState, ServiceKey};

const PARAMETERS: &str = "from, to, namespace, method, path, port, header";

/// The request to explain, from the query string.
#[derive(Debug, Default)]
struct Question {
    from: Option<String>,
    to: Option<String>,
    namespace: Option<String>,
    method: Option<String>,
    path: Option<String>,
    port: Option<u16>,
    headers: Vec<(String, String)>,
}

/// The request as evaluated, defaults filled in.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Asked {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// `None`: unknown, so rules naming ports fail closed.
    port: Option<u16>,
    method: String,
    path: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Explanation {
    allowed: bool,
    decided_by: Value,
    default_action: Action,
    /// `namespace/name`.
    service: String,
    request: Asked,
    /// The Service's policies, as its proxies hold them.
    policies: Vec<PolicyConfig>,
    /// The route the request takes from the caller's proxy.
    route: Option<RouteTaken>,
}

/// `GET /api/v1/explain?from=…&to=…`
pub(super) async fn explain(
    State(api): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Explanation>, ApiError> {
    let question = parse(query.as_deref().unwrap_or_default())?;
    let Some(to) = question.to.filter(|t| !t.is_empty()) else {
        return Err(ApiError::BadRequest(
            "name the Service the request is for: to=SERVICE".into(),
        ));
    };
    let namespace = question
        .namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let from = question.from.filter(|f| !f.is_empty());
    if let Some(from) = &from {
        from.parse::<SpiffeId>().map_err(|e| {
            ApiError::BadRequest(format!(
                "from: {e}; expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
            ))
        })?;
    }
    let method = question
        .method
        .filter(|m| !m.is_empty())
        .map_or_else(|| "GET".to_string(), |m| m.to_ascii_uppercase());
    let mut path = question.path.unwrap_or_else(|| "/".to_string());
    let mut query = None;
    if let Some(q) = path.find('?') {
        query = Some(path[q + 1..].to_string());
        path.truncate(q);
    }
    if !path.starts_with('/') {
        return Err(ApiError::BadRequest(format!(
            "path: {path:?} must start with '/'"
        )));
    }

    let all = storage::read_all(api.store.as_ref()).await?;
    let index = MeshIndex::new(&MeshState::new(all));
    let key = ServiceKey::new(&namespace, &to);
    if !index.service_exists(&key) {
        return Err(ApiError::NotFound(format!(
            "Service {namespace}/{to} not found, declared or implied by a workload"
        )));
    }
    let compiled = index.authorization(&key, 0);
    let config = AuthorizationConfig::from_wire(&compiled, "authorization")
        .map_err(|e| ApiError::Internal(format!("the compiled authorization is unusable: {e}")))?;
    let authorizer = Authorizer::new(&config);
    let port = question.port.or_else(|| index.application_port(&key));

    let request = Request {
        peer: from.as_deref().map(Peer::from_identity),
        port,
        http: Some(HttpRequest {
            method: &method,
            path: &path,
            headers: &question.headers,
        }),
    };
    let decision = authorizer.evaluate(&request);
    let caller_ns = from
        .as_deref()
        .and_then(|f| f.parse::<SpiffeId>().ok())
        .map_or_else(|| namespace.clone(), |id| id.namespace().to_string());
    let routes = index.routes_for(&key, &caller_ns, from.as_deref().unwrap_or_default());
    let route = route_taken(
        &routes,
        &Routed {
            method: &method,
            path: &path,
            query: query.as_deref(),
            headers: &question.headers,
        },
    );
    let decided_by = match decision.decided_by {
        DecidedBy::Rule { policy, rule, .. } => json!({"policy": policy, "rule": rule}),
        DecidedBy::Default => json!("default"),
        DecidedBy::NoAllowMatch => json!("noAllowMatch"),
    };
    Ok(Json(Explanation {
        allowed: decision.allowed,
        decided_by,
        default_action: config.default_action,
        service: format!("{namespace}/{to}"),
        request: Asked {
            port,
            method,
            path,
            headers: question
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .collect(),
            from,
        },
        policies: config.policies,
        route,
    }))
}

/// Reads the query string; `header` may repeat, the rest may not.
fn parse(query: &str) -> Result<Question, ApiError> {
    let mut q = Question::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let once = |slot: &mut Option<String>| {
            if slot.replace(value.clone()).is_some() {
                return Err(ApiError::BadRequest(format!("{key} is given twice")));
            }
            Ok(())
        };
        match &*key {
            "from" => once(&mut q.from)?,
            "to" => once(&mut q.to)?,
            "namespace" => once(&mut q.namespace)?,
            "method" => once(&mut q.method)?,
            "path" => once(&mut q.path)?,
            "port" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "port: {value:?} is not a port between 1 and 65535"
                        ))
                    })?;
                q.port = Some(port);
            }
            "header" => {
                let Some((name, v)) = value.split_once(':') else {
                    return Err(ApiError::BadRequest(format!(
                        "header: {value:?} is not name:value"
                    )));
                };
                q.headers
                    .push((name.trim().to_string(), v.trim().to_string()));
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?}; expected {PARAMETERS}"
                )))
            }
        }
    }
    Ok(q)
}
