//! A sidecar: a proxy that serves its application from the first moment and then
//! follows its control plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ControlSettings;
use crate::app::StartError;
use crate::{Proxy, ProxyConfig};

/// A running sidecar. Dropping it ends the control-plane session; the proxy itself
/// serves until [`Proxy::shutdown`].
pub struct Sidecar {
    pub proxy: Arc<Proxy>,
    session: JoinHandle<()>,
    serving: watch::Receiver<u64>,
}

impl Sidecar {
    /// Starts the proxy on [`ProxyConfig::sidecar`] (the workload's inbound port in
    /// front of `127.0.0.1:<appPort>`) and opens the session that registers
    /// `settings.workload` and applies each snapshot.
    pub async fn start(settings: ControlSettings) -> Result<Self, StartError> {
        let w = &settings.workload;
        let inbound_port = u16::try_from(w.inbound_port).unwrap_or(0);
        let app_port = u16::try_from(w.app_port).unwrap_or(0);
        let app = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
        let config = ProxyConfig::sidecar(inbound_port, app, settings.local.admin);
        let proxy = Arc::new(Proxy::start(config).await?);
        let (serving_tx, serving) = watch::channel(0);
        let session = tokio::spawn(super::run(proxy.clone(), settings, serving_tx));
        Ok(Self {
            proxy,
            session,
            serving,
        })
    }

    /// Waits until the proxy serves a configuration from the control plane, so that
    /// calls made from then on find their routes.
    pub async fn configured(&self) {
        let mut serving = self.serving.clone();
        // The sender lives as long as the session task, which runs until dropped.
        let _ = serving.wait_for(|version| *version != 0).await;
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.session.abort();
    }
}
