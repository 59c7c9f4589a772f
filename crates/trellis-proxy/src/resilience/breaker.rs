//! Circuit-breaking limits on one backend: how many connections it may have, how many
//! requests may wait for one, and how many may be in flight. What overflows is
//! refused at once (the proxy answers 503 with the reason) rather than queued, so a
//! slow backend holds a bounded amount of its callers' memory and sockets.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A backend's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerConfig {
    pub max_connections: Option<usize>,
    pub max_pending_requests: Option<usize>,
    pub max_requests: Option<usize>,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    PendingRequests,
    Requests,
}

impl Overflow {
    /// For the `trellis-error` header and the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Overflow::Connections => "circuit breaker: max connections",
            Overflow::PendingRequests => "circuit breaker: max pending requests",
            Overflow::Requests => "circuit breaker: max requests",
        }
    }
}

/// One backend's breaker, shared by every request to it.
#[derive(Debug, Default)]
pub struct Breaker {
    config: BreakerConfig,
    gauges: [Arc<AtomicUsize>; 3],
    rejected: [AtomicU64; 3],
}

/// Held while the connection, pending request or request it counts lives.
#[derive(Debug)]
pub struct Permit {
    gauge: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// A permit for one more of `kind`, or the overflow if its limit is reached.
    pub fn try_acquire(&self, kind: Overflow) -> Result<Permit, Overflow> {
        let i = kind as usize;
        let limit = match kind {
            Overflow::Connections => self.config.max_connections,
            Overflow::PendingRequests => self.config.max_pending_requests,
            Overflow::Requests => self.config.max_requests,
        };
        let gauge = &self.gauges[i];
        let taken = gauge.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match limit {
            Some(limit) if n >= limit => None,
            _ => Some(n + 1),
        });
        match taken {
            Ok(_) => Ok(Permit {
                gauge: gauge.clone(),
            }),
            Err(_) => {
                self.rejected[i].fetch_add(1, Ordering::Relaxed);
                Err(kind)
            }
        }
    }

    /// How many of `kind` are held now.
    pub fn in_use(&self, kind: Overflow) -> usize {
        self.gauges[kind as usize].load(Ordering::Acquire)
    }

    /// How many of `kind` were refused so far.
    pub fn rejected(&self, kind: Overflow) -> u64 {
        self.rejected[kind as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_what_overflows_and_frees_on_drop() {
        let breaker = Breaker::new(BreakerConfig {
            max_connections: Some(1),
            max_pending_requests: None,
            max_requests: Some(2),
        });
        let first = breaker.try_acquire(Overflow::Requests).expect("first");
        let second = breaker.try_acquire(Overflow::Requests).expect("second");
        assert_eq!(
            breaker.try_acquire(Overflow::Requests).err(),
            Some(Overflow::Requests)
        );
        assert_eq!(breaker.rejected(Overflow::Requests), 1);
        drop(first);
        let third = breaker.try_acquire(Overflow::Requests).expect("freed");
        assert_eq!(breaker.in_use(Overflow::Requests), 2);

        let connection = breaker.try_acquire(Overflow::Connections).expect("one");
        assert!(breaker.try_acquire(Overflow::Connections).is_err());
        drop(connection);
        assert!(breaker.try_acquire(Overflow::Connections).is_ok());

        // No limit: never refused.
        let pending: Vec<_> = (0..1000)
            .map(|_| breaker.try_acquire(Overflow::PendingRequests))
            .collect();
        assert!(pending.iter().all(Result::is_ok));
        drop((second, third));
        assert_eq!(breaker.in_use(Overflow::Requests), 0);
    }

    #[test]
    fn concurrent_acquirers_never_exceed_the_limit() {
        let breaker = Arc::new(Breaker::new(BreakerConfig {
            max_requests: Some(8),
            ..BreakerConfig::default()
        }));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (breaker, peak) = (breaker.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Ok(permit) = breaker.try_acquire(Overflow::Requests) {
                            peak.fetch_max(breaker.in_use(Overflow::Requests), Ordering::Relaxed);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(peak.load(Ordering::Relaxed) <= 8);
        assert_eq!(breaker.in_use(Overflow::Requests), 0);
    }
}
