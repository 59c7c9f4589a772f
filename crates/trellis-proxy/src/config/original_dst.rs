//! Configuration of transparent mode: the original-destination table of the listener
//! that takes captured outbound connections, and the Services the sidecar's DNS knows.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ListenerConfig};

/// Where captured connections go, by the address their client dialled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginalDestination {
    /// The first target holding the dialled address takes the connection.
    #[serde(default)]
    pub targets: Vec<DestinationTarget>,
    /// What happens to a destination no target holds. Default `allowAny`.
    #[serde(default)]
    pub egress: EgressMode,
}

/// Addresses served by one listener's routes, or by one workload's sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationTarget {
    /// `IP` (every port: a Service's virtual IP) or `IP:PORT`.
    pub addresses: Vec<DestinationAddress>,
    /// An unbound listener (`bind: false`) whose routes serve these connections. Empty
    /// when `workload` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listener: String,
    /// Instead of a listener: the sidecar of the workload whose application these
    /// addresses are. Connections are copied to it over mTLS, untouched by routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadTarget>,
}

/// A workload's sidecar, as the target of calls to its application's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTarget {
    /// Its inbound listener.
    pub address: SocketAddr,
    /// The SPIFFE ID it must prove.
    pub identity: String,
}

/// An address a client may dial: an IP on any port, or one `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DestinationAddress {
    Ip(IpAddr),
    Socket(SocketAddr),
}

/// What a transparent sidecar does with a destination outside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EgressMode {
    /// Connect to the dialled address and copy bytes both ways.
    #[default]
    AllowAny,
    /// Close the connection; counted in `trellis_outbound_refused_total` and logged.
    RegistryOnly,
}

/// A Service of the mesh and its virtual IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshService {
    pub name: String,
    pub namespace: String,
    pub virtual_ip: Ipv4Addr,
}

impl TryFrom<String> for DestinationAddress {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(ip) = s.parse() {
            return Ok(Self::Ip(ip));
        }
        s.parse()
            .map(Self::Socket)
            .map_err(|_| format!("invalid destination {s:?}: expected IP (any port) or IP:PORT"))
    }
}

impl From<DestinationAddress> for String {
    fn from(a: DestinationAddress) -> String {
        a.to_string()
    }
}

impl fmt::Display for DestinationAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Socket(addr) => addr.fmt(f),
        }
    }
}

impl OriginalDestination {
    /// Checks the table of listener `at` (`listeners[i]`) against every listener:
    /// targets name unbound listeners that are not original-destination listeners
    /// themselves, so a connection is dispatched at most once.
    pub(super) fn validate(
        &self,
        at: &str,
        listener: &ListenerConfig,
        all: &[ListenerConfig],
    ) -> Result<(), ConfigError> {
        if !listener.routes.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.routes"),
                "an original-destination listener has no routes: its targets' listeners serve its connections",
            ));
        }
        if !listener.bind {
            return Err(ConfigError::invalid(
                format!("{at}.bind"),
                "an original-destination listener must be bound: captured connections arrive on it",
            ));
        }
        for (j, t) in self.targets.iter().enumerate() {
            if t.addresses.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.originalDestination.targets[{j}].addresses"),
                    "at least one address is required",
                ));
            }
            let field = format!("{at}.originalDestination.targets[{j}].listener");
            if let Some(workload) = &t.workload {
                if !t.listener.is_empty() {
                    return Err(ConfigError::invalid(
                        field,
                        "a target names a listener or a workload, not both",
                    ));
                }
                if let Err(error) = workload.identity.parse::<trellis_identity::SpiffeId>() {
                    return Err(ConfigError::invalid(
                        format!("{at}.originalDestination.targets[{j}].workload.identity"),
                        error.to_string(),
                    ));
                }
                continue;
            }
            let Some(target) = all.iter().find(|l| l.name == t.listener) else {
                return Err(ConfigError::invalid(
                    field,
                    format!("no listener named {:?}", t.listener),
                ));
            };
            if target.bind || target.original_destination.is_some() {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "listener {:?} must be unbound (bind: false) and have no originalDestination",
                        t.listener
                    ),
                ));
            }
        }
        Ok(())
    }
}
