//! The dashboard against a stand-in for the control plane's API on a loopback port:
//! who may see what, escaping, and an overview of 500 services.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::api::StatRow;
use crate::overview::{render, Health, ServiceSummary, PAGE_SIZE};

const TOKEN: &str = "the-admin-token";

/// A stand-in API: two services, one of them with a name that needs escaping, and a
/// tap that checks the token as the real one does.
async fn fake_api() -> SocketAddr {
    let stat = json!({"by": "service", "windowSeconds": 60.0, "items": [
        {"name": "web", "namespace": "default", "requestsPerSecond": 10.0, "successRate": 0.995, "p50Ms": 2.25, "p95Ms": 5.0, "p99Ms": 9.0},
        {"name": "<script>x</script>", "namespace": "default", "requestsPerSecond": 0.0}
    ]});
    let proxies = json!({"items": [
        {"workload": "web-1", "namespace": "default", "service": "web", "state": "synced", "proxyVersion": "0.1.0",
         "identity": "spiffe://trellis.local/ns/default/sa/web", "certificateExpires": "2099-01-01T00:00:00Z"}
    ]});
    let edges = json!({"windowSeconds": 60.0, "items": [
        {"source": "spiffe://trellis.local/ns/default/sa/loadgen", "destination": "web", "namespace": "default",
         "mtls": true, "requests": 600.0, "requestsPerSecond": 10.0, "successRate": 1.0}
    ]});
    let tap = |headers: HeaderMap| async move {
        match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            Some(v) if v == format!("Bearer {TOKEN}") => StatusCode::OK.into_response(),
            Some(_) => StatusCode::FORBIDDEN.into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    };
    let api = Router::new()
        .route("/api/v1/stat", get(move || async move { Json(stat) }))
        .route("/api/v1/proxies", get(move || async move { Json(proxies) }))
        .route("/api/v1/edges", get(move || async move { Json(edges) }))
        .route("/api/v1/resources/{kind}", get(resources))
        .route(
            "/api/v1/ca",
            get(|| async {
                Json(
                    json!({"trustDomain": "trellis.local", "rotation": {"phase": "idle"},
                    "signer": {"subject": "CN=root", "notAfter": "2099-01-01T00:00:00Z"},
                    "trustAnchors": [{"subject": "CN=root", "notAfter": "2099-01-01T00:00:00Z"}]}),
                )
            }),
        )
        .route("/api/v1/tap", get(tap));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, api).await });
    addr
}

/// One HTTPRoute for web whose backend is missing; no other resources.
async fn resources(
    axum::extract::Path(kind): axum::extract::Path<String>,
) -> Json<serde_json::Value> {
    if kind != "httproutes" {
        return Json(json!({"items": []}));
    }
    Json(json!({"items": [{
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web-split", "namespace": "default"},
        "spec": {"parentRefs": [{"kind": "Service", "name": "web"}]},
        "status": {"conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
             "message": "Service default/web-v3 does not exist"}
        ]}
    }]}))
}

/// `GET path` from a browser at `peer`, with the dashboard's cookie when given.
async fn get_page(
    api: SocketAddr,
    peer: &str,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = cookie {
        request = request.header(header::COOKIE, format!("trellis_dashboard_token={token}"));
    }
    let mut request = request.body(Body::empty()).expect("request");
    let peer: SocketAddr = peer.parse().expect("peer address");
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = crate::router(api)
        .oneshot(request)
        .await
        .expect("an answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn reads_are_open_to_loopback_and_need_the_token_from_elsewhere() {
    let api = fake_api().await;
    let (status, html) = get_page(api, "127.0.0.1:50000", "/dashboard/", None).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">web</a>"), "{html}");
    assert!(
        html.contains("99.50%") && html.contains("10.0") && html.contains("2.2ms"),
        "{html}"
    );

    let (status, html) = get_page(api, "192.0.2.7:50000", "/dashboard/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        html.contains("name=\"token\"") && !html.contains(">web</a>"),
        "{html}"
    );

    let (status, _) = get_page(
        api,
        "192.0.2.7:50000",
        "/dashboard/topology",
        Some("a-guess"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, html) = get_page(api, "192.0.2.7:50000", "/dashboard/topology", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("data-edge=\"loadgen→web\""), "{html}");
}

#[tokio::test]
async fn the_tap_needs_the_token_even_from_loopback() {
    let api = fake_api().await;
    let (status, html) = get_page(api, "127.0.0.1:50000", "/dashboard/tap?service=web", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("name=\"token\""), "{html}");
    let (status, html) = get_page(
        api,
        "127.0.0.1:50000",
        "/dashboard/tap?service=web",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("/dashboard/tap/events?duration=5m&amp;service=web"),
        "{html}"
    );
}

#[tokio::test]
async fn signing_in_checks_the_token_with_the_api() {
    let api = fake_api().await;
    let post = |form: &'static str| {
        let mut request = Request::post("/dashboard/sign-in")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .expect("request");
        request.extensions_mut().insert(ConnectInfo(
            "192.0.2.7:50000".parse::<SocketAddr>().expect("peer"),
        ));
        crate::router(api).oneshot(request)
    };
    let wrong = post("token=nope&next=%2Fdashboard%2Ftopology")
        .await
        .expect("an answer");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let right = post("token=the-admin-token&next=%2Fdashboard%2Ftopology")
        .await
        .expect("an answer");
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()[header::LOCATION], "/dashboard/topology");
    let cookie = right.headers()[header::SET_COOKIE].to_str().expect("ascii");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test]
async fn names_from_the_mesh_are_escaped() {
    let api = fake_api().await;
    let (_, html) = get_page(api, "127.0.0.1:50000", "/dashboard/", None).await;
    assert!(!html.contains("<script>x"), "{html}");
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
}

#[tokio::test]
async fn the_service_page_shows_a_route_and_its_error() {
    let api = fake_api().await;
    let (status, html) = get_page(
        api,
        "127.0.0.1:50000",
        "/dashboard/services/default/web",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">web-split</a>"), "{html}");
    assert!(
        html.contains("BackendNotFound: Service default/web-v3 does not exist"),
        "{html}"
    );
    assert!(html.contains("web-1") && html.contains("synced"), "{html}");
}

#[tokio::test]
async fn no_page_has_a_control_that_changes_the_mesh() {
    let api = fake_api().await;
    for path in [
        "/dashboard/",
        "/dashboard/services/default/web",
        "/dashboard/topology",
        "/dashboard/config",
        "/dashboard/identity",
        "/dashboard/tap?service=web",
    ] {
        let (status, html) = get_page(api, "127.0.0.1:50000", path, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        // Forms only read (GET) or sign in and out of the dashboard itself.
        for form in html.split("<form").skip(1) {
            let head = form.split('>').next().unwrap_or_default();
            let post = head.contains("method=\"post\"");
            let own = head.contains("/dashboard/sign-in") || head.contains("/dashboard/sign-out");
            assert!(!post || own, "{path}: <form{head}>");
        }
    }
}

#[test]
fn a_service_is_served_by_the_workloads_its_selector_picks() {
    let proxy = |workload: &str| crate::api::Proxy {
        workload: workload.into(),
        namespace: "default".into(),
        service: "ratings".into(),
        ..Default::default()
    };
    let proxies = [proxy("ratings-a"), proxy("ratings-b")];
    let services = [
        json!({"metadata": {"name": "ratings-v2", "namespace": "default"},
        "spec": {"selector": {"app": "ratings", "version": "v2"}}}),
    ];
    let workload = |name: &str, version: &str| {
        json!({"metadata": {"name": name, "namespace": "default",
            "labels": {"app": "ratings", "version": version}}})
    };
    let workloads = [workload("ratings-a", "v1"), workload("ratings-b", "v2")];
    let names =
        |ps: Vec<&crate::api::Proxy>| ps.iter().map(|p| p.workload.clone()).collect::<Vec<_>>();
    let serving = crate::overview::serving;
    assert_eq!(
        names(serving(
            &proxies,
            &services,
            &workloads,
            "default",
            "ratings-v2"
        )),
        ["ratings-b"]
    );
    assert_eq!(
        names(serving(
            &proxies, &services, &workloads, "default", "ratings"
        )),
        ["ratings-a", "ratings-b"]
    );
    assert!(serving(&proxies, &services, &workloads, "shop", "ratings").is_empty());
}

fn summaries(n: usize) -> Vec<ServiceSummary> {
    (0..n)
        .map(|i| ServiceSummary {
            namespace: format!("team-{}", i % 7),
            name: format!("svc-{i:03}"),
            workloads: vec![format!("svc-{i:03}-a"), format!("svc-{i:03}-b")],
            stat: StatRow {
                requests_per_second: i as f64,
                success_rate: Some(1.0),
                ..StatRow::default()
            },
            mtls_share: Some(1.0),
            health: Health::Healthy,
        })
        .collect()
}

#[test]
fn an_overview_of_500_services_shows_one_page_at_a_time() {
    let all = summaries(500);
    let html = render(&all, "", 1);
    assert_eq!(html.matches("<tr data-service=").count(), PAGE_SIZE);
    assert!(html.contains("page 1 of 10 · 500 services"), "{html}");
    assert!(html.contains("svc-000") && !html.contains("svc-050"));
    // The page stays small: a few hundred bytes a row, not the whole mesh.
    assert!(html.len() < 60_000, "{} bytes", html.len());

    let last = render(&all, "", 10);
    assert!(last.contains("svc-499") && last.contains("page 10 of 10"));
    let past_the_end = render(&all, "", 99);
    assert!(past_the_end.contains("page 10 of 10"));

    let found = render(&all, "SVC-12", 1);
    // svc-120 … svc-129, whatever the case of the search
    assert_eq!(found.matches("<tr data-service=").count(), 10, "{found}");
    let by_workload = render(&all, "svc-321-b", 1);
    assert_eq!(by_workload.matches("<tr data-service=").count(), 1);
    let none = render(&all, "<nothing>", 1);
    assert!(none.contains("No service matches “&lt;nothing&gt;”."));
}

#[test]
fn serves_its_assets() {
    assert!(crate::html::STYLE.contains("--ok"));
    assert!(
        crate::html::LIVE_JS.contains("data-live") || crate::html::LIVE_JS.contains("dataset.live")
    );
    assert!(crate::html::TAP_JS.contains("EventSource"));
}

#[test]
fn pages_have_the_navigation_bar() {
    let response = crate::html::layout(
        crate::html::Section::Topology,
        "Topology",
        false,
        "<p>x</p>",
    );
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("default-src 'self'"), "{csp}");
}
