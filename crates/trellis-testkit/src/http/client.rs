//! A pooled HTTP client for tests that collects whole responses.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::BoxError;

/// A complete response: head, collected body and trailers.
#[derive(Clone, Debug)]
pub struct TestResponse {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body, every frame concatenated.
    pub body: Bytes,
    /// Trailers, if the response carried any.
    pub trailers: Option<HeaderMap>,
}

/// A pooled client (hyper-util's legacy client) that speaks either
/// HTTP/1.1 or HTTP/2 with prior knowledge (h2c) over plain TCP. Clones
/// share the connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

// === impl TestResponse ===

impl TestResponse {
    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// === impl HttpClient ===

impl HttpClient {
    /// A client speaking HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client speaking HTTP/2 with prior knowledge (h2c).
    pub fn http2() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends `GET url` and collects the response.
    pub async fn get(&self, url: &str) -> Result<TestResponse, BoxError> {
        self.send(Request::get(url).body(Full::default())?).await
    }

    /// Sends `POST url` with `body` and collects the response.
    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Result<TestResponse, BoxError> {
        self.send(Request::post(url).body(Full::new(body.into()))?)
            .await
    }

    /// Sends `req` and collects the response body and trailers.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<TestResponse, BoxError> {
        let (head, body) = self.inner.request(req).await?.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(TestResponse {
            status: head.status,
            headers: head.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }
}
