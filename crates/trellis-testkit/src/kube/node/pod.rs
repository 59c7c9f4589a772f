//! One Pod on the node, from its admitted spec to its deletion, as the kubelet runs it:
//! a network namespace with its own IP, its volumes, init containers one after the
//! other (each to completion; one that fails fails the Pod), native sidecars started
//! in their place and kept running (the next container waits for the sidecar's startup
//! probe), then the app containers. Its status is written whenever what the agent knows
//! of it changes. When the API server marks it for deletion, its app containers are
//! stopped, then its sidecars in reverse order, within the grace period; then its
//! namespace goes and the agent deletes the object, which finishes graceful deletion.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod, PodIP};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use super::container::{self, environment, lock, PodSide, Restart, Supervised};
use super::process::{log_path, Launch};
use super::spec::{expand_command, SpecError};
use super::status::{now, ContainerRun, Kind, PodRun, Run};
use super::volumes::{self, Volumes};
use super::Shared;

/// The latest object the watch delivered for a Pod, and whether it is gone from the
/// API server (deleted without grace, or the agent is stopping).
#[derive(Debug, Clone)]
pub struct PodInput {
    pub pod: Pod,
    pub gone: bool,
}

/// Why starting the containers stopped early.
enum Halt {
    /// The Pod failed (an init container exited with an error, a volume could not be
    /// made): its phase becomes `Failed` with this message.
    Failed(String),
    /// A container's spec cannot run here; it stays waiting with the reason
    /// `CreateContainerConfigError`, as the kubelet leaves it.
    Config,
}

fn deleting(input: &PodInput) -> bool {
    input.gone || input.pod.metadata.deletion_timestamp.is_some()
}

/// Runs the Pod until it is deleted, then cleans up after it.
pub async fn run(
    shared: Arc<Shared>,
    mut input: watch::Receiver<PodInput>,
    ready: watch::Receiver<bool>,
) {
    let pod = input.borrow().pod.clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let work = shared.dir.join("pods").join(&uid);
    let logs = shared.log_dir(&namespace, &name);
    if deleting(&input.borrow()) {
        // Marked for deletion before this node ran it: nothing to stop.
        if !input.borrow().gone {
            finish_deletion(&api, &name, &uid).await;
        }
        lock(&shared.pods).remove(&uid);
        return;
    }

    let state = PodRun {
        failed: None,
        pod_ip: None,
        host_ip: Some(shared.gateway),
        start_time: now(),
        initialized: false,
        containers: containers_of(&pod),
        forced_not_ready: !*ready.borrow(),
    };
    let (state_tx, state_rx) = watch::channel(state);
    let writer = tokio::spawn(write_status(api.clone(), name.clone(), state_rx));
    let forward = tokio::spawn(forward_readiness(ready, state_tx.clone()));

    let mut running: Vec<Supervised> = Vec::new();
    let sandbox = shared.sandbox(&pod).await;
    match &sandbox {
        Err(err) => state_tx.send_modify(|s| s.failed = Some(err.0.clone())),
        Ok((address, netns)) => {
            state_tx.send_modify(|s| s.pod_ip = Some(*address));
            let side = PodSide {
                state: state_tx.clone(),
                pod_ip: *address,
                netns: netns.clone(),
                groups: shared.groups.clone(),
                stopping: shared.stopping.clone(),
            };
            let pod = with_ips(&pod, *address, shared.gateway);
            let start = start_containers(&shared, &pod, &side, &work, &logs, &mut running);
            let halted = tokio::select! {
                result = start => result.err(),
                _ = input.wait_for(deleting) => None,
            };
            if let Some(Halt::Failed(message)) = halted {
                state_tx.send_modify(|s| s.failed = Some(message));
                stop(std::mem::take(&mut running), Instant::now()).await;
            }
        }
    }

    let _ = input.wait_for(deleting).await;
    let (gone, grace) = {
        let input = input.borrow();
        (input.gone, grace_period(&input.pod))
    };
    stop(
        running,
        Instant::now() + if gone { Duration::ZERO } else { grace },
    )
    .await;
    forward.abort();
    writer.abort();
    if let Ok((address, netns)) = sandbox {
        shared.release(&uid, address, &netns).await;
    }
    let _ = std::fs::remove_dir_all(&work);
    if !gone {
        finish_deletion(&api, &name, &uid).await;
    }
    lock(&shared.pods).remove(&uid);
}

/// Deletes the Pod at once: graceful deletion ends when the node says the Pod's
/// containers are gone.
async fn finish_deletion(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(err) = api.delete(name, &params).await {
        if !is_not_found(&err) {
            tracing::warn!(pod = %name, %err, "node agent: cannot finish deleting a Pod");
        }
    }
}

/// The containers as the agent first reports them: all waiting.
fn containers_of(pod: &Pod) -> Vec<ContainerRun> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let image = |c: &Container| c.image.clone().unwrap_or_default();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ContainerRun::new(&c.name, &image(c), init_kind(c)));
    let apps = spec
        .containers
        .iter()
        .map(|c| ContainerRun::new(&c.name, &image(c), Kind::App));
    init.chain(apps).collect()
}

fn init_kind(container: &Container) -> Kind {
    if container.restart_policy.as_deref() == Some("Always") {
        Kind::Sidecar
    } else {
        Kind::Init
    }
}

/// The Pod as its `fieldRef`s see it once it has its IPs.
fn with_ips(pod: &Pod, address: Ipv4Addr, host: Ipv4Addr) -> Pod {
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    status.pod_ip = Some(address.to_string());
    status.pod_ips = Some(vec![PodIP {
        ip: address.to_string(),
    }]);
    status.host_ip = Some(host.to_string());
    pod
}

fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    Duration::from_secs(seconds.unwrap_or(30).max(0) as u64)
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

async fn start_containers(
    shared: &Shared,
    pod: &Pod,
    side: &PodSide,
    work: &Path,
    logs: &Path,
    running: &mut Vec<Supervised>,
) -> Result<(), Halt> {
    let volumes = volumes::prepare(&shared.client, pod, &work.join("volumes"))
        .await
        .map_err(|e| Halt::Failed(format!("volumes: {e}")))?;
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let mut state = side.state.subscribe();
    let context = Launching {
        shared,
        pod,
        side,
        volumes: &volumes,
        work,
        logs,
    };
    for container in spec.init_containers.iter().flatten() {
        let kind = init_kind(container);
        let restart = match kind {
            Kind::Sidecar => Restart::Always,
            _ => Restart::Never,
        };
        running.push(context.launch(container, kind, restart).await?);
        let name = container.name.as_str();
        let _ = match kind {
            Kind::Sidecar => {
                state
                    .wait_for(|s| s.container(name).is_some_and(|c| c.started))
                    .await
            }
            _ => {
                state
                    .wait_for(|s| s.container(name).is_some_and(|c| c.done))
                    .await
            }
        };
        let exit_code = state
            .borrow()
            .container(name)
            .and_then(ContainerRun::exited_with);
        if kind == Kind::Init && exit_code != Some(0) {
            return Err(Halt::Failed(format!(
                "init container {name:?} exited with status {}",
                exit_code.unwrap_or(-1)
            )));
        }
    }
    side.state.send_modify(|s| s.initialized = true);
    let restart = Restart::of(pod);
    for container in &spec.containers {
        running.push(context.launch(container, Kind::App, restart).await?);
    }
    Ok(())
}

/// What every container of one Pod is started with.
struct Launching<'a> {
    shared: &'a Shared,
    pod: &'a Pod,
    side: &'a PodSide,
    volumes: &'a Volumes,
    work: &'a Path,
    logs: &'a Path,
}

impl Launching<'_> {
    async fn launch(
        &self,
        container: &Container,
        kind: Kind,
        restart: Restart,
    ) -> Result<Supervised, Halt> {
        let log = log_path(self.logs, &container.name);
        let started = async {
            let options = &self.shared.options;
            let env = environment(&self.shared.client, self.pod, container, &options.env).await?;
            let line = expand_command(&options.executables.command_line(container)?, &env);
            let workdir = match &container.working_dir {
                Some(dir) => PathBuf::from(dir),
                None => self.work.to_path_buf(),
            };
            std::fs::create_dir_all(&workdir)
                .map_err(|e| SpecError(format!("working directory {}: {e}", workdir.display())))?;
            // The user the container runs as: its own securityContext, else the Pod's.
            let run_as_user = (container.security_context.as_ref())
                .and_then(|c| c.run_as_user)
                .or_else(|| {
                    (self.pod.spec.as_ref())
                        .and_then(|s| s.security_context.as_ref())
                        .and_then(|c| c.run_as_user)
                })
                .and_then(|uid| u32::try_from(uid).ok());
            let launch = Launch {
                netns: self.side.netns.clone(),
                run_as_user,
                line,
                env,
                mounts: volumes::mounts(container, self.volumes)?,
                workdir,
                log: log.clone(),
            };
            container::start(
                self.side,
                container,
                kind,
                launch,
                restart,
                options.max_probe_period,
            )
        };
        started.await.map_err(|err| {
            container::note(&log, &err.0);
            self.side.update(&container.name, |c| {
                c.run = Run::Waiting {
                    reason: "CreateContainerConfigError".to_string(),
                    message: Some(err.0.clone()),
                }
            });
            Halt::Config
        })
    }
}

/// Stops the app containers together, then the sidecars in reverse order, all by
/// `deadline`.
async fn stop(running: Vec<Supervised>, deadline: Instant) {
    let (apps, init): (Vec<_>, Vec<_>) = running.into_iter().partition(|s| s.kind == Kind::App);
    join_all(apps.into_iter().map(|s| s.stop(deadline))).await;
    for container in init.into_iter().rev() {
        container.stop(deadline).await;
    }
}

async fn forward_readiness(mut ready: watch::Receiver<bool>, state: watch::Sender<PodRun>) {
    loop {
        let forced = !*ready.borrow_and_update();
        state.send_if_modified(|s| std::mem::replace(&mut s.forced_not_ready, forced) != forced);
        if ready.changed().await.is_err() {
            return;
        }
    }
}

/// Writes the Pod's status whenever it changes, until the Pod is gone.
async fn write_status(api: Api<Pod>, name: String, mut state: watch::Receiver<PodRun>) {
    let mut written = None;
    loop {
        let status = state.borrow_and_update().to_api();
        if written.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => written = Some(status),
                Err(err) if is_not_found(&err) => return,
                Err(err) => {
                    tracing::warn!(pod = %name, %err, "node agent: cannot write a Pod's status");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// The `/etc/hosts` of a Pod, as the kubelet writes it: loopback, the Pod's own name
/// at its IP, its `hostAliases`, then the node's aliases.
pub fn hosts_file(pod: &Pod, address: Ipv4Addr, aliases: &[(Ipv4Addr, String)]) -> String {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut out = String::from(
        "# Kubernetes-managed hosts file (the Trellis node agent's).\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            out.push_str(&format!(
                "{address}\t{hostname}.{subdomain}.{namespace}.svc.cluster.local\t{hostname}\n"
            ));
        }
        None => out.push_str(&format!("{address}\t{hostname}\n")),
    }
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    for (ip, name) in aliases {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// The `/etc/resolv.conf` of a Pod, as the kubelet writes it for `ClusterFirst`:
/// the cluster's search domains and its DNS server, which here is the node's address
/// unless a test runs one elsewhere ([`super::NodeOptions::nameserver`]). Nothing
/// answers there by default, so a lookup fails at once rather than after the host
/// resolver's timeouts (which Pods cannot reach).
pub fn resolv_conf(pod: &Pod, nameserver: Ipv4Addr) -> String {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    format!(
        "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver {nameserver}\n\
         options ndots:5 timeout:1 attempts:1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_names_the_pod_and_its_aliases() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": [], "hostAliases": [
                {"ip": "10.9.9.9", "hostnames": ["db", "db.local"]}
            ]}
        }))
        .expect("a pod");
        let aliases = [(
            Ipv4Addr::new(10, 1, 2, 1),
            "trellis-control.trellis-system.svc".to_string(),
        )];
        let hosts = hosts_file(&pod, Ipv4Addr::new(10, 1, 2, 3), &aliases);
        let lines: Vec<&str> = hosts.lines().skip(3).collect();
        assert_eq!(
            lines,
            [
                "10.1.2.3\tweb-0",
                "10.9.9.9\tdb\tdb.local",
                "10.1.2.1\ttrellis-control.trellis-system.svc"
            ]
        );
    }

    #[test]
    fn the_grace_period_is_the_deletions_then_the_pods() {
        let pod = |meta: serde_json::Value, grace: Option<i64>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": meta,
                "spec": {"containers": [], "terminationGracePeriodSeconds": grace}
            }))
            .expect("a pod")
        };
        let cases = [
            (pod(serde_json::json!({}), None), 30),
            (pod(serde_json::json!({}), Some(5)), 5),
            (
                pod(
                    serde_json::json!({"deletionGracePeriodSeconds": 0}),
                    Some(5),
                ),
                0,
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(grace_period(&pod), Duration::from_secs(want));
        }
    }
}
