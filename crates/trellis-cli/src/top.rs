//! `trellis top SERVICE`: the busiest paths of a service, live: a tap on its proxies
//! (`trellis tap`'s stream) counted by method and path, redrawn every second on a
//! terminal, printed once at the end otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{segment, Client, ClientArgs};
use crate::resources::emit;
use crate::resources::table::align;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    service: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// How long to watch (`10s`, `5m`; at most `1h`).
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    rows: usize,
    #[command(flatten)]
    client: ClientArgs,
}

/// What was seen of one method and path.
#[derive(Debug, Default)]
struct PathStats {
    requests: u64,
    failures: u64,
    latency_sum_ms: f64,
    latency_max_ms: f64,
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/tap?service={}&namespace={}&duration={}",
        segment(&args.service),
        segment(&args.namespace),
        segment(&args.duration)
    );
    let live = std::io::stdout().is_terminal();
    let mut stats: HashMap<(String, String), PathStats> = HashMap::new();
    let mut drawn = Instant::now();
    Client::new(&args.client)?
        .stream_lines(&path, |line| {
            let event: Value = serde_json::from_slice(line)?;
            let key = (
                event["method"].as_str().unwrap_or_default().to_owned(),
                event["path"].as_str().unwrap_or_default().to_owned(),
            );
            let entry = stats.entry(key).or_default();
            let ms = event["latencyMicros"].as_f64().unwrap_or(0.0) / 1000.0;
            entry.requests += 1;
            entry.failures += u64::from(event["status"].as_u64().unwrap_or(0) >= 500);
            entry.latency_sum_ms += ms;
            entry.latency_max_ms = entry.latency_max_ms.max(ms);
            if live && drawn.elapsed() >= Duration::from_secs(1) {
                drawn = Instant::now();
                // Clear the screen and draw from the top.
                emit(&format!("\x1b[2J\x1b[H{}", table(&stats, args.rows)))?;
            }
            Ok(())
        })
        .await?;
    if live {
        emit("\x1b[2J\x1b[H")?;
    }
    emit(&table(&stats, args.rows))
}

/// The busiest paths first.
fn table(stats: &HashMap<(String, String), PathStats>, rows: usize) -> String {
    let mut sorted: Vec<_> = stats.iter().collect();
    sorted.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .take(rows)
        .map(|((method, path), s)| {
            vec![
                s.requests.to_string(),
                format!(
                    "{:.2}%",
                    100.0 * (s.requests - s.failures) as f64 / s.requests.max(1) as f64
                ),
                format!("{:.1}ms", s.latency_sum_ms / s.requests.max(1) as f64),
                format!("{:.1}ms", s.latency_max_ms),
                method.clone(),
                path.clone(),
            ]
        })
        .collect();
    align(&["COUNT", "SUCCESS", "AVG", "MAX", "METHOD", "PATH"], &rows)
}
