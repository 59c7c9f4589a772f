//! Exercises every path of [`HttpServer`] with [`HttpClient`], over each
//! protocol pairing, with no proxy in between.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Every server protocol with each client that can talk to it, and the
/// version line `/headers` should report.
fn pairings() -> Vec<(ServerProtocol, HttpClient, &'static str)> {
    vec![
        (ServerProtocol::Http1, HttpClient::http1(), "HTTP/1.1"),
        (ServerProtocol::Http2, HttpClient::http2(), "HTTP/2.0"),
        (ServerProtocol::Auto, HttpClient::http1(), "HTTP/1.1"),
        (ServerProtocol::Auto, HttpClient::http2(), "HTTP/2.0"),
    ]
}

async fn start(protocol: ServerProtocol) -> HttpServer {
    HttpServer::start("backend-a", protocol)
        .await
        .expect("start http server")
}

#[tokio::test]
async fn root_says_hello_and_names_the_server() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let rsp = client
            .get(&format!("http://{}/", server.addr()))
            .await
            .expect("GET /");
        assert_eq!(rsp.status, StatusCode::OK, "{version}");
        assert_eq!(rsp.text(), "hello from backend-a\n", "{version}");
        assert_eq!(rsp.headers["x-served-by"], "backend-a", "{version}");
        assert_eq!(server.requests(), 1, "{version}");
    }
}

#[tokio::test]
async fn echo_returns_the_body_and_content_type() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let req = Request::post(format!("http://{}/echo", server.addr()))
            .header(header::CONTENT_TYPE, "application/x-test")
            .body(Full::new(Bytes::from_static(b"some bytes")))
            .expect("request");
        let rsp = client.send(req).await.expect("POST /echo");
        assert_eq!(rsp.status, StatusCode::OK, "{version}");
        assert_eq!(rsp.text(), "some bytes", "{version}");
        assert_eq!(
            rsp.headers[header::CONTENT_TYPE],
            "application/x-test",
            "{version}"
        );
    }
}

#[tokio::test]
async fn delay_sleeps_then_answers() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let rsp = client
            .get(&format!("http://{}/delay/5", server.addr()))
            .await
            .expect("GET /delay/5");
        assert_eq!(rsp.status, StatusCode::OK, "{version}");
        assert_eq!(rsp.text(), "slept 5\n", "{version}");
    }
}

#[tokio::test]
async fn status_answers_with_the_asked_code() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let rsp = client
            .post(&format!("http://{}/status/503", server.addr()), "ignored")
            .await
            .expect("POST /status/503");
        assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE, "{version}");
        assert_eq!(rsp.text(), "status 503\n", "{version}");
        assert_eq!(rsp.headers["x-served-by"], "backend-a", "{version}");
    }
}

#[tokio::test]
async fn headers_lists_version_and_sorted_request_headers() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let req = Request::get(format!("http://{}/headers", server.addr()))
            .header("x-b", "2")
            .header("x-a", "1")
            .header("x-a", "0")
            .body(Full::default())
            .expect("request");
        let rsp = client.send(req).await.expect("GET /headers");
        let text = rsp.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("version: {version}"));
        let names: Vec<&str> = lines[1..]
            .iter()
            .map(|line| line.split(": ").next().expect("a name"))
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "{version}: {text}");
        let ours: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("x-"))
            .collect();
        assert_eq!(ours, ["x-a: 1", "x-a: 0", "x-b: 2"], "{version}");
    }
}

#[tokio::test]
async fn trailers_follow_the_body() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        // HTTP/1.1 servers may only send trailers to clients that accept them.
        let req = Request::get(format!("http://{}/trailers", server.addr()))
            .header(header::TE, "trailers")
            .body(Full::default())
            .expect("request");
        let rsp = client.send(req).await.expect("GET /trailers");
        assert_eq!(rsp.text(), "with trailers\n", "{version}");
        let trailers = rsp.trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "ok", "{version}");
    }
}

#[tokio::test]
async fn stream_sends_each_chunk_as_its_own_frame() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let url = format!("http://{}/stream/3", server.addr());
        let rsp = client.get(&url).await.expect("GET /stream/3");
        assert_eq!(rsp.text(), "chunk 0\nchunk 1\nchunk 2\n", "{version}");

        let raw = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(version == "HTTP/2.0")
            .build_http::<Empty<Bytes>>();
        let mut body = raw
            .get(url.parse().expect("uri"))
            .await
            .expect("GET /stream/3")
            .into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            // HTTP/2 ends the stream with an empty DATA frame: the body only
            // learns it is finished after its last chunk.
            match frame.expect("frame").into_data() {
                Ok(data) if !data.is_empty() => frames.push(data),
                _ => {}
            }
        }
        assert_eq!(frames, ["chunk 0\n", "chunk 1\n", "chunk 2\n"], "{version}");
    }
}

#[tokio::test]
async fn unknown_paths_are_not_found() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let rsp = client
            .get(&format!("http://{}/nope", server.addr()))
            .await
            .expect("GET /nope");
        assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{version}");
        assert_eq!(rsp.headers["x-served-by"], "backend-a", "{version}");
    }
}

#[tokio::test]
async fn ws_without_upgrade_is_a_bad_request() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let rsp = client
            .get(&format!("http://{}/ws", server.addr()))
            .await
            .expect("GET /ws");
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{version}");
    }
}

#[tokio::test]
async fn ws_upgrade_echoes_raw_bytes_until_eof() {
    for protocol in [ServerProtocol::Http1, ServerProtocol::Auto] {
        let server = start(protocol).await;
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn.with_upgrades());

        let req = Request::get("/ws")
            .header(header::HOST, "backend-a")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let rsp = sender.send_request(req).await.expect("send upgrade");
        assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(rsp.headers()[header::UPGRADE], "websocket");
        assert_eq!(rsp.headers()[header::CONNECTION], "upgrade");
        assert_eq!(rsp.headers()["x-served-by"], "backend-a");

        let mut io = TokioIo::new(hyper::upgrade::on(rsp).await.expect("upgraded"));
        io.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.expect("read echo");
        assert_eq!(&buf, b"hello");

        io.write_all(b" bye").await.expect("write");
        io.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("read to EOF");
        assert_eq!(rest, b" bye");
    }
}

#[tokio::test]
async fn counts_requests_and_reuses_connections() {
    for (protocol, client, version) in pairings() {
        let server = start(protocol).await;
        let url = format!("http://{}/", server.addr());
        for _ in 0..3 {
            client.get(&url).await.expect("GET /");
        }
        assert_eq!(server.requests(), 3, "{version}");
        assert_eq!(server.connections(), 1, "{version}");
    }
}

#[tokio::test]
async fn dropping_the_server_closes_connections() {
    let server = start(ServerProtocol::Http1).await;
    let url = format!("http://{}/", server.addr());
    let client = HttpClient::http1();
    client.get(&url).await.expect("GET /");
    drop(server);
    crate::assert_eventually!(client.get(&url).await.is_err());
}

#[tokio::test]
async fn invalid_server_names_are_rejected() {
    let err = HttpServer::start("bad\nname", ServerProtocol::Auto)
        .await
        .expect_err("newline in name");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
