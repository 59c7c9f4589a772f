//! The live tap: pick a service and filters, watch its requests arrive. The page's
//! script opens `/dashboard/tap/events`, a server-sent event stream that relays the
//! API's `GET /api/v1/tap` JSON lines, one event each. A tap shows paths and callers,
//! so it needs the admin token from every browser, as the API's tap does.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::access::{sign_in_required, Viewer};
use crate::api::{encode, Items, Proxy};
use crate::html::{esc, layout, Section};
use crate::Dashboard;

/// How long one stream runs before the browser reconnects (`EventSource` does so by
/// itself); keeps a forgotten tab from tapping for ever.
const STREAM_FOR: &str = "5m";

/// The filters of a tap, as the page's form and the API name them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TapFilters {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl TapFilters {
    fn value(field: &Option<String>) -> &str {
        field.as_deref().map(str::trim).unwrap_or_default()
    }

    /// The query string of the API's tap for these filters.
    fn api_query(&self) -> String {
        let mut query = format!("duration={STREAM_FOR}");
        for (key, field) in [
            ("service", &self.service),
            ("namespace", &self.namespace),
            ("path", &self.path),
            ("method", &self.method),
            ("status", &self.status),
        ] {
            let value = Self::value(field);
            if !value.is_empty() {
                let _ = write!(query, "&{key}={}", encode(value));
            }
        }
        query
    }
}

/// `GET /dashboard/tap[?service=…]`
pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    viewer: Viewer,
    uri: Uri,
    Query(filters): Query<TapFilters>,
) -> Response {
    if !viewer.signed_in() {
        return sign_in_required(
            &uri.to_string(),
            "The live tap shows requests' paths and callers, so it needs the admin token, from this host too.",
        );
    }
    let services = dashboard
        .api
        .get::<Items<Proxy>>("/api/v1/proxies", viewer.bearer())
        .await
        .map(|p| {
            let mut names: Vec<(String, String)> = p
                .items
                .into_iter()
                .map(|p| (p.namespace, p.service))
                .collect();
            names.sort();
            names.dedup();
            names
        })
        .unwrap_or_default();
    let chosen = TapFilters::value(&filters.service);
    let namespace = match TapFilters::value(&filters.namespace) {
        "" => "default",
        ns => ns,
    };
    let mut options = String::new();
    for (ns, name) in &services {
        let selected = if name == chosen && ns == namespace {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            "<option value=\"{}\" data-namespace=\"{}\"{selected}>{}</option>",
            esc(name),
            esc(ns),
            esc(&format!("{name}.{ns}"))
        );
    }
    if !chosen.is_empty()
        && !services
            .iter()
            .any(|(ns, n)| n == chosen && ns == namespace)
    {
        let _ = write!(
            options,
            "<option value=\"{}\" selected>{}</option>",
            esc(chosen),
            esc(chosen)
        );
    }
    let stream = if chosen.is_empty() {
        String::new()
    } else {
        format!("/dashboard/tap/events?{}", filters.api_query())
    };
    let body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/dashboard/tap\">\
<label>Service <select name=\"service\" id=\"tap-service\" required><option value=\"\">choose…</option>{options}</select></label>\
<input type=\"hidden\" name=\"namespace\" value=\"{ns}\">\
<label>Path prefix <input name=\"path\" value=\"{path}\" placeholder=\"/api\"></label>\
<label>Method <input name=\"method\" value=\"{method}\" placeholder=\"GET\" size=\"6\"></label>\
<label>Status <input name=\"status\" value=\"{status}\" placeholder=\"500\" size=\"4\"></label>\
<button type=\"submit\">Tap</button></form>\
<p class=\"muted\" id=\"tap-state\" data-stream=\"{stream}\">{hint}</p>\
<table class=\"data tap\" id=\"tap-rows\"><thead><tr><th>Time</th><th>Direction</th><th>Workload</th><th>From</th>\
<th>Method</th><th>Authority</th><th>Path</th><th class=\"num\">Status</th><th class=\"num\">Latency</th><th>Route</th></tr></thead>\
<tbody></tbody></table><script src=\"/dashboard/assets/tap.js\" defer></script>",
        ns = esc(namespace),
        path = esc(TapFilters::value(&filters.path)),
        method = esc(TapFilters::value(&filters.method)),
        status = esc(TapFilters::value(&filters.status)),
        stream = esc(&stream),
        hint = if chosen.is_empty() {
            "Choose a service to watch its requests as they happen."
        } else {
            "Connecting…"
        },
    );
    layout(Section::Tap, "Live tap", true, &body)
}

/// `GET /dashboard/tap/events?service=…`: the API's tap as server-sent events.
pub(crate) async fn events(
    State(dashboard): State<Arc<Dashboard>>,
    viewer: Viewer,
    Query(filters): Query<TapFilters>,
) -> Response {
    let Some(token) = viewer.bearer() else {
        return (
            StatusCode::UNAUTHORIZED,
            "the tap needs the admin token: sign in",
        )
            .into_response();
    };
    if TapFilters::value(&filters.service).is_empty() {
        return (StatusCode::BAD_REQUEST, "choose a service").into_response();
    }
    let path = format!("/api/v1/tap?{}", filters.api_query());
    let response = match dashboard.api.open(&path, Some(token)).await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return (r.status(), "the control plane refused the tap").into_response(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    // JSON lines in, `data: LINE\n\n` out; a line split across frames waits for its end.
    let frames = response.into_body().into_data_stream();
    let events = frames
        .scan(Vec::<u8>::new(), |pending, frame| {
            let Ok(frame) = frame else {
                return futures_util::future::ready(None);
            };
            pending.extend_from_slice(&frame);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = line.trim_ascii();
                if !line.is_empty() {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\n\n");
                }
            }
            futures_util::future::ready(Some(Ok::<_, std::io::Error>(Bytes::from(out))))
        })
        .filter(|chunk| futures_util::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
    // A comment first, so the browser sees the stream open before the first request.
    let opening = futures_util::stream::once(async { Ok(Bytes::from_static(b": tap open\n\n")) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(opening.chain(events)))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
