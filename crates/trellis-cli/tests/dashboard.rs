//! The dashboard end to end, in headless Chromium: `trellis demo` (a real control plane,
//! the bookshop's workloads and sidecars, light load), then every page loaded in the
//! browser and checked against what `trellis stat` says for the same window, the demo's
//! calls in the topology, tap rows arriving once signed in, and a screenshot of each
//! page saved under `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::HttpClient;

use support::control::Control;
use support::demo::{synced_proxies, token, trellis, Demo};
use support::webdriver::Browser;

/// How long the figures of a page may take to agree with `trellis stat`: the
/// figures move with every scrape, so the page and the command are compared until
/// both read the same scrape.
const AGREE_WITHIN: Duration = Duration::from_secs(20);

/// The rows of the overview's table, as the browser shows them.
const OVERVIEW_ROWS: &str = r##"
return Array.from(document.querySelectorAll("#services tbody tr[data-service]")).map(function (row) {
  function cell(c) { return row.querySelector("td." + c).textContent.trim(); }
  return { service: row.dataset.service, success: cell("success"), rps: cell("rps"),
           p50: cell("p50"), p99: cell("p99"), workloads: row.querySelector("td.workloads").textContent.trim() };
});"##;

/// `trellis stat service -o json` for the demo's control plane: `(namespace/name) →
/// [success, rps, p50, p99]`, formatted as its table prints them.
async fn stat_rows(control: &str) -> Vec<(String, [String; 4])> {
    let out = trellis(&["stat", "service", "--control", control, "-o", "json"]).await;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |ms| format!("{ms:.1}ms"));
    answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let key = format!(
                "{}/{}",
                row["namespace"].as_str().unwrap_or_default(),
                row["name"].as_str().unwrap_or_default()
            );
            let success = row["successRate"]
                .as_f64()
                .map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0));
            let rps = format!("{:.1}", row["requestsPerSecond"].as_f64().unwrap_or(0.0));
            (key, [success, rps, ms(&row["p50Ms"]), ms(&row["p99Ms"])])
        })
        .collect()
}

/// Whether every service `trellis stat` reports shows the same four figures on the
/// overview the browser loaded just before.
fn overview_agrees(page: &Value, stat: &[(String, [String; 4])]) -> bool {
    !stat.is_empty()
        && stat.iter().all(|(key, want)| {
            page.as_array().into_iter().flatten().any(|row| {
                row["service"] == key.as_str()
                    && [&row["success"], &row["rps"], &row["p50"], &row["p99"]]
                        .iter()
                        .zip(want)
                        .all(|(shown, want)| shown.as_str() == Some(want.as_str()))
            })
        })
}

#[tokio::test]
async fn the_dashboard_shows_the_demo_mesh_in_a_real_browser() {
    let mut demo = Demo::start();
    let banner = demo.banner().await;
    let control = banner.control.clone();
    let dashboard = format!("{control}/dashboard");
    assert_eventually!(synced_proxies(&control).await >= 5);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let browser = Browser::start().await;

    // `trellis dashboard` names the page the browser is about to load.
    let printed = trellis(&["dashboard", "--control", &control]).await;
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        format!("{dashboard}/")
    );

    // Overview: every demo service, with the figures `trellis stat` shows for the same
    // window, once the load generator's calls have reached ratings.
    let deadline = Instant::now() + AGREE_WITHIN + Duration::from_secs(20);
    let page = loop {
        browser.goto(&format!("{dashboard}/")).await;
        let page = browser.run(OVERVIEW_ROWS, Value::Null).await;
        let stat = stat_rows(&control).await;
        let served = ["default/web", "default/books", "default/ratings"]
            .iter()
            .all(|s| stat.iter().any(|(k, v)| k == s && v[1] != "0.0"));
        if served && overview_agrees(&page, &stat) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the overview {page:#} never agreed with trellis stat {stat:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for service in [
        "default/web",
        "default/books",
        "default/ratings",
        "default/loadgen",
    ] {
        assert!(
            page.as_array()
                .into_iter()
                .flatten()
                .any(|r| r["service"] == service),
            "{service} missing from {page:#}"
        );
    }
    // ratings has both instances; ratings-v1 and ratings-v2 select one each by label.
    for (service, count) in [
        ("default/ratings", '2'),
        ("default/ratings-v1", '1'),
        ("default/ratings-v2", '1'),
    ] {
        let row = page
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["service"] == service)
            .expect(service);
        assert!(
            row["workloads"]
                .as_str()
                .is_some_and(|w| w.starts_with(count)),
            "{row}"
        );
    }
    browser.screenshot(&shots.join("overview.png")).await;

    // Search narrows the table on the server.
    browser.goto(&format!("{dashboard}/?q=ratings")).await;
    let names = browser
        .run("return Array.from(document.querySelectorAll('#services tbody tr[data-service]')).map(r => r.dataset.service);", Value::Null)
        .await;
    let names: Vec<&str> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.contains("ratings")),
        "{names:?}"
    );

    // Service page: the same figures as `trellis stat service books`, its workload
    // synced with its proxy version and certificate, web calling in and ratings out.
    let deadline = Instant::now() + AGREE_WITHIN;
    loop {
        browser
            .goto(&format!("{dashboard}/services/default/books"))
            .await;
        let shown = browser
            .run("return ['success','rps','p50','p99'].map(id => document.getElementById(id).textContent.trim());", Value::Null)
            .await;
        let stat = stat_rows(&control).await;
        let want = stat
            .iter()
            .find(|(k, _)| k == "default/books")
            .map(|(_, v)| json!(v));
        if want.as_ref() == Some(&shown) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "books shows {shown} where trellis stat says {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let workloads = browser.text("#workloads tbody").await.unwrap_or_default();
    assert!(
        workloads.contains("books-") && workloads.contains("synced") && workloads.contains("0.1.0"),
        "{workloads}"
    );
    assert!(
        workloads.contains("in 23h") || workloads.contains("in 1d"),
        "certificate expiry: {workloads}"
    );
    let inbound = browser.text("#inbound tbody").await.unwrap_or_default();
    let outbound = browser.text("#outbound tbody").await.unwrap_or_default();
    assert!(
        inbound.contains("web") && inbound.contains("mTLS"),
        "{inbound}"
    );
    assert!(
        outbound.contains("ratings") && outbound.contains("mTLS"),
        "{outbound}"
    );
    // The charts refresh by themselves.
    let refreshed = "return Number(document.querySelector('[data-live]').dataset.updates || '0');";
    browser
        .wait_for(
            refreshed,
            1,
            Duration::from_secs(15),
            "the service page's charts refresh",
        )
        .await;
    assert_eq!(browser.count("figure.chart svg").await, 3);

    // The ratings service shows the demo's GRPCRoute, accepted.
    browser
        .goto(&format!("{dashboard}/services/default/ratings"))
        .await;
    let routes = browser.text("#routes tbody").await.unwrap_or_default();
    assert!(
        routes.contains("GRPCRoute") && routes.contains("Accepted"),
        "{routes}"
    );

    // Topology: the demo's calls, over mTLS.
    browser.goto(&format!("{dashboard}/topology")).await;
    for edge in ["loadgen→web", "web→books", "books→ratings"] {
        let label = browser.text(&format!("text[data-edge='{edge}']")).await;
        assert!(
            label
                .as_deref()
                .is_some_and(|l| l.contains("rps") && !l.contains("not mTLS")),
            "{edge}: {label:?}"
        );
    }
    assert_eq!(browser.count("svg.topology .edge.plain").await, 0);
    browser.screenshot(&shots.join("topology.png")).await;

    // Config and identity.
    browser.goto(&format!("{dashboard}/config")).await;
    let grpc_routes = browser
        .text("table[data-kind=GRPCRoute] tbody")
        .await
        .unwrap_or_default();
    assert!(grpc_routes.contains("ratings"), "{grpc_routes}");
    browser.screenshot(&shots.join("config.png")).await;
    browser
        .goto(&format!("{dashboard}/resources/GRPCRoute/default/ratings"))
        .await;
    let yaml = browser.text("#yaml").await.unwrap_or_default();
    assert!(
        yaml.contains("kind: GRPCRoute") && yaml.contains("ratings-v1"),
        "{yaml}"
    );
    browser.screenshot(&shots.join("resource.png")).await;
    browser.goto(&format!("{dashboard}/identity")).await;
    assert_eq!(
        browser.text("#trust-domain").await.as_deref(),
        Some("trellis.local")
    );
    assert!(browser.count("#ca-certs tbody tr").await >= 2);
    assert!(browser.count("#workload-certs tbody tr").await >= 5);
    browser.screenshot(&shots.join("identity.png")).await;

    // Back on books once its charts hold a few samples, for a picture of them.
    browser
        .goto(&format!("{dashboard}/services/default/books"))
        .await;
    let p99_points = "const p = document.querySelector('figure.chart path.line-b'); \
        return p ? p.getAttribute('d').split(/[ML]/).length - 1 : 0;";
    browser
        .wait_for(
            p99_points,
            3,
            Duration::from_secs(30),
            "three samples in the latency chart",
        )
        .await;
    browser.screenshot(&shots.join("service.png")).await;

    // Live tap: the token is needed, even here; signed in, requests stream in.
    browser.goto(&format!("{dashboard}/tap?service=web")).await;
    assert_eq!(
        browser.count("#tap-rows").await,
        0,
        "the tap showed without the token"
    );
    let sign_in = "document.getElementById('token').value = arguments[0]; document.querySelector('form.sign-in').submit();";
    browser.run(sign_in, json!(token(&banner.dir))).await;
    let tap_rows = "return document.querySelectorAll('#tap-rows tbody tr.tap-row').length;";
    browser
        .wait_for(tap_rows, 5, Duration::from_secs(20), "five tap rows arrive")
        .await;
    let row = browser
        .text("#tap-rows tbody tr.tap-row")
        .await
        .unwrap_or_default();
    assert!(row.contains("inbound") || row.contains("outbound"), "{row}");
    browser.screenshot(&shots.join("tap.png")).await;
    eprintln!("screenshots in {}", shots.display());
    drop(browser);
    let status = demo.stop().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn trellis_control_serves_the_dashboard_beside_its_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let control = Control::start(dir.path(), &[]).await;
    let client = HttpClient::http1();
    let url = |path: &str| format!("{}{path}", control.url);
    let page = client
        .get(&url("/dashboard/"))
        .await
        .expect("the dashboard answers");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<h1>Services</h1>"), "{}", page.text());
    let root = client.get(&url("/")).await.expect("an answer");
    assert_eq!(root.status, 303);
    assert_eq!(root.headers["location"], "/dashboard/");
    let css = client
        .get(&url("/dashboard/assets/style.css"))
        .await
        .expect("an answer");
    assert_eq!(css.headers["content-type"], "text/css");
    // The API is still the API, and still wants the token for changes.
    let health = client.get(&url("/api/v1/health")).await.expect("an answer");
    assert_eq!(health.status, 200);
    let write = client
        .post(&url("/api/v1/apply"), "kind: Service")
        .await
        .expect("an answer");
    assert_eq!(write.status, 401);
    let printed = trellis(&["dashboard", "--control", &control.url]).await;
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        format!("{}/dashboard/", control.url)
    );
}
