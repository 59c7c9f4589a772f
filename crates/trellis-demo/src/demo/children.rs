//! The demo's workloads as child processes: each is `trellis run` (the sidecar) around
//! `trellis demo-app ROLE` (the application), in a process group of its own so that the
//! demo, not the terminal, decides the order they stop in, and so that nothing either
//! of them started can outlive the demo.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::future::select_all;
use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};

/// How long a workload gets to stop after SIGTERM before its process group is killed.
/// `trellis run` drains its sidecar first, which takes well under a second when
/// nothing is in flight.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One workload: a role of the bookshop under its own sidecar.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// Unique in the demo: the log file's name and what messages call it.
    pub name: &'static str,
    /// `trellis run --service`.
    pub service: &'static str,
    /// `trellis run --label`, as `key=value`.
    pub labels: Vec<String>,
    /// The port the application listens on (`trellis run --port`).
    pub app_port: u16,
    /// `trellis run --upstream`, as `service:localport`.
    pub upstreams: Vec<String>,
    /// `trellis demo-app` arguments: the role and its flags.
    pub app_args: Vec<String>,
    /// Stopped before the others (the load generator, so the rest drain idle).
    pub stops_first: bool,
}

/// Starts and stops the workloads.
pub(crate) struct Children {
    program: PathBuf,
    control_grpc: String,
    token: String,
    logs: PathBuf,
    running: Vec<Running>,
}

/// A started workload.
struct Running {
    workload: Workload,
    child: Child,
    /// Also the id of its process group.
    pid: Option<u32>,
    status: Option<ExitStatus>,
}

/// A workload that stopped by itself.
#[derive(Debug, thiserror::Error)]
#[error("{name} stopped unexpectedly ({status}); its log is {}", log.display())]
pub(crate) struct Exited {
    pub name: &'static str,
    pub status: String,
    pub log: PathBuf,
}

// === impl Children ===

impl Children {
    /// Workloads will run `program` (the `trellis` binary), their sidecars connecting to
    /// `control_grpc` with `token`, each logging to `logs/<name>.log`.
    pub(crate) fn new(program: &Path, control_grpc: String, token: String, logs: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            control_grpc,
            token,
            logs: logs.to_path_buf(),
            running: Vec::new(),
        }
    }

    /// Where the workloads' logs go.
    pub(crate) fn log_of(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `workload`: `trellis run … -- trellis demo-app …`.
    pub(crate) fn spawn(&mut self, workload: &Workload) -> io::Result<()> {
        let log = File::create(self.log_of(workload.name))?;
        let mut command = Command::new(&self.program);
        command
            .arg("run")
            // If the demo is killed outright, its workloads still stop.
            .arg("--exit-with-parent")
            .args(["--service", workload.service])
            .args(["--port", &workload.app_port.to_string()])
            .args(["--control-grpc", &self.control_grpc]);
        for label in &workload.labels {
            command.args(["--label", label]);
        }
        for upstream in &workload.upstreams {
            command.args(["--upstream", upstream]);
        }
        command
            .arg("--")
            .arg(&self.program)
            .arg("demo-app")
            .args(&workload.app_args)
            // In the environment rather than the arguments, which anyone may read.
            .env("TRELLIS_TOKEN", &self.token)
            // The logs go to files.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.program.display()),
            )
        })?;
        tracing::debug!(name = workload.name, pid = child.id(), "workload started");
        self.running.push(Running {
            workload: workload.clone(),
            pid: child.id(),
            child,
            status: None,
        });
        Ok(())
    }

    /// Resolves when a workload stops by itself; never, if none is running.
    pub(crate) async fn exited(&mut self) -> Exited {
        let waiting: Vec<_> = self
            .running
            .iter_mut()
            .filter(|r| r.status.is_none())
            .map(|r| {
                Box::pin(async move {
                    let status = r.child.wait().await;
                    if let Ok(status) = status {
                        r.status = Some(status);
                    }
                    (r.workload.name, status)
                })
            })
            .collect();
        if waiting.is_empty() {
            return std::future::pending().await;
        }
        let ((name, status), _, _) = select_all(waiting).await;
        Exited {
            name,
            status: match status {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot wait for it: {e}"),
            },
            log: self.log_of(name),
        }
    }

    /// Stops every workload: SIGTERM to the load generator, then to the rest, each
    /// given [`STOP_GRACE`]; then SIGKILL to every process group, which takes whatever
    /// did not stop and anything a workload left behind.
    pub(crate) async fn stop(&mut self) {
        self.terminate(true).await;
        self.terminate(false).await;
        for r in &mut self.running {
            if let Some(group) = r.pid.and_then(pid) {
                // ESRCH is the usual answer: the group is already empty.
                let _ = kill_process_group(group, Signal::KILL);
            }
            if r.status.is_none() {
                if let Ok(status) = r.child.wait().await {
                    tracing::warn!(name = r.workload.name, %status, "killed after it did not stop");
                    r.status = Some(status);
                }
            }
        }
    }

    /// SIGTERM to the running workloads that stop first (or all the others), then wait
    /// for them until the grace period ends.
    async fn terminate(&mut self, first: bool) {
        let chosen = |r: &Running| r.workload.stops_first == first && r.status.is_none();
        for r in self.running.iter().filter(|r| chosen(r)) {
            if let Some(leader) = r.pid.and_then(pid) {
                let _ = kill_process(leader, Signal::TERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for r in self.running.iter_mut().filter(|r| chosen(r)) {
            if let Ok(Ok(status)) = timeout_at(deadline, r.child.wait()).await {
                r.status = Some(status);
            }
        }
    }
}

fn pid(id: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(id).ok()?)
}
