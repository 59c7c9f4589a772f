//! `trellis run --service NAME --port PORT -- CMD`: universal mode. Starts the
//! application with its sidecar, registers it with the control plane, and stops both
//! together.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::sidecar::{self, SidecarArgs};

/// Flags of `trellis run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The service this workload belongs to (label `app=NAME`).
    #[arg(long)]
    pub service: String,
    /// The port the application listens on (on loopback); passed to it as `PORT`.
    #[arg(long)]
    pub port: u16,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    /// Stop (as on SIGTERM) when the process that started `trellis run` exits, so a
    /// supervisor that dies takes its workloads with it.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// The application and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How long the application gets to start listening before `trellis run` gives up.
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
    let (program, rest) = args.command.split_first().context("no command to run")?;
    let http_proxy_port = match args.sidecar.http_proxy_port {
        Some(port) => port,
        None => sidecar::free_port()?,
    };
    args.sidecar.http_proxy_port = Some(http_proxy_port);
    let http_proxy = format!("http://127.0.0.1:{http_proxy_port}");
    // Loopback stays direct: the app's upstream ports are there.
    let no_proxy = "localhost,127.0.0.1,::1";
    let mut child = Command::new(program)
        .args(rest)
        .env("PORT", args.port.to_string())
        .env("HTTP_PROXY", &http_proxy)
        .env("http_proxy", &http_proxy)
        .env("NO_PROXY", no_proxy)
        .env("no_proxy", no_proxy)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    let starting = async {
        wait_until_listening(&mut child, args.port).await?;
        sidecar::start(&args.service, args.port, &args.sidecar).await
    };
    let started = tokio::select! {
        started = starting => Some(started?),
        _ = terminate.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(sidecar) = started else {
        stop_app(&mut child).await;
        return Ok(());
    };
    println!(
        "{} running as workload {} (sidecar inbound port {}, HTTP proxy {http_proxy})",
        args.service, sidecar.workload.name, sidecar.workload.inbound_port
    );
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

/// Asks the app to stop with SIGTERM, as a supervisor would, and waits for it.
async fn stop_app(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let _ = child.wait().await;
}
