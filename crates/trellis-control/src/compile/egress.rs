//! ExternalServices: hosts outside the mesh that a transparent sidecar knows as
//! declared destinations.
//!
//! Every ExternalService applies to every transparent proxy of the mesh. Each of its
//! hosts gets a virtual IP ([`crate::vip`], recorded under the namespace
//! [`EXTERNAL_VIP_NAMESPACE`]), which the sidecar's DNS answers for the host
//! (`externalHosts`). For each host and port the proxy gets:
//!
//! - an unbound listener `egress-<namespace>-<name>-<host>-<port>` with `egress` set,
//!   protocol `tls` (the application's TLS, routed by server name), `http1` (`http`
//!   and `https`) or `tcp`, and one route matching the host (none for `tcp`), so a
//!   request or ClientHello naming another host is refused and counted;
//! - a backend of the same name whose endpoint is the host name and the port on the
//!   host (`targetPort`), resolved by the proxy (`resolution: dns`), or the
//!   `addresses` (`static`); for `https` it opens TLS (`originateTls`) with the server
//!   name `tls.serverName`, else the host, checked against `tls.caCertificates`, else
//!   `tls.caFile`, else the proxy host's CA store;
//! - original-destination targets `<virtual IP>:<port>` and, for `static`, each
//!   `<address>:<port>`, after the mesh's Services (which keep an address they share).
//!
//! Two ExternalServices declaring one host share its virtual IP; for a port both
//! declare, the first by namespace and name takes the connections.

use std::collections::HashSet;

use trellis_api::external::{ExternalProtocol, ExternalServiceSpec, Resolution};
use trellis_api::proto::v1::{
    Backend, BackendProtocol, DestinationTarget, Endpoint, ExternalHost, Listener,
    ListenerProtocol, LoadBalancer, MtlsMode, OriginateTls, Route, RouteMatch, WeightedBackend,
};

use super::names::config_name;
use super::transparent::UNBOUND;
use super::{MeshIndex, ServiceKey};

/// The namespace external hosts' virtual IPs are recorded under. Not a valid namespace
/// name, so no Service can have it.
pub const EXTERNAL_VIP_NAMESPACE: &str = "~external";

/// What ExternalServices add to a transparent proxy's configuration.
#[derive(Debug, Default)]
pub(super) struct Egress {
    pub listeners: Vec<Listener>,
    pub backends: Vec<Backend>,
    /// For the original-destination listener, after the Services' targets.
    pub targets: Vec<DestinationTarget>,
    /// Every host with a virtual IP, sorted, for the sidecar's DNS.
    pub hosts: Vec<ExternalHost>,
}

/// The name of the listener and the backend of one host and port of an ExternalService.
pub fn egress_name(service: &ServiceKey, host: &str, port: u16) -> String {
    config_name(&format!(
        "egress-{}-{}-{host}-{port}",
        service.namespace, service.name
    ))
}

/// The key an external host's virtual IP is recorded under.
pub fn external_host_key(host: &str) -> ServiceKey {
    ServiceKey::new(EXTERNAL_VIP_NAMESPACE, host.to_ascii_lowercase())
}

impl MeshIndex {
    /// The virtual-IP keys of every declared external host.
    pub fn external_host_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.tables.external_hosts.iter()
    }

    /// The listeners, backends, targets and DNS entries of every ExternalService,
    /// taking listener names from `names`.
    pub(super) fn egress(&self, names: &mut HashSet<String>) -> Egress {
        let mut egress = Egress::default();
        for key in self.external_host_keys() {
            if let Some(ip) = self.vip(key) {
                egress.hosts.push(ExternalHost {
                    host: key.name.clone(),
                    virtual_ip: ip.to_string(),
                });
            }
        }
        for (service, spec) in &self.tables.external {
            for host in &spec.hosts {
                let vip = self.vip(&external_host_key(host));
                for port in &spec.ports {
                    let name = egress_name(service, host, port.port);
                    if !names.insert(name.clone()) {
                        continue;
                    }
                    let mut addresses: Vec<String> =
                        vip.iter().map(|ip| format!("{ip}:{}", port.port)).collect();
                    if spec.resolution == Resolution::Static {
                        addresses.extend(
                            spec.addresses
                                .iter()
                                .map(|a| std::net::SocketAddr::new(a.0, port.port).to_string()),
                        );
                    }
                    egress.listeners.push(listener(&name, host, port.protocol));
                    egress.backends.push(backend(&name, host, port, spec));
                    if !addresses.is_empty() {
                        egress.targets.push(DestinationTarget {
                            addresses,
                            listener: name,
                            workload: None,
                        });
                    }
                }
            }
        }
        egress
    }
}

impl MeshIndex {
    /// For the HTTP proxy listener (explicit mode): a route per host and `http` or
    /// `https` port of every ExternalService, taking requests for `host:port` (and for
    /// `host` alone on port 80, as a URL without a port means), and their backends.
    pub(super) fn http_proxy_egress(&self) -> (Vec<Route>, Vec<Backend>) {
        let mut routes = Vec::new();
        let mut backends = Vec::new();
        for (service, spec) in &self.tables.external {
            for port in &spec.ports {
                let plain_http = matches!(
                    port.protocol,
                    ExternalProtocol::Http | ExternalProtocol::Https
                );
                for host in &spec.hosts {
                    let name = egress_name(service, host, port.port);
                    // `host:port` is what a CONNECT names, and an absolute URL off port
                    // 80. A tls or tcp port is only reached through a tunnel, whose
                    // bytes (the client's own TLS) pass through unopened.
                    let mut hosts = vec![format!("{host}:{}", port.port)];
                    if plain_http && port.port == 80 {
                        hosts.insert(0, host.clone());
                    }
                    routes.push(route(&name, &name, hosts));
                    backends.push(backend(&name, host, port, spec));
                }
            }
        }
        (routes, backends)
    }
}

fn listener(name: &str, host: &str, protocol: ExternalProtocol) -> Listener {
    let (protocol, hosts) = match protocol {
        ExternalProtocol::Tls => (ListenerProtocol::Tls, vec![host.to_string()]),
        ExternalProtocol::Http | ExternalProtocol::Https => {
            (ListenerProtocol::Http1, vec![host.to_string()])
        }
        // Bytes name no host: the virtual IP the application dialled is the check.
        ExternalProtocol::Tcp => (ListenerProtocol::Tcp, Vec::new()),
    };
    Listener {
        name: name.to_string(),
        address: UNBOUND.to_string(),
        protocol: protocol as i32,
        routes: vec![route(host, name, hosts)],
        mtls: MtlsMode::Disabled as i32,
        unbound: true,
        egress: true,
        ..Default::default()
    }
}

/// A route named `name` for requests or connections naming one of `hosts` (any, when
/// empty), to the backend `backend`.
fn route(name: &str, backend: &str, hosts: Vec<String>) -> Route {
    Route {
        name: name.to_string(),
        r#match: (!hosts.is_empty()).then(|| RouteMatch {
            hosts,
            ..Default::default()
        }),
        backends: vec![WeightedBackend {
            name: backend.to_string(),
            weight: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn backend(
    name: &str,
    host: &str,
    port: &trellis_api::external::ExternalPort,
    spec: &ExternalServiceSpec,
) -> Backend {
    let host_port = port.host_port();
    let endpoint = |address: String, hostname: &str| Endpoint {
        address,
        weight: 1,
        hostname: hostname.to_string(),
        ..Default::default()
    };
    let endpoints = match spec.resolution {
        Resolution::Dns => vec![endpoint(format!("0.0.0.0:{host_port}"), host)],
        Resolution::Static => spec
            .addresses
            .iter()
            .map(|a| endpoint(std::net::SocketAddr::new(a.0, host_port).to_string(), ""))
            .collect(),
    };
    let originate_tls = (port.protocol == ExternalProtocol::Https).then(|| {
        let tls = spec.tls.clone().unwrap_or_default();
        OriginateTls {
            server_name: tls.server_name.unwrap_or_else(|| host.to_string()),
            ca_pem: tls.ca_certificates.unwrap_or_default(),
            ca_file: tls.ca_file.unwrap_or_default(),
        }
    });
    Backend {
        name: name.to_string(),
        protocol: BackendProtocol::Http1 as i32,
        endpoints,
        load_balancer: LoadBalancer::Ewma as i32,
        originate_tls,
        ..Default::default()
    }
}
