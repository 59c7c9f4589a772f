//! A container as a process: started in the Pod's network namespace, in a process
//! group of its own (so a signal reaches everything it started), with the Pod's
//! volumes bind-mounted at their `mountPath`s and its output appended to a log file.
//!
//! `ip netns exec` gives each process a mount namespace of its own whose mounts do not
//! propagate back to the host, so two Pods can mount different tokens at the same
//! path. The mount points themselves are directories (or files, for a `subPath` that
//! names one) created on the host's filesystem if missing, since the processes share
//! it: the node agent runs as root, as the tests do.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::{kill_process_group, Pid, Signal};

/// A volume (or a file or directory in it) to show at `target` inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
}

/// What to start: the program and arguments after `$(VAR)` expansion, the whole
/// environment, the mounts and the working directory.
#[derive(Debug, Clone)]
pub struct Launch {
    pub netns: String,
    /// `securityContext.runAsUser`: the process drops to that user (and group) after
    /// the mounts, which need root. The capture rules exempt the proxy by its user.
    pub run_as_user: Option<u32>,
    pub line: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub workdir: PathBuf,
    pub log: PathBuf,
}

/// Mounts each `SOURCE TARGET` pair of the arguments up to `--`, then executes the
/// rest, so the container's process keeps the shell's pid and process group.
const MOUNT_THEN_EXEC: &str = r#"while [ "$1" != -- ]; do
  if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")" && touch "$2"; fi &&
  mount --bind "$1" "$2" || { echo "cannot mount $1 at $2" >&2; exit 126; }
  shift 2
done
shift
exec "$@""#;

impl Launch {
    /// Starts the process; its output is appended to the log file, after a line
    /// saying what started.
    pub fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        use std::io::Write as _;
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(log, "--- node agent: starting {:?}", self.line)?;
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.netns]);
        if !self.mounts.is_empty() {
            command.args(["/bin/sh", "-c", MOUNT_THEN_EXEC, "sh"]);
            for mount in &self.mounts {
                command.arg(&mount.source).arg(&mount.target);
            }
            command.arg("--");
        }
        if let Some(uid) = self.run_as_user {
            let uid = uid.to_string();
            command.args([
                "setpriv",
                "--reuid",
                &uid,
                "--regid",
                &uid,
                "--clear-groups",
                "--",
            ]);
        }
        command
            .args(&self.line)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.workdir)
            .process_group(0)
            // Should its task be dropped without stopping it (the runtime ends).
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command.spawn()
    }
}

/// Sends `signal` to the process group `pgid` (the container's process and whatever
/// it started); a group already gone is no error.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, signal);
    }
}

/// Whether the process `pid` is gone or a zombie waiting to be reaped.
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// A file name for a log in `dir`.
pub fn log_path(dir: &Path, container: &str) -> PathBuf {
    dir.join(format!("{container}.log"))
}
