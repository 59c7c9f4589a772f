//! Config and identity: every resource with its status conditions, one resource as
//! YAML, and the mesh CA's trust anchors, signer and workload certificates with their
//! expiry, warned about when near.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value;
use trellis_api::Kind;

use crate::access::Reader;
use crate::api::{encode, Items, Proxy};
use crate::html::{badge, conditions, error_page, esc, expiry, layout, Section};
use crate::service::{resource_row, WORKLOAD_CERT_WARNING};
use crate::Dashboard;

/// A CA certificate this close to its end is shown as a warning: time to rotate.
const CA_CERT_WARNING: Duration = Duration::from_secs(30 * 86_400);
/// Rows shown per kind; the rest are counted (workloads can be thousands).
const ROWS_PER_KIND: usize = 200;

/// `GET /dashboard/config`
pub(crate) async fn resources_page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
) -> Response {
    let lists = futures_util::future::join_all(Kind::ALL.map(|kind| {
        let path = format!("/api/v1/resources/{}", kind.plural());
        let api = &dashboard.api;
        let token = viewer.bearer();
        async move { (kind, api.get::<Items<Value>>(&path, token).await) }
    }))
    .await;
    let mut body = String::from("<nav class=\"kinds\">");
    for (kind, list) in &lists {
        let count = list.as_ref().map_or(0, |l| l.items.len());
        let _ = write!(
            body,
            "<a href=\"#{}\">{} <span class=\"count\">{count}</span></a>",
            kind.plural(),
            kind.name()
        );
    }
    body.push_str("</nav>");
    for (kind, list) in lists {
        let items = match list {
            Ok(list) => list.items,
            Err(e) => return error_page(Section::Config, viewer.signed_in(), &e),
        };
        let _ = write!(
            body,
            "<h2 id=\"{}\">{}</h2><table class=\"data\" data-kind=\"{}\"><thead><tr><th>Kind</th><th>Name</th><th>Status</th>\
<th>Namespace</th></tr></thead><tbody>",
            kind.plural(),
            kind.name(),
            kind.name()
        );
        for r in items.iter().take(ROWS_PER_KIND) {
            // The shared row, with the namespace after it.
            let row = resource_row(r);
            let namespace = r["metadata"]["namespace"].as_str().unwrap_or("-");
            let _ = write!(
                body,
                "{}<td>{}</td></tr>",
                row.trim_end_matches("</tr>"),
                esc(namespace)
            );
        }
        if items.len() > ROWS_PER_KIND {
            let _ = write!(
                body,
                "<tr><td colspan=\"4\" class=\"muted\">and {} more; <code>trellis get {}</code> lists them all</td></tr>",
                items.len() - ROWS_PER_KIND,
                kind.plural()
            );
        }
        if items.is_empty() {
            body.push_str("<tr><td colspan=\"4\" class=\"muted\">none</td></tr>");
        }
        body.push_str("</tbody></table>");
    }
    layout(Section::Config, "Config", viewer.signed_in(), &body)
}

/// `GET /dashboard/resources/{kind}/{namespace}/{name}`
pub(crate) async fn resource_page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let path = format!(
        "/api/v1/resources/{}/{}/{}",
        encode(&kind),
        encode(&namespace),
        encode(&name)
    );
    let resource = match dashboard.api.get::<Value>(&path, viewer.bearer()).await {
        Ok(r) => r,
        Err(e) => return error_page(Section::Config, viewer.signed_in(), &e),
    };
    let yaml = serde_saphyr::to_string(&resource)
        .unwrap_or_else(|e| format!("# cannot show as YAML: {e}"));
    let mut rows = String::new();
    for c in resource["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = |key: &str| esc(c[key].as_str().unwrap_or_default());
        let ok = c["status"].as_str() == Some("True");
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text("type"),
            badge(
                if ok { "ok" } else { "bad" },
                c["status"].as_str().unwrap_or("?")
            ),
            text("reason"),
            text("message"),
            text("lastTransitionTime"),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"muted\">no conditions</td></tr>");
    }
    let body = format!(
        "<p class=\"subtitle\">{kind} in namespace <b>{namespace}</b> · {badges}</p>\
<h2>Status</h2><table class=\"data\" id=\"conditions\"><thead><tr><th>Condition</th><th>Status</th><th>Reason</th>\
<th>Message</th><th>Since</th></tr></thead><tbody>{rows}</tbody></table>\
<h2>YAML</h2><pre class=\"yaml\" id=\"yaml\">{yaml}</pre>",
        kind = esc(resource["kind"].as_str().unwrap_or(&kind)),
        namespace = esc(&namespace),
        badges = conditions(&resource),
        yaml = esc(&yaml),
    );
    layout(Section::Config, &name, viewer.signed_in(), &body)
}

/// `GET /dashboard/identity`
pub(crate) async fn identity_page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
) -> Response {
    let token = viewer.bearer();
    let (ca, proxies) = tokio::join!(
        dashboard.api.get::<Value>("/api/v1/ca", token),
        dashboard.api.get::<Items<Proxy>>("/api/v1/proxies", token),
    );
    let (ca, proxies) = match (ca, proxies) {
        (Ok(ca), Ok(proxies)) => (ca, proxies.items),
        (Err(e), _) | (_, Err(e)) => return error_page(Section::Identity, viewer.signed_in(), &e),
    };
    let rotation = &ca["rotation"];
    let phase = rotation["phase"].as_str().unwrap_or("idle");
    let mut body = format!(
        "<div class=\"cards\"><div class=\"card stat\"><span class=\"label\">Trust domain</span><span class=\"value small\" id=\"trust-domain\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">Trust anchors</span><span class=\"value\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">Rotation</span><span class=\"value small\">{}</span></div></div>",
        esc(ca["trustDomain"].as_str().unwrap_or_default()),
        ca["trustAnchors"].as_array().map_or(0, Vec::len),
        badge(if phase == "failed" { "bad" } else if matches!(phase, "idle" | "done") { "ok" } else { "warn" }, phase),
    );
    if let Some(error) = rotation["error"].as_str() {
        let _ = write!(
            body,
            "<p class=\"error\">Rotation failed: {}</p>",
            esc(error)
        );
    }
    body.push_str(
        "<h2>Certificate authority</h2><table class=\"data\" id=\"ca-certs\"><thead><tr><th>Role</th><th>Subject</th>\
<th>Fingerprint</th><th>Valid from</th><th>Valid until</th><th>Expiry</th></tr></thead><tbody>",
    );
    let anchors = ca["trustAnchors"].as_array().cloned().unwrap_or_default();
    let certs = anchors
        .iter()
        .map(|c| ("trust anchor", c))
        .chain(std::iter::once(("signer", &ca["signer"])));
    for (role, c) in certs {
        let text = |key: &str| esc(c[key].as_str().unwrap_or_default());
        let _ = write!(
            body,
            "<tr><td class=\"nowrap\">{role}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"nowrap\">{}</td>\
<td class=\"nowrap\">{}</td><td>{}</td></tr>",
            text("subject"),
            text("fingerprint"),
            text("notBefore"),
            text("notAfter"),
            expiry(c["notAfter"].as_str(), CA_CERT_WARNING),
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(
        "<h2>Workload certificates</h2><table class=\"data\" id=\"workload-certs\"><thead><tr><th>Workload</th>\
<th>Identity</th><th>Valid until</th><th>Expiry</th></tr></thead><tbody>",
    );
    for p in &proxies {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"nowrap\">{}</td><td>{}</td></tr>",
            esc(&p.workload),
            esc(&p.identity),
            esc(p.certificate_expires.as_deref().unwrap_or("-")),
            expiry(p.certificate_expires.as_deref(), WORKLOAD_CERT_WARNING),
        );
    }
    if proxies.is_empty() {
        body.push_str("<tr><td colspan=\"4\" class=\"muted\">No proxy is connected.</td></tr>");
    }
    body.push_str("</tbody></table>");
    layout(Section::Identity, "Identity", viewer.signed_in(), &body)
}
