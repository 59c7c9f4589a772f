//! `GET /api/v1/tap?service=S[&namespace=N][&path=P][&method=M][&status=C][&to=T]
//! [&limit=N][&duration=30s]`: live request metadata from the proxies of a service, as
//! JSON lines, until the limit, the duration, or the client goes away.
//!
//! Tap shows what requests carry (paths, callers' identities), so it always needs the
//! admin token, from this host too. Each control plane starts the tap on the proxies
//! connected to it; the one asked also asks the others (`local=true`) and merges their
//! lines into its stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use trellis_api::duration::Duration as ApiDuration;
use trellis_api::proto::v1::{TapEvent, TapStart};

use super::auth::tokens_match;
use super::error::ApiError;
use super::ApiState;

/// Events a second each proxy sends for one tap, at most.
const PER_SECOND: u32 = 100;
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TapQuery {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    status: Option<u32>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    local: bool,
}

/// One line of the stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TapLine {
    unix_nanos: u64,
    workload: String,
    direction: String,
    source_identity: String,
    destination_identity: String,
    method: String,
    authority: String,
    path: String,
    status: u32,
    /// A gRPC response's `grpc-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grpc_status: Option<u32>,
    latency_micros: u64,
    /// Bytes of the response body sent to the client.
    #[serde(default)]
    response_bytes: u64,
    route: String,
    backend: String,
}

impl From<TapEvent> for TapLine {
    fn from(e: TapEvent) -> Self {
        Self {
            unix_nanos: e.unix_nanos,
            workload: e.workload,
            direction: e.direction,
            source_identity: e.source_identity,
            destination_identity: e.destination_identity,
            method: e.method,
            authority: e.authority,
            path: e.path,
            status: e.status,
            grpc_status: e.grpc_status,
            latency_micros: e.latency_micros,
            response_bytes: e.response_bytes,
            route: e.route,
            backend: e.backend,
        }
    }
}

pub(super) async fn tap(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<TapQuery>,
) -> Result<Response, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        None => {
            return Err(ApiError::Unauthorized(
                "tap needs the admin token (--token, TRELLIS_TOKEN, or the admin-token file)"
                    .into(),
            ))
        }
        Some(given) if !tokens_match(given.as_bytes(), api.admin_token.as_bytes()) => {
            return Err(ApiError::Forbidden)
        }
        Some(_) => {}
    }
    let Some(hub) = &api.taps else {
        return Err(ApiError::BadRequest(
            "this control plane serves no proxies".into(),
        ));
    };
    let duration = match &query.duration {
        Some(text) => text
            .parse::<ApiDuration>()
            .map_err(|e| ApiError::BadRequest(format!("duration: {e}")))?
            .get()
            .min(MAX_DURATION),
        None => DEFAULT_DURATION,
    };
    let namespace = query.namespace.clone().unwrap_or_else(|| "default".into());
    let filter = TapStart {
        id: String::new(),
        path_prefix: query.path.clone().unwrap_or_default(),
        method: query.method.clone().unwrap_or_default(),
        status: query.status.unwrap_or(0),
        to: query.to.clone().unwrap_or_default(),
        max_per_second: PER_SECOND,
    };
    let mut stream = hub.open(&query.service, &namespace, filter);
    // Every line, this control plane's and the others', goes through `all`; one task
    // passes them to the response until the limit or the deadline.
    let (all, mut incoming) = mpsc::channel::<Bytes>(256);
    if !query.local {
        for peer in super::stat::peers(&api) {
            let path = format!("{}&local=true", peer_path(&query, &namespace, duration));
            tokio::spawn(from_peer(peer, path, api.admin_token.clone(), all.clone()));
        }
    }
    tokio::spawn(async move {
        loop {
            // The tap ends (and its proxies stop it) as soon as nobody reads it, even
            // when no request comes to find that out.
            let event = tokio::select! {
                event = stream.events.recv() => event,
                () = all.closed() => None,
            };
            let Some(event) = event else { break };
            let Ok(mut line) = serde_json::to_vec(&TapLine::from(event)) else {
                continue;
            };
            line.push(b'\n');
            if all.send(Bytes::from(line)).await.is_err() {
                break;
            }
        }
    });
    let (lines, body) = mpsc::channel::<Bytes>(256);
    let limit = query.limit.unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + duration;
        let mut sent = 0u64;
        while sent < limit {
            let next = tokio::time::timeout_at(deadline, incoming.recv()).await;
            let Ok(Some(line)) = next else { break };
            if lines.send(line).await.is_err() {
                break;
            }
            sent += 1;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(body, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::io::Error>(line), rx))
    }));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The same tap's path on another control plane.
fn peer_path(query: &TapQuery, namespace: &str, duration: Duration) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut path = format!(
        "/api/v1/tap?service={}&namespace={}&duration={}s",
        enc(&query.service),
        enc(namespace),
        duration.as_secs().max(1)
    );
    for (key, value) in [
        ("path", &query.path),
        ("method", &query.method),
        ("to", &query.to),
    ] {
        if let Some(value) = value {
            path.push_str(&format!("&{key}={}", enc(value)));
        }
    }
    if let Some(status) = query.status {
        path.push_str(&format!("&status={status}"));
    }
    path
}

/// Reads another control plane's tap stream, line by line, into `lines`.
async fn from_peer(peer: String, path: String, token: String, lines: mpsc::Sender<Bytes>) {
    use http_body_util::BodyExt;
    let mut body = match crate::telemetry::open(&peer, &path, Some(&token)).await {
        Ok(response) => response.into_body(),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot tap through another control plane");
            return;
        }
    };
    let mut pending = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if lines.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    }
}
