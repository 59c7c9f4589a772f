//! Active health checks: a task per checked backend probes each endpoint every
//! interval (an HTTP `GET`, the gRPC health protocol's `Check`, or a TCP connect) and
//! marks it unhealthy after `unhealthyThreshold` failed probes in a row, healthy again
//! after `healthyThreshold` passed ones. Endpoints start healthy, so a new backend
//! serves at once; the task ends when the backend's configuration is replaced.
//!
//! Probes reach an endpoint the way requests do: a mesh endpoint (a sidecar's inbound
//! listener, which has an identity to prove) over mTLS with this proxy's identity, once
//! the proxy has one, so a callee that accepts only mTLS (`strict`) can be probed and
//! its authorization sees who probes; other endpoints in plaintext. Over mTLS an HTTP
//! probe is HTTP/1.1 (ALPN `http/1.1`), a gRPC probe HTTP/2 (`h2`), and a TCP probe
//! passes when the handshake does (`trellis-tcp`): the callee's sidecar answered for
//! it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::io::{AsyncRead, AsyncWrite};

use bytes::{Buf, Bytes};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::{HealthCheckConfig, HealthCheckProtocol};
use crate::endpoint::{Endpoint, Opaque};
use crate::tls::{Alpn, Identity, IdentitySlot};

/// The probed health of a backend's endpoints, by index.
#[derive(Debug)]
pub struct HealthStatus {
    config: HealthCheckConfig,
    unhealthy: Vec<AtomicBool>,
}

impl HealthStatus {
    pub fn new(config: HealthCheckConfig, endpoints: usize) -> Self {
        Self {
            config,
            unhealthy: (0..endpoints).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Which endpoints failed their checks, by index; `None` when none did.
    pub fn unhealthy_set(&self) -> Option<Vec<bool>> {
        let set: Vec<bool> = self
            .unhealthy
            .iter()
            .map(|u| u.load(Ordering::Relaxed))
            .collect();
        set.iter().any(|u| *u).then_some(set)
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.unhealthy
            .get(i)
            .is_some_and(|u| !u.load(Ordering::Relaxed))
    }

    /// Starts probing `endpoints` (in index order) on the current runtime, with the
    /// identity in `identity` whenever a probe starts; outside a runtime (a
    /// configuration built in a unit test) nothing is probed.
    pub fn start(self: &Arc<Self>, endpoints: Vec<Arc<Endpoint>>, identity: IdentitySlot) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(run(Arc::downgrade(self), endpoints, identity));
        }
    }
}

/// Probes until the status is dropped.
async fn run(status: Weak<HealthStatus>, endpoints: Vec<Arc<Endpoint>>, identity: IdentitySlot) {
    let Some(config) = status.upgrade().map(|s| s.config.clone()) else {
        return;
    };
    let mut interval = tokio::time::interval(config.interval.get());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failed or passed probes in a row, per endpoint: negative for failures.
    let mut streaks = vec![0i64; endpoints.len()];
    loop {
        interval.tick().await;
        // Read at every round: the certificate arrives, and is renewed, after start.
        let id = identity.get();
        let probes = endpoints.iter().map(|e| probe(&config, e, id.as_deref()));
        let results = futures_util::future::join_all(probes).await;
        let Some(status) = status.upgrade() else {
            return;
        };
        for (i, passed) in results.into_iter().enumerate() {
            let streak = &mut streaks[i];
            *streak = match (passed, *streak) {
                (true, s) if s > 0 => s + 1,
                (true, _) => 1,
                (false, s) if s < 0 => s - 1,
                (false, _) => -1,
            };
            let flag = &status.unhealthy[i];
            if *streak <= -i64::from(config.unhealthy_threshold)
                && !flag.swap(true, Ordering::Relaxed)
            {
                tracing::info!(endpoint = %endpoints[i].addr(), "endpoint failed its health checks");
            }
            if *streak >= i64::from(config.healthy_threshold) && flag.swap(false, Ordering::Relaxed)
            {
                tracing::info!(endpoint = %endpoints[i].addr(), "endpoint passes its health checks again");
            }
        }
    }
}

/// One probe of one endpoint, within the check's timeout; over mTLS when `identity`
/// and the endpoint's own identity say so.
pub async fn probe(
    config: &HealthCheckConfig,
    endpoint: &Endpoint,
    identity: Option<&Identity>,
) -> bool {
    let alpn = match config.protocol {
        HealthCheckProtocol::Tcp => Alpn::Tcp,
        HealthCheckProtocol::Http => Alpn::Http1,
        HealthCheckProtocol::Grpc => Alpn::H2,
    };
    let checked = async {
        match endpoint.open(identity, alpn).await.ok()? {
            Opaque::Plain(io) => check(config, io, endpoint.addr()).await,
            Opaque::Mtls(io) => check(config, io, endpoint.addr()).await,
        }
    };
    tokio::time::timeout(config.timeout.get(), checked)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The check on a connection that opened.
async fn check<I>(config: &HealthCheckConfig, io: I, addr: SocketAddr) -> Option<bool>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match config.protocol {
        HealthCheckProtocol::Tcp => Some(true),
        HealthCheckProtocol::Http => probe_http(io, addr, &config.path).await,
        HealthCheckProtocol::Grpc => probe_grpc(io, addr, &config.service).await,
    }
}

async fn probe_http<I>(stream: I, addr: SocketAddr, path: &str) -> Option<bool>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "trellis-health-check")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().is_success())
}

/// `grpc.health.v1.Health/Check` with `HealthCheckRequest{service}`; healthy when the
/// answer is `SERVING` with `grpc-status: 0`.
async fn probe_grpc<I>(stream: I, addr: SocketAddr, service: &str) -> Option<bool>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(grpc_frame(&health_request(service))))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return Some(false);
    }
    let collected = resp.into_body().collect().await.ok()?;
    let status_ok = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|s| s == "0");
    let mut body = collected.to_bytes();
    Some(status_ok && serving(&mut body))
}

/// The protobuf of `HealthCheckRequest`: field 1, the service name.
pub fn health_request(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0x0a];
    let mut len = service.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(service.as_bytes());
    out
}

/// A gRPC length-prefixed message, uncompressed.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// Whether a framed `HealthCheckResponse` says `SERVING` (field 1 = 1).
fn serving(body: &mut Bytes) -> bool {
    if body.len() < 5 {
        return false;
    }
    body.advance(5);
    // The message is one varint field; `SERVING` is the single byte pair 0x08 0x01.
    body.as_ref() == [0x08, 0x01]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_encoded_and_read() {
        assert!(health_request("").is_empty());
        assert_eq!(health_request("books"), b"\x0a\x05books");
        let frame = grpc_frame(b"\x08\x01");
        assert_eq!(frame.as_ref(), b"\x00\x00\x00\x00\x02\x08\x01");
        assert!(serving(&mut frame.clone()));
        assert!(!serving(&mut grpc_frame(b"\x08\x02")), "NOT_SERVING");
        assert!(!serving(&mut Bytes::new()));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_tell_a_listening_endpoint_from_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let tcp = HealthCheckConfig {
            protocol: HealthCheckProtocol::Tcp,
            path: "/".into(),
            service: String::new(),
            interval: crate::config::Duration::from_secs(1),
            timeout: crate::config::Duration::from_secs(5),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        };
        let settings = crate::endpoint::ConnectSettings {
            protocol: crate::config::BackendProtocol::Http1,
            connect_timeout: std::time::Duration::from_secs(5),
            idle_timeout: std::time::Duration::from_secs(5),
            mark: None,
            resolver: None,
        };
        let endpoint = |addr| Endpoint::new(addr, settings, None);
        let (open, closed) = (endpoint(open), endpoint(closed));
        assert!(probe(&tcp, &open, None).await);
        assert!(!probe(&tcp, &closed, None).await);
        // An HTTP probe needs an answer: a listener that accepts and says nothing fails
        // it within the timeout.
        let http = HealthCheckConfig {
            protocol: HealthCheckProtocol::Http,
            timeout: crate::config::Duration::from_millis(50),
            ..tcp
        };
        assert!(!probe(&http, &open, None).await);
        drop(listener);
    }
}
