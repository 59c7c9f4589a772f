//! The admin server: `/live`, `/ready`, `/metrics` and `/config` on the admin address.
//! Read-only; nothing here changes the proxy.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use trellis_api::meta::rfc3339;
use trellis_identity::CertStore;

use crate::endpoint::BoxBody;
use crate::http::errors::full;
use crate::Shared;

/// Serves admin requests until the task is aborted.
pub async fn serve(socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&req, &shared)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<BoxBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if shared.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics_text(),
        ),
        "/config" => match config_json(shared) {
            Ok(json) => with_type(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics, /config\n",
        ),
    }
}

/// The effective configuration and, once installed, the proxy's identity: its SPIFFE
/// ID, certificate and trust anchors. Never the key.
fn config_json(shared: &Shared) -> serde_json::Result<String> {
    let mut config = serde_json::to_value(shared.effective_config())?;
    if let (Some(identity), Some(fields)) = (shared.tls.identity(), config.as_object_mut()) {
        fields.insert("identity".into(), identity_json(identity.store()));
    }
    serde_json::to_string_pretty(&config)
}

fn identity_json(store: &CertStore) -> serde_json::Value {
    let credentials = store.credentials();
    let leaf = credentials.leaf();
    let anchors: Vec<serde_json::Value> = store
        .trust_anchors()
        .iter()
        .map(|root| {
            json!({
                "subject": root.subject,
                "fingerprint": root.fingerprint,
                "notAfter": rfc3339(root.not_after),
            })
        })
        .collect();
    json!({
        "spiffeId": credentials.id(),
        "certificate": {
            "serial": leaf.serial,
            "fingerprint": leaf.fingerprint,
            "notBefore": rfc3339(leaf.not_before),
            "notAfter": rfc3339(leaf.not_after),
        },
        "trustAnchors": anchors,
    })
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody> {
    with_type(status, "text/plain; charset=utf-8", body.to_string())
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<BoxBody> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
