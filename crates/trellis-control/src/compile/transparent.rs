//! Transparent mode: the listener that takes a sidecar's captured outbound connections
//! and routes each by the address its application dialled, and the Service table the
//! sidecar's DNS answers from.
//!
//! Each Service gets an unbound listener `transparent-<namespace>-<service>` for its
//! virtual IP (every port), with the routes of its primary port. A port routed otherwise (routes attached to that port only, or
//! another protocol) gets a listener of its own, `…-<port>`, for `VIP:port`, which the
//! original-destination table prefers to the bare VIP; ports routed alike share one.
//!
//! A workload's application addresses (`address:port`) are targets of their own, for
//! that workload's sidecar: a call to one Pod's IP reaches that Pod, over mTLS, as its
//! client sent it, not balanced over a Service that selects the Pod.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};

use trellis_api::proto::v1::{
    DestinationTarget, Endpoint, Listener, ListenerProtocol, MeshService, MtlsMode,
    OriginalDestination, Route,
};
use trellis_api::service::AppProtocol;

use super::names::config_name;
use super::{listener_protocol, Caller, MeshIndex, ServiceKey, TRANSPARENT_LISTENER};

/// What transparent mode adds to a proxy's configuration.
pub(super) struct Transparent {
    /// The original-destination listener and one unbound listener per Service.
    pub listeners: Vec<Listener>,
    /// Every Service with a virtual IP, sorted.
    pub services: Vec<MeshService>,
}

/// Where an unbound listener is said to be: it is never bound, and port 0 keeps it out
/// of the proxy's check for listeners sharing an address.
pub(super) const UNBOUND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl MeshIndex {
    /// The listeners for the proxy of `caller` whose captured connections arrive on
    /// loopback port `port`; records the Services they send to in `reach`, and takes
    /// the listener names it uses from `names`.
    pub(super) fn transparent(
        &self,
        caller: &Caller<'_>,
        port: u16,
        names: &mut HashSet<String>,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> Transparent {
        let mut keys: Vec<&ServiceKey> = self.tables.services.keys().collect();
        keys.sort();
        let mut listeners = Vec::new();
        let mut targets = Vec::new();
        let mut services = Vec::new();
        names.insert(TRANSPARENT_LISTENER.to_string());
        for key in keys {
            let vip = self.vip(key);
            if let Some(ip) = vip {
                services.push(MeshService {
                    name: key.name.clone(),
                    namespace: key.namespace.clone(),
                    virtual_ip: ip.to_string(),
                });
            }
            let Some(ip) = vip else {
                continue;
            };
            let base = format!("transparent-{}-{}", key.namespace, key.name);
            for (i, group) in self.port_groups(key, caller, reach).into_iter().enumerate() {
                // The first group holds the primary port: the virtual IP on every port.
                // Each other one, its ports of the VIP.
                let (name, addresses) = match i {
                    0 => (config_name(&base), vec![ip.to_string()]),
                    _ => (
                        config_name(&format!("{base}-{}", group.ports[0])),
                        group
                            .ports
                            .iter()
                            .map(|p| SocketAddr::new(ip.into(), *p).to_string())
                            .collect(),
                    ),
                };
                if !names.insert(name.clone()) {
                    continue;
                }
                listeners.push(Listener {
                    name: name.clone(),
                    address: UNBOUND.to_string(),
                    protocol: listener_protocol(group.protocol) as i32,
                    routes: group.routes,
                    mtls: MtlsMode::Disabled as i32,
                    unbound: true,
                    ..Default::default()
                });
                targets.push(DestinationTarget {
                    addresses,
                    listener: name,
                    workload: None,
                });
            }
        }
        // A call to a workload's own address is for that workload, whichever Services
        // select it: its sidecar takes the bytes as they are.
        targets.extend(
            self.tables
                .workload_sidecars
                .iter()
                .map(|w| DestinationTarget {
                    addresses: w.apps.iter().map(ToString::to_string).collect(),
                    listener: String::new(),
                    workload: Some(Endpoint {
                        address: w.inbound.to_string(),
                        weight: 1,
                        identity: w.identity.clone(),
                        ..Default::default()
                    }),
                }),
        );
        listeners.push(Listener {
            name: TRANSPARENT_LISTENER.to_string(),
            address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port).to_string(),
            protocol: ListenerProtocol::Auto as i32,
            mtls: MtlsMode::Disabled as i32,
            original_destination: Some(OriginalDestination {
                targets,
                egress: self.tables.mesh.egress as i32,
            }),
            ..Default::default()
        });
        Transparent {
            listeners,
            services,
        }
    }
}

/// Ports of one Service that are routed alike: the same protocol and routes.
struct PortGroup {
    /// Declared order; empty for a Service whose ports are not known.
    ports: Vec<u16>,
    protocol: AppProtocol,
    routes: Vec<Route>,
}

impl MeshIndex {
    /// The Service's ports grouped by how they are routed, the primary port's group
    /// first; one group for a Service whose ports are not known. Ports alike share a
    /// listener, so a Service whose routes attach to no port in particular keeps one.
    fn port_groups(
        &self,
        key: &ServiceKey,
        caller: &Caller<'_>,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> Vec<PortGroup> {
        let declared: Vec<u16> = self
            .service(key)
            .map(|s| s.ports.iter().map(|p| p.port).collect())
            .unwrap_or_default();
        if declared.is_empty() {
            let (protocol, routes) = self.port_routes(key, None, caller, reach);
            return vec![PortGroup {
                ports: Vec::new(),
                protocol,
                routes,
            }];
        }
        let mut groups: Vec<PortGroup> = Vec::new();
        for port in declared {
            let (protocol, routes) = self.port_routes(key, Some(port), caller, reach);
            match groups
                .iter_mut()
                .find(|g| g.protocol == protocol && g.routes == routes)
            {
                Some(group) => group.ports.push(port),
                None => groups.push(PortGroup {
                    ports: vec![port],
                    protocol,
                    routes,
                }),
            }
        }
        groups
    }
}
