//! The configuration a sidecar starts with, before its control plane answers.

use std::net::{Ipv4Addr, SocketAddr};

use super::{
    defaults, BackendConfig, BackendProtocol, EndpointConfig, ListenerConfig, ListenerProtocol,
    LoadBalancer, MtlsMode, ProxyConfig, ResilienceConfig, RouteConfig,
};

/// Listener name of the sidecar's inbound side; the control plane's compiler uses the
/// same, so its first snapshot updates this listener in place instead of rebinding.
pub const INBOUND_LISTENER: &str = "inbound";
/// Backend name of the sidecar's own application.
pub const LOCAL_APP_BACKEND: &str = "local-app";

impl ProxyConfig {
    /// A sidecar's first configuration: its application, reachable on every interface
    /// at `inbound_port` (port 0: a free one), so the workload serves from the first
    /// moment; the control plane's snapshots replace it.
    pub fn sidecar(inbound_port: u16, app: SocketAddr, admin: SocketAddr) -> Self {
        ProxyConfig {
            listeners: vec![ListenerConfig {
                name: INBOUND_LISTENER.into(),
                address: SocketAddr::from((Ipv4Addr::UNSPECIFIED, inbound_port)),
                protocol: ListenerProtocol::Auto,
                detect_timeout: defaults::detect_timeout(),
                idle_timeout: defaults::listener_idle_timeout(),
                header_read_timeout: defaults::header_read_timeout(),
                routes: vec![RouteConfig {
                    name: None,
                    matches: None,
                    backend: Some(LOCAL_APP_BACKEND.into()),
                    backends: vec![],
                    timeout: None,
                    filters: Default::default(),
                    backend_timeout: None,
                    retry: None,
                    fault: None,
                }],
                mtls: MtlsMode::Disabled,
                authorization: None,
                bind: true,
                original_destination: None,
                egress: false,
                connect: false,
                rate_limits: Vec::new(),
            }],
            backends: vec![BackendConfig {
                name: LOCAL_APP_BACKEND.into(),
                protocol: BackendProtocol::Http1,
                endpoints: vec![EndpointConfig {
                    address: app,
                    weight: 1,
                    identity: None,
                    zone: None,
                    hostname: None,
                }],
                load_balancer: LoadBalancer::Ewma,
                hash_on: None,
                locality: None,
                connect_timeout: defaults::connect_timeout(),
                idle_timeout: defaults::pool_idle_timeout(),
                resilience: ResilienceConfig::default(),
                originate_tls: None,
            }],
            admin,
            drain_timeout: defaults::drain_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            services: Vec::new(),
            external_hosts: Vec::new(),
            socket_mark: None,
            resolver: None,
            tracing: None,
            access_log: None,
            max_request_series: None,
            request_metrics: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecar_config_is_valid() {
        let app = SocketAddr::from(([127, 0, 0, 1], 8080));
        let admin = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = ProxyConfig::sidecar(7143, app, admin);
        config.validate().expect("valid");
        assert_eq!(config.listeners[0].address.to_string(), "0.0.0.0:7143");
        assert_eq!(config.backends[0].endpoints[0].address, app);
    }
}
