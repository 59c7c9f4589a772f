//! `trellis run --service NAME --port PORT -- CMD`: universal mode. Starts the
//! application with its sidecar, registers it with the control plane, and stops both
//! together.

use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;
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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (program, rest) = args.command.split_first().context("no command to run")?;
    let mut child = Command::new(program)
        .args(rest)
        .env("PORT", args.port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))?;
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
