//! The Gateway API's mesh (GAMMA) conformance cases on the node-agent test bed.
//!
//! The suite (`sigs.k8s.io/gateway-api/conformance` v1.6.3, profiles MESH-HTTP and
//! MESH-GRPC) execs a client into an echo Pod through a kubelet, which cannot run
//! here. This binary runs the same cases on one cluster of the test kit: the suite's
//! base manifests (`conformance/mesh/manifests.yaml`, read from the cache
//! `scripts/kube-testbed.sh` fills, not committed) injected by `trellis inject` and run
//! by the node agent, the echo image played by this very binary (`gamma echo-server`),
//! and each case's manifest applied in turn, its requests made by `gamma echo-client`
//! in the client Pod's network namespace and its answers checked as the case says
//! (`gamma/cases.rs`). Cases Trellis is known to fail are marked with the reason, and
//! must keep failing that way until the gap is closed and the mark removed.
//!
//! `cargo test -p trellis-cli --test gamma [NAME…]` runs every case, or those whose
//! name contains a NAME.

mod support;

/// The cases, and how they are run and checked.
mod gamma {
    pub mod case;
    pub mod cases;
    pub mod check;
}

use std::process::ExitCode;

use trellis_testkit::echo::{EchoCall, EchoOptions, EchoServer};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match args.first().map(String::as_str) {
        Some("echo-server") => runtime.block_on(echo_server(&args[1..])),
        Some("echo-client") => runtime.block_on(echo_client(&args[1..])),
        _ => {
            // Flags of the test harness (`--nocapture`, …) mean nothing here.
            let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
            runtime.block_on(gamma::check::run_suite(&filters));
            ExitCode::SUCCESS
        }
    }
}

/// The echo image: serves until SIGTERM, as the Pod named by `HOSTNAME`.
async fn echo_server(args: &[String]) -> ExitCode {
    let name = std::env::var("HOSTNAME").unwrap_or_default();
    let options = match EchoOptions::from_args(&name, args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let _server = match EchoServer::start(&options).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("echo: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "echo {name}: HTTP on {:?}, gRPC on {:?}",
        options.http, options.grpc
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("watch SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    ExitCode::SUCCESS
}

/// The echo client: makes the calls its arguments say and prints the answers.
async fn echo_client(args: &[String]) -> ExitCode {
    match EchoCall::from_args(args) {
        Ok(call) => {
            print!("{}", call.run().await);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
