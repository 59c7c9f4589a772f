//! Opaque TCP: declared and detected, half-close, server-speaks-first protocols, and
//! connections split by weight.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_testkit::assert_eventually;
use trellis_testkit::tcp::{SpeakFirstServer, TcpEchoServer};

use super::{addr, simple, start};

#[tokio::test]
async fn declared_tcp_echoes_and_half_closes() {
    let server = TcpEchoServer::start().await.expect("server");
    let proxy = start(&simple("tcp", "http1", &[server.addr()], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_all(&payload).await.expect("write");
    // Half-close: we are done sending, but the echo must still arrive in full.
    conn.shutdown().await.expect("shutdown write");
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed)
        .await
        .expect("read until the server closes");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);

    let metrics = proxy.metrics().encode();
    assert_eventually!(
        proxy.metrics().encode().contains(
            "trellis_tcp_read_bytes_total{listener=\"web\",route=\"0\",backend=\"app\"} 200000"
        ),
        "tcp bytes not counted: {metrics}"
    );
}

#[tokio::test]
async fn detected_tcp_carries_bytes_that_look_like_nothing_known() {
    let server = TcpEchoServer::start().await.expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    conn.write_all(b"\x00\x01binary protocol\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 19];
    conn.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"\x00\x01binary protocol\r\n");
}

#[tokio::test]
async fn server_speaks_first_protocols_work_through_auto_detection() {
    let server = SpeakFirstServer::start(b"220 mail.example ESMTP ready\r\n")
        .await
        .expect("server");
    let yaml = simple("auto", "http1", &[server.addr()], "")
        .replace("protocol: auto", "protocol: auto\n    detectTimeout: 100ms");
    let proxy = start(&yaml).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    let mut greeting = [0u8; 30];
    conn.read_exact(&mut greeting)
        .await
        .expect("greeting arrives although we sent nothing");
    assert_eq!(&greeting, b"220 mail.example ESMTP ready\r\n");
    conn.write_all(b"EHLO me\r\n").await.expect("write");
    let mut echo = [0u8; 9];
    conn.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"EHLO me\r\n");
}

#[tokio::test]
async fn unreachable_tcp_backend_closes_the_client_connection() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = start(&simple("tcp", "http1", &[dead], "")).await;
    let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
    let mut buf = Vec::new();
    let n = conn.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
    assert_eventually!(proxy.metrics().encode().contains(
        "trellis_tcp_connect_errors_total{listener=\"web\",route=\"0\",backend=\"app\"} 1"
    ));
}

#[tokio::test]
async fn tcp_connections_are_split_by_weight() {
    let primary = TcpEchoServer::start().await.expect("server");
    let replica = TcpEchoServer::start().await.expect("server");
    let never = TcpEchoServer::start().await.expect("server");
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: tcp
    routes:
      - backends: [{{name: primary, weight: 3}}, {{name: replica, weight: 1}}, {{name: never, weight: 0}}]
backends:
  - {{name: primary, endpoints: ["{}"]}}
  - {{name: replica, endpoints: ["{}"]}}
  - {{name: never, endpoints: ["{}"]}}
"#,
        primary.addr(),
        replica.addr(),
        never.addr()
    );
    let proxy = start(&yaml).await;
    const CONNECTIONS: u64 = 400;
    for i in 0..CONNECTIONS {
        let mut conn = TcpStream::connect(addr(&proxy)).await.expect("connect");
        let payload = format!("connection {i}");
        conn.write_all(payload.as_bytes()).await.expect("write");
        conn.shutdown().await.expect("shutdown write");
        let mut echoed = Vec::new();
        conn.read_to_end(&mut echoed).await.expect("echo");
        assert_eq!(echoed, payload.as_bytes());
    }
    // Each connection was echoed, so each has reached its server.
    let (p, r) = (primary.connections(), replica.connections());
    assert_eq!(p + r, CONNECTIONS);
    assert_eq!(never.connections(), 0, "weight 0 takes nothing");
    // 3:1 over 400 connections: 300 expected, a standard deviation of about 9.
    assert!((240..=360).contains(&p), "primary {p}, replica {r}");
}

/// Whether a new connection through the proxy echoes a line back.
async fn echoes(proxy: &trellis_proxy::Proxy) -> bool {
    let Ok(mut conn) = TcpStream::connect(addr(proxy)).await else {
        return false;
    };
    let mut buf = [0u8; 5];
    conn.write_all(b"ping\n").await.is_ok()
        && conn.read_exact(&mut buf).await.is_ok()
        && &buf == b"ping\n"
}

#[tokio::test]
async fn max_connections_closes_what_overflows_at_once() {
    let server = TcpEchoServer::start().await.expect("server");
    let mut yaml = simple("tcp", "http1", &[server.addr()], "");
    yaml.push_str("    resilience: {circuitBreaker: {maxConnections: 1}}\n");
    let proxy = start(&yaml).await;

    // The first connection is relayed and holds the backend's one connection.
    let mut held = TcpStream::connect(addr(&proxy)).await.expect("connect");
    held.write_all(b"hold\n").await.expect("write");
    let mut buf = [0u8; 5];
    held.read_exact(&mut buf).await.expect("echo");

    // The next one is closed without reaching the backend: nothing comes back.
    let mut refused = TcpStream::connect(addr(&proxy)).await.expect("accepted");
    let _ = refused.write_all(b"over\n").await;
    let mut rest = Vec::new();
    let read = refused.read_to_end(&mut rest).await;
    assert!(read.is_err() || rest.is_empty(), "got {rest:?}");
    let series = r#"trellis_circuit_rejections_total{backend="app",reason="max-connections"}"#;
    assert_eq!(super::counter(&proxy, series), 1);

    // Closing the first frees its place.
    drop(held);
    assert_eventually!(echoes(&proxy).await, "a connection after the first closed");
}
