//! Real etcd clusters for tests: members started from Debian's `etcd-server` binary on
//! free loopback ports, with data in a temporary directory, and killed when the cluster
//! handle is dropped, whether the test passed or panicked.
//!
//! Each member also serves `/health` over plain HTTP on a metrics port, which says
//! whether the member has a leader; [`EtcdCluster::start`] waits for that on every member.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a cluster may take to start or to recover a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a start is tried with new ports, in case another test took a port
/// between picking it and etcd binding it.
const START_ATTEMPTS: usize = 3;

/// TLS for the members' client port: PEM files of the CA, and the server certificate and
/// key (valid for 127.0.0.1). With `client_cert_auth`, clients must present a certificate
/// signed by the same CA.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert_auth: bool,
}

/// A running etcd cluster. Dropping it kills every member.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    tls: Option<EtcdTlsFiles>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    child: Option<Child>,
}

/// The etcd binary, or a panic that says how to install it.
pub fn etcd_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file());
    match on_path {
        Some(path) => path,
        None => panic!(
            "etcd is not installed (no `etcd` on PATH): run scripts/setup.sh, which installs \
             Debian's etcd-server package, to run the etcd store tests"
        ),
    }
}

// === impl EtcdCluster ===

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every one has a leader.
    pub async fn start(size: usize) -> Self {
        Self::start_with(size, None).await
    }

    /// Like [`EtcdCluster::start`], with TLS on the client ports.
    pub async fn start_with(size: usize, tls: Option<EtcdTlsFiles>) -> Self {
        let binary = etcd_binary();
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::spawn(&binary, size, tls.clone());
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(why) => {
                    let _ = write!(failures, "\nattempt {attempt}: {why}");
                    drop(cluster);
                }
            }
        }
        panic!("etcd cluster of {size} did not start:{failures}");
    }

    fn spawn(binary: &Path, size: usize, tls: Option<EtcdTlsFiles>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let ports = free_ports(size * 3);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[i * 3],
                peer_port: ports[i * 3 + 1],
                metrics_port: ports[i * 3 + 2],
                child: None,
            })
            .collect();
        let mut cluster = Self { members, dir, tls };
        for index in 0..size {
            cluster.launch(binary, index);
        }
        cluster
    }

    fn launch(&mut self, binary: &Path, index: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let token = format!("trellis-test-{}", self.dir.path().display());
        let member = &self.members[index];
        let client_url = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))
            .expect("etcd log file");
        let mut command = Command::new(binary);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", member.metrics_port),
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &token])
            .args(["--initial-cluster-state", "new"])
            // Short raft timers so that leader elections in tests take a fraction of a
            // second on loopback.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // A member that comes back must not depose a working leader (the default from
            // etcd 3.5 on); each deposition drops the proposals in flight.
            .arg("--pre-vote")
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(tls) = &self.tls {
            command
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
            if tls.client_cert_auth {
                command.arg("--client-cert-auth");
            }
        }
        let child = command.spawn().expect("start etcd");
        self.members[index].child = Some(child);
    }

    /// The client endpoints, `127.0.0.1:PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        let endpoint = |m: &Member| format!("127.0.0.1:{}", m.client_port);
        self.members.iter().map(endpoint).collect()
    }

    /// The store URL of the whole cluster, `etcd://127.0.0.1:P1,127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Kills member `index` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again on its ports and data directory. Returns at once: the
    /// member has a leader only once a quorum is running (see [`EtcdCluster::wait_ready`]).
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let binary = etcd_binary();
        self.launch(&binary, index);
    }

    /// Waits until every running member reports a leader.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for index in 0..self.members.len() {
            loop {
                if let Some(status) = self.exited(index) {
                    return Err(format!(
                        "member {index} exited ({status}){}",
                        self.log_tail(index)
                    ));
                }
                if self.members[index].child.is_none() || self.healthy(index).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "member {index} has no leader after {READY_TIMEOUT:?}{}",
                        self.log_tail(index)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Whether member `index` answers `/health` with `true` (it has a leader).
    pub async fn healthy(&self, index: usize) -> bool {
        let addr = format!("127.0.0.1:{}", self.members[index].metrics_port);
        let check = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response.contains("\"health\":\"true\""))
        };
        let checked = tokio::time::timeout(Duration::from_secs(2), check).await;
        matches!(checked, Ok(Some(true)))
    }

    fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let child = self.members[index].child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[index].name))
    }

    /// The end of member `index`'s log, for failure messages.
    pub fn log_tail(&self, index: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(index)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("\n--- etcd member {index} log (last lines) ---\n{tail}")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// `count` distinct loopback ports that were free a moment ago.
fn free_ports(count: usize) -> Vec<u16> {
    // Hold every listener until all are picked, so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}
