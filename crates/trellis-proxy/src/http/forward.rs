//! One HTTP request through the proxy: authorization → route → backend → balancer →
//! endpoint, with the request and response rewritten between the client's and the
//! backend's HTTP versions.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use trellis_identity::SpiffeId;

use super::errors::{is_grpc, ProxyError};
use super::mirror;
use super::observe::{self, Completion, Observed, Seen, Traced};
use crate::balance::InFlight;
use crate::config::{BackendProtocol, ListenerProtocol};
use crate::endpoint::{BoxBody, BoxError, Endpoint, EndpointError};
use crate::flow::Coalesce;
use crate::resilience::outlier::Outcome;
use crate::resilience::protection::Rejection;
use crate::resilience::ratelimit::{Quota, RATELIMIT_LIMIT};
use crate::retry;
use crate::route::filter::{edit_headers, Redirect};
use crate::route::{Route, RouteBackend};
use crate::state::Listener;
use crate::telemetry::{CallLabels, RouteLabels};
use crate::tls::{Identity, PEER_IDENTITY_HEADER};
use crate::Shared;

const PEER_IDENTITY: HeaderName = HeaderName::from_static(PEER_IDENTITY_HEADER);

/// What every request on one client connection shares.
pub struct ConnContext {
    pub shared: Arc<Shared>,
    /// The listener as it was when the connection was accepted; used if a reload has
    /// removed it since.
    pub listener: Arc<Listener>,
    /// Requests on this connection whose responses are not finished.
    pub active: Arc<AtomicUsize>,
    /// The client proxy's SPIFFE ID as a header value, when the connection is mTLS;
    /// made once per connection.
    pub peer: Option<HeaderValue>,
    /// The client proxy's SPIFFE ID, for authorization.
    pub identity: Option<SpiffeId>,
    /// The port the connection arrived on, for authorization.
    pub local_port: u16,
    /// Who the requests come from, for the request metrics.
    pub call: CallLabels,
}

impl ConnContext {
    fn current_listener(&self) -> Arc<Listener> {
        self.shared
            .state
            .load()
            .listeners
            .get(&*self.listener.name)
            .cloned()
            .unwrap_or_else(|| self.listener.clone())
    }
}

/// Serves one request. Never fails: every error becomes a response. The request counts
/// as active from the call, not from the first poll: hyper reads the start of its body
/// in between, and those bytes must not look like the next request's head.
pub fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnContext>,
) -> impl std::future::Future<Output = Result<Response<BoxBody>, Infallible>> + Send {
    let active = ActiveRequest::new(ctx.active.clone());
    serve_request(req, ctx, active)
}

async fn serve_request(
    mut req: Request<Incoming>,
    ctx: Arc<ConnContext>,
    active: ActiveRequest,
) -> Result<Response<BoxBody>, Infallible> {
    // Only the proxy that terminated mTLS may say who the client is; whatever a client
    // claims is dropped before routing, so no route matches on a forged identity.
    let headers = req.headers_mut();
    headers.remove(PEER_IDENTITY);
    if let Some(peer) = &ctx.peer {
        headers.insert(PEER_IDENTITY, peer.clone());
    }
    let started = Instant::now();
    let listener = ctx.current_listener();
    let grpc = listener.protocol == ListenerProtocol::Grpc || is_grpc(&req);
    let client_version = req.version();
    let tapped = ctx.shared.taps.active();
    let traced = Traced::start(&mut req, &ctx);
    let log = ctx.shared.access_log.current();
    // Only a sampled span, a tap or a log line looks at the request again.
    let sampled = traced.as_ref().is_some_and(Traced::sampled);
    let seen = (tapped || sampled || log.is_some()).then(|| Seen::of(&req));

    // Checked against the listener as it is now, so a reload's policies apply from the
    // next request of every open connection.
    let authorized = match &listener.authorization {
        Some(authz) => {
            authz.check_request(&req, ctx.identity.as_ref(), ctx.local_port, &ctx.shared)
        }
        None => Ok(()),
    };
    let mut quota = None;
    let (result, labels) = match authorized {
        Err(denied) => (Err(ProxyError::from(denied)), unrouted(&listener, "")),
        Ok(()) if listener.connect && req.method() == Method::CONNECT => {
            let (result, route) = super::connect::open(req, &listener, &ctx);
            (result, unrouted(&listener, &route))
        }
        Ok(()) => match listener.route_for(&req) {
            None => (
                Err(no_route(&req, &listener, &ctx.shared)),
                unrouted(&listener, ""),
            ),
            Some(route) => match listener.rate_limit(route, ctx.identity.as_ref()) {
                Err((limited, policy, key)) => {
                    let metrics = &ctx.shared.resilience;
                    metrics.record_rate_limited(&listener.name, &policy, key);
                    (Err(limited), unrouted(&listener, &route.name))
                }
                Ok(admitted) => {
                    quota = admitted;
                    route_request(req, route, &listener, &ctx.shared).await
                }
            },
        },
    };
    let (mut resp, error) = match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = Guarded {
                inner: body,
                _guards: active,
            };
            (Response::from_parts(parts, body.boxed()), "")
        }
        Err(err) => {
            tracing::debug!(listener = %listener.name, error = %err, "request failed");
            (err.to_response(grpc), err.reason())
        }
    };
    if let Some(quota) = quota {
        set_quota_headers(resp.headers_mut(), &quota);
    }
    let status = resp.status().as_u16();
    let grpc_status = if grpc {
        observe::grpc_status(resp.headers())
    } else {
        None
    };
    // A gRPC response without a status in its headers has it in its trailers.
    let count_at_end = grpc && grpc_status.is_none() && !resp.body().is_end_stream();
    if !count_at_end {
        ctx.shared.metrics.record_request(
            &labels,
            &ctx.call,
            status,
            grpc_status,
            error,
            started.elapsed(),
        );
    }
    let trace_id = match (&traced, &log) {
        (Some(traced), Some(_)) => Some(traced.trace_id()),
        _ => None,
    };
    if let (Some(seen), Some(traced)) = (&seen, traced) {
        traced.finish(seen, &ctx, &labels, status);
    }
    if count_at_end || tapped || log.is_some() {
        let completion = Completion {
            ctx: ctx.clone(),
            labels,
            started,
            status,
            error,
            grpc_status,
            count: count_at_end,
            seen: if tapped || log.is_some() { seen } else { None },
            tapped,
            log,
            trace_id,
        };
        resp = resp.map(|body| Observed::new(body, completion).boxed());
    }
    *resp.version_mut() = client_version;
    Ok(resp)
}

/// Tells the client of a request a rate limit admitted how much of its quota is left,
/// in the headers a 429 carries. A backend that sent its own `ratelimit-limit` keeps
/// its set: the three headers describe one limit, never a mix of two.
fn set_quota_headers(headers: &mut HeaderMap, quota: &Quota) {
    if headers.contains_key(RATELIMIT_LIMIT) {
        return;
    }
    for (name, value) in quota.headers() {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// A routed request: its faults, then its redirect or its backend.
async fn route_request(
    req: Request<Incoming>,
    route: &Route,
    listener: &Listener,
    shared: &Arc<Shared>,
) -> (Result<Response<BoxBody>, ProxyError>, RouteLabels) {
    let unrouted = || unrouted(listener, &route.name);
    if let Some(fault) = &route.fault {
        let injected = fault.draw(&req);
        if let Some(delay) = injected.delay {
            shared
                .metrics
                .record_fault(&unrouted(), &fault.name, "delay");
            tokio::time::sleep(delay).await;
        }
        if let Some(abort) = injected.abort {
            shared
                .metrics
                .record_fault(&unrouted(), &fault.name, "abort");
            let aborted = ProxyError::FaultAbort {
                fault: fault.name.clone(),
                status: abort.status,
                grpc: abort.grpc,
            };
            return (Err(aborted), unrouted());
        }
    }
    match (&route.filters.redirect, route.pick_backend()) {
        (Some(redirect), _) => (Ok(redirect_response(redirect, &req, route)), unrouted()),
        (None, None) => (
            Err(ProxyError::NoBackend {
                route: route.name.clone(),
            }),
            unrouted(),
        ),
        (None, Some(target)) => (
            proxy(req, route, target, shared).await,
            target.labels.clone(),
        ),
    }
}

/// The error for a request no route takes. On an egress listener the routes are the
/// declared external hosts, so the request is refused by name and counted.
fn no_route<B>(req: &Request<B>, listener: &Listener, shared: &Shared) -> ProxyError {
    if !listener.egress {
        return ProxyError::NoRoute {
            listener: listener.name.clone(),
        };
    }
    let host = crate::route::request_authority(req)
        .map(|a| a.host().to_string())
        .unwrap_or_default();
    tracing::info!(listener = %listener.name, %host, "request to an undeclared external host refused");
    crate::transparent::count_refused(shared, &listener.name, "undeclared_host");
    ProxyError::UndeclaredHost { host }
}

/// Labels for a request no backend was chosen for.
fn unrouted(listener: &Listener, route: &str) -> RouteLabels {
    RouteLabels {
        listener: listener.name.clone(),
        route: route.into(),
        backend: "".into(),
    }
}

/// The answer of a route whose filter is a redirect.
fn redirect_response<B>(redirect: &Redirect, req: &Request<B>, route: &Route) -> Response<BoxBody> {
    let mut resp = Response::new(Empty::new().map_err(BoxError::from).boxed());
    *resp.status_mut() = redirect.status;
    if let Ok(location) = HeaderValue::from_str(&redirect.location(req)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    edit_headers(route.filters.response_headers.as_ref(), resp.headers_mut());
    resp
}

/// Forwards a request through the route's filters and returns the backend's response,
/// whose body keeps the request counted as in flight on its endpoint until it ends.
async fn proxy(
    req: Request<Incoming>,
    route: &Route,
    target: &RouteBackend,
    shared: &Arc<Shared>,
) -> Result<Response<BoxBody>, ProxyError> {
    let backend = &target.backend;
    let upgrade = is_upgrade(&req);
    let (mut parts, body) = req.into_parts();
    let mut body = Coalesce::new(body).map_err(BoxError::from).boxed();
    let filters = &route.filters;
    edit_headers(filters.request_headers.as_ref(), &mut parts.headers);
    if let Some(rewrite) = &filters.rewrite {
        rewrite.apply(&mut parts);
    }
    // Mirrors get the request as the route changed it, without the backend's own
    // changes; an upgrade is a connection, not a request to copy.
    if !upgrade && !filters.mirrors.is_empty() {
        body = mirror::start(&filters.mirrors, &parts, body, route.timeout, shared);
    }
    edit_headers(target.request_headers.as_ref(), &mut parts.headers);
    let req = Request::from_parts(parts, body);
    let protection = &backend.protection;
    let admission = protection.admit().map_err(|rejection| {
        shared.resilience.record_rejection(&backend.name, rejection);
        ProxyError::Overflow {
            backend: backend.name.clone(),
            rejection,
            retry_after: match rejection {
                Rejection::ConcurrencyLimit => protection.retry_after(),
                Rejection::Limit(_) => None,
            },
        }
    })?;
    protection.deposit(tokio::time::Instant::now());
    // Endpoints this request has tried, a bit per index, so a retry goes elsewhere.
    let tried = AtomicU64::new(0);
    let connect_failures = retry::CONNECT_FAILURES;
    let policy = route.retry.as_ref().unwrap_or(&connect_failures);
    let send = async {
        if upgrade {
            // A connection handed over to another protocol is never retried.
            let (resp, in_flight) = attempt(req, target, None, shared, true, &tried).await?;
            return Ok((boxed(resp), in_flight, None));
        }
        retry::send(
            Some(policy),
            req,
            |req| async {
                let attempt = attempt(req, target, route.backend_timeout, shared, false, &tried);
                let (resp, in_flight) = attempt.await?;
                let (resp, grpc_status) =
                    retry::grpc_status_of(boxed(resp), policy.retries_grpc()).await;
                Ok((resp, in_flight, grpc_status))
            },
            |(resp, _, grpc_status): &Answered| retry::Answer {
                status: resp.status(),
                grpc_status: *grpc_status,
            },
            |reason| shared.metrics.record_retry(&target.labels, reason),
            || {
                let allowed = protection.try_retry(tokio::time::Instant::now());
                if !allowed {
                    shared.resilience.record_budget_exhausted(&backend.name);
                }
                allowed
            },
        )
        .await
    };
    let (resp, in_flight, _) = match route.timeout {
        Some(limit) => tokio::time::timeout(limit, send)
            .await
            .map_err(|_| ProxyError::RequestTimeout(limit))??,
        None => send.await?,
    };
    let (mut parts, body) = from_backend(resp).into_parts();
    edit_headers(filters.response_headers.as_ref(), &mut parts.headers);
    edit_headers(target.response_headers.as_ref(), &mut parts.headers);
    let body = Guarded {
        inner: body,
        _guards: (in_flight, admission),
    };
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A backend's response as the client gets it: small chunks that came in together
/// leave together (`flow::Coalesce`).
fn boxed(resp: Response<Incoming>) -> Response<BoxBody> {
    resp.map(|b| Coalesce::new(b).map_err(BoxError::from).boxed())
}

/// An attempt's response, its place in flight on its endpoint, and the gRPC status
/// seen before anything of it was passed on.
type Answered = (Response<BoxBody>, InFlight, Option<u32>);

/// One attempt: an endpoint of the backend (one this request has not tried, when there
/// is one), the request in the form it needs, response headers within `limit`. The
/// request stays counted as in flight on the endpoint as long as the returned guard
/// lives. What the endpoint answered goes to the backend's outlier detection, and its
/// latency to the balancer and the adaptive concurrency limit.
async fn attempt(
    req: Request<BoxBody>,
    target: &RouteBackend,
    limit: Option<std::time::Duration>,
    shared: &Arc<Shared>,
    upgrade: bool,
    tried: &AtomicU64,
) -> Result<(Response<Incoming>, InFlight), ProxyError> {
    let backend = &target.backend;
    let key = backend.hash_key(req.headers(), || shared.tls.spiffe_id());
    let picked = backend
        .pick_for(key.as_deref(), tried.load(Ordering::Relaxed))
        .ok_or_else(|| ProxyError::NoEndpoints {
            backend: backend.name.clone(),
        })?;
    if picked.index < 64 {
        tried.fetch_or(1 << picked.index, Ordering::Relaxed);
    }
    let endpoint = picked.endpoint;
    let in_flight = InFlight::new(endpoint.clone());
    // Only endpoints of the mesh need this proxy's identity; others skip the lookup.
    let identity = match endpoint.identity() {
        Some(_) => shared.tls.identity(),
        None => None,
    };
    let protection = &backend.protection;
    let breaker = protection.breaker().map(|b| &**b);
    let started = Instant::now();
    let send = async {
        if upgrade {
            if !endpoint.carries_upgrades() {
                return Err(ProxyError::UpgradeUnsupported {
                    backend: backend.name.clone(),
                });
            }
            forward_upgrade(req, &endpoint, identity.as_deref(), shared).await
        } else {
            let protocol = endpoint.protocol(identity.as_deref());
            let req = to_backend(req, protocol, endpoint.addr());
            Ok(endpoint.send(req, identity.as_deref(), breaker).await?)
        }
    };
    let result = match limit {
        Some(limit) => tokio::time::timeout(limit, send)
            .await
            .unwrap_or(Err(ProxyError::BackendTimeout(limit))),
        None => send.await,
    };
    let now = tokio::time::Instant::now();
    let outcome = match &result {
        Ok(resp) => Outcome::of_status(resp.status().as_u16()),
        Err(ProxyError::Endpoint(EndpointError::Overflow(_))) => None,
        Err(e) if e.is_retryable() => Some(Outcome::Failure),
        Err(_) => None,
    };
    if let Some(outcome) = outcome {
        if protection.record(picked.index, outcome, now) {
            shared.resilience.record_ejection(&backend.name);
            tracing::info!(backend = %backend.name, endpoint = %endpoint.addr(), "endpoint ejected");
        }
    }
    let resp = result.map_err(|e| match e {
        ProxyError::Endpoint(EndpointError::Overflow(overflow)) => {
            let rejection = Rejection::Limit(overflow);
            shared.resilience.record_rejection(&backend.name, rejection);
            ProxyError::Overflow {
                backend: backend.name.clone(),
                rejection,
                retry_after: None,
            }
        }
        e => e,
    })?;
    let rtt = started.elapsed();
    endpoint.load().observe_rtt(rtt);
    protection.observe_rtt(rtt, now);
    Ok((resp, in_flight))
}

/// Passes an `Upgrade` request (WebSocket and the like) to the backend on a connection of
/// its own; if the backend switches protocols, both upgraded streams are joined.
async fn forward_upgrade(
    mut req: Request<BoxBody>,
    endpoint: &Arc<Endpoint>,
    identity: Option<&Identity>,
    shared: &Arc<Shared>,
) -> Result<Response<Incoming>, ProxyError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let protocol = upgrade_protocols(req.headers());
    let mut req = to_backend(req, BackendProtocol::Http1, endpoint.addr());
    if let Some(protocol) = protocol {
        req.headers_mut().insert(header::UPGRADE, protocol);
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut resp = endpoint.send_upgrade(req, identity).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let guard = shared.drain.track();
        tokio::spawn(async move {
            let _guard = guard;
            match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(client), Ok(backend)) => {
                    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                }
                (c, b) => tracing::debug!(client = ?c.err(), backend = ?b.err(), "upgrade failed"),
            }
        });
    }
    Ok(resp)
}

/// True for an HTTP/1 request asking to switch to a protocol the proxy passes on.
/// An offer of `h2c` alone is no such request: the proxy serves it as HTTP/1.1 and the
/// offer, being hop-by-hop, goes no further (RFC 9113 section 3.1 lets a server ignore
/// it). Passing it on would switch the backend's connection to HTTP/2 behind the
/// proxy's back, and a mesh connection already speaks HTTP/2 between proxies.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && connection_has(req.headers(), "upgrade")
        && upgrade_protocols(req.headers()).is_some()
}

/// The `upgrade` header's protocols other than `h2c`, as one value; `None` when no
/// other is offered.
fn upgrade_protocols(headers: &HeaderMap) -> Option<HeaderValue> {
    let offered: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered.join(", ")).ok()
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers that describe one connection, not the message, and so never cross a proxy
/// (RFC 9110 section 7.6.1); HTTP/2 forbids them outright.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // `te: trailers` is how gRPC says it understands trailers; any other `te` value
    // is about this hop only.
    let keeps_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if keeps_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites a client's request into what the backend's protocol expects: origin-form
/// URI and a `host` header for HTTP/1.1, absolute URI (`:authority`) for HTTP/2.
pub(super) fn to_backend(
    req: Request<BoxBody>,
    protocol: BackendProtocol,
    endpoint: std::net::SocketAddr,
) -> Request<BoxBody> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The proxy answered `100 Continue` itself when it started reading the body.
    parts.headers.remove(header::EXPECT);
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            let host = parts.headers.get(header::HOST)?.to_str().ok()?;
            host.parse::<Authority>().ok()
        })
        .unwrap_or_else(|| {
            Authority::try_from(endpoint.to_string()).unwrap_or(Authority::from_static("localhost"))
        });
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or(PathAndQuery::from_static("/"));
    match protocol {
        BackendProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.entry(header::HOST).or_insert(host);
            }
        }
        BackendProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            let mut uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path.clone())
                .build();
            if uri.is_err() {
                uri = Uri::builder().path_and_query(path).build();
            }
            if let Ok(uri) = uri {
                parts.uri = uri;
            }
        }
    }
    Request::from_parts(parts, body)
}

/// Strips the backend connection's own headers from its response. The response to an
/// upgrade keeps `upgrade` and `connection`, which the client needs to switch.
fn from_backend<B>(mut resp: Response<B>) -> Response<B> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    strip_hop_by_hop(resp.headers_mut());
    resp
}

/// Counts a request as active on its client connection until dropped.
struct ActiveRequest(Arc<AtomicUsize>);

impl ActiveRequest {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps guards alive until the body is finished or dropped,
    /// so load and activity counts cover the whole response, not just its headers.
    struct Guarded<B, G> {
        #[pin]
        inner: B,
        _guards: G,
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(headers[header::TE], "trailers");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let req = Request::builder()
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .expect("request");
        assert!(is_upgrade(&req));
        let req = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .expect("request");
        assert!(!is_upgrade(&req));
    }

    #[test]
    fn an_h2c_offer_is_served_as_http1_and_other_offers_lose_only_h2c() {
        let offer = |upgrade: &str| {
            Request::builder()
                .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
                .header(header::UPGRADE, upgrade)
                .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
                .body(())
                .expect("request")
        };
        assert!(!is_upgrade(&offer("h2c")));
        assert!(!is_upgrade(&offer(" H2C ")));
        let both = offer("h2c, websocket");
        assert!(is_upgrade(&both));
        assert_eq!(
            upgrade_protocols(both.headers()),
            Some(HeaderValue::from_static("websocket"))
        );
        // What reaches the backend of a request served as HTTP/1.1: no trace of the offer.
        let mut headers = offer("h2c").into_parts().0.headers;
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
