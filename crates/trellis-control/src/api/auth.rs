//! Who may call what: anything that changes state needs the admin token, from any peer;
//! reads are open to loopback peers (the CLI and dashboard on the control plane's own
//! machine) and need the token from anywhere else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

const WRITE_NEEDS_TOKEN: &str =
    "this endpoint needs the admin token: Authorization: Bearer <admin token>";
const REMOTE_READ_NEEDS_TOKEN: &str =
    "reads from other hosts need the admin token: Authorization: Bearer <admin token>";

/// Lets the request through if the peer may make it; answers 401 (no token) or 403 (a
/// wrong token) otherwise.
pub(super) async fn require(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    let local = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
    if !write && local {
        return next.run(request).await;
    }
    match bearer(&request) {
        None if write => ApiError::Unauthorized(WRITE_NEEDS_TOKEN.into()).into_response(),
        None => ApiError::Unauthorized(REMOTE_READ_NEEDS_TOKEN.into()).into_response(),
        Some(given) if tokens_match(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::Forbidden.into_response(),
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case).
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares in time that depends only on the lengths, so the answer time does not
/// reveal how much of a guess was right. An empty expected token matches nothing.
pub(crate) fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() || given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        let cases: [(&str, &str, bool); 5] = [
            ("abc", "abc", true),
            ("abd", "abc", false),
            ("ab", "abc", false),
            ("abcd", "abc", false),
            ("", "", false),
        ];
        for (given, expected, want) in cases {
            assert_eq!(
                tokens_match(given.as_bytes(), expected.as_bytes()),
                want,
                "{given:?}"
            );
        }
    }
}
