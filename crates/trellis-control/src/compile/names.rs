//! The names the compiler gives listeners and backends, and the creation-time order
//! that breaks ties between routes and policies.
//!
//! The proxy accepts listener and backend names of 1 to 63 letters, digits, '-', '_'
//! or '.'. Resource names are DNS labels, so `<service>.<namespace>` and
//! `outbound-<namespace>-<service>` only use allowed characters, but together they can
//! exceed 63 characters, and a proxy's `Hello` may name anything. [`config_name`] keeps
//! every name acceptable and stable: a name that does not fit is cut and given a hash of
//! the full name, so distinct inputs stay distinct.

use std::cmp::Ordering;

use trellis_api::proto::v1::{path_match, value_match, RouteMatch};

use super::ServiceKey;

/// Longest listener or backend name the proxy accepts.
pub const MAX_NAME_LEN: usize = 63;

/// Hex digits of the hash appended to a name that had to be shortened or cleaned.
const HASH_DIGITS: usize = 8;

/// The backend that sends a Service's traffic to its workloads:
/// `<service>.<namespace>` (`ratings.bookinfo`), read like a DNS name.
///
/// A dot never appears in a DNS label, so these names cannot collide with each other or
/// with [`super::LOCAL_APP_BACKEND`].
pub fn backend_name(service: &ServiceKey) -> String {
    config_name(&format!("{}.{}", service.name, service.namespace))
}

/// The listener for calls to a Service through a local port:
/// `outbound-<namespace>-<service>` (`outbound-bookinfo-ratings`).
pub fn outbound_listener_name(service: &ServiceKey) -> String {
    config_name(&format!("outbound-{}-{}", service.namespace, service.name))
}

/// DNS suffix of mesh service names: `<service>.<namespace>.svc.<this>`.
pub const MESH_DOMAIN: &str = "trellis.local";

/// The host names a caller in `namespace` may use for `service`: its short name (in
/// the caller's own namespace only), `<service>.<namespace>`, and
/// `<service>.<namespace>.svc.trellis.local`.
pub fn service_hosts(service: &ServiceKey, namespace: &str) -> Vec<String> {
    let qualified = format!("{}.{}", service.name, service.namespace);
    let full = format!("{qualified}.svc.{MESH_DOMAIN}");
    if service.namespace == namespace {
        vec![service.name.clone(), qualified, full]
    } else {
        vec![qualified, full]
    }
}

/// Whether the proxy accepts `name` for a listener or backend: 1 to 63 letters, digits,
/// '-', '_' or '.'. The same rule as the proxy's own configuration check.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `raw` if the proxy accepts it as a name; otherwise `raw` with every other character
/// replaced by '-', cut to fit, and suffixed with `-` and a hash of `raw`.
pub fn config_name(raw: &str) -> String {
    if is_valid_name(raw) {
        return raw.to_string();
    }
    let keep = MAX_NAME_LEN - HASH_DIGITS - 1;
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(keep)
        .collect();
    name.push('-');
    name.push_str(&format!("{:08x}", fnv1a(raw.as_bytes()) as u32));
    name
}

/// 64-bit FNV-1a. Chosen over `std`'s hasher because its output is fixed by definition:
/// a name must not change between builds or between control-plane replicas, or every
/// proxy would be sent a "new" configuration.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// When an object was created, for "oldest first" tie-breaking as the Gateway API does.
/// Objects without a readable `creationTimestamp` sort after every object with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created(Option<(i64, u32)>);

impl Created {
    /// Reads an RFC 3339 `metadata.creationTimestamp`.
    pub fn parse(timestamp: Option<&str>) -> Self {
        Self(timestamp.and_then(parse_rfc3339))
    }
}

impl Ord for Created {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

impl PartialOrd for Created {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Seconds since the Unix epoch and nanoseconds of an RFC 3339 time
/// (`2026-11-05T10:00:00Z`, `2026-11-05T11:00:00.5+01:00`). Timestamps are compared as
/// instants, not as strings, so that fractions and offsets order correctly.
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep = |at: usize, want: &[u8]| s.as_bytes().get(at).is_some_and(|c| want.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Nanosecond precision is enough to order; further digits are ignored.
        for (i, c) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
        }
        nanos *= 10u32.pow(9u32.saturating_sub(digits as u32));
        rest = &frac[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(s.len() - 5, s.len() - 3)? * 60 + num(s.len() - 2, s.len())?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A route's match in one line, as `trellis describe` and the compiler's tests show it:
/// `exact:/a`, `prefix:/b` or `regex:x`, then `h:name=value` or `h:name~regex` per
/// header, `q:…` per query parameter, `m:GET`, `host:a,b`; `*` for every request.
pub fn describe_match(m: Option<&RouteMatch>) -> String {
    let Some(m) = m else {
        return "*".to_string();
    };
    let mut parts = Vec::new();
    if let Some(kind) = m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        parts.push(match kind {
            path_match::Kind::Exact(p) => format!("exact:{p}"),
            path_match::Kind::Prefix(p) => format!("prefix:{p}"),
            path_match::Kind::Regex(p) => format!("regex:{p}"),
        });
    }
    for (tag, list) in [("h", &m.headers), ("q", &m.query)] {
        for v in list {
            parts.push(match &v.kind {
                Some(value_match::Kind::Exact(x)) => format!("{tag}:{}={x}", v.name),
                Some(value_match::Kind::Regex(x)) => format!("{tag}:{}~{x}", v.name),
                None => format!("{tag}:{}?", v.name),
            });
        }
    }
    if !m.method.is_empty() {
        parts.push(format!("m:{}", m.method));
    }
    if !m.hosts.is_empty() {
        parts.push(format!("host:{}", m.hosts.join(",")));
    }
    if parts.is_empty() {
        "*".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_proxy_rule() {
        let long = "a".repeat(63);
        let cases = [
            ("ratings.bookinfo", "ratings.bookinfo"),
            ("outbound-default-web", "outbound-default-web"),
        ];
        for (raw, want) in cases {
            assert_eq!(config_name(raw), want);
        }
        for raw in [
            format!("{long}.{long}"),
            "books/default".to_string(),
            String::new(),
            "ünïcode".to_string(),
        ] {
            let name = config_name(&raw);
            assert!(is_valid_name(&name), "{raw:?} gave {name:?}");
            assert_eq!(name, config_name(&raw), "stable");
        }
        // Cut names stay distinct.
        assert_ne!(
            config_name(&format!("{long}.x")),
            config_name(&format!("{long}.y"))
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn creation_times_order_as_instants() {
        let t = |s: &str| Created::parse(Some(s));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)), "epoch");
        assert_eq!(
            parse_rfc3339("2026-11-05T10:05:06Z"),
            Some((1_793_873_106, 0))
        );
        assert_eq!(
            parse_rfc3339("2026-11-05T11:05:06.25+01:00"),
            Some((1_793_873_106, 250_000_000))
        );
        assert!(t("2026-11-05T10:00:00Z") < t("2026-11-05T10:00:00.1Z"));
        assert!(t("2026-11-05T10:00:00+01:00") < t("2026-11-05T09:30:00Z"));
        assert!(t("2026-11-05T10:00:00Z") < Created::parse(None));
        assert!(t("2026-11-05T10:00:00Z") < t("not a time"));
        assert_eq!(Created::parse(None), t("2026-13-01T00:00:00Z"));
    }
}
