//! The admin server: `/live`, `/ready`, `/metrics` and `/config` on the admin address.
//! Read-only; nothing here changes the proxy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
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
            shared.metrics.encode(),
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

/// `2026-11-05T14:03:00Z`: UTC, whole seconds.
fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
    }
}
