//! Long streams of small messages between two proxies over mTLS, as the mesh carries
//! them (HTTP/2 between the proxies whatever the application speaks): every chunk
//! arrives, neither proxy trips its peer's small-frame flood guard, and the shared
//! connection keeps serving the requests beside them. A real flood is still refused.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpStream;
use trellis_proxy::Proxy;
use trellis_testkit::grpc::{GrpcClient, GrpcServer};
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::mtls::{id, listener, root, store};
use super::start;

/// An outbound proxy (listener `web`, speaking `client`) in front of an inbound proxy
/// over mTLS, in front of `app` (speaking `app_protocol`); the outbound's backend says
/// `http2`, as the control plane's does. Returns (outbound, inbound).
async fn chain(client: &str, app_protocol: &str, app: std::net::SocketAddr) -> (Proxy, Proxy) {
    let ca = root();
    let inbound = start(&format!(
        "listeners:\n  - {{name: inbound, address: 127.0.0.1:0, protocol: auto, mtls: strict, routes: [{{backend: app}}]}}\n\
         backends:\n  - {{name: app, protocol: {app_protocol}, endpoints: [{app}]}}\n"
    ))
    .await;
    let to = listener(&inbound);
    let outbound = start(&format!(
        "listeners:\n  - {{name: web, address: 127.0.0.1:0, protocol: {client}, routes: [{{backend: mesh}}]}}\n\
         backends:\n  - {{name: mesh, protocol: http2, endpoints: [{{address: \"{to}\", identity: \"{}\"}}]}}\n",
        id("cart")
    ))
    .await;
    outbound
        .set_identity(store(&ca, &id("web")))
        .expect("outbound identity");
    inbound
        .set_identity(store(&ca, &id("cart")))
        .expect("inbound identity");
    (outbound, inbound)
}

fn web(proxy: &Proxy) -> std::net::SocketAddr {
    proxy.listener_addr("web").expect("web")
}

/// An HTTP/1.1 application behind [`chain`], its outbound proxy detecting what the
/// client speaks. Returns (app, outbound, inbound).
async fn http1_app_chain() -> (HttpServer, Proxy, Proxy) {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let (outbound, inbound) = chain("auto", "http1", app.addr()).await;
    (app, outbound, inbound)
}

/// `len` bytes repeating every `period` bytes (a prime), so a body that comes back
/// shifted, cut or spliced does not compare equal.
fn pattern(len: u32, period: u32) -> Vec<u8> {
    (0..len).map(|i| (i % period) as u8).collect()
}

/// 20,000 one-line chunks (server-sent events, a log tail) arrive whole and in order,
/// while a 4 MB upload is echoed on the same proxy-to-proxy connection beside them.
#[tokio::test]
async fn a_response_of_20000_small_chunks_arrives_whole_beside_a_large_upload() {
    let (_app, outbound, _inbound) = http1_app_chain().await;
    let base = format!("http://{}", web(&outbound));
    let client = HttpClient::http1();
    let upload = pattern(4 * 1024 * 1024, 251);
    let (stream, echo) = join(
        client.get(&format!("{base}/stream/20000")),
        client.post(&format!("{base}/echo"), upload.clone()),
    )
    .await;
    let stream = stream.expect("stream");
    assert_eq!(stream.status, StatusCode::OK);
    let text = stream.text();
    let expected: String = (0..20_000).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(text.lines().count(), 20_000);
    assert!(
        text == expected,
        "the chunks arrived altered or out of order"
    );
    let echo = echo.expect("echo");
    assert_eq!(echo.status, StatusCode::OK);
    assert!(echo.body == upload, "the upload came back altered");
}

/// Streams that fail (clients that hang up halfway through an upload, which the
/// outbound proxy turns into resets on the shared proxy-to-proxy connection) end alone:
/// a large upload beside them comes back whole, and the connection serves on.
#[tokio::test]
async fn a_failing_stream_never_ends_the_streams_beside_it() {
    use tokio::io::AsyncWriteExt;
    let (_app, outbound, _inbound) = http1_app_chain().await;
    let base = format!("http://{}", web(&outbound));
    let client = HttpClient::http1();
    let upload = pattern(8 * 1024 * 1024, 253);
    let aborts = async {
        for _ in 0..20 {
            let mut tcp = TcpStream::connect(web(&outbound)).await.expect("connect");
            let head = "POST /echo HTTP/1.1\r\nhost: app\r\ncontent-length: 1048576\r\n\r\n";
            tcp.write_all(head.as_bytes()).await.expect("head");
            tcp.write_all(&[7u8; 65536])
                .await
                .expect("part of the body");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(tcp);
        }
    };
    let (echo, ()) = join(client.post(&format!("{base}/echo"), upload.clone()), aborts).await;
    let echo = echo.expect("echo");
    assert_eq!(echo.status, StatusCode::OK);
    assert!(echo.body == upload, "the upload came back altered");
    let after = client.get(&format!("{base}/")).await.expect("after");
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.text(), "hello from app\n");
}

/// gRPC streams of 10,000 messages each way cross both proxies whole.
#[tokio::test]
async fn grpc_streams_of_10000_messages_cross_two_proxies() {
    let app = GrpcServer::start("app").await.expect("grpc server");
    let (outbound, _inbound) = chain("grpc", "http2", app.addr()).await;
    let mut client = GrpcClient::connect(web(&outbound)).await.expect("connect");
    let messages: Vec<String> = (0..10_000).map(|i| format!("m{i}")).collect();
    let replies = client.bidi(messages.clone()).await.expect("bidi");
    assert_eq!(replies, messages);
    let joined = client
        .client_stream(messages.clone())
        .await
        .expect("client stream");
    assert!(
        joined == messages.join(","),
        "the client stream arrived altered"
    );
}

/// A client writing 20,000 DATA frames of 10 bytes each, as fast as it can: the
/// proxy relays them and the echo comes back whole, on a connection that stays up.
#[tokio::test]
async fn tiny_frames_from_a_client_are_relayed_without_tripping_a_flood_guard() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let (outbound, _inbound) = chain("http2", "http1", app.addr()).await;
    let tcp = TcpStream::connect(web(&outbound)).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::post(format!("http://{}/echo", web(&outbound)))
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(req, false).expect("send");
    let frames = 20_000u32;
    let sender = tokio::spawn(async move {
        for i in 0..frames {
            body.send_data(Bytes::from(format!("{i:09}\n")), false)
                .expect("send data");
            if i % 500 == 0 {
                tokio::task::yield_now().await;
            }
        }
        body.send_data(Bytes::new(), true).expect("end");
    });
    let response = response.await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    let mut echoed = response.into_body();
    while let Some(chunk) = echoed.data().await {
        let chunk = chunk.expect("echoed data");
        let _ = echoed.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    sender.await.expect("sender");
    let expected: String = (0..frames).map(|i| format!("{i:09}\n")).collect();
    assert_eq!(received.len(), expected.len());
    assert!(
        received == expected.as_bytes(),
        "the echo came back altered"
    );
    // The same connection still serves.
    let req = Request::get(format!("http://{}/", web(&outbound)))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(req, true).expect("second request");
    assert_eq!(
        response.await.expect("second response").status(),
        StatusCode::OK
    );
    assert!(!conn.is_finished(), "the client connection was closed");
}

/// Empty DATA frames carry nothing and cost the receiver work: a client sending
/// hundreds of them is refused with GOAWAY `ENHANCE_YOUR_CALM`.
#[tokio::test]
async fn a_flood_of_empty_data_frames_is_refused() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&super::simple("http2", "http1", &[app.addr()], "")).await;
    let tcp = TcpStream::connect(super::addr(&proxy))
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::post(format!("http://{}/echo", super::addr(&proxy)))
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(req, false).expect("send");
    for _ in 0..1_000 {
        if body.send_data(Bytes::new(), false).is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the proxy closes the connection")
        .expect("connection task");
    let reason = ended.err().and_then(|e| e.reason()).or_else(|| {
        futures_util::FutureExt::now_or_never(response)?
            .err()?
            .reason()
    });
    assert_eq!(reason, Some(h2::Reason::ENHANCE_YOUR_CALM));
    // The proxy itself serves on.
    let ok = HttpClient::http2()
        .send(
            Request::get(format!("http://{}/", super::addr(&proxy)))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("after the flood");
    assert_eq!(ok.status, StatusCode::OK);
}
