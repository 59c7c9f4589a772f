//! Authorization on a listener: its policies, compiled once per configuration version
//! into a [`trellis_api::authz::Authorizer`] (the same evaluation `trellis explain`
//! uses), checked on every HTTP request before routing and on every opaque TCP
//! connection when it is accepted. Each decision is counted by the policy that made it;
//! denials are logged at debug, and at warn at most once per interval.
//!
//! The facts come from the connection: the peer's SPIFFE ID when it is mTLS (none for
//! plaintext), and the port, which is the configured application port if there is one,
//! else the port the connection arrived on. Requests read the listener's authorization
//! from the snapshot current when they arrive, so a reload applies to the next request
//! of every HTTP connection; TCP connections are checked once, when accepted.

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, Request};
use prometheus_client::metrics::counter::Counter;
use trellis_api::authz::{
    AuthorizationConfig, Authorizer, DecidedBy, HeaderLookup, HttpRequest, Peer, Request as Facts,
    DEFAULT_DECIDER, NO_ALLOW_MATCH_DECIDER,
};
use trellis_identity::SpiffeId;

use crate::telemetry::{AuthzLabels, Metrics};
use crate::Shared;

/// A listener's compiled authorization, with its counters.
#[derive(Debug)]
pub struct ListenerAuthz {
    listener: Arc<str>,
    authorizer: Authorizer,
    /// The `policy` label of each decider: every policy by position in the
    /// configuration, then `default`, then `no-allow-match`.
    deciders: Box<[Arc<str>]>,
    /// The counters of each decider, looked up in the metric families on first use, so
    /// that a decision then costs one atomic increment.
    counters: Box<[OnceLock<Counters>]>,
}

#[derive(Debug)]
struct Counters {
    allowed: Counter,
    denied: Counter,
}

/// A request or connection the listener's authorization refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("denied by {policy}")]
pub struct Denied {
    /// The deciding policy's name, or `default` / `no-allow-match`.
    pub policy: Arc<str>,
    /// The index of the matching rule, when a rule decided.
    pub rule: Option<usize>,
}

// === impl ListenerAuthz ===

impl ListenerAuthz {
    /// Compiles a validated configuration for listener `listener`.
    pub fn new(listener: Arc<str>, config: &AuthorizationConfig) -> Self {
        let authorizer = Authorizer::new(config);
        let deciders: Box<[Arc<str>]> = authorizer
            .policy_names()
            .iter()
            .cloned()
            .chain([DEFAULT_DECIDER.into(), NO_ALLOW_MATCH_DECIDER.into()])
            .collect();
        let counters = deciders.iter().map(|_| OnceLock::new()).collect();
        Self {
            listener,
            authorizer,
            deciders,
            counters,
        }
    }

    /// Checks one HTTP request; `port` is the port its connection arrived on.
    pub fn check_request<B>(
        &self,
        req: &Request<B>,
        peer: Option<&SpiffeId>,
        port: u16,
        shared: &Shared,
    ) -> Result<(), Denied> {
        let headers = Headers(req.headers());
        let facts = Facts {
            peer: peer.map(peer_of),
            port: Some(self.authorizer.port().unwrap_or(port)),
            http: Some(HttpRequest {
                method: req.method().as_str(),
                path: req.uri().path(),
                headers: &headers,
            }),
        };
        self.decide(&facts, &shared.metrics).inspect_err(|denied| {
            tracing::debug!(
                listener = %self.listener,
                policy = %denied.policy,
                rule = ?denied.rule,
                peer = peer.map_or("none", SpiffeId::as_uri),
                method = %req.method(),
                path = req.uri().path(),
                "request denied"
            );
            self.warn(shared, denied, peer);
        })
    }

    /// Checks an opaque TCP connection: only its port and peer are known, so rules
    /// naming methods, paths or headers fail closed (see [`trellis_api::authz`]).
    pub fn check_connection(
        &self,
        peer: Option<&SpiffeId>,
        port: u16,
        shared: &Shared,
    ) -> Result<(), Denied> {
        let facts = Facts {
            peer: peer.map(peer_of),
            port: Some(self.authorizer.port().unwrap_or(port)),
            http: None,
        };
        self.decide(&facts, &shared.metrics).inspect_err(|denied| {
            tracing::debug!(
                listener = %self.listener,
                policy = %denied.policy,
                rule = ?denied.rule,
                peer = peer.map_or("none", SpiffeId::as_uri),
                "TCP connection denied"
            );
            self.warn(shared, denied, peer);
        })
    }

    fn decide(&self, facts: &Facts<'_>, metrics: &Metrics) -> Result<(), Denied> {
        let decision = self.authorizer.evaluate(facts);
        let policies = self.deciders.len() - 2;
        let (slot, rule) = match decision.decided_by {
            DecidedBy::Rule { index, rule, .. } => (index, Some(rule)),
            DecidedBy::Default => (policies, None),
            DecidedBy::NoAllowMatch => (policies + 1, None),
        };
        let counters = self.counters[slot].get_or_init(|| {
            let labels = AuthzLabels {
                listener: self.listener.clone(),
                policy: self.deciders[slot].clone(),
            };
            Counters {
                allowed: metrics.authz_allowed.get_or_create(&labels).clone(),
                denied: metrics.authz_denied.get_or_create(&labels).clone(),
            }
        });
        if decision.allowed {
            counters.allowed.inc();
            return Ok(());
        }
        counters.denied.inc();
        Err(Denied {
            policy: self.deciders[slot].clone(),
            rule,
        })
    }

    fn warn(&self, shared: &Shared, denied: &Denied, peer: Option<&SpiffeId>) {
        if let Some(held) = shared.authz_warn.allow() {
            tracing::warn!(
                listener = %self.listener,
                policy = %denied.policy,
                peer = peer.map_or("none", SpiffeId::as_uri),
                denied_since_last_warning = held,
                "denying requests by authorization policy (see trellis_authz_denied_total)"
            );
        }
    }
}

fn peer_of(id: &SpiffeId) -> Peer<'_> {
    Peer {
        identity: id.as_uri(),
        namespace: id.namespace(),
    }
}

/// A request's headers as the evaluation reads them.
struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn has_value(&self, name: &str, value: &str) -> bool {
        self.0
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(yaml: &str) -> ListenerAuthz {
        let config: AuthorizationConfig = serde_saphyr::from_str(yaml).expect("test YAML");
        config.validate("authorization").expect("valid");
        ListenerAuthz::new("inbound".into(), &config)
    }

    /// A `GET /x` from `peer` over HTTP, or a TCP connection, arriving on port 7143.
    fn decide(
        authz: &ListenerAuthz,
        metrics: &Metrics,
        peer: &SpiffeId,
        http: bool,
    ) -> Result<(), Denied> {
        let get = Request::get("/x").body(()).expect("request");
        let headers = Headers(get.headers());
        let facts = Facts {
            peer: Some(peer_of(peer)),
            // The configured application port stands for the connection's.
            port: Some(authz.authorizer.port().unwrap_or(7143)),
            http: http.then_some(HttpRequest {
                method: get.method().as_str(),
                path: get.uri().path(),
                headers: &headers,
            }),
        };
        authz.decide(&facts, metrics)
    }

    #[test]
    fn decisions_are_counted_by_the_deciding_policy() {
        let metrics = Metrics::new();
        let authz = authz(
            r#"
port: 8080
policies:
  - name: shop/web-gets
    rules: [{from: [{namespaces: [shop]}], to: [{ports: [8080], methods: [GET]}]}]
"#,
        );
        let web = SpiffeId::in_default_domain("shop", "web").expect("id");
        let other = SpiffeId::in_default_domain("ops", "admin").expect("id");
        let decide = |peer: &SpiffeId, http: bool| decide(&authz, &metrics, peer, http);
        assert!(decide(&web, true).is_ok());
        assert!(decide(&web, true).is_ok());
        let denied = decide(&other, true).expect_err("other namespace");
        assert_eq!(denied.to_string(), "denied by no-allow-match");
        // TCP: the rule names a method, which a connection does not have.
        assert!(decide(&web, false).is_err());
        let text = metrics.encode();
        for line in [
            r#"trellis_authz_allowed_total{listener="inbound",policy="shop/web-gets"} 2"#,
            r#"trellis_authz_denied_total{listener="inbound",policy="no-allow-match"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
