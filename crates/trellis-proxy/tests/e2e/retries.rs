//! Backend timeouts and retries through the proxy. Each backend has a failing endpoint
//! and a good one under round-robin, so a request's first attempt and its retry go to
//! different endpoints in a known order. Outlier detection is off, so the bad endpoint
//! keeps its turn.

use std::net::SocketAddr;

use http::StatusCode;
use trellis_testkit::http::HttpClient;

use super::recorder::{Answer, Recorder};
use super::resilience::good;
use super::url;

/// A listener `web` whose one route has `route_extra` settings, over endpoints `bad`
/// then `good` in round-robin.
async fn proxy_over(bad: SocketAddr, good: SocketAddr, route_extra: &str) -> trellis_proxy::Proxy {
    // Ejecting the bad endpoint would hide the retries these tests count.
    let no_ejection = "{outlierDetection: {enabled: false}}";
    super::resilience::start_proxy(&[bad, good], route_extra, no_ejection).await
}

fn retries(proxy: &trellis_proxy::Proxy, reason: &str) -> u64 {
    super::counter(
        proxy,
        &format!(
            r#"trellis_retries_total{{listener="web",route="0",backend="app",reason="{reason}"}}"#
        ),
    )
}

#[tokio::test]
async fn listed_statuses_are_retried_for_idempotent_requests_only() {
    let bad = Recorder::start(Answer::Status(503)).await;
    let good = good().await;
    let proxy = proxy_over(
        bad.addr,
        good.addr(),
        "retry: {attempts: 2, codes: [503], backoff: 1ms}",
    )
    .await;
    let client = HttpClient::http1();
    for i in 0..6 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.status, StatusCode::OK, "GET {i}");
        assert_eq!(resp.headers["x-served-by"], "good");
    }
    assert_eq!(
        bad.count(),
        6,
        "every first attempt went to the bad endpoint"
    );
    assert_eq!(retries(&proxy, "status"), 6);

    // A PUT with a body is replayed whole.
    let resp = client
        .send(
            http::Request::put(url(&proxy, "/echo"))
                .body(http_body_util::Full::new(bytes::Bytes::from("the book")))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (StatusCode::OK, "the book")
    );
    let (_, body) = bad.received().pop().expect("the first attempt");
    assert_eq!(body.as_ref(), b"the book");

    // POST is not idempotent: the bad endpoint's answer is the client's.
    let statuses = super::post_twice(&proxy).await;
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(retries(&proxy, "status"), 7);
}

#[tokio::test]
async fn refused_connections_are_retried() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let good = good().await;
    let proxy = proxy_over(refused, good.addr(), "retry: {backoff: 1ms}").await;
    let client = HttpClient::http1();
    for _ in 0..4 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_eq!(retries(&proxy, "connect failed"), 4);
}

#[tokio::test]
async fn an_attempt_past_its_backend_timeout_is_retried_within_the_request_timeout() {
    let hanging = Recorder::start(Answer::Hang).await;
    let good = good().await;
    let proxy = proxy_over(
        hanging.addr,
        good.addr(),
        "backendTimeout: 200ms\n        retry: {backoff: 1ms}",
    )
    .await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(retries(&proxy, "backend timeout"), 1);

    // Without retries the attempt's timeout is the client's answer.
    let proxy = proxy_over(hanging.addr, good.addr(), "backendTimeout: 200ms").await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["trellis-error"], "backend timeout");

    // The request timeout bounds every attempt and wait together.
    let proxy = proxy_over(
        hanging.addr,
        hanging.addr,
        "timeout: 300ms\n        backendTimeout: 200ms\n        retry: {attempts: 10, backoff: 1ms}",
    )
    .await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["trellis-error"], "request timeout");
}
