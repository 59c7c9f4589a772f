//! Zone preference driven by the proxy's own view of health: requests stay in the
//! caller's zone while enough of it passes its health checks, spill over in proportion
//! as it stops passing them, and all leave when none of it is left.

use std::net::SocketAddr;

use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};

use super::balancers::{one_backend, served_by};
use super::recorder::{Answer, Recorder};
use super::{start, url};

/// A backend over `(address, zone)` endpoints that prefers zone `a`, with health checks
/// every 20 ms and outlier detection off, so health is decided by the checks alone.
fn config(endpoints: &[(SocketAddr, &str)], min_healthy: u32) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(a, zone)| format!("{{address: \"{a}\", zone: {zone}}}"))
        .collect();
    let more = format!(
        "    locality: {{zone: a, minHealthyPercent: {min_healthy}}}
    resilience:
      healthCheck: {{path: /, interval: 20ms, unhealthyThreshold: 2}}
      outlierDetection: {{enabled: false}}
"
    );
    one_backend("round-robin", &endpoints, &more)
}

async fn server(name: &str) -> HttpServer {
    HttpServer::start(name, ServerProtocol::Http1)
        .await
        .expect("server")
}

#[tokio::test]
async fn requests_stay_in_a_healthy_zone() {
    let (a1, a2, b) = (server("a1").await, server("a2").await, server("b").await);
    let endpoints = [(a1.addr(), "a"), (b.addr(), "b"), (a2.addr(), "a")];
    let proxy = start(&config(&endpoints, 70)).await;
    let counts = served_by(&HttpClient::http1(), &url(&proxy, "/"), 100).await;
    assert_eq!(counts.get("a1"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("a2"), Some(&50), "{counts:?}");
}

#[tokio::test]
async fn a_zone_losing_health_sends_a_share_then_everything_elsewhere() {
    let failing = Recorder::start(Answer::Status(503)).await;
    let (a2, b) = (server("a2").await, server("b").await);
    let endpoints = [(failing.addr, "a"), (a2.addr(), "a"), (b.addr(), "b")];
    let client = HttpClient::http1();

    // Half of zone a healthy, 50 % required: all requests stay with a2.
    let proxy = start(&config(&endpoints, 50)).await;
    assert_eventually!(
        served_by(&client, &url(&proxy, "/"), 20).await.get("a2") == Some(&20),
        "the failing endpoint was never left out"
    );
    let counts = served_by(&client, &url(&proxy, "/"), 200).await;
    assert_eq!(counts.get("a2"), Some(&200), "{counts:?}");

    // 70 % required: the zone keeps 50/70 of the requests, the rest go to zone b.
    let proxy = start(&config(&endpoints, 70)).await;
    assert_eventually!(
        !served_by(&client, &url(&proxy, "/"), 20)
            .await
            .contains_key("failed"),
        "the failing endpoint was never left out"
    );
    let counts = served_by(&client, &url(&proxy, "/"), 1000).await;
    let kept = counts.get("a2").copied().unwrap_or(0);
    assert!((610..=820).contains(&kept), "{counts:?}");
    assert_eq!(
        kept + counts.get("b").copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );

    // Zone a with nothing healthy: everything goes to zone b.
    let endpoints = [(failing.addr, "a"), (b.addr(), "b")];
    let proxy = start(&config(&endpoints, 70)).await;
    assert_eventually!(
        served_by(&client, &url(&proxy, "/"), 20).await.get("b") == Some(&20),
        "zone a was never failed over"
    );
}
