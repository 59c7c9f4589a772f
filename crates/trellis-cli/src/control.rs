//! `trellis control`: the control plane, on the embedded store in a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_control::server::{ControlPlane, ControlSettings};

/// Flags of `trellis control`.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Where the store and the admin token live. Default `$XDG_DATA_HOME/trellis`,
    /// else `~/.local/share/trellis`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP API (and dashboard) address.
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub http_addr: SocketAddr,
    /// gRPC address proxies connect to.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub grpc_addr: SocketAddr,
    /// How long a disconnected proxy's workload stays registered, in seconds.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
}

/// The default data directory: `$XDG_DATA_HOME/trellis`, else
/// `$HOME/.local/share/trellis`.
pub fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let data = match xdg {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(data.join("trellis"))
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir().context("no data directory: pass --data-dir or set HOME")?,
    };
    let settings = ControlSettings {
        data_dir: data_dir.clone(),
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        grace: Duration::from_secs(args.grace_secs),
    };
    let cp = ControlPlane::start(settings).await?;
    println!("control plane running");
    println!("  HTTP API   http://{}", cp.http_addr);
    println!("  proxy API  http://{}", cp.grpc_addr);
    println!("  data       {}", data_dir.display());
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("cannot watch SIGINT")?,
        _ = terminate.recv() => {}
    }
    tracing::info!("control plane stopping; proxies keep their configuration");
    cp.stop().await;
    Ok(())
}
