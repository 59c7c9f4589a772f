//! `books`: the catalogue, HTTP/1.1 JSON, with each book's rating asked of `ratings`
//! over gRPC.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /books` | `[{"id", "title"}…]` |
//! | `GET /books/{id}` | `{"id", "title", "rating": {"stars", "version"}}`; `"rating": null` when ratings failed (logged) |
//!
//! An unknown book is 404, an id that is not a number 400, both as `{"error": "…"}`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::catalog::{self, Book, BookRating};
use crate::httpkit::{self, Response};
use crate::ratings::RatingsClient;

/// Serves books on `listen`, asking ratings at `ratings` (in the mesh, the local
/// upstream port of the sidecar), until the task is dropped.
pub async fn serve_books(listen: SocketAddr, ratings: impl fmt::Display) -> io::Result<()> {
    serve_books_on(TcpListener::bind(listen).await?, ratings).await
}

/// [`serve_books`] on a bound listener.
pub async fn serve_books_on(listener: TcpListener, ratings: impl fmt::Display) -> io::Result<()> {
    let ratings = RatingsClient::new(ratings).map_err(io::Error::other)?;
    let state = Arc::new(State { ratings });
    httpkit::serve(listener, "books", move |req| handle(state.clone(), req)).await;
    Ok(())
}

/// What every request of books shares.
struct State {
    ratings: RatingsClient,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response {
    if let Some(refused) = httpkit::only_get(&req) {
        return refused;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    if path == "/books" {
        return httpkit::json(StatusCode::OK, &catalog::summaries());
    }
    match path.strip_prefix("/books/") {
        Some(id) => book(&state, id).await,
        None => httpkit::error(
            StatusCode::NOT_FOUND,
            format!("no such path {path:?}; try /books or /books/1"),
        ),
    }
}

async fn book(state: &State, id: &str) -> Response {
    let Ok(id) = id.parse::<u32>() else {
        return httpkit::error(
            StatusCode::BAD_REQUEST,
            format!("book id {id:?} is not a number"),
        );
    };
    let Some(title) = catalog::title(id) else {
        return httpkit::error(StatusCode::NOT_FOUND, format!("no book {id}"));
    };
    // A page without stars beats no page: a failed rating is logged, not passed on.
    let rating = match state.ratings.clone().get(id).await {
        Ok(r) => Some(BookRating {
            stars: r.stars,
            version: r.version,
        }),
        Err(status) => {
            tracing::warn!(
                book_id = id,
                code = ?status.code(),
                message = status.message(),
                "ratings failed; answering without a rating"
            );
            None
        }
    };
    let book = Book {
        id,
        title: title.to_string(),
        rating,
    };
    httpkit::json(StatusCode::OK, &book)
}
