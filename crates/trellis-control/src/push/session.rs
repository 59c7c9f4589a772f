//! One proxy's session: its `Hello`, its workload in the store and the registry, the
//! snapshots it is sent and what it answers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use trellis_api::meta::DEFAULT_NAMESPACE;
use trellis_api::proto::v1::{
    control_message, proxy_message, ControlMessage, Hello, ProxyConfig, ProxyMessage, Snapshot,
    Workload,
};
use trellis_api::service::{WorkloadPort, WorkloadSpec};
use trellis_api::{Kind, ObjectMeta, Resource, Spec};

use super::Inner;
use crate::api::auth::tokens_match;
use crate::api::write;
use crate::compile::APP_LABEL;
use crate::registry::{now_rfc3339, ProxyStatus, SyncState};

/// A workload accepted from a `Hello`, with the session number it got.
pub struct Registered {
    pub workload: Workload,
    pub session: u64,
}

/// Reads the first message, which must be a `Hello` carrying the right token.
pub async fn read_hello(
    inbound: &mut Streaming<ProxyMessage>,
    token: &str,
) -> Result<Hello, Status> {
    let first = inbound.message().await?;
    let Some(ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    }) = first
    else {
        return Err(Status::invalid_argument(
            "the first message of a session must be Hello",
        ));
    };
    if !tokens_match(hello.token.as_bytes(), token.as_bytes()) {
        tracing::warn!("refused a proxy session with a wrong token");
        return Err(Status::unauthenticated("wrong or missing token"));
    }
    Ok(hello)
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
    let resource = workload_resource(&workload).map_err(Status::invalid_argument)?;
    write::apply(inner.store.as_ref(), &resource)
        .await
        .map_err(|e| Status::unavailable(format!("cannot register the workload: {e}")))?;
    let session = {
        let mut sessions = inner
            .sessions
            .lock()
            .map_err(|_| Status::internal("session table poisoned"))?;
        let n = sessions.entry(workload.name.clone()).or_insert(0);
        *n += 1;
        *n
    };
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
    });
    tracing::info!(workload = %workload.name, service = %workload.service, "proxy connected");
    Ok(Registered { workload, session })
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
    let app_port = port(w.app_port, "appPort")?;
    let inbound_port = port(w.inbound_port, "inboundPort")?;
    let mut labels: BTreeMap<String, String> = w.labels.clone().into_iter().collect();
    labels.insert(APP_LABEL.to_string(), w.service.clone());
    let mut metadata = ObjectMeta::new(&w.namespace, &w.name);
    metadata.labels = labels;
    let spec = WorkloadSpec {
        address,
        ports: vec![WorkloadPort {
            name: None,
            port: app_port,
            app_protocol: None,
        }],
        inbound_port: Some(inbound_port),
        service_account: if w.service_account.is_empty() {
            "default".into()
        } else {
            w.service_account.clone()
        },
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
    let mut last_sent: Option<Arc<ProxyConfig>> = None;
    loop {
        let version = mesh.borrow_and_update().clone();
        // Revision 0 is the empty state before the first read of the store.
        if version.revision > 0 {
            let config = version.index.compile(&registered.workload);
            if last_sent.as_deref() != Some(&config) {
                let snapshot = Snapshot {
                    version: version.revision,
                    config: Some(config.clone()),
                };
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
                let config = Arc::new(config);
                inner.registry.record_sent(&name, config.clone());
                last_sent = Some(config);
            }
        }
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            changed = mesh.changed() => if changed.is_err() { break },
            message = inbound.message() => match message {
                Ok(Some(message)) => answer(&inner, &name, message),
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(workload = %name, %status, "proxy stream failed");
                    break;
                }
            },
        }
    }
    disconnected(inner, registered).await;
}

fn answer(inner: &Inner, name: &str, message: ProxyMessage) {
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
        Some(proxy_message::Message::Hello(_)) | None => {}
    }
}

/// Marks the proxy disconnected and, unless it comes back within the grace period,
/// removes its workload.
async fn disconnected(inner: Arc<Inner>, registered: Registered) {
    let name = registered.workload.name.clone();
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
        return; // reconnected since
    }
    let namespace = &registered.workload.namespace;
    match write::delete(inner.store.as_ref(), Kind::Workload, namespace, &name).await {
        Ok(_) => tracing::info!(workload = %name, "workload removed after its grace period"),
        Err(e) => tracing::warn!(workload = %name, error = %e, "cannot remove the workload"),
    }
    inner.registry.remove(&name);
    if let Ok(mut sessions) = inner.sessions.lock() {
        sessions.remove(&name);
    }
}
