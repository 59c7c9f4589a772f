//! Route changes at scale on Kubernetes: a real API server holding `SERVICES` Services
//! and five meshed Pods for each, a `trellis control --kubernetes` process mirroring it,
//! `PROXIES` simulated proxies on real gRPC sessions, and `CHANGES` HTTPRoute weight
//! changes, each timed from the API write until every proxy holds the new weights.
//! Prints a markdown table with the delays and the control plane's memory.
//!
//! `kube_scale --trellis=PATH [--upstreams] [PROXIES SERVICES CHANGES]` (defaults 1000
//! 1000 5); `bench/kube-scale.sh` builds everything, runs it and keeps the table.
//!
//! With `--upstreams` each proxy names its upstreams instead (`svc-0`, whose route
//! changes, and the next Service), as `trellis proxy --upstream` does, so it is sent
//! two Services rather than the whole mesh.
//!
//! No kubelet runs here: the Pods are bound to a Node object and reported running and
//! ready through the status subresource, as a kubelet would, so the EndpointSlice
//! controller lists them. Each simulated proxy is what an injected sidecar is: it
//! registers as its Pod (transparent mode, every Service reachable) and proves it with
//! a token of the Pod's ServiceAccount from the TokenRequest API, bound to the Pod, for
//! the audience `trellis`, which the control plane checks with a TokenReview.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_api::proto::v1::{Hello, Snapshot, Upstream, Workload};
use trellis_api::Kind;
use trellis_kubernetes::identity::AUDIENCE;
use trellis_kubernetes::source::api_resource;
use trellis_kubernetes::source::translate::{INBOUND_PORT, SIDECAR_CONTAINER};
use trellis_testkit::kube::node::{admin_client, bound_token, register};
use trellis_testkit::kube::KubeCluster;
use trellis_testkit::proxies::{percentile, rss_mib, SimulatedProxies};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Namespaces the Services are spread over.
const NAMESPACES: usize = 4;
/// Pods per Service.
const PODS_PER_SERVICE: usize = 5;
/// The Node every Pod is bound to.
const NODE: &str = "bench-node";
/// The application's port in every Pod.
const APP_PORT: u16 = 8080;
/// The sidecar's outbound capture port: its presence in a `Hello` is transparent mode.
const OUTBOUND_PORT: u32 = 7140;
/// Requests to the API server in flight at once while the cluster is filled.
const PARALLEL: usize = 48;
/// The route that changes: on `svc-0`, split between `svc-1` and `svc-2`.
const ROUTE: &str = "split";

/// The command line.
struct Args {
    trellis: PathBuf,
    proxies: usize,
    services: usize,
    changes: usize,
    /// Proxies name two upstreams instead of taking the whole mesh (transparent mode).
    upstreams: bool,
}

impl Args {
    fn parse() -> Result<Self, BoxError> {
        let mut trellis = None;
        let mut numbers = Vec::new();
        let mut upstreams = false;
        for arg in std::env::args().skip(1) {
            if arg == "--upstreams" {
                upstreams = true;
            } else if let Some(path) = arg.strip_prefix("--trellis=") {
                trellis = Some(PathBuf::from(path));
            } else {
                numbers.push(arg.parse::<usize>().map_err(|_| {
                    format!("{arg:?}: expected --trellis=PATH, --upstreams or a number (PROXIES SERVICES CHANGES)")
                })?);
            }
        }
        let number = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default);
        let args = Self {
            trellis: trellis.ok_or("--trellis=PATH: the trellis binary to run is required")?,
            proxies: number(0, 1000),
            services: number(1, 1000),
            changes: number(2, 5),
            upstreams,
        };
        if args.services < 3 {
            return Err(
                "SERVICES: at least 3 (the route splits svc-0 between svc-1 and svc-2)".into(),
            );
        }
        if args.proxies > args.services * PODS_PER_SERVICE {
            return Err(format!(
                "PROXIES: at most one per Pod, {} here",
                args.services * PODS_PER_SERVICE
            )
            .into());
        }
        Ok(args)
    }

    fn pods(&self) -> usize {
        self.services * PODS_PER_SERVICE
    }
}

/// Service `i`'s namespace: consecutive Services share one, so svc-0 to svc-2 do.
fn namespace(i: usize, services: usize) -> String {
    format!("bench-{}", i / services.div_ceil(NAMESPACES))
}

/// Pod `k`'s address: unique, outside the Service range.
fn pod_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn service_object(i: usize, services: usize) -> Result<Service, BoxError> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": namespace(i, services)},
        "spec": {
            "selector": {"app": format!("svc-{i}")},
            "ports": [{"name": "http", "port": 80, "targetPort": APP_PORT, "appProtocol": "http"}],
        },
    }))?)
}

/// Pod `j` of Service `i`, as injection leaves it: the app and the proxy as a native
/// sidecar, bound to the bench's Node.
fn pod_object(i: usize, j: usize, services: usize) -> Result<Pod, BoxError> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": format!("svc-{i}-{j}"),
            "namespace": namespace(i, services),
            "labels": {"app": format!("svc-{i}")},
        },
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "initContainers": [{"name": SIDECAR_CONTAINER, "image": "trellis", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": APP_PORT}]}],
        },
    }))?)
}

/// What a kubelet reports of a running, ready Pod.
fn ready_status(ip: Ipv4Addr) -> Value {
    let ready = |type_: &str| json!({"type": type_, "status": "True"});
    json!({"status": {
        "phase": "Running",
        "hostIP": "10.0.0.1",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [ready("PodScheduled"), ready("Initialized"), ready("ContainersReady"), ready("Ready")],
    }})
}

fn route(services: usize, weight_v2: u32) -> Result<DynamicObject, BoxError> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace(0, services)},
        "spec": route_spec(weight_v2),
    }))?)
}

fn route_spec(weight_v2: u32) -> Value {
    json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "svc-0", "port": 80}],
        "rules": [{"backendRefs": [
            {"name": "svc-1", "port": 80, "weight": 100 - weight_v2},
            {"name": "svc-2", "port": 80, "weight": weight_v2},
        ]}],
    })
}

/// The weight of `svc-2` in the split route a proxy was sent (0: no split yet).
fn split_weight(services: usize) -> impl Fn(&Snapshot) -> u64 + Send + Sync {
    let ns = namespace(0, services);
    let (v1, v2) = (format!("svc-1.{ns}"), format!("svc-2.{ns}"));
    move |snapshot| {
        // Whole, or as the listeners that changed.
        let listeners = snapshot.config.iter().flat_map(|c| &c.listeners);
        let changed = snapshot.delta.iter().flat_map(|d| &d.listeners);
        let routes = listeners.chain(changed).flat_map(|l| &l.routes);
        routes
            .filter(|r| r.backends.iter().any(|b| b.name == v1))
            .find_map(|r| r.backends.iter().find(|b| b.name == v2))
            .map_or(0, |b| u64::from(b.weight))
    }
}

/// The endpoints a proxy was sent, over all backends: the whole mesh, once mirrored.
fn endpoints(snapshot: &Snapshot) -> u64 {
    let backends = snapshot.config.iter().flat_map(|c| &c.backends);
    backends.map(|b| b.endpoints.len() as u64).sum()
}

/// Runs `make` on every item with [`PARALLEL`] requests in flight.
async fn parallel<T, F>(items: Vec<T>, make: impl Fn(T) -> F) -> Result<(), BoxError>
where
    F: std::future::Future<Output = Result<(), BoxError>>,
{
    stream::iter(items.into_iter().map(make))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Fills the cluster: namespaces, Services, the route, Pods and their ready status.
async fn fill(client: &Client, args: &Args) -> Result<(), BoxError> {
    register(client, NODE, Ipv4Addr::new(10, 0, 0, 1), None).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut names: Vec<String> = (0..args.services)
        .map(|i| namespace(i, args.services))
        .collect();
    names.push("trellis-system".into());
    names.dedup();
    for name in &names {
        let object = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        namespaces.create(&PostParams::default(), &object).await?;
        // Pods cannot be created before the namespace's ServiceAccount exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        while accounts.get_opt("default").await?.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    parallel((0..args.services).collect(), |i| async move {
        let service = service_object(i, args.services)?;
        let api: Api<Service> = Api::namespaced(client.clone(), &namespace(i, args.services));
        api.create(&PostParams::default(), &service).await?;
        Ok(())
    })
    .await?;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace(0, args.services),
        &api_resource(Kind::HTTPRoute),
    );
    routes
        .create(&PostParams::default(), &route(args.services, 1)?)
        .await?;
    parallel((0..args.pods()).collect(), |k| async move {
        let (i, j) = (k / PODS_PER_SERVICE, k % PODS_PER_SERVICE);
        let pod = pod_object(i, j, args.services)?;
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace(i, args.services));
        let name = format!("svc-{i}-{j}");
        api.create(&PostParams::default(), &pod).await?;
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(ready_status(pod_ip(k))),
        )
        .await?;
        Ok(())
    })
    .await
}

/// The control plane as its own process, so that its memory is its own.
struct ControlProcess {
    child: tokio::process::Child,
    grpc: String,
}

impl ControlProcess {
    async fn start(trellis: &Path, cluster: &KubeCluster) -> Result<Self, BoxError> {
        let data = cluster.dir().join("trellis-control");
        std::fs::create_dir_all(&data)?;
        let mut child = tokio::process::Command::new(trellis)
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .arg("--data-dir")
            .arg(&data)
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                cluster.dir().join("trellis-control.log"),
            )?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", trellis.display()))?;
        let stdout = child.stdout.take().ok_or("the control plane's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("proxy API") {
                // Drained from here on, so that the process never blocks on its output.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                let grpc = url.trim().to_string();
                return Ok(Self { child, grpc });
            }
        }
        Err(format!(
            "the control plane exited before serving; see {}",
            cluster.dir().join("trellis-control.log").display()
        )
        .into())
    }

    fn pid(&self) -> String {
        self.child.id().map(|p| p.to_string()).unwrap_or_default()
    }
}

/// The `Hello` of Pod `k`'s injected sidecar, with its bound token; with `upstreams`,
/// naming `svc-0` and the next Service as its upstreams instead of transparent mode.
async fn pod_hello(
    client: &Client,
    k: usize,
    services: usize,
    upstreams: bool,
) -> Result<Hello, BoxError> {
    let (i, j) = (k / PODS_PER_SERVICE, k % PODS_PER_SERVICE);
    let namespace = namespace(i, services);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = pods.get(&format!("svc-{i}-{j}")).await?;
    let token = bound_token(client, &pod, vec![AUDIENCE.to_string()], 3600).await?;
    let upstream = |n: usize, local_port: u32| Upstream {
        service: format!("svc-{n}"),
        namespace: self::namespace(n, services),
        local_port,
    };
    let (upstreams, outbound_port) = if upstreams {
        (
            vec![upstream(0, 9000), upstream((i + 1) % services, 9001)],
            0,
        )
    } else {
        (Vec::new(), OUTBOUND_PORT)
    };
    Ok(Hello {
        token,
        workload: Some(Workload {
            name: format!("svc-{i}-{j}"),
            namespace,
            service: format!("svc-{i}"),
            service_account: "default".into(),
            address: pod_ip(k).to_string(),
            inbound_port: u32::from(INBOUND_PORT),
            app_port: u32::from(APP_PORT),
            outbound_port,
            upstreams,
            ..Default::default()
        }),
        proxy_version: "bench".into(),
        serving_version: 0,
        admin_address: String::new(),
        accepts_delta: true,
    })
}

/// Hellos for `proxies` Pods spread evenly over the Services.
async fn hellos(client: &Client, args: &Args) -> Result<Vec<Hello>, BoxError> {
    let step = args.pods() / args.proxies.max(1);
    let hello = |n: usize| pod_hello(client, n * step, args.services, args.upstreams);
    stream::iter((0..args.proxies).map(hello))
        .buffered(PARALLEL)
        .try_collect()
        .await
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse()?;
    let cluster = KubeCluster::start().await;
    let client = admin_client(&cluster).await?;
    let filling = Instant::now();
    fill(&client, &args).await?;
    let filled = filling.elapsed();
    let mut rows: Vec<(String, String)> = vec![(
        "proxies / Services / Pods (namespaces)".into(),
        format!(
            "{} / {} / {} ({NAMESPACES})",
            args.proxies,
            args.services,
            args.pods()
        ),
    )];
    rows.push((
        "each proxy is sent".into(),
        if args.upstreams {
            "two upstream Services (`--upstreams`)".into()
        } else {
            "every Service (transparent mode, as injected)".into()
        },
    ));
    rows.push((
        "filling the API server (Services, Pods, ready status)".into(),
        ms(filled),
    ));

    // Mirrored once a proxy is sent every Pod as an endpoint.
    let control = ControlProcess::start(&args.trellis, &cluster).await?;
    let started = Instant::now();
    // The probe counts every endpoint of each snapshot, so it takes them whole.
    let mut probe_hello = pod_hello(&client, 0, args.services, false).await?;
    probe_hello.accepts_delta = false;
    let probe = SimulatedProxies::spawn(
        vec![(control.grpc.clone(), probe_hello)],
        Arc::new(endpoints),
    );
    let pods = args.pods() as u64;
    let mirrored = probe
        .wait_all(|n| n >= pods, Duration::from_secs(300))
        .await;
    let (failures, why) = probe.failures();
    drop(probe);
    rows.push((
        "control plane start until a proxy holds every Pod".into(),
        format!(
            "{}{}",
            ms(started.elapsed()),
            if mirrored {
                String::new()
            } else {
                format!(" (never: {failures} failed sessions, last: {why:?})")
            }
        ),
    ));
    let (_, idle) = rss_mib(&control.pid());

    let hellos = hellos(&client, &args).await?;
    let connecting = Instant::now();
    let fleet = SimulatedProxies::spawn(
        hellos
            .into_iter()
            .map(|h| (control.grpc.clone(), h))
            .collect(),
        Arc::new(split_weight(args.services)),
    );
    let synced = fleet.wait_all(|w| w == 1, Duration::from_secs(300)).await;
    rows.push((
        format!("initial sync of {} proxies", args.proxies),
        format!(
            "{}{}",
            ms(connecting.elapsed()),
            if synced { "" } else { " (not all synced)" }
        ),
    ));
    let (_, connected) = rss_mib(&control.pid());

    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace(0, args.services),
        &api_resource(Kind::HTTPRoute),
    );
    let mut all = Vec::new();
    for change in 1..=args.changes {
        let weight = 1 + change as u64;
        let patch = json!({"spec": route_spec(weight as u32)});
        let start = Instant::now();
        routes
            .patch(ROUTE, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let done = fleet
            .wait_all(|w| w == weight, Duration::from_secs(30))
            .await;
        let d = fleet.delays_ms(|w| w == weight, start);
        rows.push((
            format!(
                "route change {change}: reached {}/{}{}",
                d.len(),
                args.proxies,
                if done { "" } else { " (timed out)" }
            ),
            format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                percentile(&d, 0.5),
                percentile(&d, 0.99),
                percentile(&d, 1.0)
            ),
        ));
        all.extend(d);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    rows.push((
        format!("all {} changes × {} proxies", args.changes, args.proxies),
        format!(
            "p50 {:.0} ms, **p99 {:.0} ms**, max {:.0} ms",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 1.0)
        ),
    ));
    let (peak, _) = rss_mib(&control.pid());
    let n = args.proxies.max(1) as f64;
    rows.push((
        "control-plane RSS: mirrored, idle / with the proxies synced / peak".into(),
        format!("{idle:.1} / {connected:.1} / {peak:.1} MiB"),
    ));
    rows.push((
        "control-plane memory per proxy: peak RSS ÷ proxies (added by the proxies)".into(),
        format!(
            "**{:.2} MiB** ({:.2} MiB)",
            peak / n,
            (connected - idle) / n
        ),
    ));
    let (failures, why) = fleet.failures();
    rows.push((
        "proxy sessions that failed".into(),
        match why {
            Some(why) => format!("{failures} (last: {why})"),
            None => "0".into(),
        },
    ));

    println!("| measure | value |\n|---|--:|");
    for (measure, value) in rows {
        println!("| {measure} | {value} |");
    }
    drop(fleet);
    drop(control);
    Ok(())
}
