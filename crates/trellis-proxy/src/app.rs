//! Wiring: `Proxy::start` builds the whole data plane from a configuration, top-down,
//! and `Proxy` is the handle that reloads it and drains it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use trellis_identity::{CertStore, TlsError};

use crate::admin;
use crate::config::{ConfigError, ProxyConfig};
use crate::dns::{self, DnsServer, DnsSettings};
use crate::drain::Drain;
use crate::listener::{self, Prebound, Running};
use crate::resilience::metrics::ResilienceMetrics;
use crate::state::Snapshot;
use crate::telemetry::{Metrics, ReloadLabels, WarnLimiter};
use crate::tls::{Identity, TlsState};

/// What every part of a running proxy shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration version in force; replaced whole on reload.
    pub state: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    pub drain: Drain,
    /// The workload identity, once installed, for mTLS.
    pub tls: TlsState,
    /// Requests and connections denied by authorization, logged at most once per
    /// interval.
    pub(crate) authz_warn: WarnLimiter,
    /// Addresses listeners are actually bound to (differs from the config for port 0).
    bound: Mutex<HashMap<String, SocketAddr>>,
    /// Taps the control plane started (`trellis tap`).
    pub taps: crate::tap::Taps,
    /// Spans and their export, when `tracing:` is configured.
    pub tracing: crate::trace::tracer::Tracing,
    /// One line per request, when `accessLog:` is configured.
    pub access_log: crate::access_log::AccessLogs,
    /// Retry budgets, circuit breakers, ejections, concurrency limits, rate limits.
    pub resilience: ResilienceMetrics,
}

impl Shared {
    /// Everything the admin `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        let resilience = self.resilience.encode(&self.state.load());
        crate::resilience::metrics::join(self.metrics.encode(), resilience)
    }

    /// The configuration in force, with the addresses actually bound.
    pub fn effective_config(&self) -> ProxyConfig {
        let mut config = ProxyConfig::clone(&self.state.load().config);
        if let Ok(bound) = self.bound.lock() {
            for l in &mut config.listeners {
                if let Some(addr) = bound.get(&l.name) {
                    l.address = *addr;
                }
            }
        }
        config
    }
}

/// Why the proxy could not start or take a new configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what}: cannot bind {addr}: {error}")]
    Bind {
        what: String,
        addr: SocketAddr,
        // Not a `source`: the message already says it, and error reporters that walk
        // the cause chain would say it twice.
        error: std::io::Error,
    },
    #[error("admin: the admin address cannot change without a restart (running on {running}, new config says {requested})")]
    AdminChanged {
        running: SocketAddr,
        requested: SocketAddr,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<Listeners>,
    admin_addr: SocketAddr,
    admin_task: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
}

/// The listeners serving, and the sockets bound for listeners no configuration has
/// named yet.
#[derive(Debug, Default)]
struct Listeners {
    running: HashMap<String, Running>,
    prebound: Prebound,
}

/// How often pooled connections are checked for idleness.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

impl Proxy {
    /// Binds every listener and the admin server and starts serving.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, StartError> {
        Self::start_with(config, Prebound::default()).await
    }

    /// [`Proxy::start`] with sockets already bound: a listener of this configuration or
    /// of a later one whose address is that of one of them serves on it; the others
    /// stay bound, unserved, until a configuration names them.
    pub async fn start_with(
        config: ProxyConfig,
        mut prebound: Prebound,
    ) -> Result<Proxy, StartError> {
        config.validate()?;
        let admin_socket = listener::bind(config.admin).map_err(|error| StartError::Bind {
            what: "admin".into(),
            addr: config.admin,
            error,
        })?;
        let admin_addr = admin_socket
            .local_addr()
            .map_err(|error| StartError::Bind {
                what: "admin".into(),
                addr: config.admin,
                error,
            })?;
        let sockets = bind_new(&config, &HashMap::new(), &mut prebound)?;
        let tracing = crate::trace::tracer::Tracing::default();
        tracing.configure(config.tracing.as_ref());
        let metrics = Metrics::new();
        metrics.set_max_series(config.max_request_series);
        metrics.count_requests(config.request_metrics);
        let access_log = crate::access_log::AccessLogs::default();
        access_log.configure(config.access_log.as_ref(), &metrics.access_log_dropped);
        let tls = TlsState::default();
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(Snapshot::build(config, None, &tls.slot())),
            metrics,
            access_log,
            drain: Drain::new(),
            tls,
            authz_warn: WarnLimiter::new(),
            bound: Mutex::new(HashMap::new()),
            taps: crate::tap::Taps::default(),
            tracing,
            resilience: ResilienceMetrics::new(),
        });
        let mut running = HashMap::new();
        start_listeners(sockets, &shared, &mut running)?;
        if !prebound.addresses().is_empty() {
            tracing::info!(addresses = ?prebound.addresses(), "bound for listeners to come");
        }
        let admin_task = tokio::spawn(admin::serve(admin_socket, shared.clone()));
        let housekeeping = tokio::spawn(housekeeping(shared.clone()));
        tracing::info!(admin = %admin_addr, listeners = running.len(), "proxy started");
        Ok(Proxy {
            shared,
            listeners: tokio::sync::Mutex::new(Listeners { running, prebound }),
            admin_addr,
            admin_task,
            housekeeping,
        })
    }

    /// The taps the control plane runs on this proxy.
    pub fn taps(&self) -> &crate::tap::Taps {
        &self.shared.taps
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.bound.lock().ok()?.get(name).copied()
    }

    /// The admin `/metrics` text: request metrics and protection metrics.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Installs the workload's certificate store: from now on listeners with `mtls`
    /// terminate mTLS with it, and endpoints with an `identity` are reached over mTLS.
    ///
    /// The TLS configs are built here, once. Renewed certificates and rotated trust
    /// bundles are installed on the same store ([`CertStore::set_credentials`],
    /// [`CertStore::set_trust_bundle`]) and apply to the next handshake; shared HTTP/2
    /// connections to endpoints made with the previous ones are replaced by the next
    /// request. Calling this again replaces the store.
    pub fn set_identity(&self, store: Arc<CertStore>) -> Result<(), TlsError> {
        let identity = Identity::new(store.clone(), self.shared.metrics.tls.clone())?;
        tracing::info!(identity = %identity.id(), "workload identity installed");
        self.shared.tls.install(identity);
        self.shared.metrics.tls.watch_certificates(store);
        Ok(())
    }

    /// Starts the DNS server for the mesh's Services (transparent mode); it answers
    /// from whichever configuration is in force and stops when dropped.
    pub async fn serve_dns(&self, settings: DnsSettings) -> std::io::Result<DnsServer> {
        dns::serve(settings, self.shared.clone()).await
    }

    /// The configuration in force, with bound addresses.
    pub fn effective_config(&self) -> ProxyConfig {
        self.shared.effective_config()
    }

    /// Reads a configuration file and applies it; on any error the running
    /// configuration stays in force and the error is returned.
    pub async fn reload_file(&self, path: &Path) -> Result<(), StartError> {
        let result = match ProxyConfig::load(path) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.into()),
        };
        self.count_reload(&result);
        result
    }

    /// Applies a new configuration without dropping connections or requests: listeners
    /// whose address is unchanged keep their socket, new ones are bound first (so a
    /// bind failure changes nothing), and the new routes apply to the next request on
    /// every connection.
    pub async fn reload(&self, config: ProxyConfig) -> Result<(), StartError> {
        let result = self.apply(config).await;
        self.count_reload(&result);
        result
    }

    fn count_reload(&self, result: &Result<(), StartError>) {
        let labels = ReloadLabels {
            result: if result.is_ok() { "success" } else { "failure" },
        };
        self.shared.metrics.reloads.get_or_create(&labels).inc();
    }

    async fn apply(&self, config: ProxyConfig) -> Result<(), StartError> {
        config.validate()?;
        let running_admin = self.shared.state.load().config.admin;
        // The configured address, or the one bound for it (they differ for port 0).
        if config.admin != running_admin && config.admin != self.admin_addr {
            return Err(StartError::AdminChanged {
                running: running_admin,
                requested: config.admin,
            });
        }
        let mut listeners = self.listeners.lock().await;
        let Listeners { running, prebound } = &mut *listeners;
        let kept: HashMap<String, SocketAddr> = running
            .iter()
            .map(|(name, r)| (name.clone(), r.configured))
            .collect();
        let sockets = bind_new(&config, &kept, prebound)?;
        let wanted: HashMap<String, SocketAddr> = config
            .listeners
            .iter()
            .filter(|l| l.bind)
            .map(|l| (l.name.clone(), l.address))
            .collect();

        let previous = self.shared.state.load_full();
        self.shared.tracing.configure(config.tracing.as_ref());
        self.shared.access_log.configure(
            config.access_log.as_ref(),
            &self.shared.metrics.access_log_dropped,
        );
        let metrics = &self.shared.metrics;
        metrics.set_max_series(config.max_request_series);
        metrics.count_requests(config.request_metrics);
        self.shared.state.store(Arc::new(Snapshot::build(
            config,
            Some(&previous),
            &self.shared.tls.slot(),
        )));

        // Listeners removed or moved stop accepting; their connections carry on.
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, r)| wanted.get(*name) != Some(&r.configured))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                tracing::info!(listener = %name, address = %r.address, "listener stopped");
                r.stop();
            }
            if let Ok(mut bound) = self.shared.bound.lock() {
                bound.remove(&name);
            }
        }
        start_listeners(sockets, &self.shared, running)?;
        tracing::info!(listeners = running.len(), "configuration applied");
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the configured drain
    /// timeout, and returns how many connections were still open at the deadline.
    pub async fn shutdown(&self) -> usize {
        let deadline = self.shared.state.load().config.drain_timeout.get();
        tracing::info!(?deadline, "draining");
        let left = self.shared.drain.drain(deadline).await;
        *self.listeners.lock().await = Listeners::default();
        self.admin_task.abort();
        self.housekeeping.abort();
        left
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.admin_task.abort();
        self.housekeeping.abort();
    }
}

type NewSockets = Vec<(String, SocketAddr, tokio::net::TcpListener)>;

/// Binds the listeners of `config` not already running at the same address, taking the
/// socket from `prebound` where one is bound to that address. On failure, the sockets
/// taken go back.
fn bind_new(
    config: &ProxyConfig,
    kept: &HashMap<String, SocketAddr>,
    prebound: &mut Prebound,
) -> Result<NewSockets, StartError> {
    let mut sockets = Vec::new();
    let mut taken = Vec::new();
    // Unbound listeners are reached through an original-destination listener only.
    for l in config.listeners.iter().filter(|l| l.bind) {
        if kept.get(&l.name) == Some(&l.address) {
            continue;
        }
        let socket = match prebound.take(l.address) {
            Some(socket) => {
                taken.push(l.address);
                tokio::net::TcpListener::from_std(socket)
            }
            None => listener::bind(l.address),
        };
        match socket {
            Ok(socket) => sockets.push((l.name.clone(), l.address, socket)),
            Err(error) => {
                for (_, address, socket) in sockets {
                    if taken.contains(&address) {
                        if let Ok(socket) = socket.into_std() {
                            let _ = prebound.insert(socket);
                        }
                    }
                }
                return Err(StartError::Bind {
                    what: format!("listener {}", l.name),
                    addr: l.address,
                    error,
                });
            }
        }
    }
    Ok(sockets)
}

fn start_listeners(
    sockets: NewSockets,
    shared: &Arc<Shared>,
    running: &mut HashMap<String, Running>,
) -> Result<(), StartError> {
    for (name, configured, socket) in sockets {
        let r =
            listener::spawn(name.clone(), configured, socket, shared.clone()).map_err(|error| {
                StartError::Bind {
                    what: format!("listener {name}"),
                    addr: configured,
                    error,
                }
            })?;
        tracing::info!(listener = %name, address = %r.address, "listening");
        if let Ok(mut bound) = shared.bound.lock() {
            bound.insert(name.clone(), r.address);
        }
        running.insert(name, r);
    }
    Ok(())
}

async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        for endpoint in shared.state.load().endpoints() {
            endpoint.close_idle();
        }
    }
}
