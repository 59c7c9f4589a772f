//! `CONNECT` on an HTTP proxy port (`connect: true`), as clients that honour
//! `HTTP_PROXY` send it: tunnels to hosts the routes name carry HTTP/1.1, HTTP/2 and
//! TLS; a tunnel to any other host is refused with 403.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use trellis_proxy::Proxy;
use trellis_testkit::http::{HttpServer, ServerProtocol};
use trellis_testkit::tls::https::{https_get_on, HttpsServer, TestCa};

use super::{counter, start};

const EXTERNAL: &str = "api.payments.example";

/// A proxy port serving `CONNECT` to `books` (an HTTP/1.1 application) and to the
/// external host's TLS port.
async fn proxy(books: &HttpServer, payments: &HttpsServer) -> Proxy {
    start(&format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    protocol: auto
    connect: true
    routes:
      - match: {{hosts: [books]}}
        backend: books
      - match: {{hosts: ["{EXTERNAL}:443"]}}
        backend: payments
backends:
  - name: books
    endpoints: [{}]
  - name: payments
    endpoints: ["localhost:{}"]
"#,
        books.addr(),
        payments.addr().port()
    ))
    .await
}

/// Sends `CONNECT target` and reads the answer's head, lower case.
async fn connect(proxy: &Proxy, target: &str) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(super::addr(proxy))
        .await
        .expect("connect");
    conn.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = super::read_head(&mut conn).await;
    (conn, head)
}

async fn servers() -> (HttpServer, HttpsServer, TestCa) {
    let books = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("books");
    let ca = TestCa::new("payments CA");
    let payments = HttpsServer::start(&ca, &[EXTERNAL])
        .await
        .expect("payments");
    (books, payments, ca)
}

#[tokio::test]
async fn tunnels_carry_http1_http2_and_tls_to_the_hosts_routes_name() {
    let (books, payments, ca) = servers().await;
    let proxy = proxy(&books, &payments).await;

    // HTTP/1.1 inside: routed as a request of the listener.
    let (mut tunnel, head) = connect(&proxy, "books:80").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(&mut tunnel))
        .await
        .expect("http1 in the tunnel");
    let served = async {
        let req = Request::get("/")
            .header("host", "books")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello from books\n");
    };
    tokio::select! {
        () = served => {}
        ended = conn => panic!("tunnel closed early: {ended:?}"),
    }

    // HTTP/2 with prior knowledge inside, as a gRPC client sends it.
    let (tunnel, head) = connect(&proxy, "books:80").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tunnel))
            .await
            .expect("http2 in the tunnel");
    tokio::spawn(conn);
    let req = Request::get("http://books/headers")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-served-by"], "books");

    // TLS inside: passed through to the external host unopened.
    let (tunnel, head) = connect(&proxy, &format!("{EXTERNAL}:443")).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (status, body) = https_get_on(tunnel, EXTERNAL, ca.client_config(), "/")
        .await
        .expect("https in the tunnel");
    assert_eq!(status, 200);
    assert!(body.starts_with(&format!("sni={EXTERNAL}")), "{body}");
    assert_eq!(payments.server_names(), vec![Some(EXTERNAL.to_string())]);
    assert_eq!(books.requests(), 2);
}

#[tokio::test]
async fn a_tunnel_to_a_host_no_route_names_is_refused() {
    let (books, payments, _ca) = servers().await;
    let proxy = proxy(&books, &payments).await;
    for target in ["evil.example:443", "books.evil.example:80", "127.0.0.1:22"] {
        let (_, head) = connect(&proxy, target).await;
        assert!(head.starts_with("http/1.1 403"), "{target}: {head}");
        assert!(
            head.contains("trellis-error: connect refused"),
            "{target}: {head}"
        );
    }
    // The external host's name on a port no route gives it.
    let (_, head) = connect(&proxy, &format!("{EXTERNAL}:8443")).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let refused = r#"trellis_outbound_refused_total{listener="web",reason="no_route"}"#;
    assert_eq!(counter(&proxy, refused), 4);
    assert_eq!(books.requests(), 0);
}
