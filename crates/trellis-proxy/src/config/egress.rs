//! Configuration of calls leaving the mesh: TLS the proxy opens to a server outside
//! it (an ExternalService's `https` port), and the virtual IPs of external hosts that
//! a transparent sidecar's DNS answers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where a host's CA store usually is, first match wins: Debian and Ubuntu, Fedora and
/// RHEL, Alpine and others.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// TLS opened by the proxy to a backend's endpoints: the application sends plain
/// HTTP/1.1, the endpoint gets HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginateTlsConfig {
    /// Sent as SNI; the endpoint's certificate must be valid for it.
    pub server_name: String,
    /// PEM certificates the endpoint's certificate must chain to. Unset: `caFile`,
    /// else the host's CA store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// A PEM file holding those certificates, read when the configuration is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// An external host and the virtual IP the sidecar's DNS answers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalHost {
    /// An exact DNS name, matched without regard to case.
    pub host: String,
    pub virtual_ip: Ipv4Addr,
}

impl OriginateTlsConfig {
    /// The trusted certificates as PEM: `caPem`, the contents of `caFile`, or the
    /// host's CA store.
    pub fn roots_pem(&self) -> Result<String, String> {
        if let Some(pem) = &self.ca_pem {
            return Ok(pem.clone());
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        if let Some(path) = &self.ca_file {
            return read(path);
        }
        let system = SYSTEM_CA_FILES.iter().map(Path::new).find(|p| p.exists());
        match system {
            Some(path) => read(path),
            None => Err(format!(
                "no caPem or caFile, and no CA store of the host at {}",
                SYSTEM_CA_FILES.join(", ")
            )),
        }
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let name_ok = rustls_name(&self.server_name);
        if !name_ok {
            return Err(ConfigError::invalid(
                format!("{at}.serverName"),
                format!("{:?} is not a DNS name", self.server_name),
            ));
        }
        if self.ca_pem.is_some() && self.ca_file.is_some() {
            return Err(ConfigError::invalid(
                format!("{at}.caFile"),
                "give caPem or caFile, not both",
            ));
        }
        if let Some(pem) = &self.ca_pem {
            trellis_identity::origination_client_config(pem, &[])
                .map_err(|e| ConfigError::invalid(format!("{at}.caPem"), e.to_string()))?;
        }
        Ok(())
    }
}

/// Whether `name` is a DNS name a TLS client can ask for (no IP address, no wildcard).
pub(super) fn rustls_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_err()
        && !name.contains('*')
        && trellis_identity::rustls::pki_types::DnsName::try_from(name).is_ok()
}
