//! Connect, request and idle timeouts, and the responses the proxy makes of failures.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{addr, simple, start, url};

/// A loopback address where connection attempts hang: a listener with a backlog of one
/// that never accepts, its queue already full, so the kernel drops further SYNs.
struct Blackhole {
    addr: SocketAddr,
    _socket: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

fn blackhole() -> Blackhole {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut queued = Vec::new();
    for _ in 0..4 {
        // Some of these are queued, the rest hang; stop at the first that hangs.
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(_) => break,
        }
    }
    Blackhole {
        addr,
        _socket: socket,
        _queued: queued,
    }
}

#[tokio::test]
async fn connect_timeout_is_504_with_a_reason() {
    let hole = blackhole();
    let yaml = simple("http1", "http1", &[hole.addr], "").replace(
        "    protocol: http1\n    endpoints",
        "    protocol: http1\n    connectTimeout: 200ms\n    endpoints",
    );
    let proxy = start(&yaml).await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["trellis-error"], "connect timeout");
}

#[tokio::test]
async fn request_timeout_is_504_and_counts() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "timeout: 200ms")).await;
    let client = HttpClient::http1();
    let slow = client
        .get(&url(&proxy, "/delay/5000"))
        .await
        .expect("response");
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.headers["trellis-error"], "request timeout");
    let fast = client
        .get(&url(&proxy, "/delay/1"))
        .await
        .expect("response");
    assert_eq!(fast.status, StatusCode::OK);
    let metrics = proxy.metrics().encode();
    assert!(
        metrics.contains(r#"status="504",class="5xx",grpc_status="",error="request timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn refused_connection_is_502_and_no_endpoints_is_503() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = start(&simple("auto", "http1", &[dead], "")).await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers["trellis-error"], "connect failed");

    let proxy = start(&simple("auto", "http1", &[], "")).await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers["trellis-error"], "no endpoints");
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    for protocol in ["http1", "tcp"] {
        let yaml = simple(protocol, "http1", &[server.addr()], "").replace(
            &format!("protocol: {protocol}\n    routes"),
            &format!("protocol: {protocol}\n    idleTimeout: 300ms\n    routes"),
        );
        let proxy = start(&yaml).await;
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 1024];
        let n = conn.read(&mut buf).await.expect("response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{protocol}");
        // Now silent: the proxy closes the connection after the idle timeout.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{protocol}: idle connection stayed open");
    }
}

#[tokio::test]
async fn busy_connections_are_not_idle() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let yaml = simple("http1", "http1", &[server.addr()], "").replace(
        "protocol: http1\n    routes",
        "protocol: http1\n    idleTimeout: 200ms\n    routes",
    );
    let proxy = start(&yaml).await;
    // A response that takes longer than the idle timeout is not cut off.
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/delay/600"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::OK);
}
