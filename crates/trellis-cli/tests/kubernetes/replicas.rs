//! Two control-plane replicas, each the real binary (`trellis control --kubernetes`),
//! serve the shop's injected sidecars. The replica the proxies are connected to is
//! killed (SIGKILL) while web calls books in a loop: no call fails, since proxies keep
//! serving their configuration; they reconnect to the other replica, a route applied
//! afterwards reaches them through it, and it takes over the Lease and marks the route
//! Accepted.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trellis_testkit::kube::node::NodeAgent;
use trellis_testkit::kube::KubeCluster;

use super::mesh::{books_url, call_from_web, canary, canary_accepted, run_pods, shop};
use crate::support::control::trellis_binary;

/// A `trellis control --kubernetes` process; killed on drop.
struct Replica {
    child: Child,
    grpc: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a replica whose gRPC API listens at the node's address (where the Pods
/// reach it), and waits until it says it runs.
fn start_replica(cluster: &KubeCluster, agent: &NodeAgent, name: &str) -> Replica {
    // A port free now on the node's address: the proxies are told it before the
    // replica binds it, as they would be told a Service's.
    let grpc = std::net::TcpListener::bind((agent.node_ip(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut child = Command::new(trellis_binary())
        .args(["control", "--kubernetes", "--kubeconfig"])
        .arg(cluster.kubeconfig())
        .arg("--data-dir")
        .arg(cluster.dir().join(name))
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr"])
        .arg(grpc.to_string())
        .env("HOSTNAME", name)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("trellis control starts");
    // Its output is read to the end, so that it never writes to a closed pipe.
    let stdout = child.stdout.take().expect("stdout");
    let (running, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("control plane running") {
                let _ = running.send(());
            }
        }
    });
    assert!(
        said.recv_timeout(Duration::from_secs(60)).is_ok(),
        "{name} did not start"
    );
    Replica { child, grpc }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_fails_no_request() {
    let cluster = KubeCluster::start().await;
    let agent = shop(&cluster).await;
    let (mut first, second) = tokio::task::block_in_place(|| {
        let first = start_replica(&cluster, &agent, "control-a");
        let second = start_replica(&cluster, &agent, "control-b");
        (first, second)
    });
    // Each proxy connects to the first it can reach: the first replica.
    let control = format!("http://{},http://{}", first.grpc, second.grpc);
    tokio::task::block_in_place(|| run_pods(&cluster, &agent, &control));
    let url = books_url(&cluster);
    call_from_web(&agent, &url, "hello from books\n").await;

    // 300 calls, one after another, each counted in a file; the first replica dies
    // after the 50th.
    let progress = cluster.dir().join("calls");
    let script = format!(
        "fail=0; for i in $(seq 300); do \
           curl -sS -f -m 5 -o /dev/null {url} || fail=$((fail+1)); echo $i >> {log}; \
         done; echo failed=$fail",
        log = progress.display()
    );
    let outcome = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let load = scope.spawn(|| agent.exec("shop/web-1", "sh", &["-c", &script]));
            let calls = || {
                std::fs::read_to_string(&progress)
                    .map(|s| s.lines().count())
                    .unwrap_or(0)
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while calls() < 50 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            first.child.kill().expect("SIGKILL");
            first.child.wait().expect("reaped");
            let killed_at = calls();
            let out = load
                .join()
                .expect("the load thread")
                .expect("sh in web's Pod");
            (killed_at, String::from_utf8_lossy(&out.stdout).into_owned())
        })
    });
    let (killed_at, said) = outcome;
    assert!(
        (50..300).contains(&killed_at),
        "the replica was not killed under load (after call {killed_at})"
    );
    assert!(
        said.contains("failed=0"),
        "calls failed when a replica was killed: {said}\n{}",
        agent.all_logs()
    );

    // The proxies now follow the second replica: a route reaches them through it,
    // and once the dead replica's Lease runs out it marks the route Accepted.
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&canary(0, 100)));
    call_from_web(&agent, &url, "hello from books-v2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while canary_accepted(&cluster) != "True" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(canary_accepted(&cluster), "True", "{}", agent.all_logs());
    drop(second);
}
