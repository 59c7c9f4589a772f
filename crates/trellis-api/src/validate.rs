//! Checks shared by every kind: names, labels, hostnames, header names, paths,
//! regular expressions, ports and list lengths. Each returns an error naming the field
//! path, the value and what would be accepted.

use std::collections::BTreeMap;

use crate::error::{Checked, ValidationError};

/// Longest regular expression accepted in a match, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled size limit for a regular expression, in bytes, so a hostile pattern cannot
/// make the control plane or a proxy allocate without bound.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const NAME_RULE: &str = "lowercase letters, digits and '-', at most 63 characters, \
                         starting and ending with a letter or digit";

/// A DNS-1123 label: object names, namespaces, section names.
pub(crate) fn name(path: &str, value: &str) -> Checked {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            path,
            format!("{value:?} is not a valid name: {NAME_RULE}"),
        ))
    }
}

/// An optional name; absent is fine.
pub(crate) fn opt_name(path: &str, value: Option<&str>) -> Checked {
    value.map_or(Ok(()), |v| name(path, v))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of
/// at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
pub(crate) fn label_key(path: &str, key: &str) -> Checked {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    if prefix_ok && is_qualified_name_part(name) {
        return Ok(());
    }
    Err(ValidationError::new(
        path,
        format!(
            "{key:?} is not a valid key: an optional DNS subdomain prefix and '/', then at \
             most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ),
    ))
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Label keys and values; `path` is the map's path (`metadata.labels`).
pub(crate) fn labels(path: &str, map: &BTreeMap<String, String>) -> Checked {
    for (key, value) in map {
        let at = format!("{path}.{key}");
        label_key(&at, key)?;
        if !(value.is_empty() || is_qualified_name_part(value)) {
            return Err(ValidationError::new(
                at,
                format!(
                    "{value:?} is not a valid label value: empty, or at most 63 letters, \
                     digits, '-', '_' or '.', starting and ending with a letter or digit"
                ),
            ));
        }
    }
    Ok(())
}

/// A Gateway API hostname: a DNS subdomain, optionally starting with `*.`; no IP
/// addresses, ports or upper case.
pub(crate) fn hostname(path: &str, value: &str) -> Checked {
    let bare = value.strip_prefix("*.").unwrap_or(value);
    let is_ip = bare.parse::<std::net::IpAddr>().is_ok();
    if !is_ip && is_dns_subdomain(bare) {
        return Ok(());
    }
    Err(ValidationError::new(
        path,
        format!(
            "{value:?} is not a valid hostname: lowercase DNS name such as \"ratings\" or \
             \"*.example.com\", without a port; IP addresses are not allowed"
        ),
    ))
}

/// An HTTP header name: 1 to 256 token characters (RFC 7230).
pub(crate) fn header_name(path: &str, value: &str) -> Checked {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if !value.is_empty() && value.len() <= 256 && value.bytes().all(token) {
        return Ok(());
    }
    Err(ValidationError::new(
        path,
        format!(
            "{value:?} is not a valid header name: 1 to 256 letters, digits or \
             !#$%&'*+-.^_`|~"
        ),
    ))
}

/// An HTTP header value: at most 4096 bytes, no control characters but tab.
pub(crate) fn header_value(path: &str, value: &str) -> Checked {
    let ok = value.len() <= 4096 && value.bytes().all(|c| c == b'\t' || !c.is_ascii_control());
    if ok {
        return Ok(());
    }
    Err(ValidationError::new(
        path,
        "must be at most 4096 bytes without control characters",
    ))
}

/// A request path for an `Exact` or `PathPrefix` match or a rewrite: starts with `/`,
/// and holds no `//`, `/./`, `/../`, `%2f`, `#` or control characters.
pub(crate) fn path_value(path: &str, value: &str) -> Checked {
    let problem = if !value.starts_with('/') {
        Some("must start with '/'")
    } else if value.len() > 1024 {
        Some("must be at most 1024 characters")
    } else if ["//", "/./", "/../", "%2f", "%2F", "#"]
        .iter()
        .any(|bad| value.contains(bad))
        || value.ends_with("/..")
        || value.ends_with("/.")
    {
        Some("must not contain '//', '/./', '/../', '%2f' or '#', nor end in '/.' or '/..'")
    } else if value.bytes().any(|c| c.is_ascii_control() || c == b' ') {
        Some("must not contain spaces or control characters")
    } else {
        None
    };
    match problem {
        Some(why) => Err(ValidationError::new(path, format!("{value:?} {why}"))),
        None => Ok(()),
    }
}

/// A regular expression that compiles (Rust `regex` syntax, close to RE2).
pub(crate) fn regex(path: &str, value: &str) -> Checked {
    if value.len() > MAX_REGEX_LEN {
        return Err(ValidationError::new(
            path,
            format!("regular expression must be at most {MAX_REGEX_LEN} characters"),
        ));
    }
    regex::RegexBuilder::new(value)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let detail = match e {
                regex::Error::Syntax(s) => {
                    let last = s.lines().last().unwrap_or_default().trim();
                    last.strip_prefix("error: ").unwrap_or(last).to_string()
                }
                regex::Error::CompiledTooBig(_) => "pattern is too large".to_string(),
                other => other.to_string(),
            };
            ValidationError::new(
                path,
                format!("{value:?} is not a valid regular expression: {detail}"),
            )
        })
}

/// A port that is set must not be 0 (deserialization refuses 0 too; this covers
/// resources built in code).
pub(crate) fn port(path: &str, value: u16) -> Checked {
    if value == 0 {
        return Err(ValidationError::new(
            path,
            "must be between 1 and 65535, got 0",
        ));
    }
    Ok(())
}

/// An optional port.
pub(crate) fn opt_port(path: &str, value: Option<u16>) -> Checked {
    value.map_or(Ok(()), |p| port(path, p))
}

/// A list holds at most `max` items.
pub(crate) fn max_items<T>(path: &str, items: &[T], max: usize) -> Checked {
    if items.len() > max {
        return Err(ValidationError::new(
            path,
            format!("at most {max} entries are allowed, got {}", items.len()),
        ));
    }
    Ok(())
}

/// Names in a list are unique; `name_of` returns `None` for unnamed items.
pub(crate) fn unique_names<'a, T>(
    path: &str,
    field: &str,
    items: &'a [T],
    name_of: impl Fn(&'a T) -> Option<&'a str>,
) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(n) = name_of(item) {
            if !seen.insert(n) {
                return Err(ValidationError::new(
                    format!("{path}[{i}].{field}"),
                    format!("{n:?} is used by an earlier entry; {field}s must be unique"),
                ));
            }
        }
    }
    Ok(())
}

/// Serde helpers that read ports and weights as any integer and refuse values out of
/// range with a message giving the range (serde's own message for `u16` says only
/// "expected u16").
pub(crate) mod int_serde {
    use serde::de::{Deserializer, Error, Unexpected};
    use serde::Deserialize;

    /// Reads an integer in `min..=max`; `what` describes it for type errors.
    fn ranged<'de, D: Deserializer<'de>>(
        d: D,
        min: i64,
        max: i64,
        what: &str,
    ) -> Result<i64, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let out_of_range = |n: &dyn std::fmt::Display| {
            D::Error::custom(format!("must be between {min} and {max}, got {n}"))
        };
        match (value.as_i64(), value.as_u64()) {
            (Some(n), _) if (min..=max).contains(&n) => Ok(n),
            (Some(n), _) => Err(out_of_range(&n)),
            (None, Some(n)) => Err(out_of_range(&n)),
            (None, None) => Err(D::Error::invalid_type(
                Unexpected::Other(&value.to_string()),
                &format!("{what} between {min} and {max}").as_str(),
            )),
        }
    }

    fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let n = ranged(d, 1, 65535, "a port number")?;
        u16::try_from(n).map_err(D::Error::custom)
    }

    /// A required port, 1 to 65535.
    pub(crate) fn required_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        port(d)
    }

    /// An optional port, 1 to 65535; use with `#[serde(default)]`.
    pub(crate) fn optional_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        port(d).map(Some)
    }

    /// One port of a list, read through [`port`] so that an error names its index.
    struct ListedPort(u16);

    impl<'de> Deserialize<'de> for ListedPort {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            port(d).map(ListedPort)
        }
    }

    /// A list of ports, each 1 to 65535; use with `#[serde(default)]`.
    pub(crate) fn port_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
        let ports = Vec::<ListedPort>::deserialize(d)?;
        Ok(ports.into_iter().map(|p| p.0).collect())
    }

    /// A backend weight, 0 to [`crate::route::MAX_WEIGHT`].
    pub(crate) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let max = i64::from(crate::route::MAX_WEIGHT);
        let n = ranged(d, 0, max, "a weight")?;
        u32::try_from(n).map_err(D::Error::custom)
    }
}

/// Serde helper that reads an IP address with a message naming what was given.
pub(crate) mod ip_serde {
    use std::net::IpAddr;

    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    /// An IPv4 or IPv6 address written as a string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an IP address, e.g. \"10.0.3.17\" or \"fd00::17\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "ratings-v1", "0abc", &"a".repeat(63)] {
            assert!(name("n", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Bad_Name",
            "-a",
            "a-",
            "a.b",
            "UPPER",
            &"a".repeat(64),
            "ä",
        ] {
            assert!(name("n", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "app.kubernetes.io/name", "version", "A_b.c"] {
            assert!(label_key("k", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/app", "Example.com/app", "a/b/c", "-app", "app/"] {
            assert!(label_key("k", bad).is_err(), "{bad}");
        }
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(labels("l", &map("app", "")).is_ok());
        assert!(labels("l", &map("version", "v1.2_3")).is_ok());
        let err = labels("metadata.labels", &map("app", "no spaces")).expect_err("space");
        assert_eq!(err.path, "metadata.labels.app");
    }

    #[test]
    fn hostnames() {
        for ok in ["ratings", "ratings.default.svc", "*.example.com", "a1.b2"] {
            assert!(hostname("h", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "Example.com",
            "a..b",
            "10.0.0.1",
            "ex.com:80",
            "*.*.com",
        ] {
            assert!(hostname("h", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_names_and_paths() {
        for ok in ["x-user", "Content-Type", "x_a.b~"] {
            assert!(header_name("h", ok).is_ok(), "{ok}");
        }
        for bad in ["", "x user", "x:y", "ü"] {
            assert!(header_name("h", bad).is_err(), "{bad}");
        }
        for ok in ["/", "/api", "/api/v1/", "/a.b"] {
            assert!(path_value("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "api", "/a//b", "/a/../b", "/a/.", "/a%2fb", "/a#b", "/a b",
        ] {
            assert!(path_value("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regexes() {
        assert!(regex("r", "^/api/v[0-9]+/.*").is_ok());
        let err = regex("spec.x", "/api/(").expect_err("unclosed");
        assert!(err
            .message
            .starts_with("\"/api/(\" is not a valid regular expression: "));
        assert!(!err.message.contains('\n'), "{}", err.message);
        assert!(regex("r", &"a".repeat(MAX_REGEX_LEN + 1)).is_err());
        assert!(regex("r", "(a{1000}){1000}").is_err());
    }
}
