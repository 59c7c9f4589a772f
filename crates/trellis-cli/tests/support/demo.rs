//! A real `trellis demo` for the end-to-end tests: started with the real binary on free
//! ports, its banner read, and whatever it started killed if a test fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Every process the demo starts inherits this variable, which is how the test finds
/// them in `/proc`.
pub const MARKER: &str = "TRELLIS_DEMO_SMOKE_TEST";

/// Held by a demo from its start until its banner: two demos of one test binary pick
/// their free ports one after the other, not in the same moment.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running `trellis demo`; on a failed test, shows its standard error and kills
/// whatever it started.
pub struct Demo {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub marker: String,
    stderr: PathBuf,
    starting: Option<std::sync::MutexGuard<'static, ()>>,
    _home: tempfile::TempDir,
}

/// What the demo's banner says.
#[derive(Debug)]
pub struct Banner {
    pub control: String,
    pub grpc: String,
    pub shop: String,
    pub dir: PathBuf,
}

impl Demo {
    pub fn start() -> Demo {
        // A test that failed while holding it leaves nothing to protect.
        let starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let home = tempfile::tempdir().expect("temp dir");
        let stderr = home.path().join("stderr.log");
        let marker = format!("{}-{:x}", std::process::id(), unique());
        let mut child = Command::new(super::control::trellis_binary())
            .args([
                "demo",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(["--rps", "10"])
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env_remove("TRELLIS_CONTROL")
            .env_remove("TRELLIS_TOKEN")
            .env(MARKER, &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("trellis demo starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            marker,
            stderr,
            starting: Some(starting),
            _home: home,
        }
    }

    /// Reads standard output until the banner has said where everything is.
    pub async fn banner(&mut self) -> Banner {
        let (mut control, mut grpc, mut shop, mut dir) = (None, None, None, None);
        let read = async {
            while let Some(line) = self.lines.recv().await {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("control plane   ") {
                    control = rest.split_whitespace().next().map(str::to_string);
                    grpc = rest
                        .split("proxies connect to ")
                        .nth(1)
                        .map(|s| s.trim_end_matches(')').to_string());
                } else if let Some(rest) = line.strip_prefix("bookshop ") {
                    shop = rest
                        .split_whitespace()
                        .next()
                        .map(|s| s.trim_end_matches('/').to_string());
                } else if let Some(rest) = line.strip_prefix("data and logs ") {
                    dir = Some(PathBuf::from(rest.trim()));
                }
                if control.is_some() && grpc.is_some() && shop.is_some() && dir.is_some() {
                    return;
                }
            }
        };
        // The demo itself gives the bookshop 30 s to answer; on a loaded machine its
        // start before that takes a while too.
        let read = tokio::time::timeout(Duration::from_secs(60), read).await;
        drop(self.starting.take());
        read.expect("the banner within 60 s");
        Banner {
            control: control.expect("control plane URL"),
            grpc: grpc.expect("gRPC address"),
            shop: shop.expect("bookshop URL"),
            dir: dir.expect("data dir"),
        }
    }

    /// Stops the demo as Ctrl-C would (SIGTERM) and returns how it exited.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        kill_process(self.pid(), Signal::TERM).expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the demo stops within 15 s")
            .expect("exit status")
    }

    pub fn pid(&self) -> Pid {
        let id = self.child.id().expect("still running");
        Pid::from_raw(i32::try_from(id).expect("pid")).expect("pid")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            eprintln!("--- trellis demo stderr ---\n{log}");
            for (pid, _) in processes_of(&self.marker, None) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// A value that differs between runs, without a random-number crate.
pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Processes that carry `marker` in their environment or `needle` in their command
/// line, with their command lines.
pub fn processes_of(marker: &str, needle: Option<&str>) -> Vec<(Pid, String)> {
    let want = format!("{MARKER}={marker}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        let environ = read("environ");
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let marked = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        if marked || needle.is_some_and(|n| cmdline.contains(n)) {
            found.push((pid, cmdline));
        }
    }
    found
}

pub async fn trellis(args: &[&str]) -> std::process::Output {
    Command::new(super::control::trellis_binary())
        .args(args)
        .env_remove("TRELLIS_CONTROL")
        .env_remove("TRELLIS_TOKEN")
        .output()
        .await
        .expect("trellis runs")
}

pub async fn synced_proxies(control: &str) -> usize {
    let out = trellis(&["get", "proxies", "--control", control, "-o", "json"]).await;
    let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
        return 0;
    };
    list["items"].as_array().map_or(0, |items| {
        items.iter().filter(|p| p["state"] == "synced").count()
    })
}

pub fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin-token"))
        .expect("admin token")
        .trim()
        .to_string()
}
