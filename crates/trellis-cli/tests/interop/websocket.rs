//! WebSocket through the mesh between the Python `websockets` client and server
//! (peers/ws_client.py, peers/ws_server.py): text, binary, pings from both sides, a
//! 1 MiB message and close codes seen by the other end.

use std::ffi::OsStr;

use tokio::process::Command;
use trellis_testkit::assert_eventually;

use super::mesh::{
    assert_passed, inbound_mtls_handshakes, peer, require_programs, require_python, run_client,
    Mesh,
};

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

    let mut client = Command::new("python3");
    client
        .arg(peer("ws_client.py"))
        .arg(format!("ws://{}/chat", caller.upstream("chat")));
    let printed = run_client(client).await;
    assert_passed(
        &printed,
        &[
            "text",
            "binary",
            "client-ping",
            "server-ping",
            "1MiB",
            "server-close",
            "client-close",
        ],
    );
    assert!(printed.contains("ok text 100\n"), "{printed}");
    // The 1 MiB message is 32 768 copies of SHA-256("seed"), echoed whole.
    assert!(
        printed
            .contains("ok 1MiB 864fc0d7bc76787dc87a8a53da8a596ab3f13ca455168b8ff2d889e3e8699c11\n"),
        "{printed}"
    );
    // The server saw each close as the client sent it.
    assert_eventually!(std::fs::read_to_string(&report).is_ok_and(|r| r.lines().count() == 3));
    let seen = std::fs::read_to_string(&report).expect("report");
    assert!(seen.contains("closed 4002 server done\n"), "{seen}");
    assert!(seen.contains("closed 4001 client done\n"), "{seen}");
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
