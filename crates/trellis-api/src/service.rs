//! `Service` and `Workload` (`trellis.dev/v1alpha1`): what a name stands for, and the
//! instances behind it. A Service selects Workloads by their `metadata.labels`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Checked, ValidationError};
use crate::meta::DEFAULT_NAMESPACE;
use crate::validate::{self, int_serde};

/// Most ports a Service or Workload may declare.
pub const MAX_PORTS: usize = 64;

/// The protocol spoken on a port, which spares the proxy from detecting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 (or HTTP/2 if the client starts with the preface).
    #[default]
    Http,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// gRPC over HTTP/2; errors are answered as gRPC statuses.
    Grpc,
    /// Opaque TCP.
    Tcp,
    /// TLS that the application terminates itself: the mesh forwards its connections
    /// by the server name of their ClientHello (`TLSRoute`) without opening them.
    Tls,
}

impl AppProtocol {
    /// Whether the mesh carries the port's connections as bytes, without reading
    /// requests.
    pub fn is_opaque(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }
}

/// A set of workloads chosen by label, reachable by the Service's name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Workloads whose labels include all of these belong to the Service; not empty.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Ports the Service listens on; at least one. With more than one, each is named.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// What a request to one of its ports gets when routes are attached to that port and
    /// none matches. Default `service`.
    #[serde(default, skip_serializing_if = "Unmatched::is_default")]
    pub unmatched: Unmatched,
}

/// What a request that no route attached to its Service's port matches gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Unmatched {
    /// It goes to the Service's own workloads, as if no route were attached: routes
    /// only divert the requests they match.
    #[default]
    Service,
    /// It gets 404, as the Gateway API's mesh routing (GAMMA) says: once routes are
    /// attached to a port, they alone say where its requests go. Services read from
    /// Kubernetes take this.
    NotFound,
}

impl Unmatched {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Name, a DNS label unique in the Service; routes refer to it as `sectionName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port clients connect to, 1 to 65535.
    #[serde(deserialize_with = "int_serde::required_port")]
    pub port: u16,
    /// Port on the workloads. Default: `port`.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_port: Option<u16>,
    /// Protocol on the port. Default `http`.
    #[serde(default)]
    pub app_protocol: AppProtocol,
}

impl ServicePort {
    /// The port on the workloads: `targetPort`, else `port`.
    pub fn workload_port(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// One registered instance of an application. Its labels are its `metadata.labels`;
/// its health is the `Ready` condition in its status. Written by `trellis run` and the
/// proxy rather than by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Address the workload's sidecar is reached at.
    #[serde(deserialize_with = "validate::ip_serde::deserialize")]
    pub address: IpAddr,
    /// Ports the application listens on. None: the application only makes calls
    /// (a batch job, a CLI), and the workload is never an endpoint of its Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadPort>,
    /// Port of the sidecar's inbound listener, where mesh traffic for the workload
    /// arrives. Unset: the default 7143.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub inbound_port: Option<u16>,
    /// Service account, the identity in the workload's SPIFFE ID. Default `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Failure domain, for locality-aware balancing. Unset: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Version of the sidecar proxy, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
}

fn default_service_account() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// One port of a Workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadPort {
    /// Name, a DNS label unique in the Workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port the application listens on, 1 to 65535.
    #[serde(deserialize_with = "int_serde::required_port")]
    pub port: u16,
    /// Protocol on the port. Unset: the Service's `appProtocol`, else detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
}

// === checks ===

impl ServiceSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        if self.selector.is_empty() {
            return Err(ValidationError::new(
                "spec.selector",
                "must select workloads by at least one label, e.g. {app: ratings}",
            ));
        }
        validate::labels("spec.selector", &self.selector)?;
        if self.ports.is_empty() {
            return Err(ValidationError::new(
                "spec.ports",
                "at least one port is required",
            ));
        }
        validate::max_items("spec.ports", &self.ports, MAX_PORTS)?;
        for (i, p) in self.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            if self.ports.len() > 1 && p.name.is_none() {
                return Err(ValidationError::new(
                    format!("{at}.name"),
                    "is required when a Service has more than one port",
                ));
            }
            validate::opt_name(&format!("{at}.name"), p.name.as_deref())?;
            validate::port(&format!("{at}.port"), p.port)?;
            validate::opt_port(&format!("{at}.targetPort"), p.target_port)?;
        }
        validate::unique_names("spec.ports", "name", &self.ports, |p| p.name.as_deref())?;
        unique_ports("spec.ports", self.ports.iter().map(|p| p.port))
    }
}

impl WorkloadSpec {
    /// A workload at `address` with no ports and the default service account.
    pub fn new(address: IpAddr) -> Self {
        Self {
            address,
            ports: Vec::new(),
            inbound_port: None,
            service_account: default_service_account(),
            zone: None,
            proxy_version: None,
        }
    }

    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        let a = self.address;
        if a.is_unspecified() || a.is_multicast() {
            return Err(ValidationError::new(
                "spec.address",
                format!("{a} is not an address a workload can be reached at"),
            ));
        }
        validate::max_items("spec.ports", &self.ports, MAX_PORTS)?;
        for (i, p) in self.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            validate::opt_name(&format!("{at}.name"), p.name.as_deref())?;
            validate::port(&format!("{at}.port"), p.port)?;
        }
        validate::unique_names("spec.ports", "name", &self.ports, |p| p.name.as_deref())?;
        unique_ports("spec.ports", self.ports.iter().map(|p| p.port))?;
        validate::opt_port("spec.inboundPort", self.inbound_port)?;
        validate::name("spec.serviceAccount", &self.service_account)?;
        if let Some(zone) = &self.zone {
            let ok = !zone.is_empty()
                && zone.len() <= 63
                && zone
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
            if !ok {
                return Err(ValidationError::new(
                    "spec.zone",
                    format!(
                        "{zone:?} is not a valid zone: 1 to 63 letters, digits, '-', '_' or '.'"
                    ),
                ));
            }
        }
        if let Some(v) = &self.proxy_version {
            if v.len() > 128 || v.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    "spec.proxyVersion",
                    "must be at most 128 characters without control characters",
                ));
            }
        }
        Ok(())
    }
}

fn unique_ports(list: &str, ports: impl Iterator<Item = u16>) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (i, port) in ports.enumerate() {
        if !seen.insert(port) {
            return Err(ValidationError::new(
                format!("{list}[{i}].port"),
                format!("port {port} is declared twice"),
            ));
        }
    }
    Ok(())
}
