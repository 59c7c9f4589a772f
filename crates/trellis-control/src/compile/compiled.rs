//! A proxy's compiled configuration as the control plane keeps it: the few listeners
//! and backends only that proxy has, and the [`SharedOutbound`] it holds with others.
//! Sessions compare two of these to send a proxy only what changed.

use std::sync::Arc;

use trellis_api::proto::v1::{
    Backend, ConfigDelta, ExternalHost, Listener, MeshService, ProxyConfig,
};

use super::shared::{Hashed, SharedOutbound};

/// One proxy's configuration.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// What only this proxy has. Listeners and backends are sorted by name; a backend
    /// here replaces the shared part's of the same name.
    pub(super) own: ProxyConfig,
    pub(super) shared: Option<Arc<SharedOutbound>>,
}

impl From<ProxyConfig> for Compiled {
    fn from(mut own: ProxyConfig) -> Self {
        own.listeners.sort_by(|a, b| a.name.cmp(&b.name));
        own.backends.sort_by(|a, b| a.name.cmp(&b.name));
        Self { own, shared: None }
    }
}

/// An item of a [`Compiled`], from the proxy's own part or the shared one.
enum Piece<'a, T> {
    Own(&'a T),
    Shared(&'a Hashed<T>),
}

impl<'a, T: PartialEq> Piece<'a, T> {
    fn item(&self) -> &'a T {
        match self {
            Piece::Own(item) => item,
            Piece::Shared(hashed) => &hashed.item,
        }
    }

    fn same_as(&self, other: &Piece<'_, T>) -> bool {
        match (self, other) {
            (Piece::Shared(a), Piece::Shared(b)) => a.hash == b.hash,
            _ => self.item() == other.item(),
        }
    }
}

/// Named protobuf items.
trait Named {
    fn name(&self) -> &str;
}

impl Named for Listener {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Backend {
    fn name(&self) -> &str {
        &self.name
    }
}

/// `own` and `shared` in one list sorted by name, `own` taking the place of a shared
/// item of the same name.
fn merged<'a, T: Named>(own: &'a [T], shared: &'a [Hashed<T>]) -> Vec<Piece<'a, T>> {
    let mut out = Vec::with_capacity(own.len() + shared.len());
    let (mut o, mut s) = (own.iter().peekable(), shared.iter().peekable());
    loop {
        match (o.peek(), s.peek()) {
            (Some(a), Some(b)) => match a.name().cmp(b.item.name()) {
                std::cmp::Ordering::Less => out.extend(o.next().map(Piece::Own)),
                std::cmp::Ordering::Greater => out.extend(s.next().map(Piece::Shared)),
                std::cmp::Ordering::Equal => {
                    s.next();
                    out.extend(o.next().map(Piece::Own));
                }
            },
            (Some(_), None) => out.extend(o.next().map(Piece::Own)),
            (None, Some(_)) => out.extend(s.next().map(Piece::Shared)),
            (None, None) => return out,
        }
    }
}

/// The items of `new` that `old` lacks or has otherwise, and the names of `old`'s that
/// `new` lacks; both lists sorted by name.
fn changed<T: Named + PartialEq + Clone>(
    old: &[Piece<'_, T>],
    new: &[Piece<'_, T>],
) -> (Vec<T>, Vec<String>) {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) => match a.item().name().cmp(b.item().name()) {
                std::cmp::Ordering::Less => {
                    removed.extend(o.next().map(|a| a.item().name().to_string()));
                }
                std::cmp::Ordering::Greater => {
                    changed.extend(n.next().map(|b| b.item().clone()));
                }
                std::cmp::Ordering::Equal => {
                    if !a.same_as(b) {
                        changed.push(b.item().clone());
                    }
                    o.next();
                    n.next();
                }
            },
            (Some(_), None) => removed.extend(o.next().map(|a| a.item().name().to_string())),
            (None, Some(_)) => changed.extend(n.next().map(|b| b.item().clone())),
            (None, None) => return (changed, removed),
        }
    }
}

impl Compiled {
    fn listener_pieces(&self) -> Vec<Piece<'_, Listener>> {
        let shared = self.shared.as_ref().map_or(&[][..], |s| &s.listeners[..]);
        merged(&self.own.listeners, shared)
    }

    fn backend_pieces(&self) -> Vec<Piece<'_, Backend>> {
        let shared = self.shared.as_ref().map_or(&[][..], |s| &s.backends[..]);
        merged(&self.own.backends, shared)
    }

    /// Every listener, sorted by name.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listener_pieces().into_iter().map(|p| p.item())
    }

    /// Every backend, sorted by name.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.backend_pieces().into_iter().map(|p| p.item())
    }

    fn services(&self) -> &[MeshService] {
        self.shared
            .as_ref()
            .map_or(&self.own.services, |s| &s.services)
    }

    /// The ExternalService hosts with their virtual IPs, for the sidecar's DNS.
    pub fn external_hosts(&self) -> &[ExternalHost] {
        self.shared
            .as_ref()
            .map_or(&self.own.external_hosts, |s| &s.external_hosts)
    }

    /// Everything but the listeners and backends.
    fn others(&self) -> ProxyConfig {
        ProxyConfig {
            listeners: Vec::new(),
            backends: Vec::new(),
            services: self.services().to_vec(),
            external_hosts: self.external_hosts().to_vec(),
            tracing: self.own.tracing.clone(),
            access_log: self.own.access_log.clone(),
            max_request_series: self.own.max_request_series,
        }
    }

    fn others_equal(&self, other: &Compiled) -> bool {
        let same_shared = match (&self.shared, &other.shared) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.own.tracing == other.own.tracing
            && self.own.access_log == other.own.access_log
            && self.own.max_request_series == other.own.max_request_series
            && (same_shared
                || (self.services() == other.services()
                    && self.external_hosts() == other.external_hosts()))
    }

    /// The whole configuration, as a proxy applies it.
    pub fn to_config(&self) -> ProxyConfig {
        ProxyConfig {
            listeners: self.listeners().cloned().collect(),
            backends: self.backends().cloned().collect(),
            ..self.others()
        }
    }

    /// The changes from `base`, sent at version `base_version`, to this; `None` when
    /// there are none.
    pub fn delta_from(&self, base: &Compiled, base_version: u64) -> Option<ConfigDelta> {
        let (listeners, removed_listeners) =
            changed(&base.listener_pieces(), &self.listener_pieces());
        let (backends, removed_backends) = changed(&base.backend_pieces(), &self.backend_pieces());
        let others = (!self.others_equal(base)).then(|| self.others());
        let delta = ConfigDelta {
            base_version,
            listeners,
            removed_listeners,
            backends,
            removed_backends,
            others,
        };
        (!delta.is_empty()).then_some(delta)
    }
}
