//! The control plane's side of `trellis tap`: each tap asked for through the API is
//! registered here, every session whose workload belongs to the tapped service starts
//! it on its proxy (`TapStart`), and the events the proxies send back are handed to the
//! API stream that asked. When the stream ends (its client went away, or it had enough)
//! the tap is removed and the sessions stop it on their proxies (`TapStop`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use trellis_api::proto::v1::{TapEvent, TapStart};

/// Events buffered per tap for its API stream; more are dropped.
const BUFFER: usize = 256;

/// The taps running through this control plane.
#[derive(Debug)]
pub struct TapHub {
    next: AtomicU64,
    taps: Mutex<HashMap<String, Running>>,
    /// Bumped on every start and stop, so sessions recompute their proxies' taps.
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct Running {
    service: String,
    namespace: String,
    start: TapStart,
    tx: mpsc::Sender<TapEvent>,
}

/// One tap's events, for as long as it is held.
#[derive(Debug)]
pub struct TapStream {
    id: String,
    pub events: mpsc::Receiver<TapEvent>,
    hub: Arc<TapHub>,
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.hub.remove(&self.id);
    }
}

impl Default for TapHub {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(1),
            taps: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
        }
    }
}

impl TapHub {
    /// Starts a tap on the proxies of `namespace/service` with `filter` (its id is
    /// assigned here).
    pub fn open(
        self: &Arc<Self>,
        service: &str,
        namespace: &str,
        mut filter: TapStart,
    ) -> TapStream {
        let id = format!("tap-{}", self.next.fetch_add(1, Ordering::Relaxed));
        filter.id = id.clone();
        let (tx, events) = mpsc::channel(BUFFER);
        self.lock().insert(
            id.clone(),
            Running {
                service: service.to_owned(),
                namespace: namespace.to_owned(),
                start: filter,
                tx,
            },
        );
        self.changes.send_modify(|n| *n += 1);
        TapStream {
            id,
            events,
            hub: self.clone(),
        }
    }

    fn remove(&self, id: &str) {
        if self.lock().remove(id).is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// The taps a proxy of `namespace/service` should run.
    pub fn for_service(&self, service: &str, namespace: &str) -> Vec<TapStart> {
        self.lock()
            .values()
            .filter(|t| t.service == service && t.namespace == namespace)
            .map(|t| t.start.clone())
            .collect()
    }

    /// Hands a proxy's event to its tap's stream; dropped if the stream is behind or
    /// the tap has ended.
    pub fn deliver(&self, event: TapEvent) {
        if let Some(tap) = self.lock().get(&event.tap_id) {
            let _ = tap.tx.try_send(event);
        }
    }

    /// Follows starts and stops.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.taps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tap_lives_as_long_as_its_stream() {
        let hub = Arc::new(TapHub::default());
        let mut changes = hub.subscribe();
        let mut stream = hub.open("books", "default", TapStart::default());
        assert!(changes.has_changed().expect("open"));
        changes.mark_unchanged();
        let taps = hub.for_service("books", "default");
        assert_eq!(taps.len(), 1);
        assert!(hub.for_service("books", "shop").is_empty());
        let id = taps[0].id.clone();
        hub.deliver(TapEvent {
            tap_id: id.clone(),
            path: "/books".into(),
            ..TapEvent::default()
        });
        hub.deliver(TapEvent {
            tap_id: "someone-else".into(),
            ..TapEvent::default()
        });
        assert_eq!(stream.events.recv().await.expect("event").path, "/books");
        assert!(stream.events.try_recv().is_err());
        drop(stream);
        assert!(changes.has_changed().expect("closed"));
        assert!(hub.for_service("books", "default").is_empty());
    }
}
