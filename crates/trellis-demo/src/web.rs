//! `web`: the shop's front end, HTTP/1.1, built from what `books` answers.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /` | an HTML page listing every book with its stars and the ratings version |
//! | `GET /api/products` | `[{"id", "title"}…]` |
//! | `GET /api/products/{id}` | `{"id", "title", "rating": {"stars", "version"} or null}` |
//!
//! When books cannot be reached the answer is 502 with `{"error": "…"}` (an HTML
//! page for `/`); a book books does not have is 404.

use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
// One HTML escaping for every page Trellis renders.
use trellis_dashboard::html::esc;

use crate::catalog::{Book, BookSummary};
use crate::httpkit::{self, CallError, JsonClient, Response};

/// How long a call to books may take; books itself gives ratings two seconds.
const BOOKS_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves web on `listen`, calling books at `books` (in the mesh, the local upstream
/// port of the sidecar), until the task is dropped.
pub async fn serve_web(listen: SocketAddr, books: impl fmt::Display) -> io::Result<()> {
    serve_web_on(TcpListener::bind(listen).await?, books).await
}

/// [`serve_web`] on a bound listener.
pub async fn serve_web_on(listener: TcpListener, books: impl fmt::Display) -> io::Result<()> {
    let state = Arc::new(State {
        books: format!("http://{books}"),
        client: JsonClient::new(BOOKS_TIMEOUT),
    });
    httpkit::serve(listener, "web", move |req| handle(state.clone(), req)).await;
    Ok(())
}

/// What every request of web shares.
struct State {
    /// `http://ADDR` of books, without a trailing `/`.
    books: String,
    client: JsonClient,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response {
    if let Some(refused) = httpkit::only_get(&req) {
        return refused;
    }
    let path = req.uri().path().to_string();
    match path.trim_end_matches('/') {
        "" => page(&state).await,
        "/api/products" => match state.list().await {
            Ok(list) => httpkit::json(StatusCode::OK, &list),
            Err(e) => failed(&e),
        },
        other => match other.strip_prefix("/api/products/") {
            Some(id) => product(&state, id).await,
            None => httpkit::error(
                StatusCode::NOT_FOUND,
                format!("no such path {path:?}; try / or /api/products/1"),
            ),
        },
    }
}

async fn product(state: &State, id: &str) -> Response {
    let url = format!("{}/books/{id}", state.books);
    match state.client.get_json::<Book>(&url).await {
        Ok(book) => httpkit::json(StatusCode::OK, &book),
        Err(CallError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
            httpkit::error(StatusCode::NOT_FOUND, format!("no product {id}"))
        }
        Err(CallError::Status { status, .. }) if status == StatusCode::BAD_REQUEST => {
            httpkit::error(
                StatusCode::BAD_REQUEST,
                format!("product id {id:?} is not a number"),
            )
        }
        Err(e) => failed(&e),
    }
}

/// The HTML page: every book, each with its rating.
async fn page(state: &State) -> Response {
    let list = match state.list().await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "books failed");
            let body = format!(
                "<!doctype html>\n<title>Bookshop</title>\n<h1>Bookshop</h1>\n<p>books is unavailable: {}</p>\n",
                esc(&e.to_string())
            );
            return httpkit::html(StatusCode::BAD_GATEWAY, body);
        }
    };
    let mut rows = String::new();
    for summary in list {
        let url = format!("{}/books/{}", state.books, summary.id);
        let rating = match state.client.get_json::<Book>(&url).await {
            Ok(Book {
                rating: Some(r), ..
            }) => format!("{} ({})", "★".repeat(r.stars as usize), esc(&r.version)),
            Ok(_) => "no rating right now".to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "books failed");
                "unavailable".to_string()
            }
        };
        let _ = writeln!(
            rows,
            "<tr><td><a href=\"/api/products/{id}\">{title}</a></td><td>{rating}</td></tr>",
            id = summary.id,
            title = esc(&summary.title),
        );
    }
    let body = format!(
        "<!doctype html>\n<title>Bookshop</title>\n<h1>Bookshop</h1>\n\
         <p>web → books (HTTP) → ratings (gRPC), every call through the Trellis mesh.</p>\n\
         <table>\n<tr><th>Book</th><th>Rating</th></tr>\n{rows}</table>\n"
    );
    httpkit::html(StatusCode::OK, body)
}

fn failed(e: &CallError) -> Response {
    tracing::warn!(error = %e, "books failed");
    httpkit::error(StatusCode::BAD_GATEWAY, format!("books failed: {e}"))
}

// === impl State ===

impl State {
    async fn list(&self) -> Result<Vec<BookSummary>, CallError> {
        let url = format!("{}/books", self.books);
        self.client.get_json(&url).await
    }
}
