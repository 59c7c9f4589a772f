//! A backend as the request path sees it: its endpoints, how to choose among them (the
//! balancer, a consistent-hash key, the caller's zone) and its protection state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use trellis_identity::SpiffeId;

use crate::balance::{Balancer, Weighted};
use crate::config::{BackendConfig, BackendProtocol, LoadBalancer, LocalityConfig};
use crate::endpoint::{ConnectSettings, Endpoint, Origination, OriginationKey};
use crate::resilience::protection::Protection;
use crate::tls::{IdentitySlot, PEER_IDENTITY_HEADER};

/// A backend: its endpoints and how to choose among them.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub protocol: BackendProtocol,
    /// Every endpoint; indices into it name endpoints everywhere else.
    all: Pool,
    /// With a zone preference: the endpoints in the caller's zone and the others.
    zones: Option<Zones>,
    hash_on: Option<HashKey>,
    /// Retry budget, circuit breaker, outlier detection, health, adaptive limit.
    pub protection: Arc<Protection>,
}

/// An endpoint chosen for a request, with its index in the backend (which per-endpoint
/// protection state is kept by).
#[derive(Debug, Clone)]
pub struct Picked {
    pub index: usize,
    pub endpoint: Arc<Endpoint>,
}

/// What a backend's consistent hash keys on.
#[derive(Debug)]
enum HashKey {
    Header(http::HeaderName),
    Cookie(String),
    /// The identity of whoever sent the request: the peer proxy that proved it over
    /// mTLS, else (the local application) this proxy's own.
    SourceIdentity,
}

impl HashKey {
    fn build(config: &crate::config::HashOn) -> Option<Self> {
        match (&config.header, &config.cookie, config.source_identity) {
            (Some(h), _, _) => http::HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(HashKey::Header),
            (None, Some(c), _) => Some(HashKey::Cookie(c.clone())),
            (None, None, Some(true)) => Some(HashKey::SourceIdentity),
            (None, None, _) => None,
        }
    }
}

/// What makes two endpoints the same one, so a reload can keep it: address, settings,
/// identity, and for an endpoint outside the mesh its name and the TLS opened to it.
pub(crate) type EndpointKey = (
    SocketAddr,
    ConnectSettings,
    Option<SpiffeId>,
    Option<Arc<str>>,
    Option<OriginationKey>,
);

/// The key of an endpoint already built.
pub(crate) fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    (
        endpoint.addr(),
        endpoint.settings(),
        endpoint.identity().cloned(),
        endpoint.hostname().cloned(),
        endpoint.origination().cloned(),
    )
}

/// Endpoints a balancer picks among, each with its index in the backend.
#[derive(Debug)]
struct Pool {
    endpoints: Vec<Weighted>,
    /// `index[i]`: the backend's index of `endpoints[i]`.
    index: Vec<usize>,
    balancer: Balancer,
}

impl Pool {
    fn new(policy: LoadBalancer, members: impl Iterator<Item = (usize, Weighted)>) -> Self {
        let (index, endpoints): (Vec<usize>, Vec<Weighted>) = members.unzip();
        Self {
            balancer: Balancer::new(policy, &endpoints),
            endpoints,
            index,
        }
    }

    /// The endpoint for a request with this key, leaving out the endpoints `skip` names
    /// by backend index; `None` when it leaves none.
    fn pick(
        &self,
        key: Option<&[u8]>,
        skip: &dyn Fn(usize) -> bool,
        skipping: bool,
    ) -> Option<Picked> {
        if !skipping {
            let picked = self.balancer.pick_keyed(&self.endpoints, key)?;
            return Some(self.picked(picked));
        }
        let usable = |j: usize| !skip(self.index[j]);
        let n = self.endpoints.len();
        if !(0..n).any(usable) {
            return None;
        }
        // A consistent hash keeps its key's endpoint whenever that one is usable; round
        // robin keeps its order, passing over the endpoints left out.
        let tries = match (&self.balancer, key) {
            (Balancer::ConsistentHash(_), Some(_)) => 1,
            (Balancer::RoundRobin(_), _) => n,
            _ => 0,
        };
        for _ in 0..tries {
            if let Some(picked) = self.balancer.pick_keyed(&self.endpoints, key) {
                let picked = self.picked(picked);
                if !skip(picked.index) {
                    return Some(picked);
                }
            }
        }
        let candidates: Vec<Weighted> = (0..n)
            .filter(|j| usable(*j))
            .map(|j| self.endpoints[j].clone())
            .collect();
        let picked = self.balancer.pick_keyed(&candidates, None)?;
        let j = self
            .endpoints
            .iter()
            .position(|w| Arc::ptr_eq(&w.endpoint, &picked.endpoint))?;
        Some(Picked {
            index: self.index[j],
            endpoint: picked.endpoint.clone(),
        })
    }

    /// The backend index of an endpoint picked from the whole pool.
    fn picked(&self, picked: &Weighted) -> Picked {
        let j = self
            .endpoints
            .iter()
            .position(|w| std::ptr::eq(w, picked))
            .unwrap_or_default();
        Picked {
            index: self.index[j],
            endpoint: picked.endpoint.clone(),
        }
    }
}

/// A backend's endpoints split by the caller's zone, and when to leave it.
#[derive(Debug)]
struct Zones {
    local: Pool,
    remote: Pool,
    /// How many endpoints the zone has, counting those not ready (so not here).
    size: usize,
    /// 0 to 1: the healthy share of the zone that keeps all traffic in it.
    min_healthy: f64,
}

impl Zones {
    /// `None` when no endpoint is in the zone: then zones do not matter.
    fn build(
        config: &LocalityConfig,
        policy: LoadBalancer,
        all: &[(Weighted, bool)],
    ) -> Option<Self> {
        let members = |local: bool| {
            all.iter()
                .enumerate()
                .filter(move |(_, (_, in_zone))| *in_zone == local)
                .map(|(i, (w, _))| (i, w.clone()))
        };
        let local = Pool::new(policy, members(true));
        if local.endpoints.is_empty() {
            return None;
        }
        let size = config.zone_size.map_or(0, |s| s as usize);
        Some(Self {
            size: size.max(local.endpoints.len()),
            min_healthy: f64::from(config.min_healthy_percent.clamp(1, 100)) / 100.0,
            remote: Pool::new(policy, members(false)),
            local,
        })
    }

    /// The share of requests that stay in the zone when the endpoints `skip` names are
    /// out: all of them while at least `min_healthy` of the zone is usable, then
    /// proportionally less, none when none is usable.
    fn local_share(&self, skip: &dyn Fn(usize) -> bool) -> f64 {
        let usable = self.local.index.iter().filter(|i| !skip(**i)).count();
        let healthy = usable as f64 / self.size as f64;
        (healthy / self.min_healthy).min(1.0)
    }

    /// The pools to try for one request, in order: the zone or the others by the local
    /// share (`draw` is uniform in 0..1), then the other.
    fn order(&self, skip: &dyn Fn(usize) -> bool, draw: f64) -> [&Pool; 2] {
        if draw < self.local_share(skip) {
            [&self.local, &self.remote]
        } else {
            [&self.remote, &self.local]
        }
    }
}

impl Backend {
    pub(crate) fn build(
        config: &BackendConfig,
        reuse: &HashMap<EndpointKey, Arc<Endpoint>>,
        mark: Option<u32>,
        resolver: Option<SocketAddr>,
        previous: Option<&Backend>,
        identity: &IdentitySlot,
    ) -> Self {
        let settings = ConnectSettings {
            protocol: config.protocol,
            connect_timeout: config.connect_timeout.get(),
            idle_timeout: config.idle_timeout.get(),
            mark,
            resolver,
        };
        // One per backend, shared by its endpoints: building it reads the CA file.
        let origination = config
            .originate_tls
            .as_ref()
            .map(|tls| Arc::new(Origination::new(tls)));
        let zone = config.locality.as_ref().map(|l| l.zone.as_str());
        let endpoints: Vec<(Weighted, bool)> = config
            .endpoints
            .iter()
            .filter_map(|e| {
                // Validation has refused identities that do not parse. Leaving such an
                // endpoint out, rather than reaching it in plaintext, fails closed.
                let identity = match &e.identity {
                    Some(id) => Some(id.parse::<SpiffeId>().ok()?),
                    None => None,
                };
                let hostname: Option<Arc<str>> = e.hostname.as_deref().map(Into::into);
                let key = (
                    e.address,
                    settings,
                    identity,
                    hostname,
                    origination.as_ref().map(|o| o.key.clone()),
                );
                let endpoint = match reuse.get(&key) {
                    Some(endpoint) => endpoint.clone(),
                    None => Arc::new(
                        Endpoint::new(key.0, settings, key.2).outside(key.3, origination.clone()),
                    ),
                };
                let in_zone = zone.is_some() && e.zone.as_deref() == zone;
                let weighted = Weighted {
                    weight: e.weight,
                    endpoint,
                };
                Some((weighted, in_zone))
            })
            .collect();
        let targets: Vec<Arc<Endpoint>> =
            endpoints.iter().map(|(w, _)| w.endpoint.clone()).collect();
        let protection = Protection::build(
            &config.resilience,
            &targets,
            identity,
            previous.map(|p| &*p.protection),
        );
        let policy = config.load_balancer;
        Self {
            protection: Arc::new(protection),
            name: config.name.as_str().into(),
            protocol: config.protocol,
            zones: config
                .locality
                .as_ref()
                .and_then(|l| Zones::build(l, policy, &endpoints)),
            all: Pool::new(policy, endpoints.into_iter().map(|(w, _)| w).enumerate()),
            hash_on: config.hash_on.as_ref().and_then(HashKey::build),
        }
    }

    /// The endpoint for the next request or connection.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        self.pick_for(None, 0).map(|p| p.endpoint)
    }

    /// The endpoint for a request with this consistent-hash key (see
    /// [`Backend::hash_key`]), leaving out ejected and unhealthy endpoints and those in
    /// `tried` (a bit per endpoint index already tried by this request). With a zone
    /// preference, the caller's zone or the others first by how much of the zone is
    /// usable. When that leaves none, every endpoint is a candidate again: a backend
    /// whose endpoints all look bad is still tried rather than failed outright.
    pub fn pick_for(&self, key: Option<&[u8]>, tried: u64) -> Option<Picked> {
        let excluded = self.protection.excluded(tokio::time::Instant::now());
        let skip = |i: usize| {
            excluded
                .as_ref()
                .is_some_and(|set| set.get(i) == Some(&true))
                || (i < 64 && tried & (1 << i) != 0)
        };
        let skipping = excluded.is_some() || tried != 0;
        if let Some(zones) = &self.zones {
            for pool in zones.order(&skip, fastrand::f64()) {
                if let Some(picked) = pool.pick(key, &skip, skipping) {
                    return Some(picked);
                }
            }
        } else if let Some(picked) = self.all.pick(key, &skip, skipping) {
            return Some(picked);
        }
        self.all.pick(key, &|_| false, false)
    }

    /// The consistent-hash key of a request with these headers: the value of the
    /// backend's `hashOn` header or cookie, or the sender's identity (the peer's, else
    /// `own()`); `None` when it has none, or the request lacks it.
    pub fn hash_key<'h>(
        &self,
        headers: &'h http::HeaderMap,
        own: impl FnOnce() -> Option<String>,
    ) -> Option<Cow<'h, [u8]>> {
        match self.hash_on.as_ref()? {
            HashKey::Header(name) => headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
            HashKey::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| Cow::Borrowed(v.as_bytes())),
            HashKey::SourceIdentity => match headers.get(PEER_IDENTITY_HEADER) {
                Some(peer) => Some(Cow::Borrowed(peer.as_bytes())),
                None => own().map(|id| Cow::Owned(id.into_bytes())),
            },
        }
    }

    /// The endpoint for a new connection (TCP) of this proxy's application: keyed by
    /// `own()`, this proxy's identity, when the backend hashes on the source identity.
    pub fn pick_connection(&self, own: impl FnOnce() -> Option<String>) -> Option<Arc<Endpoint>> {
        let key = match self.hash_on {
            Some(HashKey::SourceIdentity) => own(),
            _ => None,
        };
        self.pick_for(key.as_deref().map(str::as_bytes), 0)
            .map(|p| p.endpoint)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.all.endpoints.iter().map(|w| &w.endpoint)
    }
}

#[cfg(test)]
mod tests;
