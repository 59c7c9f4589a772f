//! Simulated proxies for benchmarks of the control plane's push: each keeps one real
//! gRPC `Session` stream up with the `Hello` it is given, ACKs every snapshot, and
//! reconnects with jittered back-off as a real proxy does. What a snapshot means to a
//! benchmark is read from it by a *label* function (the store revision, a route's
//! weight, …), and [`SimulatedProxies`] records when each proxy first saw each label,
//! so that the time a change took to reach every proxy can be told.
//!
//! Only labels are kept, never the configurations themselves: a thousand proxies'
//! configurations would make the benchmark's own memory the larger cost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use trellis_api::proto::v1::{
    control_message, proxy_api_client::ProxyApiClient, proxy_message, Ack, Hello, ProxyMessage,
    Snapshot,
};

/// What a benchmark reads from a snapshot.
pub type Label = Arc<dyn Fn(&Snapshot) -> u64 + Send + Sync>;

/// Per proxy, each label it received and when; and the sessions that failed.
type Received = Arc<Mutex<Record>>;

#[derive(Default)]
struct Record {
    labels: Vec<Vec<(u64, Instant)>>,
    failures: usize,
    last_failure: Option<String>,
}

/// Notes that a session ended or could not start, and why.
fn failed(received: &Received, why: String) {
    if let Ok(mut r) = received.lock() {
        r.failures += 1;
        r.last_failure = Some(why);
    }
}

/// Running simulated proxies; dropping them ends their sessions.
pub struct SimulatedProxies {
    received: Received,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulatedProxies {
    /// Starts one proxy per `(control plane gRPC URL, Hello)`.
    pub fn spawn(proxies: Vec<(String, Hello)>, label: Label) -> Self {
        let received: Received = Arc::new(Mutex::new(Record {
            labels: vec![Vec::new(); proxies.len()],
            ..Record::default()
        }));
        let tasks = proxies
            .into_iter()
            .enumerate()
            .map(|(i, (grpc, hello))| {
                tokio::spawn(keep_session(
                    grpc,
                    hello,
                    i,
                    label.clone(),
                    received.clone(),
                ))
            })
            .collect();
        Self { received, tasks }
    }

    /// How many proxies run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// How many proxies have received a snapshot whose label satisfies `wanted`.
    pub fn reached(&self, wanted: impl Fn(u64) -> bool) -> usize {
        self.received.lock().map_or(0, |r| {
            r.labels
                .iter()
                .filter(|got| got.iter().any(|(l, _)| wanted(*l)))
                .count()
        })
    }

    /// Waits until every proxy has received a snapshot whose label satisfies `wanted`;
    /// false if `limit` passed first.
    pub async fn wait_all(&self, wanted: impl Fn(u64) -> bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.reached(&wanted) == self.len() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// How many sessions failed or could not start, and the last reason.
    pub fn failures(&self) -> (usize, Option<String>) {
        self.received
            .lock()
            .map_or((0, None), |r| (r.failures, r.last_failure.clone()))
    }

    /// Milliseconds from `start` until each proxy first received a snapshot whose label
    /// satisfies `wanted`, sorted; proxies that never did are left out.
    pub fn delays_ms(&self, wanted: impl Fn(u64) -> bool, start: Instant) -> Vec<f64> {
        let r = self
            .received
            .lock()
            .map(|r| r.labels.clone())
            .unwrap_or_default();
        let mut out: Vec<f64> = r
            .iter()
            .filter_map(|got| got.iter().find(|(l, _)| wanted(*l)))
            .map(|(_, at)| at.saturating_duration_since(start).as_secs_f64() * 1e3)
            .collect();
        out.sort_by(|a, b| a.total_cmp(b));
        out
    }
}

impl Drop for SimulatedProxies {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The value at quantile `p` (0 to 1) of `sorted`, NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Keeps one simulated proxy's session up, reconnecting with jittered back-off.
async fn keep_session(grpc: String, hello: Hello, i: usize, label: Label, received: Received) {
    let mut backoff = Duration::from_millis(100);
    loop {
        session(&grpc, &hello, i, &label, &received).await;
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(grpc: &str, hello: &Hello, i: usize, label: &Label, received: &Received) {
    // tonic's default message limits, as the real proxy's client has.
    let mut client = match ProxyApiClient::connect(grpc.to_string()).await {
        Ok(client) => client,
        Err(e) => return failed(received, format!("connect to {grpc}: {e}")),
    };
    let (tx, rx) = mpsc::channel(4);
    let hello = ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello.clone())),
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(received, format!("session refused: {status}")),
    };
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return failed(received, "the control plane ended the session".into()),
            Err(status) => return failed(received, format!("session failed: {status}")),
        };
        if let Some(control_message::Message::Snapshot(snapshot)) = message.message {
            let seen = label(&snapshot);
            if let Ok(mut r) = received.lock() {
                r.labels[i].push((seen, Instant::now()));
            }
            let ack = ProxyMessage {
                message: Some(proxy_message::Message::Ack(Ack {
                    version: snapshot.version,
                })),
            };
            if tx.send(ack).await.is_err() {
                return;
            }
        }
    }
}

/// The peak resident memory (`VmHWM`) and current resident memory (`VmRSS`) of
/// process `pid` ("self" for this one), in MiB.
pub fn rss_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
