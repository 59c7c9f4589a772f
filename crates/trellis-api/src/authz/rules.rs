//! The rules of an authorization policy, the same in the `AuthorizationPolicy` resource
//! and in the compiled form a proxy is given: who the caller is (`from`) and what it
//! asks for (`to`), with their checks.

use serde::{Deserialize, Serialize};

use crate::error::{Checked, ValidationError};
use crate::validate::{self, int_serde};

/// Most rules a policy may hold.
pub const MAX_RULES: usize = 64;
/// Most `from` or `to` entries a rule may hold.
pub const MAX_ENTRIES: usize = 16;
/// Most values one field of an entry may list (identities, ports, paths, …).
pub const MAX_VALUES: usize = 64;
/// Longest identity pattern: a SPIFFE ID is at most 2048 bytes.
const MAX_IDENTITY_LEN: usize = 2048;

/// One rule: it matches a request when any `from` entry matches the caller (or there is
/// none) and any `to` entry matches the request (or there is none). `{}` matches every
/// request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Callers; empty: any caller, with or without an identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    /// Requests; empty: any request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
}

/// A set of callers. Every field given must match (any of its values). A caller without
/// a verified identity (plaintext) matches no entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// SPIFFE IDs (`spiffe://trellis.local/ns/shop/sa/web`), or prefixes of them ending
    /// in `*` (`spiffe://trellis.local/ns/shop/*`); `*` alone is any verified identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Namespaces the caller's identity is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A set of requests. Every field given must match (any of its values). On an opaque TCP
/// connection only `ports` can be known: an entry naming methods, paths or headers never
/// matches in an Allow policy and always matches in a Deny policy, so both fail closed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Ports the application receives the request on (a Service port's `targetPort`).
    #[serde(
        default,
        deserialize_with = "int_serde::port_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "schemars", schemars(inner(range(min = 1))))]
    pub ports: Vec<u16>,
    /// HTTP methods, upper case (`GET`, `POST`; gRPC calls are `POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Request paths, compared after normalization (see [`super::normalize_path`]).
    #[cfg_attr(
        feature = "schemars",
        schemars(description = "Request paths, compared after normalization: \
                                `/public/../admin`, `//admin` and `/%61dmin` are all `/admin`.")
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathPattern>,
    /// Request headers with a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderPattern>,
}

/// A condition on the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathPattern {
    /// The whole path.
    Exact(String),
    /// The path starts with these whole segments: `/api` matches `/api` and `/api/v1`,
    /// not `/apis`.
    Prefix(String),
}

/// A header that must be present with exactly this value (one of its values, when the
/// request repeats it). Names are compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderPattern {
    pub name: String,
    pub value: String,
}

// === checks ===

/// A policy's rule list; `at` is its path (`spec.rules`).
pub(crate) fn check_rules(at: &str, rules: &[Rule]) -> Checked {
    validate::max_items(at, rules, MAX_RULES)?;
    for (i, rule) in rules.iter().enumerate() {
        rule.check(&format!("{at}[{i}]"))?;
    }
    Ok(())
}

impl Rule {
    fn check(&self, at: &str) -> Checked {
        let from = format!("{at}.from");
        validate::max_items(&from, &self.from, MAX_ENTRIES)?;
        for (i, source) in self.from.iter().enumerate() {
            source.check(&format!("{from}[{i}]"))?;
        }
        let to = format!("{at}.to");
        validate::max_items(&to, &self.to, MAX_ENTRIES)?;
        for (i, operation) in self.to.iter().enumerate() {
            operation.check(&format!("{to}[{i}]"))?;
        }
        Ok(())
    }
}

impl Source {
    fn check(&self, at: &str) -> Checked {
        if self.identities.is_empty() && self.namespaces.is_empty() {
            return Err(ValidationError::new(
                at,
                "name identities, namespaces or both; leave `from` out to match any caller",
            ));
        }
        let identities = format!("{at}.identities");
        validate::max_items(&identities, &self.identities, MAX_VALUES)?;
        for (i, pattern) in self.identities.iter().enumerate() {
            identity_pattern(&format!("{identities}[{i}]"), pattern)?;
        }
        let namespaces = format!("{at}.namespaces");
        validate::max_items(&namespaces, &self.namespaces, MAX_VALUES)?;
        for (i, ns) in self.namespaces.iter().enumerate() {
            validate::name(&format!("{namespaces}[{i}]"), ns)?;
        }
        Ok(())
    }
}

impl Operation {
    /// Whether the entry names anything only an HTTP request has.
    pub fn is_http_only(&self) -> bool {
        !(self.methods.is_empty() && self.paths.is_empty() && self.headers.is_empty())
    }

    fn check(&self, at: &str) -> Checked {
        if self.ports.is_empty() && !self.is_http_only() {
            return Err(ValidationError::new(
                at,
                "name ports, methods, paths or headers; leave `to` out to match any request",
            ));
        }
        let ports = format!("{at}.ports");
        validate::max_items(&ports, &self.ports, MAX_VALUES)?;
        for (i, port) in self.ports.iter().enumerate() {
            validate::port(&format!("{ports}[{i}]"), *port)?;
        }
        let methods = format!("{at}.methods");
        validate::max_items(&methods, &self.methods, MAX_VALUES)?;
        for (i, method) in self.methods.iter().enumerate() {
            self::method(&format!("{methods}[{i}]"), method)?;
        }
        let paths = format!("{at}.paths");
        validate::max_items(&paths, &self.paths, MAX_VALUES)?;
        for (i, path) in self.paths.iter().enumerate() {
            match path {
                PathPattern::Exact(p) => validate::path_value(&format!("{paths}[{i}].exact"), p)?,
                PathPattern::Prefix(p) => validate::path_value(&format!("{paths}[{i}].prefix"), p)?,
            }
        }
        let headers = format!("{at}.headers");
        validate::max_items(&headers, &self.headers, MAX_VALUES)?;
        for (i, header) in self.headers.iter().enumerate() {
            let at = format!("{headers}[{i}]");
            validate::header_name(&format!("{at}.name"), &header.name)?;
            validate::header_value(&format!("{at}.value"), &header.value)?;
        }
        Ok(())
    }
}

/// An HTTP method as requests carry it: an upper-case token (`GET`, `PURGE`).
fn method(at: &str, value: &str) -> Checked {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c == b'-' || c == b'_');
    if ok {
        return Ok(());
    }
    Err(ValidationError::new(
        at,
        format!("{value:?} is not an HTTP method: upper-case letters such as GET, POST or DELETE"),
    ))
}

/// An identity pattern: a SPIFFE ID of the mesh's shape
/// (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`), a prefix of one
/// ending in `*`, or `*` alone.
pub(crate) fn identity_pattern(at: &str, value: &str) -> Checked {
    let bad = |why: &str| Err(ValidationError::new(at, format!("{value:?} {why}")));
    if value == "*" {
        return Ok(());
    }
    if value.len() > MAX_IDENTITY_LEN {
        return bad(&format!("is longer than {MAX_IDENTITY_LEN} bytes"));
    }
    if !value.starts_with("spiffe://") {
        return bad("is not an identity pattern: a SPIFFE ID such as \
             \"spiffe://trellis.local/ns/shop/sa/web\", a prefix of one ending in '*', or '*'");
    }
    if value.bytes().any(|c| c.is_ascii_control() || c == b' ') {
        return bad("must not contain spaces or control characters");
    }
    match value.find('*') {
        Some(i) if i + 1 != value.len() => {
            bad("has a '*' before its end: '*' may only end a prefix, as in \"spiffe://trellis.local/ns/shop/*\"")
        }
        Some(_) => Ok(()),
        None if is_spiffe_id(value) => Ok(()),
        None => bad(
            "is not a SPIFFE ID of the mesh: expected \
             spiffe://<trust domain>/ns/<namespace>/sa/<service account>, or a prefix ending in '*'",
        ),
    }
}

/// Whether `value` has the shape of a workload's SPIFFE ID.
fn is_spiffe_id(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("spiffe://") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    matches!(
        parts.as_slice(),
        [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty()
    )
}
