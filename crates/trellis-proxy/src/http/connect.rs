//! `CONNECT` on an HTTP proxy port (a listener with `connect`): the application's
//! `HTTP_PROXY`, which gRPC and HTTPS clients use by asking for a tunnel to
//! `host:port` rather than sending their requests.
//!
//! A tunnel is opened only to a host one of the listener's routes names (a Service
//! of the mesh, a declared external host), so `CONNECT` reaches nothing that a plain
//! request could not. What the client then sends through it decides the rest:
//!
//! - HTTP/1.1 or HTTP/2 (a gRPC client's prior-knowledge HTTP/2): served as a new
//!   connection of the same listener, so each request inside is routed, balanced,
//!   retried, sent over mTLS to the peer's sidecar and counted like any other;
//! - a TLS ClientHello (HTTPS to an external host): passed through, unopened, to the
//!   backend of the route naming the host, as a `tls` listener would;
//! - anything else: closed, since no route of an HTTP port is for opaque bytes.

use std::sync::Arc;

use bytes::BytesMut;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::errors::ProxyError;
use super::forward::ConnContext;
use crate::detect::{self, Opening, Protocol};
use crate::endpoint::BoxBody;
use crate::io::PrefixedIo;
use crate::state::Listener;

/// Answers a `CONNECT`: `200` and the tunnel served on a task of its own once the
/// client's connection is handed over, or the refusal. Returns the name of the route
/// that names the target, for the request's metrics.
pub(super) fn open(
    req: Request<Incoming>,
    listener: &Arc<Listener>,
    ctx: &Arc<ConnContext>,
) -> (Result<Response<BoxBody>, ProxyError>, Arc<str>) {
    let target = req.uri().authority().cloned();
    let route = target
        .as_ref()
        .and_then(|t| listener.routes.iter().find(|r| r.names_authority(t)));
    let (Some(target), Some(route)) = (target, route) else {
        let target = req.uri().to_string();
        tracing::info!(listener = %listener.name, %target, "CONNECT to a host the mesh does not know refused");
        let reason = if listener.egress {
            "undeclared_host"
        } else {
            "no_route"
        };
        crate::transparent::count_refused(&ctx.shared, &listener.name, reason);
        return (Err(ProxyError::ConnectRefused { target }), "".into());
    };
    let upgrade = hyper::upgrade::on(req);
    let tunnel = Tunnel {
        target,
        listener: listener.clone(),
        ctx: ctx.clone(),
    };
    let guard = ctx.shared.drain.track();
    tokio::spawn(async move {
        let _guard = guard;
        match upgrade.await {
            Ok(io) => tunnel.serve(TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT tunnel never opened"),
        }
    });
    let resp = Response::builder()
        .status(StatusCode::OK)
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap_or_default();
    (Ok(resp), route.name.clone())
}

/// An accepted tunnel: where it was asked to go and the listener it belongs to.
struct Tunnel {
    target: Authority,
    listener: Arc<Listener>,
    ctx: Arc<ConnContext>,
}

impl Tunnel {
    async fn serve(self, mut io: TokioIo<hyper::upgrade::Upgraded>) {
        let Tunnel {
            target,
            listener,
            ctx,
        } = self;
        let shared = ctx.shared.clone();
        let drain = shared.drain.watch();
        // The tunnel is a new connection: its first head is timed from its opening.
        let opened = Instant::now();
        let deadlines = detect::Deadlines::new(
            listener.detect_timeout,
            opened,
            listener.header_read_timeout,
        );
        let mut prefix = BytesMut::with_capacity(1024);
        let opening = detect::opening(&mut io, &mut prefix, deadlines.silence).await;
        match opening {
            Ok(Opening::Tls) => {
                let io = PrefixedIo::new(prefix.freeze(), io);
                let name = target.host().to_ascii_lowercase();
                if crate::tcp::forward(io, listener.clone(), Some(&name), shared, drain)
                    .await
                    .is_none()
                {
                    tracing::debug!(%target, "no route for the tunnel's TLS");
                }
                return;
            }
            Ok(Opening::Plaintext) => {}
            Ok(Opening::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, %target, "CONNECT tunnel failed before its first bytes");
                return;
            }
        }
        let version = match detect::detect_at(&mut io, &mut prefix, deadlines).await {
            Ok(Protocol::Http1) => super::Version::Http1,
            Ok(Protocol::Http2) => super::Version::Http2,
            Ok(Protocol::Tcp) => {
                tracing::debug!(%target, "CONNECT tunnel carries neither HTTP nor TLS; closing");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, %target, "CONNECT tunnel failed during protocol detection");
                return;
            }
        };
        let io = PrefixedIo::new(prefix.freeze(), io);
        // Boxed: this connection's requests may open tunnels of their own.
        let served: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(super::serve(
                io,
                version,
                ctx.identity.clone(),
                ctx.local_port,
                opened,
                listener,
                shared,
                drain,
            ));
        served.await;
    }
}
