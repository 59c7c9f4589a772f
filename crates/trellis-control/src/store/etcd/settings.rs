//! How to reach an etcd cluster: endpoints, TLS, credentials, the key prefix and the
//! timeouts, and the `etcd://host:port[,host:port…]` form the command line takes.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::store::{StoreError, StoreOptions};

/// The key prefix when none is given: every key of the mesh lives under `/trellis/`.
pub const DEFAULT_PREFIX: &str = "/trellis";

/// The scheme of a store URL that names an etcd cluster.
pub const URL_SCHEME: &str = "etcd://";

/// Interval and timeout of HTTP/2 pings on the connections to etcd, so that a member that
/// vanished without closing its connections (a partition, a powered-off host) is noticed
/// by long-lived watches. etcd refuses pings more often than every 5 s by default.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

/// Where the etcd store's cluster is and how to talk to it. `Debug` does not show the
/// password.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Client endpoints of the cluster's members, `host:port` (or a full `http://` or
    /// `https://` URL). Requests go to any of them; a member that fails is skipped.
    pub endpoints: Vec<String>,
    /// Every key the store writes lives under this prefix, so several meshes can share one
    /// cluster. A trailing `/` is implied. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// TLS to the members; plaintext when `None`.
    pub tls: Option<EtcdTls>,
    /// etcd user and password, when the cluster has authentication enabled.
    pub auth: Option<EtcdAuth>,
    /// How long connecting (and authenticating) may take at start-up. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one store operation may take, retries over other members included,
    /// before it fails with [`StoreError::Unavailable`]. A watch that lost its member
    /// also gives up after this long without finding another. Default 5 s.
    pub request_timeout: Duration,
    /// How many events each watch buffers for a slow consumer; etcd's own flow control
    /// holds the rest. Default 1 024 events.
    pub watch_buffer: NonZeroUsize,
    /// Lifetime of a control plane's lease in the leader election: a leader that dies
    /// is replaced within about this long. At least 2 s. Default 10 s.
    pub lease_ttl: Duration,
}

/// TLS to the etcd members: the CA that signed their certificates and, when the cluster
/// checks client certificates, this client's certificate and key. PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    /// Client certificate and its PKCS#8 (or PKCS#1/SEC1) key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An etcd user's credentials. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

// === impl EtcdSettings ===

impl EtcdSettings {
    /// Settings for a plaintext cluster without authentication at `endpoints`, with the
    /// default prefix and timeouts.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            tls: None,
            auth: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            watch_buffer: StoreOptions::default().watch_buffer,
            lease_ttl: Duration::from_secs(10),
        }
    }

    /// Settings from a store URL, `etcd://host:port[,host:port…]`, with the defaults
    /// otherwise.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| StoreError::Settings {
            reason: format!("store URL {url:?}: {why}; expected etcd://host:port[,host:port…]"),
        };
        let Some(hosts) = url.strip_prefix(URL_SCHEME) else {
            return Err(invalid("unknown scheme"));
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if host.contains('/') || host.contains('@') || host.contains('?') {
                return Err(invalid(&format!("{host:?} is not host:port")));
            }
            match host.rsplit_once(':') {
                Some((name, port)) if !name.is_empty() && port.parse::<u16>().is_ok() => {
                    endpoints.push(host.to_owned());
                }
                _ => return Err(invalid(&format!("{host:?} is not host:port"))),
            }
        }
        Ok(Self::new(endpoints))
    }

    /// The prefix every key is stored under, ending with `/`.
    pub(super) fn root(&self) -> Result<String, StoreError> {
        let trimmed = self.prefix.trim_end_matches('/');
        if self.prefix.is_empty() {
            return Err(StoreError::Settings {
                reason: "the etcd key prefix is empty; give one such as /trellis".to_owned(),
            });
        }
        Ok(format!("{trimmed}/"))
    }

    /// The endpoints as one string, for messages.
    pub(super) fn describe_endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// The client's options: timeouts, keep-alive, TLS (files read now) and credentials.
    pub(super) fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Settings {
                reason: "no etcd endpoint given".to_owned(),
            });
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            // A member cut off from the leader answers at once with "no leader" instead of
            // waiting for a commit that cannot happen, and cancels its watches; the store
            // then tries another member.
            .with_require_leader(true);
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options()?);
        }
        if let Some(auth) = &self.auth {
            options = options
                .with_user(&auth.user, &auth.password)
                // etcd's simple tokens expire after 5 minutes without use.
                .with_auto_token_refresh(true);
        }
        Ok(options)
    }
}

// === impl EtcdTls ===

impl EtcdTls {
    fn options(&self) -> Result<TlsOptions, StoreError> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|error| StoreError::Settings {
                reason: format!("cannot read the etcd {what} {}: {error}", path.display()),
            })
        };
        let mut options =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read(&self.ca, "CA")?));
        if let Some((cert, key)) = &self.identity {
            let cert = read(cert, "client certificate")?;
            let key = read(key, "client key")?;
            options = options.identity(Identity::from_pem(cert, key));
        }
        Ok(options)
    }
}

// === impl EtcdAuth ===

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        let cases: [(&str, Option<&[&str]>); 8] = [
            ("etcd://127.0.0.1:2379", Some(&["127.0.0.1:2379"])),
            (
                "etcd://a:1,b.example:2,[::1]:3",
                Some(&["a:1", "b.example:2", "[::1]:3"]),
            ),
            ("etcd://", None),
            ("etcd://host", None),
            ("etcd://host:port", None),
            ("etcd://a:1,", None),
            ("etcd://a:1/prefix", None),
            ("http://a:1", None),
        ];
        for (url, want) in cases {
            let got = EtcdSettings::from_url(url);
            match (want, got) {
                (Some(want), Ok(settings)) => assert_eq!(settings.endpoints, want, "{url}"),
                (None, Err(error)) => {
                    assert!(
                        error.to_string().contains("etcd://host:port"),
                        "{url}: {error}"
                    )
                }
                (want, got) => panic!("{url}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn root_always_ends_with_one_slash() {
        for (prefix, root) in [
            ("/trellis", "/trellis/"),
            ("/trellis/", "/trellis/"),
            ("mesh-b", "mesh-b/"),
            ("/", "/"),
        ] {
            let mut settings = EtcdSettings::new(vec!["a:1".to_owned()]);
            settings.prefix = prefix.to_owned();
            assert_eq!(settings.root().expect("root"), root, "{prefix}");
        }
        let mut settings = EtcdSettings::new(vec!["a:1".to_owned()]);
        settings.prefix = String::new();
        assert!(settings.root().is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let mut settings = EtcdSettings::new(vec!["a:1".to_owned()]);
        settings.auth = Some(EtcdAuth {
            user: "trellis".to_owned(),
            password: "hunter2".to_owned(),
        });
        let shown = format!("{settings:?}");
        assert!(
            shown.contains("trellis") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
