//! Long-lived connections across configuration changes: a WebSocket, a gRPC bidi
//! stream and a redis connection (peers/long_lived.py) carry traffic while 20 route,
//! authorization-policy and access-log-format changes reach the sidecars. Not one may
//! be reset, and every message must be answered.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use trellis_testkit::assert_eventually;

use super::mesh::{peer, require_programs, require_python, Mesh};
use super::redis::start_cache;

const CHANGES: usize = 20;

/// Change number `i`: a route, a policy or the access-log format, in turn; routes and
/// policies go to each of the three Services in turn.
fn change(i: usize, caller_identity: &str, log: &std::path::Path) -> String {
    let service = ["chat", "echo", "cache"][i / 3 % 3];
    match i % 3 {
        0 => {
            let (kind, api) = match service {
                "chat" => ("HTTPRoute", "v1"),
                "echo" => ("GRPCRoute", "v1"),
                _ => ("TCPRoute", "v1alpha2"),
            };
            // HTTP and gRPC routes set a header; the TCP route changes its weight.
            let rule = match service {
                "cache" => format!("    - backendRefs: [{{name: cache, weight: {}}}]\n", i + 1),
                _ => format!(
                    "    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{{name: x-change, value: \"{i}\"}}]\n      backendRefs: [{{name: {service}}}]\n"
                ),
            };
            format!(
                "apiVersion: gateway.networking.k8s.io/{api}\nkind: {kind}\nmetadata: {{name: {service}}}\nspec:\n  parentRefs: [{{kind: Service, name: {service}}}]\n  rules:\n{rule}"
            )
        }
        1 => {
            // The caller stays allowed; the policy's other identity changes.
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{service}}}\nspec:\n  targetRef: {{kind: Service, name: {service}}}\n  rules:\n    - from: [{{identities: [\"{caller_identity}\", \"spiffe://trellis.local/ns/default/sa/other-{i}\"]}}]\n"
            )
        }
        _ => {
            let format = if i.is_multiple_of(2) { "json" } else { "text" };
            format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: default}}\nspec:\n  mtls: {{mode: strict}}\n  accessLog: {{format: {format}, output: {}}}\n",
                log.display()
            )
        }
    }
}

/// Each proxy's acknowledged configuration version.
async fn acked_versions(mesh: &Mesh) -> Vec<u64> {
    let mut proxies = mesh.proxies().await;
    proxies.sort_by_key(|p| p["workload"].as_str().unwrap_or_default().to_owned());
    proxies
        .iter()
        .map(|p| p["ackedVersion"].as_u64().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn websocket_grpc_and_tcp_connections_outlive_20_configuration_changes() {
    require_programs(&["python3"], "python3");
    require_python("websockets", "websockets==17.4");
    require_python("grpc", "grpcio==1.85.4");
    let mut mesh = Mesh::start().await;
    let ws_report = mesh.dir.path().join("ws-server-report");
    let (ws_server, grpc_server) = (peer("ws_server.py"), peer("grpc_server.py"));
    let python = OsStr::new("python3");
    mesh.serve(
        "chat",
        "http",
        &[python, ws_server.as_os_str(), ws_report.as_os_str()],
    )
    .await;
    mesh.serve("echo", "grpc", &[python, grpc_server.as_os_str()])
        .await;
    start_cache(&mut mesh).await;
    let caller = mesh.caller(&["chat", "echo", "cache"]).await;
    let caller_identity = mesh
        .proxies()
        .await
        .iter()
        .find(|p| p["service"] == "web")
        .and_then(|p| p["identity"].as_str().map(str::to_owned))
        .expect("the caller's identity");

    let mut client = Command::new("python3");
    client
        .arg(peer("long_lived.py"))
        .arg(format!("ws://{}/chat", caller.upstream("chat")))
        .args([caller.upstream("echo"), caller.upstream("cache")])
        .env_remove("http_proxy")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut client = client.spawn().expect("start long_lived.py");
    let mut stdin = client.stdin.take();
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("long_lived.py ready within 60s")
        .expect("read");
    assert_eq!(first.as_deref(), Some("ready"));

    let log = mesh.dir.path().join("access.log");
    for i in 0..CHANGES {
        let before = acked_versions(&mesh).await;
        mesh.apply(&change(i, &caller_identity, &log)).await;
        // Applied: some sidecar acknowledged a newer version, and all hold the last sent.
        assert_eventually!(
            {
                let after = acked_versions(&mesh).await;
                after.len() == before.len() && after.iter().zip(&before).any(|(a, b)| a > b)
            },
            "change {i} reached no sidecar"
        );
        mesh.wait_until_synced().await;
    }
    // Traffic goes on a while under the last configuration, then the client reports.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stdin.take());
    let report = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("long_lived.py reports within 60s")
        .expect("read")
        .expect("a report line");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    for connection in ["websocket", "grpc", "tcp"] {
        let c = &report[connection];
        assert!(c["error"].is_null(), "{connection}: {c}");
        assert_eq!(c["sent"], c["answered"], "{connection}: {c}");
        assert!(
            c["answered"].as_u64().is_some_and(|n| n > 0),
            "{connection}: {c}"
        );
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), client.wait())
        .await
        .expect("long_lived.py exits")
        .expect("wait");
    assert!(exit.success(), "{exit}");
}
