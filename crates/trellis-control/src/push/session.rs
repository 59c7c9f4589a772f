//! One proxy's session: its `Hello`, its workload in the store and the registry, the
//! snapshots it is sent and what it answers, and its certificates.
//!
//! The `Hello`'s token decides the session's identity. A bootstrap token (`trellis
//! token create`, or the session token of an earlier certificate) is bound to one
//! SPIFFE ID, and the workload must be that identity: its namespace and service
//! account (the service name when none is given). The admin token vouches for any
//! workload. Every CSR of the session is then signed for that identity alone.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use trellis_api::meta::DEFAULT_NAMESPACE;
use trellis_api::proto::v1::{
    control_message, proxy_message, Certificate, ControlMessage, Hello, ProxyMessage, SessionInfo,
    Snapshot, TapStop, TrustBundle, Workload,
};
use trellis_api::service::{WorkloadPort, WorkloadSpec};
use trellis_api::{Kind, ObjectMeta, Resource, Spec};
use trellis_identity::{SpiffeId, TokenError};

use super::Inner;
use crate::api::auth::tokens_match;
use crate::api::{storage, write};
use crate::ca::CaVersion;
use crate::compile::{Compiled, APP_LABEL};
use crate::registry::{now_rfc3339, ProxyStatus, SyncState};

/// A workload accepted from a `Hello`, with the session number it got and the
/// identity its certificates are for.
pub struct Registered {
    pub workload: Workload,
    pub session: u64,
    pub identity: SpiffeId,
    /// This registration's mark on the Workload resource ([`REGISTRATION`]).
    pub registration: String,
    /// The proxy applies snapshots sent as changes.
    pub accepts_delta: bool,
}

/// Annotation on a Workload naming the session that registered it last:
/// `<control-plane instance>/<session number>`. A re-registration through any control
/// plane sharing the store changes it, so a grace-period removal deletes the workload
/// only if no session took it over since.
pub const REGISTRATION: &str = "trellis.dev/registration";

/// Reads the first message, which must be a `Hello`.
pub async fn read_hello(inbound: &mut Streaming<ProxyMessage>) -> Result<Hello, Status> {
    let first = inbound.message().await?;
    let Some(ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    }) = first
    else {
        return Err(Status::invalid_argument(
            "the first message of a session must be Hello",
        ));
    };
    Ok(hello)
}

/// Whether `hello` carries the admin token.
fn is_admin(inner: &Inner, hello: &Hello) -> bool {
    tokens_match(hello.token.as_bytes(), inner.settings.token.as_bytes())
}

/// The identity `hello`'s token allows for `identity` (what the workload would be):
/// refused unless the token is the admin token or a valid token bound to it.
fn authorize(inner: &Inner, hello: &Hello, identity: &SpiffeId) -> Result<(), Status> {
    if is_admin(inner, hello) {
        return Ok(());
    }
    let claims = inner.ca.verify_token(&hello.token).map_err(|e| {
        tracing::warn!(identity = %identity, error = %e, "refused a proxy session");
        match e {
            TokenError::Expired { .. } => Status::unauthenticated(format!(
                "{e}: ask for a new one with `trellis token create`"
            )),
            _ => Status::unauthenticated(format!("wrong or missing token: {e}")),
        }
    })?;
    if &claims.id != identity {
        tracing::warn!(token = %claims.id, workload = %identity, "refused a proxy session for another identity");
        return Err(Status::permission_denied(format!(
            "the token is bound to {}, but this workload is {identity}",
            claims.id
        )));
    }
    Ok(())
}

/// Checks the workload, writes it to the store and records the proxy.
pub async fn register(inner: &Inner, hello: &Hello) -> Result<Registered, Status> {
    let mut workload = hello
        .workload
        .clone()
        .ok_or_else(|| Status::invalid_argument("Hello has no workload"))?;
    if workload.namespace.is_empty() {
        workload.namespace = DEFAULT_NAMESPACE.to_string();
    }
    // Each service is its own identity unless the workload names an account.
    if workload.service_account.is_empty() {
        workload.service_account = workload.service.clone();
    }
    let identity = inner
        .ca
        .identity(&workload.namespace, &workload.service_account)
        .map_err(|e| Status::invalid_argument(format!("workload identity: {e}")))?;
    match &inner.settings.platform {
        Some(platform) if !is_admin(inner, hello) => {
            if let Err(e) = platform.authenticate(&hello.token, &workload).await {
                // A proxy reconnecting presents the session token that came with its
                // certificate, which the CA checks; anything else gets the platform's
                // reason.
                if authorize(inner, hello, &identity).is_err() {
                    tracing::warn!(identity = %identity, error = %e, "refused a proxy session");
                    return Err(Status::unauthenticated(e));
                }
            }
        }
        _ => authorize(inner, hello, &identity)?,
    }
    let session = {
        let mut sessions = inner
            .sessions
            .lock()
            .map_err(|_| Status::internal("session table poisoned"))?;
        let n = sessions.entry(workload.name.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let registration = format!("{}/{session}", inner.instance);
    let mut resource = workload_resource(&workload).map_err(Status::invalid_argument)?;
    // On a platform, its source writes the workloads.
    if inner.settings.platform.is_none() {
        resource
            .metadata
            .annotations
            .insert(REGISTRATION.to_string(), registration.clone());
        write::apply(inner.store.as_ref(), &resource)
            .await
            .map_err(|e| Status::unavailable(format!("cannot register the workload: {e}")))?;
        if let Ok(mut live) = inner.live.lock() {
            live.insert(storage::key_of(&resource), resource);
        }
    }
    inner.registry.upsert(ProxyStatus {
        workload: workload.name.clone(),
        namespace: workload.namespace.clone(),
        service: workload.service.clone(),
        address: format!("{}:{}", workload.address, workload.inbound_port),
        proxy_version: hello.proxy_version.clone(),
        sent_version: 0,
        acked_version: hello.serving_version,
        state: SyncState::Pending,
        last_error: None,
        connected_at: now_rfc3339(),
        identity: identity.to_string(),
        certificate_expires: None,
        admin_address: hello.admin_address.clone(),
    });
    tracing::info!(workload = %workload.name, service = %workload.service, %identity, "proxy connected");
    Ok(Registered {
        workload,
        session,
        identity,
        registration,
        accepts_delta: hello.accepts_delta,
    })
}

/// The Workload resource a proxy's `Hello` describes.
fn workload_resource(w: &Workload) -> Result<Resource, String> {
    if w.service.is_empty() {
        return Err("workload.service: must not be empty".into());
    }
    let address: IpAddr = w
        .address
        .parse()
        .map_err(|_| format!("workload.address: {:?} is not an IP address", w.address))?;
    let port = |value: u32, field: &str| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("workload.{field}: must be between 1 and 65535, got {value}"))
    };
    // No application port: a client only, which serves nothing.
    let app_port = match w.app_port {
        0 => None,
        p => Some(port(p, "appPort")?),
    };
    let inbound_port = port(w.inbound_port, "inboundPort")?;
    let mut labels: BTreeMap<String, String> = w.labels.clone().into_iter().collect();
    labels.insert(APP_LABEL.to_string(), w.service.clone());
    let mut metadata = ObjectMeta::new(&w.namespace, &w.name);
    metadata.labels = labels;
    let spec = WorkloadSpec {
        address,
        ports: app_port
            .map(|port| WorkloadPort {
                name: None,
                port,
                app_protocol: None,
            })
            .into_iter()
            .collect(),
        inbound_port: Some(inbound_port),
        service_account: w.service_account.clone(),
        zone: (!w.zone.is_empty()).then(|| w.zone.clone()),
        proxy_version: None,
    };
    let resource = Resource::new(metadata, Spec::Workload(spec));
    resource.validate().map_err(|e| e.to_string())?;
    Ok(resource)
}

/// Sends snapshots as the mesh changes and records answers, until the proxy leaves.
pub async fn run(
    inner: Arc<Inner>,
    registered: Registered,
    mut inbound: Streaming<ProxyMessage>,
    tx: mpsc::Sender<Result<ControlMessage, Status>>,
) {
    let name = registered.workload.name.clone();
    let mut mesh = inner.mesh.subscribe();
    let mut stopping = inner.stopping.subscribe();
    let mut ca = inner.ca.subscribe();
    let mut ca_seen = ca.borrow_and_update().clone();
    let mut sent = Sent::default();
    let mut tap_updates = inner.taps.subscribe();
    let mut running_taps = std::collections::HashSet::new();
    // The proxy's latest CSR, re-signed when the signer changes (rotation).
    let mut last_csr: Option<String> = None;
    let info = ControlMessage {
        message: Some(control_message::Message::SessionInfo(SessionInfo {
            identity: registered.identity.to_string(),
            trust_bundle_pem: ca_seen.bundle_pem.to_string(),
        })),
    };
    if tx.send(Ok(info)).await.is_err() {
        return disconnected(inner, registered).await;
    }
    // Taps already running for the service start on this proxy too.
    tap_updates.mark_unchanged();
    for message in tap_changes(&inner, &registered, &mut running_taps)
        .into_iter()
        .flatten()
    {
        if tx.send(Ok(message)).await.is_err() {
            return disconnected(inner, registered).await;
        }
    }
    loop {
        let version = mesh.borrow_and_update().clone();
        // Revision 0 is the empty state before the first read of the store.
        if version.revision > 0 {
            let config = Arc::new(version.index.compile_parts(&registered.workload));
            if let Some(snapshot) = sent.next(config.clone(), version.revision, &registered) {
                let message = ControlMessage {
                    message: Some(control_message::Message::Snapshot(snapshot)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    break;
                }
                inner.registry.update(&name, |s| {
                    s.sent_version = version.revision;
                    s.state = if s.acked_version == version.revision {
                        SyncState::Synced
                    } else {
                        SyncState::Pending
                    };
                });
                inner.registry.record_sent(&name, config);
            }
        }
        let reply = tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            changed = mesh.changed() => if changed.is_err() { break } else { None },
            changed = tap_updates.changed() => {
                if changed.is_err() {
                    break;
                }
                tap_changes(&inner, &registered, &mut running_taps)
            }
            changed = ca.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = ca.borrow_and_update().clone();
                let reply = ca_change(&inner, &registered, &ca_seen, &now, last_csr.as_deref());
                ca_seen = now;
                reply
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    if matches!(message.message, Some(proxy_message::Message::Nack(_))) {
                        sent.whole_next = true;
                    }
                    answer(&inner, &registered, message, &mut last_csr)
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(workload = %name, %status, "proxy stream failed");
                    break;
                }
            },
        };
        for message in reply.into_iter().flatten() {
            if tx.send(Ok(message)).await.is_err() {
                return disconnected(inner, registered).await;
            }
        }
    }
    disconnected(inner, registered).await;
}

/// What a session sent its proxy last, which the next snapshot is a delta from.
#[derive(Default)]
struct Sent {
    last: Option<(u64, Arc<Compiled>)>,
    /// The proxy refused a snapshot: the next is sent whole, whatever it holds now.
    whole_next: bool,
}

impl Sent {
    /// The snapshot that brings the proxy to `config` at `version`: the changes alone
    /// when the proxy takes them, `None` when nothing changed.
    fn next(
        &mut self,
        config: Arc<Compiled>,
        version: u64,
        registered: &Registered,
    ) -> Option<Snapshot> {
        let delta = match &self.last {
            None => None,
            Some((base_version, base)) => Some(config.delta_from(base, *base_version)?),
        };
        let delta = delta.filter(|_| registered.accepts_delta && !self.whole_next);
        let snapshot = Snapshot {
            version,
            config: delta.is_none().then(|| config.to_config()),
            delta,
        };
        self.last = Some((version, config));
        self.whole_next = false;
        Some(snapshot)
    }
}

/// Records an ACK or NACK; signs a CSR. Returns what to send back.
fn answer(
    inner: &Inner,
    registered: &Registered,
    message: ProxyMessage,
    last_csr: &mut Option<String>,
) -> Option<Vec<ControlMessage>> {
    let name = registered.workload.name.as_str();
    match message.message {
        Some(proxy_message::Message::Ack(ack)) => inner.registry.update(name, |s| {
            s.acked_version = ack.version;
            if ack.version == s.sent_version {
                s.state = SyncState::Synced;
                s.last_error = None;
            }
        }),
        Some(proxy_message::Message::Nack(nack)) => {
            tracing::warn!(workload = %name, version = nack.version, error = %nack.error, "proxy refused its configuration");
            inner.registry.update(name, |s| {
                s.state = SyncState::Nacked;
                s.last_error = Some(nack.error);
            });
        }
        Some(proxy_message::Message::CertificateRequest(request)) => {
            let reply = certificate(inner, registered, &request.csr_pem);
            if reply.error.is_empty() {
                *last_csr = Some(request.csr_pem);
            }
            return Some(vec![certificate_message(reply)]);
        }
        Some(proxy_message::Message::TapEvent(mut event)) => {
            // The proxy does not know its own name or, on inbound, its identity; the
            // session does.
            event.workload = registered.workload.name.clone();
            let own = registered.identity.to_string();
            if event.direction == "inbound" {
                event.destination_identity = own;
            } else {
                event.source_identity = own;
            }
            inner.taps.deliver(event);
        }
        Some(proxy_message::Message::Hello(_)) | None => {}
    }
    None
}

/// The `TapStart`s and `TapStop`s that bring the proxy's taps to those its service
/// should run now; `running` is updated to match.
fn tap_changes(
    inner: &Inner,
    registered: &Registered,
    running: &mut std::collections::HashSet<String>,
) -> Option<Vec<ControlMessage>> {
    let w = &registered.workload;
    let wanted = inner.taps.for_service(&w.service, &w.namespace);
    let mut messages = Vec::new();
    for start in &wanted {
        if running.insert(start.id.clone()) {
            messages.push(control_message::Message::TapStart(start.clone()));
        }
    }
    running.retain(|id| {
        let keep = wanted.iter().any(|t| &t.id == id);
        if !keep {
            messages.push(control_message::Message::TapStop(TapStop {
                id: id.clone(),
            }));
        }
        keep
    });
    let messages: Vec<ControlMessage> = messages
        .into_iter()
        .map(|m| ControlMessage { message: Some(m) })
        .collect();
    (!messages.is_empty()).then_some(messages)
}

/// Signs `csr_pem` for the session's identity, or says why not.
fn certificate(inner: &Inner, registered: &Registered, csr_pem: &str) -> Certificate {
    let name = &registered.workload.name;
    let bundle_pem = inner.ca.trust_bundle().to_pem();
    let issued = match inner.ca.sign(csr_pem, &registered.identity) {
        Ok(issued) => issued,
        Err(e) => {
            tracing::warn!(workload = %name, identity = %registered.identity, error = %e, "refused a CSR");
            return Certificate {
                error: e.to_string(),
                trust_bundle_pem: bundle_pem,
                ..Default::default()
            };
        }
    };
    let ttl = issued
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let session_token = inner
        .ca
        .issue_token(&registered.identity, ttl)
        .unwrap_or_default();
    let expires = trellis_api::meta::rfc3339(issued.not_after);
    tracing::info!(workload = %name, identity = %registered.identity, serial = %issued.serial, %expires, "issued a workload certificate");
    inner
        .registry
        .update(name, |s| s.certificate_expires = Some(expires));
    Certificate {
        chain_pem: issued.chain_pem,
        trust_bundle_pem: bundle_pem,
        session_token,
        error: String::new(),
    }
}

fn certificate_message(certificate: Certificate) -> ControlMessage {
    ControlMessage {
        message: Some(control_message::Message::Certificate(certificate)),
    }
}

/// What a proxy is sent when the CA changes: the new bundle, and a certificate from
/// the new signer for the CSR it last sent.
fn ca_change(
    inner: &Inner,
    registered: &Registered,
    before: &CaVersion,
    now: &CaVersion,
    last_csr: Option<&str>,
) -> Option<Vec<ControlMessage>> {
    let mut messages = Vec::new();
    if before.bundle_pem != now.bundle_pem {
        messages.push(ControlMessage {
            message: Some(control_message::Message::TrustBundle(TrustBundle {
                roots_pem: now.bundle_pem.to_string(),
            })),
        });
    }
    if before.signer_generation != now.signer_generation {
        if let Some(csr) = last_csr {
            messages.push(certificate_message(certificate(inner, registered, csr)));
        }
    }
    (!messages.is_empty()).then_some(messages)
}

/// Marks the proxy disconnected and, unless it comes back within the grace period,
/// removes its workload.
async fn disconnected(inner: Arc<Inner>, registered: Registered) {
    let name = registered.workload.name.clone();
    if let Ok(mut live) = inner.live.lock() {
        live.retain(|_, w| {
            w.metadata.annotations.get(REGISTRATION) != Some(&registered.registration)
        });
    }
    tracing::info!(workload = %name, "proxy disconnected");
    inner
        .registry
        .update(&name, |s| s.state = SyncState::Disconnected);
    let mut stopping = inner.stopping.subscribe();
    tokio::select! {
        () = tokio::time::sleep(inner.settings.grace) => {}
        // The control plane is stopping: the workload stays registered in the store for
        // whichever control plane comes next.
        _ = stopping.wait_for(|stopping| *stopping) => return,
    }
    let current = inner
        .sessions
        .lock()
        .ok()
        .and_then(|s| s.get(&name).copied());
    if current != Some(registered.session) {
        return; // reconnected here since
    }
    // Removed only if still ours: the proxy may have registered again through another
    // control plane on the same store. On a platform, its source removes workloads.
    let namespace = &registered.workload.namespace;
    let ours =
        |w: &Resource| w.metadata.annotations.get(REGISTRATION) == Some(&registered.registration);
    if inner.settings.platform.is_none() {
        match write::delete_if(inner.store.as_ref(), Kind::Workload, namespace, &name, ours).await {
            Ok(Some(_)) => {
                tracing::info!(workload = %name, "workload removed after its grace period")
            }
            Ok(None) => {
                tracing::info!(workload = %name, "workload registered again elsewhere; kept")
            }
            Err(e) => tracing::warn!(workload = %name, error = %e, "cannot remove the workload"),
        }
    }
    inner.registry.remove(&name);
    if let Ok(mut sessions) = inner.sessions.lock() {
        sessions.remove(&name);
    }
}
