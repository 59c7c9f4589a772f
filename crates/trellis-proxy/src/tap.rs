//! Live request metadata for `trellis tap`: the control plane starts a tap with a
//! filter over the proxy's session, and the proxy reports every request that matches
//! (method, authority, path, status, latency, identities; never a body) until the tap
//! stops or the session ends.
//!
//! With no tap running, a request costs one atomic load ([`Taps::active`]). Each tap is
//! limited to its events a second, and the queue to the session is bounded: a slow
//! control plane loses events, never slows requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Mutex};
use trellis_api::proto::v1::{TapEvent, TapStart};

/// Events waiting to be sent to the control plane, at most.
const QUEUE: usize = 1024;
/// A tap that asks for no limit gets this many events a second.
const DEFAULT_PER_SECOND: u32 = 100;

/// The taps running on this proxy.
#[derive(Debug)]
pub struct Taps {
    running: ArcSwap<Vec<Arc<Tap>>>,
    tx: mpsc::Sender<TapEvent>,
    rx: Mutex<mpsc::Receiver<TapEvent>>,
    /// Events dropped by the limits.
    pub dropped: AtomicU64,
}

#[derive(Debug)]
struct Tap {
    start: TapStart,
    /// Events sent in the current second, and which second (since the epoch).
    window: AtomicU64,
}

/// What the proxy saw of one request, for the taps.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub inbound: bool,
    pub source_identity: &'a str,
    pub destination_identity: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub grpc_status: Option<u32>,
    pub latency: Duration,
    pub response_bytes: u64,
    pub route: &'a str,
    pub backend: &'a str,
    pub workload: &'a str,
}

impl Default for Taps {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            running: ArcSwap::default(),
            tx,
            rx: Mutex::new(rx),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Taps {
    /// Whether any tap runs: the one check a request pays when none does.
    pub fn active(&self) -> bool {
        !self.running.load().is_empty()
    }

    pub fn start(&self, start: TapStart) {
        let id = start.id.clone();
        self.running.rcu(|taps| {
            let mut next: Vec<Arc<Tap>> =
                taps.iter().filter(|t| t.start.id != id).cloned().collect();
            next.push(Arc::new(Tap {
                start: start.clone(),
                window: AtomicU64::new(0),
            }));
            next
        });
    }

    pub fn stop(&self, id: &str) {
        self.running.rcu(|taps| {
            taps.iter()
                .filter(|t| t.start.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Stops every tap (the session that started them ended).
    pub fn clear(&self) {
        self.running.store(Arc::default());
    }

    /// Reports `seen` to every tap it matches.
    pub fn observe(&self, seen: &Observed<'_>) {
        let running = self.running.load();
        if running.is_empty() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        for tap in running.iter().filter(|t| matches(&t.start, seen)) {
            if !tap.admit(now.as_secs()) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let event = TapEvent {
                tap_id: tap.start.id.clone(),
                unix_nanos: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
                direction: if seen.inbound { "inbound" } else { "outbound" }.into(),
                source_identity: seen.source_identity.into(),
                destination_identity: seen.destination_identity.into(),
                method: seen.method.into(),
                authority: seen.authority.into(),
                path: seen.path.into(),
                status: u32::from(seen.status),
                latency_micros: u64::try_from(seen.latency.as_micros()).unwrap_or(u64::MAX),
                route: seen.route.into(),
                backend: seen.backend.into(),
                workload: seen.workload.into(),
                response_bytes: seen.response_bytes,
                grpc_status: seen.grpc_status,
            };
            if self.tx.try_send(event).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The events to send, for one session at a time.
    pub async fn events(&self) -> tokio::sync::MutexGuard<'_, mpsc::Receiver<TapEvent>> {
        self.rx.lock().await
    }
}

impl Tap {
    /// Whether one more event fits in this second's allowance.
    fn admit(&self, second: u64) -> bool {
        let limit = match self.start.max_per_second {
            0 => DEFAULT_PER_SECOND,
            n => n,
        };
        // The high 44 bits hold the second, the low 20 the count within it.
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (at, count) = (current >> 20, current & 0xf_ffff);
            let next = if at == second & 0xfff_ffff_ffff {
                if count >= u64::from(limit) {
                    return false;
                }
                current + 1
            } else {
                ((second & 0xfff_ffff_ffff) << 20) | 1
            };
            match self
                .window
                .compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

fn matches(filter: &TapStart, seen: &Observed<'_>) -> bool {
    (filter.path_prefix.is_empty() || seen.path.starts_with(&filter.path_prefix))
        && (filter.method.is_empty() || filter.method.eq_ignore_ascii_case(seen.method))
        && (filter.status == 0 || filter.status == u32::from(seen.status))
        && (filter.to.is_empty()
            || seen.authority.contains(&filter.to)
            || seen.backend.contains(&filter.to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(path: &str, status: u16) -> Observed<'_> {
        Observed {
            inbound: true,
            source_identity: "spiffe://trellis.local/ns/default/sa/web",
            destination_identity: "spiffe://trellis.local/ns/default/sa/books",
            method: "GET",
            authority: "books:8080",
            path,
            status,
            grpc_status: None,
            latency: Duration::from_millis(3),
            response_bytes: 42,
            route: "default.books.0",
            backend: "local-app",
            workload: "books-1",
        }
    }

    fn tap(id: &str, path_prefix: &str, status: u32, max_per_second: u32) -> TapStart {
        TapStart {
            id: id.into(),
            path_prefix: path_prefix.into(),
            status,
            max_per_second,
            ..TapStart::default()
        }
    }

    #[tokio::test]
    async fn taps_report_what_matches_until_stopped() {
        let taps = Taps::default();
        assert!(!taps.active());
        taps.observe(&seen("/books", 200));
        taps.start(tap("a", "/books", 0, 0));
        taps.start(tap("b", "", 500, 0));
        assert!(taps.active());
        taps.observe(&seen("/books/1", 200));
        taps.observe(&seen("/cart", 500));
        taps.observe(&seen("/cart", 200));
        let mut events = taps.events().await;
        let first = events.try_recv().expect("a matched");
        assert_eq!(
            (first.tap_id.as_str(), first.path.as_str()),
            ("a", "/books/1")
        );
        assert_eq!(first.latency_micros, 3000);
        assert_eq!(first.direction, "inbound");
        let second = events.try_recv().expect("b matched");
        assert_eq!((second.tap_id.as_str(), second.status), ("b", 500));
        assert!(events.try_recv().is_err(), "nothing else matched");
        drop(events);
        taps.stop("a");
        taps.observe(&seen("/books/2", 200));
        assert!(taps.events().await.try_recv().is_err());
        taps.clear();
        assert!(!taps.active());
    }

    #[tokio::test]
    async fn a_tap_sends_at_most_its_events_a_second() {
        let taps = Taps::default();
        taps.start(tap("a", "", 0, 5));
        for _ in 0..50 {
            taps.observe(&seen("/", 200));
        }
        let mut events = taps.events().await;
        let mut got = 0;
        while events.try_recv().is_ok() {
            got += 1;
        }
        // Five in one second; a second boundary in the middle allows five more.
        assert!((5..=10).contains(&got), "{got}");
        assert!(taps.dropped.load(Ordering::Relaxed) >= 40);
    }
}
