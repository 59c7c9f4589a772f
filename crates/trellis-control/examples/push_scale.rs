//! Configuration push at scale: a control plane with `SERVICES` services and `WORKLOADS`
//! workloads, `PROXIES` proxies connected over real gRPC streams (simulated in this
//! process: each ACKs what it receives), then a route change that every proxy must get.
//! Prints how long the initial sync and the route change took to reach the proxies.
//!
//! `cargo run --release -p trellis-control --example push_scale [PROXIES SERVICES WORKLOADS]`
//! (defaults 1000 1000 5000); `bench/push-scale.sh` runs it and keeps the table.
//!
//! With `--etcd-replicas=N` the store is a three-member etcd cluster started here (from
//! Debian's etcd-server) and N control planes share it; the proxies are spread over
//! them, and each route change is written to the cluster, as an apply through any of
//! them writes it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_api::proto::v1::{
    control_message, proxy_api_client::ProxyApiClient, proxy_message, Ack, Hello, ProxyMessage,
    Upstream, Workload,
};
use trellis_api::service::{WorkloadPort, WorkloadSpec};
use trellis_api::{parse_documents, ObjectMeta, Resource, Spec};
use trellis_control::api::write;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::{EtcdSettings, EtcdStore, MemoryStore, Store};

const TOKEN: &str = "push-scale";

/// When each proxy received which version.
type Received = Arc<Mutex<Vec<Vec<(u64, Instant)>>>>;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// `--etcd-replicas=N`: how many control planes share an etcd cluster (0: one control
/// plane on the in-memory store).
fn etcd_replicas() -> usize {
    std::env::args()
        .find_map(|a| a.strip_prefix("--etcd-replicas=")?.parse().ok())
        .unwrap_or(0)
}

fn workload(i: usize, service: &str) -> Resource {
    let mut metadata = ObjectMeta::new("default", format!("{service}-w{i}"));
    metadata.labels = BTreeMap::from([("app".to_string(), service.to_string())]);
    let address: IpAddr = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into();
    Resource::new(
        metadata,
        Spec::Workload(WorkloadSpec {
            address,
            ports: vec![WorkloadPort {
                name: None,
                port: 8080,
                app_protocol: None,
            }],
            inbound_port: Some(7143),
            service_account: "default".into(),
            zone: None,
            proxy_version: None,
        }),
    )
}

fn route(weight_v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shared}}\nspec:\n  parentRefs: [{{kind: Service, name: shared}}]\n  rules:\n    - backendRefs: [{{name: svc-0, weight: {}}}, {{name: svc-1, weight: {weight_v2}}}]\n",
        100 - weight_v2
    )
}

/// Keeps one simulated proxy's session up, reconnecting with jittered backoff as a
/// real proxy does.
async fn proxy(grpc: String, i: usize, services: usize, received: Received) {
    let mut backoff = Duration::from_millis(100);
    loop {
        session(&grpc, i, services, &received).await;
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(grpc: &str, i: usize, services: usize, received: &Received) {
    let Ok(mut client) = ProxyApiClient::connect(grpc.to_string()).await else {
        return;
    };
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        token: TOKEN.into(),
        workload: Some(Workload {
            name: format!("proxy-{i}"),
            namespace: "default".into(),
            service: format!("svc-{}", i % services),
            address: "127.0.0.1".into(),
            inbound_port: 7143,
            app_port: 8080,
            // Every proxy calls `shared`, the service whose route changes, and one more.
            upstreams: vec![
                Upstream {
                    service: "shared".into(),
                    namespace: "default".into(),
                    local_port: 9000,
                },
                Upstream {
                    service: format!("svc-{}", (i + 1) % services),
                    namespace: "default".into(),
                    local_port: 9001,
                },
            ],
            ..Default::default()
        }),
        proxy_version: "bench".into(),
        serving_version: 0,
        admin_address: String::new(),
    };
    let hello = ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    let Ok(response) = client.session(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut inbound = response.into_inner();
    while let Ok(Some(message)) = inbound.message().await {
        if let Some(control_message::Message::Snapshot(snapshot)) = message.message {
            if let Ok(mut r) = received.lock() {
                r[i].push((snapshot.version, Instant::now()));
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

/// Milliseconds from `start` until each proxy first held a version ≥ `version`.
fn delays(received: &Received, version: u64, start: Instant) -> Vec<f64> {
    let r = received.lock().map(|r| r.clone()).unwrap_or_default();
    let mut out: Vec<f64> = r
        .iter()
        .filter_map(|got| got.iter().find(|(v, _)| *v >= version))
        .map(|(_, at)| at.saturating_duration_since(start).as_secs_f64() * 1e3)
        .collect();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn wait_all(received: &Received, version: u64, proxies: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = received.lock().map_or(0, |r| {
            r.iter()
                .filter(|got| got.iter().any(|(v, _)| *v >= version))
                .count()
        });
        if done == proxies {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (proxies, services, workloads) = (arg(1, 1000), arg(2, 1000), arg(3, 5000));
    let replicas = etcd_replicas();
    // Kept alive until the end; stopped when dropped.
    let mut _cluster = None;
    let store: Arc<dyn Store> = if replicas == 0 {
        Arc::new(MemoryStore::new())
    } else {
        let cluster = trellis_testkit::etcd::EtcdCluster::start(3).await;
        let store = EtcdStore::connect(EtcdSettings::new(cluster.endpoints())).await?;
        _cluster = Some(cluster);
        Arc::new(store)
    };
    for i in 0..workloads.saturating_sub(proxies) {
        write::apply(
            store.as_ref(),
            &workload(i, &format!("svc-{}", i % services)),
        )
        .await?;
    }
    write::apply(store.as_ref(), &workload(workloads, "shared")).await?;
    let mut planes = Vec::new();
    for _ in 0..replicas.max(1) {
        let settings = ControlSettings {
            data_dir: std::env::temp_dir(),
            store: Default::default(),
            http_addr: "127.0.0.1:0".parse()?,
            grpc_addr: "127.0.0.1:0".parse()?,
            grace: Duration::from_secs(60),
            ca: Default::default(),
        };
        // Each replica on its own connections to the cluster, as separate processes are.
        let replica_store: Arc<dyn Store> = match &_cluster {
            Some(cluster) => {
                Arc::new(EtcdStore::connect(EtcdSettings::new(cluster.endpoints())).await?)
            }
            None => store.clone(),
        };
        planes.push(ControlPlane::start_with(replica_store, TOKEN.into(), settings).await?);
    }
    let grpcs: Vec<String> = planes
        .iter()
        .map(|cp| format!("http://{}", cp.grpc_addr))
        .collect();

    let received: Received = Arc::new(Mutex::new(vec![Vec::new(); proxies]));
    let started = Instant::now();
    for i in 0..proxies {
        let grpc = grpcs[i % grpcs.len()].clone();
        tokio::spawn(proxy(grpc, i, services, received.clone()));
    }
    let registered = store.revision().await?;
    let synced = wait_all(&received, registered, proxies, Duration::from_secs(120)).await;
    let sync_time = started.elapsed();

    let mut rows = Vec::new();
    for (round, weight) in [10u32, 50, 0].into_iter().enumerate() {
        let docs = parse_documents(&route(weight))?;
        let start = Instant::now();
        for doc in &docs {
            write::apply(store.as_ref(), doc).await?;
        }
        let version = store.revision().await?;
        let all = wait_all(&received, version, proxies, Duration::from_secs(30)).await;
        let d = delays(&received, version, start);
        rows.push((
            round + 1,
            d.len(),
            all,
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            percentile(&d, 1.0),
        ));
    }

    println!("| measure | value |\n|---|--:|");
    println!("| proxies / services / workloads | {proxies} / {services} / {workloads} |");
    println!(
        "| store | {} |",
        if replicas == 0 {
            "in memory, one control plane".to_owned()
        } else {
            format!("etcd, 3 members, {replicas} control planes")
        }
    );
    println!(
        "| initial sync of every proxy | {:.0} ms{} |",
        sync_time.as_secs_f64() * 1e3,
        if synced { "" } else { " (not all synced)" }
    );
    for (round, reached, all, p50, p99, max) in rows {
        println!(
            "| route change {round}: reached {reached}/{proxies}{} | p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms |",
            if all { "" } else { " (timed out)" }
        );
    }
    println!(
        "| peak RSS, control plane and simulated proxies together | {:.1} MiB |",
        peak_rss_mib()
    );
    for cp in planes {
        cp.stop().await;
    }
    Ok(())
}
