//! Snapshots sent as changes: a [`ConfigDelta`] names the listeners and backends that
//! changed, whole, and those removed, so a route change in a large mesh costs each proxy
//! one listener instead of its whole configuration.

use super::v1::{Backend, ConfigDelta, Listener, ProxyConfig};

impl ProxyConfig {
    /// Brings this configuration to the one `delta` was made against it to give.
    /// Listeners and backends stay sorted by name, as the control plane sends them.
    pub fn apply_delta(&mut self, delta: ConfigDelta) {
        replace_named(
            &mut self.listeners,
            delta.listeners,
            &delta.removed_listeners,
            |l| &l.name,
        );
        replace_named(
            &mut self.backends,
            delta.backends,
            &delta.removed_backends,
            |b| &b.name,
        );
        if let Some(others) = delta.others {
            let ProxyConfig {
                listeners: _,
                backends: _,
                services,
                tracing,
                access_log,
                max_request_series,
                external_hosts,
            } = others;
            self.services = services;
            self.tracing = tracing;
            self.access_log = access_log;
            self.max_request_series = max_request_series;
            self.external_hosts = external_hosts;
        }
    }

    /// This configuration without its listeners and backends: what a delta's `others`
    /// carries.
    pub fn others(&self) -> ProxyConfig {
        ProxyConfig {
            listeners: Vec::new(),
            backends: Vec::new(),
            ..self.clone()
        }
    }

    /// The delta that turns `base` into this configuration; `None` when they are equal.
    pub fn delta_from(&self, base: &ProxyConfig, base_version: u64) -> Option<ConfigDelta> {
        let (listeners, removed_listeners) =
            changed_named(&base.listeners, &self.listeners, |l: &Listener| &l.name);
        let (backends, removed_backends) =
            changed_named(&base.backends, &self.backends, |b: &Backend| &b.name);
        let others = self.others();
        let others = (others != base.others()).then_some(others);
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

impl ConfigDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.removed_listeners.is_empty()
            && self.backends.is_empty()
            && self.removed_backends.is_empty()
            && self.others.is_none()
    }
}

/// Replaces the items of `items` named like those of `changed`, adds the others, drops
/// those named in `removed`, and sorts by name.
fn replace_named<T>(
    items: &mut Vec<T>,
    changed: Vec<T>,
    removed: &[String],
    name: impl Fn(&T) -> &String,
) {
    let incoming: std::collections::HashSet<String> =
        changed.iter().map(|c| name(c).clone()).collect();
    items.retain(|item| {
        let n = name(item);
        !incoming.contains(n) && !removed.contains(n)
    });
    items.extend(changed);
    items.sort_by(|a, b| name(a).cmp(name(b)));
}

/// The items of `new` that are not in `old` as they are, and the names of `old` that
/// `new` lacks.
fn changed_named<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
) -> (Vec<T>, Vec<String>) {
    let before: std::collections::HashMap<&String, &T> = old.iter().map(|o| (name(o), o)).collect();
    let after: std::collections::HashSet<&String> = new.iter().map(&name).collect();
    let changed = new
        .iter()
        .filter(|n| before.get(name(n)) != Some(n))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .map(&name)
        .filter(|n| !after.contains(n))
        .cloned()
        .collect();
    (changed, removed)
}

#[cfg(test)]
mod tests {
    use super::super::v1::{MeshService, Route};
    use super::*;

    fn listener(name: &str, route: &str) -> Listener {
        Listener {
            name: name.into(),
            routes: vec![Route {
                name: route.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn backend(name: &str) -> Backend {
        Backend {
            name: name.into(),
            ..Default::default()
        }
    }

    fn config(listeners: Vec<Listener>, backends: Vec<Backend>) -> ProxyConfig {
        ProxyConfig {
            listeners,
            backends,
            ..Default::default()
        }
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_applying_it_gives_the_new_configuration() {
        let old = config(
            vec![listener("a", "1"), listener("b", "1"), listener("c", "1")],
            vec![backend("x"), backend("y")],
        );
        let mut new = config(
            vec![listener("a", "1"), listener("b", "2"), listener("d", "1")],
            vec![backend("x"), backend("z")],
        );
        new.services.push(MeshService {
            name: "books".into(),
            namespace: "shop".into(),
            virtual_ip: "10.0.0.1".into(),
        });
        let delta = new.delta_from(&old, 7).expect("they differ");
        assert_eq!(delta.base_version, 7);
        let names = |ls: &[Listener]| ls.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&delta.listeners), ["b", "d"]);
        assert_eq!(delta.removed_listeners, ["c"]);
        assert_eq!(delta.backends, [backend("z")]);
        assert_eq!(delta.removed_backends, ["y"]);
        assert_eq!(delta.others.as_ref().map(|o| o.services.len()), Some(1));

        let mut applied = old.clone();
        applied.apply_delta(delta);
        assert_eq!(applied, new);
    }

    #[test]
    fn equal_configurations_have_no_delta_and_others_are_sent_only_when_they_change() {
        let old = config(vec![listener("a", "1")], vec![backend("x")]);
        assert_eq!(old.delta_from(&old.clone(), 1), None);
        let new = config(vec![listener("a", "2")], vec![backend("x")]);
        let delta = new.delta_from(&old, 1).expect("a route changed");
        assert_eq!(delta.others, None, "{delta:?}");
        let mut applied = old;
        applied.apply_delta(delta);
        assert_eq!(applied, new);
    }

    #[test]
    fn clearing_a_setting_in_others_clears_it() {
        let mut old = config(Vec::new(), Vec::new());
        old.max_request_series = 500;
        let new = config(Vec::new(), Vec::new());
        let delta = new.delta_from(&old, 3).expect("the setting changed");
        let mut applied = old;
        applied.apply_delta(delta);
        assert_eq!(applied.max_request_series, 0);
    }
}
