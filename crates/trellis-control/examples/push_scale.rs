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
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_api::proto::v1::{Hello, Upstream, Workload};
use trellis_api::service::{WorkloadPort, WorkloadSpec};
use trellis_api::{parse_documents, ObjectMeta, Resource, Spec};
use trellis_control::api::write;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::{EtcdSettings, EtcdStore, MemoryStore, Store};
use trellis_testkit::proxies::{percentile, rss_mib, SimulatedProxies};

const TOKEN: &str = "push-scale";

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

/// The `Hello` of simulated proxy `i`: it calls `shared`, the service whose route
/// changes, and one more.
fn hello(i: usize, services: usize) -> Hello {
    Hello {
        token: TOKEN.into(),
        workload: Some(Workload {
            name: format!("proxy-{i}"),
            namespace: "default".into(),
            service: format!("svc-{}", i % services),
            address: "127.0.0.1".into(),
            inbound_port: 7143,
            app_port: 8080,
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
        accepts_delta: true,
    }
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

    let started = Instant::now();
    // Each snapshot is labelled with its version, the store's revision.
    let fleet = SimulatedProxies::spawn(
        (0..proxies)
            .map(|i| (grpcs[i % grpcs.len()].clone(), hello(i, services)))
            .collect(),
        Arc::new(|snapshot| snapshot.version),
    );
    let registered = store.revision().await?;
    let synced = fleet
        .wait_all(|v| v >= registered, Duration::from_secs(120))
        .await;
    let sync_time = started.elapsed();

    let mut rows = Vec::new();
    for (round, weight) in [10u32, 50, 0].into_iter().enumerate() {
        let docs = parse_documents(&route(weight))?;
        let start = Instant::now();
        for doc in &docs {
            write::apply(store.as_ref(), doc).await?;
        }
        let version = store.revision().await?;
        let all = fleet
            .wait_all(|v| v >= version, Duration::from_secs(30))
            .await;
        let d = fleet.delays_ms(|v| v >= version, start);
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
        rss_mib("self").0
    );
    for cp in planes {
        cp.stop().await;
    }
    Ok(())
}
