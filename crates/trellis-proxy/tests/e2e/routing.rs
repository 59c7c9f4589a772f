//! Route matching and weighted backends through the proxy.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
use trellis_testkit::load::run_load_until;

use super::{start, url};

#[tokio::test]
async fn first_matching_route_wins_and_weights_split_the_rest() {
    let v1 = HttpServer::start("v1", ServerProtocol::Http1)
        .await
        .expect("server");
    let v2 = HttpServer::start("v2", ServerProtocol::Http1)
        .await
        .expect("server");
    let admin = HttpServer::start("admin", ServerProtocol::Http2)
        .await
        .expect("server");
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - name: testers
        match: {{headers: [{{name: x-tester, exact: "yes"}}]}}
        backend: v2
      - name: admin
        match: {{path: {{prefix: /admin}}, method: GET}}
        backend: admin
      - name: split
        match: {{path: {{regex: "/(books|status)/.*"}}}}
        backends: [{{name: v1, weight: 3}}, {{name: v2, weight: 1}}]
backends:
  - {{name: v1, endpoints: ["{}"]}}
  - {{name: v2, endpoints: ["{}"]}}
  - {{name: admin, protocol: http2, endpoints: ["{}"]}}
"#,
        v1.addr(),
        v2.addr(),
        admin.addr()
    );
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();

    let req = Request::get(url(&proxy, "/books/1"))
        .header("x-tester", "yes")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.send(req).await.expect("response");
    assert_eq!(resp.headers["x-served-by"], "v2", "header rule first");

    let resp = client.get(&url(&proxy, "/admin/")).await.expect("response");
    assert_eq!(resp.headers["x-served-by"], "admin");
    let resp = client
        .post(&url(&proxy, "/admin/"), "x")
        .await
        .expect("response");
    assert_eq!(
        resp.status,
        StatusCode::NOT_FOUND,
        "POST /admin matches no route"
    );
    assert_eq!(resp.headers["trellis-error"], "no route");
    let resp = client.get(&url(&proxy, "/adminx")).await.expect("response");
    assert_eq!(
        resp.status,
        StatusCode::NOT_FOUND,
        "prefix matches whole segments"
    );

    let (before1, before2) = (v1.requests(), v2.requests());
    for _ in 0..400 {
        let resp = client
            .get(&url(&proxy, "/status/200"))
            .await
            .expect("response");
        assert_eq!(resp.status, StatusCode::OK);
    }
    let (n1, n2) = (v1.requests() - before1, v2.requests() - before2);
    assert_eq!(n1 + n2, 400);
    assert!((240..=360).contains(&n1), "3:1 split gave v1 {n1}, v2 {n2}");
    let metrics = proxy.metrics().encode();
    assert!(
        metrics.contains(
            r#"listener="web",route="split",backend="v2",peer_identity="",tls="false",status="200""#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn blue_green_switch_by_weights_on_reload() {
    let (blue, green) = blue_and_green().await;
    let config = |b, g| blue_green(&blue, &green, b, g);
    let proxy = trellis_proxy::Proxy::start(config(1, 0))
        .await
        .expect("proxy starts");
    let client = HttpClient::http1();
    for _ in 0..20 {
        assert_eq!(
            client.get(&url(&proxy, "/")).await.expect("r").headers["x-served-by"],
            "blue"
        );
    }
    proxy.reload(config(0, 1)).await.expect("reload");
    for _ in 0..20 {
        assert_eq!(
            client.get(&url(&proxy, "/")).await.expect("r").headers["x-served-by"],
            "green"
        );
    }
    proxy.reload(config(0, 0)).await.expect("reload");
    let resp = client.get(&url(&proxy, "/")).await.expect("r");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers["trellis-error"], "no backend");
}

#[tokio::test]
async fn weight_changes_under_load_fail_no_request() {
    const WORKERS: usize = 8;
    let (blue, green) = blue_and_green().await;
    let config = |b, g| blue_green(&blue, &green, b, g);
    let proxy = trellis_proxy::Proxy::start(config(100, 0))
        .await
        .expect("proxy starts");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(run_load_until(
        HttpClient::http1(),
        url(&proxy, "/"),
        WORKERS,
        u64::MAX,
        stopped,
    ));
    assert_eventually!(blue.requests() >= 100);
    assert_eq!(green.requests(), 0, "green has no weight yet");

    // Canary steps, then the switch; each step is seen by the backends under load.
    for (blue_weight, green_weight) in [(90, 10), (50, 50), (0, 100)] {
        let green_before = green.requests();
        proxy
            .reload(config(blue_weight, green_weight))
            .await
            .expect("reload");
        assert_eventually!(green.requests() >= green_before + 100);
    }
    // Requests that read the old weights before the switch may still reach blue: at
    // most one per worker.
    let blue_at_switch = blue.requests();
    let green_at_switch = green.requests();
    assert_eventually!(green.requests() >= green_at_switch + 300);
    assert!(
        blue.requests() <= blue_at_switch + WORKERS as u64,
        "blue still served {} requests after the switch",
        blue.requests() - blue_at_switch
    );

    stop.send(true).expect("load running");
    let report = load.await.expect("load task");
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(report.ok, blue.requests() + green.requests());
}

async fn blue_and_green() -> (HttpServer, HttpServer) {
    let blue = HttpServer::start("blue", ServerProtocol::Http1).await;
    let green = HttpServer::start("green", ServerProtocol::Http1).await;
    (blue.expect("server"), green.expect("server"))
}

/// One route split between the backends `blue` and `green` by the given weights.
fn blue_green(
    blue: &HttpServer,
    green: &HttpServer,
    blue_weight: u32,
    green_weight: u32,
) -> trellis_proxy::ProxyConfig {
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes: [{{backends: [{{name: blue, weight: {blue_weight}}}, {{name: green, weight: {green_weight}}}]}}]
backends:
  - {{name: blue, endpoints: ["{}"]}}
  - {{name: green, endpoints: ["{}"]}}
admin: 127.0.0.1:0
"#,
        blue.addr(),
        green.addr()
    );
    trellis_proxy::ProxyConfig::from_yaml(&yaml).expect("valid")
}
