//! `trellis demo`: a sample bookshop run under the mesh, and the command that starts
//! it all.
//!
//! The bookshop is three small services, each its own process under `trellis run`:
//!
//! ```text
//! loadgen ──HTTP──► web ──HTTP──► books ──gRPC──► ratings (v1: 4 stars, v2: 5 stars)
//! ```
//!
//! - [`ratings`]: the gRPC service `trellis.demo.Ratings/Get`; the version it reports,
//!   and so its stars, come from a flag, which makes a canary visible in every answer.
//! - [`books`]: HTTP/1.1 JSON, `GET /books/{id}`, asking ratings for each book; when
//!   ratings fails it still answers, with `"rating": null`.
//! - [`web`]: an HTML page of the books and `GET /api/products/{id}` as JSON, from books.
//! - [`load`]: a light, bounded traffic generator (at most [`load::MAX_RPS`] requests a
//!   second) that counts successes, failures and the ratings versions it saw.
//!
//! Every call between them goes through the caller's sidecar: an app only knows the
//! local upstream port `trellis run --upstream SERVICE:PORT` gave it.
//!
//! [`DemoApp`] is `trellis demo-app ROLE`, one role per process; [`run_demo`] is
//! `trellis demo`: a control plane in-process (serving the dashboard of
//! `trellis-dashboard` beside its API), the five workloads as child processes of
//! the `trellis` binary, the bookshop's Services and routes, and a clean stop.
//!
//! Talks to the control plane only through its HTTP API (after starting it); must not
//! depend on `trellis-proxy` or the CLI crate.

mod app;
pub mod books;
pub mod catalog;
mod demo;
mod httpkit;
pub mod load;
pub mod ratings;
pub mod web;

pub use crate::app::{run_app, DemoApp, Listen, Role};
pub use crate::books::serve_books;
pub use crate::demo::{run_demo, DemoSettings, CANARY_YAML, MESH_YAML};
pub use crate::load::{generate_load, LoadCounters, LoadReport};
pub use crate::ratings::serve_ratings;
pub use crate::web::serve_web;

#[cfg(test)]
mod tests;
