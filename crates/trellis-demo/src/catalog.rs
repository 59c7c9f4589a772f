//! The bookshop's stock: a fixed list of books, and the JSON shapes `books` and `web`
//! answer with.

use serde::{Deserialize, Serialize};

/// Every book the shop sells, by id.
pub const BOOKS: &[(u32, &str)] = &[
    (1, "The Rust Programming Language"),
    (2, "Designing Data-Intensive Applications"),
    (3, "Site Reliability Engineering"),
    (4, "The Pragmatic Programmer"),
];

/// The title of book `id`, if the shop has it.
pub fn title(id: u32) -> Option<&'static str> {
    BOOKS.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
}

/// One book with its rating: `{"id": 1, "title": "…", "rating": {"stars": 4,
/// "version": "v1"}}`, `"rating": null` when ratings could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub id: u32,
    pub title: String,
    pub rating: Option<BookRating>,
}

/// A rating as books reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookRating {
    /// 1 to 5.
    pub stars: u32,
    /// The ratings version that answered (`v1`, `v2`).
    pub version: String,
}

/// One entry of `GET /books`: `{"id": 1, "title": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSummary {
    pub id: u32,
    pub title: String,
}

/// Every book, without ratings.
pub fn summaries() -> Vec<BookSummary> {
    BOOKS
        .iter()
        .map(|(id, title)| BookSummary {
            id: *id,
            title: (*title).to_string(),
        })
        .collect()
}
