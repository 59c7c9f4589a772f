//! End to end: a real server on 127.0.0.1:0 and a hyper client, as the CLI uses it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::{route, service, Api, TOKEN};
use crate::api::router;

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(api: &Api) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(api.state()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { addr, client, task }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(header::CONTENT_TYPE, "application/yaml");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = self.client.request(request).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn serves_over_http_with_the_peer_address() {
    let api = Api::new();
    let server = Server::start(&api).await;
    let docs = format!(
        "{}---\n{}",
        service("shop", "web", 80),
        route("shop", "r", "web", 1)
    );
    // (method, path, body, token, status)
    let cases = [
        (
            Method::POST,
            "/api/v1/apply",
            docs.as_str(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/apply",
            docs.as_str(),
            Some(TOKEN),
            StatusCode::OK,
        ),
        // Loopback peers read without a token.
        (
            Method::GET,
            "/api/v1/resources/httproutes?namespace=shop",
            "",
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/resources/svc/shop/web",
            "",
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/resources/svc/shop/web",
            "",
            Some(TOKEN),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/resources/svc/shop/web",
            "",
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, body, token, want) in cases {
        let what = format!("{method} {path}");
        let (status, json) = server.send(method, path, body, token).await;
        assert_eq!(status, want, "{what}: {json}");
    }
    let (_, list) = server
        .send(Method::GET, "/api/v1/resources/httproutes", "", None)
        .await;
    assert_eq!(list["items"][0]["metadata"]["name"], "r");
    assert_eq!(
        list["items"][0]["status"]["conditions"][1]["status"], "False",
        "web was deleted"
    );
}

/// Eight clients apply different versions of one object at once, without
/// `resourceVersion`. Each either succeeds or reports a conflict, and the object's
/// generation counts exactly the successful changes: no update was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_lose_nothing() {
    let api = Api::new();
    let server = Arc::new(Server::start(&api).await);
    let mut tasks = Vec::new();
    for weight in 1..=8 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let doc = route("shop", "r", "web", weight);
            server
                .send(Method::POST, "/api/v1/apply", &doc, Some(TOKEN))
                .await
        }));
    }
    let mut changes = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            StatusCode::OK => {
                let action = body["results"][0]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    ["created", "configured"].contains(&action.as_str()),
                    "{body}"
                );
                changes += 1;
            }
            StatusCode::CONFLICT => {
                assert!(
                    body["error"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("conflict: "),
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    let (_, r) = server
        .send(Method::GET, "/api/v1/resources/httproutes/shop/r", "", None)
        .await;
    assert_eq!(r["metadata"]["generation"], changes, "{r}");
    assert_eq!(changes, 8, "the retry loop absorbs 8 writers");
    let (_, health) = server.send(Method::GET, "/api/v1/health", "", None).await;
    assert_eq!(
        health["revision"], 8,
        "one write per change, none lost or doubled"
    );
}
