//! `trellis tap SERVICE`: live request metadata from the service's proxies, one line per
//! request, as it happens (never a body). Needs the admin token.

use serde_json::Value;

use crate::client::{segment, Client, ClientArgs};
use crate::resources::{emit, Output};

#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// The service whose proxies report (requests to it and requests it makes).
    service: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Only paths starting with this.
    #[arg(long)]
    path: Option<String>,
    /// Only this method.
    #[arg(long)]
    method: Option<String>,
    /// Only this response status.
    #[arg(long)]
    status: Option<u16>,
    /// Only requests to this service (matched in the authority or the backend).
    #[arg(long)]
    to: Option<String>,
    /// Stop after this many requests.
    #[arg(long)]
    limit: Option<u64>,
    /// Stop after this long (`30s`, `5m`; at most `1h`).
    #[arg(long, default_value = "60s")]
    duration: String,
    /// `table` (one line per request) or `json` (the events as JSON lines).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: TapArgs) -> anyhow::Result<()> {
    let mut path = format!(
        "/api/v1/tap?service={}&namespace={}&duration={}",
        segment(&args.service),
        segment(&args.namespace),
        segment(&args.duration)
    );
    let text_params = [
        ("path", &args.path),
        ("method", &args.method),
        ("to", &args.to),
    ];
    for (key, value) in text_params {
        if let Some(value) = value {
            path.push_str(&format!("&{key}={}", segment(value)));
        }
    }
    if let Some(status) = args.status {
        path.push_str(&format!("&status={status}"));
    }
    if let Some(limit) = args.limit {
        path.push_str(&format!("&limit={limit}"));
    }
    let json = matches!(args.output, Output::Json | Output::Yaml);
    Client::new(&args.client)?
        .stream_lines(&path, |line| {
            if json {
                return emit(&format!("{}\n", String::from_utf8_lossy(line)));
            }
            let event: Value = serde_json::from_slice(line)?;
            emit(&format!("{}\n", describe(&event)))
        })
        .await
}

/// One request as a line: direction, who called whom, what, and how it went.
fn describe(e: &Value) -> String {
    let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let who = |id: String| {
        if id.is_empty() {
            "-".to_owned()
        } else {
            id.rsplit("/sa/").next().unwrap_or(&id).to_owned()
        }
    };
    let status = match e["grpcStatus"].as_u64() {
        Some(grpc) => format!("{} grpc={grpc}", e["status"].as_u64().unwrap_or(0)),
        None => e["status"].as_u64().unwrap_or(0).to_string(),
    };
    format!(
        "{} {} {} -> {} {} {}{} {} {:.1}ms {}B",
        text("workload"),
        text("direction"),
        who(text("sourceIdentity")),
        who(text("destinationIdentity")),
        text("method"),
        text("authority"),
        text("path"),
        status,
        e["latencyMicros"].as_f64().unwrap_or(0.0) / 1000.0,
        e["responseBytes"].as_u64().unwrap_or(0),
    )
}
