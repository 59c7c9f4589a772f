//! One container of a running Pod: its environment, the task that keeps its process
//! running (restarting it as the restart policy says, with the kubelet's doubling
//! back-off) and stops it (SIGTERM to its process group, SIGKILL at the deadline), and
//! the tasks that run its startup and readiness probes. Each reports to the Pod's
//! [`PodRun`], which the status writer turns into `pods/status`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use rustix::process::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{ProbeSpec, Verdict};
use super::process::{signal_group, Launch};
use super::spec::{expand, field_ref, SpecError};
use super::status::{now, Kind, PodRun, Run};
use super::volumes::Keys;

/// When a container's process is started again after it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

impl Restart {
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        }
    }

    fn again(self, exit_code: i32) -> bool {
        match self {
            Restart::Never => false,
            Restart::OnFailure => exit_code != 0,
            Restart::Always => true,
        }
    }
}

/// The first and the longest wait before a container is started again.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(10));

/// A container the Pod runs: stop it with [`Supervised::stop`].
#[derive(Debug)]
pub struct Supervised {
    pub kind: Kind,
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
    probes: Vec<JoinHandle<()>>,
}

impl Supervised {
    /// Stops the process (SIGTERM now, SIGKILL at `deadline`) and waits until it is
    /// gone; its probes stop too.
    pub async fn stop(self, deadline: Instant) {
        for probe in &self.probes {
            probe.abort();
        }
        let _ = self.stop.send(Some(deadline));
        let _ = self.task.await;
    }
}

/// Everything a container's tasks share with the Pod.
#[derive(Clone)]
pub struct PodSide {
    pub state: watch::Sender<PodRun>,
    pub pod_ip: Ipv4Addr,
    pub netns: String,
    /// The process groups alive on the node, so that dropping the agent stops them.
    pub groups: Arc<Mutex<HashSet<u32>>>,
    /// Set when the agent stops: no process starts (again).
    pub stopping: Arc<AtomicBool>,
}

impl PodSide {
    pub fn update(&self, name: &str, change: impl FnOnce(&mut super::status::ContainerRun)) {
        self.state.send_modify(|pod| {
            if let Some(container) = pod.container_mut(name) {
                change(container);
            }
        });
    }
}

/// Starts `container` (already resolved into `launch`) and its probes.
pub fn start(
    side: &PodSide,
    container: &Container,
    kind: Kind,
    launch: Launch,
    restart: Restart,
    max_probe_period: Duration,
) -> Result<Supervised, SpecError> {
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .map(|p| ProbeSpec::new(container, p, max_probe_period))
            .transpose()
    };
    // Init containers that run to completion have no probes.
    let (startup, readiness) = match kind {
        Kind::Init => (None, None),
        _ => (
            probe(&container.startup_probe)?,
            probe(&container.readiness_probe)?,
        ),
    };
    let gates = Gates {
        startup: startup.is_some(),
        readiness: readiness.is_some(),
        counts_ready: kind != Kind::Init,
    };
    let (stop, stop_rx) = watch::channel(None);
    let name = container.name.clone();
    let task = tokio::spawn(supervise(
        side.clone(),
        name.clone(),
        launch,
        restart,
        gates,
        stop_rx,
    ));
    let mut probes = Vec::new();
    if let Some(spec) = startup {
        probes.push(tokio::spawn(startup_probe(
            side.clone(),
            name.clone(),
            spec,
            gates,
        )));
    }
    if let Some(spec) = readiness {
        probes.push(tokio::spawn(readiness_probe(
            side.clone(),
            name.clone(),
            spec,
        )));
    }
    Ok(Supervised {
        kind,
        stop,
        task,
        probes,
    })
}

/// Which probes decide whether a running container is started and ready.
#[derive(Debug, Clone, Copy)]
struct Gates {
    startup: bool,
    readiness: bool,
    counts_ready: bool,
}

async fn supervise(
    side: PodSide,
    name: String,
    launch: Launch,
    restart: Restart,
    gates: Gates,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        if side.stopping.load(Ordering::SeqCst) {
            side.update(&name, |c| c.done = true);
            return;
        }
        let since = now();
        let (exit_code, reason) = match launch.spawn() {
            Ok(child) => run_once(&side, &name, child, gates, &mut stop).await,
            Err(err) => {
                note(
                    &launch.log,
                    &format!("cannot start {:?}: {err}", launch.line),
                );
                (128, "StartError")
            }
        };
        side.update(&name, |c| {
            c.run = Run::Terminated {
                exit_code,
                reason: reason.to_string(),
                since,
                until: now(),
            };
            c.started = false;
            c.ready = false;
        });
        if stop.borrow().is_some() || !restart.again(exit_code) {
            side.update(&name, |c| c.done = true);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(Option::is_some) => {
                side.update(&name, |c| c.done = true);
                return;
            }
        }
        backoff = (backoff * 2).min(BACKOFF.1);
        side.update(&name, |c| {
            c.last = Some(c.run.clone());
            c.restarts += 1;
        });
    }
}

/// Runs one process of the container until it exits or is stopped: its exit code
/// (128 + the signal, as a shell says, when a signal ended it) and reason.
async fn run_once(
    side: &PodSide,
    name: &str,
    mut child: tokio::process::Child,
    gates: Gates,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> (i32, &'static str) {
    let Some(pgid) = child.id() else {
        return (128, "StartError");
    };
    lock(&side.groups).insert(pgid);
    side.update(name, |c| {
        c.run = Run::Running { since: now() };
        c.started = !gates.startup;
        c.ready = c.started && !gates.readiness && gates.counts_ready;
    });
    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = stop.wait_for(Option::is_some) => None,
    };
    let status = match exited {
        Some(status) => status,
        None => {
            let deadline = (*stop.borrow()).unwrap_or_else(Instant::now);
            signal_group(pgid, Signal::TERM);
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pgid, Signal::KILL);
                    child.wait().await
                }
            }
        }
    };
    // What the process left behind goes with it, as a container's cgroup does.
    signal_group(pgid, Signal::KILL);
    lock(&side.groups).remove(&pgid);
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => (0, "Completed"),
            (Some(code), _) => (code, "Error"),
            (None, Some(signal)) => (128 + signal, "Error"),
            (None, None) => (128, "Error"),
        },
        Err(_) => (128, "Error"),
    }
}

/// Adds a line of the agent's own to a container's log.
pub fn note(log: &std::path::Path, line: &str) {
    use std::io::Write as _;
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(log, "--- node agent: {line}");
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn running(pod: &PodRun, name: &str) -> bool {
    pod.container(name)
        .is_some_and(|c| matches!(c.run, Run::Running { .. }))
}

/// Probes until the container has started, again after every restart.
async fn startup_probe(side: PodSide, name: String, spec: ProbeSpec, gates: Gates) {
    let mut state = side.state.subscribe();
    loop {
        if state
            .wait_for(|pod| running(pod, &name) && pod.container(&name).is_some_and(|c| !c.started))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(spec.initial_delay).await;
        let mut verdict = Verdict::new(&spec);
        while running(&side.state.borrow(), &name) {
            if verdict.record(spec.attempt(side.pod_ip, &side.netns).await) {
                side.update(&name, |c| {
                    c.started = true;
                    c.ready = !gates.readiness;
                });
                break;
            }
            tokio::time::sleep(spec.period).await;
        }
    }
}

/// Probes a started container every period for as long as the Pod runs.
async fn readiness_probe(side: PodSide, name: String, spec: ProbeSpec) {
    tokio::time::sleep(spec.initial_delay).await;
    let mut verdict = Verdict::new(&spec);
    loop {
        let started = side
            .state
            .borrow()
            .container(&name)
            .is_some_and(|c| c.started && matches!(c.run, Run::Running { .. }));
        if started {
            let ready = verdict.record(spec.attempt(side.pod_ip, &side.netns).await);
            side.update(&name, |c| {
                if c.started {
                    c.ready = ready;
                }
            });
        } else {
            verdict = Verdict::new(&spec);
        }
        tokio::time::sleep(spec.period).await;
    }
}

/// The container's environment, in order: the node's (`PATH`, `HOME`, `HOSTNAME`,
/// then the agent's options), `envFrom`, then `env`, each value expanded with the
/// variables defined before it. `pod` carries the Pod's IP already.
pub async fn environment(
    client: &Client,
    pod: &Pod,
    container: &Container,
    node_env: &[(String, String)],
) -> Result<Vec<(String, String)>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    set(&mut env, "PATH".into(), path);
    set(&mut env, "HOME".into(), "/root".into());
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    set(&mut env, "HOSTNAME".into(), hostname);
    for (name, value) in node_env {
        set(&mut env, name.clone(), value.clone());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let objects = [
            source
                .config_map_ref
                .as_ref()
                .map(|r| (Keys::ConfigMap, &r.name, r.optional)),
            source
                .secret_ref
                .as_ref()
                .map(|r| (Keys::Secret, &r.name, r.optional)),
        ];
        for (keys, name, optional) in objects.into_iter().flatten() {
            let optional = optional.unwrap_or(false);
            for (key, value) in text_keys(client, namespace, keys, name, optional).await? {
                set(&mut env, format!("{prefix}{key}"), value);
            }
        }
    }
    for var in container.env.iter().flatten() {
        let from = var.value_from.as_ref();
        let key_ref = from.and_then(|from| {
            let map = from.config_map_key_ref.as_ref();
            let secret = from.secret_key_ref.as_ref();
            map.map(|r| (Keys::ConfigMap, &r.name, &r.key, r.optional))
                .or_else(|| secret.map(|r| (Keys::Secret, &r.name, &r.key, r.optional)))
        });
        let value = if let Some(field) = from.and_then(|f| f.field_ref.as_ref()) {
            field_ref(pod, &field.field_path)?
        } else if let Some((keys, name, key, optional)) = key_ref {
            let optional = optional.unwrap_or(false);
            let data = text_keys(client, namespace, keys, name, optional).await?;
            match data.get(key) {
                Some(value) => value.clone(),
                None if optional => continue,
                None => {
                    return Err(SpecError(format!(
                        "env {:?}: {keys:?} {name:?} has no key {key:?}",
                        var.name
                    )))
                }
            }
        } else if from.is_some() {
            return Err(SpecError(format!(
                "env {:?}: only fieldRef, configMapKeyRef and secretKeyRef are supported \
                 by the node agent",
                var.name
            )));
        } else {
            let defined: HashMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let raw = var.value.clone().unwrap_or_default();
            expand(&raw, |name| defined.get(name).map(|v| v.to_string()))
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// A ConfigMap's or Secret's keys as text (empty when missing and `optional`).
async fn text_keys(
    client: &Client,
    namespace: &str,
    keys: Keys,
    name: &str,
    optional: bool,
) -> Result<HashMap<String, String>, SpecError> {
    let data = keys.fetch(client, namespace, name, optional).await?;
    Ok(data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect())
}
