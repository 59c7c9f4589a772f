//! Each load balancer's distribution over real endpoints, and consistent hashing's
//! stickiness.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::{start, url, BURSTY};

fn config(policy: &str, endpoints: &[(SocketAddr, u32)]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(a, w)| format!("{{address: \"{a}\", weight: {w}}}"))
        .collect();
    one_backend(policy, &endpoints, "")
}

/// One listener sending everything to backend `app`, balanced by `policy` over
/// `endpoints` (each a YAML flow mapping), with `more` lines under the backend.
pub fn one_backend(policy: &str, endpoints: &[String], more: &str) -> String {
    format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes: [{{backend: app}}]
backends:
  - name: app
    loadBalancer: {policy}
    endpoints: [{}]
{more}"#,
        endpoints.join(", ")
    )
}

/// Who served each of `n` requests (`x-served-by`; `failed` for any answer but 200).
pub async fn served_by(client: &HttpClient, url: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let resp = client.get(url).await.expect("response");
        let name = match resp.status {
            StatusCode::OK => resp.headers["x-served-by"]
                .to_str()
                .expect("ascii")
                .to_string(),
            _ => "failed".to_string(),
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_follows_weights_exactly() {
    let a = HttpServer::start("a", ServerProtocol::Http1)
        .await
        .expect("server");
    let b = HttpServer::start("b", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&config("round-robin", &[(a.addr(), 3), (b.addr(), 1)])).await;
    let counts = served_by(&HttpClient::http1(), &url(&proxy, "/"), 400).await;
    assert_eq!((counts["a"], counts["b"]), (300, 100));
}

#[tokio::test]
async fn least_request_sends_new_requests_to_the_idle_endpoint() {
    let a = HttpServer::start("a", ServerProtocol::Http1)
        .await
        .expect("server");
    let b = HttpServer::start("b", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&config("least-request", &[(a.addr(), 1), (b.addr(), 1)])).await;
    let client = HttpClient::http1();
    let long = tokio::spawn({
        let (client, url) = (client.clone(), url(&proxy, "/delay/3000"));
        async move { client.get(&url).await }
    });
    assert_eventually!(a.requests() + b.requests() == 1);
    let busy = if a.requests() == 1 { "a" } else { "b" };
    let counts = served_by(&client, &url(&proxy, "/"), 30).await;
    assert_eq!(
        counts.get(busy),
        None,
        "requests went to the busy endpoint: {counts:?}"
    );
    long.abort();
}

/// A server that answers every request after `delay`.
async fn slow_server(delay: Duration) -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"slow\n")));
                    resp.headers_mut()
                        .insert("x-served-by", "slow".parse().expect("value"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn ewma_sends_most_requests_to_the_faster_endpoint() {
    let fast = HttpServer::start("fast", ServerProtocol::Http1)
        .await
        .expect("server");
    let slow = slow_server(Duration::from_millis(25)).await;
    let proxy = start(&config("ewma", &[(fast.addr(), 1), (slow, 1)])).await;
    let counts = served_by(&HttpClient::http1(), &url(&proxy, "/"), 60).await;
    let slow_count = counts.get("slow").copied().unwrap_or(0);
    assert!(
        slow_count <= 6,
        "slow endpoint got {slow_count} of 60: {counts:?}"
    );
}

#[tokio::test]
async fn ewma_spreads_concurrent_load_over_equal_endpoints() {
    let a = HttpServer::start("a", ServerProtocol::Http1)
        .await
        .expect("server");
    let b = HttpServer::start("b", ServerProtocol::Http1)
        .await
        .expect("server");
    // Forty at once: past the adaptive limit's start (20), which is not what this
    // test is about.
    let proxy = start(&(config("ewma", &[(a.addr(), 1), (b.addr(), 1)]) + BURSTY)).await;
    let client = HttpClient::http1();
    let requests = (0..40).map(|_| {
        let (client, url) = (client.clone(), url(&proxy, "/delay/20"));
        async move { client.get(&url).await }
    });
    let results = futures_util::future::join_all(requests).await;
    assert!(results.iter().all(|r| r.is_ok()));
    // With requests in flight counted, neither endpoint takes everything.
    assert!(
        a.requests() >= 8 && b.requests() >= 8,
        "a={} b={}",
        a.requests(),
        b.requests()
    );
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_endpoint() {
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(
            HttpServer::start(&format!("e{i}"), ServerProtocol::Http1)
                .await
                .expect("server"),
        );
    }
    let endpoints: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let endpoints = endpoints.join(", ");
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes: [{{match: {{path: {{prefix: /cookie}}}}, backend: by-session}}, {{backend: by-user}}]
backends:
  - name: by-user
    loadBalancer: consistent-hash
    hashOn: {{header: x-user}}
    endpoints: [{endpoints}]
  - name: by-session
    loadBalancer: consistent-hash
    hashOn: {{cookie: session}}
    endpoints: [{endpoints}]
"#
    );
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();
    let served_by = |resp: &trellis_testkit::http::TestResponse| {
        resp.headers["x-served-by"]
            .to_str()
            .expect("ascii")
            .to_string()
    };
    let mut used = std::collections::HashSet::new();
    for user in 0..20 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let req = Request::get(url(&proxy, "/"))
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            seen.insert(served_by(&client.send(req).await.expect("response")));
            let req = Request::get(url(&proxy, "/cookie"))
                .header("cookie", format!("theme=dark; session=s-{user}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            seen.insert(format!(
                "cookie:{}",
                served_by(&client.send(req).await.expect("response"))
            ));
        }
        assert_eq!(seen.len(), 2, "user {user} moved: {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() > 2, "twenty keys all on one endpoint: {used:?}");
    // Without the key the request still goes somewhere.
    let resp = client.get(&url(&proxy, "/")).await.expect("response");
    assert_eq!(resp.status, StatusCode::OK);
}
