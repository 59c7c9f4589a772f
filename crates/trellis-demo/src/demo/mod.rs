//! `trellis demo`: the control plane in this process, the bookshop's five workloads as
//! child processes under `trellis run`, their resources applied, a banner with what to
//! try, and on Ctrl-C (or SIGTERM, SIGHUP) a stop that leaves no process behind.
//!
//! ```text
//! trellis demo ── control plane (in-process, temporary data dir)
//!   ├─ trellis run --service ratings --label version=v1 -- trellis demo-app ratings --version v1
//!   ├─ trellis run --service ratings --label version=v2 -- trellis demo-app ratings --version v2
//!   ├─ trellis run --service books --upstream ratings:P1 -- trellis demo-app books --ratings 127.0.0.1:P1
//!   ├─ trellis run --service web --upstream books:P2     -- trellis demo-app web --books 127.0.0.1:P2
//!   └─ trellis run --service loadgen --upstream web:P3   -- trellis demo-app loadgen --target http://127.0.0.1:P3
//! ```
//!
//! `127.0.0.1:P3`, the load generator's way to web through the mesh, is also the
//! bookshop's address for the user.

mod banner;
mod children;
mod mesh;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{interval_at, Instant};
use trellis_control::server::{ControlError, ControlPlane, ControlSettings};

use self::banner::{alias_for, traffic_line, Banner};
use self::children::{Children, Workload};
use self::mesh::{load_stats, shop_answers, ControlApi};
pub use self::mesh::{CANARY_YAML, MESH_YAML};
use crate::httpkit::JsonClient;
use crate::load::MAX_RPS;

/// How long the bookshop may take to answer through the mesh after its workloads start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the demo checks whether it is ready.
const READY_POLL: Duration = Duration::from_millis(200);
/// How long one readiness or traffic check may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the demo prints what the load generator saw.
const TRAFFIC_EVERY: Duration = Duration::from_secs(10);
/// How long a disconnected proxy's workload stays registered. Short: in the demo a
/// proxy disconnects because its workload stopped, and the control plane's stop waits
/// for pending grace periods.
const GRACE: Duration = Duration::from_secs(1);

/// How `trellis demo` runs.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The `trellis` binary the workloads run as (`trellis run`, `trellis demo-app`):
    /// the running executable.
    pub program: PathBuf,
    /// The control plane's HTTP API. Default `127.0.0.1:7180`; port 0 picks a free one.
    pub http_addr: SocketAddr,
    /// The control plane's gRPC API for proxies. Default `127.0.0.1:7100`.
    pub grpc_addr: SocketAddr,
    /// Requests a second the load generator sends to web, 1 to [`MAX_RPS`]. Default 5.
    pub rps: u32,
}

/// Runs the demo until a stop signal, then stops everything it started. Fails when the
/// control plane cannot start (a port in use, say), or a workload stops by itself or
/// the bookshop never answers; the data directory and logs are then kept.
pub async fn run_demo(settings: DemoSettings) -> anyhow::Result<()> {
    let mut stop = StopSignals::new()?;
    let dir = tempfile::Builder::new()
        .prefix("trellis-demo-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    for (file, text) in [("mesh.yaml", MESH_YAML), ("canary.yaml", CANARY_YAML)] {
        let path = dir.path().join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let cp = start_control(&settings, dir.path()).await?;
    println!(
        "control plane: HTTP API http://{}, proxy API {}",
        cp.http_addr, cp.grpc_addr
    );
    let api = ControlApi::new(cp.http_addr, cp.token.clone());
    api.apply(MESH_YAML).await?;

    let ports = Ports::pick()?;
    let rps = settings.rps.clamp(1, MAX_RPS);
    let workloads = ports.workloads(rps);
    let mut children = Children::new(
        &settings.program,
        format!("http://{}", cp.grpc_addr),
        cp.token.clone(),
        &logs,
    );
    let names: Vec<&str> = workloads.iter().map(|w| w.name).collect();
    println!(
        "starting {} under `trellis run` (logs in {})",
        names.join(", "),
        logs.display()
    );
    let entry = ports.entry();
    let banner = Banner {
        program: alias_for(&settings.program),
        http_addr: cp.http_addr,
        grpc_addr: cp.grpc_addr,
        entry: &entry,
        dir: dir.path(),
        rps,
    };
    let outcome = async {
        for workload in &workloads {
            children.spawn(workload)?;
        }
        supervise(&mut children, &api, &ports, &banner, &mut stop).await
    }
    .await;

    println!("stopping the workloads and the control plane…");
    children.stop().await;
    // Its pooled connection would keep the control plane's store open.
    drop(api);
    cp.stop().await;
    match outcome {
        Ok(()) => {
            println!("stopped");
            Ok(())
        }
        Err(e) => {
            let kept = dir.keep();
            eprintln!("the demo's data and logs are kept in {}", kept.display());
            Err(e)
        }
    }
}

/// Starts the control plane, with advice when its port is taken.
async fn start_control(settings: &DemoSettings, dir: &Path) -> anyhow::Result<ControlPlane> {
    let control = ControlSettings {
        data_dir: dir.to_path_buf(),
        store: Default::default(),
        http_addr: settings.http_addr,
        grpc_addr: settings.grpc_addr,
        grace: GRACE,
        ca: Default::default(),
    };
    let dashboard: trellis_control::server::ExtraRoutes = Box::new(trellis_dashboard::router);
    ControlPlane::start_serving(control, Some(dashboard))
        .await
        .map_err(|e| match e {
            ControlError::Bind { what, addr, error }
                if error.kind() == std::io::ErrorKind::AddrInUse =>
            {
                let flag = if addr == settings.http_addr {
                    "--http-addr"
                } else {
                    "--grpc-addr"
                };
                anyhow::anyhow!(
                    "cannot start the control plane: {addr} ({what}) is already in use; is \
                 `trellis control` or another `trellis demo` running? Stop it, or pass \
                 {flag} 127.0.0.1:0 to use a free port"
                )
            }
            other => anyhow::Error::new(other).context("cannot start the control plane"),
        })
}

/// Waits for the bookshop, prints the banner, then reports traffic until a stop signal
/// (`Ok`) or a workload stopping by itself (`Err`).
async fn supervise(
    children: &mut Children,
    api: &ControlApi,
    ports: &Ports,
    banner: &Banner<'_>,
    stop: &mut StopSignals,
) -> anyhow::Result<()> {
    println!("waiting for the sidecars to sync and the bookshop to answer through the mesh…");
    let client = JsonClient::new(CALL_TIMEOUT);
    let entry = ports.entry();
    let ready = async {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut poll = tokio::time::interval(READY_POLL);
        loop {
            poll.tick().await;
            let synced = api.synced_proxies().await.unwrap_or(0);
            if synced >= Ports::WORKLOADS && shop_answers(&client, &entry).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the bookshop did not answer through the mesh within {} s ({synced} of {} \
                     proxies synced); see the logs",
                    READY_TIMEOUT.as_secs(),
                    Ports::WORKLOADS
                );
            }
        }
    };
    tokio::select! {
        ready = ready => ready?,
        exited = children.exited() => return Err(exited.into()),
        signal = stop.recv() => {
            println!("{signal} while starting");
            return Ok(());
        }
    }
    println!("{}", banner.render());

    let stats = ports.stats();
    let mut seen = load_stats(&client, &stats).await.unwrap_or_default();
    let mut report = interval_at(Instant::now() + TRAFFIC_EVERY, TRAFFIC_EVERY);
    loop {
        tokio::select! {
            exited = children.exited() => return Err(exited.into()),
            signal = stop.recv() => {
                println!("{signal}");
                return Ok(());
            }
            _ = report.tick() => {
                if let Ok(now) = load_stats(&client, &stats).await {
                    println!("{}", traffic_line(&now.since(&seen), TRAFFIC_EVERY.as_secs()));
                    seen = now;
                }
            }
        }
    }
}

/// The ports the demo hands out: each application's, and the local upstream ports its
/// sidecars open. Picked free up front; the sidecars pick their own inbound ports.
struct Ports {
    ratings_v1: u16,
    ratings_v2: u16,
    books: u16,
    web: u16,
    loadgen: u16,
    /// books' way to ratings.
    to_ratings: u16,
    /// web's way to books.
    to_books: u16,
    /// loadgen's (and the user's) way to web.
    to_web: u16,
}

impl Ports {
    /// How many workloads the demo runs.
    const WORKLOADS: usize = 5;

    /// Where the demo looks for free ports: below Linux's ephemeral range (32768 and up
    /// by default), so that between the pick and the workload's bind the kernel does not
    /// hand the port to another socket, a client connection's or a `:0` listener's.
    const PICK_FROM: u16 = 20_000;
    const PICK_SPAN: u16 = 12_000;

    fn pick() -> anyhow::Result<Self> {
        // Each demo starts at its own place, so two started at once rarely meet.
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let mut offset = u16::try_from(seed % u32::from(Self::PICK_SPAN)).unwrap_or(0);
        // Held open until all are picked, so that no two are the same.
        let mut held = Vec::new();
        let mut next = || -> anyhow::Result<u16> {
            for _ in 0..Self::PICK_SPAN {
                let port = Self::PICK_FROM + offset;
                offset = (offset + 1) % Self::PICK_SPAN;
                if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                    held.push(listener);
                    return Ok(port);
                }
            }
            let listener = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| Ok((l.local_addr()?.port(), l)))
                .context("cannot find a free port on 127.0.0.1")?;
            held.push(listener.1);
            Ok(listener.0)
        };
        Ok(Self {
            ratings_v1: next()?,
            ratings_v2: next()?,
            books: next()?,
            web: next()?,
            loadgen: next()?,
            to_ratings: next()?,
            to_books: next()?,
            to_web: next()?,
        })
    }

    /// `http://ADDR` of web through the mesh.
    fn entry(&self) -> String {
        format!("http://127.0.0.1:{}", self.to_web)
    }

    /// The load generator's counts, straight from it.
    fn stats(&self) -> String {
        format!("http://127.0.0.1:{}/stats", self.loadgen)
    }

    fn workloads(&self, rps: u32) -> Vec<Workload> {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ratings = |name, version: &str, port| Workload {
            name,
            service: "ratings",
            labels: vec![format!("version={version}")],
            app_port: port,
            upstreams: vec![],
            app_args: strings(&["ratings", "--version", version]),
            stops_first: false,
        };
        vec![
            ratings("ratings-v1", "v1", self.ratings_v1),
            ratings("ratings-v2", "v2", self.ratings_v2),
            Workload {
                name: "books",
                service: "books",
                labels: vec![],
                app_port: self.books,
                upstreams: vec![format!("ratings:{}", self.to_ratings)],
                app_args: strings(&[
                    "books",
                    "--ratings",
                    &format!("127.0.0.1:{}", self.to_ratings),
                ]),
                stops_first: false,
            },
            Workload {
                name: "web",
                service: "web",
                labels: vec![],
                app_port: self.web,
                upstreams: vec![format!("books:{}", self.to_books)],
                app_args: strings(&["web", "--books", &format!("127.0.0.1:{}", self.to_books)]),
                stops_first: false,
            },
            Workload {
                name: "loadgen",
                service: "loadgen",
                labels: vec![],
                app_port: self.loadgen,
                upstreams: vec![format!("web:{}", self.to_web)],
                app_args: strings(&[
                    "loadgen",
                    "--target",
                    &self.entry(),
                    "--rps",
                    &rps.to_string(),
                ]),
                stops_first: true,
            },
        ]
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed): each means stop.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    /// Watches the signals from now on, so one that arrives while starting is not lost.
    fn new() -> anyhow::Result<Self> {
        let watch = |kind, name| signal(kind).with_context(|| format!("cannot watch {name}"));
        Ok(Self {
            interrupt: watch(SignalKind::interrupt(), "SIGINT")?,
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
            hangup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The name of the next stop signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_wired_together() {
        let ports = Ports::pick().expect("ports");
        let workloads = ports.workloads(50);
        assert_eq!(workloads.len(), Ports::WORKLOADS);
        let mut app_ports: Vec<u16> = workloads.iter().map(|w| w.app_port).collect();
        app_ports.extend([ports.to_ratings, ports.to_books, ports.to_web]);
        app_ports.sort_unstable();
        app_ports.dedup();
        assert_eq!(app_ports.len(), 8);
        // books reaches ratings on the port its sidecar opens for ratings, and so on.
        let books = &workloads[2];
        assert_eq!(books.upstreams, [format!("ratings:{}", ports.to_ratings)]);
        assert!(books
            .app_args
            .contains(&format!("127.0.0.1:{}", ports.to_ratings)));
        let loadgen = &workloads[4];
        assert!(loadgen.stops_first);
        assert!(loadgen.app_args.contains(&ports.entry()));
        assert!(loadgen
            .app_args
            .ends_with(&["--rps".to_string(), "50".to_string()]));
    }
}
