//! Transparent mode across hosts: every service in a pod of its own made by
//! `trellis run --transparent` on the test's bridge (each pod a host with its own
//! address), a control plane in the root namespace, strict mTLS. The applications are
//! configured with nothing but the names of the Services they call (`books:8080`),
//! resolved by the sidecar's DNS to virtual IPs that the capture rules bring to the
//! sidecar. Needs root, as CI runs.
//!
//! One test walks through the stages in order, as each needs the mesh the previous one
//! built: the bookshop across three pods, TLS between them, a server-speaks-first
//! protocol, allow-any and registry-only egress, an ExternalService reached by name
//! (TLS passed through and TLS originated), losing one instance of books, losing the
//! control plane.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::process::{Child, Command};
use trellis_control::server::{ControlPlane, ControlSettings};
use trellis_control::store::MemoryStore;
use trellis_testkit::assert_eventually;
use trellis_testkit::dns::StaticDns;
use trellis_testkit::http::HttpClient;
use trellis_testkit::netns::Topology;
use trellis_testkit::tls::https::{HttpsServer, TestCa};

const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
const TOKEN: &str = "transparent-test-token";
const APP_PORT: u16 = 8080;

fn mesh_config(egress: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: default}}\nspec: {{mtls: {{mode: strict}}, egress: {{mode: {egress}}}}}\n"
    )
}

const SERVICES: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{port: 8080, appProtocol: grpc}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: mysql}
spec:
  selector: {app: mysql}
  ports: [{port: 3306, appProtocol: tcp}]
"#;

/// One `trellis run --transparent` process, in the root namespace; stopped (SIGTERM,
/// then SIGKILL) when dropped, and its pod removed should it have left one. Its output
/// goes to `<temp dir>/<pod>.log`, kept when the test fails.
struct Pod {
    name: String,
    address: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Pod {
    /// `trellis run --transparent` of `service` as the `n`th pod on the topology's
    /// bridge, its application `command` listening on `port`.
    fn start(
        topology: &Topology,
        control: &str,
        dns_upstream: std::net::SocketAddr,
        n: u8,
        service: &str,
        port: u16,
        command: &[&str],
    ) -> Pod {
        let name = format!("tt{}-{service}{n}", std::process::id() % 100_000);
        let address = topology.spare_address(n).to_string();
        let mut args = vec![
            "run".to_string(),
            "--transparent".into(),
            "--pod-name".into(),
            name.clone(),
            "--pod-address".into(),
            format!("{address}/24"),
            "--pod-bridge".into(),
            topology.bridge().into(),
            "--pod-gateway".into(),
            topology.gateway.to_string(),
            "--admin".into(),
            "127.0.0.1:7191".into(),
            "--service".into(),
            service.into(),
            "--port".into(),
            port.to_string(),
            "--control".into(),
            control.into(),
            "--token".into(),
            TOKEN.into(),
            "--".into(),
        ];
        args.extend(command.iter().map(|s| s.to_string()));
        let log_path = std::env::temp_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(TRELLIS)
            .args(&args)
            .env("TRELLIS_LOG", "info")
            // Names outside the mesh: the test's resolver in the root namespace.
            .env("TRELLIS_DNS_UPSTREAM", dns_upstream.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("trellis run --transparent");
        Pod {
            name,
            address,
            child,
            log: log_path,
        }
    }

    /// Runs a bash script in the pod (with the pod's resolv.conf); its stdout when it
    /// succeeded within five seconds.
    async fn sh(&self, script: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "timeout", "5", "bash", "-c", script,
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An HTTP/1.0 GET from inside the pod through bash's `/dev/tcp` (so `host` is
    /// resolved by the pod's resolver): the status line and the body.
    async fn get(&self, host: &str, port: u16, path: &str) -> Option<(String, String)> {
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} || exit 1; printf 'GET {path} HTTP/1.0\\r\\nhost: {host}\\r\\n\\r\\n' >&3; cat <&3"
        );
        let text = self.sh(&script).await?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    }

    /// The sidecar's admin `/metrics`.
    async fn metrics(&self) -> String {
        let (_, text) = self
            .get("127.0.0.1", 7191, "/metrics")
            .await
            .unwrap_or_else(|| panic!("{}: no metrics", self.name));
        text
    }

    /// Whether a product page from web, built from books and ratings, has a rating.
    async fn shop_works(&self) -> bool {
        self.get("127.0.0.1", APP_PORT, "/api/products/1")
            .await
            .is_some_and(|(status, body)| status.contains(" 200 ") && body.contains("\"stars\""))
    }

    /// Stops `trellis run` with SIGKILL: its inner process gets SIGTERM from the kernel
    /// and takes the workload and the pod down.
    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.start_kill();
        // Normally gone already; a pod whose inner process was killed too is not.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

async fn apply(cp: &ControlPlane, yaml: &str) {
    let request = http::Request::post(format!("http://{}/api/v1/apply", cp.http_addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            yaml.to_string(),
        )))
        .expect("request");
    let answer = HttpClient::http1().send(request).await.expect("apply");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

fn registered(cp: &ControlPlane, address: &str) -> bool {
    cp.registry
        .list()
        .iter()
        .any(|p| p.address.starts_with(&format!("{address}:")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_bookshop_runs_across_pods_with_transparent_capture() {
    let topology = Topology::new("tp", &["outside"]).expect("topology (run as root)");
    let settings = ControlSettings {
        data_dir: std::env::temp_dir(),
        http_addr: (topology.gateway, 0).into(),
        grpc_addr: (topology.gateway, 0).into(),
        // A stopped workload's endpoints go soon after its session ends.
        grace: Duration::from_secs(1),
        ca: Default::default(),
        store: Default::default(),
    };
    let cp = ControlPlane::start_with(Arc::new(MemoryStore::new()), TOKEN.into(), settings)
        .await
        .expect("control plane");
    let control = format!("http://{}", cp.http_addr);
    apply(&cp, &format!("{}---\n{SERVICES}", mesh_config("allowAny"))).await;

    let outside = topology.host("outside");
    let outside_ip = outside.address.to_string();
    outside
        .spawn(
            TRELLIS,
            &[
                "sample-server",
                "--listen",
                &format!("{outside_ip}:9000"),
                "--name",
                "outside",
            ],
            &[],
            None,
        )
        .expect("outside server");

    // Outside the mesh, on the bridge's gateway: a resolver that answers every name
    // with the gateway's address, and an HTTPS server for api.payments.example.
    let upstream = StaticDns::start_on((topology.gateway, 0).into(), topology.gateway)
        .await
        .expect("upstream resolver");
    let payments_ca = TestCa::new("payments CA");
    let payments = HttpsServer::start_on((topology.gateway, 0).into(), &payments_ca, &[PAYMENTS])
        .await
        .expect("payments server");
    let dns = upstream.addr();
    let pod = |n: u8, service: &str, port: u16, command: &[&str]| {
        Pod::start(&topology, &control, dns, n, service, port, command)
    };
    let ratings = pod(0, "ratings", APP_PORT, &[TRELLIS, "demo-app", "ratings"]);
    let books_a = pod(
        1,
        "books",
        APP_PORT,
        &[TRELLIS, "demo-app", "books", "--ratings", "ratings:8080"],
    );
    let mut books_b = pod(
        2,
        "books",
        APP_PORT,
        &[TRELLIS, "demo-app", "books", "--ratings", "ratings:8080"],
    );
    let web = pod(
        3,
        "web",
        APP_PORT,
        &[TRELLIS, "demo-app", "web", "--books", "books:8080"],
    );
    let mysql = pod(
        4,
        "mysql",
        3306,
        &[
            TRELLIS,
            "sample-server",
            "--listen",
            "127.0.0.1:3306",
            "--greeting",
            "5.7.0-trellis",
        ],
    );
    for pod in [&ratings, &books_a, &books_b, &web, &mysql] {
        assert_eventually!(
            registered(&cp, &pod.address),
            "{} never registered",
            pod.name
        );
    }

    // 1. web → books → ratings, by name, through three pods.
    assert_eventually!(web.shop_works().await, "web never served a rated product");

    // The names resolved to the Services' virtual IPs, which the CLI shows.
    let services = Command::new(TRELLIS)
        .args([
            "get",
            "services",
            "ratings",
            "--control",
            &control,
            "--token",
            TOKEN,
        ])
        .output()
        .await
        .expect("trellis get services");
    let services = String::from_utf8_lossy(&services.stdout);
    assert!(services.contains("VIRTUAL-IP"), "{services}");
    assert!(services.contains(" 240.240."), "{services}");

    // 2. Between pods it is mTLS: a client without a certificate, from a host of the
    // bridge, is refused at books' application port (captured into the sidecar). A
    // sidecar that called before its certificate arrived was refused too, so the count
    // is compared before and after.
    const REFUSED: &str =
        "trellis_tls_plaintext_connections_total{listener=\"inbound\",action=\"refused\"}";
    let refused = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(REFUSED))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = refused(&books_a.metrics().await);
    assert!(
        outside
            .http_get(&books_a.address, APP_PORT, "/books")
            .is_none(),
        "books served plaintext from outside the mesh"
    );
    let books_metrics = books_a.metrics().await;
    assert_eq!(refused(&books_metrics), before + 1, "{books_metrics}");

    // A pod's own address and application port reach that pod: web's sidecar takes the
    // call to books-a's sidecar, over mTLS, where the plaintext above failed.
    let direct = web.get(&books_a.address, APP_PORT, "/books").await;
    assert!(
        direct
            .as_ref()
            .is_some_and(|(status, _)| status.contains(" 200 ")),
        "{direct:?}"
    );
    // The outbound listener dialled directly is not proxied to itself.
    assert_eq!(web.get("127.0.0.1", 7140, "/").await, None);
    let (_, web_metrics) = web
        .get("127.0.0.1", 7191, "/metrics")
        .await
        .expect("metrics");
    assert!(
        web_metrics
            .contains("trellis_outbound_refused_total{listener=\"outbound\",reason=\"loop\"} 1"),
        "{web_metrics}"
    );

    // 3. A server that speaks first, reached by name through the capture.
    let conversation = "exec 3<>/dev/tcp/mysql/3306 || exit 1; read -r greeting <&3; printf 'hello\\n' >&3; read -r echo <&3; echo \"$greeting|$echo\"";
    let said = mysql_conversation(&web, conversation).await;
    assert_eq!(said.trim(), "5.7.0-trellis|hello");

    // 4. Egress: allow-any passes a destination outside the mesh through; registry-only
    // refuses it and counts it, while mesh traffic carries on.
    let outside_reachable = || async {
        web.get(&outside_ip, 9000, "/")
            .await
            .is_some_and(|(status, _)| status.contains(" 200 "))
    };
    assert!(outside_reachable().await, "allow-any did not pass through");
    apply(&cp, &mesh_config("registryOnly")).await;
    assert_eventually!(
        !outside_reachable().await,
        "registry-only let the outside through"
    );
    let metrics = web
        .get("127.0.0.1", 7191, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.1.contains(
            "trellis_outbound_refused_total{listener=\"outbound\",reason=\"registry_only\"}"
        ),
        "{}",
        metrics.1
    );
    assert!(
        web.shop_works().await,
        "mesh traffic stopped under registry-only"
    );
    external_service(&cp, &web, &payments, &payments_ca).await;

    // 5. One instance of books goes away (its `trellis run` killed) while web keeps
    // calling: its endpoint is dropped from web's configuration, and from then on no
    // request fails. Between the kill and the drop, a request that web's sidecar sends
    // to the dying instance may fail (its sidecar is draining, then gone, and a
    // connection refused is not retried); those are counted but not held against the
    // mesh, as the drop is what bounds them.
    let b_endpoint = format!("{}:7143", books_b.address);
    let a_endpoint = format!("{}:7143", books_a.address);
    let killed = AtomicBool::new(false);
    let dropped = AtomicBool::new(false);
    let traffic = async {
        let (mut served, mut failed) = (0u32, 0u32);
        while !dropped.load(Ordering::SeqCst) {
            match web.shop_works().await {
                true => served += 1,
                false if killed.load(Ordering::SeqCst) => failed += 1,
                false => panic!("a request failed before the kill"),
            }
        }
        (served, failed)
    };
    let kill = async {
        // Marked first: a request that fails from here on is one the kill may cause.
        killed.store(true, Ordering::SeqCst);
        books_b.kill().await;
        assert_eventually!(
            web.get("127.0.0.1", 7191, "/config")
                .await
                .is_some_and(
                    |(_, config)| config.contains(&a_endpoint) && !config.contains(&b_endpoint)
                ),
            "books' killed instance stayed in web's configuration"
        );
        dropped.store(true, Ordering::SeqCst);
    };
    let ((served, failed), ()) = tokio::join!(traffic, kill);
    eprintln!("while books' instance went away: {served} requests served, {failed} failed");
    // The killed `trellis run` had no chance to clean up; its pod's own process did.
    let netns = std::path::PathBuf::from("/run/netns").join(&books_b.name);
    assert_eventually!(
        !netns.exists(),
        "the killed pod's namespace was left behind"
    );
    for i in 0..20 {
        assert!(
            web.shop_works().await,
            "request {i} failed after the endpoint was dropped"
        );
    }

    // 6. The control plane goes: traffic flows on the last configuration.
    cp.stop().await;
    for i in 0..10 {
        assert!(
            web.shop_works().await,
            "request {i} failed without the control plane"
        );
    }

    drop((ratings, books_a, books_b, web, mysql));
    drop(topology);
}

const PAYMENTS: &str = "api.payments.example";

/// 4b. Under registry-only, an ExternalService makes api.payments.example reachable by
/// name from web's pod: the application's own TLS passes through on 443, and plain
/// HTTP on 80 leaves as TLS the sidecar opens, checked against the payments CA. The
/// sidecar resolves the host through the pod's upstream resolver. A ClientHello for
/// another name at the same address is refused and counted.
async fn external_service(cp: &ControlPlane, web: &Pod, server: &HttpsServer, ca: &TestCa) {
    let port = server.addr().port();
    let pem: String = ca
        .cert_pem
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    apply(
        cp,
        &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: ExternalService\nmetadata: {{name: payments}}\nspec:\n  hosts: [{PAYMENTS}]\n  ports:\n    - {{port: 443, protocol: tls, targetPort: {port}}}\n    - {{port: 80, protocol: https, targetPort: {port}}}\n  tls:\n    caCertificates: |\n{pem}"
        ),
    )
    .await;
    let ca_file = std::env::temp_dir().join(format!("payments-ca-{}.pem", web.name));
    std::fs::write(&ca_file, &ca.cert_pem).expect("CA file");
    let ca_file = ca_file.display().to_string();
    let want = format!("sni={PAYMENTS} host={PAYMENTS}");
    let passthrough = format!("curl -sS --cacert {ca_file} https://{PAYMENTS}/charge");
    assert_eventually!(
        web.sh(&passthrough).await.as_deref() == Some(want.as_str()),
        "TLS to the declared host did not pass through"
    );
    let (status, body) = web.get(PAYMENTS, 80, "/charge").await.expect("plain HTTP");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, want);

    let fronted = format!(
        "curl -sS --cacert {ca_file} --connect-to evil.example:443:{PAYMENTS}:443 https://evil.example/"
    );
    assert_eq!(
        web.sh(&fronted).await,
        None,
        "another server name got through"
    );
    let metrics = web.metrics().await;
    assert!(
        metrics.contains("reason=\"undeclared_host\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_file(&ca_file);

    // `trellis describe` shows what web's sidecar was given for it.
    let holders = format!(
        "http://{}/api/v1/resources/externalservices/default/payments/proxies",
        cp.http_addr
    );
    let request = http::Request::get(holders)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::default())
        .expect("request");
    let holders = HttpClient::http1().send(request).await.expect("holders");
    let text = holders.text();
    assert!(
        text.contains("\"listener\":\"egress-default-payments-api.payments.example-80\"")
            && text.contains("\"originateTls\":{\"serverName\":\"api.payments.example\"}"),
        "{text}"
    );
    assert_eq!(
        server.server_names(),
        vec![Some(PAYMENTS.to_string()), Some(PAYMENTS.to_string())]
    );
}

/// The server-speaks-first exchange from `client`, retried until the capture and the
/// mysql Service's route are in place.
async fn mysql_conversation(client: &Pod, script: &str) -> String {
    let mut said: Option<String>;
    assert_eventually!(
        {
            said = client.sh(script).await;
            said.as_deref().is_some_and(|s| s.contains('|'))
        },
        "no conversation with mysql: {said:?}"
    );
    said.unwrap_or_default()
}
