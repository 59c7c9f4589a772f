//! `trellis sample-server`: the sample service the demo and benchmark put behind the
//! proxy.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_testkit::http::{HttpServer, ServerProtocol};

pub async fn run(listen: SocketAddr, name: &str) -> anyhow::Result<()> {
    let server = HttpServer::start_on(listen, name, ServerProtocol::Auto)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %server.addr(), name, "sample server listening");
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("cannot watch SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
