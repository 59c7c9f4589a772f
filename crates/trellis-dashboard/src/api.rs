//! The dashboard's only way to the mesh: the control plane's HTTP API, over loopback to
//! the API's own listener, with the browser's admin token when it has one.
//!
//! The types here are the parts of the API's JSON answers the pages show; fields the
//! pages do not use are ignored, so the API can grow without breaking the dashboard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Why the API could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the control plane's API: {0}")]
    Unreachable(String),
    /// The API answered with an error status; `message` is its `{"error": …}`.
    #[error("the control plane answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("the control plane's answer is not the JSON expected: {0}")]
    Malformed(String),
}

/// A client of one control plane's HTTP API.
#[derive(Clone)]
pub struct ApiClient {
    /// `http://127.0.0.1:PORT`: the API's listener, reached over loopback.
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl ApiClient {
    /// A client of the API listening on `listen`. An unspecified address (`0.0.0.0`,
    /// `[::]`) is reached on the loopback address of its family.
    pub fn new(listen: SocketAddr) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            base: format!("http://{}", SocketAddr::new(ip, listen.port())),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `GET path` (`/api/v1/…`) with the token, if any, and returns the response
    /// whatever its status.
    pub async fn open(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Response<Incoming>, ApiError> {
        let mut request = Request::get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        self.client
            .request(request)
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))
    }

    /// `GET path` as JSON of type `T`; an error status becomes [`ApiError::Refused`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<T, ApiError> {
        let response = self.open(path, token).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ApiError::Refused { status, message });
        }
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(format!("{path}: {e}")))
    }
}

/// `{"items": [...]}`, the shape of every list the API answers.
#[derive(Debug, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// One row of `GET /api/v1/stat`, as `trellis stat` shows it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StatRow {
    pub name: String,
    pub namespace: String,
    pub requests_per_second: f64,
    /// Share of requests not answered 5xx; `None` without requests.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One caller → callee edge of `GET /api/v1/edges`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeRow {
    /// The caller's SPIFFE ID; empty when it called without mTLS.
    pub source: String,
    pub destination: String,
    pub namespace: String,
    pub mtls: bool,
    pub requests: f64,
    pub requests_per_second: f64,
    pub success_rate: Option<f64>,
}

impl EdgeRow {
    /// The calling service: the service account of the caller's SPIFFE ID, which is the
    /// service name for workloads `trellis run` registers; `None` without an identity.
    pub fn source_service(&self) -> Option<(&str, &str)> {
        let path = self.source.split_once("/ns/")?.1;
        let (namespace, account) = path.split_once("/sa/")?;
        Some((namespace, account))
    }
}

/// One proxy of `GET /api/v1/proxies`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Proxy {
    pub workload: String,
    pub namespace: String,
    pub service: String,
    pub address: String,
    pub proxy_version: String,
    pub sent_version: u64,
    pub acked_version: u64,
    /// `pending`, `synced`, `nacked` or `disconnected`.
    pub state: String,
    pub last_error: Option<String>,
    pub identity: String,
    /// RFC 3339.
    pub certificate_expires: Option<String>,
}

/// The path of `GET /api/v1/stat` for `by` (`service`, `workload`, `route`) over the
/// dashboard's window.
pub fn stat_path(by: &str, name: Option<&str>) -> String {
    let mut path = format!("/api/v1/stat?by={by}&window={WINDOW}");
    if let Some(name) = name {
        path.push_str(&format!("&name={}", encode(name)));
    }
    path
}

/// The window of every figure the dashboard shows: `trellis stat`'s default, so the
/// two agree.
pub const WINDOW: &str = "1m";

/// A query-string value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_service_is_the_service_account() {
        let edge = EdgeRow {
            source: "spiffe://trellis.local/ns/shop/sa/web".into(),
            ..EdgeRow::default()
        };
        assert_eq!(edge.source_service(), Some(("shop", "web")));
        assert_eq!(EdgeRow::default().source_service(), None);
    }

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        let client = ApiClient::new("0.0.0.0:7180".parse().expect("address"));
        assert_eq!(client.base, "http://127.0.0.1:7180");
        let client = ApiClient::new("[::]:7180".parse().expect("address"));
        assert_eq!(client.base, "http://[::1]:7180");
    }
}
