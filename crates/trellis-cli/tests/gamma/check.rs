//! Runs the cases on one meshed cluster, one after the other, and checks each answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use trellis_testkit::echo::{parse_answers, Answer, EchoCall};
use trellis_testkit::kube::gateway_conformance_dir;
use trellis_testkit::kube::node::NodeOptions;

use super::case::{Case, Request, Target, Weights, CONSUMER, MESH};
use super::cases;
use crate::support::kube::MeshedCluster;

/// The image the base manifests run, which this binary plays.
const ECHO_IMAGE: &str = "registry.k8s.io/gateway-api/echo-advanced";
/// How long the first request of a case may take to get its answer after the case's
/// manifest is applied: the route's way through the control plane to the proxies.
const CONVERGENCE: Duration = Duration::from_secs(10);
/// How long any later request of the case may take.
const SETTLED: Duration = Duration::from_secs(3);
/// Weighted batches tried before a distribution is called wrong.
const WEIGHT_TRIES: usize = 3;

/// The cluster with the base manifests running, and what the requests need of it.
struct Bed {
    mesh: MeshedCluster,
    exe: String,
    dir: PathBuf,
    /// The client Pod (`echo-v1`) of each namespace.
    clients: HashMap<&'static str, String>,
    cluster_ips: HashMap<(String, String), String>,
}

pub async fn run_suite(filters: &[String]) {
    let all = cases::all();
    let chosen: Vec<&Case> = all
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    assert!(!chosen.is_empty(), "no case matches {filters:?}");
    let mut bed = Bed::start().await;
    let mut results = Vec::new();
    for case in chosen {
        let outcome = bed.run(case).await;
        println!(
            "{} ({}): {}",
            case.name,
            case.profile.name(),
            outcome.as_ref().err().map_or("pass", String::as_str)
        );
        results.push((case, outcome));
    }
    report(&results);
}

/// Prints the table and panics if any case did not do what the table says.
fn report(results: &[(&Case, Result<(), String>)]) {
    let mut wrong = Vec::new();
    println!("\n| case | profile | result | why |\n|---|---|---|---|");
    for (case, outcome) in results {
        let (result, why) = match (outcome, case.known_gap) {
            (Ok(()), None) => ("pass", String::new()),
            (Ok(()), Some(gap)) => {
                wrong.push(format!(
                    "{} now passes: remove its known gap ({})",
                    case.name, gap.why
                ));
                ("pass (marked failing)", String::new())
            }
            (Err(e), Some(gap)) if e.contains(gap.shows) => ("fail (known)", gap.why.into()),
            (Err(e), _) => {
                wrong.push(format!("{} fails: {e}", case.name));
                ("FAIL", e.clone())
            }
        };
        println!(
            "| {} | {} | {result} | {} |",
            case.name,
            case.profile.name(),
            why.lines().next().unwrap_or_default()
        );
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}

impl Bed {
    async fn start() -> Self {
        let dir = gateway_conformance_dir();
        let exe = std::env::current_exe()
            .expect("this test binary")
            .to_str()
            .expect("a UTF-8 path")
            .to_string();
        let options = NodeOptions::new()
            .image(ECHO_IMAGE, [exe.as_str(), "echo-server"])
            // The base manifests are Deployments: no scheduler runs here.
            .schedule_unbound();
        let mesh = MeshedCluster::start(options).await;
        let base = std::fs::read_to_string(dir.join("mesh/manifests.yaml")).expect("the base");
        // Both conformance namespaces in the mesh.
        mesh.inject_and_apply(&base);
        for namespace in [MESH, CONSUMER] {
            let waited = mesh.cluster.run_kubectl(
                &[
                    "-n",
                    namespace,
                    "wait",
                    "--for=condition=Available",
                    "deployment",
                    "--all",
                    "--timeout=90s",
                ],
                None,
            );
            if let Err(e) = waited {
                panic!("{namespace} never came up: {e}\n{}", mesh.agent.all_logs());
            }
        }
        let mut clients = HashMap::new();
        for namespace in [MESH, CONSUMER] {
            let pod = mesh.get(
                namespace,
                "pods",
                "{.items[?(@.metadata.labels.version==\"v1\")].metadata.name}",
            );
            let pod = pod.split_whitespace().next().expect("an echo-v1 Pod");
            clients.insert(namespace, pod.to_string());
        }
        Self {
            mesh,
            exe,
            dir,
            clients,
            cluster_ips: HashMap::new(),
        }
    }

    /// Applies the case's manifest, makes its requests, and deletes the manifest.
    async fn run(&mut self, case: &Case) -> Result<(), String> {
        let manifest = case
            .manifest
            .map(|m| self.dir.join("tests/mesh").join(m))
            .map(|p| p.to_str().expect("a UTF-8 path").to_string());
        if let Some(path) = &manifest {
            self.changed(|bed| {
                bed.mesh.cluster.kubectl_ok(&["apply", "-f", path], None);
            })
            .await;
        }
        let outcome = self.requests(case).await;
        if let Some(path) = &manifest {
            self.changed(|bed| {
                bed.mesh
                    .cluster
                    .kubectl_ok(&["delete", "-f", path, "--wait"], None);
            })
            .await;
        }
        outcome
    }

    async fn requests(&mut self, case: &Case) -> Result<(), String> {
        let mut patience = CONVERGENCE;
        for (namespace, request) in &case.requests {
            self.eventually(namespace, request, patience)
                .await
                .map_err(|e| format!("{}: {e}", request.describe()))?;
            patience = SETTLED;
        }
        if let Some(weights) = &case.weights {
            self.eventually(MESH, &weights.request, patience)
                .await
                .map_err(|e| format!("{}: {e}", weights.request.describe()))?;
            let mut last = String::new();
            for _ in 0..WEIGHT_TRIES {
                match self.distribution(weights).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        Ok(())
    }

    /// Makes `request` until its answer is right or `patience` runs out.
    async fn eventually(
        &mut self,
        namespace: &str,
        request: &Request,
        patience: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let answers = self.call(namespace, request, request.repeat).await;
            let checked = if answers.len() < request.repeat {
                Err(format!("{} answers of {}", answers.len(), request.repeat))
            } else {
                answers.iter().try_for_each(|answer| check(request, answer))
            };
            if checked.is_ok() || Instant::now() > deadline {
                return checked;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One batch of the weighted request: each backend's share against the weights.
    async fn distribution(&mut self, weights: &Weights) -> Result<(), String> {
        let answers = self.call(MESH, &weights.request, weights.requests).await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for answer in &answers {
            let backend = weights
                .shares
                .iter()
                .find(|(name, _)| answer.hostname.starts_with(name))
                .map_or_else(
                    || format!("other ({})", answer.hostname),
                    |(n, _)| n.to_string(),
                );
            *counts.entry(backend).or_default() += 1;
        }
        let total = answers.len().max(1) as f64;
        let mut seen: Vec<_> = counts.iter().collect();
        seen.sort();
        for (backend, share) in &weights.shares {
            let got = counts.get(*backend).copied().unwrap_or(0) as f64 / total;
            if (got - share).abs() > weights.tolerance {
                return Err(format!(
                    "{backend} got {:.1}% of {} calls, wants {:.0}% ± {:.0}: {seen:?}",
                    got * 100.0,
                    answers.len(),
                    share * 100.0,
                    weights.tolerance * 100.0
                ));
            }
        }
        let expected: usize = weights
            .shares
            .iter()
            .map(|(b, _)| counts.get(*b).copied().unwrap_or(0))
            .sum();
        if expected != answers.len() || answers.len() != weights.requests {
            return Err(format!(
                "{} of {} calls answered by the weighted backends: {seen:?}",
                expected, weights.requests
            ));
        }
        Ok(())
    }

    /// Runs the echo client `count` times in the namespace's client Pod.
    async fn call(&mut self, namespace: &str, request: &Request, count: usize) -> Vec<Answer> {
        let (address, host) = self.address(namespace, &request.target);
        let mut call = EchoCall::get(format!("http://{address}{}", request.path));
        call.count = count;
        call.grpc = request.grpc;
        if !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            call.headers.push(("Host".to_string(), host));
        }
        call.headers.extend(
            request
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        let pod = format!("{namespace}/{}", self.clients[namespace]);
        let mut args = vec!["echo-client".to_string()];
        args.extend(call.to_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = &self.mesh.agent;
        let exe = self.exe.clone();
        let out = tokio::task::block_in_place(|| agent.exec(pod.as_str(), &exe, &args))
            .expect("the echo client in its Pod");
        parse_answers(&String::from_utf8_lossy(&out.stdout))
    }

    /// Where a target is (`ip:port`) and the `Host` a client names it by.
    fn address(&mut self, namespace: &str, target: &Target) -> (String, String) {
        match target {
            Target::Service(name) => {
                let (service_host, port) = match name.split_once(':') {
                    Some((host, port)) => (host, port.parse().expect("a port")),
                    None => (*name, 80u16),
                };
                let (service, service_namespace) = match service_host.split_once('.') {
                    Some((service, ns)) => (service, ns),
                    None => (service_host, namespace),
                };
                let key = (service_namespace.to_string(), service.to_string());
                let mesh = &self.mesh;
                let ip = self
                    .cluster_ips
                    .entry(key)
                    .or_insert_with(|| mesh.cluster_ip(service_namespace, service));
                (format!("{ip}:{port}"), name.to_string())
            }
            Target::Pod(version, port) => {
                let jsonpath =
                    format!("{{.items[?(@.metadata.labels.version==\"{version}\")].status.podIP}}");
                let ips = self.mesh.get(MESH, "pods", &jsonpath);
                let ip = ips.split_whitespace().next().expect("a Pod IP").to_string();
                let address = format!("{ip}:{port}");
                (address.clone(), address)
            }
        }
    }

    /// Makes a change to the cluster's routes and waits until the proxies have taken
    /// a configuration made after it (or [`CONVERGENCE`] passes: a change some proxy's
    /// configuration does not depend on sends nothing).
    async fn changed(&mut self, change: impl FnOnce(&Self)) {
        let sent = |bed: &Self| -> HashMap<String, u64> {
            bed.mesh
                .cp
                .control
                .registry
                .list()
                .into_iter()
                .map(|p| (p.workload, p.sent_version))
                .collect()
        };
        let before = sent(self);
        change(self);
        let deadline = Instant::now() + CONVERGENCE;
        while Instant::now() < deadline {
            let proxies = self.mesh.cp.control.registry.list();
            let newer = proxies
                .iter()
                .all(|p| before.get(&p.workload).is_none_or(|v| p.sent_version > *v));
            let acked = proxies.iter().all(|p| p.acked_version == p.sent_version);
            if newer && acked {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `answer` is what `request` expects; what is wrong otherwise.
fn check(request: &Request, answer: &Answer) -> Result<(), String> {
    let status = match (answer.status, &answer.error) {
        (Some(status), _) => status,
        (None, Some(error)) => return Err(format!("no answer: {error}")),
        (None, None) => return Err(format!("an answer without a status: {answer:?}")),
    };
    if status != request.status {
        return Err(format!(
            "status {status}, wants {} (answered by {:?}, Location {:?})",
            request.status,
            answer.hostname,
            answer.response_header("location")
        ));
    }
    if !answer.hostname.starts_with(request.backend) {
        return Err(format!(
            "answered by {:?}, wants {}",
            answer.hostname, request.backend
        ));
    }
    if let Some(path) = request.received_path {
        if answer.url != path {
            return Err(format!(
                "the backend received {:?}, wants {path:?}",
                answer.url
            ));
        }
    }
    for (name, value) in &request.received_headers {
        let got = answer.request_header(name);
        if got.as_deref() != Some(*value) {
            return Err(format!(
                "the backend received {name}: {got:?}, wants {value:?}"
            ));
        }
    }
    for name in &request.absent_received_headers {
        if let Some(got) = answer.request_header(name) {
            return Err(format!("the backend received {name}: {got:?}, wants none"));
        }
    }
    for (name, value) in &request.response_headers {
        let got = answer.response_header(name);
        if got.as_deref() != Some(*value) {
            return Err(format!("response header {name}: {got:?}, wants {value:?}"));
        }
    }
    for name in &request.absent_response_headers {
        if let Some(got) = answer.response_header(name) {
            return Err(format!("response header {name}: {got:?}, wants none"));
        }
    }
    if let Some(want) = &request.location {
        let location = answer.response_header("location").unwrap_or_default();
        let uri: http::Uri = location
            .parse()
            .map_err(|_| format!("Location {location:?} is not a URI"))?;
        let wrong = want.scheme.is_some_and(|s| uri.scheme_str() != Some(s))
            || want.host.is_some_and(|h| uri.host() != Some(h))
            || want.port.is_some_and(|p| uri.port_u16() != Some(p))
            || want.path.is_some_and(|p| uri.path() != p);
        if wrong {
            return Err(format!("Location {location:?}, wants {want:?}"));
        }
    }
    Ok(())
}
