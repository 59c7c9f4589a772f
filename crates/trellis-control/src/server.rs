//! Wiring: `ControlPlane::start` opens the store (embedded, or etcd), loads the admin
//! token shared by the control planes on the store, joins their leader election, and
//! serves the HTTP API (resources, proxies) and the gRPC API (proxy sessions)
//! on their ports. Other routes (the dashboard) can share the HTTP API's listener
//! ([`ExtraRoutes`]) without this crate knowing them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use trellis_api::proto::v1::proxy_api_server::ProxyApiServer;

use crate::api::{self, ApiState};
use crate::ca::{CaSettings, MeshCa};
use crate::leader::{self, Membership, Replica};
use crate::platform::Platform;
use crate::push::{PushService, PushSettings};
use crate::registry::Registry;
use crate::secrets::Secrets;
use crate::store::{EmbeddedStore, EtcdSettings, EtcdStore, Store, StoreError};
use crate::telemetry::{Telemetry, TelemetrySettings};

/// Where and how the control plane runs.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Holds the admin token (`admin-token`) and, with the embedded store, the store
    /// (`store.redb`).
    pub data_dir: PathBuf,
    /// Where the mesh's state lives.
    pub store: StoreSettings,
    /// HTTP API and dashboard. Default `127.0.0.1:7180`.
    pub http_addr: SocketAddr,
    /// gRPC API for proxies. Default `127.0.0.1:7100`.
    pub grpc_addr: SocketAddr,
    /// How long a disconnected proxy's workload stays registered.
    pub grace: Duration,
    /// The certificate authority: trust domain, lifetimes, an operator-given CA.
    pub ca: CaSettings,
}

/// Where the control plane keeps the mesh's state.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// The embedded store in the data directory (the default: nothing to install).
    #[default]
    Embedded,
    /// An etcd cluster; the data directory then holds only the admin token.
    Etcd(Box<EtcdSettings>),
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the admin token: {0}")]
    Token(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error("{what}: cannot bind {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Pending connections the kernel queues: thousands of proxies may reconnect at once
/// when a control plane comes back.
const BACKLOG: i32 = 4096;

/// A listening socket with address reuse (a restarted control plane binds at once) and
/// a deep backlog.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Routes served on the HTTP API's listener beside the API, made once the listener's
/// address is known (port 0 picks it). The dashboard comes in this way, so the control
/// plane does not depend on it. Paths must not overlap the API's `/api/…`.
pub type ExtraRoutes = Box<dyn FnOnce(SocketAddr) -> axum::Router + Send>;

/// A running control plane.
pub struct ControlPlane {
    push: PushService,
    /// To wait, on stop, until the store is closed and its data directory free.
    store: std::sync::Weak<dyn Store>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub token: String,
    pub registry: Arc<Registry>,
    /// The mesh's CA, for what the control plane serves over TLS besides the proxies'
    /// API (on Kubernetes, the admission webhook).
    pub ca: Arc<MeshCa>,
    tasks: Vec<JoinHandle<()>>,
    /// Membership of the store's election; leaves it when dropped.
    pub membership: Arc<Membership>,
}

impl ControlPlane {
    pub async fn start(settings: ControlSettings) -> Result<Self, ControlError> {
        Self::start_serving(settings, None).await
    }

    /// Starts, serving `extra` on the HTTP API's listener too.
    pub async fn start_serving(
        settings: ControlSettings,
        extra: Option<ExtraRoutes>,
    ) -> Result<Self, ControlError> {
        let store: Arc<dyn Store> = match &settings.store {
            StoreSettings::Embedded => Arc::new(EmbeddedStore::open(&settings.data_dir)?),
            StoreSettings::Etcd(etcd) => Arc::new(EtcdStore::connect((**etcd).clone()).await?),
        };
        let secrets = Secrets::new(store.clone(), settings.ca.encryption_key.clone());
        let token = api::token::share(&secrets, &settings.data_dir).await?;
        Self::start_on(store, token, settings, None, extra).await
    }

    /// Starts on a platform ([`Platform`]) that owns the workloads and the proxies'
    /// credentials; `store` holds what its source mirrors (Kubernetes: the cluster, in
    /// memory).
    pub async fn start_on_platform(
        store: Arc<dyn Store>,
        token: String,
        settings: ControlSettings,
        platform: Arc<dyn Platform>,
        extra: Option<ExtraRoutes>,
    ) -> Result<Self, ControlError> {
        Self::start_on(store, token, settings, Some(platform), extra).await
    }

    /// Starts on a given store and token (tests use the in-memory store).
    pub async fn start_with(
        store: Arc<dyn Store>,
        token: String,
        settings: ControlSettings,
    ) -> Result<Self, ControlError> {
        Self::start_on(store, token, settings, None, None).await
    }

    async fn start_on(
        store: Arc<dyn Store>,
        token: String,
        settings: ControlSettings,
        platform: Option<Arc<dyn Platform>>,
        extra: Option<ExtraRoutes>,
    ) -> Result<Self, ControlError> {
        let bind =
            |what, addr| listen(addr).map_err(|error| ControlError::Bind { what, addr, error });
        let http = bind("HTTP API", settings.http_addr)?;
        let grpc = bind("gRPC API", settings.grpc_addr)?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|error| ControlError::Bind { what, addr, error })
        };
        let http_addr = local(&http, "HTTP API", settings.http_addr)?;
        let grpc_addr = local(&grpc, "gRPC API", settings.grpc_addr)?;

        let ca = Arc::new(MeshCa::start(store.clone(), settings.ca.clone()).await?);
        let ca_task = tokio::spawn(ca.clone().follow_store());
        let registry = Arc::new(Registry::new());
        let mut push_settings = PushSettings::new(token.clone());
        push_settings.grace = settings.grace;
        let platform_name = platform.as_ref().map(|p| p.name());
        push_settings.platform = platform;
        let weak_store = Arc::downgrade(&store);
        let push = PushService::new(store.clone(), registry.clone(), ca.clone(), push_settings);
        let membership = Arc::new(Membership::join(
            store.as_ref(),
            Replica {
                instance: push.instance().to_owned(),
                http: http_addr.to_string(),
                grpc: grpc_addr.to_string(),
            },
        ));
        let standing = membership.standing();
        let sweep_store = store.clone();
        let sweep_standing = membership.standing();
        let grace = settings.grace;
        let orphans_task = tokio::spawn(leader::while_leading(
            membership.standing(),
            "remove orphaned workloads",
            move || leader::sweep_orphans(sweep_store.clone(), sweep_standing.clone(), grace),
        ));
        let rejoin_task = tokio::spawn(push.restore_on_rejoin(membership.standing()));
        let telemetry = Arc::new(Telemetry::new(
            registry.clone(),
            TelemetrySettings::default(),
        ));
        let telemetry_task = tokio::spawn(telemetry.clone().run());
        let rotation_ca = ca.clone();
        let rotation_task = tokio::spawn(leader::while_leading(
            standing,
            "pace trust-anchor rotations",
            move || rotation_ca.clone().drive_rotation(),
        ));
        let mut router = api::router(ApiState {
            store: store.clone(),
            registry: registry.clone(),
            admin_token: token.clone(),
            proxy_api: Some(format!("http://{grpc_addr}")),
            ca: ca.clone(),
            membership: Some(membership.clone()),
            telemetry: Some(telemetry.clone()),
            taps: Some(push.taps()),
        });
        if let Some(name) = platform_name {
            router = router.layer(axum::middleware::from_fn_with_state(
                name,
                refuse_resource_writes,
            ));
        }
        if let Some(extra) = extra {
            router = router.merge(extra(http_addr));
        }
        let http_task = tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(http, app).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        });

        let served_push = push.clone();
        let grpc_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(5)))
                .add_service(ProxyApiServer::new(served_push))
                .serve_with_incoming(TcpListenerStream::new(grpc))
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC API stopped");
            }
        });
        tracing::info!(http = %http_addr, grpc = %grpc_addr, "control plane started");
        Ok(Self {
            push,
            store: weak_store,
            http_addr,
            grpc_addr,
            token,
            registry,
            ca,
            tasks: vec![
                http_task,
                grpc_task,
                ca_task,
                orphans_task,
                rotation_task,
                rejoin_task,
                telemetry_task,
            ],
            membership,
        })
    }

    /// Stops serving and closes the store. Proxies keep their last configuration and
    /// reconnect later. Returns once the store is closed, or after a few seconds.
    pub async fn stop(self) {
        self.push.stop();
        for task in &self.tasks {
            task.abort();
        }
        let store = self.store.clone();
        drop(self);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.push.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// On a platform, the resources are the platform's (Kubernetes: its objects, written
/// with kubectl): a write through the API would live in one replica's memory only,
/// so it is refused, saying where to write instead.
async fn refuse_resource_writes(
    axum::extract::State(platform): axum::extract::State<&'static str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let path = request.uri().path();
    let writes = (path == "/api/v1/apply" && request.method() == Method::POST)
        || (path.starts_with("/api/v1/resources/") && request.method() == Method::DELETE);
    if !writes {
        return next.run(request).await;
    }
    let error = format!(
        "this control plane runs on {platform}, whose objects are the mesh's resources: \
         write them there (on Kubernetes, `kubectl apply` or `kubectl delete`)"
    );
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}
