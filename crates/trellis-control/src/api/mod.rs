//! The control plane's HTTP API: what `trellis apply/get/delete/describe` and the
//! dashboard speak. JSON in and out; every error is `{"error": "one line"}` with a status
//! that says whose fault it is.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | `GET` | `/api/v1/resources/{kind}[?namespace=NS]` | `{"items": [Resource…]}`, by namespace then name |
//! | `GET` | `/api/v1/resources/{kind}/{namespace}/{name}` | the Resource, or 404 |
//! | `POST` | `/api/v1/apply` | `{"results": [{kind, namespace, name, action}]}` |
//! | `DELETE` | `/api/v1/resources/{kind}/{namespace}/{name}` | `{"deleted": Resource}`, or 404 |
//! | `GET` | `/api/v1/resources/{kind}/{namespace}/{name}/proxies` | `{"items": [{workload, state, serving, compiled…}]}`: the proxies holding it ([`usage`]) |
//! | `GET` | `/api/v1/proxies` | `{"items": [ProxyStatus…]}` |
//! | `GET` | `/api/v1/explain?from=ID&to=SERVICE[&namespace=NS&method=M&path=P&port=N&header=K:V]` | `{allowed, decidedBy, defaultAction, service, request, policies}` ([`explain`]) |
//! | `POST` | `/api/v1/tokens`, `/api/v1/ca/rotate`; `GET` `/api/v1/ca` | bootstrap tokens and the CA ([`identity`]) |
//! | `GET` | `/api/v1/stat?by=…`, `/api/v1/edges[?service=S]` | golden signals and who calls whom ([`stat`]) |
//! | `GET` | `/api/v1/tap?service=S…` | live request metadata as JSON lines; always needs the admin token ([`tap`]) |
//! | `GET` | `/api/v1/health` | `{"status": "ok", "revision": N, "proxyApi": URL}` |
//!
//! `{kind}` is any spelling [`Kind::from_cli`](trellis_api::Kind::from_cli) accepts
//! (`httproutes`, `HTTPRoute`, `svc`). Cluster-wide kinds (`MeshConfig`) take `-` as
//! their namespace in paths, as they do in store keys; see [`storage`]. An apply body
//! (YAML or JSON documents, any content type) may be up to 2 MiB.
//!
//! Resources are returned with a `status` computed on every read ([`status`]), never
//! stored. Writes go through [`write`](mod@write), which keeps `resourceVersion`,
//! `generation` and `creationTimestamp` right and never loses a concurrent update.
//!
//! Access (`auth.rs`): writes need `Authorization: Bearer <admin token>` from anyone;
//! reads are open to loopback peers and need the token from anywhere else; health is
//! open. The token lives in the data directory ([`token`]).

pub(crate) mod auth;
mod error;
mod explain;
mod explain_route;
mod handlers;
mod identity;
mod stat;
pub mod status;
pub mod storage;
mod tap;
pub mod token;
mod usage;
pub mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use self::error::ApiError;
use crate::ca::MeshCa;
use crate::registry::Registry;
use crate::store::Store;

/// Everything the API serves from.
#[derive(Clone)]
pub struct ApiState {
    /// Where resources live.
    pub store: Arc<dyn Store>,
    /// The connected proxies, for `GET /api/v1/proxies`.
    pub registry: Arc<Registry>,
    /// The bearer token writes (and reads from other hosts) must present; see
    /// [`token::load_or_create`]. An empty token refuses every request that needs one.
    pub admin_token: String,
    /// The gRPC URL proxies connect to, reported by `GET /api/v1/health` so sidecars
    /// given only the HTTP API's URL can find it.
    pub proxy_api: Option<String>,
    /// The CA: bootstrap tokens, trust anchors, rotation.
    pub ca: Arc<MeshCa>,
    /// This control plane's place among the replicas on its store; `None` when the API
    /// runs without one (tests).
    pub membership: Option<Arc<crate::leader::Membership>>,
    /// The proxies' metrics, for `trellis stat`; `None` when not collected.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Where `trellis tap` starts taps; `None` without proxy sessions.
    pub taps: Option<Arc<crate::push::TapHub>>,
}

/// The API's routes. Serve it with
/// `axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())`:
/// without the peer address every request is treated as coming from another host.
pub fn router(state: ApiState) -> Router {
    let token: Arc<str> = Arc::from(state.admin_token.as_str());
    let guarded = Router::new()
        .route("/api/v1/resources/{kind}", get(handlers::list))
        .route(
            "/api/v1/resources/{kind}/{namespace}/{name}",
            get(handlers::get_one).delete(handlers::delete),
        )
        .route(
            "/api/v1/resources/{kind}/{namespace}/{name}/proxies",
            get(usage::proxies_of),
        )
        .route("/api/v1/apply", post(handlers::apply))
        .route("/api/v1/proxies", get(handlers::proxies))
        .route("/api/v1/control-planes", get(handlers::control_planes))
        .route(
            "/api/v1/prometheus/targets",
            get(handlers::prometheus_targets),
        )
        .route("/api/v1/stat", get(stat::stat))
        .route("/api/v1/edges", get(stat::edges))
        .route("/api/v1/explain", get(explain::explain))
        .route("/api/v1/tokens", post(identity::create_token))
        .route("/api/v1/ca", get(identity::show))
        .route("/api/v1/ca/rotate", post(identity::rotate))
        .route_layer(axum::middleware::from_fn_with_state(token, auth::require));
    Router::new()
        .route("/api/v1/health", get(handlers::health))
        // Checks the admin token itself: a tap needs it from every host.
        .route("/api/v1/tap", get(tap::tap))
        .merge(guarded)
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::wrong_method)
        .with_state(Arc::new(state))
}
