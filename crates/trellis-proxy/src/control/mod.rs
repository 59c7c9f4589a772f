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
pub use self::sidecar::{Sidecar, SidecarListeners};
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
        accepts_delta: true,
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
    // The configuration as last sent, which the next delta applies to.
    let mut received = None;
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
                        Some(apply(proxy, &settings.local, snapshot, &mut received, serving).await)
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

/// Applies one snapshot and says how it went. `received` is the configuration the
/// session sent last, which a delta applies to; it follows what was sent, whether or not
/// the proxy could serve it, as the control plane's record of what it sent does.
async fn apply(
    proxy: &Proxy,
    local: &LocalSettings,
    snapshot: wire::Snapshot,
    received: &mut Option<(u64, wire::ProxyConfig)>,
    serving: &watch::Sender<u64>,
) -> proxy_message::Message {
    let version = snapshot.version;
    let serving_version = *serving.borrow();
    let result = match whole(snapshot, received) {
        Err(e) => Err(e),
        Ok(_) if version == serving_version => {
            return proxy_message::Message::Ack(wire::Ack { version })
        }
        Ok(config) => match to_proxy_config(config, local) {
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

/// The whole configuration `snapshot` gives: its own, or its delta applied to what was
/// received before. A delta that does not follow what was received leaves nothing to
/// apply the next one to, so the control plane, seeing the NACK, sends the next whole.
fn whole(
    snapshot: wire::Snapshot,
    received: &mut Option<(u64, wire::ProxyConfig)>,
) -> Result<&wire::ProxyConfig, String> {
    let version = snapshot.version;
    match (snapshot.config, snapshot.delta) {
        (Some(config), _) => Ok(&received.insert((version, config)).1),
        (None, Some(delta)) => match received.take() {
            Some((base_version, mut base)) if base_version == delta.base_version => {
                base.apply_delta(delta);
                Ok(&received.insert((version, base)).1)
            }
            Some((base_version, _)) => Err(format!(
                "the snapshot changes version {}, but the proxy holds version {base_version}",
                delta.base_version
            )),
            None => Err("the snapshot is a change, but the proxy holds no configuration".into()),
        },
        (None, None) => Err("the snapshot has no configuration".into()),
    }
}

fn message(message: proxy_message::Message) -> wire::ProxyMessage {
    wire::ProxyMessage {
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::{whole, wire};

    fn listener(name: &str) -> wire::Listener {
        wire::Listener {
            name: name.into(),
            ..Default::default()
        }
    }

    fn whole_snapshot(version: u64, listeners: &[&str]) -> wire::Snapshot {
        wire::Snapshot {
            version,
            config: Some(wire::ProxyConfig {
                listeners: listeners.iter().map(|n| listener(n)).collect(),
                ..Default::default()
            }),
            delta: None,
        }
    }

    fn delta(version: u64, base_version: u64, added: &str) -> wire::Snapshot {
        wire::Snapshot {
            version,
            config: None,
            delta: Some(wire::ConfigDelta {
                base_version,
                listeners: vec![listener(added)],
                ..Default::default()
            }),
        }
    }

    fn names(config: &wire::ProxyConfig) -> Vec<&str> {
        config.listeners.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn a_delta_applies_to_the_configuration_received_before_it() {
        let mut received = None;
        let config = whole(whole_snapshot(3, &["a", "c"]), &mut received).expect("whole");
        assert_eq!(names(config), ["a", "c"]);
        let config = whole(delta(5, 3, "b"), &mut received).expect("delta");
        assert_eq!(names(config), ["a", "b", "c"]);
        assert_eq!(received.as_ref().map(|r| r.0), Some(5));
    }

    #[test]
    fn a_delta_that_does_not_follow_is_refused_and_leaves_no_base() {
        let mut received = None;
        let error = whole(delta(5, 3, "b"), &mut received).expect_err("no base");
        assert!(error.contains("holds no configuration"), "{error}");

        whole(whole_snapshot(3, &["a"]), &mut received).expect("whole");
        let error = whole(delta(7, 4, "b"), &mut received).expect_err("another base");
        assert!(
            error.contains("changes version 4, but the proxy holds version 3"),
            "{error}"
        );
        // Nothing to apply the next delta to until a whole snapshot comes.
        assert!(received.is_none());
        assert!(whole(delta(8, 7, "c"), &mut received).is_err());
        let config = whole(whole_snapshot(9, &["a", "b"]), &mut received).expect("whole");
        assert_eq!(names(config), ["a", "b"]);
    }

    #[test]
    fn a_snapshot_with_neither_part_is_refused() {
        let empty = wire::Snapshot {
            version: 1,
            config: None,
            delta: None,
        };
        let error = whole(empty, &mut None).expect_err("empty");
        assert!(error.contains("no configuration"), "{error}");
    }
}
