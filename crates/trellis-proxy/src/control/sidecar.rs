//! A sidecar: a proxy that serves its application from the first moment and then
//! follows its control plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_api::proto::v1::Workload;

use super::ControlSettings;
use crate::app::StartError;
use crate::{Prebound, Proxy, ProxyConfig};

/// The listening sockets of a sidecar, bound before it registers: the ports its Hello
/// reports are then ones it already holds, and the proxy serves on these same sockets
/// when the control plane's configuration names them. Port 0 lets the kernel choose,
/// so no other process can take the port between the choice and the bind.
#[derive(Debug)]
pub struct SidecarListeners {
    inbound: u16,
    http_proxy: Option<u16>,
    outbound: Option<u16>,
    sockets: Prebound,
}

impl SidecarListeners {
    /// Binds the inbound listener on every interface at `inbound`, the HTTP proxy
    /// listener on loopback at `http_proxy` and the transparent outbound listener on
    /// loopback at `outbound` (`None`: the workload has none), where the control plane
    /// places them.
    pub fn bind(
        inbound: u16,
        http_proxy: Option<u16>,
        outbound: Option<u16>,
    ) -> Result<Self, StartError> {
        let mut sockets = Prebound::default();
        let mut bind = |what: &str, addr: SocketAddr| {
            sockets
                .bind(addr)
                .map(|bound| bound.port())
                .map_err(|error| StartError::Bind {
                    what: what.into(),
                    addr,
                    error,
                })
        };
        let inbound = bind(
            "inbound",
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, inbound)),
        )?;
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let http_proxy = match http_proxy {
            Some(port) => Some(bind("HTTP proxy", loopback(port))?),
            None => None,
        };
        let outbound = match outbound {
            Some(port) => Some(bind("outbound", loopback(port))?),
            None => None,
        };
        Ok(Self {
            inbound,
            http_proxy,
            outbound,
            sockets,
        })
    }

    /// The port the inbound listener is bound to.
    pub fn inbound_port(&self) -> u16 {
        self.inbound
    }

    /// The port the HTTP proxy listener is bound to, if the workload has one.
    pub fn http_proxy_port(&self) -> Option<u16> {
        self.http_proxy
    }

    /// The port the outbound listener is bound to, if the workload has one.
    pub fn outbound_port(&self) -> Option<u16> {
        self.outbound
    }

    /// Writes the bound ports into the workload the sidecar registers.
    fn report(&self, workload: &mut Workload) {
        workload.inbound_port = u32::from(self.inbound);
        workload.http_proxy_port = self.http_proxy.map_or(0, u32::from);
        workload.outbound_port = self.outbound.map_or(0, u32::from);
    }
}

/// A running sidecar. Dropping it ends the control-plane session; the proxy itself
/// serves until [`Proxy::shutdown`].
pub struct Sidecar {
    pub proxy: Arc<Proxy>,
    workload: Workload,
    session: JoinHandle<()>,
    serving: watch::Receiver<u64>,
}

impl Sidecar {
    /// Starts the proxy on [`ProxyConfig::sidecar`] (the inbound socket of
    /// `listeners` in front of `127.0.0.1:<appPort>`) and opens the session that
    /// registers `settings.workload`, with the ports of `listeners`, and applies each
    /// snapshot.
    pub async fn start(
        mut settings: ControlSettings,
        listeners: SidecarListeners,
    ) -> Result<Self, StartError> {
        listeners.report(&mut settings.workload);
        let app_port = u16::try_from(settings.workload.app_port).unwrap_or(0);
        let app = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
        let config = ProxyConfig::sidecar(listeners.inbound, app, settings.local.admin);
        let proxy = Arc::new(Proxy::start_with(config, listeners.sockets).await?);
        let (serving_tx, serving) = watch::channel(0);
        let workload = settings.workload.clone();
        let session = tokio::spawn(super::run(proxy.clone(), settings, serving_tx));
        Ok(Self {
            proxy,
            workload,
            session,
            serving,
        })
    }

    /// The workload registered, with the ports the sidecar is bound to.
    pub fn workload(&self) -> &Workload {
        &self.workload
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
