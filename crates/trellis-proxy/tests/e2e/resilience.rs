//! Protection through the proxy, each mechanism on its own, against deterministic
//! backends: connect-failure retries, the retry budget, circuit-breaker limits, outlier
//! ejection and return, adaptive concurrency shedding and active health checks (in
//! plaintext and over mTLS to a callee that takes nothing else).

use std::net::SocketAddr;

use http::StatusCode;
use trellis_identity::CertificateAuthority;
use trellis_proxy::tls::PEER_IDENTITY_HEADER;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::recorder::{Answer, Recorder};
use super::{counter, mtls, start, url};

/// A listener `web` with one route (`route_extra`) to backend `app` over `endpoints`
/// in round-robin, with `resilience` settings (YAML flow map, or empty).
pub async fn start_proxy(
    endpoints: &[SocketAddr],
    route_extra: &str,
    resilience: &str,
) -> trellis_proxy::Proxy {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    start_proxy_to(&endpoints, route_extra, resilience).await
}

/// [`start_proxy`] with endpoints written out (YAML flow values).
async fn start_proxy_to(
    endpoints: &[String],
    route_extra: &str,
    resilience: &str,
) -> trellis_proxy::Proxy {
    let resilience = match resilience {
        "" => String::new(),
        r => format!("resilience: {r}"),
    };
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes:
      - backend: app
        {route_extra}
backends:
  - name: app
    loadBalancer: round-robin
    endpoints: [{}]
    {resilience}
"#,
        endpoints.join(", ")
    );
    start(&yaml).await
}

fn refused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

pub async fn good() -> HttpServer {
    HttpServer::start("good", ServerProtocol::Http1)
        .await
        .expect("server")
}

#[tokio::test]
async fn a_killed_endpoint_fails_no_request_and_is_ejected() {
    let good = good().await;
    // No retry configured on the route: connect failures are retried by default.
    let proxy = start_proxy(&[refused_addr(), good.addr()], "", "").await;
    let client = HttpClient::http1();
    for i in 0..20 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.status, StatusCode::OK, "request {i}");
    }
    // Five connect failures in a row ejected it; after that it was left out.
    let retried =
        r#"trellis_retries_total{listener="web",route="0",backend="app",reason="connect failed"}"#;
    assert_eq!(counter(&proxy, retried), 5);
    assert_eq!(
        counter(&proxy, r#"trellis_outlier_ejections_total{backend="app"}"#),
        1
    );
    assert_eq!(
        counter(&proxy, r#"trellis_outlier_ejected{backend="app"}"#),
        1
    );

    // A POST is not replay-safe: its connect failure is the client's answer.
    let proxy = proxy_without_ejection(refused_addr(), good.addr()).await;
    let statuses = super::post_twice(&proxy).await;
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
}

async fn proxy_without_ejection(a: SocketAddr, b: SocketAddr) -> trellis_proxy::Proxy {
    start_proxy(&[a, b], "", "{outlierDetection: {enabled: false}}").await
}

#[tokio::test]
async fn the_retry_budget_caps_retries_when_every_request_fails() {
    let failing = Recorder::start(Answer::Status(503)).await;
    let retry = "retry: {attempts: 3, codes: [503], backoff: 1ms}";
    let budget = "{retryBudget: {ratio: 0.2, minPerSecond: 0}, outlierDetection: {enabled: false}}";
    let proxy = start_proxy(&[failing.addr], retry, budget).await;
    let client = HttpClient::http1();
    for _ in 0..100 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Without the budget the backend would see 400 requests; with it, at most 1.2×.
    let seen = failing.count();
    assert!((100..=120).contains(&seen), "the backend saw {seen}");
    let exhausted = counter(
        &proxy,
        r#"trellis_retry_budget_exhausted_total{backend="app"}"#,
    );
    assert!(exhausted >= 80, "{exhausted} retries refused");

    // Turned off, every retry the route asks for is made.
    let unbudgeted = Recorder::start(Answer::Status(503)).await;
    let off = "{retryBudget: {enabled: false}, outlierDetection: {enabled: false}}";
    let proxy = start_proxy(&[unbudgeted.addr], retry, off).await;
    for _ in 0..10 {
        client.get(&url(&proxy, "/")).await.expect("response");
    }
    assert_eq!(unbudgeted.count(), 40);
}

/// Starts `n` requests that the hanging backend holds, and waits until it has them.
async fn hold(
    proxy: &trellis_proxy::Proxy,
    backend: &Recorder,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let held = (0..n)
        .map(|_| {
            let url = url(proxy, "/");
            tokio::spawn(async move {
                let _ = HttpClient::http1().get(&url).await;
            })
        })
        .collect();
    assert_eventually!(
        backend.count() == n,
        "the backend got {} requests",
        backend.count()
    );
    held
}

#[tokio::test]
async fn circuit_breaker_limits_refuse_what_overflows_at_once() {
    let cases = [
        (
            "{circuitBreaker: {maxRequests: 2}, adaptiveConcurrency: {enabled: false}}",
            2,
            "max-requests",
        ),
        (
            "{circuitBreaker: {maxConnections: 1}, adaptiveConcurrency: {enabled: false}}",
            1,
            "max-connections",
        ),
    ];
    for (settings, held, reason) in cases {
        let hanging = Recorder::start(Answer::Hang).await;
        let proxy = start_proxy(&[hanging.addr], "", settings).await;
        let holders = hold(&proxy, &hanging, held).await;
        let resp = HttpClient::http1()
            .get(&url(&proxy, "/"))
            .await
            .expect("response");
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{reason}");
        assert_eq!(resp.headers["x-trellis-overflow"], reason);
        assert!(resp.headers["trellis-error"]
            .to_str()
            .expect("text")
            .starts_with("circuit breaker"));
        let series =
            format!(r#"trellis_circuit_rejections_total{{backend="app",reason="{reason}"}}"#);
        assert_eq!(counter(&proxy, &series), 1);
        assert_eq!(
            hanging.count(),
            held,
            "the refused request never reached the backend"
        );
        holders.iter().for_each(|h| h.abort());
    }
}

#[tokio::test]
async fn adaptive_concurrency_sheds_past_its_limit_with_retry_after() {
    let hanging = Recorder::start(Answer::Hang).await;
    let settings = "{adaptiveConcurrency: {initialLimit: 2, minLimit: 1, maxLimit: 2}}";
    let proxy = start_proxy(&[hanging.addr], "", settings).await;
    assert_eq!(
        counter(&proxy, r#"trellis_concurrency_limit{backend="app"}"#),
        2
    );
    let holders = hold(&proxy, &hanging, 2).await;
    // The limit binds once the backend has answered nothing for a second (it has no
    // usual round trip yet to judge by).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers["x-trellis-overflow"], "concurrency-limit");
    assert_eq!(resp.headers["retry-after"], "1");
    let shed = r#"trellis_circuit_rejections_total{backend="app",reason="concurrency-limit"}"#;
    assert_eq!(counter(&proxy, shed), 1);
    holders.iter().for_each(|h| h.abort());
}

/// Sends `n` calls at once on one HTTP/2 connection, as a gRPC channel does, and
/// returns the statuses that are not 200 with their overflow reasons.
async fn burst(proxy: &trellis_proxy::Proxy, n: usize, path: &str) -> Vec<String> {
    let client = HttpClient::http2();
    let calls = (0..n).map(|_| {
        let (client, url) = (client.clone(), url(proxy, path));
        tokio::spawn(async move {
            match client.get(&url).await {
                Ok(resp) if resp.status == StatusCode::OK => None,
                Ok(resp) => Some(format!(
                    "{} {:?}",
                    resp.status,
                    resp.headers.get("x-trellis-overflow")
                )),
                Err(e) => Some(e.to_string()),
            }
        })
    });
    let mut failed = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        failed.extend(call.await.expect("call"));
    }
    failed
}

#[tokio::test]
async fn a_burst_of_a_thousand_calls_to_a_healthy_backend_is_never_shed() {
    // One HTTP/2 connection to the backend carries the whole burst.
    let backend = HttpServer::start("good", ServerProtocol::Http2)
        .await
        .expect("server");
    // The default protection, adaptive concurrency starting at 20.
    let yaml = format!(
        "listeners: [{{name: web, address: 127.0.0.1:0, routes: [{{backend: app}}]}}]\n\
         backends: [{{name: app, protocol: http2, endpoints: [\"{}\"]}}]\n",
        backend.addr()
    );
    let proxy = start(&yaml).await;
    // Fresh; then quiet for a while, so the limit has a baseline and sits at its
    // start; then the same burst again.
    for round in ["cold", "warm", "again"] {
        if round == "warm" {
            for _ in 0..25 {
                assert!(burst(&proxy, 4, "/delay/50").await.is_empty());
            }
        }
        let failed = burst(&proxy, 1000, "/delay/50").await;
        assert!(
            failed.is_empty(),
            "{round}: {} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    let shed = r#"trellis_circuit_rejections_total{backend="app",reason="concurrency-limit"}"#;
    assert_eq!(counter(&proxy, shed), 0);
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_and_takes_it_back() {
    let bad = Recorder::start(Answer::Status(500)).await;
    let good = good().await;
    let settings = "{outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 300ms}}";
    let proxy = start_proxy(&[bad.addr, good.addr()], "", settings).await;
    let client = HttpClient::http1();
    // Round robin: the bad endpoint answers every other request until its third 500.
    let mut failed = 0;
    while bad.count() < 3 {
        if client
            .get(&url(&proxy, "/"))
            .await
            .expect("response")
            .status
            != StatusCode::OK
        {
            failed += 1;
        }
    }
    assert_eq!(failed, 3);
    assert_eq!(
        counter(&proxy, r#"trellis_outlier_ejected{backend="app"}"#),
        1
    );
    for _ in 0..10 {
        let resp = client.get(&url(&proxy, "/")).await.expect("response");
        if bad.count() > 3 {
            break; // the ejection ended already: nothing more to see here
        }
        assert_eq!(resp.status, StatusCode::OK);
    }
    // After its ejection it is given requests again.
    assert_eventually!(
        client.get(&url(&proxy, "/")).await.is_ok() && bad.count() > 3,
        "the ejected endpoint never came back"
    );
    assert_eq!(
        counter(&proxy, r#"trellis_outlier_ejections_total{backend="app"}"#),
        1
    );

    // Both endpoints failing: at most half of them is ejected at once.
    let (a, b) = (
        Recorder::start(Answer::Status(500)).await,
        Recorder::start(Answer::Status(500)).await,
    );
    let proxy = start_proxy(
        &[a.addr, b.addr],
        "",
        "{outlierDetection: {consecutiveFailures: 1}}",
    )
    .await;
    for _ in 0..20 {
        client.get(&url(&proxy, "/")).await.expect("response");
    }
    assert_eq!(
        counter(&proxy, r#"trellis_outlier_ejected{backend="app"}"#),
        1
    );
}

#[tokio::test]
async fn active_health_checks_leave_out_failing_endpoints() {
    let failing = Recorder::start(Answer::Status(503)).await;
    let good = good().await;
    let settings = "{healthCheck: {path: /, interval: 20ms, unhealthyThreshold: 2}, outlierDetection: {enabled: false}}";
    let proxy = start_proxy(&[failing.addr, good.addr()], "", settings).await;
    // Round robin would send one of every two requests to the failing endpoint; once
    // its probes have failed twice, every request goes to the good one.
    assert_eventually!(
        four_ok(&proxy).await,
        "the failing endpoint was never left out"
    );
    let probed = probes(&failing).len();
    assert!(probed >= 2, "{probed} probes");
}

/// Whether four requests in a row through `proxy` are answered 200.
async fn four_ok(proxy: &trellis_proxy::Proxy) -> bool {
    let client = HttpClient::http1();
    let mut all_ok = true;
    for _ in 0..4 {
        let resp = client.get(&url(proxy, "/")).await.expect("response");
        all_ok &= resp.status == StatusCode::OK;
    }
    all_ok
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_admitted_responses_carry_the_quota() {
    let good = good().await;
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    rateLimits:
      - {{name: shop/limits, requestsPerSecond: 1, burst: 3}}
    routes: [{{backend: app}}]
backends:
  - name: app
    endpoints: ["{}"]
"#,
        good.addr()
    );
    let proxy = start(&yaml).await;
    let client = HttpClient::http1();
    // The burst passes; then the bucket is empty (a token takes a second to come
    // back, far longer than these requests take).
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(client.get(&url(&proxy, "/")).await.expect("response"));
    }
    let ok = statuses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(ok >= 3, "the burst of 3 passes");
    // Admitted responses say what is left of the same quota, in the same headers.
    let first = &statuses[0].headers;
    assert_eq!(first["ratelimit-limit"], "3");
    assert_eq!(first["ratelimit-remaining"], "2");
    assert_eq!(first["ratelimit-reset"], "1", "one token to refill, at 1/s");
    assert_eq!(statuses[1].headers["ratelimit-remaining"], "1");
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("one request limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(limited.headers["ratelimit-limit"], "3");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    assert_eq!(limited.headers["trellis-error"], "rate limited");
    let series = r#"trellis_rate_limited_total{listener="web",policy="shop/limits",key="service"}"#;
    let refused = statuses
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(counter(&proxy, series), refused as u64);
}

/// An inbound proxy that takes only mTLS, proving `cart`, in front of `app`.
async fn strict_inbound(app: SocketAddr, ca: &CertificateAuthority) -> trellis_proxy::Proxy {
    let proxy = start(&format!(
        r#"
listeners:
  - name: inbound
    address: 127.0.0.1:0
    mtls: strict
    routes: [{{backend: app}}]
backends:
  - name: app
    endpoints: ["{app}"]
"#
    ))
    .await;
    proxy
        .set_identity(mtls::store(ca, &mtls::id("cart")))
        .expect("identity");
    proxy
}

/// The health probes `app` received, with the identity each came from.
fn probes(app: &Recorder) -> Vec<Option<String>> {
    app.received()
        .iter()
        .filter(|(h, _)| {
            h.get("user-agent")
                .is_some_and(|u| u == "trellis-health-check")
        })
        .map(|(h, _)| {
            h.get(PEER_IDENTITY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn health_probes_reach_a_strict_mtls_callee_with_the_callers_identity() {
    let ca = mtls::root();
    let (healthy, failing) = (
        Recorder::start(Answer::Ok).await,
        Recorder::start(Answer::Status(503)).await,
    );
    let inbound_healthy = strict_inbound(healthy.addr, &ca).await;
    let inbound_failing = strict_inbound(failing.addr, &ca).await;
    // Probes that start before the outbound proxy has its certificate go in plaintext
    // and are refused; the ones after must reach the applications over mTLS.
    let cart = mtls::id("cart");
    let endpoints: Vec<String> = [&inbound_healthy, &inbound_failing]
        .iter()
        .map(|p| {
            let addr = p.listener_addr("inbound").expect("inbound");
            format!(r#"{{address: "{addr}", identity: "{cart}"}}"#)
        })
        .collect();
    let settings = "{healthCheck: {path: /healthz, interval: 20ms, unhealthyThreshold: 2}, outlierDetection: {enabled: false}}";
    let outbound = start_proxy_to(&endpoints, "", settings).await;
    let web = mtls::id("web");
    outbound
        .set_identity(mtls::store(&ca, &web))
        .expect("identity");

    // Probes in plaintext would be refused by both callees, leaving both out and so
    // both in; over mTLS the failing one answers 503 and is left out.
    assert_eventually!(
        four_ok(&outbound).await,
        "the failing endpoint was never left out"
    );
    let web = web.to_string();
    for app in [&healthy, &failing] {
        let seen = probes(app);
        assert!(!seen.is_empty(), "no probe reached the application");
        assert!(
            seen.iter()
                .all(|peer| peer.as_deref() == Some(web.as_str())),
            "probes came from {seen:?}"
        );
    }
}
