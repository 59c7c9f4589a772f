//! `trellis sample-server`: the sample service the demo and benchmark put behind the
//! proxy.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_testkit::http::{HttpServer, ServerProtocol};
use trellis_testkit::tcp::SpeakFirstServer;

pub async fn run(listen: SocketAddr, name: &str, greeting: Option<String>) -> anyhow::Result<()> {
    // Either server stops when dropped, at the end of this function.
    let _server: Box<dyn std::any::Any> = match greeting {
        Some(greeting) => {
            // Lives as long as the process.
            let greeting: &'static [u8] = format!("{greeting}\n").leak().as_bytes();
            let server = SpeakFirstServer::start_on(listen, greeting)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(address = %server.addr(), name, "sample server listening (TCP, speaks first)");
            Box::new(server)
        }
        None => {
            let server = HttpServer::start_on(listen, name, ServerProtocol::Auto)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(address = %server.addr(), name, "sample server listening");
            Box::new(server)
        }
    };
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("cannot watch SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
