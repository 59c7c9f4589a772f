//! `trellis control`: the control plane, on the embedded store in a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_control::ca::CaSettings;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_identity::CaPem;

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
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = trellis_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime of workload certificates (`24h`, `10m`, `30s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// An intermediate CA to sign with, PEM: its certificate followed by the chain up to
    /// the organisation's root, which becomes the mesh's trust anchor. Needs --ca-key.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The intermediate CA's private key, PKCS#8 PEM.
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
}

/// A duration as the resources write them: `1h30m`, `10s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<trellis_api::duration::Duration>()
        .map(|d| d.get())
        .map_err(|e| e.to_string())
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
    let mut ca = CaSettings::new(&args.trust_domain);
    ca.workload_validity = args.cert_ttl;
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        ca.operator = Some(CaPem {
            cert_chain: read(cert)?,
            key: read(key)?,
        });
    }
    let settings = ControlSettings {
        data_dir: data_dir.clone(),
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        grace: Duration::from_secs(args.grace_secs),
        ca,
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
