//! The proxy's tracer: the configured sampling and exporter, swapped whole when a
//! reload changes `tracing:`, read once per request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::otlp::{ExportConfig, Exporter, Protocol};
use crate::config::{OtlpProtocol, TracingConfig};

/// What requests trace with.
#[derive(Debug)]
pub struct Tracer {
    pub config: TracingConfig,
    pub exporter: Exporter,
}

/// The tracer in force, if tracing is configured.
#[derive(Debug, Default)]
pub struct Tracing {
    current: ArcSwapOption<Tracer>,
}

impl Tracing {
    /// Applies a configuration: a new exporter when it changed, none when unset.
    pub fn configure(&self, config: Option<&TracingConfig>) {
        let current = self.current.load();
        if current.as_ref().map(|t| &t.config) == config {
            return;
        }
        let next = config.map(|config| {
            let exporter = Exporter::start(ExportConfig {
                endpoint: config.endpoint.clone(),
                protocol: match config.protocol {
                    OtlpProtocol::Grpc => Protocol::Grpc,
                    OtlpProtocol::Http => Protocol::HttpProtobuf,
                },
                service_name: config.service_name.clone(),
                queue: 2048,
                batch: 512,
            });
            Arc::new(Tracer {
                config: config.clone(),
                exporter,
            })
        });
        self.current.store(next);
    }

    pub fn current(&self) -> Option<Arc<Tracer>> {
        self.current.load_full()
    }
}
