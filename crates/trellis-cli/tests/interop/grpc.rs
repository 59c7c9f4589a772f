//! gRPC through the mesh between Python's `grpcio` client and server
//! (peers/grpc_client.py, peers/grpc_server.py): unary, server-, client- and bidi
//! streams of 10,000 messages, a failing call's status, details and trailers, and the
//! same from a client-only workload under `trellis run`, through the `HTTP_PROXY` it
//! is given, which grpcio honours with CONNECT.

use std::ffi::OsStr;

use tokio::process::Command;

use super::mesh::{
    assert_passed, inbound_mtls_handshakes, peer, python_peer, require_programs, require_python,
    run_client, Mesh, Server,
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

/// The `echo` Service (peers/grpc_server.py under `trellis run`), its sidecar synced.
async fn echo_mesh() -> (Mesh, Server) {
    require_programs(&["python3"], "python3");
    require_python("grpc", "grpcio==1.85.4");
    let mut mesh = Mesh::start().await;
    let script = peer("grpc_server.py");
    let server = mesh
        .serve("echo", "grpc", &[OsStr::new("python3"), script.as_os_str()])
        .await;
    mesh.wait_until_synced().await;
    (mesh, server)
}

/// Checks the report of peers/grpc_client.py.
fn assert_all_passed(printed: &str) {
    assert_passed(printed, &CASES);
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
    let (mut mesh, server) = echo_mesh().await;
    let caller = mesh.caller(&["echo"]).await;
    let mut client = Command::new("python3");
    client
        .arg(peer("grpc_client.py"))
        .args([caller.upstream("echo").as_str(), "10000"])
        .env_remove("http_proxy")
        .env_remove("grpc_proxy");
    assert_all_passed(&run_client(client).await);
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}

#[tokio::test]
async fn grpcio_under_trellis_run_reaches_a_mesh_service_through_http_proxy() {
    let (mesh, server) = echo_mesh().await;
    // A client-only workload calls the Service by name; `trellis run` gave it
    // HTTP_PROXY, and grpcio asks that proxy for `CONNECT echo:8080`.
    let client = python_peer("grpc_client.py", &["echo:8080", "10000"]);
    let printed = mesh.run_workload("web", &["echo"], &client).await;
    assert_all_passed(&printed);
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
