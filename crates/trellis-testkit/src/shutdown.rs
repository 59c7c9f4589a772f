//! Ties every task a test server spawns to the server's handle, so dropping
//! the handle stops the accept loop and all open connections with it.

use std::future::Future;

use tokio::sync::watch;

/// Held by a server handle; dropping it stops every task spawned through the
/// paired [`Shutdown`].
#[derive(Debug)]
pub(crate) struct Trigger {
    _sender: watch::Sender<()>,
}

/// Spawns tasks that end when the paired [`Trigger`] is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(watch::Receiver<()>);

/// Creates a connected trigger and shutdown signal.
pub(crate) fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(());
    (Trigger { _sender: tx }, Shutdown(rx))
}

// === impl Shutdown ===

impl Shutdown {
    /// Resolves once the trigger has been dropped.
    pub(crate) async fn signalled(mut self) {
        // Nothing is ever sent, so `changed` only returns once the sender is gone.
        let _ = self.0.changed().await;
    }

    /// Runs `task` on the runtime until it finishes or the server is dropped.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let signalled = self.clone().signalled();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = signalled => {}
            }
        });
    }
}
