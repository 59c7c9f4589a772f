//! Graceful shutdown as a value: one `Drain` per proxy that every listener and
//! connection watches, and a count of connections still open so shutdown knows when the
//! last one has finished.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// The drain signal and the connections it waits for.
#[derive(Debug, Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    signal: watch::Sender<bool>,
    open: AtomicUsize,
    all_closed: Notify,
}

/// Held by every open connection; dropping it tells the drain the connection is gone.
#[derive(Debug)]
pub struct ConnectionGuard {
    inner: Arc<Inner>,
}

/// What a connection watches to learn that it should finish.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<bool>,
}

impl Drain {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                signal: watch::channel(false).0,
                open: AtomicUsize::new(0),
                all_closed: Notify::new(),
            }),
        }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.inner.signal.subscribe(),
        }
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.signal.borrow()
    }

    /// Registers an open connection.
    pub fn track(&self) -> ConnectionGuard {
        self.inner.open.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard {
            inner: self.inner.clone(),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Signals every watcher, then waits until every tracked connection has closed or
    /// `deadline` passes. Returns the number of connections still open at the end.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.inner.signal.send_replace(true);
        let wait_closed = async {
            loop {
                let notified = self.inner.all_closed.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait_closed).await;
        self.open_connections()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.all_closed.notify_waiters();
        }
    }
}

impl Watch {
    /// Resolves once draining has started.
    pub async fn signaled(&mut self) {
        // An error means the `Drain` is gone, which is a drain as well.
        let _ = self.rx.wait_for(|draining| *draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_connections_then_returns() {
        let drain = Drain::new();
        let guard = drain.track();
        let mut watch = drain.watch();
        let conn = tokio::spawn(async move {
            watch.signaled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(guard);
        });
        assert_eq!(drain.drain(Duration::from_secs(5)).await, 0);
        conn.await.expect("connection task");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let drain = Drain::new();
        let _stuck = drain.track();
        assert_eq!(drain.drain(Duration::from_secs(1)).await, 1);
        assert!(drain.is_draining());
    }
}
