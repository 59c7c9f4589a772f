//! `trellis proxy` as an operator runs it: exit codes, one-line errors, SIGTERM drain
//! and SIGHUP reload, against the real binary.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use http::StatusCode;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

mod support;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");

/// A loopback address that was free a moment ago (the binary needs a concrete address
/// to report).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("trellis-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: web\n    address: {listen}\n    routes: [{{backend: app}}]\nbackends:\n  - name: app\n    endpoints: [{backend}]\nadmin: {admin}\n"
    )
}

fn run_to_end(config: &Path) -> Output {
    Command::new(TRELLIS)
        .args(["proxy", "--config"])
        .arg(config)
        .env("TRELLIS_LOG", "error")
        .output()
        .expect("run trellis")
}

fn spawn(config: &Path) -> Child {
    Command::new(TRELLIS)
        .args(["proxy", "--config"])
        .arg(config)
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trellis")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_ready(admin: SocketAddr) {
    let client = HttpClient::http1();
    let url = format!("http://{admin}/ready");
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK));
}

#[test]
fn startup_errors_are_one_line_and_exit_1() {
    let dir = TempDir::new("errors");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let cases = [
        (
            dir.file("in-use.yaml", &config(taken_addr, free_port(), free_port())),
            format!("error: listener web: cannot bind {taken_addr}: "),
        ),
        (
            dir.file("broken.yaml", "listeners: ["),
            "error: listeners: ".to_string(),
        ),
        (
            dir.file(
                "unknown.yaml",
                &config(free_port(), free_port(), free_port())
                    .replace("routes:", "colour: red\n    routes:"),
            ),
            "error: listeners[0].colour: unknown field `colour`, expected one of name, address"
                .to_string(),
        ),
        (
            dir.0.join("missing.yaml"),
            "error: cannot read config file ".to_string(),
        ),
    ];
    for (path, want) in cases {
        let out = run_to_end(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&want),
            "got {stderr:?}, want prefix {want:?}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let dir = TempDir::new("drain");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.file("proxy.yaml", &config(listen, admin, server.addr()));
    let mut child = spawn(&path);
    wait_ready(admin).await;

    let slow = tokio::spawn(async move {
        HttpClient::http1()
            .get(&format!("http://{listen}/delay/700"))
            .await
    });
    assert_eventually!(server.requests() == 1);
    signal(&child, "TERM");
    let resp = slow
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(resp.status, StatusCode::OK);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let blue = HttpServer::start("blue", ServerProtocol::Http1)
        .await
        .expect("server");
    let green = HttpServer::start("green", ServerProtocol::Http1)
        .await
        .expect("server");
    let dir = TempDir::new("reload");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.file("proxy.yaml", &config(listen, admin, blue.addr()));
    let mut child = spawn(&path);
    wait_ready(admin).await;
    let client = HttpClient::http1();
    let url = format!("http://{listen}/");
    assert_eq!(
        client.get(&url).await.expect("response").headers["x-served-by"],
        "blue"
    );

    std::fs::write(&path, config(listen, admin, green.addr())).expect("write");
    signal(&child, "HUP");
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.headers["x-served-by"] == "green"));

    std::fs::write(&path, "listeners: [").expect("write");
    signal(&child, "HUP");
    let metrics_url = format!("http://{admin}/metrics");
    assert_eventually!(client.get(&metrics_url).await.is_ok_and(|r| r
        .text()
        .contains("trellis_config_reloads_total{result=\"failure\"} 1")));
    assert_eq!(
        client.get(&url).await.expect("still serving").headers["x-served-by"],
        "green"
    );

    signal(&child, "TERM");
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    })
    .await
    .expect("join");
    assert_eq!(output.0.expect("wait").code(), Some(0));
    assert!(output.1.contains("configuration refused"), "{}", output.1);
}
