//! Bounded HTTP load for reload and drain tests: a fixed number of workers
//! send GETs and count what succeeded, so a test can assert that no request
//! failed while the proxy changed underneath it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::HttpClient;

/// How many failure descriptions a [`LoadReport`] keeps.
const MAX_ERRORS: usize = 10;

/// The outcome of a load run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered with any other status, or that failed in transport.
    pub failed: u64,
    /// Descriptions of the first few failures (at most ten).
    pub errors: Vec<String>,
}

/// Sends `total` GET requests to `url` with `concurrency` workers using
/// `client`, counting 2xx as ok and anything else (or a transport error) as
/// failed.
pub async fn run_load(
    client: HttpClient,
    url: String,
    concurrency: usize,
    total: u64,
) -> LoadReport {
    drive(client, url, concurrency, total, None).await
}

/// Like [`run_load`], but stops early once `stop` holds `true` (or its
/// sender is dropped), and never sends more than `max_total` requests.
///
/// Workers check `stop` before each request; requests already in flight
/// complete and are counted, so a drain test sees every request it started.
pub async fn run_load_until(
    client: HttpClient,
    url: String,
    concurrency: usize,
    max_total: u64,
    stop: watch::Receiver<bool>,
) -> LoadReport {
    drive(client, url, concurrency, max_total, Some(stop)).await
}

async fn drive(
    client: HttpClient,
    url: String,
    concurrency: usize,
    max_total: u64,
    stop: Option<watch::Receiver<bool>>,
) -> LoadReport {
    let url: Arc<str> = url.into();
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        workers.spawn(worker(
            client.clone(),
            url.clone(),
            issued.clone(),
            max_total,
            stop.clone(),
        ));
    }
    let mut report = LoadReport::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(part) => report.merge(part),
            Err(error) => report.fail(format!("load worker died: {error}")),
        }
    }
    report
}

/// Sends requests until `max_total` have been issued across all workers or
/// `stop` says so.
async fn worker(
    client: HttpClient,
    url: Arc<str>,
    issued: Arc<AtomicU64>,
    max_total: u64,
    stop: Option<watch::Receiver<bool>>,
) -> LoadReport {
    let mut report = LoadReport::default();
    while !stopped(stop.as_ref()) && issued.fetch_add(1, Ordering::SeqCst) < max_total {
        match client.get(&url).await {
            Ok(rsp) if rsp.status.is_success() => report.ok += 1,
            Ok(rsp) => report.fail(format!(
                "{url}: status {}: {}",
                rsp.status,
                rsp.text().trim_end()
            )),
            Err(error) => report.fail(format!("{url}: {error}")),
        }
    }
    report
}

fn stopped(stop: Option<&watch::Receiver<bool>>) -> bool {
    stop.is_some_and(|rx| *rx.borrow() || rx.has_changed().is_err())
}

// === impl LoadReport ===

impl LoadReport {
    fn fail(&mut self, description: String) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(description);
        }
    }

    fn merge(&mut self, other: LoadReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpServer, ServerProtocol};

    #[tokio::test]
    async fn run_load_sends_exactly_total_requests() {
        let server = HttpServer::start("load", ServerProtocol::Auto)
            .await
            .expect("start http server");
        let url = format!("http://{}/", server.addr());
        let report = run_load(HttpClient::http2(), url, 4, 25).await;
        assert_eq!(
            report,
            LoadReport {
                ok: 25,
                failed: 0,
                errors: vec![]
            }
        );
        assert_eq!(server.requests(), 25);
    }

    #[tokio::test]
    async fn run_load_counts_non_2xx_as_failed_and_keeps_few_errors() {
        let server = HttpServer::start("load", ServerProtocol::Http1)
            .await
            .expect("start http server");
        let url = format!("http://{}/status/500", server.addr());
        let report = run_load(HttpClient::http1(), url, 3, 20).await;
        assert_eq!((report.ok, report.failed), (0, 20));
        assert_eq!(report.errors.len(), MAX_ERRORS);
        assert!(report.errors[0].contains("500"), "{:?}", report.errors);
    }

    #[tokio::test]
    async fn run_load_counts_transport_errors_as_failed() {
        let server = HttpServer::start("gone", ServerProtocol::Http1)
            .await
            .expect("start http server");
        let url = format!("http://{}/", server.addr());
        drop(server);
        let report = run_load(HttpClient::http1(), url, 2, 4).await;
        assert_eq!((report.ok, report.failed), (0, 4));
    }

    #[tokio::test]
    async fn run_load_until_stops_when_told() {
        let server = HttpServer::start("load", ServerProtocol::Auto)
            .await
            .expect("start http server");
        let url = format!("http://{}/", server.addr());
        let (stop_tx, stop_rx) = watch::channel(false);
        let load = tokio::spawn(run_load_until(
            HttpClient::http1(),
            url,
            2,
            u64::MAX,
            stop_rx,
        ));
        crate::assert_eventually!(server.requests() >= 10);
        stop_tx.send(true).expect("load still running");
        let report = load.await.expect("load task");
        assert_eq!(report.failed, 0, "{:?}", report.errors);
        assert!(report.ok >= 10);
        assert_eq!(report.ok, server.requests());
    }

    #[tokio::test]
    async fn run_load_until_respects_max_total() {
        let server = HttpServer::start("load", ServerProtocol::Auto)
            .await
            .expect("start http server");
        let url = format!("http://{}/", server.addr());
        let (_stop_tx, stop_rx) = watch::channel(false);
        let report = run_load_until(HttpClient::http2(), url, 3, 7, stop_rx).await;
        assert_eq!((report.ok, report.failed), (7, 0));
    }
}
