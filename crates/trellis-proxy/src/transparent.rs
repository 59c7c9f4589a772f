//! Transparent mode, outbound: a connection the capture rules redirected to an
//! original-destination listener is routed by the address its client dialled — a
//! Service's virtual IP goes to the target listener that serves it (and from there
//! through the usual detect → route → balance path), a workload's application to that
//! workload's sidecar over mTLS, its bytes copied untouched, and any other address is
//! passed through as plain TCP or refused, as the egress mode says.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;

use trellis_identity::SpiffeId;

use crate::config::{DestinationAddress, EgressMode, OriginalDestination};
use crate::endpoint::{ConnectSettings, Endpoint, Opaque};
use crate::state::{Listener, Snapshot};
use crate::telemetry::OutboundLabels;
use crate::{sockopt, Shared};

/// An original-destination table, compiled for lookups.
#[derive(Debug)]
pub struct DestinationTable {
    by_socket: HashMap<SocketAddr, Decision>,
    by_ip: HashMap<IpAddr, Decision>,
    pub egress: EgressMode,
}

/// What becomes of a captured connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Served by the routes of this listener.
    Listener(Arc<str>),
    /// Copied to this workload's sidecar over mTLS.
    Workload(Arc<WorkloadSidecar>),
    /// Copied to and from the dialled address.
    Passthrough(SocketAddr),
    /// Closed; the reason is the metric's label.
    Refuse(&'static str),
}

impl DestinationTable {
    /// The first target holding an address keeps it.
    pub fn build(config: &OriginalDestination) -> Self {
        let mut by_socket = HashMap::new();
        let mut by_ip = HashMap::new();
        for target in &config.targets {
            let decision = match &target.workload {
                Some(w) => match w.identity.parse::<SpiffeId>() {
                    Ok(identity) => Decision::Workload(Arc::new(WorkloadSidecar {
                        address: w.address,
                        identity,
                    })),
                    // Validation refuses it; left out, its addresses fall to egress.
                    Err(_) => continue,
                },
                None => Decision::Listener(target.listener.as_str().into()),
            };
            for address in &target.addresses {
                match address {
                    DestinationAddress::Socket(a) => {
                        by_socket.entry(*a).or_insert_with(|| decision.clone());
                    }
                    DestinationAddress::Ip(ip) => {
                        by_ip.entry(*ip).or_insert_with(|| decision.clone());
                    }
                }
            }
        }
        Self {
            by_socket,
            by_ip,
            egress: config.egress,
        }
    }

    /// Where a connection that arrived at `local` having dialled `original` goes. An
    /// exact `IP:PORT` target wins over an IP target.
    pub fn decide(&self, original: SocketAddr, local: SocketAddr) -> Decision {
        // Not redirected (dialled the listener itself), or redirected to an address
        // that is the listener again: serving it would connect the proxy to itself.
        let to_self = original == local
            || (original.port() == local.port()
                && (original.ip().is_loopback() || original.ip().is_unspecified()));
        if to_self {
            return Decision::Refuse("loop");
        }
        let target = self
            .by_socket
            .get(&original)
            .or_else(|| self.by_ip.get(&original.ip()));
        match (target, self.egress) {
            (Some(decision), _) => decision.clone(),
            (None, EgressMode::AllowAny) => Decision::Passthrough(original),
            (None, EgressMode::RegistryOnly) => Decision::Refuse("registry_only"),
        }
    }
}

/// Routes a connection accepted on the original-destination listener `listener`:
/// returns the listener that serves it, or `None` when it was passed through or
/// refused here.
pub async fn dispatch(
    stream: TcpStream,
    listener: &Listener,
    table: &DestinationTable,
    snapshot: &Snapshot,
    shared: &Arc<Shared>,
) -> Option<(TcpStream, Arc<Listener>)> {
    let labels = |reason| OutboundLabels {
        listener: listener.name.clone(),
        reason,
    };
    let decision = match (sockopt::original_dst(&stream), stream.local_addr()) {
        (Ok(original), Ok(local)) => table.decide(original, local),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "no original destination; closing the connection");
            Decision::Refuse("unknown_destination")
        }
    };
    match decision {
        Decision::Listener(name) => match snapshot.listeners.get(&*name) {
            Some(target) => Some((stream, target.clone())),
            None => {
                // Validation makes every target name a listener.
                tracing::warn!(target = %name, "original-destination target missing");
                None
            }
        },
        Decision::Workload(sidecar) => {
            let mark = snapshot.config.socket_mark;
            relay_to_workload(stream, &sidecar, mark, listener, shared).await;
            None
        }
        Decision::Passthrough(original) => {
            shared
                .metrics
                .outbound_passthrough
                .get_or_create(&labels("allow_any"))
                .inc();
            let mark = snapshot.config.socket_mark;
            passthrough(stream, original, mark, listener).await;
            None
        }
        Decision::Refuse(reason) => {
            let peer = stream.peer_addr().ok();
            let original = sockopt::original_dst(&stream).ok();
            tracing::info!(
                ?peer,
                ?original,
                reason,
                "captured outbound connection refused"
            );
            count_refused(shared, &listener.name, reason);
            None
        }
    }
}

/// Counts a connection or request refused on its way out of the mesh, in
/// `trellis_outbound_refused_total{listener, reason}`.
pub(crate) fn count_refused(shared: &Shared, listener: &Arc<str>, reason: &'static str) {
    let labels = OutboundLabels {
        listener: listener.clone(),
        reason,
    };
    shared.metrics.outbound_refused.get_or_create(&labels).inc();
}

/// A workload's sidecar, which calls to its application's address are copied to.
#[derive(Debug, PartialEq, Eq)]
pub struct WorkloadSidecar {
    /// Its inbound listener.
    pub address: SocketAddr,
    /// The SPIFFE ID it must prove.
    pub identity: SpiffeId,
}

/// Copies bytes between the client and a workload's sidecar, over mTLS once this proxy
/// has its certificate (as to any mesh endpoint), with half-close.
async fn relay_to_workload(
    client: TcpStream,
    sidecar: &WorkloadSidecar,
    mark: Option<u32>,
    l: &Listener,
    shared: &Shared,
) {
    let settings = ConnectSettings {
        protocol: crate::config::BackendProtocol::Http1,
        connect_timeout: crate::config::defaults::connect_timeout().get(),
        idle_timeout: crate::config::defaults::pool_idle_timeout().get(),
        mark,
        resolver: None,
    };
    let endpoint = Endpoint::new(sidecar.address, settings, Some(sidecar.identity.clone()));
    let identity = shared.tls.identity();
    match endpoint.open_tcp(identity.as_deref()).await {
        Ok(Opaque::Plain(upstream)) => {
            crate::tcp::splice(client, upstream, l).await;
        }
        Ok(Opaque::Mtls(upstream)) => {
            crate::tcp::splice(client, upstream, l).await;
        }
        Err(e) => {
            tracing::debug!(sidecar = %sidecar.address, error = %e, "workload connect failed");
        }
    }
}

/// Copies bytes between the client and the address it dialled, with half-close.
async fn passthrough(client: TcpStream, original: SocketAddr, mark: Option<u32>, l: &Listener) {
    let connect = tokio::time::timeout(
        crate::config::defaults::connect_timeout().get(),
        sockopt::connect(original, mark),
    );
    let upstream = match connect.await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            tracing::debug!(%original, error = %e, "passthrough connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%original, "passthrough connect timed out");
            return;
        }
    };
    crate::tcp::splice(client, upstream, l).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DestinationTarget, WorkloadTarget};

    const BOOKS_9: &str = "spiffe://trellis.local/ns/shop/sa/books";

    fn table(egress: EgressMode) -> DestinationTable {
        let addr = |s: &str| DestinationAddress::try_from(s.to_string()).expect("address");
        DestinationTable::build(&OriginalDestination {
            targets: vec![
                DestinationTarget {
                    addresses: vec![addr("240.240.0.7"), addr("10.0.0.7:8080")],
                    listener: "books".into(),
                    workload: None,
                },
                DestinationTarget {
                    addresses: vec![addr("10.0.0.7:8080"), addr("10.0.0.7")],
                    listener: "other".into(),
                    workload: None,
                },
                DestinationTarget {
                    addresses: vec![addr("10.0.0.9:8080"), addr("10.0.0.7:9090")],
                    listener: String::new(),
                    workload: Some(WorkloadTarget {
                        address: "10.0.0.9:7143".parse().expect("addr"),
                        identity: BOOKS_9.into(),
                    }),
                },
            ],
            egress,
        })
    }

    #[test]
    fn destinations_are_decided_by_the_table() {
        let local: SocketAddr = "127.0.0.1:7140".parse().expect("addr");
        let listener = |name: &str| Decision::Listener(name.into());
        let workload = || {
            Decision::Workload(Arc::new(WorkloadSidecar {
                address: "10.0.0.9:7143".parse().expect("addr"),
                identity: BOOKS_9.parse().expect("identity"),
            }))
        };
        #[rustfmt::skip]
        let cases: &[(EgressMode, &str, Decision)] = &[
            (EgressMode::AllowAny, "240.240.0.7:80", listener("books")),
            (EgressMode::AllowAny, "240.240.0.7:9999", listener("books")),
            // The first target keeps a shared address; IP:PORT wins over IP.
            (EgressMode::AllowAny, "10.0.0.7:8080", listener("books")),
            (EgressMode::AllowAny, "10.0.0.7:22", listener("other")),
            // A workload's application goes to that workload's sidecar, even where a
            // Service's IP target would also take it.
            (EgressMode::AllowAny, "10.0.0.9:8080", workload()),
            (EgressMode::AllowAny, "10.0.0.7:9090", workload()),
            (EgressMode::AllowAny, "10.0.0.9:8081", Decision::Passthrough("10.0.0.9:8081".parse().expect("addr"))),
            (EgressMode::AllowAny, "192.0.2.1:443", Decision::Passthrough("192.0.2.1:443".parse().expect("addr"))),
            (EgressMode::RegistryOnly, "192.0.2.1:443", Decision::Refuse("registry_only")),
            (EgressMode::RegistryOnly, "240.240.0.7:80", listener("books")),
            // The listener itself, directly or through a loopback alias: never proxied.
            (EgressMode::AllowAny, "127.0.0.1:7140", Decision::Refuse("loop")),
            (EgressMode::AllowAny, "127.0.0.2:7140", Decision::Refuse("loop")),
        ];
        for (egress, original, want) in cases {
            let original: SocketAddr = original.parse().expect("addr");
            assert_eq!(&table(*egress).decide(original, local), want, "{original}");
        }
    }
}
