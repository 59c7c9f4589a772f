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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (program, rest) = args.command.split_first().context("no command to run")?;
    let mut child = Command::new(program)
        .args(rest)
        .env("PORT", args.port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
    wait_until_listening(&mut child, args.port).await?;
    let sidecar = sidecar::start(&args.service, args.port, &args.sidecar).await?;
    println!(
        "{} running as workload {} (sidecar inbound port {})",
        args.service, sidecar.workload.name, sidecar.workload.inbound_port
    );
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
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
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = child.wait().await;
            Ok(())
        }
    }
}
