//! `trellis proxy`: the proxy standalone from a file (`--config FILE`), or as a sidecar
//! under the control plane (`--service NAME --app ADDR [--control URL]`), driven by
//! signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_proxy::{Proxy, ProxyConfig};

use crate::sidecar::{self, SidecarArgs};

/// Flags of `trellis proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The proxy configuration (YAML). SIGHUP reloads it.
    #[arg(long, short, conflicts_with_all = ["service", "app"])]
    pub config: Option<PathBuf>,
    /// As a sidecar under the control plane at `--control URL`: the service this
    /// workload belongs to.
    #[arg(long, requires = "app")]
    pub service: Option<String>,
    /// As a sidecar: the application's address on loopback (`127.0.0.1:8080`).
    #[arg(long, requires = "service")]
    pub app: Option<SocketAddr>,
    /// As the sidecar injected into a Kubernetes Pod: settings from the environment the
    /// injector gives the container (see docs/kubernetes.md).
    #[arg(long, conflicts_with_all = ["config", "service", "app"])]
    pub kubernetes: bool,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if args.kubernetes {
        return crate::pod_sidecar::run().await;
    }
    match (args.config, args.service, args.app) {
        (Some(path), _, _) => run_file(&path).await,
        (None, Some(service), Some(app)) => {
            let listeners = sidecar::bind(&args.sidecar, None)?;
            let sidecar =
                sidecar::start(&service, app.port(), &args.sidecar, None, listeners).await?;
            wait_for_stop().await?;
            let left = sidecar.proxy.shutdown().await;
            if left > 0 {
                tracing::warn!(connections = left, "drain deadline passed");
            }
            Ok(())
        }
        _ => anyhow::bail!(
            "give --config FILE, or --service NAME and --app ADDR to run under the control plane at --control URL"
        ),
    }
}

pub async fn wait_for_stop() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

async fn run_file(path: &Path) -> anyhow::Result<()> {
    let config = ProxyConfig::load(path)?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let proxy = Proxy::start(config).await?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match proxy.reload_file(path).await {
                Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                Err(e) => tracing::error!(config = %path.display(), error = %e, "configuration refused; the running configuration stays in force"),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    let left = proxy.shutdown().await;
    if left > 0 {
        tracing::warn!(
            connections = left,
            "drain deadline passed; closing remaining connections"
        );
    } else {
        tracing::info!("drained");
    }
    Ok(())
}
