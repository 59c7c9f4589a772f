//! A real Kubernetes control plane for tests: Debian's etcd, `kube-apiserver` and
//! `kube-controller-manager` (built from the Go module `k8s.io/kubernetes` by
//! `scripts/kube-testbed.sh`) on free loopback ports, with a PKI made here, and the
//! Gateway API's CRDs installed. Everything stops when the [`KubeCluster`] is dropped.
//!
//! There is no kubelet and no scheduler: Pods stay where the API server puts them until
//! the test kit's node agent runs them. The controller manager runs the controllers a
//! mesh depends on: EndpointSlices, namespaces, garbage collection, ServiceAccounts,
//! Deployments and ReplicaSets.

pub mod node;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType, PKCS_ECDSA_P256_SHA256,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::etcd::EtcdCluster;

/// The Kubernetes release the test bed runs; `scripts/kube-testbed.sh` builds it.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The Gateway API release whose CRDs the test bed installs.
pub const GATEWAY_API_VERSION: &str = "v1.6.3";
/// The range ClusterIPs are taken from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// How long the API server may take to serve, and the CRDs to be established.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the test bed's binaries and the Gateway API CRDs, or a panic
/// that says how to make it.
pub fn testbed_dir() -> PathBuf {
    let dir = match std::env::var_os("TRELLIS_KUBERNETES_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/root/.cache"));
            cache.join("trellis/kubernetes").join(KUBERNETES_VERSION)
        }
    };
    let complete = ["kube-apiserver", "kube-controller-manager", "kubectl"]
        .iter()
        .all(|b| dir.join(b).is_file())
        && dir.join("gateway-api").join(GATEWAY_API_VERSION).is_file();
    if !complete {
        panic!(
            "the Kubernetes test bed is not built in {}: run scripts/kube-testbed.sh (or \
             scripts/setup.sh, which runs it), which builds kube-apiserver, \
             kube-controller-manager and kubectl {KUBERNETES_VERSION} from the Go module \
             k8s.io/kubernetes and caches them there",
            dir.display()
        );
    }
    dir
}

/// The Gateway API's mesh conformance manifests (`mesh/manifests.yaml`, the base, and
/// `tests/mesh/*.yaml`, one per case) of [`GATEWAY_API_VERSION`], cached beside the
/// test bed by `scripts/kube-testbed.sh`, or a panic that says how to fetch them.
pub fn gateway_conformance_dir() -> PathBuf {
    let dir = testbed_dir().join("gateway-api-conformance");
    if !dir.join(GATEWAY_API_VERSION).is_file() {
        panic!(
            "the Gateway API {GATEWAY_API_VERSION} conformance manifests are not in {}: run \
             scripts/kube-testbed.sh (or scripts/setup.sh, which runs it), which fetches \
             them from the Go module sigs.k8s.io/gateway-api/conformance",
            dir.display()
        );
    }
    dir
}

/// The PKI of a test cluster: a CA, the API server's serving certificate, the admin's
/// client certificate and the ServiceAccount token signing key, as PEM files.
struct Pki {
    ca_pem: String,
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Self {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PKI file");
            path
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "trellis-test-kubernetes-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&ca_key).expect("the CA").pem();
        let issuer = Issuer::new(params, ca_key);

        let serving_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .expect("DNS names");
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .subject_alt_names
            .push(SanType::IpAddress([10, 96, 0, 1].into()));
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let serving_pem = serving.signed_by(&serving_key, &issuer).expect("serving");

        // Kubernetes reads a client certificate's CN as the user and its O as groups.
        let admin_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut admin = CertificateParams::default();
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_pem = admin.signed_by(&admin_key, &issuer).expect("admin");

        let service_account = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        Self {
            ca: write("ca.crt", &ca_pem),
            serving_cert: write("apiserver.crt", &serving_pem.pem()),
            serving_key: write("apiserver.key", &serving_key.serialize_pem()),
            admin_cert: write("admin.crt", &admin_pem.pem()),
            admin_key: write("admin.key", &admin_key.serialize_pem()),
            service_account_key: write("service-accounts.key", &service_account.serialize_pem()),
            service_account_public_key: write(
                "service-accounts.pub",
                &service_account.public_key_pem(),
            ),
            ca_pem,
        }
    }
}

/// A running API server and controller manager on a private etcd. Dropping it stops
/// them all.
pub struct KubeCluster {
    dir: tempfile::TempDir,
    pki: Pki,
    port: u16,
    kubeconfig: PathBuf,
    bin: PathBuf,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    // Last, so that it stops after the API server.
    _etcd: EtcdCluster,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("server", &self.server())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl KubeCluster {
    /// Starts etcd, the API server and the controller manager, waits until the API
    /// server is ready, and installs the Gateway API CRDs.
    pub async fn start() -> Self {
        let bin = testbed_dir();
        let etcd = EtcdCluster::start(1).await;
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let pki = Pki::write(dir.path());
        let port = free_port();
        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(port, &pki)).expect("kubeconfig");
        let mut cluster = Self {
            dir,
            pki,
            port,
            kubeconfig,
            bin,
            apiserver: None,
            controller_manager: None,
            _etcd: etcd,
        };
        let etcd_url = format!("http://{}", cluster._etcd.endpoints()[0]);
        cluster.apiserver = Some(cluster.spawn_apiserver(&etcd_url));
        cluster.wait_ready().await;
        cluster.controller_manager = Some(cluster.spawn_controller_manager());
        cluster.install_gateway_api().await;
        cluster
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for the cluster's administrator (group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA, PEM: it signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// A directory that lives as long as the cluster, for the test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test bed's `kubectl`, set to the administrator's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// Runs kubectl with `args` (and `stdin`, if given) and returns its standard output,
    /// or panics with its standard error.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        match self.run_kubectl(args, stdin) {
            Ok(out) => out,
            Err(err) => panic!("kubectl {} failed: {err}", args.join(" ")),
        }
    }

    /// Runs kubectl with `args` (and `stdin`, if given): its standard output, or its
    /// standard error when it fails.
    pub fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut command = self.kubectl();
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write as _;
            let mut pipe = child.stdin.take().expect("kubectl's stdin");
            pipe.write_all(input.as_bytes()).expect("write to kubectl");
        }
        let output = child.wait_with_output().expect("kubectl");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// The end of a component's log (`kube-apiserver`, `kube-controller-manager`), for
    /// failure messages.
    pub fn log_tail(&self, component: &str) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(format!("{component}.log")))
            .unwrap_or_default();
        // Without the echo of every flag that each component logs at start.
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("FLAG: --")).collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("\n--- {component} log (last lines) ---\n{tail}")
    }

    fn log_file(&self, component: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(format!("{component}.log"))).expect("a log file")
    }

    fn spawn_apiserver(&self, etcd_url: &str) -> Child {
        let pki = &self.pki;
        Command::new(self.bin.join("kube-apiserver"))
            .args(["--etcd-servers", etcd_url])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.port.to_string()])
            .arg("--cert-dir")
            .arg(self.dir.path().join("apiserver-certs"))
            .arg("--tls-cert-file")
            .arg(&pki.serving_cert)
            .arg("--tls-private-key-file")
            .arg(&pki.serving_key)
            .arg("--client-ca-file")
            .arg(&pki.ca)
            .arg("--service-account-key-file")
            .arg(&pki.service_account_public_key)
            .arg("--service-account-signing-key-file")
            .arg(&pki.service_account_key)
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .args(["--service-cluster-ip-range", SERVICE_CIDR])
            .args(["--authorization-mode", "RBAC"])
            // No kubelet serves the `kubernetes` Service's endpoints, and the reconciler
            // would point them at a loopback address no Pod can reach.
            .args(["--endpoint-reconciler-type", "none"])
            // Webhooks are called at an endpoint of their Service, as in clusters
            // without a Service proxy on the API server's host: no ClusterIP routes.
            .arg("--enable-aggregator-routing=true")
            .arg("--allow-privileged=true")
            .args(["--v", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("kube-apiserver"))
            .spawn()
            .expect("start kube-apiserver")
    }

    fn spawn_controller_manager(&self) -> Child {
        Command::new(self.bin.join("kube-controller-manager"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--authentication-kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--authorization-kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "--controllers",
                "endpointslice-controller,namespace-controller,garbage-collector-controller,\
                 serviceaccount-controller,deployment-controller,replicaset-controller,\
                 root-ca-certificate-publisher-controller",
            ])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--secure-port", &free_port().to_string()])
            .arg("--leader-elect=false")
            .args(["--service-cluster-ip-range", SERVICE_CIDR])
            // What `kube-root-ca.crt` in every namespace holds, for automounted tokens.
            .arg("--root-ca-file")
            .arg(&self.pki.ca)
            // Controllers react at once rather than on the production batching periods.
            .args(["--endpointslice-updates-batch-period", "0s"])
            .args(["--v", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("kube-controller-manager"))
            .spawn()
            .expect("start kube-controller-manager")
    }

    /// Waits until `/readyz` answers `ok` (readable without credentials).
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let tls = self.client_config();
        loop {
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "kube-apiserver exited ({status}){}",
                    self.log_tail("kube-apiserver")
                );
            }
            if readyz(self.port, tls.clone()).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}{}",
                    self.log_tail("kube-apiserver")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Applies the Gateway API CRDs server-side, as a cluster owner installs them, and
    /// waits until they are established.
    async fn install_gateway_api(&self) {
        let crds = self.bin.join("gateway-api");
        self.apply_crds(crds.to_str().expect("a UTF-8 path"));
    }

    /// Applies the CRDs in `path` (a file or a directory) server-side and waits until
    /// they are established.
    pub fn apply_crds(&self, path: &str) {
        self.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--field-manager=test-bed",
                "-f",
                path,
            ],
            None,
        );
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                path,
            ],
            None,
        );
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pki.ca_pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("a root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for child in [self.controller_manager.take(), self.apiserver.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the API server answers `GET /readyz` with `ok`.
async fn readyz(port: u16, tls: Arc<ClientConfig>) -> bool {
    let check = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let name = ServerName::try_from("localhost").ok()?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .ok()?;
        let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        Some(response.starts_with("HTTP/1.1 200") && response.ends_with("ok"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Some(true))
    )
}

fn kubeconfig_yaml(port: u16, pki: &Pki) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
         certificate-authority: {ca}\n\
         users:\n\
         - name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
         contexts:\n\
         - name: test\n  context:\n    cluster: test\n    user: admin\n\
         current-context: test\n",
        ca = pki.ca.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    )
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole bed comes up: the API server serves, the controller manager makes the
    /// `default` ServiceAccount of a new namespace, and the Gateway API kinds exist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_serves_with_its_controllers_and_the_gateway_api() {
        let cluster = KubeCluster::start().await;
        cluster.kubectl_ok(&["create", "namespace", "shop"], None);
        crate::assert_eventually!(
            cluster
                .run_kubectl(&["-n", "shop", "get", "serviceaccount", "default"], None)
                .is_ok(),
            "no default ServiceAccount in a new namespace{}",
            cluster.log_tail("kube-controller-manager")
        );
        let kinds = cluster.kubectl_ok(
            &[
                "api-resources",
                "--api-group=gateway.networking.k8s.io",
                "-o",
                "name",
            ],
            None,
        );
        for kind in [
            "httproutes",
            "grpcroutes",
            "tcproutes",
            "tlsroutes",
            "referencegrants",
        ] {
            assert!(kinds.contains(kind), "{kind} missing from:\n{kinds}");
        }
    }
}
