//! gRPC through the proxy: every streaming kind, statuses and trailers end to end, and
//! proxy failures as gRPC statuses.

use tonic::Code;
use trellis_testkit::grpc::{GrpcClient, GrpcServer};

use super::{addr, simple, start};

#[tokio::test]
async fn all_four_kinds_of_call_pass_through() {
    let server = GrpcServer::start("echo").await.expect("server");
    for listener_protocol in ["grpc", "auto"] {
        let proxy = start(&simple(listener_protocol, "http2", &[server.addr()], "")).await;
        let mut client = GrpcClient::connect(addr(&proxy)).await.expect("connect");

        let reply = client.unary("hello").await.expect("unary");
        assert_eq!(
            (reply.message.as_str(), reply.served_by.as_str()),
            ("hello", "echo")
        );
        assert_eq!(
            client.server_stream("s").await.expect("server stream"),
            ["s 0", "s 1", "s 2"]
        );
        let joined = client
            .client_stream(vec!["a".into(), "b".into(), "c".into()])
            .await
            .expect("client stream");
        assert_eq!(joined, "a,b,c");
        let msgs: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(client.bidi(msgs.clone()).await.expect("bidi"), msgs);
    }
}

#[tokio::test]
async fn application_grpc_status_reaches_the_client() {
    let server = GrpcServer::start("echo").await.expect("server");
    let proxy = start(&simple("grpc", "http2", &[server.addr()], "")).await;
    let mut client = GrpcClient::connect(addr(&proxy)).await.expect("connect");
    for code in [
        Code::NotFound,
        Code::PermissionDenied,
        Code::ResourceExhausted,
    ] {
        let status = client
            .unary(&format!("fail:{}", code as i32))
            .await
            .expect_err("asked to fail");
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), "asked to fail");
    }
}

#[tokio::test]
async fn unreachable_backend_is_unavailable() {
    let dead = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("addr")
    };
    let proxy = start(&simple("grpc", "http2", &[dead], "")).await;
    let mut client = GrpcClient::connect(addr(&proxy)).await.expect("connect");
    let status = client.unary("hello").await.expect_err("backend is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn route_timeout_is_deadline_exceeded() {
    // A listener that accepts but never answers: the HTTP/2 handshake never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = start(&simple(
        "grpc",
        "http2",
        &[silent.local_addr().expect("addr")],
        "timeout: 200ms",
    ))
    .await;
    let mut client = GrpcClient::connect(addr(&proxy)).await.expect("connect");
    let status = client.unary("hello").await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// A proxy whose route has `retry` to `server`, and a client of it.
async fn retrying_proxy(server: &GrpcServer, retry: &str) -> (trellis_proxy::Proxy, GrpcClient) {
    let proxy = start(&simple("grpc", "http2", &[server.addr()], retry)).await;
    let client = GrpcClient::connect(addr(&proxy)).await.expect("connect");
    (proxy, client)
}

/// Retries UNAVAILABLE and RESOURCE_EXHAUSTED.
const RETRY_GRPC: &str =
    "retry: {attempts: 3, backoff: 1ms, grpcStatuses: [unavailable, resource-exhausted]}";

#[tokio::test]
async fn calls_failing_with_a_listed_status_are_retried_until_they_succeed() {
    let server = GrpcServer::start("echo").await.expect("server");
    let (proxy, mut client) = retrying_proxy(&server, RETRY_GRPC).await;

    // Trailers-only answers: the status is in the response headers.
    let reply = client.unary("flaky:2:14").await.expect("third attempt");
    assert_eq!(reply.message, "flaky:2:14");
    assert_eq!(server.requests(), 3, "two failures, then the answer");

    // Headers, then the status in trailers before any message.
    let replies = client.server_stream("flaky:2:8").await.expect("retried");
    assert_eq!(replies, ["flaky:2:8 0", "flaky:2:8 1", "flaky:2:8 2"]);
    assert_eq!(server.requests(), 6);

    let retries: u64 = proxy
        .metrics_text()
        .lines()
        .filter(|l| {
            l.starts_with("trellis_retries_total{") && l.contains(r#"reason="grpc status""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(retries, 4);
}

#[tokio::test]
async fn calls_are_not_retried_past_their_attempts_or_on_other_statuses() {
    let server = GrpcServer::start("echo").await.expect("server");
    let (_proxy, mut client) = retrying_proxy(&server, RETRY_GRPC).await;

    let status = client.unary("flaky:9:14").await.expect_err("always fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.requests(), 4, "the call and three retries");

    let status = client.unary("flaky:1:5").await.expect_err("not listed");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn calls_are_retried_only_when_the_route_lists_grpc_statuses_and_they_fit() {
    let server = GrpcServer::start("echo").await.expect("server");
    // HTTP codes alone never replay a gRPC call: it is a POST.
    let (_proxy, mut client) = retrying_proxy(&server, "retry: {attempts: 3, codes: [503]}").await;
    let status = client.unary("flaky:1:14").await.expect_err("not retried");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.requests(), 1);

    // A call larger than the proxy keeps a copy of is passed on, but not replayed.
    let (_proxy, mut client) = retrying_proxy(&server, RETRY_GRPC).await;
    let big = format!("flaky:1:14:{}", "x".repeat(70 * 1024));
    let status = client.unary(&big).await.expect_err("too large to replay");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.requests(), 2);
    assert!(client.unary(&big).await.is_ok(), "the next call passes");
}
