//! `ExternalService` (`trellis.dev/v1alpha1`): a host outside the mesh that the mesh's
//! applications may call (egress). Under `MeshConfig` `spec.egress.mode: registryOnly`
//! only declared hosts are reachable; under `allowAny` declaring one still gives its
//! calls a name, metrics, and (for `https` ports) TLS opened by the proxy.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Checked, ValidationError};
use crate::validate::{self, int_serde, ip_serde};

/// Most hosts, ports and addresses one ExternalService may declare.
pub const MAX_EXTERNAL_ITEMS: usize = 16;

/// Hosts outside the mesh and the ports they are called on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceSpec {
    /// Exact DNS names (`api.payments.example`); one to 16. Each gets a virtual IP
    /// that the sidecars' DNS answers, so calls to it reach the sidecar.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ports the applications call; one to 16, each port number once.
    #[serde(default)]
    pub ports: Vec<ExternalPort>,
    /// How the proxy finds the host's addresses. Default `dns`.
    #[serde(default)]
    pub resolution: Resolution,
    /// With `resolution: static`, the host's addresses (one to 16); otherwise none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<StaticAddress>,
    /// How the proxy checks the server on `https` ports. Unset: the server name is the
    /// host called, and the certificate must chain to the proxy host's CA store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<OriginationTls>,
}

/// An IP address of a `static` ExternalService.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct StaticAddress(#[serde(deserialize_with = "ip_serde::deserialize")] pub IpAddr);

/// One port of an ExternalService.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalPort {
    /// The port the applications call, 1 to 65535.
    #[serde(deserialize_with = "int_serde::required_port")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 1)))]
    pub port: u16,
    /// What the applications speak on it. Default `tls`.
    #[serde(default)]
    pub protocol: ExternalProtocol,
    /// The port the proxy connects to on the host. Default: `port`. Usually 443 for an
    /// `https` port that the applications call on 80.
    #[serde(
        default,
        deserialize_with = "int_serde::optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    // Absent or a port: `optional_port` reads no null, so the schema allows none.
    #[cfg_attr(feature = "schemars", schemars(with = "u16", range(min = 1)))]
    pub target_port: Option<u16>,
}

impl ExternalPort {
    /// The port on the external host: `targetPort`, else `port`.
    pub fn host_port(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// What the applications speak on an external port, and so what the proxy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExternalProtocol {
    /// The application's own TLS, passed through unopened; the ClientHello's server
    /// name must be one of `hosts`.
    #[default]
    Tls,
    /// Plain HTTP/1.1 to the host; the `Host` header must be one of `hosts`.
    Http,
    /// The application speaks plain HTTP/1.1 and the proxy opens TLS to the host
    /// (TLS origination), checking its certificate as `tls` says.
    Https,
    /// Opaque TCP, passed through; nothing names the host.
    Tcp,
}

impl ExternalProtocol {
    /// The name used in YAML and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Http => "http",
            Self::Https => "https",
            Self::Tcp => "tcp",
        }
    }
}

/// How the proxy finds an external host's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// The proxy resolves the host name when it opens a connection.
    #[default]
    Dns,
    /// The addresses in `addresses`.
    Static,
}

/// What the proxy checks when it opens TLS to the host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginationTls {
    /// Server name sent (SNI) and checked against the certificate. Default: the host
    /// called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM certificates the host's certificate must chain to. Unset: `caFile`, else the
    /// proxy host's CA store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Path of a PEM file on the proxy's host with those certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl ExternalServiceSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        one_to_max("spec.hosts", &self.hosts, "host", "[api.payments.example]")?;
        for (i, host) in self.hosts.iter().enumerate() {
            let at = format!("spec.hosts[{i}]");
            validate::hostname(&at, host)?;
            if host.starts_with("*.") {
                return Err(ValidationError::new(
                    at,
                    format!("{host:?}: wildcard hosts are not supported; list each name"),
                ));
            }
            if self.hosts[..i].contains(host) {
                return Err(ValidationError::new(
                    at,
                    format!("{host:?} is listed twice"),
                ));
            }
        }
        let example = "[{port: 443, protocol: tls}]";
        one_to_max("spec.ports", &self.ports, "port", example)?;
        for (i, p) in self.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            validate::port(&format!("{at}.port"), p.port)?;
            validate::opt_port(&format!("{at}.targetPort"), p.target_port)?;
            if self.ports[..i].iter().any(|q| q.port == p.port) {
                return Err(ValidationError::new(
                    format!("{at}.port"),
                    format!("port {} is listed twice", p.port),
                ));
            }
        }
        self.validate_addresses()?;
        if let Some(tls) = &self.tls {
            self.validate_tls(tls)?;
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Checked {
        match (self.resolution, self.addresses.is_empty()) {
            (Resolution::Static, true) => Err(ValidationError::new(
                "spec.addresses",
                "resolution: static needs at least one address, e.g. [\"192.0.2.10\"]",
            )),
            (Resolution::Dns, false) => Err(ValidationError::new(
                "spec.addresses",
                "addresses are used only with resolution: static; with dns the proxy \
                 resolves the host",
            )),
            _ => validate::max_items("spec.addresses", &self.addresses, MAX_EXTERNAL_ITEMS),
        }
    }

    fn validate_tls(&self, tls: &OriginationTls) -> Checked {
        if !self
            .ports
            .iter()
            .any(|p| p.protocol == ExternalProtocol::Https)
        {
            return Err(ValidationError::new(
                "spec.tls",
                "applies to https ports (TLS opened by the proxy), and no port has \
                 protocol: https",
            ));
        }
        if let Some(name) = &tls.server_name {
            let at = "spec.tls.serverName";
            validate::hostname(at, name)?;
            if name.starts_with("*.") {
                return Err(ValidationError::new(
                    at,
                    format!("{name:?}: a server name is one exact DNS name"),
                ));
            }
        }
        if tls.ca_certificates.is_some() && tls.ca_file.is_some() {
            return Err(ValidationError::new(
                "spec.tls.caFile",
                "give caCertificates or caFile, not both",
            ));
        }
        if let Some(pem) = &tls.ca_certificates {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ValidationError::new(
                    "spec.tls.caCertificates",
                    "expected PEM certificates (-----BEGIN CERTIFICATE-----)",
                ));
            }
        }
        if let Some(path) = &tls.ca_file {
            if !path.starts_with('/') {
                return Err(ValidationError::new(
                    "spec.tls.caFile",
                    format!("{path:?} must be an absolute path on the proxy's host"),
                ));
            }
        }
        Ok(())
    }
}

/// A list of one to [`MAX_EXTERNAL_ITEMS`] entries; `example` shows one in the error.
fn one_to_max<T>(path: &str, items: &[T], what: &str, example: &str) -> Checked {
    if items.is_empty() {
        return Err(ValidationError::new(
            path,
            format!("at least one {what} is required, e.g. {example}"),
        ));
    }
    validate::max_items(path, items, MAX_EXTERNAL_ITEMS)
}

#[cfg(test)]
mod tests {
    use crate::parse_documents;

    #[test]
    fn the_example_reads_with_its_defaults() {
        let text = include_str!("../examples/externalservice.yaml");
        let resources = parse_documents(text).expect("valid");
        let crate::Spec::ExternalService(spec) = &resources[0].spec else {
            panic!("not an ExternalService");
        };
        assert_eq!(spec.hosts, ["api.payments.example"]);
        assert_eq!(spec.ports[0].host_port(), 443);
        assert_eq!(spec.ports[1].host_port(), 443);
        assert_eq!(spec.ports[1].protocol, super::ExternalProtocol::Https);
        assert_eq!(spec.resolution, super::Resolution::Dns);
        let tls = spec.tls.as_ref().expect("tls");
        assert_eq!(tls.server_name, None);
    }
}
