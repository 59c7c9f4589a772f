//! Snapshots as deltas: a proxy that takes them is sent what changed; applying what it
//! is sent gives what a whole snapshot gives; a NACK or a proxy that does not take them
//! gets whole snapshots.

use trellis_api::proto::v1::{
    control_message, proxy_message, ConfigDelta, Nack, ProxyConfig, ProxyMessage, Snapshot,
};

use super::{open_with, reqwest_like, transparent, ControlPlane, Session, ADMIN};

/// A route on `books` that sends requests with header `x-canary` to `books` with the
/// timeout `timeout`.
fn canary_route(timeout: &str) -> String {
    format!(
        r#"{{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {{"name": "canary", "namespace": "shop"}},
        "spec": {{"parentRefs": [{{"kind": "Service", "name": "books"}}],
            "rules": [{{"matches": [{{"headers": [{{"name": "x-canary", "value": "1"}}]}}],
                "timeouts": {{"request": "{timeout}"}},
                "backendRefs": [{{"name": "books", "port": 80}}]}}]}}}}"#
    )
}

impl Session {
    /// The next snapshot.
    async fn snapshot(&mut self) -> Snapshot {
        loop {
            if let Some(control_message::Message::Snapshot(s)) = self.next_message().await.message {
                return s;
            }
        }
    }

    /// The next snapshot, applied to `config` as a proxy applies it.
    async fn follow(&mut self, config: &mut ProxyConfig) -> Snapshot {
        let snapshot = self.snapshot().await;
        match (&snapshot.config, &snapshot.delta) {
            (Some(whole), _) => *config = whole.clone(),
            (None, Some(delta)) => config.apply_delta(delta.clone()),
            (None, None) => panic!("a snapshot with no configuration"),
        }
        snapshot
    }

    /// Follows snapshots until `config` has listeners named `names`.
    async fn follow_until(&mut self, config: &mut ProxyConfig, names: &[&str]) {
        for _ in 0..20 {
            if names
                .iter()
                .all(|name| config.listeners.iter().any(|l| l.name == *name))
            {
                return;
            }
            self.follow(config).await;
        }
        panic!("not all of {names:?} after 20 snapshots");
    }
}

/// A control plane with transparent proxies of `books` (taking whole snapshots) and
/// `web` (taking deltas), once `web` has the listeners for both; and what `web` holds.
async fn books_and_web() -> (ControlPlane, Session, Session, ProxyConfig) {
    let cp = super::control_plane().await;
    let books = open_with(&cp, ADMIN, transparent("books"), false)
        .await
        .expect("books");
    let mut web = open_with(&cp, ADMIN, transparent("web"), true)
        .await
        .expect("web");
    let mut config = ProxyConfig::default();
    let first = web.follow(&mut config).await;
    assert!(first.config.is_some(), "the first snapshot is whole");
    web.follow_until(
        &mut config,
        &["transparent-shop-books", "transparent-shop-web"],
    )
    .await;
    (cp, books, web, config)
}

/// Applies the canary route with `timeout`.
async fn apply_canary(cp: &ControlPlane, timeout: &str) {
    let (status, body) =
        reqwest_like::post(cp, "/api/v1/apply", &canary_route(timeout), Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
}

fn listener_names(delta: &ConfigDelta) -> Vec<&str> {
    delta.listeners.iter().map(|l| l.name.as_str()).collect()
}

#[tokio::test]
async fn a_route_change_is_sent_as_the_one_listener_it_changed() {
    let (cp, _books, mut web, mut config) = books_and_web().await;
    apply_canary(&cp, "3s").await;
    let changed = web.follow(&mut config).await;
    let delta = changed.delta.expect("a delta");
    assert_eq!(changed.config, None);
    assert_eq!(listener_names(&delta), ["transparent-shop-books"]);
    assert!(delta.removed_listeners.is_empty() && delta.removed_backends.is_empty());
    assert!(delta.backends.is_empty(), "{:?}", delta.backends);
    assert_eq!(delta.others, None);

    // What the deltas built is what a proxy that takes whole snapshots is sent.
    let mut whole_web = open_with(&cp, ADMIN, transparent("web"), false)
        .await
        .expect("whole web");
    let whole = whole_web.snapshot().await;
    assert_eq!(whole.version, changed.version);
    assert_eq!(whole.config.as_ref(), Some(&config));

    // The next change reaches it whole.
    apply_canary(&cp, "4s").await;
    let again = whole_web.snapshot().await;
    assert!(again.delta.is_none() && again.config.is_some(), "{again:?}");
    cp.stop().await;
}

#[tokio::test]
async fn after_a_nack_the_next_snapshot_is_whole() {
    let (cp, _books, mut web, mut config) = books_and_web().await;
    apply_canary(&cp, "3s").await;
    let refused = web.follow(&mut config).await;
    assert!(refused.delta.is_some());
    let nack = ProxyMessage {
        message: Some(proxy_message::Message::Nack(Nack {
            version: refused.version,
            error: "refused in a test".into(),
        })),
    };
    web.tx.send(nack).await.expect("nack");

    apply_canary(&cp, "4s").await;
    let next = web.follow(&mut config).await;
    assert!(next.delta.is_none(), "{next:?}");
    assert!(next.version > refused.version);
    cp.stop().await;
}
