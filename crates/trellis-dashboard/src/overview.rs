//! The overview: every service with its workloads, golden signals, mTLS coverage and
//! health. Search (`?q=`) and pagination (`?page=`) happen on the server, so a page
//! carries [`PAGE_SIZE`] rows however many services the mesh has.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use crate::access::{Reader, Viewer};
use crate::api::{stat_path, ApiError, EdgeRow, Items, Proxy, StatRow, WINDOW};
use crate::html::{
    attr_url, badge, error_page, esc, html_response, layout, ms, percent, rate_class, rps, Section,
};
use crate::Dashboard;

/// Rows on one page of the overview.
pub const PAGE_SIZE: usize = 50;

/// One service as the overview shows it.
#[derive(Debug, Clone, Default)]
pub struct ServiceSummary {
    pub namespace: String,
    pub name: String,
    /// Its proxies' workloads.
    pub workloads: Vec<String>,
    pub stat: StatRow,
    /// Share of the requests it received that came over mTLS; `None` without requests.
    pub mtls_share: Option<f64>,
    pub health: Health,
}

/// A service's health at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Health {
    /// Every proxy synced and at least 99 % success.
    Healthy,
    /// A proxy out of sync or disconnected, or 95–99 % success.
    Degraded,
    /// Under 95 % success.
    Failing,
    /// No proxy serves it.
    #[default]
    NoWorkloads,
}

impl Health {
    fn badge(self) -> String {
        match self {
            Health::Healthy => badge("ok", "healthy"),
            Health::Degraded => badge("warn", "degraded"),
            Health::Failing => badge("bad", "failing"),
            Health::NoWorkloads => badge("muted", "no workloads"),
        }
    }

    fn of(proxies: &[&Proxy], success: Option<f64>) -> Health {
        if proxies.is_empty() {
            return Health::NoWorkloads;
        }
        match success {
            Some(r) if r < 0.95 => return Health::Failing,
            Some(r) if r < 0.99 => return Health::Degraded,
            _ => {}
        }
        if proxies.iter().all(|p| p.state == "synced") {
            Health::Healthy
        } else {
            Health::Degraded
        }
    }
}

/// What the overview reads from the API, asked all at once.
pub(crate) struct MeshView {
    pub stats: Vec<StatRow>,
    pub proxies: Vec<Proxy>,
    pub services: Vec<Value>,
    pub workloads: Vec<Value>,
    pub edges: Vec<EdgeRow>,
}

/// The proxies that serve a service: those registered under its name, and those of
/// the workloads its selector picks (`ratings-v1` selects `app=ratings,version=v1`,
/// which registered as `ratings`).
pub(crate) fn serving<'a>(
    proxies: &'a [Proxy],
    services: &[Value],
    workloads: &[Value],
    namespace: &str,
    name: &str,
) -> Vec<&'a Proxy> {
    let in_namespace =
        |r: &Value| r["metadata"]["namespace"].as_str().unwrap_or("default") == namespace;
    let selector = services
        .iter()
        .find(|s| in_namespace(s) && s["metadata"]["name"] == name)
        .and_then(|s| s["spec"]["selector"].as_object())
        .filter(|selector| !selector.is_empty());
    let selected: Vec<&str> = match selector {
        Some(selector) => workloads
            .iter()
            .filter(|w| in_namespace(w))
            .filter(|w| {
                selector
                    .iter()
                    .all(|(key, value)| &w["metadata"]["labels"][key] == value)
            })
            .filter_map(|w| w["metadata"]["name"].as_str())
            .collect(),
        None => Vec::new(),
    };
    proxies
        .iter()
        .filter(|p| p.namespace == namespace)
        .filter(|p| p.service == name || selected.contains(&p.workload.as_str()))
        .collect()
}

impl MeshView {
    pub(crate) async fn read(dashboard: &Dashboard, viewer: &Viewer) -> Result<Self, ApiError> {
        let token = viewer.bearer();
        let api = &dashboard.api;
        let stat_path = stat_path("service", None);
        let edges_path = format!("/api/v1/edges?window={WINDOW}");
        let (stats, proxies, services, workloads, edges) = tokio::join!(
            api.get::<Items<StatRow>>(&stat_path, token),
            api.get::<Items<Proxy>>("/api/v1/proxies", token),
            api.get::<Items<Value>>("/api/v1/resources/services", token),
            api.get::<Items<Value>>("/api/v1/resources/workloads", token),
            api.get::<Items<EdgeRow>>(&edges_path, token),
        );
        Ok(Self {
            stats: stats?.items,
            proxies: proxies?.items,
            services: services?.items,
            workloads: workloads?.items,
            edges: edges?.items,
        })
    }

    /// Every service that is declared, has a proxy, or received requests, by namespace
    /// then name.
    pub(crate) fn summaries(&self) -> Vec<ServiceSummary> {
        let mut keys: BTreeMap<(String, String), ()> = BTreeMap::new();
        for s in &self.services {
            let meta = &s["metadata"];
            let namespace = meta["namespace"].as_str().unwrap_or("default");
            if let Some(name) = meta["name"].as_str() {
                keys.insert((namespace.to_owned(), name.to_owned()), ());
            }
        }
        for p in &self.proxies {
            keys.insert((p.namespace.clone(), p.service.clone()), ());
        }
        for r in &self.stats {
            keys.insert((r.namespace.clone(), r.name.clone()), ());
        }
        keys.into_keys()
            .map(|(namespace, name)| {
                let proxies = serving(
                    &self.proxies,
                    &self.services,
                    &self.workloads,
                    &namespace,
                    &name,
                );
                let stat = self
                    .stats
                    .iter()
                    .find(|r| r.name == name && r.namespace == namespace)
                    .cloned()
                    .unwrap_or_else(|| StatRow {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        ..StatRow::default()
                    });
                let (mut all, mut mtls) = (0.0, 0.0);
                for e in self
                    .edges
                    .iter()
                    .filter(|e| e.destination == name && e.namespace == namespace)
                {
                    all += e.requests;
                    if e.mtls {
                        mtls += e.requests;
                    }
                }
                ServiceSummary {
                    health: Health::of(&proxies, stat.success_rate),
                    workloads: proxies.iter().map(|p| p.workload.clone()).collect(),
                    mtls_share: (all > 0.0).then(|| mtls / all),
                    stat,
                    namespace,
                    name,
                }
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct OverviewQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /dashboard/`
pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let view = match MeshView::read(&dashboard, &viewer).await {
        Ok(view) => view,
        Err(e) => return error_page(Section::Services, viewer.signed_in(), &e),
    };
    let q = query.q.unwrap_or_default();
    let table = render(&view.summaries(), &q, query.page.unwrap_or(1));
    let body = format!(
        "<form class=\"search\" method=\"get\" action=\"/dashboard/\">\
<input type=\"search\" name=\"q\" id=\"search\" value=\"{}\" placeholder=\"Search services, namespaces or workloads\">\
<button type=\"submit\">Search</button></form>\
<div data-live=\"/dashboard/fragments/services?q={}&amp;page={}\" data-every=\"10\">{table}</div>",
        esc(&q),
        attr_url(&q),
        query.page.unwrap_or(1),
    );
    layout(Section::Services, "Services", viewer.signed_in(), &body)
}

/// `GET /dashboard/fragments/services?q=&page=`: the table alone, for live refresh.
pub(crate) async fn fragment(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
    Query(query): Query<OverviewQuery>,
) -> Response {
    match MeshView::read(&dashboard, &viewer).await {
        Ok(view) => html_response(
            axum::http::StatusCode::OK,
            render(
                &view.summaries(),
                &query.q.unwrap_or_default(),
                query.page.unwrap_or(1),
            ),
        ),
        Err(e) => html_response(
            axum::http::StatusCode::BAD_GATEWAY,
            format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
        ),
    }
}

/// The totals, the table of page `page` (from 1) of the services matching `q` (a
/// case-insensitive part of the name, namespace or a workload), and the pager.
pub fn render(all: &[ServiceSummary], q: &str, page: usize) -> String {
    let needle = q.trim().to_lowercase();
    let matching: Vec<&ServiceSummary> = all
        .iter()
        .filter(|s| {
            needle.is_empty()
                || s.name.to_lowercase().contains(&needle)
                || s.namespace.to_lowercase().contains(&needle)
                || s.workloads
                    .iter()
                    .any(|w| w.to_lowercase().contains(&needle))
        })
        .collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let workloads: usize = all.iter().map(|s| s.workloads.len()).sum();
    let total_rps: f64 = all.iter().map(|s| s.stat.requests_per_second).sum();
    let unhealthy = all
        .iter()
        .filter(|s| matches!(s.health, Health::Degraded | Health::Failing))
        .count();
    let mut out = format!(
        "<div class=\"cards\">\
<div class=\"card stat\"><span class=\"label\">Services</span><span class=\"value\" id=\"total-services\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">Workloads</span><span class=\"value\">{workloads}</span></div>\
<div class=\"card stat\"><span class=\"label\">Requests/s received</span><span class=\"value\">{}</span></div>\
<div class=\"card stat\"><span class=\"label\">Degraded or failing</span><span class=\"value {}\">{unhealthy}</span></div>\
</div>",
        all.len(),
        rps(total_rps),
        if unhealthy > 0 { "bad" } else { "ok" },
    );
    out.push_str(
        "<table class=\"data\" id=\"services\"><thead><tr><th>Service</th><th>Namespace</th>\
<th>Workloads</th><th class=\"num\">Success</th><th class=\"num\">RPS</th><th class=\"num\">P50</th>\
<th class=\"num\">P99</th><th class=\"num\">mTLS</th><th>Health</th></tr></thead><tbody>",
    );
    for s in matching.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
        let mut names: Vec<String> = s.workloads.iter().take(3).map(|w| esc(w)).collect();
        if s.workloads.len() > 3 {
            names.push(format!("+{} more", s.workloads.len() - 3));
        }
        let _ = write!(
            out,
            "<tr data-service=\"{ns}/{name}\"><td><a href=\"/dashboard/services/{uns}/{uname}\">{name}</a></td>\
<td>{ns}</td><td class=\"workloads\"><span class=\"count\">{count}</span> {names}</td>\
<td class=\"num success {rc}\">{success}</td><td class=\"num rps\">{rps}</td><td class=\"num p50\">{p50}</td>\
<td class=\"num p99\">{p99}</td><td class=\"num mtls {mc}\">{mtls}</td><td>{health}</td></tr>",
            ns = esc(&s.namespace),
            name = esc(&s.name),
            uns = attr_url(&s.namespace),
            uname = attr_url(&s.name),
            count = s.workloads.len(),
            names = names.join(", "),
            rc = rate_class(s.stat.success_rate),
            success = percent(s.stat.success_rate),
            rps = rps(s.stat.requests_per_second),
            p50 = ms(s.stat.p50_ms),
            p99 = ms(s.stat.p99_ms),
            mc = match s.mtls_share {
                Some(share) if share < 1.0 => "warn",
                Some(_) => "ok",
                None => "muted",
            },
            mtls = percent(s.mtls_share),
            health = s.health.badge(),
        );
    }
    if matching.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"9\" class=\"muted\">No service matches “{}”.</td></tr>",
            esc(q)
        );
    }
    out.push_str("</tbody></table>");
    let link = |p: usize, text: &str| {
        format!(
            "<a href=\"/dashboard/?q={}&amp;page={p}\">{text}</a>",
            attr_url(q)
        )
    };
    let _ = write!(
        out,
        "<nav class=\"pager\">{} <span id=\"page-of\">page {page} of {pages} · {} services</span> {}</nav>",
        if page > 1 { link(page - 1, "← previous") } else { String::new() },
        matching.len(),
        if page < pages { link(page + 1, "next →") } else { String::new() },
    );
    out
}
