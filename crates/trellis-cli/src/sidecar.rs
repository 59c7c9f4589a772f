//! A sidecar proxy under the control plane, as `trellis run` and `trellis proxy
//! --control` start it: an inbound listener in front of the local app from the first
//! moment, then whatever configuration the control plane sends.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use trellis_api::proto::v1::{Upstream, Workload};
use trellis_proxy::config::defaults;
use trellis_proxy::control::{self, ControlSettings, LocalSettings, SidecarListeners};
use trellis_proxy::Proxy;

use crate::client::{Client, ClientArgs};

/// Flags shared by `trellis run` and `trellis proxy --service … --app …`.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// The control plane (its HTTP API URL and token); the sidecar asks it where its
    /// proxy API is.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Control-plane gRPC URL(s) for the sidecar, tried in turn. Default: the proxy API
    /// the control plane at `--control` reports.
    #[arg(long = "control-grpc", value_delimiter = ',')]
    pub control_grpc: Vec<String>,
    /// A bootstrap token bound to this workload's identity (`trellis token create`).
    /// Without one, the sidecar asks the control plane at `--control` for one with the
    /// admin token, or, given only `--control-grpc`, registers with the admin token.
    #[arg(long, env = "TRELLIS_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Namespace of the workload.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Extra workload labels (`version=v2`); `app=<service>` is always set.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A service this workload calls: `books:9001` through local port 9001 (and the
    /// HTTP proxy port), `books` through the HTTP proxy port only.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub upstreams: Vec<(String, u16)>,
    /// Loopback port of the HTTP proxy listener, which routes requests to the
    /// upstreams by host (`http://books/...`). `trellis run` binds one the kernel picks
    /// when unset and passes it to the app as `HTTP_PROXY`.
    #[arg(long)]
    pub http_proxy_port: Option<u16>,
    /// Port of the sidecar's inbound listener (0: a free one).
    #[arg(long, default_value_t = 0)]
    pub inbound_port: u16,
    /// Address other proxies reach this workload at.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// Admin address of the sidecar (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// How long a client may take to send a request head (the request line and
    /// headers) before its connection is closed without an answer: slow-header
    /// clients hold no connection longer. `10s`, `500ms`.
    #[arg(long, default_value = "10s")]
    pub header_read_timeout: trellis_proxy::config::Duration,
    /// The largest request head, in bytes, the sidecar accepts (`431` beyond it),
    /// 8192 to 1048576.
    #[arg(long, default_value_t = defaults::max_header_bytes() as u32, value_parser = clap::value_parser!(u32).range(8192..=1_048_576))]
    pub max_header_bytes: u32,
    /// The zone (failure domain) the workload runs in; callers whose BackendPolicy
    /// says `locality: prefer-zone` keep to their own zone while enough of it is
    /// healthy.
    #[arg(long)]
    pub zone: Option<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// `SERVICE:LOCALPORT`, or `SERVICE` alone for port 0: reached by name only.
fn parse_upstream(s: &str) -> Result<(String, u16), String> {
    let (service, port) = match s.rsplit_once(':') {
        Some((service, port)) => {
            let port = port
                .parse()
                .map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
            (service, port)
        }
        None => (s, 0),
    };
    if service.is_empty() {
        return Err(format!("{s:?}: expected SERVICE[:LOCALPORT]"));
    }
    Ok((service.to_string(), port))
}

/// What a sidecar inside a transparent pod adds: the port captured outbound
/// connections arrive at, and the mark on its own connections that the capture rules
/// let through.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    pub outbound_port: u16,
    pub mark: u32,
    /// The resolver the pod's DNS forwards to, which also resolves the hosts of
    /// ExternalServices for the sidecar.
    pub dns_upstream: Option<SocketAddr>,
}

/// A running sidecar and the workload it registered.
pub struct Sidecar {
    pub proxy: Arc<Proxy>,
    pub workload: Workload,
    running: control::Sidecar,
}

/// Binds the sidecar's listeners at the ports `args` and `capture` give (0 or unset
/// inbound: one the kernel picks), before it registers: the ports it reports are then
/// ones it holds.
pub fn bind(args: &SidecarArgs, capture: Option<Capture>) -> anyhow::Result<SidecarListeners> {
    let listeners = SidecarListeners::bind(
        args.inbound_port,
        args.http_proxy_port,
        capture.map(|c| c.outbound_port),
    )?;
    Ok(listeners)
}

/// Starts a sidecar for `service` in front of the app on loopback port `app_port` on
/// `listeners` ([`bind`]); with `capture`, it also takes the pod's captured outbound
/// connections.
pub async fn start(
    service: &str,
    app_port: u16,
    args: &SidecarArgs,
    capture: Option<Capture>,
    listeners: SidecarListeners,
) -> anyhow::Result<Sidecar> {
    let token = registration_token(service, args).await?;
    let addresses = match args.control_grpc.is_empty() {
        false => args.control_grpc.clone(),
        true => vec![proxy_api(&args.client).await?],
    };
    let name = format!("{service}-{:04x}", fastrand::u16(..));
    let workload = Workload {
        name,
        namespace: args.namespace.clone(),
        service: service.to_string(),
        labels: args.labels.iter().cloned().collect(),
        address: args.address.to_string(),
        app_port: u32::from(app_port),
        upstreams: args
            .upstreams
            .iter()
            .map(|(s, p)| Upstream {
                service: s.clone(),
                namespace: args.namespace.clone(),
                local_port: u32::from(*p),
            })
            .collect(),
        zone: args.zone.clone().unwrap_or_default(),
        ..Default::default()
    };
    let settings = ControlSettings {
        addresses,
        token,
        workload,
        local: LocalSettings {
            admin: args.admin,
            drain_timeout: defaults::drain_timeout(),
            max_header_bytes: args.max_header_bytes as usize,
            header_read_timeout: args.header_read_timeout,
            socket_mark: capture.map(|c| c.mark),
            resolver: capture.and_then(|c| c.dns_upstream),
        },
    };
    let running = control::Sidecar::start(settings, listeners).await?;
    let proxy = running.proxy.clone();
    // The workload as registered, with the ports bound.
    let workload = running.workload().clone();
    tracing::info!(workload = %workload.name, inbound_port = workload.inbound_port, admin = %proxy.admin_addr(), "sidecar started");
    Ok(Sidecar {
        proxy,
        workload,
        running,
    })
}

impl Sidecar {
    /// Waits until the sidecar serves its configuration from the control plane.
    pub async fn configured(&self) {
        self.running.configured().await;
    }
}

/// How long a bootstrap token fetched for the sidecar stays usable: enough to start
/// and register; reconnections use the session token that comes with the certificate.
const BOOTSTRAP_TTL: &str = "10m";

/// The token the sidecar registers with; see [`SidecarArgs::bootstrap_token`].
async fn registration_token(service: &str, args: &SidecarArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.bootstrap_token {
        return Ok(token.clone());
    }
    let mut client_args = args.client.clone();
    if client_args.token.is_none() {
        client_args.token = Some(read_local_token()?);
    }
    let admin = client_args.token.clone().unwrap_or_default();
    if !args.control_grpc.is_empty() {
        return Ok(admin);
    }
    let body = serde_json::json!({
        "service": service,
        "namespace": args.namespace,
        "ttl": BOOTSTRAP_TTL,
    });
    let answer = Client::new(&client_args)?
        .post("/api/v1/tokens", body.to_string())
        .await
        .context("cannot get a bootstrap token from the control plane")?;
    answer["token"]
        .as_str()
        .map(str::to_string)
        .context("the control plane answered without a token")
}

/// Asks the control plane at `--control` where proxies connect.
async fn proxy_api(client: &ClientArgs) -> anyhow::Result<String> {
    let health = Client::new(client)?.get("/api/v1/health").await?;
    health["proxyApi"]
        .as_str()
        .map(str::to_string)
        .with_context(|| {
            format!(
                "the control plane at {} does not report its proxy API; pass --control-grpc",
                client.control
            )
        })
}

fn read_local_token() -> anyhow::Result<String> {
    let path = crate::control::default_data_dir()
        .map(|d| d.join("admin-token"))
        .context("no token: pass --token or set TRELLIS_TOKEN")?;
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("no token: pass --token, set TRELLIS_TOKEN, or run the control plane on this machine ({} unreadable)", path.display()))?;
    Ok(token.trim().to_string())
}
