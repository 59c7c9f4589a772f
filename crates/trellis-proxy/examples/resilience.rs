//! The protection benchmarks of `bench/resilience.sh`: three scenarios, each run with
//! the default protection and with every mechanism off, in one process on loopback,
//! with open-loop load (one request per tick, each on its own task, a 2 s client
//! timeout) so that a slow system is not let off by a slower client.
//!
//! 1. **Retry storm**: a backend failing every request, a route retrying 503 three
//!    times. What the backend sees, as a multiple of the offered load.
//! 2. **Cascading failure**: web → (proxy) → books → (books' proxy) → ratings. Books
//!    serves with 32 workers; half of web's requests need ratings, half do not. Ratings
//!    slows down 10× (20 ms → 200 ms): do the requests that do not need ratings still
//!    succeed, and how long do they take? How far do books' waiting requests and the
//!    connections to ratings grow?
//! 3. **Overload**: a backend of 8 workers at 10 ms (800 requests/s) offered three
//!    times that. Goodput, and the latency of what was served.
//!
//! `cargo run --release -p trellis-proxy --example resilience [SECONDS]` (default 10:
//! the length of each measured phase).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use trellis_proxy::{Proxy, ProxyConfig};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> futures_util::future::BoxFuture<'static, Response<Full<Bytes>>>
        + Send
        + Sync,
>;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const ALL_OFF: &str = "{retryBudget: {enabled: false}, circuitBreaker: {enabled: false}, outlierDetection: {enabled: false}, adaptiveConcurrency: {enabled: false}}";

/// A server on loopback that counts its requests and its open connections.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    peak_open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let (open, peak_open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counters = (requests.clone(), open.clone(), peak_open.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, open, peak) =
                    (counters.0.clone(), counters.1.clone(), counters.2.clone());
                let handler = handler.clone();
                let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(now_open, Ordering::Relaxed);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        requests.fetch_add(1, Ordering::Relaxed);
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Server {
            addr,
            requests,
            open,
            peak_open,
            task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    *resp.status_mut() = status;
    resp
}

/// A proxy with one listener to backend `app` at `endpoint`.
async fn proxy(endpoint: SocketAddr, route_extra: &str, resilience: &str) -> Proxy {
    let resilience = match resilience {
        "" => String::new(),
        r => format!("resilience: {r}"),
    };
    let yaml = format!(
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    routes:\n      - backend: app\n        {route_extra}\nbackends:\n  - name: app\n    endpoints: [\"{endpoint}\"]\n    {resilience}\nadmin: 127.0.0.1:0\n"
    );
    let config = ProxyConfig::from_yaml(&yaml).expect("bench config");
    Proxy::start(config).await.expect("proxy starts")
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http()
}

/// What one kind of request saw during a phase.
#[derive(Default)]
struct Seen {
    ok: u64,
    failed: u64,
    /// Latency of each 2xx, in microseconds.
    latencies: Vec<u32>,
}

impl Seen {
    fn success(&self) -> f64 {
        100.0 * self.ok as f64 / (self.ok + self.failed).max(1) as f64
    }

    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// Sends `rate` requests per second for `seconds`, the `i`th to `url(i)`, and returns
/// what each kind (`kind(i)`) saw. Answers are awaited up to the client timeout.
async fn open_loop(
    client: &HttpClient,
    rate: u64,
    seconds: u64,
    url: impl Fn(u64) -> (usize, String),
    kinds: usize,
) -> Vec<Seen> {
    let seen: Arc<Mutex<Vec<Seen>>> =
        Arc::new(Mutex::new((0..kinds).map(|_| Seen::default()).collect()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..rate * seconds {
        tick.tick().await;
        let (kind, url) = url(i);
        let (client, seen) = (client.clone(), seen.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let req = Request::get(url).body(Empty::new()).expect("request");
            let outcome = tokio::time::timeout(CLIENT_TIMEOUT, async {
                let resp = client.request(req).await.ok()?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await.ok()?;
                Some(ok)
            })
            .await;
            let mut seen = seen.lock().expect("lock");
            let s = &mut seen[kind];
            match outcome {
                Ok(Some(true)) => {
                    s.ok += 1;
                    s.latencies
                        .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                _ => s.failed += 1,
            }
        });
        // Reap finished tasks so memory follows the requests in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut seen = seen.lock().expect("lock");
    std::mem::take(&mut *seen)
}

fn metric(proxy: &Proxy, prefix: &str) -> u64 {
    proxy
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn retry_storm(seconds: u64, resilience: &str) -> String {
    let failing: Handler =
        Arc::new(|_| Box::pin(async { answer(StatusCode::SERVICE_UNAVAILABLE) }));
    let backend = Server::start(failing).await;
    let retry = "retry: {attempts: 3, codes: [503], backoff: 5ms}";
    let proxy = proxy(backend.addr, retry, resilience).await;
    let url = format!("http://{}/", proxy.listener_addr("web").expect("listener"));
    let rate = 400;
    let seen = open_loop(&client(), rate, seconds, |_| (0, url.clone()), 1).await;
    let offered = seen[0].ok + seen[0].failed;
    let received = backend.requests.load(Ordering::Relaxed);
    format!(
        "| {} | {} | {} | {:.2}× | {} |",
        name(resilience),
        offered,
        received,
        received as f64 / offered as f64,
        metric(&proxy, "trellis_retry_budget_exhausted_total"),
    )
}

fn name(resilience: &str) -> String {
    match resilience {
        "" => "default protection".into(),
        ALL_OFF => "all off".into(),
        tuned => format!("tuned: `{tuned}`"),
    }
}

/// A BackendPolicy for ratings whose limit starts below books' 32 workers.
const LOW_START: &str = "{adaptiveConcurrency: {initialLimit: 16}}";
/// A looser latency tolerance, as Netflix's `Gradient2` has by default.
const LOOSE: &str = "{adaptiveConcurrency: {tolerance: 1.5}}";

async fn cascade(seconds: u64, resilience: &str) -> String {
    let ratings_delay = Arc::new(AtomicU64::new(20));
    let delay = ratings_delay.clone();
    let ratings: Handler = Arc::new(move |_| {
        let ms = delay.load(Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer(StatusCode::OK)
        })
    });
    let ratings = Server::start(ratings).await;
    let books_proxy = proxy(ratings.addr, "", resilience).await;
    let ratings_url = format!(
        "http://{}/ratings",
        books_proxy.listener_addr("web").expect("l")
    );
    // Books: 32 workers; a request waits for one, then answers, asking ratings first
    // for /details (and answering without ratings when that fails).
    let workers = Arc::new(Semaphore::new(32));
    let (waiting, peak_waiting) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (w, pw, upstream, books_client) = (
        workers.clone(),
        peak_waiting.clone(),
        ratings_url.clone(),
        client(),
    );
    let waiting_in = waiting.clone();
    let books: Handler = Arc::new(move |req| {
        let (w, waiting, pw, upstream, c) = (
            w.clone(),
            waiting_in.clone(),
            pw.clone(),
            upstream.clone(),
            books_client.clone(),
        );
        Box::pin(async move {
            pw.fetch_max(
                waiting.fetch_add(1, Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            let permit = w.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(_permit) = permit else {
                return answer(StatusCode::INTERNAL_SERVER_ERROR);
            };
            if req.uri().path() == "/details" {
                let ask = Request::get(upstream.as_str())
                    .body(Empty::new())
                    .expect("request");
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let resp = c.request(ask).await.ok()?;
                    resp.into_body().collect().await.ok()
                })
                .await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            answer(StatusCode::OK)
        })
    });
    let books = Server::start(books).await;
    // A policy tuned for ratings is ratings' own; web's proxy keeps the defaults.
    let web_resilience = if resilience == ALL_OFF { ALL_OFF } else { "" };
    let web_proxy = proxy(books.addr, "", web_resilience).await;
    let web = web_proxy.listener_addr("web").expect("listener");
    let url = move |i: u64| {
        if i.is_multiple_of(2) {
            (0, format!("http://{web}/plain"))
        } else {
            (1, format!("http://{web}/details"))
        }
    };
    let load = client();
    let rate = 400;
    let mut normal = open_loop(&load, rate, seconds / 2, &url, 2).await;
    ratings_delay.store(200, Ordering::Relaxed);
    peak_waiting.store(0, Ordering::Relaxed);
    ratings
        .peak_open
        .store(ratings.open.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut slow = open_loop(&load, rate, seconds, &url, 2).await;
    let shed = metric(&books_proxy, "trellis_circuit_rejections_total")
        + metric(&web_proxy, "trellis_circuit_rejections_total");
    format!(
        "| {} | {:.2} % | {:.1} ms | {:.2} % | {:.1} ms | {:.2} % | {} | {} | {} |",
        name(resilience),
        normal[0].success(),
        normal[0].percentile(0.99),
        slow[0].success(),
        slow[0].percentile(0.99),
        slow[1].success(),
        peak_waiting.load(Ordering::Relaxed),
        ratings.peak_open.load(Ordering::Relaxed),
        shed,
    )
}

async fn overload(seconds: u64, resilience: &str) -> String {
    let workers = Arc::new(Semaphore::new(8));
    let w = workers.clone();
    let backend: Handler = Arc::new(move |_| {
        let w = w.clone();
        Box::pin(async move {
            let Ok(_permit) = w.acquire_owned().await else {
                return answer(StatusCode::INTERNAL_SERVER_ERROR);
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            answer(StatusCode::OK)
        })
    });
    let backend = Server::start(backend).await;
    let capacity = capacity(backend.addr, seconds / 2).await;
    // The measuring callers' connections are gone; count the proxy's from here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    backend
        .peak_open
        .store(backend.open.load(Ordering::Relaxed), Ordering::Relaxed);
    let proxy = proxy(backend.addr, "", resilience).await;
    let url = format!("http://{}/", proxy.listener_addr("web").expect("listener"));
    let load = client();
    let mut unloaded = open_loop(&load, 200, seconds / 2, |_| (0, url.clone()), 1).await;
    let mut loaded = open_loop(&load, 2400, seconds, |_| (0, url.clone()), 1).await;
    let goodput = loaded[0].ok as f64 / seconds as f64;
    format!(
        "| {} | {:.0} /s | {:.1} ms | {:.0} /s ({:.1} % of measured, {:.0} % of nominal) | {:.1} ms | {:.1} ms | {} | {} |",
        name(resilience),
        capacity,
        unloaded[0].percentile(0.99),
        goodput,
        100.0 * goodput / capacity,
        100.0 * goodput / 800.0,
        loaded[0].percentile(0.50),
        loaded[0].percentile(0.99),
        metric(&proxy, "trellis_circuit_rejections_total"),
        backend.peak_open.load(Ordering::Relaxed),
    )
}

/// What `backend` serves per second, measured directly (no proxy) with 32 callers each
/// sending its next request as soon as the last is answered for `seconds`: its nominal
/// capacity less what timers and the shared cores take from it.
async fn capacity(backend: SocketAddr, seconds: u64) -> f64 {
    let load = client();
    let url = format!("http://{backend}/");
    let until = Instant::now() + Duration::from_secs(seconds);
    let served = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (load, url, served) = (load.clone(), url.clone(), served.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let req = Request::get(url.as_str())
                        .body(Empty::new())
                        .expect("request");
                    if let Ok(resp) = load.request(req).await {
                        if resp.status().is_success() && resp.into_body().collect().await.is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        let _ = caller.await;
    }
    served.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// Lets the requests a scenario left behind (answers arriving after the client gave
/// up, connections closing) finish before the next one measures.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    // A second argument runs one scenario alone, with the protection settings given
    // (for trying a tuning): `overload '{adaptiveConcurrency: {tolerance: 1.25}}'`.
    if let Some(only) = std::env::args().nth(2) {
        let tuning = std::env::args().nth(3).unwrap_or_default();
        let row = match only.as_str() {
            "retry" => retry_storm(seconds, &tuning).await,
            "cascade" => cascade(seconds, &tuning).await,
            "overload" => overload(seconds, &tuning).await,
            other => panic!("no scenario {other:?}: retry, cascade or overload"),
        };
        println!("{row}");
        return;
    }
    println!("## Retry storm\n");
    println!("A backend failing every request with 503; the route retries 503 up to 3 times (backoff 5 ms). Open-loop 400 requests/s for {seconds} s. Goal: the backend sees at most 1.25× the offered load.\n");
    println!("| protection | offered | backend saw | ratio | retries refused by the budget |");
    println!("|---|---|---|---|---|");
    for r in ["", ALL_OFF] {
        println!("{}", retry_storm(seconds, r).await);
        settle().await;
    }
    println!("\n## Cascading failure\n");
    println!("web → proxy → books (32 workers) → books' proxy → ratings, 400 requests/s, half `/plain` (books alone, 1 ms), half `/details` (books asks ratings, and answers without ratings when that fails). {} s normal (ratings 20 ms), then {seconds} s with ratings 10× slower (200 ms). Goal with protection: `/plain` ≥ 99 % success and p99 within 2× of normal; books' waiting requests and connections to ratings bounded.\n", seconds / 2);
    println!("| protection | /plain ok, normal | /plain p99, normal | /plain ok, ratings slow | /plain p99, ratings slow | /details ok (degraded answers count), ratings slow | books' peak waiting requests | peak connections to ratings | requests shed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in ["", LOW_START, ALL_OFF] {
        println!("{}", cascade(seconds, r).await);
        settle().await;
    }
    println!("\n## Overload\n");
    println!("A backend of 8 workers at 10 ms each (nominal capacity 800 requests/s; measured first, directly, with 32 closed-loop callers for {} s: a 10 ms timer sleeps a little longer). {} s at 200/s (unloaded), then {seconds} s at 2400/s (3× nominal capacity). Goal: goodput ≥ 90 % of capacity, p99 of served requests within 2× of the unloaded p99.\n", seconds / 2, seconds / 2);
    println!("| protection | capacity, measured | p99 unloaded | goodput at 3× | p50 served | p99 served | shed (503) | peak backend connections |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in ["", LOOSE, ALL_OFF] {
        println!("{}", overload(seconds, r).await);
        settle().await;
    }
}
