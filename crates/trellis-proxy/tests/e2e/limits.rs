//! Header-read limits on every listener kind: a client trickling a request's head one
//! byte at a time (a slow loris) is disconnected once the listener's
//! `headerReadTimeout` passes, whatever the listener speaks and wherever the head is
//! (before detection, inside a `CONNECT` tunnel, during an mTLS handshake); heads
//! larger than `maxHeaderBytes` get 431 on HTTP/1 and HTTP/2; and none of it touches a
//! client that is merely idle between requests or slow to upload a body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_proxy::Proxy;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpServer, ServerProtocol};

use super::mtls::{handshakes, id, metric, root, store};
use super::{addr, read_head, start};

/// The header-read timeout of the listeners under test: short, so the tests are quick.
const TIMEOUT: &str = "700ms";
/// Time between two trickled bytes.
const TRICKLE: Duration = Duration::from_millis(100);

/// A proxy with one listener `web` of `protocol` (and `extra` listener fields) in front
/// of `app`.
async fn proxy(protocol: &str, extra: &str, app: SocketAddr, backend: &str) -> Proxy {
    start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: {protocol}
    headerReadTimeout: {TIMEOUT}
    {extra}
    routes:
      - backend: app
backends:
  - name: app
    protocol: {backend}
    endpoints: [{app}]
"#
    ))
    .await
}

/// How a trickle ended.
#[derive(Debug, PartialEq)]
enum Trickled {
    /// The proxy closed the connection after this many bytes had been sent.
    Cut { sent: usize },
    /// Every byte went out and the connection was still open.
    Finished,
}

/// Sends `bytes` one at a time, [`TRICKLE`] apart, watching for the proxy to close the
/// connection (an answer such as a 408 would count as closing too).
async fn trickle(conn: &mut TcpStream, bytes: &[u8]) -> Trickled {
    let (mut read, mut write) = conn.split();
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::pin!(closed);
    for (sent, byte) in bytes.iter().enumerate() {
        tokio::select! {
            _ = &mut closed => return Trickled::Cut { sent },
            _ = tokio::time::sleep(TRICKLE) => {}
        }
        if write.write_all(&[*byte]).await.is_err() {
            return Trickled::Cut { sent };
        }
    }
    Trickled::Finished
}

/// An HTTP/1 request head that takes 6 s to trickle, far past the timeout.
fn long_head() -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nhost: app\r\nx-slow: {}\r\n\r\n",
        "a".repeat(20)
    )
    .into_bytes()
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A HEADERS frame opening stream 1, header block not yet ended, with junk for a block:
/// only its length matters before it completes.
fn open_header_block() -> Vec<u8> {
    let mut frame = vec![0, 0, 40, 0x1, 0, 0, 0, 0, 1];
    frame.extend([0u8; 40]);
    frame
}

/// Asserts that the trickle was cut well before it could finish: the proxy, not the
/// client, ended it.
fn assert_cut(case: &str, trickled: Trickled, total: usize) {
    match trickled {
        Trickled::Cut { sent } => assert!(sent < total, "{case}: cut after {sent} of {total}"),
        Trickled::Finished => panic!("{case}: a {total}-byte trickle was never cut"),
    }
}

#[tokio::test]
async fn a_trickled_head_is_cut_on_every_listener_kind() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let h2app = HttpServer::start("app", ServerProtocol::Http2)
        .await
        .expect("server");
    let head = long_head();
    let mut preface_then_block = H2_OPENING.to_vec();
    preface_then_block.extend(open_header_block());
    // (listener protocol, backend protocol, sent at once, then trickled)
    let cases: Vec<(&str, &str, &[u8], Vec<u8>)> = vec![
        // The request line itself, before detection can decide.
        ("auto", "http1", b"", head.clone()),
        // Detected at once, then the headers trickled.
        ("auto", "http1", b"GET / HTTP/1.1\r\n", head[16..].to_vec()),
        ("http1", "http1", b"", head.clone()),
        // The HTTP/2 preface, before detection can decide, and on an http2 listener.
        ("auto", "http2", b"", H2_OPENING.repeat(2)),
        ("http2", "http2", b"", H2_OPENING.repeat(2)),
        ("grpc", "http2", b"", H2_OPENING.repeat(2)),
        // A header block after a prompt opening.
        ("http2", "http2", H2_OPENING, open_header_block()),
        (
            "auto",
            "http2",
            &preface_then_block[..30],
            preface_then_block[30..].to_vec(),
        ),
    ];
    let mut tasks = Vec::new();
    for (protocol, backend, at_once, trickled) in cases {
        let upstream = if backend == "http1" {
            app.addr()
        } else {
            h2app.addr()
        };
        let proxy = proxy(protocol, "", upstream, backend).await;
        let case = format!(
            "{protocol} listener, {:?} then trickled",
            String::from_utf8_lossy(at_once)
        );
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        conn.write_all(at_once).await.expect("write");
        tasks.push(tokio::spawn(async move {
            let total = trickled.len();
            assert_cut(&case, trickle(&mut conn, &trickled).await, total);
            drop(proxy);
        }));
    }
    for task in tasks {
        task.await.expect("case");
    }
    assert_eq!(
        app.requests() + h2app.requests(),
        0,
        "no trickled head reached the app"
    );
}

/// On a keep-alive connection, the next request's clock starts at its first byte; the
/// idle time before it is the idle timeout's, and a head within the limit is served,
/// also by a connection that gave its buffers back while idle.
#[tokio::test]
async fn keep_alive_heads_are_timed_from_their_first_byte() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    for protocol in ["auto", "http1"] {
        let proxy = proxy(protocol, "", app.addr(), "http1").await;
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        for round in 0..3 {
            // After the first, idle for longer than the header-read timeout and than an
            // HTTP/1 connection takes to give its buffers back (1 s), then a head in two
            // parts that together take less than the timeout.
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            conn.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
            tokio::time::sleep(Duration::from_millis(200)).await;
            conn.write_all(b"host: app\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            let head = read_head(&mut conn).await;
            assert!(
                head.starts_with("http/1.1 200"),
                "{protocol} round {round}: {head}"
            );
            let mut body = [0u8; 15];
            conn.read_exact(&mut body).await.expect("body");
            assert_eq!(&body, b"hello from app\n");
        }
        let total = long_head().len();
        assert_cut(protocol, trickle(&mut conn, &long_head()).await, total);
    }
}

/// A request body may arrive as slowly as the client likes: only heads are timed.
#[tokio::test]
async fn slow_bodies_are_not_heads() {
    let app = HttpServer::start("app", ServerProtocol::Auto)
        .await
        .expect("server");
    let body = "b".repeat(15);
    // HTTP/1.1, by hand.
    let proxy1 = proxy("auto", "", app.addr(), "http1").await;
    let mut conn = TcpStream::connect(addr(&proxy1)).await.expect("connect");
    conn.write_all(
        format!(
            "POST /echo HTTP/1.1\r\nhost: app\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    for byte in body.as_bytes() {
        tokio::time::sleep(TRICKLE).await;
        conn.write_all(&[*byte])
            .await
            .expect("the body may take its time");
    }
    let head = read_head(&mut conn).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut echoed = Vec::new();
    while echoed.len() < body.len() + 20 {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await;
        match n {
            Ok(Ok(n)) if n > 0 => echoed.extend(&buf[..n]),
            _ => break,
        }
    }
    assert!(
        String::from_utf8_lossy(&echoed).contains(&body),
        "{echoed:?}"
    );

    // HTTP/2, from hyper's client, the body a slow stream of frames.
    let proxy2 = proxy("http2", "", app.addr(), "http2").await;
    let tcp = TcpStream::connect(addr(&proxy2)).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let chunks = futures_util::stream::unfold(0, |i| async move {
        (i < 15).then_some(())?;
        tokio::time::sleep(TRICKLE).await;
        Some((
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"b"))),
            i + 1,
        ))
    });
    let req = Request::post("http://app/echo")
        .body(StreamBody::new(Box::pin(chunks)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(echoed, body.as_bytes());
}

/// A `CONNECT` tunnel is a new connection: its first head is timed from its opening.
#[tokio::test]
async fn a_trickled_head_inside_a_connect_tunnel_is_cut() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: auto
    connect: true
    headerReadTimeout: {TIMEOUT}
    routes:
      - match: {{hosts: [books]}}
        backend: books
backends:
  - name: books
    endpoints: [{}]
"#,
        app.addr()
    ))
    .await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    conn.write_all(b"CONNECT books:80 HTTP/1.1\r\nhost: books:80\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut conn).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let total = long_head().len();
    assert_cut("tunnel", trickle(&mut conn, &long_head()).await, total);
    assert_eq!(app.requests(), 0);
}

/// An mTLS handshake is part of what comes before the first head: a client that opens
/// with a ClientHello and stalls is cut, and the handshake counted as timed out.
#[tokio::test]
async fn a_stalled_mtls_handshake_is_cut() {
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = proxy("auto", "mtls: strict", app.addr(), "http1").await;
    proxy
        .set_identity(store(&root(), &id("cart")))
        .expect("identity");
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    // A ClientHello record header and the start of its message, then the rest slowly.
    let mut hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
    hello.extend([0u8; 60]);
    let total = hello.len();
    assert_cut("mtls", trickle(&mut conn, &hello).await, total);
    assert_eventually!(metric(&proxy, &handshakes("inbound", "timeout")) == 1);
}

/// A head larger than `maxHeaderBytes` is answered 431, on HTTP/1 (on any listener
/// kind) and on HTTP/2; one just under it is served.
#[tokio::test]
async fn oversized_heads_get_431_on_http1_and_http2() {
    let app = HttpServer::start("app", ServerProtocol::Auto)
        .await
        .expect("server");
    for (protocol, backend) in [
        ("auto", "http1"),
        ("http1", "http1"),
        ("http2", "http2"),
        ("auto", "http2"),
    ] {
        let yaml = format!(
            r#"
maxHeaderBytes: 4096
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: {protocol}
    routes: [{{backend: app}}]
backends:
  - name: app
    protocol: {backend}
    endpoints: [{}]
"#,
            app.addr()
        );
        let proxy = start(&yaml).await;
        for (filler, want) in [
            (3000, StatusCode::OK),
            (5000, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ] {
            let status = if backend == "http1" {
                let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
                let req = format!(
                    "GET / HTTP/1.1\r\nhost: app\r\nx-filler: {}\r\n\r\n",
                    "a".repeat(filler)
                );
                conn.write_all(req.as_bytes()).await.expect("write");
                let head = read_head(&mut conn).await;
                head[9..12].parse::<u16>().expect("status")
            } else {
                let tcp = TcpStream::connect(addr(&proxy)).await.expect("connect");
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                let req = Request::get("http://app/")
                    .header("x-filler", "a".repeat(filler))
                    .body(Full::<Bytes>::default())
                    .expect("request");
                sender
                    .send_request(req)
                    .await
                    .expect("response")
                    .status()
                    .as_u16()
            };
            assert_eq!(
                status,
                want.as_u16(),
                "{protocol}/{backend}, {filler} bytes of header"
            );
        }
    }
}

#[test]
fn a_zero_header_read_timeout_is_refused() {
    let yaml = r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    headerReadTimeout: 0s
    routes: []
"#;
    let err = trellis_proxy::ProxyConfig::from_yaml(yaml).expect_err("refused");
    assert!(
        err.to_string().contains("listeners[0].headerReadTimeout"),
        "{err}"
    );
}
