//! `trellis edges SERVICE`: who calls the service and whom it calls, with the callers'
//! identities and whether the calls are mutual TLS, over a window.

use serde_json::Value;

use crate::client::{segment, Client, ClientArgs};
use crate::resources::table::align;
use crate::resources::{emit_items, Output};

#[derive(Debug, clap::Args)]
pub struct EdgesArgs {
    service: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// How far back (`30s`, `1m`, `5m`; at most 10m).
    #[arg(long, default_value = "1m")]
    window: String,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: EdgesArgs) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/edges?service={}&namespace={}&window={}",
        segment(&args.service),
        segment(&args.namespace),
        segment(&args.window)
    );
    let answer = Client::new(&args.client)?.get(&path).await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    emit_items(&items, args.output, table)
}

fn table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let source = e["source"].as_str().unwrap_or_default();
            vec![
                if source.is_empty() {
                    "(no identity)".to_owned()
                } else {
                    source.to_owned()
                },
                format!(
                    "{}.{}",
                    e["destination"].as_str().unwrap_or_default(),
                    e["namespace"].as_str().unwrap_or_default()
                ),
                if e["mtls"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                e["successRate"]
                    .as_f64()
                    .map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0)),
                format!("{:.1}", e["requestsPerSecond"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    align(&["SOURCE", "DESTINATION", "MTLS", "SUCCESS", "RPS"], &rows)
}
