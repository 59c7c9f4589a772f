//! `tls` listeners: connections routed by the server name of their ClientHello, with
//! every byte (the ClientHello included) passed through unopened.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_proxy::Proxy;
use trellis_testkit::assert_eventually;
use trellis_testkit::tcp::TcpEchoServer;
use trellis_testkit::tls::client_hello;

use super::{addr, counter, start};

/// Sends `bytes` through the proxy and returns what came back before the connection
/// closed.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr(proxy)).await.expect("connect");
    conn.write_all(bytes).await.expect("write");
    conn.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await.ok();
    back
}

fn config(books: &TcpEchoServer, shop: &TcpEchoServer, fallback: Option<&TcpEchoServer>) -> String {
    let mut yaml = r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: tls
    routes:
      - name: books
        match: {hosts: [books.example]}
        backend: books
      - name: shop
        match: {hosts: ["*.shop.example"]}
        backend: shop
"#
    .to_string();
    if fallback.is_some() {
        yaml.push_str("      - name: other\n        backend: other\n");
    }
    yaml.push_str(&format!(
        "backends:\n  - name: books\n    endpoints: [{}]\n  - name: shop\n    endpoints: [{}]\n",
        books.addr(),
        shop.addr()
    ));
    if let Some(other) = fallback {
        yaml.push_str(&format!(
            "  - name: other\n    endpoints: [{}]\n",
            other.addr()
        ));
    }
    yaml
}

#[tokio::test]
async fn connections_go_where_their_server_name_says() {
    let (books, shop, other) = (
        TcpEchoServer::start().await.expect("books"),
        TcpEchoServer::start().await.expect("shop"),
        TcpEchoServer::start().await.expect("other"),
    );
    let proxy = start(&config(&books, &shop, Some(&other))).await;
    let cases = [
        ("books.example", &books),
        ("BOOKS.example", &books),
        ("cart.shop.example", &shop),
        ("api.cart.shop.example", &shop),
        ("shop.example", &other),
        ("ratings.example", &other),
        ("10.0.0.7", &other),
    ];
    for (server_name, server) in cases {
        let before = server.connections();
        let mut sent = client_hello(server_name);
        sent.extend_from_slice(b"and then the application's own bytes");
        let back = exchange(&proxy, &sent).await;
        assert!(back == sent, "{server_name}: bytes changed on the way");
        assert_eq!(server.connections(), before + 1, "{server_name}");
    }
    assert_eventually!(
        counter(
            &proxy,
            r#"trellis_connections_total{listener="web",protocol="tls"}"#
        ) == 7
    );
}

#[tokio::test]
async fn connections_without_a_route_or_without_tls_are_closed_and_counted() {
    let (books, shop) = (
        TcpEchoServer::start().await.expect("books"),
        TcpEchoServer::start().await.expect("shop"),
    );
    let proxy = start(&config(&books, &shop, None)).await;
    let back = exchange(&proxy, &client_hello("ratings.example")).await;
    assert!(back.is_empty());
    let back = exchange(&proxy, b"GET / HTTP/1.1\r\nhost: books.example\r\n\r\n").await;
    assert!(back.is_empty());
    assert_eq!(books.connections() + shop.connections(), 0);
    let refused = |reason: &str| {
        format!(r#"trellis_outbound_refused_total{{listener="web",reason="{reason}"}}"#)
    };
    assert_eventually!(counter(&proxy, &refused("no_route")) == 1);
    assert_eventually!(counter(&proxy, &refused("not_tls")) == 1);
}
