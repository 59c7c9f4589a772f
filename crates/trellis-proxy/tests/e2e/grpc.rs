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
