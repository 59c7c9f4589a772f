//! The compiled configuration the request path reads: listeners with their resolved
//! routes and backends with live endpoints. A new `Snapshot` is built for every config
//! version and swapped in atomically; requests read whichever snapshot was current when
//! they arrived and never wait on a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use trellis_identity::SpiffeId;

use crate::authz::ListenerAuthz;
use crate::backend::endpoint_key;
pub use crate::backend::{Backend, Picked};
use crate::config::{ListenerConfig, ListenerProtocol, MtlsMode, ProxyConfig};
use crate::config::{RateLimitConfig, RateLimitKey};
use crate::dns::names::ServiceNames;
use crate::endpoint::Endpoint;
use crate::http::errors::ProxyError;
use crate::resilience::ratelimit::{Quota, Rate, RateLimiter};
use crate::route::Route;
use crate::tls::IdentitySlot;
use crate::transparent::DestinationTable;

/// One configuration version, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<ProxyConfig>,
    pub listeners: HashMap<String, Arc<Listener>>,
    pub backends: HashMap<String, Arc<Backend>>,
    /// The mesh's Services by name, for the DNS server.
    pub service_names: ServiceNames,
}

/// A listener's settings and its routes.
#[derive(Debug)]
pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
    pub detect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Time a client has for a request's head (`head`), and for the mTLS handshake and
    /// protocol detection before its first.
    pub header_read_timeout: Duration,
    pub mtls: MtlsMode,
    /// Who may use the listener; `None`: everyone.
    pub authorization: Option<ListenerAuthz>,
    /// Tried in order; the first that matches takes the request.
    pub routes: Vec<Route>,
    /// On the listener of captured outbound connections: where each goes by the
    /// address its client dialled.
    pub original_destination: Option<DestinationTable>,
    /// Token buckets every request must find a token in (RateLimitPolicy).
    pub rate_limits: Arc<Vec<ListenerRateLimit>>,
    /// Serves external hosts: what no route names is refused as undeclared.
    pub egress: bool,
    /// An HTTP forward proxy's port: `CONNECT` opens tunnels (`http::connect`).
    pub connect: bool,
}

/// Most keys one rate limit keeps a bucket for (callers, routes); past it the bucket
/// idle the longest is forgotten.
const MAX_RATE_LIMIT_KEYS: usize = 10_000;

/// One rate limit of a listener, with its buckets.
#[derive(Debug)]
pub struct ListenerRateLimit {
    pub config: RateLimitConfig,
    pub name: Arc<str>,
    limiter: RateLimiter,
}

impl ListenerRateLimit {
    fn build(config: &RateLimitConfig) -> Self {
        let (per_second, burst) = config.rate();
        let rate = Rate { per_second, burst };
        Self {
            name: config.name.as_str().into(),
            limiter: RateLimiter::new(rate, MAX_RATE_LIMIT_KEYS),
            config: config.clone(),
        }
    }
}

impl Listener {
    /// The route for a request: the first whose match fits.
    pub fn route_for<B>(&self, req: &http::Request<B>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
    }

    /// Takes a token from each rate limit's bucket for a request on `route` from
    /// `source` (the caller's SPIFFE ID, if known); the first limit whose bucket is
    /// empty refuses it, and its name and key kind are returned for the metrics. An
    /// admitted request gets the quota of the limit closest to refusing (fewest tokens
    /// left) for its response headers; `None` when the listener has no limits.
    pub fn rate_limit(
        &self,
        route: &Route,
        source: Option<&SpiffeId>,
    ) -> Result<Option<Quota>, (ProxyError, Arc<str>, &'static str)> {
        let now = tokio::time::Instant::now();
        let mut tightest: Option<Quota> = None;
        for limit in self.rate_limits.iter() {
            let (kind, key) = match limit.config.per {
                RateLimitKey::Service => ("service", String::new()),
                RateLimitKey::Route => ("route", route.name.to_string()),
                RateLimitKey::Source => {
                    ("source", source.map(|s| s.to_string()).unwrap_or_default())
                }
            };
            match limit.limiter.check(&key, now) {
                Ok(quota) => {
                    if tightest.is_none_or(|t| quota.remaining < t.remaining) {
                        tightest = Some(quota);
                    }
                }
                Err(limited) => {
                    let error = ProxyError::RateLimited {
                        policy: limit.name.clone(),
                        limit: limited.limit,
                        retry_after: limited.retry_after,
                    };
                    return Err((error, limit.name.clone(), kind));
                }
            }
        }
        Ok(tightest)
    }
}

impl Snapshot {
    /// Compiles a validated configuration. Endpoints of `previous` with the same address
    /// and connection settings are carried over with their pools and load statistics.
    /// Health probes find the proxy's identity in `identity`.
    pub fn build(
        config: ProxyConfig,
        previous: Option<&Snapshot>,
        identity: &IdentitySlot,
    ) -> Self {
        let mut reuse = HashMap::new();
        for backend in previous.iter().flat_map(|p| p.backends.values()) {
            for endpoint in backend.endpoints() {
                reuse.insert(endpoint_key(endpoint), endpoint.clone());
            }
        }
        let backends: HashMap<String, Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| p.backends.get(&b.name));
                let old = old.map(|o| &**o);
                let backend = Backend::build(
                    b,
                    &reuse,
                    config.socket_mark,
                    config.resolver,
                    old,
                    identity,
                );
                (b.name.clone(), Arc::new(backend))
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .filter_map(|l| {
                let old = previous.and_then(|p| p.listeners.get(&l.name));
                let listener = build_listener(l, &backends, old.map(|o| &**o))?;
                Some((l.name.clone(), Arc::new(listener)))
            })
            .collect();
        Self {
            service_names: ServiceNames::new(&config.services, &config.external_hosts),
            config: Arc::new(config),
            listeners,
            backends,
        }
    }

    /// Every distinct endpoint, for housekeeping such as closing idle connections.
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.backends.values().flat_map(|b| b.endpoints())
    }
}

/// `None` only for a listener whose route names an unknown backend, which validation
/// has already refused.
fn build_listener(
    config: &ListenerConfig,
    backends: &HashMap<String, Arc<Backend>>,
    previous: Option<&Listener>,
) -> Option<Listener> {
    // Unchanged limits keep their buckets, so a reload is no fresh burst.
    let rate_limits = match previous {
        Some(p)
            if p.rate_limits
                .iter()
                .map(|l| &l.config)
                .eq(config.rate_limits.iter()) =>
        {
            p.rate_limits.clone()
        }
        _ => Arc::new(
            config
                .rate_limits
                .iter()
                .map(ListenerRateLimit::build)
                .collect(),
        ),
    };
    let name: Arc<str> = config.name.as_str().into();
    let routes = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| Route::build(r, i, &name, |b| backends.get(b).cloned()))
        .collect::<Option<Vec<_>>>()?;
    Some(Listener {
        address: config.address,
        protocol: config.protocol,
        detect_timeout: config.detect_timeout.get(),
        idle_timeout: config.idle_timeout.get(),
        header_read_timeout: config.header_read_timeout.get(),
        mtls: config.mtls,
        authorization: config
            .authorization
            .as_ref()
            .map(|a| ListenerAuthz::new(name.clone(), a)),
        routes,
        original_destination: config
            .original_destination
            .as_ref()
            .map(DestinationTable::build),
        rate_limits,
        egress: config.egress,
        connect: config.connect,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot whose health probes (if any) would go without an identity.
    fn build(config: ProxyConfig, previous: Option<&Snapshot>) -> Snapshot {
        Snapshot::build(config, previous, &IdentitySlot::default())
    }

    const CONFIG: &str = r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    routes: [{backend: app}]
backends:
  - name: app
    endpoints: [127.0.0.1:1, 127.0.0.1:2]
"#;

    #[test]
    fn reload_keeps_unchanged_endpoints_and_replaces_changed_ones() {
        let first = build(ProxyConfig::from_yaml(CONFIG).expect("valid"), None);
        let changed = CONFIG.replace("127.0.0.1:2", "127.0.0.1:3");
        let second = build(
            ProxyConfig::from_yaml(&changed).expect("valid"),
            Some(&first),
        );
        let old: Vec<_> = first.endpoints().cloned().collect();
        let new: Vec<_> = second.endpoints().cloned().collect();
        assert!(Arc::ptr_eq(&old[0], &new[0]), "127.0.0.1:1 was rebuilt");
        assert_eq!(new[1].addr(), "127.0.0.1:3".parse().expect("addr"));
        let route = &second.listeners["web"].routes[0];
        assert_eq!(second.endpoints().count(), 2);
        assert_eq!(
            &*route.first_backend().expect("backend").labels.backend,
            "app"
        );
    }

    #[test]
    fn an_endpoint_identity_is_part_of_what_makes_it_the_same() {
        let with = |identity: &str| {
            let yaml = CONFIG.replace(
                "[127.0.0.1:1, 127.0.0.1:2]",
                &format!("[{{address: 127.0.0.1:1, identity: \"{identity}\"}}]"),
            );
            ProxyConfig::from_yaml(&yaml).expect("valid")
        };
        let cart = "spiffe://trellis.local/ns/shop/sa/cart";
        let first = build(with(cart), None);
        let same = build(with(cart), Some(&first));
        let other = build(with("spiffe://trellis.local/ns/shop/sa/db"), Some(&same));
        let endpoint = |s: &Snapshot| s.endpoints().next().expect("one endpoint").clone();
        assert!(Arc::ptr_eq(&endpoint(&first), &endpoint(&same)));
        assert!(!Arc::ptr_eq(&endpoint(&same), &endpoint(&other)));
        assert_eq!(
            endpoint(&first)
                .identity()
                .map(|id| id.to_string())
                .as_deref(),
            Some(cart)
        );

        // A configuration that skipped validation cannot turn a bad identity into
        // plaintext: the endpoint is left out.
        let mut unchecked = with(cart);
        unchecked.backends[0].endpoints[0].identity = Some("cart".into());
        assert_eq!(build(unchecked, None).endpoints().count(), 0);
    }

    #[test]
    fn protection_state_survives_a_reload_that_keeps_its_settings() {
        let first = build(ProxyConfig::from_yaml(CONFIG).expect("valid"), None);
        let same = build(ProxyConfig::from_yaml(CONFIG).expect("valid"), Some(&first));
        let protection = |s: &Snapshot| s.backends["app"].protection.clone();
        let (a, b) = (protection(&first), protection(&same));
        assert!(a
            .breaker()
            .is_some_and(|x| b.breaker().is_some_and(|y| Arc::ptr_eq(x, y))));
        // Other endpoints: the per-endpoint state starts again, the rest is kept.
        let moved = CONFIG.replace("127.0.0.1:2", "127.0.0.1:3");
        let other = build(ProxyConfig::from_yaml(&moved).expect("valid"), Some(&same));
        let c = protection(&other);
        assert!(b
            .breaker()
            .is_some_and(|x| c.breaker().is_some_and(|y| Arc::ptr_eq(x, y))));
        // Turned off, it is gone.
        let off = CONFIG.replace(
            "endpoints: [127.0.0.1:1, 127.0.0.1:2]",
            "endpoints: [127.0.0.1:1, 127.0.0.1:2]\n    resilience: {circuitBreaker: {enabled: false}}",
        );
        let off = build(ProxyConfig::from_yaml(&off).expect("valid"), Some(&other));
        assert!(protection(&off).breaker().is_none());
        assert_eq!(protection(&off).concurrency_limit(), Some(20));
    }

    #[test]
    fn an_external_endpoint_is_kept_until_its_name_or_ca_certificates_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        let write_ca = |name: &str| {
            let ca = trellis_identity::CertificateAuthority::generate_root(
                name,
                std::time::Duration::from_secs(3600),
            )
            .expect("a CA");
            std::fs::write(&ca_file, ca.trust_bundle().to_pem()).expect("CA file");
        };
        let with = |host: &str| {
            let yaml = CONFIG.replace(
                "[127.0.0.1:1, 127.0.0.1:2]",
                &format!(
                    "[\"{host}:443\"]\n    originateTls: {{serverName: {host}, caFile: {}}}",
                    ca_file.display()
                ),
            );
            ProxyConfig::from_yaml(&yaml).expect("valid")
        };
        let endpoint = |s: &Snapshot| s.endpoints().next().expect("one endpoint").clone();
        write_ca("one.example");
        let first = build(with("api.example"), None);
        assert_eq!(
            endpoint(&first).hostname().map(|h| &**h),
            Some("api.example")
        );
        let same = build(with("api.example"), Some(&first));
        assert!(Arc::ptr_eq(&endpoint(&first), &endpoint(&same)));
        let renamed = build(with("eu.example"), Some(&same));
        assert!(!Arc::ptr_eq(&endpoint(&same), &endpoint(&renamed)));
        // New certificates in the CA file: new endpoint, new pooled connections.
        write_ca("two.example");
        let rotated = build(with("eu.example"), Some(&renamed));
        assert!(!Arc::ptr_eq(&endpoint(&renamed), &endpoint(&rotated)));
    }
}
