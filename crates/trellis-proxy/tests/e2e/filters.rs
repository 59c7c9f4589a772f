//! Route filters through the proxy: header modifiers (route and backend), redirects,
//! URL rewrites, and request mirrors — including mirrors that hang or fail, which must
//! leave the primary response as it would be without them.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::recorder::{Answer, Recorder};
use super::{start, url};

/// One listener `web` with the given routes over the backend `app` (a sample server) and
/// any extra backends (`name: address`), each HTTP/1.1.
async fn proxy_with(
    routes: &str,
    extra: &[(&str, SocketAddr)],
) -> (trellis_proxy::Proxy, HttpServer) {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mut backends = format!("  - {{name: app, endpoints: [\"{}\"]}}\n", app.addr());
    for (name, addr) in extra {
        backends.push_str(&format!("  - {{name: {name}, endpoints: [\"{addr}\"]}}\n"));
    }
    let yaml = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    routes:\n{routes}backends:\n{backends}"
    );
    (start(&yaml).await, app)
}

fn header_lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

#[tokio::test]
async fn header_modifiers_of_route_and_backend() {
    let routes = r#"
      - backends:
          - name: app
            requestHeaders: {set: [{name: x-backend, value: app}]}
            responseHeaders: {add: [{name: x-backend-seen, value: "yes"}]}
        filters:
          requestHeaders:
            set: [{name: x-replaced, value: new}]
            add: [{name: x-added, value: two}]
            remove: [x-secret]
          responseHeaders:
            set: [{name: x-served-by, value: hidden}]
            remove: [content-type]
"#;
    let (proxy, _app) = proxy_with(routes, &[]).await;
    let req = Request::get(url(&proxy, "/headers"))
        .header("x-replaced", "old")
        .header("x-added", "one")
        .header("x-secret", "token")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = HttpClient::http1().send(req).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK);
    let body = resp.text();
    let lines = header_lines(&body);
    for want in [
        "x-replaced: new",
        "x-added: one",
        "x-added: two",
        "x-backend: app",
    ] {
        assert!(lines.contains(&want), "{want} missing from\n{body}");
    }
    assert!(!body.contains("x-secret"), "{body}");
    assert!(!body.contains("x-replaced: old"), "{body}");
    assert_eq!(resp.headers["x-served-by"], "hidden");
    assert_eq!(resp.headers["x-backend-seen"], "yes");
    assert!(!resp.headers.contains_key("content-type"));
}

#[tokio::test]
async fn redirects_answer_without_forwarding() {
    let routes = r#"
      - match: {path: {prefix: /old}}
        backend: app
        filters:
          redirect: {scheme: https, hostname: shop.example, path: {prefix: /new}, statusCode: 301}
          responseHeaders: {set: [{name: cache-control, value: no-store}]}
      - match: {path: {exact: /moved}}
        backend: app
        filters: {redirect: {path: {full: /here}}}
"#;
    let (proxy, app) = proxy_with(routes, &[]).await;
    let client = HttpClient::http1();
    let resp = client
        .get(&url(&proxy, "/old/books?page=2"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        resp.headers["location"],
        "https://shop.example/new/books?page=2"
    );
    assert_eq!(resp.headers["cache-control"], "no-store");
    // Without a scheme or port of its own, the redirect keeps the request's.
    let port = super::addr(&proxy).port();
    let resp = client.get(&url(&proxy, "/moved")).await.expect("response");
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(
        resp.headers["location"],
        format!("http://127.0.0.1:{port}/here").as_str()
    );
    assert_eq!(app.requests(), 0, "a redirect forwards nothing");
}

#[tokio::test]
async fn rewrites_change_the_path_and_host() {
    let routes = r#"
      - match: {path: {prefix: /v2}}
        backend: app
        filters: {rewrite: {path: {prefix: /status}}}
      - match: {path: {exact: /show}}
        backend: app
        filters: {rewrite: {hostname: books.internal, path: {full: /headers}}}
"#;
    let (proxy, _app) = proxy_with(routes, &[]).await;
    let client = HttpClient::http1();
    let resp = client.get(&url(&proxy, "/v2/201")).await.expect("response");
    assert_eq!(
        resp.status,
        StatusCode::CREATED,
        "/v2/201 went to /status/201"
    );
    let resp = client
        .get(&url(&proxy, "/show?x=1"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::OK, "/show went to /headers");
    assert!(
        header_lines(&resp.text()).contains(&"host: books.internal"),
        "{}",
        resp.text()
    );
}

fn mirror_count(proxy: &trellis_proxy::Proxy, backend: &str, outcome: &str) -> u64 {
    super::counter(
        proxy,
        &format!(
            r#"trellis_mirror_requests_total{{listener="web",route="0",backend="{backend}",outcome="{outcome}"}}"#
        ),
    )
}

#[tokio::test]
async fn mirrors_get_a_marked_copy_with_the_body() {
    let shadow = Recorder::start(Answer::Ok).await;
    let routes = r#"
      - backend: app
        filters:
          requestHeaders: {set: [{name: x-route, value: "1"}]}
          mirrors: [{backend: shadow}, {backend: never, numerator: 0}]
"#;
    let never = Recorder::start(Answer::Ok).await;
    let (proxy, app) = proxy_with(routes, &[("shadow", shadow.addr), ("never", never.addr)]).await;
    let client = HttpClient::http1();
    let resp = client
        .post(&url(&proxy, "/echo"), "hello mirror")
        .await
        .expect("response");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (StatusCode::OK, "hello mirror")
    );
    assert_eq!(resp.headers["x-served-by"], "app");
    assert!(!resp.headers.contains_key("x-trellis-mirror"));
    assert_eventually!(mirror_count(&proxy, "shadow", "2xx") == 1);
    let received = shadow.received();
    let (headers, body) = &received[0];
    assert_eq!(headers["x-trellis-mirror"], "1");
    assert_eq!(
        headers["x-route"], "1",
        "the mirror gets the request as filtered"
    );
    assert_eq!(body.as_ref(), b"hello mirror");

    for _ in 0..20 {
        client.get(&url(&proxy, "/")).await.expect("response");
    }
    assert_eventually!(mirror_count(&proxy, "shadow", "2xx") == 21);
    assert_eq!(shadow.count(), 21);
    assert_eq!(app.requests(), 21);
    assert_eq!(never.count(), 0, "numerator 0 mirrors nothing");
}

#[tokio::test]
async fn hanging_and_failing_mirrors_leave_the_primary_alone() {
    let hanging = Recorder::start(Answer::Hang).await;
    let failing = Recorder::start(Answer::Status(500)).await;
    // A port nobody listens on: connections are refused.
    let refused = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let routes = r#"
      - backend: app
        filters:
          mirrors: [{backend: hanging}, {backend: failing}, {backend: refused}]
"#;
    let (proxy, app) = proxy_with(
        routes,
        &[
            ("hanging", hanging.addr),
            ("failing", failing.addr),
            ("refused", refused),
        ],
    )
    .await;
    let client = HttpClient::http1();
    const N: usize = 20;
    for i in 0..N {
        let body = format!("request {i}");
        let resp = client
            .post(&url(&proxy, "/echo"), body.clone())
            .await
            .expect("response");
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.text(), body);
        assert_eq!(resp.headers["x-served-by"], "app");
    }
    assert_eq!(app.requests(), N as u64);
    // Every primary request was answered while its copy to `hanging` is still open:
    // the primary never waited for it.
    assert_eventually!(hanging.count() == N);
    assert_eq!(mirror_count(&proxy, "hanging", "2xx"), 0);
    assert_eventually!(mirror_count(&proxy, "failing", "5xx") == N as u64);
    assert_eventually!(mirror_count(&proxy, "refused", "failed") == N as u64);
    let metrics = proxy.metrics().encode();
    assert!(
        metrics.contains(&format!(
            r#"trellis_requests_total{{direction="outbound",listener="web",route="0",backend="app",peer_identity="",tls="false",status="200",class="2xx",grpc_status="",error=""}} {N}"#
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_mirror_that_stops_reading_loses_its_copy_not_the_primary() {
    // Far more than the copy channel and the sockets' buffers hold.
    const SIZE: usize = 32 * 1024 * 1024;
    let hanging = Recorder::start(Answer::Hang).await;
    let routes = "      - {backend: app, filters: {mirrors: [{backend: hanging}]}}\n";
    let (proxy, _app) = proxy_with(routes, &[("hanging", hanging.addr)]).await;
    let body = Bytes::from(vec![b'x'; SIZE]);
    let resp = HttpClient::http1()
        .post(&url(&proxy, "/echo"), body)
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body.len(), SIZE);
    assert_eventually!(mirror_count(&proxy, "hanging", "aborted") == 1);
}
