//! Bad input never panics or hangs: malformed HTTP gets 400 and the connection closes,
//! oversized heads get 431.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{addr, simple, start, url};

async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_closed_connection() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let cases: &[(&str, &[u8])] = &[
        ("http1", b"GARBAGE\r\n\r\n"),
        ("http1", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
        ("auto", b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
        (
            "auto",
            b"GET / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello",
        ),
        ("http1", b"GET /\x01 HTTP/1.1\r\n\r\n"),
    ];
    for (protocol, input) in cases {
        let proxy = start(&simple(protocol, "http1", &[server.addr()], "")).await;
        let out = exchange(addr(&proxy), input).await;
        let status_line = out.lines().next().unwrap_or_default().to_string();
        assert!(
            status_line.starts_with("HTTP/1.1 400"),
            "{protocol} {:?}: got {out:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let yaml = simple("http1", "http1", &[server.addr()], "") + "maxHeaderBytes: 16384\n";
    let proxy = start(&yaml).await;
    let mut request = b"GET / HTTP/1.1\r\nhost: t\r\n".to_vec();
    for i in 0..100 {
        request.extend(format!("x-filler-{i}: {}\r\n", "a".repeat(300)).as_bytes());
    }
    request.extend(b"\r\n");
    let out = exchange(addr(&proxy), &request).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn abrupt_clients_do_not_disturb_the_proxy() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    // Connections that close at every stage of a request.
    for partial in [
        &b""[..],
        b"GE",
        b"GET / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01",
    ] {
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        conn.write_all(partial).await.expect("write");
        drop(conn);
    }
    // A client that leaves while its request is in flight.
    let client = HttpClient::http1();
    let slow = tokio::spawn({
        let url = url(&proxy, "/delay/2000");
        async move { client.get(&url).await }
    });
    assert_eventually!(server.requests() == 1);
    slow.abort();
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("still serving");
    assert_eq!(resp.text(), "hello from app\n");
}
