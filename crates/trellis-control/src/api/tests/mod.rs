//! Tests of the HTTP API: requests through the router in-process (with a chosen peer
//! address) and, for a few end-to-end cases, through a real server on 127.0.0.1:0.

mod auth;
mod explain;
mod resources;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, ApiState};
use crate::ca::{CaSettings, MeshCa};
use crate::registry::Registry;
use crate::store::{MemoryStore, Store};

const TOKEN: &str = "test-admin-token";
const LOOPBACK: &str = "127.0.0.1:50000";

/// An API over an in-memory store, called in-process.
struct Api {
    store: Arc<MemoryStore>,
    registry: Arc<Registry>,
    ca: Arc<MeshCa>,
}

/// One request: who sends it, with which token.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: &'a str,
    peer: &'a str,
    token: Option<&'a str>,
}

impl Api {
    fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let ca = MeshCa::ephemeral(store.clone(), CaSettings::default()).expect("ca");
        Self {
            store,
            registry: Arc::new(Registry::new()),
            ca: Arc::new(ca),
        }
    }

    fn state(&self) -> ApiState {
        ApiState {
            store: Arc::clone(&self.store) as Arc<dyn Store>,
            registry: Arc::clone(&self.registry),
            admin_token: TOKEN.to_string(),
            proxy_api: None,
            ca: Arc::clone(&self.ca),
            membership: None,
            telemetry: None,
            taps: None,
        }
    }

    async fn call(&self, call: Call<'_>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(call.method).uri(call.path);
        if let Some(token) = call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = request
            .body(Body::from(call.body.to_string()))
            .expect("request");
        let peer: SocketAddr = call.peer.parse().expect("peer address");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router(self.state())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, json)
    }

    /// `GET` from loopback.
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Call::read(path)).await
    }

    /// `POST /api/v1/apply` with the admin token.
    async fn apply(&self, body: &str) -> (StatusCode, Value) {
        self.call(Call::write(Method::POST, "/api/v1/apply", body))
            .await
    }

    /// `DELETE` with the admin token.
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Call::write(Method::DELETE, path, "")).await
    }

    /// The number of entries in the store.
    async fn stored(&self) -> usize {
        self.store.list("").await.expect("list").0.len()
    }
}

impl<'a> Call<'a> {
    fn read(path: &'a str) -> Self {
        Self {
            method: Method::GET,
            path,
            body: "",
            peer: LOOPBACK,
            token: None,
        }
    }

    fn write(method: Method, path: &'a str, body: &'a str) -> Self {
        Self {
            method,
            path,
            body,
            peer: LOOPBACK,
            token: Some(TOKEN),
        }
    }
}

/// `(action, kind/namespace/name)` of each result of an apply response.
fn actions(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}/{}",
                r["action"].as_str().unwrap_or("?"),
                r["kind"].as_str().unwrap_or("?"),
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The status of condition `type_` of a resource as JSON (`"True"`, `"False"`).
fn condition(resource: &Value, type_: &str) -> (String, String, String) {
    let conditions = resource["status"]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions: {resource}"));
    let c = conditions
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {resource}"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

fn service(namespace: &str, name: &str, port: u16) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {port}}}]
"
    )
}

fn route(namespace: &str, name: &str, backend: &str, weight: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{kind: Service, name: web}}]
  rules:
    - backendRefs: [{{name: {backend}, port: 80, weight: {weight}}}]
"
    )
}
