//! Exercises every `Echo` method through [`GrpcClient`] against
//! [`GrpcServer`], with no proxy in between.

use tonic::Code;

use super::*;

async fn start() -> (GrpcServer, GrpcClient) {
    let server = GrpcServer::start("grpc-a")
        .await
        .expect("start grpc server");
    let client = GrpcClient::connect(server.addr()).await.expect("connect");
    (server, client)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn unary_echoes_and_names_the_server() {
    let (server, mut client) = start().await;
    let reply = client.unary("hi").await.expect("unary");
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.served_by, "grpc-a");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn unary_fails_with_the_asked_code() {
    let (_server, mut client) = start().await;
    for code in [Code::NotFound, Code::Unavailable, Code::PermissionDenied] {
        let status = client
            .unary(&format!("fail:{}", code as i32))
            .await
            .expect_err("asked to fail");
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), "asked to fail");
    }
}

#[tokio::test]
async fn flaky_calls_fail_n_times_then_succeed() {
    let (_server, mut client) = start().await;
    let unary = "flaky:2:14";
    for _ in 0..2 {
        let status = client.unary(unary).await.expect_err("flaky");
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(
        client.unary(unary).await.expect("third call").message,
        unary
    );
    let stream = "flaky:1:8";
    let status = client.server_stream(stream).await.expect_err("flaky");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(client.server_stream(stream).await.expect("second").len(), 3);
}

#[tokio::test]
async fn server_stream_sends_three_replies() {
    let (_server, mut client) = start().await;
    let replies = client.server_stream("tick").await.expect("server stream");
    assert_eq!(replies, ["tick 0", "tick 1", "tick 2"]);
}

#[tokio::test]
async fn client_stream_joins_messages() {
    let (_server, mut client) = start().await;
    let reply = client
        .client_stream(strings(&["a", "b", "c"]))
        .await
        .expect("client stream");
    assert_eq!(reply, "a,b,c");
}

#[tokio::test]
async fn bidi_echoes_each_message() {
    let (_server, mut client) = start().await;
    let replies = client
        .bidi(strings(&["one", "two", "three"]))
        .await
        .expect("bidi");
    assert_eq!(replies, ["one", "two", "three"]);
}

#[tokio::test]
async fn counts_every_rpc() {
    let (server, mut client) = start().await;
    client.unary("x").await.expect("unary");
    client.server_stream("x").await.expect("server stream");
    client
        .client_stream(strings(&["x"]))
        .await
        .expect("client stream");
    client.bidi(strings(&["x"])).await.expect("bidi");
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let server = GrpcServer::start("grpc-a")
        .await
        .expect("start grpc server");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary(
            tonic::Request::new(EchoRequest::default()),
            http::uri::PathAndQuery::from_static("/trellis.testkit.Echo/Nope"),
            tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn dropping_the_server_stops_serving() {
    let (server, mut client) = start().await;
    client.unary("before").await.expect("unary");
    drop(server);
    crate::assert_eventually!(client.unary("after").await.is_err());
}
