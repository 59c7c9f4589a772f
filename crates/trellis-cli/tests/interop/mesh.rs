//! The mesh every interoperability case runs in, set up as the README tells a user: a
//! real `trellis control` with strict mTLS, each third-party server started by
//! `trellis run` with its Service declared, and one `trellis proxy` sidecar whose
//! upstream ports and HTTP proxy port the third-party clients use. Every process is
//! killed, with whatever it started, when the test that started it ends.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use http::StatusCode;
use tokio::process::{Child, Command};
use trellis_testkit::assert_eventually;
use trellis_testkit::http::HttpClient;

use crate::support::control::{trellis_binary, Control};
use crate::support::{apply, free_port};

/// Strict mTLS between the sidecars, as an operator turns it on.
pub const STRICT: &str = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {mtls: {mode: strict}}\n";

/// The longest a third-party client may run before the case fails.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(90);

/// A script or program of tests/interop/peers.
pub fn peer(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/peers")
        .join(name)
}

/// `python3 SCRIPT ARGS…` for a script of tests/interop/peers.
pub fn python_peer(script: &str, args: &[&str]) -> Vec<OsString> {
    let mut command = vec![OsString::from("python3"), peer(script).into_os_string()];
    command.extend(args.iter().map(OsString::from));
    command
}

/// Whether `program` is an executable on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Fails the test, saying what to install, unless every program is on `PATH`.
pub fn require_programs(programs: &[&str], package: &str) {
    for program in programs {
        assert!(
            on_path(program),
            "{program} is missing: run ./scripts/setup.sh (or apt-get install {package})"
        );
    }
}

/// Fails the test, saying what to install, unless python3 imports `module`.
pub fn require_python(module: &str, package: &str) {
    let imported = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        imported,
        "the Python module {module} is missing: run ./scripts/setup.sh (or python3 -m pip install {package})"
    );
}

/// A process of a test, in a process group of its own: dropping it kills the group,
/// so `trellis run` goes with the application it started, even when the test fails.
pub struct Process {
    child: Child,
    group: Option<rustix::process::Pid>,
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        let child = command
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", shown(&command)));
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id.try_into().ok()?));
        Process { child, group }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// A command as a failure message shows it: at most its first 300 characters.
fn shown(command: &Command) -> String {
    let mut shown = format!("{:?}", command.as_std());
    if let Some((cut, _)) = shown.char_indices().nth(300) {
        shown.truncate(cut);
        shown.push_str(" …");
    }
    shown
}

/// Runs a third-party client to its end (at most [`PEER_TIMEOUT`]; killed, with what
/// it started, if the test ends first), its stdin read from the file `input` or empty:
/// its exit status, stdout and stderr.
pub async fn run_to_end(
    mut command: Command,
    input: Option<&Path>,
) -> (ExitStatus, String, String) {
    use tokio::io::AsyncReadExt;
    let shown = shown(&command);
    let stdin = match input {
        Some(path) => Stdio::from(std::fs::File::open(path).expect("the client's input")),
        None => Stdio::null(),
    };
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = Process::spawn(command);
    let mut stdout = process.child.stdout.take().expect("stdout");
    let mut stderr = process.child.stderr.take().expect("stderr");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let run = async {
        let (status, _, _) = tokio::join!(
            process.child.wait(),
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
        );
        status
    };
    let status = tokio::time::timeout(PEER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{shown} still running after {PEER_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (status, text(&out), text(&err))
}

/// Runs a third-party client to its end and returns what it printed, failing the test
/// when it failed.
pub async fn run_client(command: Command) -> String {
    run_client_fed(command, None).await
}

/// [`run_client`] with its stdin read from the file `input`, when given.
pub async fn run_client_fed(command: Command, input: Option<&Path>) -> String {
    let shown = shown(&command);
    let (status, stdout, stderr) = run_to_end(command, input).await;
    assert!(
        status.success(),
        "{shown} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

/// Asserts that a peer script reported each case as passed (`ok CASE …`).
pub fn assert_passed(report: &str, cases: &[&str]) {
    for case in cases {
        assert!(
            report.lines().any(|l| l
                .strip_prefix("ok ")
                .is_some_and(|rest| rest.split(' ').next() == Some(case))),
            "case {case} not passed:\n{report}"
        );
    }
}

/// One Service of the mesh, served by a third-party server under `trellis run`.
pub struct Server {
    /// Where the application listens, for comparing with a direct call.
    pub app: SocketAddr,
    /// The sidecar's admin address.
    pub admin: SocketAddr,
}

/// The sidecar the third-party clients call through.
pub struct Caller {
    /// Local port of each upstream Service.
    pub upstreams: BTreeMap<String, u16>,
    /// The sidecar's HTTP proxy listener, for `http_proxy`.
    pub http_proxy: SocketAddr,
}

impl Caller {
    /// `127.0.0.1:PORT` of an upstream's local port.
    pub fn upstream(&self, service: &str) -> String {
        let port = self
            .upstreams
            .get(service)
            .expect("an upstream of the caller");
        format!("127.0.0.1:{port}")
    }
}

/// A control plane, strict mTLS, and the sidecars started by the test. Its directory
/// holds the files of the test and each service's log, and is kept when the test fails.
pub struct Mesh {
    control: Control,
    token: String,
    sidecars: Vec<SocketAddr>,
    /// Dropped before the data directory goes.
    processes: Vec<Process>,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start() -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("control");
        let control = Control::start(&data, &[]).await;
        let token = control.token();
        let mesh = Mesh {
            control,
            token,
            sidecars: Vec::new(),
            processes: Vec::new(),
            dir,
        };
        mesh.apply(STRICT).await;
        mesh
    }

    fn http_addr(&self) -> SocketAddr {
        self.control
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("the HTTP API's address")
    }

    /// Applies YAML documents, as `trellis apply` does.
    pub async fn apply(&self, yaml: &str) {
        let status = apply(self.http_addr(), &self.token, yaml).await;
        assert_eq!(status, StatusCode::OK, "apply:\n{yaml}");
    }

    /// The proxies as the control plane sees them (`trellis get proxies -o json`).
    pub async fn proxies(&self) -> Vec<serde_json::Value> {
        let proxies = self.control.get_json("/api/v1/proxies").await;
        proxies["items"].as_array().cloned().unwrap_or_default()
    }

    /// The log file of `service`'s processes (in the mesh's directory, kept when a
    /// test fails), opened for appending.
    fn log(&self, service: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{service}.log")))
            .expect("log file")
    }

    /// Declares Service `service` (`appProtocol: protocol`) and starts `command` under
    /// `trellis run`, on the port given to it as `PORT`.
    pub async fn serve(&mut self, service: &str, protocol: &str, command: &[&OsStr]) -> Server {
        self.apply(&format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: {service}}}\nspec: {{selector: {{app: {service}}}, ports: [{{port: 8080, appProtocol: {protocol}}}]}}\n"
        ))
        .await;
        let (port, admin) = (free_port(), free_port());
        let mut run = Command::new(trellis_binary());
        run.args(["run", "--service", service, "--port", &port.to_string()])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--control", &self.control.url, "--token", &self.token])
            .arg("--")
            .args(command)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("TRELLIS_LOG", "warn")
            .stdout(self.log(service))
            .stderr(self.log(service));
        self.processes.push(Process::spawn(run));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        self.sidecars.push(admin);
        Server {
            app: SocketAddr::from(([127, 0, 0, 1], port)),
            admin,
        }
    }

    /// Starts the callers' sidecar (`trellis proxy`, service `web`) with a local port
    /// for each upstream, and waits until every sidecar of the mesh holds its
    /// configuration and a certificate, and each upstream's port is open.
    pub async fn caller(&mut self, upstreams: &[&str]) -> Caller {
        let upstreams: BTreeMap<String, u16> = upstreams
            .iter()
            .map(|s| ((*s).to_owned(), free_port()))
            .collect();
        let (http_proxy, admin) = (free_port(), free_port());
        let mut proxy = Command::new(trellis_binary());
        proxy
            .args(["proxy", "--service", "web"])
            .args(["--app", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-proxy-port", &http_proxy.to_string()])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--control", &self.control.url, "--token", &self.token]);
        for (service, port) in &upstreams {
            proxy.args(["--upstream", &format!("{service}:{port}")]);
        }
        proxy
            .stdin(Stdio::null())
            .env("TRELLIS_LOG", "warn")
            .stdout(self.log("web"))
            .stderr(self.log("web"));
        self.processes.push(Process::spawn(proxy));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        self.sidecars.push(admin);
        self.wait_until_synced().await;
        // Each upstream's instance is an endpoint of the caller, and its port is open.
        for (service, port) in &upstreams {
            let backend = format!("{service}.default");
            assert_eventually!(
                admin_config(admin).await.is_some_and(|c| c["backends"]
                    .as_array()
                    .is_some_and(|bs| bs.iter().any(|b| b["name"] == backend.as_str()
                        && b["endpoints"].as_array().is_some_and(|es| !es.is_empty())))),
                "{service} never became an endpoint of the caller"
            );
            assert_eventually!(tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_ok());
        }
        Caller {
            upstreams,
            http_proxy: SocketAddr::from(([127, 0, 0, 1], http_proxy)),
        }
    }

    /// Runs `command` to its end as a client-only workload of Service `service`, the
    /// way a batch job or a CLI runs in the mesh: `trellis run --service SERVICE
    /// --upstream S… -- COMMAND` (no `--port`), which gives it `HTTP_PROXY`. Returns
    /// what it printed, failing the test when it failed.
    pub async fn run_workload(
        &self,
        service: &str,
        upstreams: &[&str],
        command: &[impl AsRef<OsStr>],
    ) -> String {
        let mut run = Command::new(trellis_binary());
        run.args(["run", "--service", service]).args([
            "--control",
            &self.control.url,
            "--token",
            &self.token,
        ]);
        for upstream in upstreams {
            run.args(["--upstream", upstream]);
        }
        run.arg("--")
            .args(command)
            .current_dir(self.dir.path())
            .env("TRELLIS_LOG", "warn");
        run_client(run).await
    }

    /// Waits until every sidecar started here has a certificate and holds the
    /// configuration last sent to it, with strict mTLS on its inbound listener.
    pub async fn wait_until_synced(&self) {
        let expected = self.sidecars.len();
        assert_eventually!(
            {
                let proxies = self.proxies().await;
                proxies.len() == expected
                    && proxies.iter().all(|p| {
                        p["state"] == "synced"
                            && p["ackedVersion"] == p["sentVersion"]
                            && p["certificateExpires"].is_string()
                    })
            },
            "the sidecars never all synced: {:?}",
            self.proxies().await
        );
        for admin in &self.sidecars {
            assert_eventually!(admin_config(*admin).await.is_some_and(|c| {
                c["identity"]["certificate"].is_object()
                    && c["listeners"].as_array().is_some_and(|ls| {
                        ls.iter()
                            .any(|l| l["name"] == "inbound" && l["mtls"] == "strict")
                    })
            }));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the mesh's files and logs are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// A sidecar's effective configuration (`/config` on its admin port).
pub async fn admin_config(admin: SocketAddr) -> Option<serde_json::Value> {
    let response = HttpClient::http1()
        .get(&format!("http://{admin}/config"))
        .await
        .ok()?;
    serde_json::from_str(&response.text()).ok()
}

/// The number of mTLS handshakes a sidecar's inbound listener completed.
pub async fn inbound_mtls_handshakes(admin: SocketAddr) -> u64 {
    let metrics = HttpClient::http1()
        .get(&format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("trellis_tls_handshakes_total{")
                && l.contains("direction=\"inbound\"")
                && l.contains("result=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
