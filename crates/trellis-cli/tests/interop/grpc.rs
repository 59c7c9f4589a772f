//! gRPC through the mesh between Python's `grpcio` client and server
//! (peers/grpc_client.py, peers/grpc_server.py): unary, server-, client- and bidi
//! streams of 10,000 messages, a failing call's status, details and trailers, and the
//! same through `http_proxy`, which grpcio honours with CONNECT.

use std::ffi::OsStr;

use tokio::process::Command;

use super::mesh::{
    assert_passed, inbound_mtls_handshakes, peer, require_programs, require_python, run_client,
    Caller, Mesh, Server,
};

/// Every case the client script runs; each must pass.
const CASES: [&str; 7] = [
    "unary",
    "server-stream",
    "client-stream",
    "bidi",
    "large-messages",
    "cancel",
    "status",
];

async fn echo_mesh() -> (Mesh, Server, Caller) {
    require_programs(&["python3"], "python3");
    require_python("grpc", "grpcio==1.85.4");
    let mut mesh = Mesh::start().await;
    let script = peer("grpc_server.py");
    let server = mesh
        .serve("echo", "grpc", &[OsStr::new("python3"), script.as_os_str()])
        .await;
    let caller = mesh.caller(&["echo"]).await;
    (mesh, server, caller)
}

/// Runs peers/grpc_client.py against `target` and checks its report.
async fn run_cases(mut client: Command, target: &str) {
    client.arg(peer("grpc_client.py")).args([target, "10000"]);
    let printed = run_client(client).await;
    assert_passed(&printed, &CASES);
    for line in [
        "ok server-stream 10000",
        "ok client-stream 10000",
        "ok bidi 10000",
        "ok status FAILED_PRECONDITION",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line}:\n{printed}");
    }
}

#[tokio::test]
async fn grpcio_streams_of_10000_messages_and_statuses_cross_intact() {
    let (_mesh, server, caller) = echo_mesh().await;
    let mut client = Command::new("python3");
    client.env_remove("http_proxy").env_remove("grpc_proxy");
    run_cases(client, &caller.upstream("echo")).await;
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}

#[tokio::test]
async fn grpcio_reaches_a_mesh_service_through_http_proxy() {
    let (_mesh, server, caller) = echo_mesh().await;
    let mut client = Command::new("python3");
    client
        .env("http_proxy", format!("http://{}", caller.http_proxy))
        .env_remove("grpc_proxy")
        .env_remove("no_proxy")
        .env_remove("no_grpc_proxy");
    // By name: grpcio asks the proxy for `CONNECT echo:8080`.
    run_cases(client, "echo:8080").await;
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
