//! `trellis run --service NAME [--port PORT] -- CMD`: universal mode. Starts the
//! application with its sidecar, registers it with the control plane, and stops both
//! together. With `--transparent`, the two run in a pod of their own ([`crate::pod`]).
//! Without `--port` the application is a client only (a batch job, a CLI): its sidecar
//! starts first, so its first call already goes through the mesh, and it is never an
//! endpoint of its Service.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::pod::{self, Pod, PodArgs};
use crate::sidecar::{self, Capture, SidecarArgs};

/// Flags of `trellis run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The service this workload belongs to (label `app=NAME`).
    #[arg(long)]
    pub service: String,
    /// The port the application listens on (on loopback); passed to it as `PORT`.
    /// Leave it out for an application that only makes calls.
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    #[command(flatten)]
    pub pod: PodArgs,
    /// Stop (as on SIGTERM) when the process that started `trellis run` exits, so a
    /// supervisor that dies takes its workloads with it.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// The application and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How long the application gets to start listening, or a client's sidecar to get its
/// configuration, before `trellis run` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the application accepts connections on its port, so the workload is
/// registered (and becomes an endpoint) only once it can serve.
async fn wait_until_listening(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().context("waiting for the application")? {
            anyhow::bail!("the application exited with {status} before listening on port {port}");
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the application did not listen on 127.0.0.1:{port} within {READY_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks the kernel for SIGTERM when the parent exits, and exits at once if it already
/// has (the process was then re-parented before the request took effect).
fn exit_with_parent() -> anyhow::Result<()> {
    let parent = rustix::process::getppid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .context("cannot ask to be stopped with the parent process")?;
    if rustix::process::getppid() != parent {
        anyhow::bail!("the parent process has exited");
    }
    Ok(())
}

pub async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    // Watched from the start: a SIGTERM while the app starts must stop it too, not
    // end this process and leave the app behind.
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    if args.exit_with_parent {
        exit_with_parent()?;
    }
    if args.pod.transparent && args.pod.inside_pod.is_none() {
        return run_pod(&args, &mut terminate).await;
    }
    let _orphaned = args.pod.inside_pod.clone().map(|name| OrphanedPod {
        name,
        parent: rustix::process::getppid(),
    });
    let capture = match &args.pod.inside_pod {
        Some(_) => Some(enter_pod(&mut args)?),
        None => None,
    };
    let (program, rest) = args.command.split_first().context("no command to run")?;
    let mut app = Command::new(program);
    app.args(rest).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(port) = args.port {
        app.env("PORT", port.to_string());
    }
    // In a pod the app dials Services by name and the capture takes it from there;
    // elsewhere it gets an HTTP proxy, on a port the kernel picks unless given.
    if capture.is_none() {
        args.sidecar.http_proxy_port.get_or_insert(0);
    }
    // Bound before the app starts, which is told the HTTP proxy's port, and before the
    // sidecar registers with the ports it holds.
    let listeners = sidecar::bind(&args.sidecar, capture)?;
    let http_proxy = match (capture, listeners.http_proxy_port()) {
        (Some(_), _) | (None, None) => None,
        (None, Some(port)) => {
            let http_proxy = format!("http://127.0.0.1:{port}");
            // Loopback stays direct: the app's upstream ports are there.
            let no_proxy = "localhost,127.0.0.1,::1";
            app.env("HTTP_PROXY", &http_proxy)
                .env("http_proxy", &http_proxy)
                .env("NO_PROXY", no_proxy)
                .env("no_proxy", no_proxy);
            Some(http_proxy)
        }
    };
    let spawn = |app: &mut Command| {
        app.spawn()
            .with_context(|| format!("cannot start {program:?}"))
    };
    let mut child: Option<Child> = None;
    let starting = async {
        // A server registers (and becomes an endpoint) only once it listens; a client
        // gets its sidecar first, so its first call is not refused.
        if let Some(port) = args.port {
            wait_until_listening(child.insert(spawn(&mut app)?), port).await?;
        }
        let app_port = args.port.unwrap_or(0);
        let sidecar =
            sidecar::start(&args.service, app_port, &args.sidecar, capture, listeners).await?;
        let dns = match capture {
            Some(_) => Some(serve_dns(&sidecar, &args).await?),
            None => None,
        };
        if child.is_none() {
            // A client's first call must find its routes.
            tokio::time::timeout(READY_TIMEOUT, sidecar.configured())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the sidecar got no configuration from the control plane within {READY_TIMEOUT:?}"
                    )
                })?;
            child = Some(spawn(&mut app)?);
        }
        anyhow::Ok((sidecar, dns))
    };
    let started = tokio::select! {
        started = starting => Some(started),
        _ = terminate.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
    };
    let (sidecar, _dns, mut child) = match (started, child) {
        (Some(Ok((sidecar, dns))), Some(child)) => (sidecar, dns, child),
        (started, child) => {
            if let Some(mut child) = child {
                stop_app(&mut child).await;
            }
            return match started {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
    };
    let how = match &http_proxy {
        Some(http_proxy) => format!("HTTP proxy {http_proxy}"),
        None => format!(
            "transparent: address {}, outbound port {}",
            sidecar.workload.address, sidecar.workload.outbound_port
        ),
    };
    match args.port {
        Some(_) => println!(
            "{} running as workload {} (sidecar inbound port {}, {how})",
            args.service, sidecar.workload.name, sidecar.workload.inbound_port
        ),
        None => println!(
            "{} running as workload {} (client only, {how})",
            args.service, sidecar.workload.name
        ),
    }
    let status = tokio::select! {
        status = child.wait() => Some(status.context("waiting for the application")?),
        _ = terminate.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
    };
    // The sidecar drains first so in-flight requests to the app complete.
    sidecar.proxy.shutdown().await;
    match status {
        Some(status) if !status.success() => {
            anyhow::bail!("{program} exited with {status}")
        }
        Some(_) => Ok(()),
        None => {
            stop_app(&mut child).await;
            Ok(())
        }
    }
}

/// The outer process of `--transparent`: makes the pod, runs this same command inside
/// it, and removes the pod when that ends.
async fn run_pod(
    args: &RunArgs,
    terminate: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!("--transparent makes a network namespace and iptables rules: run as root");
    }
    let upstream = match args.pod.dns_upstream {
        Some(upstream) => Some(upstream),
        None => std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|text| pod::first_nameserver(&text)),
    };
    if let Some(upstream) = upstream.filter(|u| u.ip().is_loopback()) {
        // The host's loopback is not the pod's: names outside the mesh will not resolve.
        tracing::warn!(%upstream, "the upstream resolver is on the host's loopback, which a pod cannot reach; pass --dns-upstream");
    }
    let name = match &args.pod.pod_name {
        Some(name) => name.clone(),
        None => format!("trellis-{}-{:04x}", args.service, fastrand::u16(..)),
    };
    let pod = Pod::create(&name, &args.pod, &args.sidecar.namespace)?;
    let exe = std::env::current_exe().context("cannot find the trellis binary")?;
    let mut inner = Command::new("ip");
    inner
        .args(["netns", "exec", &pod.name])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(pod::POD_ENV, &pod.name)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(upstream) = upstream {
        inner.env("TRELLIS_DNS_UPSTREAM", upstream.to_string());
    }
    let mut child = inner.spawn().context("cannot start the pod's process")?;
    let status = tokio::select! {
        status = child.wait() => Some(status.context("waiting for the pod's process")?),
        _ = terminate.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
    };
    let status = match status {
        Some(status) => status,
        None => {
            stop_app(&mut child).await;
            return Ok(());
        }
    };
    drop(pod);
    if !status.success() {
        anyhow::bail!("the pod's process exited with {status}");
    }
    Ok(())
}

/// The inner process of `--transparent`, in the pod: takes the pod's address, asks the
/// kernel to stop it with the outer process, and installs the capture rules.
fn enter_pod(args: &mut RunArgs) -> anyhow::Result<Capture> {
    let (ip, _) = args
        .pod
        .pod_address
        .context("--transparent needs --pod-address")?;
    args.sidecar.address = ip.into();
    if args.sidecar.inbound_port == 0 {
        args.sidecar.inbound_port = trellis_control::compile::DEFAULT_INBOUND_PORT;
    }
    exit_with_parent()?;
    let mut control: Vec<&str> = vec![args.sidecar.client.control.as_str()];
    control.extend(args.sidecar.control_grpc.iter().map(String::as_str));
    pod::install_capture(
        args.sidecar.inbound_port,
        args.pod.outbound_port,
        args.sidecar.admin.port(),
        pod::url_hosts(&control)?,
    )?;
    Ok(Capture {
        outbound_port: args.pod.outbound_port,
        mark: pod::PROXY_MARK,
        dns_upstream: args.pod.dns_upstream,
    })
}

/// Removes the pod on the way out of the inner process if the outer one that made it
/// is gone (killed without a chance to remove it).
struct OrphanedPod {
    name: String,
    parent: Option<rustix::process::Pid>,
}

impl Drop for OrphanedPod {
    fn drop(&mut self) {
        if rustix::process::getppid() != self.parent {
            Pod::remove(&self.name);
        }
    }
}

/// The pod's DNS server, in the sidecar.
async fn serve_dns(
    sidecar: &sidecar::Sidecar,
    args: &RunArgs,
) -> anyhow::Result<trellis_proxy::dns::DnsServer> {
    let settings = trellis_proxy::dns::DnsSettings {
        address: args.pod.dns_address,
        namespace: args.sidecar.namespace.clone(),
        upstream: args.pod.dns_upstream,
    };
    sidecar
        .proxy
        .serve_dns(settings)
        .await
        .with_context(|| format!("cannot serve DNS on {}", args.pod.dns_address))
}

/// Asks the app to stop with SIGTERM, as a supervisor would, and waits for it.
async fn stop_app(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let _ = child.wait().await;
}
