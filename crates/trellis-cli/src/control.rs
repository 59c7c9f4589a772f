//! `trellis control`: the control plane, on the embedded store in a data directory or on
//! an etcd cluster (`--store etcd://…`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_control::ca::CaSettings;
use trellis_control::server::{ControlPlane, ControlSettings, ExtraRoutes, StoreSettings};
use trellis_control::store::etcd::{EtcdAuth, EtcdSettings, EtcdTls};
use trellis_identity::{CaPem, SealingKey};
use trellis_kubernetes::control::{KubernetesControlPlane, KubernetesSettings};
use trellis_kubernetes::inject::serving::WebhookSettings;
use trellis_kubernetes::inject::webhook::SERVICE;
use trellis_kubernetes::inject::InjectSettings;
use trellis_kubernetes::install::GRPC_PORT;

/// Flags of `trellis control`.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Where the store and the admin token live. Default `$XDG_DATA_HOME/trellis`,
    /// else `~/.local/share/trellis`. With --store etcd://… only the token is kept here.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the mesh's state in an etcd cluster, `etcd://host:port[,host:port…]`, instead
    /// of the embedded store in the data directory.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// A file holding the key (64 hex digits; `trellis ca encryption-key` makes one)
    /// that encrypts the CA's keys and the admin token in the store. Without it they
    /// are stored in plaintext. Every control plane on the store needs the same key.
    #[arg(long, value_name = "FILE")]
    pub ca_encryption_key: Option<PathBuf>,
    /// HTTP API (and dashboard) address.
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub http_addr: SocketAddr,
    /// gRPC address proxies connect to.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub grpc_addr: SocketAddr,
    /// How long a disconnected proxy's workload stays registered, in seconds.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = trellis_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime of workload certificates (`24h`, `10m`, `30s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// An intermediate CA to sign with, PEM: its certificate followed by the chain up to
    /// the organisation's root, which becomes the mesh's trust anchor. Needs --ca-key.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The intermediate CA's private key, PKCS#8 PEM.
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Run on Kubernetes: the cluster's Services, Pods, Gateway API routes and
    /// `trellis.dev` resources are the mesh, and proxies prove their Pods with
    /// ServiceAccount tokens. Reaches the API server as its Pod's ServiceAccount, or
    /// with --kubeconfig.
    #[arg(long, conflicts_with = "store")]
    pub kubernetes: bool,
    /// The kubeconfig to reach the API server with (with --kubernetes), instead of the
    /// Pod's ServiceAccount.
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace the control plane runs in (with --kubernetes): the Secret that
    /// holds the mesh's CA for every replica lives there.
    #[arg(long, env = "TRELLIS_NAMESPACE", default_value = "trellis-system")]
    pub kubernetes_namespace: String,
    /// Serve the sidecar-injection webhook over TLS on this address (with
    /// --kubernetes), with a certificate from the mesh CA for the Service
    /// `trellis-control`, and keep the webhook configuration's caBundle current.
    #[arg(long, requires = "kubernetes", value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// The image the injected containers run (with --webhook-addr): the one holding
    /// this `trellis` binary.
    #[arg(long, env = "TRELLIS_IMAGE")]
    pub inject_image: Option<String>,
    /// The gRPC URL injected proxies reach the control plane by (with
    /// --webhook-addr). Default: the Service `trellis-control` in its namespace.
    #[arg(long, requires = "webhook_addr", value_name = "URL")]
    pub inject_control_grpc: Option<String>,
}

/// A control plane as it runs: on its store, or on a Kubernetes cluster.
enum Running {
    Universal(ControlPlane),
    Kubernetes(KubernetesControlPlane),
}

impl Running {
    fn control(&self) -> &ControlPlane {
        match self {
            Self::Universal(cp) => cp,
            Self::Kubernetes(on_cluster) => &on_cluster.control,
        }
    }
}

/// What the webhook injects: this control plane's namespace, and the proxies' image
/// and control-plane URL as given or defaulted.
fn inject_settings(args: &ControlArgs) -> InjectSettings {
    let namespace = &args.kubernetes_namespace;
    let mut inject = InjectSettings::new();
    if let Some(image) = &args.inject_image {
        inject.image.clone_from(image);
    }
    inject.control_grpc = args
        .inject_control_grpc
        .clone()
        .unwrap_or_else(|| format!("http://{SERVICE}.{namespace}.svc:{GRPC_PORT}"));
    inject.control_namespace.clone_from(namespace);
    inject
}

/// How to reach an etcd cluster, beside its URL.
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// Key prefix in etcd, so several meshes can share a cluster. Default `/trellis`.
    #[arg(long)]
    pub etcd_prefix: Option<String>,
    /// CA certificate (PEM) that signed the etcd members' certificates; turns on TLS.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd members that check client certificates.
    #[arg(long, requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, when the cluster has authentication on; the password comes from
    /// --etcd-password or TRELLIS_ETCD_PASSWORD.
    #[arg(long, requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// The etcd user's password.
    #[arg(
        long,
        env = "TRELLIS_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
    /// Lifetime, in seconds, of each control plane's lease in the leader election on
    /// etcd: a leader that dies is replaced within about this long.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..))]
    pub etcd_lease_ttl: u64,
}

/// A duration as the resources write them: `1h30m`, `10s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<trellis_api::duration::Duration>()
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// The default data directory: `$XDG_DATA_HOME/trellis`, else
/// `$HOME/.local/share/trellis`.
pub fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let data = match xdg {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(data.join("trellis"))
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let store = match &args.store {
        Some(url) => StoreSettings::Etcd(Box::new(args.etcd.settings(url)?)),
        None => StoreSettings::Embedded,
    };
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir().context("no data directory: pass --data-dir or set HOME")?,
    };
    let mut ca = CaSettings::new(&args.trust_domain);
    ca.workload_validity = args.cert_ttl;
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        ca.operator = Some(CaPem {
            cert_chain: read(cert)?,
            key: read(key)?,
        });
    }
    if let Some(path) = &args.ca_encryption_key {
        ca.encryption_key = Some(std::sync::Arc::new(read_encryption_key(path)?));
    }
    let store_line = match &store {
        _ if args.kubernetes => "the Kubernetes cluster (mirrored in memory)".to_string(),
        StoreSettings::Embedded => format!("embedded, {}", data_dir.join("store.redb").display()),
        StoreSettings::Etcd(etcd) => {
            format!("etcd {} under {}", etcd.endpoints.join(","), etcd.prefix)
        }
    };
    let settings = ControlSettings {
        data_dir: data_dir.clone(),
        store,
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        grace: Duration::from_secs(args.grace_secs),
        ca,
    };
    // The dashboard shares the HTTP API's listener and reads through the API.
    let dashboard: ExtraRoutes = Box::new(trellis_dashboard::router);
    let running = if args.kubernetes {
        let client = trellis_kubernetes::client::connect(args.kubeconfig.as_deref()).await?;
        let mut cluster = KubernetesSettings::new(&args.kubernetes_namespace);
        cluster.webhook = args.webhook_addr.map(|addr| WebhookSettings {
            addr,
            inject: inject_settings(&args),
        });
        Running::Kubernetes(
            KubernetesControlPlane::start(client, cluster, settings, Some(dashboard)).await?,
        )
    } else {
        Running::Universal(ControlPlane::start_serving(settings, Some(dashboard)).await?)
    };
    let cp = running.control();
    println!("control plane running");
    println!("  HTTP API   http://{}", cp.http_addr);
    println!(
        "  dashboard  {}",
        crate::dashboard::url(&format!("http://{}", cp.http_addr))
    );
    println!("  proxy API  http://{}", cp.grpc_addr);
    if let Running::Kubernetes(KubernetesControlPlane {
        webhook: Some(webhook),
        ..
    }) = &running
    {
        println!("  webhook    https://{}", webhook.addr);
    }
    println!("  store      {store_line}");
    println!("  data       {}", data_dir.display());
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("cannot watch SIGINT")?,
        _ = terminate.recv() => {}
    }
    tracing::info!("control plane stopping; proxies keep their configuration");
    match running {
        Running::Universal(cp) => cp.stop().await,
        Running::Kubernetes(cp) => cp.stop().await,
    }
    Ok(())
}

impl EtcdArgs {
    /// The settings for the cluster at `url`, `etcd://host:port[,host:port…]`.
    pub fn settings(&self, url: &str) -> anyhow::Result<EtcdSettings> {
        let mut etcd = EtcdSettings::from_url(url)?;
        if let Some(prefix) = &self.etcd_prefix {
            etcd.prefix.clone_from(prefix);
        }
        if let Some(ca) = &self.etcd_ca {
            etcd.tls = Some(EtcdTls {
                ca: ca.clone(),
                identity: self.etcd_cert.clone().zip(self.etcd_key.clone()),
            });
        }
        if let (Some(user), Some(password)) = (&self.etcd_user, &self.etcd_password) {
            etcd.auth = Some(EtcdAuth {
                user: user.clone(),
                password: password.clone(),
            });
        }
        etcd.lease_ttl = Duration::from_secs(self.etcd_lease_ttl);
        Ok(etcd)
    }
}

/// The operator's encryption key from `path`.
pub fn read_encryption_key(path: &std::path::Path) -> anyhow::Result<SealingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the encryption key {}", path.display()))?;
    SealingKey::from_hex(&text).with_context(|| format!("{}", path.display()))
}
