//! Span export to a real OpenTelemetry receiver: rotel (PyPI `rotel`, installed by
//! `scripts/setup.sh`), which logs every span it receives. Both OTLP transports, and a
//! collector that is not there.

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
