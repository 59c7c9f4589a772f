//! The pages' building blocks: escaping (every value that comes from the mesh goes
//! through [`esc`] or [`attr`]), the page shell with its navigation bar, and the
//! figures formatted as `trellis stat` prints them, so the two read the same.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The stylesheet and the scripts, served from the binary.
pub const STYLE: &str = include_str!("../assets/style.css");
pub const LIVE_JS: &str = include_str!("../assets/live.js");
pub const TAP_JS: &str = include_str!("../assets/tap.js");

/// `text` safe between tags and inside double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL path segment or query value, escaped for an attribute.
pub fn attr_url(text: &str) -> String {
    esc(&crate::api::encode(text))
}

/// The sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Services,
    Topology,
    Tap,
    Config,
    Identity,
    SignIn,
}

const NAV: [(Section, &str, &str); 5] = [
    (Section::Services, "/dashboard/", "Services"),
    (Section::Topology, "/dashboard/topology", "Topology"),
    (Section::Tap, "/dashboard/tap", "Live tap"),
    (Section::Config, "/dashboard/config", "Config"),
    (Section::Identity, "/dashboard/identity", "Identity"),
];

/// A whole page: `title` (plain text) and `body` (HTML).
pub fn layout(section: Section, title: &str, signed_in: bool, body: &str) -> Response {
    let mut nav = String::new();
    for (s, href, label) in NAV {
        let class = if s == section {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
    }
    let account = if signed_in {
        "<form method=\"post\" action=\"/dashboard/sign-out\" class=\"account\">\
         <span class=\"badge ok\">admin</span><button type=\"submit\">Sign out</button></form>"
    } else {
        "<a class=\"account\" href=\"/dashboard/sign-in\">Sign in</a>"
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Trellis</title><link rel=\"stylesheet\" href=\"/dashboard/assets/style.css\">\
<script src=\"/dashboard/assets/live.js\" defer></script></head>\
<body><header class=\"top\"><a class=\"brand\" href=\"/dashboard/\">Trellis</a><nav>{nav}</nav>{account}</header>\
<main><h1>{title}</h1>{body}</main>\
<footer>Read-only view of the mesh through the control plane's HTTP API · figures over the last {window} as <code>trellis stat</code> shows them</footer>\
</body></html>",
        title = esc(title),
        window = crate::api::WINDOW,
    );
    html_response(StatusCode::OK, html)
}

/// An HTML answer with headers that keep the page from being framed or cached.
pub fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

/// A page that says the API could not answer.
pub fn error_page(section: Section, signed_in: bool, error: &crate::api::ApiError) -> Response {
    let mut response = layout(
        section,
        "Control plane unavailable",
        signed_in,
        &format!("<p class=\"error\">{}</p>", esc(&error.to_string())),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// A success rate as `trellis stat` prints it: `99.50%`, or `-` without requests.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// Requests a second, one decimal.
pub fn rps(value: f64) -> String {
    format!("{value:.1}")
}

/// Milliseconds, one decimal, or `-`.
pub fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"))
}

/// The class that colours a success rate: green from 99 %, amber from 95 %, else red.
pub fn rate_class(rate: Option<f64>) -> &'static str {
    match rate {
        None => "muted",
        Some(r) if r >= 0.99 => "ok",
        Some(r) if r >= 0.95 => "warn",
        Some(_) => "bad",
    }
}

/// A coloured pill.
pub fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// Seconds from now until an RFC 3339 time (negative once past); `None` when it does
/// not parse.
pub fn seconds_until(rfc3339: &str) -> Option<i64> {
    let at = parse_rfc3339(rfc3339)?;
    let now = SystemTime::now();
    Some(match at.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    })
}

/// `2h 5m`, `3d 4h`, `expired`.
pub fn human_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return "expired".to_owned();
    }
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m {}s", seconds % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// An expiry cell: the time left, amber under `warn_below`, red once expired.
pub fn expiry(rfc3339: Option<&str>, warn_below: Duration) -> String {
    let Some(text) = rfc3339 else {
        return "<span class=\"muted\">-</span>".to_owned();
    };
    let Some(left) = seconds_until(text) else {
        return esc(text);
    };
    let warn = i64::try_from(warn_below.as_secs()).unwrap_or(i64::MAX);
    let class = if left <= 0 {
        "bad"
    } else if left < warn {
        "warn"
    } else {
        "ok"
    };
    format!(
        "<span class=\"badge {class}\" title=\"{}\">{}</span>",
        esc(text),
        if class == "ok" {
            format!("in {}", human_duration(left))
        } else if left <= 0 {
            "expired".to_owned()
        } else {
            format!("expires in {}", human_duration(left))
        }
    )
}

/// An RFC 3339 time (what the API writes) as a time.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    trellis_api::meta::parse_rfc3339(text.trim())
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The Kubernetes-shaped `status.conditions` of a resource as badges: green when
/// `True`, red with the reason and message otherwise.
pub fn conditions(resource: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in resource["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let kind = c["type"].as_str().unwrap_or("?");
        let ok = c["status"].as_str() == Some("True");
        let mut title = c["reason"].as_str().unwrap_or_default().to_owned();
        if let Some(message) = c["message"].as_str().filter(|m| !m.is_empty()) {
            title = format!("{title}: {message}");
        }
        let _ = write!(
            out,
            "<span class=\"badge {}\" title=\"{}\">{}</span> ",
            if ok { "ok" } else { "bad" },
            esc(&title),
            esc(kind)
        );
        if !ok && !title.is_empty() {
            let _ = write!(out, "<div class=\"condition-error\">{}</div>", esc(&title));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn formats_as_trellis_stat() {
        assert_eq!(percent(Some(0.995)), "99.50%");
        assert_eq!(percent(None), "-");
        assert_eq!(rps(10.0 / 3.0), "3.3");
        assert_eq!(ms(Some(2.25)), "2.2ms");
        assert_eq!(ms(None), "-");
    }

    #[test]
    fn parses_the_api_times() {
        let at = parse_rfc3339("2026-11-23T08:20:10Z").expect("parses");
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert_eq!(secs, 1_795_422_010);
        assert!(parse_rfc3339("1970-01-01T00:00:00.5Z").is_some());
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn expiry_warns_when_near_and_when_past() {
        let at = |from_now: i64| {
            let now = SystemTime::now();
            let t = if from_now >= 0 {
                now + Duration::from_secs(from_now.unsigned_abs())
            } else {
                now - Duration::from_secs(from_now.unsigned_abs())
            };
            trellis_api::meta::rfc3339(t)
        };
        let hour = Duration::from_secs(3600);
        assert!(expiry(Some(&at(86_400)), hour).contains("badge ok"));
        let near = expiry(Some(&at(600)), hour);
        assert!(
            near.contains("badge warn") && near.contains("expires in"),
            "{near}"
        );
        let past = expiry(Some(&at(-60)), hour);
        assert!(
            past.contains("badge bad") && past.contains("expired"),
            "{past}"
        );
        assert!(expiry(None, hour).contains('-'));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(0), "expired");
        assert_eq!(human_duration(75), "1m 15s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d 1h");
    }
}
