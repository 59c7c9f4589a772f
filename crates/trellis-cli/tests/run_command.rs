//! `trellis run`: the real binary starts an application with its sidecar, registers it
//! with a control plane, and stops both together.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use trellis_control::registry::SyncState;
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::HttpClient;

mod support;
use support::free_port;

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
const TOKEN: &str = "run-test-token";

async fn control_plane() -> ControlPlane {
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        grace: Duration::from_millis(200),
        ca: Default::default(),
    };
    ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane")
}

/// `trellis run` of `books`, whose sidecar binds an inbound port the kernel picks and
/// registers it ([`registered_inbound`]).
fn trellis_run(cp: &ControlPlane, app_port: u16, app: &[&str]) -> std::process::Child {
    trellis_run_with(cp, app_port, &[], app)
}

/// [`trellis_run`] with more of `trellis run`'s flags.
fn trellis_run_with(
    cp: &ControlPlane,
    app_port: u16,
    flags: &[&str],
    app: &[&str],
) -> std::process::Child {
    Command::new(TRELLIS)
        .args(["run", "--service", "books", "--port", &app_port.to_string()])
        .args(["--token", TOKEN])
        // Only the HTTP API's URL: the sidecar asks it where the proxy API is.
        .args(["--control", &format!("http://{}", cp.http_addr)])
        .args(flags)
        .arg("--")
        .args(app)
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trellis run")
}

/// The inbound port the sidecar of `books` registered, once its configuration is
/// applied: the control plane's proxy list names it (`address`).
async fn registered_inbound(cp: &ControlPlane) -> u16 {
    let synced = || {
        cp.registry
            .list()
            .into_iter()
            .find(|p| p.service == "books" && p.state == SyncState::Synced)
    };
    assert_eventually!(synced().is_some());
    let address = synced().expect("synced").address;
    let (_, port) = address.rsplit_once(':').expect("ip:port");
    port.parse().expect("a port")
}

#[tokio::test]
async fn runs_the_app_with_a_registered_sidecar_and_stops_both() {
    let cp = control_plane().await;
    let app_port = free_port();
    let listen = format!("127.0.0.1:{app_port}");
    let mut child = run_books_on(&cp, app_port);
    let inbound = registered_inbound(&cp).await;
    // The sidecar holds the port it registered.
    assert!(std::net::TcpListener::bind(("0.0.0.0", inbound)).is_err());
    let resp = HttpClient::http1()
        .get(&format!("http://127.0.0.1:{inbound}/"))
        .await
        .expect("through the sidecar");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text(), "hello from books\n");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    // The application went with it.
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "the app outlived trellis run"
    );
    // And the workload leaves the registry after the grace period.
    assert_eventually!(cp.registry.list().is_empty());
}

#[tokio::test]
async fn an_app_that_never_listens_is_reported() {
    let cp = control_plane().await;
    let child = trellis_run(&cp, free_port(), &["sh", "-c", "exit 3"]);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the application exited with exit status: 3 before listening"),
        "{stderr}"
    );
    assert!(cp.registry.list().is_empty());
}

/// Kills `child` with SIGTERM (or SIGKILL) and waits for it.
fn stop(mut child: std::process::Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test]
async fn traffic_keeps_flowing_when_the_control_plane_process_is_killed() {
    let dir = std::env::temp_dir().join(format!("trellis-run-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (http, grpc) = (free_port(), free_port());
    let control = Command::new(TRELLIS)
        .args(["control", "--data-dir"])
        .arg(&dir)
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn trellis control");
    assert_eventually!(
        std::fs::read_to_string(dir.join("admin-token")).is_ok_and(|t| !t.trim().is_empty())
    );
    let token = std::fs::read_to_string(dir.join("admin-token")).expect("token");
    let run = |service: &str, app_port: u16, upstream: Option<u16>| {
        let listen = format!("127.0.0.1:{app_port}");
        let mut cmd = Command::new(TRELLIS);
        cmd.args(["run", "--service", service, "--port", &app_port.to_string()])
            .args([
                "--token",
                token.trim(),
                "--control-grpc",
                &format!("http://127.0.0.1:{grpc}"),
            ]);
        if let Some(port) = upstream {
            cmd.args(["--upstream", &format!("books:{port}")]);
        }
        cmd.args([
            "--",
            TRELLIS,
            "sample-server",
            "--listen",
            &listen,
            "--name",
            service,
        ])
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trellis run")
    };
    let upstream = free_port();
    let books = run("books", free_port(), None);
    let web = run("web", free_port(), Some(upstream));
    let client = HttpClient::http1();
    let url = format!("http://127.0.0.1:{upstream}/");
    assert_eventually!(client
        .get(&url)
        .await
        .is_ok_and(|r| r.status == StatusCode::OK && r.headers["x-served-by"] == "books"));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(trellis_testkit::load::run_load_until(
        client.clone(),
        url.clone(),
        4,
        50_000,
        stop_rx,
    ));
    stop(control, "-KILL");
    // Keep the load going for a while after the control plane is gone.
    for _ in 0..200 {
        let resp = client
            .get(&url)
            .await
            .expect("served without a control plane");
        assert_eq!(resp.status, StatusCode::OK);
    }
    stop_tx.send(true).expect("stop load");
    let report = load.await.expect("load");
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok > 0);
    stop(web, "-TERM");
    stop(books, "-TERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends one HTTP/1.1 request in absolute form, as a client configured with
/// `HTTP_PROXY` does, and returns the status code and body.
async fn through_http_proxy(proxy: &str, url: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let request = format!("GET {url} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `books`, the sample server, under `trellis run`.
fn run_books(cp: &ControlPlane) -> std::process::Child {
    run_books_on(cp, free_port())
}

/// [`run_books`] with the app on `app_port`.
fn run_books_on(cp: &ControlPlane, app_port: u16) -> std::process::Child {
    run_books_with(cp, app_port, &[])
}

/// [`run_books_on`] with more of `trellis run`'s flags.
fn run_books_with(cp: &ControlPlane, app_port: u16, flags: &[&str]) -> std::process::Child {
    let listen = format!("127.0.0.1:{app_port}");
    let app = [
        TRELLIS,
        "sample-server",
        "--listen",
        &listen,
        "--name",
        "books",
    ];
    trellis_run_with(cp, app_port, flags, &app)
}

/// `trellis run` of a `batch` job with no port, calling `books`, running `script`.
fn client_job(cp: &ControlPlane, script: &str) -> Command {
    let mut job = Command::new(TRELLIS);
    job.args(["run", "--service", "batch", "--upstream", "books"])
        .args(["--token", TOKEN])
        .args(["--control", &format!("http://{}", cp.http_addr)])
        .args(["--", "sh", "-c", script])
        .env("TRELLIS_LOG", "warn");
    job
}

#[tokio::test]
async fn the_app_reaches_upstreams_by_name_through_http_proxy() {
    let cp = control_plane().await;
    let books = run_books(&cp);
    // The web app writes down the HTTP_PROXY and NO_PROXY it was given, then serves.
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env");
    let web_port = free_port();
    let script = format!(
        "echo \"$HTTP_PROXY $NO_PROXY\" > {}; exec {TRELLIS} sample-server --listen 127.0.0.1:{web_port} --name web",
        env_file.display()
    );
    let web = Command::new(TRELLIS)
        .args(["run", "--service", "web", "--port", &web_port.to_string()])
        .args(["--upstream", "books", "--token", TOKEN])
        .args(["--control", &format!("http://{}", cp.http_addr)])
        .args(["--", "sh", "-c", &script])
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trellis run");
    assert_eventually!(std::fs::read_to_string(&env_file).is_ok_and(|e| e.ends_with('\n')));
    let env = std::fs::read_to_string(&env_file).expect("env");
    let (http_proxy, no_proxy) = env.trim().split_once(' ').expect("two values");
    assert_eq!(no_proxy, "localhost,127.0.0.1,::1");
    let proxy = http_proxy
        .strip_prefix("http://")
        .expect("an http:// URL")
        .to_string();

    // Every name of books reaches it once the configuration has arrived.
    assert_eventually!(through_http_proxy(&proxy, "http://books/")
        .await
        .is_ok_and(|(status, _)| status == 200));
    for url in [
        "http://books:8080/",
        "http://books.default/",
        "http://books.default.svc.trellis.local/",
    ] {
        let (status, body) = through_http_proxy(&proxy, url).await.expect(url);
        assert_eq!(
            (status, body.as_str()),
            (200, "hello from books\n"),
            "{url}"
        );
    }
    // A host that is no upstream of web is refused, not sent anywhere.
    let (status, _) = through_http_proxy(&proxy, "http://ratings/")
        .await
        .expect("answered");
    assert_eq!(status, 404);
    stop(web, "-TERM");
    stop(books, "-TERM");
}

#[tokio::test]
async fn a_client_only_job_runs_without_a_port_through_its_sidecar() {
    let cp = control_plane().await;
    let books = run_books(&cp);
    assert_eventually!(cp
        .registry
        .list()
        .iter()
        .any(|p| p.service == "books" && p.state == SyncState::Synced));
    // A job that never listens: its first call goes out through the sidecar at once
    // (curl honours http_proxy), then it waits to be told to finish.
    let dir = tempfile::tempdir().expect("tempdir");
    let (body, done) = (dir.path().join("body"), dir.path().join("done"));
    let script = format!(
        "curl -sS --max-time 10 -o {body} http://books/ || exit 9; \
         while [ ! -e {done} ]; do sleep 0.1; done; exit 0",
        body = body.display(),
        done = done.display()
    );
    let job = client_job(&cp, &script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn trellis run");
    assert_eventually!(std::fs::read_to_string(&body).is_ok_and(|b| !b.is_empty()));
    assert_eq!(
        std::fs::read_to_string(&body).expect("body"),
        "hello from books\n"
    );
    assert!(cp
        .registry
        .list()
        .iter()
        .any(|p| p.service == "batch" && p.state == SyncState::Synced));
    std::fs::write(&done, "").expect("done");
    let output = tokio::task::spawn_blocking(move || job.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("(client only, HTTP proxy http://127.0.0.1:"),
        "{stdout}"
    );
    // The job's exit code is trellis run's.
    let mut failing = client_job(&cp, "exit 4");
    // Off the runtime's thread: the control plane answers on it.
    let failing = tokio::task::spawn_blocking(move || failing.output())
        .await
        .expect("join")
        .expect("trellis run");
    assert_eq!(failing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(stderr.contains("exited with exit status: 4"), "{stderr}");
    stop(books, "-TERM");
}

#[tokio::test]
async fn exit_with_parent_stops_the_workload_when_its_parent_is_killed() {
    let cp = control_plane().await;
    let app_port = free_port();
    let listen = format!("127.0.0.1:{app_port}");
    let run = format!(
        "{TRELLIS} run --exit-with-parent --service books --port {app_port} --token {TOKEN} \
         --control http://{} -- {TRELLIS} sample-server --listen {listen} --name books",
        cp.http_addr
    );
    // A parent that starts `trellis run` and is then killed outright.
    let parent = Command::new("sh")
        .args(["-c", &format!("{run} & wait")])
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn parent");
    assert_eventually!(std::net::TcpStream::connect(&listen).is_ok());
    stop(parent, "-KILL");
    assert_eventually!(
        std::net::TcpStream::connect(&listen).is_err(),
        "the app outlived its supervisor"
    );
}

/// `--header-read-timeout` bounds how long a client may take over a request head: one
/// that sends half a head and stops is closed, without an answer, after it (1 s here,
/// where the default would wait 10 s), while a whole head is served as before; a head
/// past `--max-header-bytes` is refused with 431.
#[tokio::test]
async fn a_slow_request_head_is_cut_at_the_header_read_timeout_given() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cp = control_plane().await;
    let flags = ["--header-read-timeout", "1s", "--max-header-bytes", "8192"];
    let mut child = run_books_with(&cp, free_port(), &flags);
    let inbound = registered_inbound(&cp).await;
    let url = format!("http://127.0.0.1:{inbound}/");
    let resp = HttpClient::http1().get(&url).await.expect("a whole head");
    assert_eq!(resp.text(), "hello from books\n");

    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", inbound))
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: books\r\n")
        .await
        .expect("half a head");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "still open after 5 s");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // A head past --max-header-bytes is refused.
    let big = HttpClient::http1()
        .send(
            http::Request::get(&url)
                .header("x-large", "a".repeat(10_000))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("an answer");
    assert_eq!(big.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let _ = child.kill();
    let _ = child.wait();
}
