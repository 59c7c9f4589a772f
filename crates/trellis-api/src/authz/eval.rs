//! Evaluation: an [`AuthorizationConfig`] compiled once into an [`Authorizer`], asked
//! about one request's facts at a time.
//!
//! The proxy asks on every request, so evaluation allocates nothing, except to
//! normalize a path that needs it (one holding `//`, `.` or `..` segments, `\` or
//! percent-escapes) when some rule looks at paths. A listener whose authorization has no
//! policies is decided by its default without looking at the request.

use std::borrow::Cow;
use std::sync::Arc;

use super::config::{
    Action, AuthorizationConfig, PolicyConfig, DEFAULT_DECIDER, NO_ALLOW_MATCH_DECIDER,
};
use super::rules::{Operation, PathPattern, Rule, Source};

/// The facts about one request or connection that policies look at.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The caller's verified identity; `None` for plaintext.
    pub peer: Option<Peer<'a>>,
    /// The port the application receives the request on; `None` when unknown.
    pub port: Option<u16>,
    /// `None` for an opaque TCP connection.
    pub http: Option<HttpRequest<'a>>,
}

/// A verified caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer<'a> {
    /// The SPIFFE ID, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub identity: &'a str,
    /// The namespace in the SPIFFE ID.
    pub namespace: &'a str,
}

impl<'a> Peer<'a> {
    /// The caller with this SPIFFE ID; its namespace is read from the ID (empty if the
    /// ID does not have the mesh's shape, so it matches no namespace).
    pub fn from_identity(identity: &'a str) -> Self {
        let namespace = identity
            .strip_prefix("spiffe://")
            .and_then(|rest| {
                let mut parts = rest.split('/');
                let (_td, ns_key, ns) = (parts.next()?, parts.next()?, parts.next()?);
                (ns_key == "ns").then_some(ns)
            })
            .unwrap_or_default();
        Self {
            identity,
            namespace,
        }
    }
}

/// What an HTTP request carries that policies look at.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    pub headers: &'a dyn HeaderLookup,
}

/// Request headers, as whatever holds them can answer.
pub trait HeaderLookup {
    /// Whether header `name` (lower case) has `value` among its values.
    fn has_value(&self, name: &str, value: &str) -> bool;
}

/// Header name and value pairs, as `trellis explain` takes them; names compare
/// case-insensitively.
impl HeaderLookup for Vec<(String, String)> {
    fn has_value(&self, name: &str, value: &str) -> bool {
        self.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    }
}

/// What was decided, and what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub decided_by: DecidedBy<'a>,
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy<'a> {
    /// A rule of a policy matched: a Deny policy's, or, when none did, an Allow
    /// policy's. `index` is the policy's position in the configuration.
    Rule {
        policy: &'a str,
        index: usize,
        rule: usize,
    },
    /// Allow policies exist and none matched.
    NoAllowMatch,
    /// No policy spoke: the default action.
    Default,
}

impl DecidedBy<'_> {
    /// The policy name, or `default` / `no-allow-match`: what metrics, logs and the
    /// `trellis-error` header show.
    pub fn name(&self) -> &str {
        match self {
            DecidedBy::Rule { policy, .. } => policy,
            DecidedBy::NoAllowMatch => NO_ALLOW_MATCH_DECIDER,
            DecidedBy::Default => DEFAULT_DECIDER,
        }
    }
}

/// A compiled [`AuthorizationConfig`].
#[derive(Debug, Clone)]
pub struct Authorizer {
    default: Action,
    port: Option<u16>,
    /// Deny policies, then Allow policies, each in configuration order.
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    /// Every policy name, by position in the configuration.
    names: Vec<Arc<str>>,
    /// Whether some rule looks at paths, so paths are normalized only then.
    uses_paths: bool,
}

#[derive(Debug, Clone)]
struct Policy {
    index: usize,
    name: Arc<str>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    from: Vec<CompiledSource>,
    to: Vec<CompiledOperation>,
}

#[derive(Debug, Clone)]
struct CompiledSource {
    identities: Vec<IdentityPattern>,
    namespaces: Vec<Box<str>>,
}

#[derive(Debug, Clone)]
enum IdentityPattern {
    Exact(Box<str>),
    /// `*` at the end, removed; `*` alone is the empty prefix.
    Prefix(Box<str>),
}

#[derive(Debug, Clone)]
struct CompiledOperation {
    ports: Vec<u16>,
    methods: Vec<Box<str>>,
    paths: Vec<PathPattern>,
    /// Lower-case name, value.
    headers: Vec<(Box<str>, Box<str>)>,
}

// === impl Authorizer ===

impl Authorizer {
    /// Compiles a configuration, which should have passed
    /// [`AuthorizationConfig::validate`]; compiling itself cannot fail.
    pub fn new(config: &AuthorizationConfig) -> Self {
        let mut deny = Vec::new();
        let mut allow = Vec::new();
        let mut names = Vec::with_capacity(config.policies.len());
        for (index, p) in config.policies.iter().enumerate() {
            let policy = Policy::compile(index, p);
            names.push(policy.name.clone());
            match p.action {
                Action::Deny => deny.push(policy),
                Action::Allow => allow.push(policy),
            }
        }
        let uses_paths = config
            .policies
            .iter()
            .flat_map(|p| &p.rules)
            .flat_map(|r| &r.to)
            .any(|o| !o.paths.is_empty());
        Self {
            default: config.default_action,
            port: config.port,
            deny,
            allow,
            names,
            uses_paths,
        }
    }

    /// The action when no policy decides.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The configured application port, which stands for the connection's own port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The policy names, by position in the configuration.
    pub fn policy_names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Whether no policy is configured, so every request gets the default.
    pub fn is_default_only(&self) -> bool {
        self.names.is_empty()
    }

    /// Decides one request: denied if a Deny policy matches; else, when Allow policies
    /// exist, allowed only if one matches; else the default action.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision<'_> {
        let default = Decision {
            allowed: self.default == Action::Allow,
            decided_by: DecidedBy::Default,
        };
        if self.is_default_only() {
            return default;
        }
        let path = match request.http {
            Some(http) if self.uses_paths => Some(normalize_path(http.path)),
            _ => None,
        };
        let facts = Facts {
            request,
            path: path.as_deref(),
        };
        for policy in &self.deny {
            if let Some(rule) = policy.first_match(&facts, Action::Deny) {
                return Decision {
                    allowed: false,
                    decided_by: policy.decided_by(rule),
                };
            }
        }
        if self.allow.is_empty() {
            return default;
        }
        for policy in &self.allow {
            if let Some(rule) = policy.first_match(&facts, Action::Allow) {
                return Decision {
                    allowed: true,
                    decided_by: policy.decided_by(rule),
                };
            }
        }
        Decision {
            allowed: false,
            decided_by: DecidedBy::NoAllowMatch,
        }
    }
}

/// A request with its path normalized once.
struct Facts<'a> {
    request: &'a Request<'a>,
    path: Option<&'a str>,
}

impl Policy {
    fn compile(index: usize, config: &PolicyConfig) -> Self {
        Self {
            index,
            name: config.name.as_str().into(),
            rules: config.rules.iter().map(CompiledRule::compile).collect(),
        }
    }

    fn first_match(&self, facts: &Facts<'_>, action: Action) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(facts, action))
    }

    fn decided_by(&self, rule: usize) -> DecidedBy<'_> {
        DecidedBy::Rule {
            policy: &self.name,
            index: self.index,
            rule,
        }
    }
}

impl CompiledRule {
    fn compile(rule: &Rule) -> Self {
        Self {
            from: rule.from.iter().map(CompiledSource::compile).collect(),
            to: rule.to.iter().map(CompiledOperation::compile).collect(),
        }
    }

    fn matches(&self, facts: &Facts<'_>, action: Action) -> bool {
        let from = self.from.is_empty()
            || facts
                .request
                .peer
                .is_some_and(|peer| self.from.iter().any(|s| s.matches(&peer)));
        from && (self.to.is_empty() || self.to.iter().any(|o| o.matches(facts, action)))
    }
}

impl CompiledSource {
    fn compile(source: &Source) -> Self {
        Self {
            identities: source
                .identities
                .iter()
                .map(|id| match id.strip_suffix('*') {
                    Some(prefix) => IdentityPattern::Prefix(prefix.into()),
                    None => IdentityPattern::Exact(id.as_str().into()),
                })
                .collect(),
            namespaces: source
                .namespaces
                .iter()
                .map(|n| n.as_str().into())
                .collect(),
        }
    }

    fn matches(&self, peer: &Peer<'_>) -> bool {
        let identity = self.identities.is_empty()
            || self.identities.iter().any(|p| match p {
                IdentityPattern::Exact(id) => peer.identity == &**id,
                IdentityPattern::Prefix(prefix) => peer.identity.starts_with(&**prefix),
            });
        let namespace =
            self.namespaces.is_empty() || self.namespaces.iter().any(|ns| peer.namespace == &**ns);
        identity && namespace
    }
}

impl CompiledOperation {
    fn compile(op: &Operation) -> Self {
        Self {
            ports: op.ports.clone(),
            methods: op.methods.iter().map(|m| m.as_str().into()).collect(),
            paths: op.paths.clone(),
            headers: op
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase().into(), h.value.as_str().into()))
                .collect(),
        }
    }

    /// Every field given must match. A fact that is not known (the port of an explained
    /// request, the HTTP fields of a TCP connection) counts as matching in a Deny policy
    /// and as not matching in an Allow policy: both fail closed.
    fn matches(&self, facts: &Facts<'_>, action: Action) -> bool {
        let unknown = action == Action::Deny;
        let request = facts.request;
        let ports = self.ports.is_empty()
            || request
                .port
                .map_or(unknown, |port| self.ports.contains(&port));
        if !ports {
            return false;
        }
        let needs_http =
            !(self.methods.is_empty() && self.paths.is_empty() && self.headers.is_empty());
        if !needs_http {
            return true;
        }
        let Some(http) = request.http else {
            return unknown;
        };
        let methods = self.methods.is_empty() || self.methods.iter().any(|m| **m == *http.method);
        let paths = self.paths.is_empty() || {
            let path = facts.path.unwrap_or(http.path);
            self.paths.iter().any(|p| path_matches(p, path))
        };
        let headers = self.headers.is_empty()
            || self
                .headers
                .iter()
                .any(|(name, value)| http.headers.has_value(name, value));
        methods && paths && headers
    }
}

fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(p) => path == p,
        PathPattern::Prefix(p) => {
            let p = p.as_str();
            if p == "/" {
                return path.starts_with('/');
            }
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || p.ends_with('/') || rest.starts_with('/'))
        }
    }
}

/// The path policies compare: percent-escapes of unreserved characters decoded, `\`
/// read as `/`, repeated `/` merged, and `.` and `..` segments resolved (RFC 3986
/// section 5.2.4), so `/public/../admin`, `//admin` and `/%61dmin` are all checked as
/// `/admin`. Other escapes (`%2F`) are kept. A path needing none of this is returned as
/// is, without allocating.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !needs_normalizing(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let trailing = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "."
        || decoded == "..";
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

fn needs_normalizing(path: &str) -> bool {
    let b = path.as_bytes();
    if !b.starts_with(b"/") || b.contains(&b'%') || b.contains(&b'\\') {
        return !b.is_empty();
    }
    b.windows(2).any(|w| w == b"//") || path.split('/').any(|s| s == "." || s == "..")
}

/// `path` with `\` as `/` and `%XX` escapes of unreserved characters decoded.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 1);
    if !b.starts_with(b"/") && !b.starts_with(b"\\") {
        out.push(b'/');
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => out.push(b'/'),
            b'%' => {
                let decoded = b
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .filter(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
                    });
                match decoded {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the text is still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
