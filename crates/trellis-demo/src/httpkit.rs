//! HTTP plumbing the bookshop's services share: an HTTP/1.1 accept loop, JSON and HTML
//! responses, and a JSON client with a deadline.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::Instrument;

/// What every handler answers with.
pub(crate) type Response = http::Response<Full<Bytes>>;

/// How long the accept loop pauses after a failed accept (out of file descriptors,
/// say), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves HTTP/1.1 on `listener` with `handler`, one task per connection, until the
/// task is dropped.
pub(crate) async fn serve<F, Fut>(listener: TcpListener, role: &'static str, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(role, %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let handler = handler.clone();
        let span = tracing::debug_span!("conn", role, %peer);
        tokio::spawn(
            async move {
                let service = service_fn(move |req| {
                    let rsp = handler(req);
                    async move { Ok::<_, Infallible>(rsp.await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

/// `status` with `body` as JSON.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => respond(status, "application/json", bytes.into()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}"),
        ),
    }
}

/// `status` with `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string() }).to_string();
    respond(status, "application/json", body.into())
}

/// `status` with an HTML page.
pub(crate) fn html(status: StatusCode, page: String) -> Response {
    respond(status, "text/html; charset=utf-8", page.into())
}

/// 405 unless the request is a GET (or HEAD).
pub(crate) fn only_get<B>(req: &Request<B>) -> Option<Response> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    Some(error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed here; use GET", req.method()),
    ))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut rsp = http::Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("{url}: {reason}")]
    BadRequest { url: String, reason: String },
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("no answer from {url} within {} ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} answered with unexpected JSON: {error}")]
    Body {
        url: String,
        error: serde_json::Error,
    },
}

/// A pooled HTTP/1.1 client whose every call has a deadline.
#[derive(Clone, Debug)]
pub(crate) struct JsonClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

// === impl JsonClient ===

impl JsonClient {
    /// A client whose calls give up after `timeout`, connecting included.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }

    /// `GET url`, a 2xx answer's body read as `T`.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, CallError> {
        let (status, body) = self.send(Method::GET, url, None, None).await?;
        if !status.is_success() {
            return Err(CallError::Status {
                url: url.to_string(),
                status,
            });
        }
        serde_json::from_slice(&body).map_err(|error| CallError::Body {
            url: url.to_string(),
            error,
        })
    }

    /// Sends one request and reads the whole answer, whatever its status.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::BadRequest {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let unreachable = |cause: String| CallError::Unreachable {
            url: url.to_string(),
            cause,
        };
        let exchange = async {
            let rsp = self.inner.request(req).await.map_err(|e| cause(&e))?;
            let status = rsp.status();
            let body = rsp.into_body().collect().await.map_err(|e| cause(&e))?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })?
            .map_err(unreachable)
    }
}

/// The most specific causes of a transport error, joined
/// (`client error (Connect): tcp connect error: Connection refused (os error 111)`).
pub(crate) fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut next = error.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.dedup();
    parts.join(": ")
}
