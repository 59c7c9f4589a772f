//! Configuration changes under a fixed request rate: does a proxy lose any request
//! while it applies new configuration, or while its control plane is gone?
//!
//! One process holds a control plane (embedded store in a temporary directory), two
//! `ratings` workloads (v1, v2) and a `web` workload, each a sample server behind a
//! sidecar over real sockets and gRPC streams. An open-loop generator sends `RATE`
//! requests per second through web's upstream port to ratings for three phases of
//! `SECONDS` each:
//!
//! 1. **route changes**: the ratings HTTPRoute's weights change every 250 ms;
//! 2. **control plane stopped**: the proxies serve on their last configuration;
//! 3. **control plane back**: restarted on the same data and ports; the proxies resync
//!    and the weights change again.
//!
//! `cargo run --release -p trellis-cli --example config_under_load [RATE SECONDS]`
//! (defaults 1000 and 10); `bench/config-under-load.sh` runs it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{free_port, SidecarSpec};

/// What one phase saw.
#[derive(Default)]
struct Outcome {
    /// Latency of each answered request, in microseconds.
    latencies: Vec<u32>,
    failed: u64,
    errors: Vec<String>,
    /// Ticks the generator could not send on time (the machine fell behind).
    late: u64,
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn route(v2_weight: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: ratings}}\nspec:\n  parentRefs: [{{kind: Service, name: ratings}}]\n  rules:\n    - backendRefs: [{{name: ratings-v1, weight: {}}}, {{name: ratings-v2, weight: {v2_weight}}}]\n",
        100 - v2_weight
    )
}

const SERVICES: &str = "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: ratings-v1}\nspec: {selector: {app: ratings, version: v1}, ports: [{port: 80}]}\n---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: ratings-v2}\nspec: {selector: {app: ratings, version: v2}, ports: [{port: 80}]}\n";

async fn apply(client: &HttpClient, cp_http: SocketAddr, token: &str, yaml: String) -> bool {
    let request = http::Request::post(format!("http://{cp_http}/api/v1/apply"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(yaml)));
    match request {
        Ok(request) => client
            .send(request)
            .await
            .is_ok_and(|r| r.status.is_success()),
        Err(_) => false,
    }
}

/// Sends `rate` GETs per second to `url` until `until`, each on its own task, and
/// records what came back.
async fn load(client: HttpClient, url: String, rate: u64, until: Instant) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    while Instant::now() < until {
        ticker.tick().await;
        next += period;
        if Instant::now() > next + Duration::from_millis(5) {
            if let Ok(mut o) = outcome.lock() {
                o.late += 1;
            }
        }
        let (client, url, outcome) = (client.clone(), url.clone(), outcome.clone());
        tasks.spawn(async move {
            let start = Instant::now();
            let result = client.get(&url).await;
            let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
            let Ok(mut o) = outcome.lock() else { return };
            match result {
                Ok(r) if r.status.is_success() => o.latencies.push(micros),
                Ok(r) => {
                    o.failed += 1;
                    if o.errors.len() < 5 {
                        o.errors.push(format!("status {}", r.status));
                    }
                }
                Err(e) => {
                    o.failed += 1;
                    if o.errors.len() < 5 {
                        o.errors.push(e.to_string());
                    }
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut outcome = std::mem::take(&mut *outcome.lock().expect("outcome"));
    outcome.latencies.sort_unstable();
    outcome
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn row(phase: &str, o: &Outcome, note: &str) {
    let sent = o.latencies.len() as u64 + o.failed;
    println!(
        "| {phase} | {sent} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {note} |",
        o.latencies.len(),
        o.failed,
        percentile(&o.latencies, 0.50),
        percentile(&o.latencies, 0.99),
        percentile(&o.latencies, 1.0),
        o.late,
    );
    for e in &o.errors {
        println!("|  | error: {e} | | | | | | | |");
    }
}

#[tokio::main]
async fn main() {
    let rate = arg(1, 1000);
    let seconds = Duration::from_secs(arg(2, 10));
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = ControlSettings {
        data_dir: dir.path().to_path_buf(),
        store: Default::default(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        grace: Duration::from_secs(60),
        ca: Default::default(),
    };
    let cp = ControlPlane::start(settings.clone())
        .await
        .expect("control plane");
    let token = cp.token.clone();
    let client = HttpClient::http1();
    assert!(apply(&client, cp.http_addr, &token, SERVICES.to_string()).await);
    assert!(apply(&client, cp.http_addr, &token, route(0)).await);

    let start = |name: &'static str| HttpServer::start(name, ServerProtocol::Http1);
    let (v1, v2, web) = (
        start("ratings-v1").await.expect("server"),
        start("ratings-v2").await.expect("server"),
        start("web").await.expect("server"),
    );
    let upstream = free_port();
    let grpc = format!("http://{}", cp.grpc_addr);
    let spec = |name, service, labels, app, upstreams| SidecarSpec {
        grpc: &grpc,
        token: &token,
        name,
        service,
        labels,
        app,
        upstreams,
    };
    let _r1 = spec(
        "ratings-v1",
        "ratings",
        &[("version", "v1")],
        v1.addr(),
        &[],
    )
    .start()
    .await;
    let _r2 = spec(
        "ratings-v2",
        "ratings",
        &[("version", "v2")],
        v2.addr(),
        &[],
    )
    .start()
    .await;
    let _w = spec("web-1", "web", &[], web.addr(), &[("ratings", upstream)])
        .start()
        .await;
    let url = format!("http://127.0.0.1:{upstream}/");
    let ready = Instant::now() + Duration::from_secs(20);
    while !client.get(&url).await.is_ok_and(|r| r.status.is_success()) {
        assert!(Instant::now() < ready, "the mesh never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm the pools.
    load(
        client.clone(),
        url.clone(),
        rate,
        Instant::now() + Duration::from_secs(1),
    )
    .await;

    println!(
        "| phase | sent | ok | failed | p50 ms | p99 ms | max ms | late ticks | configuration |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|---|");

    // 1. Route changes every 250 ms.
    let until = Instant::now() + seconds;
    let generator = tokio::spawn(load(client.clone(), url.clone(), rate, until));
    let mut changes = 0u32;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        changes += 1;
        let weight = (changes * 37) % 101;
        if !apply(&client, cp.http_addr, &token, route(weight)).await {
            eprintln!("apply {changes} failed");
        }
    }
    let acked = cp.registry.get("web-1").map_or(0, |s| s.acked_version);
    let outcome = generator.await.expect("load");
    row(
        "route changes",
        &outcome,
        &format!("{changes} route changes applied; web's proxy at version {acked}"),
    );

    // 2. The control plane goes away.
    cp.stop().await;
    let outcome = load(client.clone(), url.clone(), rate, Instant::now() + seconds).await;
    row("control plane stopped", &outcome, "last configuration kept");

    // 3. It comes back on the same data and ports; the proxies resync.
    let until = Instant::now() + seconds;
    let generator = tokio::spawn(load(client.clone(), url.clone(), rate, until));
    let cp = ControlPlane::start(settings).await.expect("restart");
    let mut changes = 0u32;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        changes += 1;
        let _ = apply(&client, cp.http_addr, &token, route(changes % 2 * 100)).await;
    }
    let outcome = generator.await.expect("load");
    let state = cp
        .registry
        .get("web-1")
        .map_or("not reconnected".to_string(), |s| {
            format!("web's proxy {:?} at version {}", s.state, s.acked_version)
        });
    row(
        "control plane back",
        &outcome,
        &format!("restarted; {changes} route changes; {state}"),
    );
    cp.stop().await;
}
