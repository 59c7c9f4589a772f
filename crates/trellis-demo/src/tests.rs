//! The bookshop wired directly, without a mesh: each service calls the next on its real
//! port, as it would call its sidecar's upstream port.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, TestResponse};

use crate::catalog::{Book, BookRating, BookSummary};
use crate::load::{generate_load, LoadCounters, LoadReport};
use crate::ratings::{serve_ratings_on, RatingsClient};
use crate::{books, load, web};

/// A server task, stopped when dropped.
struct Running {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start<F, Fut>(serve: F) -> Running
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    start_on(TcpListener::bind("127.0.0.1:0").await.expect("bind"), serve)
}

fn start_on<F, Fut>(listener: TcpListener, serve: F) -> Running
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr().expect("addr");
    let serving = serve(listener);
    let task = tokio::spawn(async move {
        serving.await.expect("serves");
    });
    Running { addr, task }
}

async fn ratings(version: &'static str) -> Running {
    start(move |l| async move { serve_ratings_on(l, version).await }).await
}

async fn books(ratings: SocketAddr) -> Running {
    start(move |l| books::serve_books_on(l, ratings)).await
}

async fn web(books: SocketAddr) -> Running {
    start(move |l| web::serve_web_on(l, books)).await
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

async fn get(addr: SocketAddr, path: &str) -> TestResponse {
    HttpClient::http1()
        .get(&format!("http://{addr}{path}"))
        .await
        .expect("answered")
}

fn json<T: serde::de::DeserializeOwned>(rsp: &TestResponse) -> T {
    serde_json::from_slice(&rsp.body).unwrap_or_else(|e| panic!("{e}: {}", rsp.text()))
}

/// The whole shop: ratings v1 ← books ← web.
async fn shop() -> (Running, Running, Running) {
    let r = ratings("v1").await;
    let b = books(r.addr).await;
    let w = web(b.addr).await;
    (r, b, w)
}

#[tokio::test]
async fn ratings_versions_answer_differently() {
    for (version, stars) in [("v1", 4), ("v2", 5)] {
        let server = ratings(version).await;
        let mut client = RatingsClient::new(server.addr).expect("client");
        let rating = client.get(3).await.expect("rated");
        assert_eq!(
            (rating.book_id, rating.stars, rating.version.as_str()),
            (3, stars, version)
        );
    }
}

#[tokio::test]
async fn books_answers_with_the_rating() {
    let r = ratings("v2").await;
    let b = books(r.addr).await;
    let rsp = get(b.addr, "/books/2").await;
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.headers["content-type"], "application/json");
    assert_eq!(
        json::<Book>(&rsp),
        Book {
            id: 2,
            title: "Designing Data-Intensive Applications".into(),
            rating: Some(BookRating {
                stars: 5,
                version: "v2".into()
            }),
        }
    );
    let list: Vec<BookSummary> = json(&get(b.addr, "/books").await);
    assert_eq!(list.len(), crate::catalog::BOOKS.len());
}

#[tokio::test]
async fn books_degrades_when_ratings_is_down() {
    let ratings_addr = closed_port().await;
    let b = books(ratings_addr).await;
    let rsp = get(b.addr, "/books/1").await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
    let body: serde_json::Value = json(&rsp);
    assert_eq!(body["id"], 1);
    assert!(body["rating"].is_null(), "{body}");
    // The rating is back once ratings is.
    let listener = TcpListener::bind(ratings_addr).await.expect("rebind");
    let _ratings = start_on(listener, |l| async move { serve_ratings_on(l, "v1").await });
    assert_eventually!(json::<Book>(&get(b.addr, "/books/1").await)
        .rating
        .is_some());
}

#[tokio::test]
async fn web_answers_products_and_a_page() {
    let (_r, _b, w) = shop().await;
    let product: Book = json(&get(w.addr, "/api/products/1").await);
    assert_eq!(product.title, "The Rust Programming Language");
    assert_eq!(
        product.rating,
        Some(BookRating {
            stars: 4,
            version: "v1".into()
        })
    );
    let list: Vec<BookSummary> = json(&get(w.addr, "/api/products").await);
    assert_eq!(list[0].id, 1);

    let page = get(w.addr, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/html")));
    let html = page.text();
    for want in [
        "<h1>Bookshop</h1>",
        "Site Reliability Engineering",
        "★★★★ (v1)",
    ] {
        assert!(html.contains(want), "{want:?} missing from {html}");
    }
}

#[tokio::test]
async fn mistakes_get_clear_statuses() {
    let (_r, b, w) = shop().await;
    let cases = [
        (
            w.addr,
            "/api/products/99",
            StatusCode::NOT_FOUND,
            "no product 99",
        ),
        (
            w.addr,
            "/api/products/abc",
            StatusCode::BAD_REQUEST,
            "not a number",
        ),
        (w.addr, "/nope", StatusCode::NOT_FOUND, "no such path"),
        (b.addr, "/books/99", StatusCode::NOT_FOUND, "no book 99"),
        (b.addr, "/books/x", StatusCode::BAD_REQUEST, "not a number"),
    ];
    for (addr, path, status, message) in cases {
        let rsp = get(addr, path).await;
        assert_eq!(rsp.status, status, "{path}");
        let body: serde_json::Value = json(&rsp);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(message)),
            "{path}: {body}"
        );
    }
    let posted = HttpClient::http1()
        .post(&format!("http://{}/api/products/1", w.addr), "x")
        .await
        .expect("answered");
    assert_eq!(posted.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn web_answers_502_when_books_is_down() {
    let w = web(closed_port().await).await;
    for path in ["/api/products/1", "/api/products", "/"] {
        let rsp = get(w.addr, path).await;
        assert_eq!(rsp.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(rsp.text().contains("books"), "{path}: {}", rsp.text());
    }
}

#[tokio::test]
async fn the_load_generator_counts_what_it_sees() {
    let (_r, _b, w) = shop().await;
    let counters = LoadCounters::default();
    let enough = async {
        while counters.report().ok < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let target = format!("http://{}", w.addr);
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        generate_load(&target, 10, &counters, enough),
    )
    .await
    .expect("five answers within 10 s");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.versions, [("v1".to_string(), report.ok)].into());

    // Nothing listening: every request fails, none succeeds.
    let counters = LoadCounters::default();
    let target = format!("http://{}", closed_port().await);
    let stop = async {
        while counters.report().failed < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let report = generate_load(&target, 10, &counters, stop).await;
    assert_eq!((report.ok, report.failed), (0, 2));
}

#[tokio::test]
async fn loadgen_serves_its_counts() {
    let (_r, _b, w) = shop().await;
    let target = format!("http://{}", w.addr);
    let l =
        start(move |listener| async move { load::serve_loadgen_on(listener, &target, 10).await })
            .await;
    assert_eventually!(
        HttpClient::http1()
            .get(&format!("http://{}/stats", l.addr))
            .await
            .is_ok_and(|r| serde_json::from_slice::<LoadReport>(&r.body).is_ok_and(|s| s.ok >= 2)),
        "loadgen never reported two successes"
    );
}
