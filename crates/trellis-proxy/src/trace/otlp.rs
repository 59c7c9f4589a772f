//! Span export over OTLP, gRPC or HTTP/protobuf, to any OpenTelemetry collector.
//!
//! Spans go into a bounded queue; a task sends them in batches (up to `batch` spans,
//! or whatever a second gathered). A full queue drops the span and counts it: tracing
//! never slows or blocks a request, and a collector that is down costs a counter, not
//! memory. A batch the collector refuses is dropped and counted too.
//!
//! The messages are the OTLP trace protocol's (`opentelemetry/proto/trace/v1`), written
//! here with prost for the few fields the proxy sets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::Span;

/// Where spans go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (`/v1/traces` is added).
    pub endpoint: String,
    pub protocol: Protocol,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// Spans waiting to be sent, at most. Default 2048.
    pub queue: usize,
    /// Spans per export, at most. Default 512.
    pub batch: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Whether the span is the server side of a hop (inbound) or the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A finished span, as exported.
#[derive(Debug, Clone)]
pub struct Finished {
    pub span: Span,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    pub error: bool,
}

/// Counts of what happened to spans.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lost with a batch the collector did not take.
    pub failed: AtomicU64,
}

/// The handle requests record spans through.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Finished>,
    pub stats: Arc<ExportStats>,
}

impl Exporter {
    /// Starts the export task.
    pub fn start(config: ExportConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(ExportStats::default());
        tokio::spawn(run(config, rx, stats.clone()));
        Self { tx, stats }
    }

    /// Queues a span; drops (and counts) it when the queue is full.
    pub fn record(&self, span: Finished) {
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(config: ExportConfig, mut rx: mpsc::Receiver<Finished>, stats: Arc<ExportStats>) {
    let mut grpc = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < config.batch.max(1) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let request = wire::request(&config.service_name, &batch);
        let sent = match config.protocol {
            Protocol::HttpProtobuf => send_http(&config.endpoint, request).await,
            Protocol::Grpc => send_grpc(&config.endpoint, &mut grpc, request).await,
        };
        match sent {
            Ok(()) => stats.exported.fetch_add(count, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, spans = count, "span export failed");
                grpc = None;
                stats.failed.fetch_add(count, Ordering::Relaxed)
            }
        };
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn send_http(
    endpoint: &str,
    request: wire::ExportTraceServiceRequest,
) -> Result<(), BoxError> {
    use http_body_util::BodyExt;
    use prost::Message;
    let uri: http::Uri = format!("{}/v1/traces", endpoint.trim_end_matches('/')).parse()?;
    let authority = uri
        .authority()
        .ok_or("the endpoint has no host")?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let body = http_body_util::Full::new(bytes::Bytes::from(request.encode_to_vec()));
    let req = http::Request::post(uri.path())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)?;
    let response =
        tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await??;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if !status.is_success() {
        return Err(format!("the collector answered {status}").into());
    }
    Ok(())
}

async fn send_grpc(
    endpoint: &str,
    client: &mut Option<tonic::client::Grpc<tonic::transport::Channel>>,
    request: wire::ExportTraceServiceRequest,
) -> Result<(), BoxError> {
    if client.is_none() {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        *client = Some(tonic::client::Grpc::new(channel));
    }
    let grpc = client.as_mut().ok_or("no gRPC client")?;
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let codec = tonic_prost::ProstCodec::<
        wire::ExportTraceServiceRequest,
        wire::ExportTraceServiceResponse,
    >::default();
    grpc.unary(tonic::Request::new(request), path, codec)
        .await?;
    Ok(())
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The OTLP messages, with the protocol's field numbers.
pub mod wire {
    use super::{unix_nanos, Finished, Kind};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// 2: server, 3: client.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// 1: ok, 2: error.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }

    fn key_value(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                string_value: value.to_owned(),
            }),
        }
    }

    /// One export of `spans` from the service `service_name`.
    pub fn request(service_name: &str, spans: &[Finished]) -> ExportTraceServiceRequest {
        let spans = spans
            .iter()
            .map(|f| Span {
                trace_id: f.span.trace_id.to_vec(),
                span_id: f.span.span_id.to_vec(),
                parent_span_id: f.span.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
                name: f.name.clone(),
                kind: match f.kind {
                    Kind::Server => 2,
                    Kind::Client => 3,
                },
                start_time_unix_nano: unix_nanos(f.start),
                end_time_unix_nano: unix_nanos(f.end),
                attributes: f.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
                status: Some(Status {
                    message: String::new(),
                    code: if f.error { 2 } else { 1 },
                }),
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![key_value("service.name", service_name)],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "trellis-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        }
    }
}
