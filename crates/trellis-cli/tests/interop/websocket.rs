//! WebSocket through the mesh between the Python `websockets` client and server
//! (peers/ws_client.py, peers/ws_server.py): text, binary, pings from both sides, a
//! 1 MiB message and close codes seen by the other end; through an upstream port, and
//! from a client-only workload under `trellis run` through its `HTTP_PROXY`.

use std::ffi::OsStr;

use tokio::process::Command;
use trellis_testkit::assert_eventually;

use super::mesh::{
    assert_passed, inbound_mtls_handshakes, peer, python_peer, require_programs, require_python,
    run_client, Mesh,
};

/// Checks the report of peers/ws_client.py.
fn assert_all_passed(printed: &str) {
    let cases = [
        "text",
        "binary",
        "client-ping",
        "server-ping",
        "1MiB",
        "server-close",
        "client-close",
    ];
    assert_passed(printed, &cases);
    assert!(printed.contains("ok text 100\n"), "{printed}");
    // The 1 MiB message is 32 768 copies of SHA-256("seed"), echoed whole.
    let sha = "864fc0d7bc76787dc87a8a53da8a596ab3f13ca455168b8ff2d889e3e8699c11";
    assert!(printed.contains(&format!("ok 1MiB {sha}\n")), "{printed}");
}

#[tokio::test]
async fn websockets_client_and_server_talk_through_the_mesh() {
    require_programs(&["python3"], "python3");
    require_python("websockets", "websockets==17.4");
    let mut mesh = Mesh::start().await;
    let report = mesh.dir.path().join("ws-server-report");
    let script = peer("ws_server.py");
    let server = mesh
        .serve(
            "chat",
            "http",
            &[
                OsStr::new("python3"),
                script.as_os_str(),
                report.as_os_str(),
            ],
        )
        .await;
    let caller = mesh.caller(&["chat"]).await;

    // Through the caller's upstream port…
    let mut client = Command::new("python3");
    client
        .arg(peer("ws_client.py"))
        .arg(format!("ws://{}/chat", caller.upstream("chat")))
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    assert_all_passed(&run_client(client).await);
    // …and from a client-only workload under `trellis run`, by name: websockets
    // tunnels through the HTTP_PROXY it was given with `CONNECT chat:8080`.
    let client = python_peer("ws_client.py", &["ws://chat:8080/chat"]);
    let printed = mesh.run_workload("web", &["chat"], &client).await;
    assert_all_passed(&printed);
    // The server saw each close as the clients sent it: three connections each.
    assert_eventually!(std::fs::read_to_string(&report).is_ok_and(|r| r.lines().count() == 6));
    let seen = std::fs::read_to_string(&report).expect("report");
    assert_eq!(
        seen.matches("closed 4002 server done\n").count(),
        2,
        "{seen}"
    );
    assert_eq!(
        seen.matches("closed 4001 client done\n").count(),
        2,
        "{seen}"
    );
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
