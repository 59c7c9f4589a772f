//! `trellis proxy --config FILE`: the proxy standalone, driven by signals.

use std::path::Path;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_proxy::{Proxy, ProxyConfig};

pub async fn run(path: &Path) -> anyhow::Result<()> {
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
