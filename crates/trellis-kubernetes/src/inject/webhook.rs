//! The mutating admission webhook: `POST /inject` takes an `AdmissionReview`
//! (admission.k8s.io/v1) for a Pod and answers with the JSONPatch that injects it.
//!
//! What is answered when:
//!
//! - a body that is not an `AdmissionReview` with a request: **400**, with the reason;
//!   the API server counts it as a call that failed (see `failurePolicy` below);
//! - a Pod being created that is injected: allowed, with the patch;
//! - anything else (not a Pod, not a CREATE, a Pod that is skipped): allowed, without
//!   a patch;
//! - a Pod whose `trellis.dev/*` annotations are wrong: **denied**, naming the
//!   annotation, the value and what is accepted: the author asked for something the
//!   injector cannot do, and a Pod injected differently than asked would be worse;
//! - a Pod the injector's Kubernetes types cannot read: allowed, without a patch, with
//!   a warning the client shows. The API server has already validated the object, so
//!   this is a gap between its schema and ours, not the user's mistake; refusing would
//!   block every Pod of that shape in the injected namespaces until Trellis is
//!   upgraded, the same outage `failurePolicy: Fail` risks when the webhook is down.
//!   The Pod runs without the mesh and says so.
//!
//! The webhook configuration `trellis install` writes uses `failurePolicy: Fail`: a Pod
//! that should have a sidecar never starts without one (and so never bypasses strict
//! mTLS or authorization), at the price of Pod creation in injected namespaces waiting
//! for the control plane. Control-plane Pods are outside the webhook's namespaces, so
//! the control plane can always come back.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::Value;
use trellis_identity::{KeyError, WorkloadKey};

use super::{patch_for, Decision, InjectError, InjectSettings};

/// The path the webhook configuration's `clientConfig` points at.
pub const PATH: &str = "/inject";
/// The Service `trellis install` puts in front of the control plane, which serves the
/// webhook.
pub const SERVICE: &str = "trellis-control";

/// The webhook's routes, for the control plane to serve over TLS.
pub fn router(settings: Arc<InjectSettings>) -> Router {
    Router::new().route(PATH, post(admit)).with_state(settings)
}

/// The DNS names the API server calls the webhook by, which its serving certificate
/// must carry: `trellis-control.<namespace>.svc` (the name a `service` clientConfig
/// resolves to) and `trellis-control.<namespace>.svc.cluster.local`.
pub fn serving_names(namespace: &str) -> Vec<String> {
    vec![
        format!("{SERVICE}.{namespace}.svc"),
        format!("{SERVICE}.{namespace}.svc.cluster.local"),
    ]
}

/// A certificate signing request, PEM, for the webhook's serving certificate in
/// `namespace`: the [`serving_names`] as DNS names, signed with `key`.
pub fn certificate_request(namespace: &str, key: &WorkloadKey) -> Result<String, KeyError> {
    key.server_csr(&serving_names(namespace))
}

async fn admit(State(settings): State<Arc<InjectSettings>>, body: Bytes) -> Response {
    match review(&body, &settings) {
        Ok(response) => Json(response.into_review()).into_response(),
        Err(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
    }
}

/// The answer to one review, or why the body is not a review.
pub fn review(body: &[u8], settings: &InjectSettings) -> Result<AdmissionResponse, String> {
    let mut raw: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    // The object is read apart from the review: an object this crate cannot read is
    // not a malformed review, and gets an answer (see the module documentation).
    let object = raw
        .get_mut("request")
        .and_then(Value::as_object_mut)
        .and_then(|request| request.remove("object"));
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(raw)
        .map_err(|e| format!("not an admission.k8s.io/v1 AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {:?}, {:?}",
            review.types.api_version, review.types.kind
        ));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())?;
    let allowed = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let (true, Operation::Create, Some(object)) = (is_pod, &request.operation, object) else {
        return Ok(allowed);
    };
    let injection = match patch_for(&object, request.namespace.as_deref(), settings) {
        Ok(injection) => injection,
        Err(InjectError::Annotation(e)) => {
            tracing::info!(namespace = ?request.namespace, name = %request.name, "refused: {e}");
            return Ok(allowed.deny(format!("Trellis sidecar injection: {e}")));
        }
        Err(e @ (InjectError::NotAPod(_) | InjectError::Encode(_))) => {
            tracing::warn!(namespace = ?request.namespace, name = %request.name, "not injected: {e}");
            let mut answer = allowed;
            answer.warnings = Some(vec![format!(
                "Trellis did not inject this Pod: it cannot read it ({e})"
            )]);
            return Ok(answer);
        }
    };
    tracing::debug!(namespace = ?request.namespace, name = %request.name, decision = ?injection.decision, "admitted");
    match injection.decision {
        Decision::Injected => allowed
            .with_patch(injection.patch)
            .map_err(|e| format!("cannot encode the patch: {e}")),
        Decision::Skipped(_) => Ok(allowed),
    }
}

#[cfg(test)]
mod tests;
