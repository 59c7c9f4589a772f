//! What the in-process mesh tests (and the config-under-load benchmark) share: free
//! ports for the applications and upstreams a test names, and sidecars under a control
//! plane, which bind their own listeners and report them.

#![allow(dead_code)] // each test binary uses part of it

pub mod control;
pub mod demo;
pub mod kube;
pub mod webdriver;

use std::net::SocketAddr;

use trellis_api::proto::v1::{Upstream, Workload};
use trellis_proxy::config::Duration as ConfigDuration;
use trellis_proxy::control::{ControlSettings, LocalSettings, Sidecar, SidecarListeners};

/// A loopback port nothing listens on now, for a listener started later. Picked below
/// Linux's ephemeral range (32768 and up): a port the kernel chose for `:0` and gave
/// back is soon handed to a client connection's local end, and a sidecar starting in a
/// parallel test makes many of those before this test's listener binds. Never the same
/// port twice in one test binary.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FROM: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Each test binary starts at its own place, so binaries run one after the other
    // do not retry the same ports while the last one's are still closing.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = FROM + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(port).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FROM} and {}", FROM + SPAN);
}

/// Applies YAML documents through the control plane at `http_addr` with the admin
/// token, returning the answer's status.
pub async fn apply(http_addr: SocketAddr, token: &str, yaml: &str) -> http::StatusCode {
    let req = http::Request::post(format!("http://{http_addr}/api/v1/apply"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            yaml.to_string(),
        )))
        .expect("request");
    trellis_testkit::http::HttpClient::http1()
        .send(req)
        .await
        .expect("apply")
        .status
}

/// One workload of the `default` namespace, to start a sidecar for.
pub struct SidecarSpec<'a> {
    /// Control-plane gRPC URL; several, comma-separated, for replicas.
    pub grpc: &'a str,
    pub token: &'a str,
    /// Workload name.
    pub name: &'a str,
    pub service: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// The application the inbound side forwards to.
    pub app: SocketAddr,
    /// Services called, each through a local port.
    pub upstreams: &'a [(&'a str, u16)],
}

impl SidecarSpec<'_> {
    /// Starts the sidecar with inbound and admin ports the kernel picks; the inbound
    /// one is `sidecar.workload().inbound_port`, as registered, or
    /// `sidecar.proxy.listener_addr("inbound")`.
    pub async fn start(&self) -> Sidecar {
        let listeners = SidecarListeners::bind(0, None, None).expect("inbound listener");
        self.start_on(listeners).await
    }

    /// Starts the sidecar on `listeners`, bound before, with their ports registered.
    pub async fn start_on(&self, listeners: SidecarListeners) -> Sidecar {
        Sidecar::start(self.settings(), listeners)
            .await
            .unwrap_or_else(|e| panic!("sidecar {}: {e}", self.name))
    }

    fn settings(&self) -> ControlSettings {
        ControlSettings {
            addresses: self.grpc.split(',').map(str::to_owned).collect(),
            token: self.token.into(),
            workload: Workload {
                name: self.name.into(),
                namespace: "default".into(),
                service: self.service.into(),
                address: "127.0.0.1".into(),
                app_port: u32::from(self.app.port()),
                labels: self
                    .labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                upstreams: self
                    .upstreams
                    .iter()
                    .map(|(s, p)| Upstream {
                        service: (*s).into(),
                        namespace: "default".into(),
                        local_port: u32::from(*p),
                    })
                    .collect(),
                ..Default::default()
            },
            local: LocalSettings {
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
                drain_timeout: ConfigDuration::from_secs(5),
                max_header_bytes: 64 * 1024,
                header_read_timeout: ConfigDuration::from_secs(10),
                socket_mark: None,
                resolver: None,
            },
        }
    }
}
