//! Route matching and weighted backends through the proxy.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

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
    let blue = HttpServer::start("blue", ServerProtocol::Http1)
        .await
        .expect("server");
    let green = HttpServer::start("green", ServerProtocol::Http1)
        .await
        .expect("server");
    let config = |blue_weight: u32, green_weight: u32| {
        format!(
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
        )
    };
    let proxy = start(&config(1, 0)).await;
    let client = HttpClient::http1();
    for _ in 0..20 {
        assert_eq!(
            client.get(&url(&proxy, "/")).await.expect("r").headers["x-served-by"],
            "blue"
        );
    }
    let next = trellis_proxy::ProxyConfig::from_yaml(&config(0, 1)).expect("valid");
    proxy.reload(next).await.expect("reload");
    for _ in 0..20 {
        assert_eq!(
            client.get(&url(&proxy, "/")).await.expect("r").headers["x-served-by"],
            "green"
        );
    }
    let off = trellis_proxy::ProxyConfig::from_yaml(&config(0, 0)).expect("valid");
    proxy.reload(off).await.expect("reload");
    let resp = client.get(&url(&proxy, "/")).await.expect("r");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers["trellis-error"], "no backend");
}
