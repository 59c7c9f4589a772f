//! `tracing:` in the proxy configuration: spans for the requests the proxy carries,
//! exported over OTLP.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where spans go and how many traces are recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector: `http://host:4317` for gRPC, `http://host:4318` for HTTP.
    pub endpoint: String,
    /// `grpc` (default) or `http` (HTTP/protobuf).
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces recorded, 0 to 1; a request that arrives with a sampling
    /// decision keeps it. Default 0.01.
    #[serde(default = "default_sampling")]
    pub sampling: f64,
    /// `service.name` of the spans. Default `trellis-proxy`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

fn default_sampling() -> f64 {
    0.01
}

fn default_service_name() -> String {
    "trellis-proxy".into()
}

impl TracingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling) {
            return Err(ConfigError::invalid(
                "tracing.sampling",
                format!("must be between 0 and 1, got {}", self.sampling),
            ));
        }
        let uri: Result<http::Uri, _> = self.endpoint.parse();
        if !uri.is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some()) {
            return Err(ConfigError::invalid(
                "tracing.endpoint",
                format!("expected http://HOST:PORT, got {:?}", self.endpoint),
            ));
        }
        Ok(())
    }
}
