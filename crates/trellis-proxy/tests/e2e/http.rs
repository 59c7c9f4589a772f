//! HTTP/1.1 and HTTP/2 through the proxy, and translation between them.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{addr, read_head, simple, start, url, BURSTY};

/// Client version × backend protocol: every pair reaches the backend, which sees the
/// protocol it speaks and the client's host.
#[tokio::test]
async fn every_client_version_reaches_every_backend_protocol() {
    let cases = [
        (
            HttpClient::http1(),
            "http1",
            ServerProtocol::Http1,
            "version: HTTP/1.1",
        ),
        (
            HttpClient::http1(),
            "http2",
            ServerProtocol::Http2,
            "version: HTTP/2.0",
        ),
        (
            HttpClient::http2(),
            "http1",
            ServerProtocol::Http1,
            "version: HTTP/1.1",
        ),
        (
            HttpClient::http2(),
            "http2",
            ServerProtocol::Http2,
            "version: HTTP/2.0",
        ),
    ];
    for (client, backend_protocol, server_protocol, want) in cases {
        let server = HttpServer::start("app", server_protocol)
            .await
            .expect("server");
        let proxy = start(&simple("auto", backend_protocol, &[server.addr()], "")).await;
        let resp = client
            .get(&url(&proxy, "/headers"))
            .await
            .expect("response");
        assert_eq!(resp.status, StatusCode::OK, "{backend_protocol}");
        let text = resp.text();
        assert!(text.starts_with(want), "{backend_protocol}: {text}");
        let host = if backend_protocol == "http2" {
            ":authority"
        } else {
            "host"
        };
        assert!(
            text.contains(&format!("\n{host}: {}\n", addr(&proxy))),
            "{text}"
        );
        assert_eq!(resp.headers["x-served-by"], "app");
    }
}

#[tokio::test]
async fn http1_keep_alive_reuses_client_and_backend_connections() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("http1", "http1", &[server.addr()], "")).await;
    let client = HttpClient::http1();
    for _ in 0..20 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.text(), "hello from app\n");
    }
    assert_eq!(server.requests(), 20);
    assert_eq!(
        server.connections(),
        1,
        "backend connections were not pooled"
    );
}

#[tokio::test]
async fn chunked_request_and_response_bodies_stream_through() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    let request = "POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    // The echo comes back chunked; the two parts arrive in order.
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        body.contains("hello") && body.find("hello") < body.find(" world"),
        "{response}"
    );

    let resp = HttpClient::http1()
        .get(&url(&proxy, "/stream/5"))
        .await
        .expect("stream");
    assert_eq!(
        resp.text(),
        (0..5).map(|i| format!("chunk {i}\n")).collect::<String>()
    );
}

#[tokio::test]
async fn expect_100_continue_gets_continue_before_the_body() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("http1", "http1", &[server.addr()], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    conn.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n")
        .await
        .expect("write head");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("100 Continue arrives without the body")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    conn.write_all(b"hello").await.expect("write body");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("read");
    assert!(
        response.contains("200 OK") && response.ends_with("hello"),
        "{response}"
    );
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through_both_ways() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut conn).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"ping"[..], b"second frame", &[0u8, 1, 2, 255]] {
        conn.write_all(message).await.expect("write");
        let mut echo = vec![0u8; message.len()];
        conn.read_exact(&mut echo).await.expect("echo");
        assert_eq!(echo, message);
    }
    conn.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .await
        .expect("backend closes after our close");
    assert!(rest.is_empty());
}

/// A client offering to upgrade to HTTP/2 (`curl --http2`, Java's `HttpClient`) is
/// served in HTTP/1.1, whatever the backend speaks, and the offer reaches no backend.
#[tokio::test]
async fn an_h2c_offer_is_answered_in_http1() {
    for backend in [ServerProtocol::Http1, ServerProtocol::Http2] {
        let server = HttpServer::start("app", backend).await.expect("server");
        let protocol = match backend {
            ServerProtocol::Http1 => "http1",
            _ => "http2",
        };
        let proxy = start(&simple("auto", protocol, &[server.addr()], "")).await;
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        conn.write_all(
            b"GET /headers HTTP/1.1\r\nhost: t\r\nconnection: Upgrade, HTTP2-Settings\r\n\
              upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .expect("write");
        let head = read_head(&mut conn).await;
        assert!(head.starts_with("http/1.1 200"), "{protocol}: {head}");
        assert!(!head.contains("upgrade"), "{protocol}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{protocol}: no content-length in {head}"));
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await.expect("body");
        let body = String::from_utf8_lossy(&body).to_lowercase();
        assert!(
            body.contains(":authority: t\n") || body.contains("host: t\n"),
            "{body}"
        );
        for offer in ["upgrade", "http2-settings", "h2c"] {
            assert!(
                !body.contains(offer),
                "{protocol}: {offer} reached the backend: {body}"
            );
        }
        // The connection stays HTTP/1.1 and serves the next request.
        conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("write");
        let head = read_head(&mut conn).await;
        assert!(head.starts_with("http/1.1 200"), "{protocol}: {head}");
    }
}

#[tokio::test]
async fn http2_multiplexes_over_one_backend_connection() {
    let server = HttpServer::start("app", ServerProtocol::Http2)
        .await
        .expect("server");
    // Fifty at once to a backend the proxy has not measured yet: past the adaptive
    // limit's start (20), which is not what this test is about.
    let config = simple("auto", "http2", &[server.addr()], "") + BURSTY;
    let proxy = start(&config).await;
    let client = HttpClient::http2();
    let requests = (0..50).map(|i| {
        let client = client.clone();
        let url = url(&proxy, &format!("/delay/{}", i % 5));
        async move { client.get(&url).await }
    });
    let results = futures_util::future::join_all(requests).await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_ok_and(|r| r.status == StatusCode::OK)));
    assert_eq!(server.requests(), 50);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn http2_trailers_pass_through() {
    let server = HttpServer::start("app", ServerProtocol::Http2)
        .await
        .expect("server");
    let proxy = start(&simple("http2", "http2", &[server.addr()], "")).await;
    let resp = HttpClient::http2()
        .get(&url(&proxy, "/trailers"))
        .await
        .expect("response");
    assert_eq!(resp.text(), "with trailers\n");
    let trailers = resp.trailers.expect("trailers arrive");
    assert_eq!(trailers["x-checksum"], "ok");
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_backend() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let req = Request::get(url(&proxy, "/headers"))
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("proxy-connection", "keep-alive")
        .header("x-app", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let text = HttpClient::http1()
        .send(req)
        .await
        .expect("response")
        .text();
    assert!(text.contains("x-app: kept"), "{text}");
    assert!(
        !text.contains("x-secret") && !text.contains("proxy-connection"),
        "{text}"
    );
}

#[tokio::test]
async fn backend_statuses_pass_through_unchanged() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    for code in [201u16, 404, 500, 503] {
        let resp = HttpClient::http1()
            .get(&url(&proxy, &format!("/status/{code}")))
            .await
            .expect("response");
        assert_eq!(resp.status.as_u16(), code);
        assert!(
            !resp.headers.contains_key("trellis-error"),
            "backend's own {code} marked as proxy error"
        );
    }
}
