//! A meshed Kubernetes test bed: the test kit's API server and controller manager,
//! Trellis's CRDs, a node agent playing the kubelet, and the Kubernetes control plane
//! in this process, where the Pods reach it; workloads go in through `trellis inject`.

use std::time::Duration;

use trellis_control::server::ControlSettings;
use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
use trellis_testkit::kube::node::{NodeAgent, NodeOptions};
use trellis_testkit::kube::KubeCluster;

use super::control::trellis_binary;

/// The namespace the control plane runs in (and which is never injected).
const CONTROL_NAMESPACE: &str = "trellis-system";

pub struct MeshedCluster {
    // Dropped in this order: the control plane, then the Pods, then the cluster.
    pub cp: KubernetesControlPlane,
    pub agent: NodeAgent,
    pub cluster: KubeCluster,
}

impl MeshedCluster {
    /// Starts the cluster with Trellis's CRDs, a node named `node-a` with `options`
    /// (the `trellis` image runs the binary under test), and the control plane.
    pub async fn start(options: NodeOptions) -> Self {
        let cluster = KubeCluster::start().await;
        install_crds(&cluster);
        cluster.kubectl_ok(&["create", "namespace", CONTROL_NAMESPACE], None);
        let options = options.image("trellis", [trellis_binary()]);
        let agent = NodeAgent::start(&cluster, "node-a", options)
            .await
            .expect("node agent");

        let client = trellis_kubernetes::client::connect(Some(cluster.kubeconfig()))
            .await
            .expect("a client");
        let settings = control_settings(&cluster, &agent);
        let cp = KubernetesControlPlane::start(
            client,
            KubernetesSettings::new(CONTROL_NAMESPACE),
            settings,
            None,
        )
        .await
        .expect("control plane");
        Self { cp, agent, cluster }
    }

    /// `manifests` through `trellis inject` (sidecars pointed at this control plane,
    /// image `trellis`), then applied.
    pub fn inject_and_apply(&self, manifests: &str) {
        let control = format!("http://{}", self.cp.control.grpc_addr);
        let injected = inject(manifests, &control);
        self.cluster
            .kubectl_ok(&["apply", "-f", "-"], Some(&injected));
    }

    /// A field of an object, by kubectl's JSONPath.
    pub fn get(&self, namespace: &str, object: &str, jsonpath: &str) -> String {
        let jsonpath = format!("jsonpath={jsonpath}");
        self.cluster.kubectl_ok(
            &["-n", namespace, "get", object, "-o", jsonpath.as_str()],
            None,
        )
    }

    /// A Service's ClusterIP.
    pub fn cluster_ip(&self, namespace: &str, service: &str) -> String {
        self.get(
            namespace,
            &format!("service/{service}"),
            "{.spec.clusterIP}",
        )
    }
}

/// Trellis's CRDs, as `trellis install kubernetes` installs them, established.
pub fn install_crds(cluster: &KubeCluster) {
    let crds = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/crds.yaml"
    );
    cluster.apply_crds(crds);
}

/// Control-plane settings for a replica in this process, its data directory in the
/// cluster's: proxies reach its gRPC API at the node's address on the Pods' bridge.
pub fn control_settings(cluster: &KubeCluster, agent: &NodeAgent) -> ControlSettings {
    ControlSettings {
        data_dir: cluster.dir().join("control"),
        store: Default::default(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: std::net::SocketAddr::new(agent.node_ip().into(), 0),
        grace: Duration::from_secs(10),
        ca: Default::default(),
    }
}

/// `manifests` through `trellis inject`, the sidecars (image `trellis`) pointed at
/// `control` (control-plane URLs, comma-separated).
pub fn inject(manifests: &str, control: &str) -> String {
    use std::io::Write as _;
    let injected = std::process::Command::new(trellis_binary())
        .args([
            "inject",
            "-f",
            "-",
            "--image",
            "trellis",
            "--control-grpc",
            control,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(manifests.as_bytes())?;
            child.wait_with_output()
        })
        .expect("trellis inject");
    assert!(injected.status.success(), "trellis inject failed");
    String::from_utf8(injected.stdout).expect("UTF-8")
}
