//! Injected faults through the proxy: aborts with an HTTP or a gRPC status, delays,
//! shares of 0 and 100 percent, and faults scoped to requests with a header.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{counter, simple, start, url};

fn faults(proxy: &trellis_proxy::Proxy, kind: &str) -> u64 {
    super::counter(
        proxy,
        &format!(
            r#"trellis_faults_injected_total{{listener="web",route="0",fault="chaos",kind="{kind}"}}"#
        ),
    )
}

async fn proxy_with_fault(server: &HttpServer, fault: &str) -> trellis_proxy::Proxy {
    start(&simple(
        "auto",
        "http1",
        &[server.addr()],
        &format!("fault: {{name: chaos, {fault}}}"),
    ))
    .await
}

#[tokio::test]
async fn aborts_answer_with_the_fault_status_for_matching_requests() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = proxy_with_fault(
        &server,
        "headers: [{name: x-chaos, exact: \"on\"}], abort: {httpStatus: 503}",
    )
    .await;
    let client = HttpClient::http1();
    let req = Request::get(url(&proxy, "/"))
        .header("x-chaos", "on")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.send(req).await.expect("response");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers["trellis-error"], "fault injected");
    assert_eq!(server.requests(), 0, "an aborted request goes nowhere");

    let resp = client.get(&url(&proxy, "/")).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK, "no header, no fault");
    assert_eq!(faults(&proxy, "abort"), 1);
    assert_eq!(
        counter(
            &proxy,
            r#"trellis_requests_total{direction="outbound",listener="web",route="0",backend="",peer_identity="",tls="false",status="503",class="5xx",grpc_status="",error="fault injected"}"#
        ),
        1
    );
}

#[tokio::test]
async fn grpc_calls_get_the_grpc_status() {
    let server = HttpServer::start("app", ServerProtocol::Http2)
        .await
        .expect("server");
    let yaml = simple(
        "auto",
        "http2",
        &[server.addr()],
        "fault: {name: chaos, abort: {grpcStatus: 8}}",
    );
    let proxy = start(&yaml).await;
    let call = || {
        Request::post(url(&proxy, "/shop.Books/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let resp = HttpClient::http2().send(call()).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK, "gRPC errors travel as 200");
    assert_eq!(resp.headers["grpc-status"], "8");

    // An HTTP status alone maps to its gRPC status.
    let yaml = simple(
        "auto",
        "http2",
        &[server.addr()],
        "fault: {name: chaos, abort: {httpStatus: 503}}",
    );
    let proxy = start(&yaml).await;
    let resp = HttpClient::http2()
        .send(
            Request::post(url(&proxy, "/shop.Books/Get"))
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.headers["grpc-status"], "14", "503 is UNAVAILABLE");
}

#[tokio::test]
async fn delays_hold_requests_before_they_are_forwarded() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    // An hour: the request is certainly still held when the test looks.
    let proxy = proxy_with_fault(&server, "delay: {fixed: 1h}").await;
    let target = url(&proxy, "/");
    let held = tokio::spawn(async move { HttpClient::http1().get(&target).await });
    assert_eventually!(faults(&proxy, "delay") == 1);
    assert_eq!(server.requests(), 0, "held, not forwarded");
    held.abort();
}

#[tokio::test]
async fn a_share_of_zero_injects_nothing() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = proxy_with_fault(
        &server,
        "delay: {fixed: 1h, percent: 0}, abort: {httpStatus: 500, percent: 0}",
    )
    .await;
    let client = HttpClient::http1();
    for _ in 0..20 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!((faults(&proxy, "delay"), faults(&proxy, "abort")), (0, 0));
}
