//! The CA's part of the HTTP API: bootstrap tokens, trust anchors, rotation.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | `POST` | `/api/v1/tokens` `{service, namespace?, serviceAccount?, ttl?}` | `{token, identity, expiresAt}` |
//! | `GET` | `/api/v1/ca` | `{trustDomain, signer, trustAnchors, rotation}` |
//! | `POST` | `/api/v1/ca/rotate` `{overlap?}` | `{newRoot, overlap}`; the rotation goes on in the background |
//!
//! All need the admin token from anywhere but `GET /api/v1/ca` from loopback.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use trellis_api::duration::Duration as ApiDuration;
use trellis_api::meta::{rfc3339, DEFAULT_NAMESPACE};
use trellis_identity::CertInfo;

use super::{ApiError, ApiState};

/// Default and longest lifetime of a bootstrap token.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default overlap of a trust-anchor rotation.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TokenRequest {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    /// Default: the service name, as sidecars register.
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    ttl: Option<ApiDuration>,
}

/// `POST /api/v1/tokens`
pub(super) async fn create_token(
    State(api): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TokenRequest = parse(&body)?;
    let namespace = request
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let account = request
        .service_account
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| request.service.clone());
    let identity = api
        .ca
        .identity(&namespace, &account)
        .map_err(|e| ApiError::BadRequest(format!("identity: {e}")))?;
    let ttl = request.ttl.map_or(DEFAULT_TOKEN_TTL, |t| t.get());
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::BadRequest(format!(
            "ttl: must be more than 0 and at most {} days",
            MAX_TOKEN_TTL.as_secs() / 86400
        )));
    }
    let token = api
        .ca
        .issue_token(&identity, ttl)
        .map_err(|e| ApiError::Rejected {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot issue a token: {e}"),
        })?;
    tracing::info!(%identity, ttl_secs = ttl.as_secs(), "bootstrap token issued");
    Ok(Json(json!({
        "token": token,
        "identity": identity.to_string(),
        "expiresAt": rfc3339(SystemTime::now() + ttl),
    })))
}

/// A JSON body, whatever its content type says.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("the request body is not the JSON expected: {e}"))
    })
}

fn cert(info: &CertInfo) -> Value {
    let left = info
        .not_after
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs());
    json!({
        "subject": info.subject,
        "fingerprint": info.fingerprint,
        "notBefore": rfc3339(info.not_before),
        "notAfter": rfc3339(info.not_after),
        "secondsToExpiry": left,
    })
}

/// `GET /api/v1/ca`
pub(super) async fn show(State(api): State<Arc<ApiState>>) -> Json<Value> {
    let anchors: Vec<Value> = api.ca.trust_bundle().roots().map(cert).collect();
    Json(json!({
        "trustDomain": api.ca.trust_domain(),
        "signer": cert(&api.ca.signer()),
        "trustAnchors": anchors,
        "rotation": api.ca.rotation_status(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RotateRequest {
    #[serde(default)]
    overlap: Option<ApiDuration>,
}

/// `POST /api/v1/ca/rotate`
pub(super) async fn rotate(
    State(api): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        parse(&body)?
    };
    let overlap = request.overlap.map_or(DEFAULT_OVERLAP, |d| d.get());
    let new_root = api
        .ca
        .rotate(overlap)
        .await
        .map_err(|e| ApiError::Rejected {
            status: StatusCode::CONFLICT,
            message: e.to_string(),
        })?;
    Ok(Json(json!({
        "newRoot": new_root,
        "overlapSeconds": overlap.as_secs_f64(),
    })))
}
