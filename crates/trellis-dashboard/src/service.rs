//! One service: its golden signals and their charts over the last minutes (refreshed
//! live), its routes and the policies attached to it or its routes with their status
//! conditions, its workloads with their proxies' version, sync state and certificate
//! expiry, and the edges in and out.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use trellis_api::Kind;

use crate::access::{Reader, Viewer};
use crate::api::{encode, stat_path, ApiError, EdgeRow, Items, Proxy, StatRow, WINDOW};
use crate::chart::{line_chart, Axis, Series};
use crate::history::History;
use crate::html::{
    attr_url, badge, conditions, error_page, esc, expiry, html_response, layout, ms, percent,
    rate_class, rps, Section,
};
use crate::overview::serving;
use crate::Dashboard;

/// A workload certificate this close to its end is shown as a warning: renewal
/// happens at half of the lifetime, so one this old was not renewed.
pub const WORKLOAD_CERT_WARNING: Duration = Duration::from_secs(3600);

/// The kinds attached to a Service by `parentRefs`.
const ROUTE_KINDS: [Kind; 3] = [Kind::HTTPRoute, Kind::GRPCRoute, Kind::TCPRoute];
/// The kinds attached to a Service, or to one of its routes, by `targetRef`.
const POLICY_KINDS: [Kind; 3] = [
    Kind::BackendPolicy,
    Kind::AuthorizationPolicy,
    Kind::FaultInjection,
];

/// `GET /dashboard/services/{namespace}/{name}`
pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match render(&dashboard, &viewer, &namespace, &name).await {
        Ok(body) => layout(Section::Services, &name, viewer.signed_in(), &body),
        Err(e) => error_page(Section::Services, viewer.signed_in(), &e),
    }
}

/// `GET /dashboard/fragments/services/{namespace}/{name}`: the figures and charts.
pub(crate) async fn live_fragment(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match live(&dashboard, &viewer, &namespace, &name).await {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => html_response(
            StatusCode::BAD_GATEWAY,
            format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
        ),
    }
}

async fn render(
    dashboard: &Dashboard,
    viewer: &Viewer,
    namespace: &str,
    name: &str,
) -> Result<String, ApiError> {
    let token = viewer.bearer();
    let api = &dashboard.api;
    let edges_path = format!(
        "/api/v1/edges?service={}&namespace={}&window={WINDOW}",
        encode(name),
        encode(namespace)
    );
    let ns_query = format!("?namespace={}", encode(namespace));
    let workload_stat_path = stat_path("workload", None);
    let services_path = format!("/api/v1/resources/services{ns_query}");
    let workloads_path = format!("/api/v1/resources/workloads{ns_query}");
    let (live_html, proxies, services, workloads, workload_stats, edges) = tokio::join!(
        live(dashboard, viewer, namespace, name),
        api.get::<Items<Proxy>>("/api/v1/proxies", token),
        api.get::<Items<Value>>(&services_path, token),
        api.get::<Items<Value>>(&workloads_path, token),
        api.get::<Items<StatRow>>(&workload_stat_path, token),
        api.get::<Items<EdgeRow>>(&edges_path, token),
    );
    let mut routes = Vec::new();
    for kind in ROUTE_KINDS {
        let path = format!("/api/v1/resources/{}{ns_query}", kind.plural());
        let items = api.get::<Items<Value>>(&path, token).await?.items;
        routes.extend(
            items
                .into_iter()
                .filter(|r| attached_by_parent(r, namespace, name)),
        );
    }
    let route_names: Vec<&str> = routes
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    let mut policies = Vec::new();
    for kind in POLICY_KINDS {
        let path = format!("/api/v1/resources/{}{ns_query}", kind.plural());
        let items = api.get::<Items<Value>>(&path, token).await?.items;
        policies.extend(items.into_iter().filter(|p| {
            let target = p["spec"]["targetRef"]["name"].as_str().unwrap_or_default();
            target == name || route_names.contains(&target)
        }));
    }
    let proxies = proxies?.items;
    let proxies = serving(
        &proxies,
        &services?.items,
        &workloads?.items,
        namespace,
        name,
    );
    let mut out = format!(
        "<p class=\"subtitle\">namespace <b>{}</b> · <a href=\"/dashboard/tap?service={}&amp;namespace={}\">tap its requests</a></p>\
<div data-live=\"/dashboard/fragments/services/{}/{}\" data-every=\"5\">{}</div>",
        esc(namespace),
        attr_url(name),
        attr_url(namespace),
        attr_url(namespace),
        attr_url(name),
        live_html?
    );
    out.push_str(&workloads_table(&proxies, &workload_stats?.items));
    out.push_str(&resources_table(
        "Routes",
        "routes",
        &routes,
        "No route attaches to this service: requests go to its workloads as they come.",
    ));
    out.push_str(&resources_table(
        "Policies",
        "policies",
        &policies,
        "No policy targets this service or its routes.",
    ));
    out.push_str(&edges_tables(&edges?.items, namespace, name));
    Ok(out)
}

/// The cards and charts, which the page refreshes.
async fn live(
    dashboard: &Dashboard,
    viewer: &Viewer,
    namespace: &str,
    name: &str,
) -> Result<String, ApiError> {
    History::sample_if_due(dashboard).await;
    let rows = dashboard
        .api
        .get::<Items<StatRow>>(&stat_path("service", Some(name)), viewer.bearer())
        .await?
        .items;
    let stat = rows
        .into_iter()
        .find(|r| r.namespace == namespace)
        .unwrap_or_default();
    let points = dashboard.history.series(namespace, name);
    let times: Vec<_> = points.iter().map(|p| p.at).collect();
    let latency = line_chart(
        "Latency",
        &times,
        &[
            Series {
                label: "p50",
                class: "line-a",
                values: points.iter().map(|p| p.p50_ms).collect(),
            },
            Series {
                label: "p99",
                class: "line-b",
                values: points.iter().map(|p| p.p99_ms).collect(),
            },
        ],
        &Axis {
            format: |v| {
                if v < 10.0 {
                    format!("{v:.1}ms")
                } else {
                    format!("{v:.0}ms")
                }
            },
            min_top: 5.0,
            floor: None,
        },
    );
    let success = line_chart(
        "Success rate",
        &times,
        &[Series {
            label: "success",
            class: "line-c",
            values: points
                .iter()
                .map(|p| p.success_rate.map(|r| r * 100.0))
                .collect(),
        }],
        &Axis {
            format: |v| format!("{v:.0}%"),
            min_top: 100.0,
            floor: Some(80.0_f64.min(lowest(&points))),
        },
    );
    let traffic = line_chart(
        "Requests per second",
        &times,
        &[Series {
            label: "rps",
            class: "line-a",
            values: points.iter().map(|p| Some(p.requests_per_second)).collect(),
        }],
        &Axis {
            format: |v| format!("{v:.1}"),
            min_top: 4.0,
            floor: None,
        },
    );
    Ok(format!(
        "<div class=\"cards\" id=\"golden\">\
<div class=\"card stat\"><span class=\"label\">Success</span><span class=\"value {}\" id=\"success\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">Requests/s</span><span class=\"value\" id=\"rps\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">P50</span><span class=\"value\" id=\"p50\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">P99</span><span class=\"value\" id=\"p99\">{}</span></div></div>\
<div class=\"charts\">{latency}{success}{traffic}</div>",
        rate_class(stat.success_rate),
        percent(stat.success_rate),
        rps(stat.requests_per_second),
        ms(stat.p50_ms),
        ms(stat.p99_ms),
    ))
}

/// The lowest success rate in percent, so the axis shows a bad dip whole.
fn lowest(points: &[crate::history::Point]) -> f64 {
    points
        .iter()
        .filter_map(|p| p.success_rate)
        .map(|r| (r * 100.0 / 10.0).floor() * 10.0)
        .fold(100.0, f64::min)
}

/// Whether a route's `parentRefs` name the Service.
fn attached_by_parent(route: &Value, namespace: &str, name: &str) -> bool {
    let own_ns = route["metadata"]["namespace"].as_str().unwrap_or("default");
    route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| {
            p["name"].as_str() == Some(name)
                && p["namespace"].as_str().unwrap_or(own_ns) == namespace
        })
}

fn workloads_table(proxies: &[&Proxy], stats: &[StatRow]) -> String {
    let mut out = String::from(
        "<h2>Workloads</h2><table class=\"data\" id=\"workloads\"><thead><tr><th>Workload</th><th>Address</th>\
<th>Proxy version</th><th>Config</th><th>Sync</th><th class=\"num\">Success</th><th class=\"num\">RPS</th>\
<th>Certificate</th></tr></thead><tbody>",
    );
    for p in proxies {
        let stat = stats
            .iter()
            .find(|s| s.name == p.workload && s.namespace == p.namespace);
        let sync_class = match p.state.as_str() {
            "synced" => "ok",
            "pending" => "muted",
            _ => "bad",
        };
        let mut sync = badge(sync_class, &p.state);
        if let Some(error) = &p.last_error {
            let _ = write!(sync, "<div class=\"condition-error\">{}</div>", esc(error));
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>v{} (acked v{})</td><td>{sync}</td>\
<td class=\"num {}\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&p.workload),
            esc(&p.address),
            esc(&p.proxy_version),
            p.sent_version,
            p.acked_version,
            rate_class(stat.and_then(|s| s.success_rate)),
            percent(stat.and_then(|s| s.success_rate)),
            rps(stat.map_or(0.0, |s| s.requests_per_second)),
            expiry(p.certificate_expires.as_deref(), WORKLOAD_CERT_WARNING),
        );
    }
    if proxies.is_empty() {
        out.push_str(
            "<tr><td colspan=\"8\" class=\"muted\">No proxy serves this service.</td></tr>",
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Resources with their kind, conditions and a link to their YAML.
fn resources_table(title: &str, id: &str, items: &[Value], empty: &str) -> String {
    let mut out = format!(
        "<h2>{}</h2><table class=\"data\" id=\"{}\"><thead><tr><th>Kind</th><th>Name</th><th>Status</th></tr></thead><tbody>",
        esc(title),
        esc(id)
    );
    for r in items {
        out.push_str(&resource_row(r));
    }
    if items.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"3\" class=\"muted\">{}</td></tr>",
            esc(empty)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// One resource as a row: kind, linked name, conditions.
pub(crate) fn resource_row(r: &Value) -> String {
    let kind = r["kind"].as_str().unwrap_or_default();
    let meta = &r["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let namespace = meta["namespace"].as_str().unwrap_or("-");
    format!(
        "<tr><td>{}</td><td><a href=\"/dashboard/resources/{}/{}/{}\">{}</a></td><td>{}</td></tr>",
        esc(kind),
        attr_url(kind),
        attr_url(namespace),
        attr_url(name),
        esc(name),
        conditions(r)
    )
}

fn edges_tables(edges: &[EdgeRow], namespace: &str, name: &str) -> String {
    let inbound: Vec<&EdgeRow> = edges
        .iter()
        .filter(|e| e.destination == name && e.namespace == namespace)
        .collect();
    let outbound: Vec<&EdgeRow> = edges
        .iter()
        .filter(|e| e.source_service() == Some((namespace, name)))
        .collect();
    let table = |title: &str, id: &str, rows: &[&EdgeRow], inbound: bool| {
        let mut out = format!(
            "<h2>{title}</h2><table class=\"data\" id=\"{id}\"><thead><tr><th>{}</th><th>mTLS</th>\
<th class=\"num\">Success</th><th class=\"num\">RPS</th></tr></thead><tbody>",
            if inbound { "From" } else { "To" }
        );
        for e in rows {
            let peer = if inbound {
                match e.source_service() {
                    Some((ns, svc)) => format!(
                        "<a href=\"/dashboard/services/{}/{}\">{}</a> <span class=\"muted\">{}</span>",
                        attr_url(ns),
                        attr_url(svc),
                        esc(svc),
                        esc(&e.source)
                    ),
                    None => "<span class=\"muted\">(no identity)</span>".to_owned(),
                }
            } else {
                format!(
                    "<a href=\"/dashboard/services/{}/{}\">{}</a>",
                    attr_url(&e.namespace),
                    attr_url(&e.destination),
                    esc(&e.destination)
                )
            };
            let _ = write!(
                out,
                "<tr><td>{peer}</td><td>{}</td><td class=\"num {}\">{}</td><td class=\"num\">{}</td></tr>",
                if e.mtls { badge("ok", "mTLS") } else { badge("bad", "plaintext") },
                rate_class(e.success_rate),
                percent(e.success_rate),
                rps(e.requests_per_second),
            );
        }
        if rows.is_empty() {
            let _ = write!(
                out,
                "<tr><td colspan=\"4\" class=\"muted\">No calls in the last {WINDOW}.</td></tr>"
            );
        }
        out.push_str("</tbody></table>");
        out
    };
    format!(
        "<div class=\"split\"><div>{}</div><div>{}</div></div>",
        table("Inbound", "inbound", &inbound, true),
        table("Outbound", "outbound", &outbound, false)
    )
}
