//! Span export to a real OpenTelemetry receiver: rotel (PyPI `rotel`, installed by
//! `scripts/setup.sh`), which logs every span it receives. Both OTLP transports, a
//! collector that is not there, and a trace across three proxies in W3C and B3.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::process::{Child, Command};
use trellis_proxy::trace::otlp::{ExportConfig, Exporter, Finished, Kind, Protocol};
use trellis_proxy::trace::{self};

/// rotel's agent, logging the spans it receives to a file; killed when dropped.
struct Receiver {
    grpc: String,
    http: String,
    log: std::path::PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn agent_binary() -> String {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "rotel is installed (scripts/setup.sh)"
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Receiver {
    async fn start() -> Receiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("spans.log");
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(agent_binary().await)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("rotel starts");
        // Ready once it accepts connections on both ports.
        for port in [grpc, http] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "rotel never listened"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Receiver {
            grpc: format!("http://127.0.0.1:{grpc}"),
            http: format!("http://127.0.0.1:{http}"),
            log,
            _child: child,
            _dir: dir,
        }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn finished(name: &str, parent: Option<&trace::Span>) -> Finished {
    let mut n = 7u64;
    let mut random = move || {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        n
    };
    let incoming = parent.map(|p| {
        let mut headers = http::HeaderMap::new();
        p.inject(&mut headers);
        trace::extract(&headers).expect("context")
    });
    let span = trace::start(incoming.as_ref(), 1.0, &mut random);
    let end = SystemTime::now();
    Finished {
        span,
        name: name.to_owned(),
        kind: Kind::Server,
        start: end - Duration::from_millis(3),
        end,
        attributes: vec![("trellis.route", "default.books.0".to_owned())],
        error: false,
    }
}

async fn export_to(endpoint: &str, protocol: Protocol, receiver: &Receiver) {
    let exporter = Exporter::start(ExportConfig {
        endpoint: endpoint.to_owned(),
        protocol,
        service_name: "books".into(),
        queue: 64,
        batch: 16,
    });
    let name = format!("GET /books via {protocol:?}");
    let root = finished(&name, None);
    let child = finished(&name, Some(&root.span));
    let (trace_id, child_parent) = (root.span.trace_id_hex(), root.span.span_id);
    assert_eq!(child.span.parent_id, Some(child_parent));
    exporter.record(root);
    exporter.record(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while exporter.stats.exported.load(Ordering::Relaxed) < 2 {
        assert_eq!(
            exporter.stats.failed.load(Ordering::Relaxed),
            0,
            "{protocol:?} export failed"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{protocol:?}: never exported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The receiver logged both spans, in the trace, with their service.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = receiver.received();
        if log.matches(&name).count() >= 2 && log.contains(&trace_id) && log.contains("books") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in rotel's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_receiver_over_grpc_and_http() {
    let receiver = Receiver::start().await;
    export_to(&receiver.grpc, Protocol::Grpc, &receiver).await;
    export_to(&receiver.http, Protocol::HttpProtobuf, &receiver).await;
}

#[tokio::test]
async fn a_missing_collector_costs_counted_spans_not_requests() {
    let exporter = Exporter::start(ExportConfig {
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        protocol: Protocol::HttpProtobuf,
        service_name: "books".into(),
        queue: 4,
        batch: 2,
    });
    // Recording never waits: what the queue cannot hold is dropped and counted.
    for _ in 0..100 {
        exporter.record(finished("GET /", None));
    }
    let stats = &exporter.stats;
    assert!(stats.dropped.load(Ordering::Relaxed) >= 90);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.failed.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failures never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
}

/// A proxy sending everything on to `next`, tracing every request to `collector`.
async fn tracing_hop(
    next: std::net::SocketAddr,
    collector: &str,
    name: &str,
) -> trellis_proxy::Proxy {
    let yaml = format!(
        r#"
listeners:
  - name: in
    address: 127.0.0.1:0
    protocol: http1
    routes:
      - backend: next
backends:
  - name: next
    protocol: http1
    endpoints: ["{next}"]
admin: 127.0.0.1:0
tracing:
  endpoint: {collector}
  protocol: http
  sampling: 1.0
  serviceName: {name}
"#
    );
    let config = trellis_proxy::ProxyConfig::from_yaml(&yaml).expect("config");
    trellis_proxy::Proxy::start(config)
        .await
        .expect("proxy starts")
}

/// The value of `name` in the header list the sample server's `/headers` answers.
fn echoed<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_crosses_three_proxies_in_both_formats() {
    use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
    let receiver = Receiver::start().await;
    let app = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("app");
    let third = tracing_hop(app.addr(), &receiver.http, "third").await;
    let addr = |p: &trellis_proxy::Proxy| p.listener_addr("in").expect("bound");
    let second = tracing_hop(addr(&third), &receiver.http, "second").await;
    let first = tracing_hop(addr(&second), &receiver.http, "first").await;
    let client = HttpClient::http1();
    let url = format!("http://{}/headers", addr(&first));

    // No context: the first proxy starts a trace; the app sees the third hop as parent.
    let seen = client
        .get(&url)
        .await
        .expect("through three proxies")
        .text();
    let parent = echoed(&seen, "traceparent").expect("traceparent reaches the app");
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{parent}");
    let trace_id = parts[1].to_owned();
    // Each proxy exported its span of that trace: three spans, chained.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = receiver.received();
        if ["first", "second", "third"].iter().all(|s| log.contains(s))
            && log.matches(&trace_id).count() >= 3
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans missing:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B3 in, B3 out: the trace id is kept and each hop names its parent.
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let req = http::Request::get(&url)
        .header("x-b3-traceid", trace)
        .header("x-b3-spanid", "a2fb4a1d1a96d312")
        .header("x-b3-sampled", "1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let seen = client
        .send(req)
        .await
        .expect("through three proxies")
        .text();
    assert_eq!(echoed(&seen, "x-b3-traceid"), Some(trace), "{seen}");
    let parent = echoed(&seen, "x-b3-parentspanid").expect("a parent");
    let span = echoed(&seen, "x-b3-spanid").expect("a span");
    assert_ne!(parent, "a2fb4a1d1a96d312", "three hops, not one");
    assert_ne!(parent, span);
    assert!(echoed(&seen, "traceparent").is_none(), "B3 stays B3");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.received().matches(trace).count() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "B3 spans missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
