//! Several `trellis control` replicas on one real three-member etcd cluster, with
//! sidecars spread over them: changes made through any replica reach every proxy,
//! conflicting writes through two replicas are settled by the store, a replica can die
//! under load without a failed request, the leader hands over, and losing etcd's quorum
//! stops writes, with a clear error, but not traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use trellis_proxy::control::Sidecar;
use trellis_testkit::assert_eventually;
use trellis_testkit::etcd::EtcdCluster;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

mod support;

use support::control::Control;
use support::{free_port, SidecarSpec};

/// Routes every call to `books` to `backend`, tagged so each apply is a new spec.
fn route_to(backend: &str, tag: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: books, labels: {{tag: {tag}}}}}
spec:
  parentRefs: [{{kind: Service, name: books}}]
  rules:
    - backendRefs: [{{name: {backend}, weight: 1}}]
"
    )
}

fn route_to_v2(tag: &str) -> String {
    route_to("books-v2", tag)
}

async fn replica(cluster: &EtcdCluster, dir: &std::path::Path, name: &str) -> Control {
    let url = cluster.url();
    let args = [
        "--store",
        url.as_str(),
        "--etcd-prefix",
        "/replicas",
        "--etcd-lease-ttl",
        "2",
        "--grace-secs",
        "2",
    ];
    Control::start(&dir.join(name), &args).await
}

async fn apply(control: &Control, dir: &std::path::Path, yaml: &str) -> (bool, String) {
    let file = dir.join(format!("doc-{}.yaml", free_port()));
    std::fs::write(&file, yaml).expect("write the document");
    let path = file.to_str().expect("utf-8 path");
    let token = control.token();
    let (ok, stdout, stderr) = control.trellis(&["apply", "-f", path], Some(&token)).await;
    (ok, format!("{stdout}{stderr}"))
}

/// Which replica holds `workload`'s session.
async fn holder<'a>(replicas: &[&'a Control], workload: &str) -> Option<&'a Control> {
    for replica in replicas {
        let proxies = replica.get_json("/api/v1/proxies").await;
        let items = proxies["items"].as_array().cloned().unwrap_or_default();
        let synced = items
            .iter()
            .any(|p| p["workload"] == workload && p["state"] == "synced");
        if synced {
            return Some(replica);
        }
    }
    None
}

async fn leader(control: &Control) -> (String, String, usize) {
    let view = control.get_json("/api/v1/control-planes").await;
    (
        view["leader"].as_str().unwrap_or_default().to_owned(),
        view["this"].as_str().unwrap_or_default().to_owned(),
        view["members"].as_array().map_or(0, Vec::len),
    )
}

/// Sequential requests through `url` until stopped: (sent, failed).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, n, f) = (stop.clone(), sent.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client = HttpClient::http1();
            // Bounded: at most 20,000 requests, whatever happens.
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                n.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).await {
                    Ok(r) if r.status == StatusCode::OK => {}
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Load {
            stop,
            sent,
            failed,
            task,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

struct Mesh {
    _books: (HttpServer, Sidecar),
    _books_v2: (HttpServer, Sidecar),
    _web: Sidecar,
    url: String,
}

/// books on `a`, books-v2 on `b`, and web, calling books, on either.
async fn mesh(a: &Control, b: &Control) -> Mesh {
    let token = a.token();
    let both = format!("{},{}", a.grpc, b.grpc);
    let sidecar = |grpc: String, name: &'static str, service: &'static str, app, ups| {
        let token = token.clone();
        async move {
            SidecarSpec {
                grpc: &grpc,
                token: &token,
                name,
                service,
                labels: &[],
                app,
                upstreams: ups,
            }
            .start()
            .await
        }
    };
    let books = HttpServer::start("books", ServerProtocol::Http1)
        .await
        .expect("books");
    let books_side = sidecar(a.grpc.clone(), "books-1", "books", books.addr(), &[]).await;
    let v2 = HttpServer::start("books-v2", ServerProtocol::Http1)
        .await
        .expect("books-v2");
    let v2_side = sidecar(b.grpc.clone(), "books-v2-1", "books-v2", v2.addr(), &[]).await;
    let port = free_port();
    let upstreams: &'static [(&'static str, u16)] = Box::leak(Box::new([("books", port)]));
    let web_app = "127.0.0.1:9".parse().expect("addr");
    let web = sidecar(both, "web-1", "web", web_app, upstreams).await;
    Mesh {
        _books: (books, books_side),
        _books_v2: (v2, v2_side),
        _web: web,
        url: format!("http://127.0.0.1:{port}/"),
    }
}

async fn served_by(url: &str) -> String {
    match HttpClient::http1().get(url).await {
        Ok(r) if r.status == StatusCode::OK => r.headers["x-served-by"]
            .to_str()
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_changes_and_a_replica_dies_under_load_without_a_failed_request() {
    let cluster = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let a = replica(&cluster, dir.path(), "a").await;
    let b = replica(&cluster, dir.path(), "b").await;
    // One admin token for both, and one leader: the first to join.
    assert_eq!(a.token(), b.token(), "the replicas share the admin token");
    assert_eventually!(leader(&b).await.2 == 2);
    let (lead, _, _) = leader(&b).await;
    assert_eq!(lead, leader(&a).await.1, "a joined first and leads");

    let mesh = mesh(&a, &b).await;
    assert_eventually!(served_by(&mesh.url).await == "books");

    // A change through either replica reaches web's proxy, wherever it is connected.
    let web_on = holder(&[&a, &b], "web-1").await.expect("web is connected");
    let other = if web_on.url == a.url { &b } else { &a };
    let (ok, out) = apply(other, dir.path(), &route_to_v2("one")).await;
    assert!(ok, "{out}");
    assert_eventually!(served_by(&mesh.url).await == "books-v2");

    // Two writers with the same resourceVersion, one through each replica: exactly
    // one wins, the other is told of the conflict.
    let route = a
        .get_json("/api/v1/resources/httproutes/default/books")
        .await;
    let version = route["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned();
    let with_version = |tag: &str| {
        route_to_v2(tag).replace(
            "metadata: {name: books,",
            &format!("metadata: {{resourceVersion: \"{version}\", name: books,"),
        )
    };
    let (two, three) = (with_version("two"), with_version("three"));
    let (first, second) = tokio::join!(apply(&a, dir.path(), &two), apply(&b, dir.path(), &three),);
    assert!(first.0 ^ second.0, "exactly one wins: {first:?} {second:?}");
    let loser = if first.0 { &second.1 } else { &first.1 };
    assert!(loser.contains("conflict"), "{loser}");

    // The replica web is connected to dies under load: web keeps serving on its last
    // configuration, moves to the other replica and resyncs there. No request fails.
    let load = Load::start(mesh.url.clone());
    assert_eventually!(load.sent.load(Ordering::Relaxed) > 50);
    let web_on = holder(&[&a, &b], "web-1").await.expect("web is connected");
    let (dead, survivor) = if web_on.url == a.url { (a, b) } else { (b, a) };
    dead.kill().await;
    assert_eventually!(holder(&[&survivor], "web-1").await.is_some());
    let survivor_id = leader(&survivor).await.1;
    assert_eventually!(leader(&survivor).await.0 == survivor_id);
    let sent_before = load.sent.load(Ordering::Relaxed);
    assert_eventually!(load.sent.load(Ordering::Relaxed) > sent_before + 50);
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");

    // The survivor leads, and pushes to web: back to books.
    let (ok, out) = apply(&survivor, dir.path(), &route_to("books", "back")).await;
    assert!(ok, "{out}");
    assert_eventually!(served_by(&mesh.url).await == "books");

    // A new replica joins behind the leader; when the leader dies, it takes over.
    let c = replica(&cluster, dir.path(), "c").await;
    assert_eventually!(leader(&c).await.2 == 2);
    let c_id = leader(&c).await.1;
    survivor.kill().await;
    assert_eventually!(leader(&c).await.0 == c_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_etcd_quorum_writes_are_refused_and_traffic_flows() {
    let mut cluster = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let a = replica(&cluster, dir.path(), "a").await;
    let b = replica(&cluster, dir.path(), "b").await;
    let mesh = mesh(&a, &b).await;
    assert_eventually!(served_by(&mesh.url).await == "books");

    // One member down: writes and pushes carry on.
    cluster.kill(0);
    let (ok, out) = apply(&b, dir.path(), &route_to_v2("one")).await;
    assert!(ok, "with one member down: {out}");
    assert_eventually!(served_by(&mesh.url).await == "books-v2");

    // Quorum lost: writes are refused with a clear error; traffic flows on the last
    // configuration.
    cluster.kill(1);
    let (ok, out) = apply(&a, dir.path(), &route_to_v2("two")).await;
    assert!(!ok, "a write without quorum succeeded: {out}");
    assert!(out.contains("unavailable"), "{out}");
    for _ in 0..50 {
        assert_eq!(served_by(&mesh.url).await, "books-v2");
    }

    // Quorum back: writes work again and reach the proxies.
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_ready().await.expect("etcd recovers");
    let (ok, out) = apply(&a, dir.path(), &route_to("books", "back")).await;
    assert!(ok, "after quorum returned: {out}");
    assert_eventually!(served_by(&mesh.url).await == "books");
}
