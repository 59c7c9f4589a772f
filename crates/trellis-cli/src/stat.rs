//! `trellis stat [service|workload|route] [NAME] [--window 1m]`: success rate, requests
//! per second and latency percentiles over a window, from the proxies' metrics as the
//! control planes scrape them.

use serde_json::Value;

use crate::client::{segment, Client, ClientArgs};
use crate::resources::table::align;
use crate::resources::{emit_items, Output};

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// What to group by: `service` (requests its workloads received), `workload`, or
    /// `route` (requests sent through it).
    #[arg(value_parser = ["service", "services", "svc", "workload", "workloads", "wl", "route", "routes"])]
    by: String,
    /// Only this one.
    name: Option<String>,
    /// Only this namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// How far back (`30s`, `1m`, `5m`; at most 10m).
    #[arg(long, default_value = "1m")]
    window: String,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: StatArgs) -> anyhow::Result<()> {
    let by = match args.by.as_str() {
        "service" | "services" | "svc" => "service",
        "workload" | "workloads" | "wl" => "workload",
        _ => "route",
    };
    let mut path = format!("/api/v1/stat?by={by}&window={}", segment(&args.window));
    if let Some(name) = &args.name {
        path.push_str(&format!("&name={}", segment(name)));
    }
    let answer = Client::new(&args.client)?.get(&path).await?;
    let items: Vec<Value> = answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| {
            args.namespace
                .as_deref()
                .is_none_or(|ns| row["namespace"] == ns)
        })
        .cloned()
        .collect();
    emit_items(&items, args.output, table)
}

fn table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|row| {
            let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |ms| format!("{ms:.1}ms"));
            vec![
                row["namespace"].as_str().unwrap_or_default().to_owned(),
                row["name"].as_str().unwrap_or_default().to_owned(),
                row["successRate"]
                    .as_f64()
                    .map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0)),
                format!("{:.1}", row["requestsPerSecond"].as_f64().unwrap_or(0.0)),
                ms(&row["p50Ms"]),
                ms(&row["p95Ms"]),
                ms(&row["p99Ms"]),
            ]
        })
        .collect();
    align(
        &["NAMESPACE", "NAME", "SUCCESS", "RPS", "P50", "P95", "P99"],
        &rows,
    )
}
