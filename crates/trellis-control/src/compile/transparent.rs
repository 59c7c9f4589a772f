//! Transparent mode: the listener that takes a sidecar's captured outbound connections
//! and routes each by the address its application dialled, and the Service table the
//! sidecar's DNS answers from.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};

use trellis_api::proto::v1::{
    DestinationTarget, Listener, ListenerProtocol, MeshService, MtlsMode, OriginalDestination,
};

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
            let mut addresses: Vec<String> = vip.iter().map(ToString::to_string).collect();
            if let Some(entry) = self.service(key) {
                addresses.extend(entry.app_addresses.iter().map(ToString::to_string));
            }
            if addresses.is_empty() {
                continue;
            }
            let name = config_name(&format!("transparent-{}-{}", key.namespace, key.name));
            if !names.insert(name.clone()) {
                continue;
            }
            let (protocol, routes) = self.outbound_routes(key, caller, reach);
            listeners.push(Listener {
                name: name.clone(),
                address: UNBOUND.to_string(),
                protocol: listener_protocol(protocol) as i32,
                routes,
                mtls: MtlsMode::Disabled as i32,
                unbound: true,
                ..Default::default()
            });
            targets.push(DestinationTarget {
                addresses,
                listener: name,
            });
        }
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
