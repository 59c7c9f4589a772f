//! HTTP through the mesh with curl and Java's `HttpClient` against Python's
//! `http.server` (peers/http_server.py): large bodies, h2c offers, HTTP/2 prior
//! knowledge, chunked uploads, 20,000 small chunks, `http_proxy` with CONNECT, and
//! `https_proxy` with curl's own TLS inside the tunnel to a declared external host.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::mesh::{
    inbound_mtls_handshakes, peer, require_programs, run_client, run_to_end, Caller, Mesh, Server,
};

/// A body large enough to cross many flow-control windows and buffers.
const LARGE: usize = 24 * 1024 * 1024 + 7;

/// Hex SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> String {
    trellis_identity::hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    fastrand::fill(&mut data);
    data
}

/// The `files` Service (peers/http_server.py under `trellis run`) and its caller.
struct Files {
    mesh: Mesh,
    caller: Caller,
    server: Server,
    root: PathBuf,
}

impl Files {
    async fn start() -> Files {
        require_programs(&["curl"], "curl");
        require_programs(&["python3"], "python3");
        let mut mesh = Mesh::start().await;
        let root = mesh.dir.path().join("files");
        std::fs::create_dir(&root).expect("files dir");
        let script = peer("http_server.py");
        let server = mesh
            .serve(
                "files",
                "http",
                &[OsStr::new("python3"), script.as_os_str(), root.as_os_str()],
            )
            .await;
        let caller = mesh.caller(&["files"]).await;
        Files {
            mesh,
            caller,
            server,
            root,
        }
    }

    /// Puts `len` random bytes in the served file `name`; returns their SHA-256.
    fn add_file(&self, name: &str, len: usize) -> String {
        let data = random_bytes(len);
        std::fs::write(self.root.join(name), &data).expect("write file");
        sha256(&data)
    }

    /// `http://127.0.0.1:PORT` of the caller's local port for `files`.
    fn base(&self) -> String {
        format!("http://{}", self.caller.upstream("files"))
    }

    /// A path for a client's output.
    fn out(&self, name: &str) -> PathBuf {
        self.mesh.dir.path().join(name)
    }

    /// Fetches `url` with curl `command` into a file of its own: what `-w write_out`
    /// printed, and the body's SHA-256.
    async fn fetch(&self, mut command: Command, url: &str, write_out: &str) -> (String, String) {
        let out = self.out(&format!("{}.out", fastrand::u64(..)));
        command.arg("-o").arg(&out).args(["-w", write_out, url]);
        let printed = run_client(command).await;
        (printed, file_sha256(&out))
    }

    /// Downloads `/files/NAME` with curl and `flags`, as [`Files::fetch`] does.
    async fn download(&self, name: &str, flags: &[&str], write_out: &str) -> (String, String) {
        let mut command = curl_command(None);
        command.args(flags);
        let url = format!("{}/files/{name}", self.base());
        self.fetch(command, &url, write_out).await
    }

    /// Asserts that the calls arrived at the origin's sidecar over mTLS.
    async fn assert_mtls(&self) {
        let handshakes = inbound_mtls_handshakes(self.server.admin).await;
        assert!(handshakes > 0, "no mTLS handshake on the files sidecar");
    }
}

/// curl with the suite's flags, through `http_proxy` when given, else directly.
fn curl_command(http_proxy: Option<&str>) -> Command {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "60"])
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    match http_proxy {
        Some(proxy) => command.env("http_proxy", proxy),
        None => command.env_remove("http_proxy"),
    };
    command
}

/// curl with `args`, which must succeed; returns what it printed.
async fn curl(args: &[&str]) -> String {
    let mut command = curl_command(None);
    command.args(args);
    run_client(command).await
}

fn file_sha256(path: &Path) -> String {
    sha256(&std::fs::read(path).expect("downloaded file"))
}

#[tokio::test]
async fn curl_downloads_a_large_body_intact() {
    let files = Files::start().await;
    let sha = files.add_file("large", LARGE);
    let write_out = "%{http_code} %{http_version} %{size_download}";
    let downloaded = files.download("large", &[], write_out).await;
    assert_eq!(downloaded, (format!("200 1.1 {LARGE}"), sha));
    files.assert_mtls().await;
}

#[tokio::test]
async fn curl_h2c_offer_is_answered_in_http1_and_prior_knowledge_in_http2() {
    let files = Files::start().await;
    let sha = files.add_file("body", 3 * 1024 * 1024 + 1);
    let write_out = "%{http_code} %{http_version}";
    // `--http2` on an http:// URL sends `Upgrade: h2c`: served, in HTTP/1.1.
    let offered = files.download("body", &["--http2"], write_out).await;
    assert_eq!(offered, ("200 1.1".to_string(), sha.clone()));
    // With prior knowledge, HTTP/2 from the first byte, to an HTTP/1.1 origin.
    let h2 = files
        .download("body", &["--http2-prior-knowledge"], write_out)
        .await;
    assert_eq!(h2, ("200 2".to_string(), sha));
    // And an HTTP/2 upload, which the origin reads as HTTP/1.1.
    let body = files.out("h2-upload");
    let data = random_bytes(2 * 1024 * 1024 + 3);
    std::fs::write(&body, &data).expect("write body");
    let answer = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("{}/upload", files.base()),
    ])
    .await;
    assert_eq!(answer, upload_report(&data));
    files.assert_mtls().await;
}

/// What peers/http_server.py answers to an upload of `data`.
fn upload_report(data: &[u8]) -> String {
    format!(
        r#"{{"bytes": {}, "sha256": "{}"}}"#,
        data.len(),
        sha256(data)
    )
}

#[tokio::test]
async fn curl_chunked_upload_arrives_intact() {
    let files = Files::start().await;
    let body = files.out("upload");
    let data = random_bytes(LARGE);
    std::fs::write(&body, &data).expect("write body");
    // curl streams the file in chunks, after `Expect: 100-continue`.
    let answer = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", body.display()),
        "-w",
        " %{http_code}",
        &format!("{}/upload", files.base()),
    ])
    .await;
    assert_eq!(answer, format!("{} 200", upload_report(&data)));
    files.assert_mtls().await;
}

#[tokio::test]
async fn curl_receives_all_of_20000_small_chunks_beside_a_large_download() {
    const EVENTS: usize = 20_000;
    let files = Files::start().await;
    let sha = files.add_file("large", LARGE);
    let url = format!("{}/events?n={EVENTS}", files.base());
    // Both share the connection between the sidecars: the small chunks must cut
    // neither themselves nor the download beside them.
    let events = ["--no-buffer", "--fail", &url];
    let (received, downloaded) =
        tokio::join!(curl(&events), files.download("large", &[], "%{http_code}"),);
    assert_eq!(downloaded, ("200".to_string(), sha));
    let expected: String = (0..EVENTS).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(
        received.len(),
        expected.len(),
        "events received: {}",
        received.matches("data: ").count()
    );
    assert!(received == expected, "the events arrived altered");
    files.assert_mtls().await;
}

#[tokio::test]
async fn curl_reaches_a_mesh_service_through_http_proxy_and_connect() {
    let files = Files::start().await;
    let sha = files.add_file("large", LARGE);
    let proxy = format!("http://{}", files.caller.http_proxy);
    let through_proxy = |flags: &[&str]| {
        let mut command = curl_command(Some(&proxy));
        command.args(flags);
        command
    };
    // By name, as an application under `trellis run` calls it: absolute-form first…
    let url = "http://files:8080/files/large";
    let proxied = files.fetch(through_proxy(&[]), url, "%{http_code}").await;
    assert_eq!(proxied, ("200".to_string(), sha.clone()));
    // …then tunnelled: CONNECT files.default:8080, the request inside it.
    let url = "http://files.default:8080/files/large";
    let write_out = "%{http_connect} %{http_code}";
    let tunnelled = files
        .fetch(through_proxy(&["--proxytunnel"]), url, write_out)
        .await;
    assert_eq!(tunnelled, ("200 200".to_string(), sha));
    // A host the mesh does not know gets no tunnel: curl says so and exits 56.
    let mut refused = through_proxy(&["--proxytunnel", "-o", "/dev/null"]);
    refused.args(["-w", "%{http_connect}", "http://elsewhere.example:8080/"]);
    let (status, printed, _) = run_to_end(refused, None).await;
    assert_eq!((status.code(), printed.as_str()), (Some(56), "403"));
    files.assert_mtls().await;
}

#[tokio::test]
async fn java_http_client_with_its_h2c_offer_gets_and_posts_intact() {
    require_programs(&["java"], "openjdk-17-jdk-headless");
    let files = Files::start().await;
    let sha = files.add_file("blob", 5 * 1024 * 1024 + 11);
    let mut java = Command::new("java");
    java.arg(peer("HttpClientPeer.java"))
        .args([files.base().as_str(), "blob", &sha]);
    let report = run_client(java).await;
    // The offer is ignored: every answer comes in HTTP/1.1, whole.
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("ok get HTTP_1_1 5242891 "))
            .count(),
        3,
        "{report}"
    );
    assert!(report.contains("ok post HTTP_1_1 3145745\n"), "{report}");
    files.assert_mtls().await;
}

/// A host outside the mesh, declared as an ExternalService at a loopback HTTPS server.
const PAYMENTS: &str = "api.payments.example";

#[tokio::test]
async fn curl_tunnels_its_own_tls_to_a_declared_external_host_through_https_proxy() {
    require_programs(&["curl"], "curl");
    let mut mesh = Mesh::start().await;
    let ca = trellis_testkit::tls::https::TestCa::new("payments test CA");
    let payments = trellis_testkit::tls::https::HttpsServer::start(&ca, &[PAYMENTS])
        .await
        .expect("the payments server");
    let port = payments.addr().port();
    mesh.apply(&format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: ExternalService\nmetadata: {{name: payments}}\nspec:\n  hosts: [{PAYMENTS}]\n  resolution: static\n  addresses: [127.0.0.1]\n  ports: [{{port: 443, protocol: tls, targetPort: {port}}}]\n"
    ))
    .await;
    let caller = mesh.caller(&[]).await;
    let ca_file = mesh.dir.path().join("payments-ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("CA file");
    // curl honours https_proxy: CONNECT api.payments.example:443, then its own TLS,
    // checked against the payments CA, inside the tunnel the sidecar opens.
    let https = |url: &str| {
        let mut command = curl_command(None);
        command
            .env("https_proxy", format!("http://{}", caller.http_proxy))
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-w", "\n%{http_connect} %{http_code}", url]);
        command
    };
    let printed = run_client(https(&format!("https://{PAYMENTS}/charge"))).await;
    assert_eq!(
        printed,
        format!("sni={PAYMENTS} host={PAYMENTS}\n200 200"),
        "what curl printed"
    );
    assert_eq!(payments.server_names(), vec![Some(PAYMENTS.to_string())]);
    // A host the mesh does not know gets no tunnel: curl says so and exits 56.
    let (status, printed, _) = run_to_end(https("https://undeclared.example/"), None).await;
    assert_eq!((status.code(), printed.trim()), (Some(56), "403 000"));
}
