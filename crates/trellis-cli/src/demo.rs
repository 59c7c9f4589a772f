//! `trellis demo` and the hidden `trellis demo-app ROLE` it runs its workloads as: the
//! sample bookshop under the mesh, from `trellis-demo`.

use std::net::SocketAddr;

use anyhow::Context;
use trellis_demo::DemoSettings;

/// Flags of `trellis demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The control plane's HTTP API address (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub http_addr: SocketAddr,
    /// The control plane's gRPC address, which the sidecars connect to (port 0: a free
    /// one).
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub grpc_addr: SocketAddr,
    /// Requests a second the load generator sends to the shop, 1 to 10.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub rps: u32,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("cannot find the trellis executable")?;
    trellis_demo::run_demo(DemoSettings {
        program,
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        rps: args.rps,
    })
    .await
}
