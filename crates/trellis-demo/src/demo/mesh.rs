//! What the demo tells the control plane, through its HTTP API: the bookshop's
//! Services and routes, and the questions it asks while starting (are the proxies
//! synced, does the shop answer).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http::Method;
use serde_json::Value;

use crate::catalog::Book;
use crate::httpkit::{CallError, JsonClient};
use crate::load::LoadReport;

/// The resources `trellis demo` applies before it starts any workload: `ratings` speaks
/// gRPC, its versions are Services of their own, and a GRPCRoute sends every call to v1.
/// `books`, `web` and `loadgen` are the implicit Services of their `app` labels.
pub const MESH_YAML: &str = r#"# The bookshop's Services and routes, as `trellis demo` applied them.
# Apply this file again to send every ratings call back to v1.
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings-v1}
spec:
  selector: {app: ratings, version: v1}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings-v2}
spec:
  selector: {app: ratings, version: v2}
  ports: [{port: 50051, appProtocol: grpc}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: ratings}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
    - backendRefs:
        - {name: ratings-v1, weight: 100}
"#;

/// The canary `trellis demo` writes for the newcomer to apply: 90% of ratings calls
/// to v1, 10% to v2.
pub const CANARY_YAML: &str = r#"# Canary: 90% of the calls to ratings go to ratings-v1 (4 stars), 10% to
# ratings-v2 (5 stars). Apply with `trellis apply -f canary.yaml`; change the weights
# and apply again to shift more traffic.
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: ratings}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
    - backendRefs:
        - {name: ratings-v1, weight: 90}
        - {name: ratings-v2, weight: 10}
"#;

/// How long one call to the control plane or the shop may take while starting.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The control plane's HTTP API, with the admin token.
pub(crate) struct ControlApi {
    base: String,
    token: String,
    client: JsonClient,
}

// === impl ControlApi ===

impl ControlApi {
    pub(crate) fn new(http_addr: SocketAddr, token: String) -> Self {
        Self {
            base: format!("http://{http_addr}"),
            token,
            client: JsonClient::new(CALL_TIMEOUT),
        }
    }

    /// Applies YAML documents, as `trellis apply -f` does.
    pub(crate) async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/apply", self.base);
        let (status, body) = self
            .client
            .send(
                Method::POST,
                &url,
                Some(&self.token),
                Some(yaml.to_string()),
            )
            .await
            .context("cannot apply the bookshop's resources")?;
        if status.is_success() {
            return Ok(());
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the control plane refused the bookshop's resources ({status}): {reason}")
    }

    /// How many proxies are connected and serving the latest configuration.
    pub(crate) async fn synced_proxies(&self) -> Result<usize, CallError> {
        let url = format!("{}/api/v1/proxies", self.base);
        let list: Value = self.client.get_json(&url).await?;
        let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
        Ok(items.iter().filter(|p| p["state"] == "synced").count())
    }
}

/// Whether the shop at `entry` (`http://ADDR`) answers a product with its rating.
pub(crate) async fn shop_answers(client: &JsonClient, entry: &str) -> bool {
    let url = format!("{entry}/api/products/1");
    client
        .get_json::<Book>(&url)
        .await
        .is_ok_and(|book| book.rating.is_some())
}

/// The load generator's counts, from its `/stats`.
pub(crate) async fn load_stats(client: &JsonClient, stats: &str) -> Result<LoadReport, CallError> {
    client.get_json(stats).await
}

#[cfg(test)]
mod tests {
    use trellis_api::{parse_documents, Kind};

    use super::*;

    #[test]
    fn the_resources_are_valid() {
        for (name, yaml, kinds) in [
            (
                "mesh",
                MESH_YAML,
                &[Kind::Service, Kind::Service, Kind::Service, Kind::GRPCRoute][..],
            ),
            ("canary", CANARY_YAML, &[Kind::GRPCRoute][..]),
        ] {
            let docs = parse_documents(yaml).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let got: Vec<Kind> = docs.iter().map(|r| r.kind).collect();
            assert_eq!(got, kinds, "{name}");
            for doc in &docs {
                doc.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}
