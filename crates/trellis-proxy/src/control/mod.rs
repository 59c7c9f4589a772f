//! The proxy under a control plane: one `Session` stream that registers the workload,
//! receives compiled configuration snapshots, applies each without dropping a request
//! (the same path as a file reload), and ACKs it — or NACKs it with the reason and keeps
//! serving the last good one.
//!
//! Static stability: when the control plane is unreachable the proxy keeps serving what
//! it has, and reconnects with jittered exponential backoff, trying each configured
//! control-plane address in turn, from a random one (so a fleet spreads over them).

pub mod convert;
mod identity;
mod sidecar;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use trellis_api::proto::v1::{
    self as wire, control_message, proxy_api_client::ProxyApiClient, proxy_message,
};

pub use self::convert::{to_proxy_config, LocalSettings};
use self::identity::IdentityState;
pub use self::sidecar::Sidecar;
use crate::Proxy;

/// How the proxy reaches its control plane and what it registers.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Control-plane gRPC URLs (`http://host:7100`), tried in turn.
    pub addresses: Vec<String>,
    /// Token authorizing the registration.
    pub token: String,
    pub workload: wire::Workload,
    pub local: LocalSettings,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to the control plane at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the control plane at {address} refused the session: {status}")]
    Refused {
        address: String,
        status: tonic::Status,
    },
    #[error("the stream to the control plane at {address} broke: {status}")]
    Broken {
        address: String,
        status: tonic::Status,
    },
    #[error("the control plane at {address} closed the stream")]
    Closed { address: String },
}

/// Shortest and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keeps a session with the control plane for as long as the proxy runs; publishes
/// the version of the configuration it serves (0 until the first arrives).
pub async fn run(proxy: Arc<Proxy>, settings: ControlSettings, serving: watch::Sender<u64>) {
    let mut identity = IdentityState::default();
    let mut backoff = BACKOFF_MIN;
    // Proxies start at a random address so a fleet spreads over the control planes,
    // then move to the next one each time a session ends.
    let first = fastrand::usize(..settings.addresses.len().max(1));
    for attempt in 0usize.. {
        let Some(address) = settings
            .addresses
            .get((first + attempt) % settings.addresses.len().max(1))
        else {
            tracing::error!("no control-plane address configured");
            return;
        };
        let before = *serving.borrow();
        let ended = session(address, &proxy, &settings, &serving, &mut identity).await;
        match ended {
            Ok(()) => {}
            Err(e) => {
                if let SessionError::Refused { status, .. } = &e {
                    // The session token may have expired with an old certificate;
                    // the next attempt uses the configured token.
                    if status.code() == tonic::Code::Unauthenticated {
                        identity.forget_session_token();
                    }
                }
                tracing::warn!(error = %e, "control-plane session ended; serving the last good configuration")
            }
        }
        // A session that delivered configuration was healthy: start backing off anew.
        if *serving.borrow() != before {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps until `at`; forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The admin server's address as others reach it: a wildcard bind is named by the
/// workload's address.
fn admin_address(bound: std::net::SocketAddr, workload_address: &str) -> String {
    if bound.ip().is_unspecified() && !workload_address.is_empty() {
        match workload_address.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, bound.port()).to_string(),
            Err(_) => format!("{workload_address}:{}", bound.port()),
        }
    } else {
        bound.to_string()
    }
}

/// A pause between half and all of `base`, so proxies that lost the control plane
/// together do not come back in lockstep.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

async fn session(
    address: &str,
    proxy: &Proxy,
    settings: &ControlSettings,
    serving: &watch::Sender<u64>,
    identity: &mut IdentityState,
) -> Result<(), SessionError> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
        .map_err(|source| SessionError::Connect {
            address: address.into(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        // Notice a control plane that vanished without closing its connections.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| SessionError::Connect {
            address: address.into(),
            source,
        })?;
    let mut client = ProxyApiClient::new(channel);

    let (tx, rx) = mpsc::channel(16);
    let hello = wire::Hello {
        token: identity.token(&settings.token).to_string(),
        workload: Some(settings.workload.clone()),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        serving_version: *serving.borrow(),
        admin_address: admin_address(proxy.admin_addr(), &settings.workload.address),
    };
    let _ = tx.try_send(message(proxy_message::Message::Hello(hello)));
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|status| SessionError::Refused {
            address: address.into(),
            status,
        })?
        .into_inner();
    tracing::info!(%address, workload = %settings.workload.name, "connected to the control plane");

    // Taps belong to the session that started them.
    let taps = proxy.taps();
    taps.clear();
    let mut tap_events = taps.events().await;
    let ended = loop {
        let renewal = identity.renewal();
        let reply = tokio::select! {
            next = inbound.message() => {
                let next = match next {
                    Ok(next) => next,
                    Err(status) => break SessionError::Broken {
                        address: address.into(),
                        status,
                    },
                };
                let Some(msg) = next else {
                    break SessionError::Closed {
                        address: address.into(),
                    };
                };
                match msg.message {
                    Some(control_message::Message::Snapshot(snapshot)) => {
                        Some(apply(proxy, &settings.local, &snapshot, serving).await)
                    }
                    Some(control_message::Message::TapStart(start)) => {
                        tracing::info!(tap = %start.id, "tap started");
                        taps.start(start);
                        None
                    }
                    Some(control_message::Message::TapStop(stop)) => {
                        taps.stop(&stop.id);
                        None
                    }
                    Some(other) => identity.handle(proxy, other),
                    None => None,
                }
            }
            Some(event) = tap_events.recv() => Some(proxy_message::Message::TapEvent(event)),
            () = sleep_until(renewal), if renewal.is_some() => identity.request(),
        };
        let Some(reply) = reply else { continue };
        if tx.send(message(reply)).await.is_err() {
            break SessionError::Closed {
                address: address.into(),
            };
        }
    };
    taps.clear();
    Err(ended)
}

/// Applies one snapshot and says how it went.
async fn apply(
    proxy: &Proxy,
    local: &LocalSettings,
    snapshot: &wire::Snapshot,
    serving: &watch::Sender<u64>,
) -> proxy_message::Message {
    let version = snapshot.version;
    let serving_version = *serving.borrow();
    if version == serving_version {
        return proxy_message::Message::Ack(wire::Ack { version });
    }
    let result = match &snapshot.config {
        None => Err("the snapshot has no configuration".to_string()),
        Some(config) => match to_proxy_config(config, local) {
            Err(e) => Err(e.to_string()),
            Ok(config) => proxy.reload(config).await.map_err(|e| e.to_string()),
        },
    };
    match result {
        Ok(()) => {
            tracing::info!(version, "applied configuration from the control plane");
            serving.send_replace(version);
            proxy_message::Message::Ack(wire::Ack { version })
        }
        Err(error) => {
            tracing::error!(version, %error, "refused configuration from the control plane; serving version {}", serving_version);
            proxy_message::Message::Nack(wire::Nack { version, error })
        }
    }
}

fn message(message: proxy_message::Message) -> wire::ProxyMessage {
    wire::ProxyMessage {
        message: Some(message),
    }
}
