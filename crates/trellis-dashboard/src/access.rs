//! Who may see what, the API's rule kept: reads are open to a browser on the control
//! plane's own machine and need the admin token from anywhere else; the live tap needs
//! the token always.
//!
//! The dashboard asks the API over loopback, where the API lets every read through, so
//! it must enforce the rule itself. A browser proves it holds the token by signing in:
//! the form's token is checked by the API (a tap that ends at once, which the API only
//! starts for the admin token), then kept in an HttpOnly, SameSite=Strict cookie and
//! sent on as `Authorization: Bearer` with every API call. Tokens the API accepted are
//! remembered for a short while so that every page does not cost an extra call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::html::{esc, layout, Section};
use crate::Dashboard;

/// The cookie that holds the admin token.
const COOKIE: &str = "trellis_dashboard_token";
/// How long a token the API accepted is trusted before it is checked again.
const TRUSTED_FOR: Duration = Duration::from_secs(60);

/// The browser behind a request, as far as access goes.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The browser runs on the control plane's machine.
    pub local: bool,
    /// The admin token, when the browser signed in and the API accepts it.
    pub token: Option<String>,
}

impl Viewer {
    /// Whether this browser may read the mesh.
    pub fn may_read(&self) -> bool {
        self.local || self.token.is_some()
    }

    pub fn signed_in(&self) -> bool {
        self.token.is_some()
    }

    /// The token to send the API.
    pub fn bearer(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// A [`Viewer`] that may read the mesh; any other browser is answered with the
/// sign-in form, which brings it back to the page it asked for.
pub struct Reader(pub Viewer);

impl FromRequestParts<Arc<Dashboard>> for Reader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(viewer) = Viewer::from_request_parts(parts, dashboard).await;
        if viewer.may_read() {
            return Ok(Reader(viewer));
        }
        Err(sign_in_required(
            &parts.uri.to_string(),
            "Reading the mesh from another host needs the admin token, as the control plane's API does.",
        ))
    }
}

impl FromRequestParts<Arc<Dashboard>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        // Without the peer address (a router served without connect info) the browser
        // counts as remote, as the API counts it.
        let local = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
        let token = match cookie_token(&parts.headers) {
            Some(token) if dashboard.access.accepts(dashboard, &token).await => Some(token),
            _ => None,
        };
        Ok(Viewer { local, token })
    }
}

/// The token of the dashboard's cookie, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The tokens the API accepted lately.
#[derive(Default)]
pub struct Access {
    trusted: Mutex<Option<(String, Instant)>>,
}

impl Access {
    /// Whether the API accepts `token` as the admin token.
    async fn accepts(&self, dashboard: &Dashboard, token: &str) -> bool {
        if self.recently_trusted(token) {
            return true;
        }
        // A tap that asks for nothing: the API checks the token before anything else
        // and, with `limit=0`, ends the stream at once.
        let answer = dashboard
            .api
            .open("/api/v1/tap?service=-&limit=0&duration=1s", Some(token))
            .await;
        let accepted = matches!(&answer, Ok(r) if !matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN));
        if accepted {
            if let Ok(mut trusted) = self.trusted.lock() {
                *trusted = Some((token.to_owned(), Instant::now()));
            }
        }
        accepted
    }

    fn recently_trusted(&self, token: &str) -> bool {
        let Ok(trusted) = self.trusted.lock() else {
            return false;
        };
        trusted.as_ref().is_some_and(|(known, at)| {
            at.elapsed() < TRUSTED_FOR && same_token(known.as_bytes(), token.as_bytes())
        })
    }
}

/// Compares in time that depends only on the lengths.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a browser that may not see a page: the sign-in form, coming back to
/// `next` afterwards.
pub fn sign_in_required(next: &str, why: &str) -> Response {
    let mut response = sign_in_form(next, why, false);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

fn sign_in_form(next: &str, why: &str, failed: bool) -> Response {
    let error = if failed {
        "<p class=\"error\">The control plane did not accept that token.</p>"
    } else {
        ""
    };
    let body = format!(
        "<section class=\"card narrow\"><p>{why}</p>{error}\
<form method=\"post\" action=\"/dashboard/sign-in\" class=\"sign-in\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label>Admin token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label>\
<button type=\"submit\">Sign in</button></form>\
<p class=\"muted\">The token is in the control plane's data directory (<code>admin-token</code>). \
It stays in this browser as an HttpOnly cookie; the dashboard never changes the mesh.</p></section>",
        why = esc(why),
        next = esc(next),
    );
    layout(Section::SignIn, "Sign in", false, &body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /dashboard/sign-in`
pub(crate) async fn sign_in_page(Query(query): Query<NextQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    sign_in_form(
        next,
        "Sign in with the admin token to read the mesh from another host and to tap live requests.",
        false,
    )
}

/// `POST /dashboard/sign-in` with `token` and `next`, form-encoded.
pub(crate) async fn sign_in(State(dashboard): State<Arc<Dashboard>>, body: String) -> Response {
    let mut token = String::new();
    let mut next = String::new();
    for (key, value) in form_urlencoded::parse(body.as_bytes()) {
        match &*key {
            "token" => token = value.trim().to_owned(),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    let next = safe_next(Some(&next));
    // A token with characters a cookie cannot carry is no admin token.
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"');
    if !cookie_safe || !dashboard.access.accepts(&dashboard, &token).await {
        let mut response = sign_in_form(next, "Sign in with the admin token.", true);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = format!("{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

/// `POST /dashboard/sign-out`
pub(crate) async fn sign_out() -> Response {
    let cookie = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard/")).into_response()
}

/// Where to go after signing in: a dashboard page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/dashboard/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/dashboard/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_from_the_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=b; trellis_dashboard_token=s3cret; c=d"
                .parse()
                .expect("header"),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("s3cret"));
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn comes_back_only_to_dashboard_pages() {
        assert_eq!(
            safe_next(Some("/dashboard/tap?service=web")),
            "/dashboard/tap?service=web"
        );
        assert_eq!(safe_next(Some("https://elsewhere.example/")), "/dashboard/");
        assert_eq!(
            safe_next(Some("//elsewhere.example/dashboard/")),
            "/dashboard/"
        );
        assert_eq!(safe_next(None), "/dashboard/");
    }
}
