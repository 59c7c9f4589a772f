//! The compiled form of a Service's authorization, as a proxy holds it on a listener: a
//! default action and named policies. The proxy reads it from its YAML file
//! (`listeners[].authorization`) or from the control plane's `Authorization` message
//! ([`AuthorizationConfig::from_wire`]); [`super::Authorizer`] evaluates it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::rules::{check_rules, HeaderPattern, Operation, PathPattern, Rule, Source};
use crate::error::ValidationError;
use crate::proto::v1 as wire;

/// Longest policy name, in bytes.
const MAX_NAME_LEN: usize = 253;
/// Most policies one listener may hold.
pub const MAX_POLICIES: usize = 256;
/// What the proxy reports when the default action decided.
pub const DEFAULT_DECIDER: &str = "default";
/// What the proxy reports when Allow policies exist and none matched.
pub const NO_ALLOW_MATCH_DECIDER: &str = "no-allow-match";

/// A listener's authorization: policies, and what happens when none decides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// What a request gets when no Deny policy matches and no Allow policy exists.
    /// Default `allow`.
    #[serde(default)]
    pub default_action: Action,
    /// The port rules' `ports` are compared with: the application's port. Unset: the
    /// port the connection arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The policies; their order only decides which one is reported when several match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyConfig>,
}

/// One policy: a name for metrics, logs and the `trellis-error` header, an action, and
/// rules of which any must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique; letters, digits, '-', '_', '.' and '/' (the control plane uses
    /// `namespace/name`).
    pub name: String,
    /// Default `allow`.
    #[serde(default)]
    pub action: Action,
    /// An Allow policy without rules matches nothing; a Deny policy needs one.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

// === checks ===

impl AuthorizationConfig {
    /// Checks what the types alone cannot; error paths start at `at`
    /// (`listeners[0].authorization`).
    pub fn validate(&self, at: &str) -> Result<(), ValidationError> {
        if self.port == Some(0) {
            return Err(ValidationError::new(
                format!("{at}.port"),
                "must be between 1 and 65535, got 0",
            ));
        }
        let list = format!("{at}.policies");
        crate::validate::max_items(&list, &self.policies, MAX_POLICIES)?;
        let mut names = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("{list}[{i}]");
            policy_name(&format!("{at}.name"), &p.name)?;
            if !names.insert(p.name.as_str()) {
                return Err(ValidationError::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} names an earlier policy; policy names must be unique",
                        p.name
                    ),
                ));
            }
            if p.action == Action::Deny && p.rules.is_empty() {
                return Err(ValidationError::new(
                    format!("{at}.rules"),
                    "a deny policy needs at least one rule; `rules: [{}]` denies every request",
                ));
            }
            check_rules(&format!("{at}.rules"), &p.rules)?;
        }
        Ok(())
    }
}

/// A policy name shows up in a response header and a metric label: keep it to a safe
/// set, and away from the words that stand for the default decisions.
fn policy_name(at: &str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
    if !ok {
        return Err(ValidationError::new(
            at,
            format!(
                "{name:?} is not a valid policy name: 1 to {MAX_NAME_LEN} letters, digits, \
                 '-', '_', '.' or '/'"
            ),
        ));
    }
    if name == DEFAULT_DECIDER || name == NO_ALLOW_MATCH_DECIDER {
        return Err(ValidationError::new(
            at,
            format!("{name:?} is reserved for decisions no policy made; choose another name"),
        ));
    }
    Ok(())
}

// === wire ===

impl AuthorizationConfig {
    /// Reads the control plane's message; errors name the field, from `at`. The result
    /// still needs [`AuthorizationConfig::validate`].
    pub fn from_wire(w: &wire::Authorization, at: &str) -> Result<Self, ValidationError> {
        let port = match w.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| {
                ValidationError::new(
                    format!("{at}.port"),
                    format!("must be between 1 and 65535, got {p}"),
                )
            })?),
        };
        let policies = w
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| policy_from_wire(p, &format!("{at}.policies[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            default_action: action_from_wire(w.default_action, &format!("{at}.defaultAction"))?,
            port,
            policies,
        })
    }

    /// The control plane's message for this configuration.
    pub fn to_wire(&self) -> wire::Authorization {
        wire::Authorization {
            default_action: action_to_wire(self.default_action) as i32,
            port: self.port.map_or(0, u32::from),
            policies: self
                .policies
                .iter()
                .map(|p| wire::AuthorizationPolicy {
                    name: p.name.clone(),
                    action: action_to_wire(p.action) as i32,
                    rules: p.rules.iter().map(Rule::to_wire).collect(),
                })
                .collect(),
        }
    }
}

impl Rule {
    /// The rule as the control plane sends it.
    pub fn to_wire(&self) -> wire::AuthorizationRule {
        wire::AuthorizationRule {
            from: self
                .from
                .iter()
                .map(|s| wire::AuthorizationSource {
                    identities: s.identities.clone(),
                    namespaces: s.namespaces.clone(),
                })
                .collect(),
            to: self
                .to
                .iter()
                .map(|o| wire::AuthorizationOperation {
                    ports: o.ports.iter().map(|p| u32::from(*p)).collect(),
                    methods: o.methods.clone(),
                    paths: o.paths.iter().map(path_to_wire).collect(),
                    headers: o
                        .headers
                        .iter()
                        .map(|h| wire::AuthorizationHeader {
                            name: h.name.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The wire action of a policy or of the default.
pub fn action_to_wire(action: Action) -> wire::AuthorizationAction {
    match action {
        Action::Allow => wire::AuthorizationAction::Allow,
        Action::Deny => wire::AuthorizationAction::Deny,
    }
}

fn action_from_wire(value: i32, at: &str) -> Result<Action, ValidationError> {
    match wire::AuthorizationAction::try_from(value) {
        Ok(wire::AuthorizationAction::Allow) => Ok(Action::Allow),
        Ok(wire::AuthorizationAction::Deny) => Ok(Action::Deny),
        // An action this proxy does not know could only be stricter; refuse the whole
        // configuration rather than guess.
        Err(_) => Err(ValidationError::new(
            at,
            format!("unknown action {value}, expected allow (0) or deny (1)"),
        )),
    }
}

fn path_to_wire(p: &PathPattern) -> wire::AuthorizationPath {
    let kind = match p {
        PathPattern::Exact(v) => wire::authorization_path::Kind::Exact(v.clone()),
        PathPattern::Prefix(v) => wire::authorization_path::Kind::Prefix(v.clone()),
    };
    wire::AuthorizationPath { kind: Some(kind) }
}

fn policy_from_wire(
    p: &wire::AuthorizationPolicy,
    at: &str,
) -> Result<PolicyConfig, ValidationError> {
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule_from_wire(r, &format!("{at}.rules[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(PolicyConfig {
        name: p.name.clone(),
        action: action_from_wire(p.action, &format!("{at}.action"))?,
        rules,
    })
}

fn rule_from_wire(r: &wire::AuthorizationRule, at: &str) -> Result<Rule, ValidationError> {
    let from = r
        .from
        .iter()
        .map(|s| Source {
            identities: s.identities.clone(),
            namespaces: s.namespaces.clone(),
        })
        .collect();
    let to =
        r.to.iter()
            .enumerate()
            .map(|(i, o)| operation_from_wire(o, &format!("{at}.to[{i}]")))
            .collect::<Result<_, _>>()?;
    Ok(Rule { from, to })
}

fn operation_from_wire(
    o: &wire::AuthorizationOperation,
    at: &str,
) -> Result<Operation, ValidationError> {
    let ports = o
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| {
                ValidationError::new(
                    format!("{at}.ports[{i}]"),
                    format!("must be between 1 and 65535, got {p}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let paths = o
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.kind {
            Some(wire::authorization_path::Kind::Exact(v)) => Ok(PathPattern::Exact(v.clone())),
            Some(wire::authorization_path::Kind::Prefix(v)) => Ok(PathPattern::Prefix(v.clone())),
            None => Err(ValidationError::new(
                format!("{at}.paths[{i}]"),
                "give exactly one of `exact` or `prefix`",
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Operation {
        ports,
        methods: o.methods.clone(),
        paths,
        headers: o
            .headers
            .iter()
            .map(|h| HeaderPattern {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
    })
}
