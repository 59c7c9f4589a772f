//! A real `trellis control` process for the end-to-end tests, with its addresses read
//! from the banner it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `trellis` binary under test. Cargo names it to integration tests only; the
/// benchmark example that shares this module never starts one, so it may fall back to
/// the one on `PATH`.
pub fn trellis_binary() -> &'static str {
    option_env!("CARGO_BIN_EXE_trellis").unwrap_or("trellis")
}

/// `trellis control ARGS --data-dir DIR` on free ports, output piped, not started.
pub fn command(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(trellis_binary());
    command
        .arg("control")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env("TRELLIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running `trellis control`, killed when dropped.
pub struct Control {
    /// HTTP API URL.
    pub url: String,
    /// gRPC URL proxies connect to.
    pub grpc: String,
    /// What the banner says of the store.
    pub store: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Control {
    /// Starts `trellis control ARGS --data-dir DIR` on free ports.
    pub async fn start(data_dir: &Path, args: &[&str]) -> Control {
        let mut child = command(data_dir, args)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start trellis control");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = async {
            let (mut url, mut grpc, mut store) = (None, None, None);
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let line = line.trim();
                let value = |label: &str| line.strip_prefix(label).map(|v| v.trim().to_owned());
                url = url.or(value("HTTP API"));
                grpc = grpc.or(value("proxy API"));
                store = store.or(value("store"));
                if url.is_some() && grpc.is_some() && store.is_some() {
                    break;
                }
            }
            (url, grpc, store)
        };
        let (url, grpc, store) = tokio::time::timeout(Duration::from_secs(30), banner)
            .await
            .expect("trellis control prints its banner within 30s");
        // Keep reading, so a later line does not meet a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Control {
            url: url.expect("the HTTP API in the banner"),
            grpc: grpc.expect("the proxy API in the banner"),
            store: store.expect("the store in the banner"),
            data_dir: data_dir.to_owned(),
            child,
        }
    }

    /// The admin token in its data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Runs `trellis ARGS --control URL [--token TOKEN]`: (success, stdout, stderr).
    pub async fn trellis(&self, args: &[&str], token: Option<&str>) -> (bool, String, String) {
        let mut command = Command::new(trellis_binary());
        command
            .args(args)
            .args(["--control", &self.url])
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env("TRELLIS_LOG", "error")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let output = command.output().await.expect("run trellis");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    }

    /// `GET path` on its API with the admin token, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let request = http::Request::get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.token()))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let response = trellis_testkit::http::HttpClient::http1()
            .send(request)
            .await
            .expect("API answers");
        serde_json::from_slice(&response.body).expect("JSON")
    }

    /// Kills the process at once, as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
