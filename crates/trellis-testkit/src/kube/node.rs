//! A node agent: the test kit's kubelet for one Node of a [`KubeCluster`].
//!
//! No kubelet or container runtime runs here, so [`NodeAgent`] plays one. It registers
//! a Ready Node (so the EndpointSlice controller takes its Pods), watches the Pods bound
//! to it (`spec.nodeName`) and runs each as the API server stored it — after every
//! mutating webhook — so what an injector wrote is exactly what runs:
//!
//! - a Pod is a network namespace of the netns test bed ([`crate::netns`]) with its own
//!   IP on the node's bridge, reported as `status.podIP`; the node's own address (the
//!   bridge's) is its `hostIP` and the Node's `InternalIP`;
//! - a container is a process in that namespace: `command`/`args` with `$(VAR)`
//!   expansion, `env` with `fieldRef`s, ConfigMap and Secret keys; images have no
//!   files here, so [`NodeOptions::image`] says what an image runs;
//! - volumes (ServiceAccount tokens from the TokenRequest API, ConfigMaps, Secrets,
//!   downward API, `emptyDir`, `hostPath`) are directories bind-mounted at their
//!   `mountPath` in the container's own mount namespace;
//! - init containers run in order to completion, native sidecars (`restartPolicy:
//!   Always`) start in their place and stay, the next container waiting for their
//!   startup probe; startup and readiness probes decide `Ready`, which a test can
//!   also take away ([`NodeAgent::set_ready`]);
//! - deleting the Pod stops its containers within the grace period, removes the
//!   namespace and deletes the object; dropping the agent stops everything.
//!
//! Each container's output goes to a log file ([`NodeAgent::logs`]); all of them are
//! printed when the agent is dropped during a panic, so a failing test shows them.

mod container;
mod pod;
mod probe;
mod process;
mod spec;
mod status;
mod volumes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::container::lock;
use self::pod::PodInput;
pub use self::spec::Image;
use self::spec::{Executables, SpecError};
pub use self::volumes::bound_token;
use super::KubeCluster;
use crate::netns::{Host, Topology};

/// What a node knows that a real one would get from its images and configuration.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    executables: Executables,
    zone: Option<String>,
    max_probe_period: Duration,
    env: Vec<(String, String)>,
    host_aliases: Vec<(Ipv4Addr, String)>,
    nameserver: Option<Ipv4Addr>,
    schedule: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            executables: Executables::default(),
            zone: None,
            max_probe_period: Duration::from_secs(1),
            env: Vec::new(),
            host_aliases: Vec::new(),
            nameserver: None,
            schedule: false,
        }
    }
}

impl NodeOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `image` runs when a container of it has no `command`: `entrypoint`, then
    /// the container's `args`. `image` matches with or without a tag or digest.
    pub fn image<S: Into<String>>(
        self,
        image: &str,
        entrypoint: impl IntoIterator<Item = S>,
    ) -> Self {
        self.image_with_cmd(image, entrypoint, Vec::<String>::new())
    }

    /// As [`NodeOptions::image`], with the image's default arguments (its `CMD`), used
    /// when a container gives no `args`.
    pub fn image_with_cmd<S: Into<String>, T: Into<String>>(
        mut self,
        image: &str,
        entrypoint: impl IntoIterator<Item = S>,
        cmd: impl IntoIterator<Item = T>,
    ) -> Self {
        let image_def = Image {
            entrypoint: entrypoint.into_iter().map(Into::into).collect(),
            cmd: cmd.into_iter().map(Into::into).collect(),
        };
        self.executables.images.insert(image.to_string(), image_def);
        self
    }

    /// Runs `path` where a container's `command[0]` (after the image's entrypoint is
    /// applied) is `program`: a `command: ["trellis", …]` runs the binary under test.
    pub fn program(mut self, program: &str, path: impl Into<PathBuf>) -> Self {
        self.executables
            .programs
            .insert(program.to_string(), path.into());
        self
    }

    /// The Node's `topology.kubernetes.io/zone` label, which EndpointSlices copy.
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_string());
        self
    }

    /// The longest period between two probes of a container (default 1 s), so that
    /// production `periodSeconds` do not slow tests down.
    pub fn max_probe_period(mut self, period: Duration) -> Self {
        self.max_probe_period = period;
        self
    }

    /// A variable every container's environment starts with (before the Pod's own).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// A line of every Pod's `/etc/hosts`: there is no cluster DNS here, so a test
    /// names the root namespace (the node's address, [`NodeAgent::node_ip`]) as the
    /// control plane's Service, say.
    pub fn host_alias(mut self, ip: Ipv4Addr, name: &str) -> Self {
        self.host_aliases.push((ip, name.to_string()));
        self
    }

    /// Binds every Pod that no node is chosen for (a Deployment's, say: no scheduler
    /// runs here) to this node, as the scheduler would. With several agents doing
    /// so, each Pod goes to whichever binds it first.
    pub fn schedule_unbound(mut self) -> Self {
        self.schedule = true;
        self
    }

    /// The DNS server of every Pod's `/etc/resolv.conf` (default: the node's
    /// address, where nothing answers unless the test serves DNS there).
    pub fn nameserver(mut self, ip: Ipv4Addr) -> Self {
        self.nameserver = Some(ip);
        self
    }
}

/// A Pod by namespace and name: `"shop/web-0"`, `"web-0"` (namespace `default`) or
/// `("shop", "web-0")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl From<&str> for PodKey {
    fn from(key: &str) -> Self {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl From<(&str, &str)> for PodKey {
    fn from((namespace, name): (&str, &str)) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// A Pod the agent runs.
struct PodHandle {
    key: PodKey,
    input: watch::Sender<PodInput>,
    ready: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the agent and its Pods' tasks share.
struct Shared {
    client: Client,
    options: NodeOptions,
    /// The node's address on its bridge: the Pods' gateway and `hostIP`.
    gateway: Ipv4Addr,
    /// The bridge; taken (and so removed) when the agent drops.
    topology: Mutex<Option<Topology>>,
    /// Last octets of the bridge's /24 no Pod has.
    free: Mutex<BTreeSet<u8>>,
    /// Each running Pod's namespace, by UID.
    hosts: Mutex<HashMap<String, Host>>,
    groups: Arc<Mutex<HashSet<u32>>>,
    /// Set when the agent drops: no container starts again.
    stopping: Arc<AtomicBool>,
    pods: Mutex<HashMap<String, PodHandle>>,
    /// Logs under `logs/`, volumes and working directories under `pods/`.
    dir: PathBuf,
}

impl Shared {
    fn log_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir.join("logs").join(namespace).join(name)
    }

    /// A network namespace for `pod` with a free address on the bridge, and its
    /// `/etc/hosts` and `/etc/resolv.conf` (which `ip netns exec` shows its processes).
    async fn sandbox(self: &Arc<Self>, pod: &Pod) -> Result<(Ipv4Addr, String), SpecError> {
        let octet = lock(&self.free)
            .pop_first()
            .ok_or_else(|| SpecError("the node has no address left for another Pod".into()))?;
        let [a, b, c, _] = self.gateway.octets();
        let address = Ipv4Addr::new(a, b, c, octet);
        let name: String = pod
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(30)
            .collect();
        let shared = self.clone();
        let made = tokio::task::spawn_blocking(move || {
            let topology = lock(&shared.topology);
            let topology = topology
                .as_ref()
                .ok_or_else(|| SpecError("the node agent is stopping".into()))?;
            topology
                .new_host(&format!("{name}-{octet}"), address)
                .map_err(|e| SpecError(format!("cannot make the Pod's network namespace: {e}")))
        })
        .await
        .unwrap_or_else(|e| {
            Err(SpecError(format!(
                "making the Pod's namespace panicked: {e}"
            )))
        });
        let host = match made {
            Ok(host) => host,
            Err(err) => {
                lock(&self.free).insert(octet);
                return Err(err);
            }
        };
        let netns = host.namespace.name.clone();
        let etc = Path::new("/etc/netns").join(&netns);
        let hosts = pod::hosts_file(pod, address, &self.options.host_aliases);
        let resolv = pod::resolv_conf(pod, self.options.nameserver.unwrap_or(self.gateway));
        let written = std::fs::create_dir_all(&etc)
            .and_then(|()| std::fs::write(etc.join("hosts"), hosts))
            .and_then(|()| std::fs::write(etc.join("resolv.conf"), resolv));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        lock(&self.hosts).insert(uid, host);
        match written {
            Ok(()) => Ok((address, netns)),
            Err(err) => Err(SpecError(format!(
                "cannot write {}/hosts: {err}",
                etc.display()
            ))),
        }
    }

    /// Removes a Pod's namespace and gives its address back.
    async fn release(&self, uid: &str, address: Ipv4Addr, netns: &str) {
        let host = lock(&self.hosts).remove(uid);
        if let Some(host) = host {
            let _ = tokio::task::spawn_blocking(move || drop(host)).await;
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(netns));
        lock(&self.free).insert(address.octets()[3]);
    }
}

/// The kubelet of one Node, for tests; stops every Pod it runs when dropped.
pub struct NodeAgent {
    name: String,
    shared: Arc<Shared>,
    watch: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("name", &self.name)
            .field("node_ip", &self.shared.gateway)
            .finish()
    }
}

/// Why the agent could not start.
#[derive(Debug)]
pub struct NodeError(pub String);

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeError {}

/// A client of `cluster` as its administrator.
pub async fn admin_client(cluster: &KubeCluster) -> Result<Client, NodeError> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())
        .map_err(|e| NodeError(format!("reading {}: {e}", cluster.kubeconfig().display())))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| NodeError(format!("the cluster's kubeconfig: {e}")))?;
    Client::try_from(config).map_err(|e| NodeError(format!("a Kubernetes client: {e}")))
}

impl NodeAgent {
    /// Registers the Node `name` (Ready) and starts running the Pods bound to it.
    pub async fn start(
        cluster: &KubeCluster,
        name: &str,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        let client = admin_client(cluster).await?;
        let topology = tokio::task::spawn_blocking(|| Topology::new("kn", &[]))
            .await
            .map_err(|e| NodeError(format!("making the node's bridge panicked: {e}")))?
            .map_err(|e| NodeError(format!("the node's bridge (needs root and iproute2): {e}")))?;
        let gateway = topology.gateway;
        let dir = tempfile::Builder::new()
            .prefix(&format!("trellis-node-{name}-"))
            .tempdir()
            .map_err(|e| NodeError(format!("a directory for the node: {e}")))?;
        register(&client, name, gateway, options.zone.as_deref()).await?;
        // Pods take .2 to .254, but for the .100 to .199 the netns bed keeps for pods
        // a test makes itself (Topology::spare_address).
        let free = (2..=254u8).filter(|o| !(100..200).contains(o)).collect();
        let shared = Arc::new(Shared {
            client: client.clone(),
            options,
            gateway,
            topology: Mutex::new(Some(topology)),
            free: Mutex::new(free),
            hosts: Mutex::new(HashMap::new()),
            groups: Arc::new(Mutex::new(HashSet::new())),
            stopping: Arc::new(AtomicBool::new(false)),
            pods: Mutex::new(HashMap::new()),
            dir: dir.path().to_path_buf(),
        });
        let mut watch = tokio::spawn(watch_pods(shared.clone(), name.to_string()));
        if shared.options.schedule {
            let scheduler = tokio::spawn(schedule(client, name.to_string()));
            let pods = watch;
            // One handle for both tasks, so that dropping the agent aborts both.
            watch = tokio::spawn(async move {
                let _scheduler = AbortOnDrop(scheduler);
                let mut pods = AbortOnDrop(pods);
                let _ = (&mut pods.0).await;
            });
        }
        Ok(Self {
            name: name.to_string(),
            shared,
            watch,
            _dir: dir,
        })
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address as its Pods see it (the bridge's address in the root
    /// network namespace, where the test and its control plane run).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.shared.gateway
    }

    fn find<T>(&self, pod: &PodKey, with: impl FnOnce(&PodHandle) -> T) -> Option<T> {
        let pods = lock(&self.shared.pods);
        pods.values().find(|h| h.key == *pod).map(with)
    }

    /// Marks a running Pod not ready (`false`) whatever its probes say, or gives its
    /// readiness back to its probes (`true`). Panics if the agent runs no such Pod.
    pub fn set_ready(&self, pod: impl Into<PodKey>, ready: bool) {
        let pod = pod.into();
        if self.find(&pod, |h| h.ready.send_replace(ready)).is_none() {
            panic!(
                "node {} runs no Pod {}/{}",
                self.name, pod.namespace, pod.name
            );
        }
    }

    /// What a container of a Pod wrote so far (stdout and stderr, with a line of the
    /// agent's before each start), or "" if it never started.
    pub fn logs(&self, pod: impl Into<PodKey>, container: &str) -> String {
        let pod = pod.into();
        let dir = self.shared.log_dir(&pod.namespace, &pod.name);
        std::fs::read_to_string(process::log_path(&dir, container)).unwrap_or_default()
    }

    /// The network namespace a running Pod's processes are in (`ip netns exec NAME`).
    pub fn netns(&self, pod: impl Into<PodKey>) -> Option<String> {
        let pod = pod.into();
        let uid = {
            let pods = lock(&self.shared.pods);
            pods.iter()
                .find(|(_, h)| h.key == pod)
                .map(|(uid, _)| uid.clone())
        }?;
        lock(&self.shared.hosts)
            .get(&uid)
            .map(|h| h.namespace.name.clone())
    }

    /// Runs a command in a running Pod's network namespace (`kubectl exec`, without
    /// the container's mounts) and waits for it, blocking the thread.
    pub fn exec(
        &self,
        pod: impl Into<PodKey>,
        program: &str,
        args: &[&str],
    ) -> std::io::Result<std::process::Output> {
        let pod = pod.into();
        let Some(netns) = self.netns(pod.clone()) else {
            return Err(std::io::Error::other(format!(
                "node {} runs no Pod {}/{}",
                self.name, pod.namespace, pod.name
            )));
        };
        std::process::Command::new("ip")
            .args(["netns", "exec", &netns, program])
            .args(args)
            .output()
    }

    /// Every container log of every Pod the agent ran, each under a heading.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        let logs = self.shared.dir.join("logs");
        let mut files = Vec::new();
        for namespace in read_dir(&logs) {
            for pod in read_dir(&namespace) {
                files.extend(read_dir(&pod));
            }
        }
        files.sort();
        for file in files {
            let relative = file.strip_prefix(&logs).unwrap_or(&file);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            out.push_str(&format!("--- {} ---\n{text}\n", relative.display()));
        }
        out
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Creates the Node and reports it Ready, with the node's address.
/// Registers the Node `name` with the Ready condition and `address` as its
/// `InternalIP`, as a kubelet does on start (the EndpointSlice controller only takes
/// Pods bound to a Node that exists).
pub async fn register(
    client: &Client,
    name: &str,
    address: Ipv4Addr,
    zone: Option<&str>,
) -> Result<(), NodeError> {
    let mut labels = serde_json::json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    });
    if let Some(zone) = zone {
        labels["topology.kubernetes.io/zone"] = zone.into();
    }
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
    }))
    .map_err(|e| NodeError(format!("a Node object: {e}")))?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &node)
        .await
        .map_err(|e| NodeError(format!("creating Node {name}: {e}")))?;
    let capacity = serde_json::json!({"cpu": "2", "memory": "4Gi", "pods": "110"});
    let status = serde_json::json!({"status": {
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the Trellis node agent is running",
        }],
        "addresses": [
            {"type": "InternalIP", "address": address.to_string()},
            {"type": "Hostname", "address": name},
        ],
        "capacity": capacity,
        "allocatable": capacity,
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| NodeError(format!("reporting Node {name} ready: {e}")))?;
    Ok(())
}

/// Follows the Pods bound to the node and hands each to its own task.
async fn watch_pods(shared: Arc<Shared>, node: String) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod)) => applied(&shared, pod),
            Ok(Event::InitApply(pod)) => {
                listed.extend(pod.metadata.uid.clone());
                applied(&shared, pod);
            }
            Ok(Event::Delete(pod)) => gone(&shared, pod.metadata.uid.as_deref().unwrap_or("")),
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitDone) => {
                let vanished: Vec<String> = lock(&shared.pods)
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in vanished {
                    gone(&shared, &uid);
                }
            }
            Err(err) => tracing::warn!(%err, node, "node agent: watching Pods"),
        }
    }
}

/// Binds each Pod that has no node to `node` (the scheduler's `pods/binding`).
async fn schedule(client: Client, node: String) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut events = std::pin::pin!(watcher::watcher(pods, config)
        .default_backoff()
        .applied_objects());
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let bound: Result<serde_json::Value, _> = api
            .create_subresource("binding", name, &PostParams::default(), &binding)
            .await;
        // A conflict means another node bound it first.
        if let Err(err) = bound {
            tracing::debug!(%err, pod = %name, node, "node agent: binding a Pod");
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn applied(shared: &Arc<Shared>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let mut pods = lock(&shared.pods);
    if let Some(handle) = pods.get(&uid) {
        handle.input.send_modify(|input| input.pod = pod);
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    if finished && pod.metadata.deletion_timestamp.is_none() {
        // Ran and ended before this agent started: nothing to run again.
        return;
    }
    let key = PodKey {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
    };
    let (input, input_rx) = watch::channel(PodInput { pod, gone: false });
    let (ready, ready_rx) = watch::channel(true);
    let task = tokio::spawn(pod::run(shared.clone(), input_rx, ready_rx));
    pods.insert(
        uid,
        PodHandle {
            key,
            input,
            ready,
            task,
        },
    );
}

fn gone(shared: &Shared, uid: &str) {
    if let Some(handle) = lock(&shared.pods).get(uid) {
        handle.input.send_modify(|input| input.gone = true);
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.watch.abort();
        for handle in lock(&self.shared.pods).values() {
            handle.task.abort();
        }
        // SIGTERM to every container, SIGKILL to those still there after 5 s.
        let groups: Vec<u32> = lock(&self.shared.groups).iter().copied().collect();
        for pgid in &groups {
            process::signal_group(*pgid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !groups.iter().all(|p| process::exited(*p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // With any a restart started meanwhile.
        let groups: Vec<u32> = lock(&self.shared.groups).iter().copied().collect();
        for pgid in &groups {
            process::signal_group(*pgid, rustix::process::Signal::KILL);
        }
        let hosts: Vec<Host> = lock(&self.shared.hosts).drain().map(|(_, h)| h).collect();
        for host in hosts {
            let etc = Path::new("/etc/netns").join(&host.namespace.name);
            drop(host);
            let _ = std::fs::remove_dir_all(etc);
        }
        drop(lock(&self.shared.topology).take());
        if std::thread::panicking() {
            eprintln!(
                "--- node {}: container logs ---\n{}",
                self.name,
                self.all_logs()
            );
        }
    }
}
