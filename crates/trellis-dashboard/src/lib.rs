//! The Trellis dashboard: the web UI `trellis control` serves on its HTTP port under
//! `/dashboard/`. Server-rendered HTML, inline SVG charts and graph, and two small
//! hand-written scripts (live refresh and the tap's event stream), all inside the
//! binary, so it builds with `cargo build` alone.
//!
//! It owns the pages and nothing else: every figure and object comes from the control
//! plane's HTTP API ([`api`]), asked over loopback, never from the control plane's store
//! or internals; this crate does not depend on `trellis-control`. It never changes the
//! mesh: every API call it makes is a read, and [`access`] keeps the API's rule that
//! reads from other hosts, and every tap, need the admin token.
//!
//! | path | page |
//! | --- | --- |
//! | `/dashboard/` | services: workloads, golden signals, mTLS coverage, health; `?q=` search, `?page=` |
//! | `/dashboard/services/{namespace}/{name}` | one service: routes, policies, workloads, edges, live charts |
//! | `/dashboard/topology` | who calls whom, as a layered graph |
//! | `/dashboard/tap` | live requests of a service, streamed as server-sent events |
//! | `/dashboard/config`, `/dashboard/resources/{kind}/{namespace}/{name}` | resources, their YAML and status |
//! | `/dashboard/identity` | trust anchors, the signer and workload certificates with their expiry |

pub mod access;
pub mod api;
mod chart;
mod config;
pub mod history;
pub mod html;
mod overview;
mod service;
mod tap;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;

use self::access::Access;
use self::api::ApiClient;
use self::history::History;

/// What every page handler shares.
pub struct Dashboard {
    api: ApiClient,
    access: Access,
    history: History,
}

impl Dashboard {
    /// A dashboard over the API listening on `api_listen`.
    pub fn new(api_listen: SocketAddr) -> Self {
        Self {
            api: ApiClient::new(api_listen),
            access: Access::default(),
            history: History::default(),
        }
    }
}

/// The dashboard's routes, for the listener of the API at `api_listen`. Serve them with
/// connect info (`into_make_service_with_connect_info::<SocketAddr>()`): without the
/// peer address every browser counts as remote and must sign in.
pub fn router(api_listen: SocketAddr) -> Router {
    let dashboard = Arc::new(Dashboard::new(api_listen));
    // The charts' history fills whether or not anyone is looking; the task ends once
    // the routes, and so the dashboard, are dropped.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(history::keep_sampling(Arc::downgrade(&dashboard)));
    }
    routes(dashboard)
}

fn routes(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(overview::page))
        .route("/dashboard/fragments/services", get(overview::fragment))
        .route("/dashboard/services/{namespace}/{name}", get(service::page))
        .route(
            "/dashboard/fragments/services/{namespace}/{name}",
            get(service::live_fragment),
        )
        .route("/dashboard/topology", get(topology::page))
        .route("/dashboard/fragments/topology", get(topology::fragment))
        .route("/dashboard/tap", get(tap::page))
        .route("/dashboard/tap/events", get(tap::events))
        .route("/dashboard/config", get(config::resources_page))
        .route(
            "/dashboard/resources/{kind}/{namespace}/{name}",
            get(config::resource_page),
        )
        .route("/dashboard/identity", get(config::identity_page))
        .route(
            "/dashboard/sign-in",
            get(access::sign_in_page).post(access::sign_in),
        )
        .route("/dashboard/sign-out", post(access::sign_out))
        .route(
            "/dashboard/assets/style.css",
            get(|| asset("text/css", html::STYLE)),
        )
        .route(
            "/dashboard/assets/live.js",
            get(|| asset("text/javascript", html::LIVE_JS)),
        )
        .route(
            "/dashboard/assets/tap.js",
            get(|| asset("text/javascript", html::TAP_JS)),
        )
        .with_state(dashboard)
}

async fn asset(content_type: &'static str, text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
}

#[cfg(test)]
mod tests;
