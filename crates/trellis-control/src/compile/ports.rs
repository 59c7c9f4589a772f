//! The routes of one Service port: the attached routes that serve it, in precedence
//! order, and what a request none of them matches gets.
//!
//! A parentRef with a `port` (or `sectionName`) attaches its route to that port only;
//! one without, to every port. A proxy's named upstream and its HTTP proxy reach a
//! Service on its primary (first) port; a transparent sidecar sees the port its
//! application dialled, and routes each port by its own routes (`transparent.rs`).
//!
//! After the attached routes comes a catch-all to the Service itself, unless the
//! Service says `unmatched: notFound` (as every Service read from Kubernetes does,
//! following GAMMA) and at least one route serves the port: a request they do not
//! match then gets the proxy's 404 `no route`. A TCP port takes one route, the first
//! that applies, else the catch-all; a TLS port keeps the catch-all for a server name
//! no route names.

use std::collections::BTreeMap;

use trellis_api::proto::v1::{Route, WeightedBackend};
use trellis_api::service::{AppProtocol, Unmatched};

use super::index::ServiceEntry;
use super::routes::Candidate;
use super::{backend_name, Caller, MeshIndex, ServiceKey, DEFAULT_ROUTE};

impl ServiceEntry {
    /// The declared port numbered `port`, else the primary port.
    fn port_or_primary(&self, port: Option<u16>) -> Option<&trellis_api::service::ServicePort> {
        port.and_then(|n| self.ports.iter().find(|p| p.port == n))
            .or_else(|| self.primary_port())
    }
}

impl MeshIndex {
    /// The routes for calls from `caller` to `target` on its port `port` (`None`: the
    /// primary port), and the protocol they are for; records the Services they send to
    /// in `reach`.
    pub(super) fn port_routes<'a>(
        &'a self,
        target: &ServiceKey,
        port: Option<u16>,
        caller: &Caller<'_>,
        reach: &mut BTreeMap<ServiceKey, bool>,
    ) -> (AppProtocol, Vec<Route>) {
        let namespace = caller.namespace;
        let service = self.service(target);
        let declared = service.and_then(|s| s.port_or_primary(port));
        let protocol = declared.map_or(AppProtocol::Http, |p| p.app_protocol);
        let port = declared.map(|p| p.port);
        let attached = self.tables.attached.get(target);
        let serving = |list: &'a [Candidate]| -> Vec<&'a Candidate> {
            list.iter()
                .filter(|c| c.serves(port) && c.applies_to(namespace))
                .collect()
        };
        let applicable = attached.map_or_else(Vec::new, |a| match protocol {
            AppProtocol::Http => serving(&a.http),
            // An h2c port carries gRPC as often as not: its GRPCRoutes serve it when no
            // HTTPRoute does.
            AppProtocol::Http2 => {
                let http = serving(&a.http);
                if http.is_empty() {
                    serving(&a.grpc)
                } else {
                    http
                }
            }
            AppProtocol::Grpc => serving(&a.grpc),
            AppProtocol::Tcp => serving(&a.tcp),
            AppProtocol::Tls => serving(&a.tls),
        });

        let policy_timeout = self
            .tables
            .policies
            .get(target)
            .and_then(|p| p.request_timeout_ms);
        let catch_all = Route {
            name: DEFAULT_ROUTE.to_string(),
            r#match: None,
            backends: vec![WeightedBackend {
                name: backend_name(target),
                weight: 1,
                ..Default::default()
            }],
            timeout_ms: policy_timeout.filter(|_| !protocol.is_opaque()),
            ..Default::default()
        };
        let grpc = protocol == AppProtocol::Grpc;
        let mut note = |key: &ServiceKey| {
            let h2 = reach.entry(key.clone()).or_insert(false);
            *h2 |= grpc;
        };
        note(target);

        let routes = if protocol == AppProtocol::Tcp {
            // A TCP listener has exactly one route: bytes carry nothing to match on.
            match applicable.into_iter().next() {
                Some(c) => {
                    c.backends.iter().for_each(&mut note);
                    vec![c.route.clone()]
                }
                None => vec![catch_all],
            }
        } else {
            let exhaustive = !applicable.is_empty()
                && protocol != AppProtocol::Tls
                && service.is_some_and(|s| s.unmatched == Unmatched::NotFound);
            let mut routes: Vec<Route> = applicable
                .into_iter()
                .map(|c| {
                    c.backends.iter().for_each(&mut note);
                    let mut route = c.route.clone();
                    route.fault = c
                        .fault
                        .as_ref()
                        .filter(|f| f.applies_to(&caller.identity, caller.namespace))
                        .map(|f| f.fault.clone());
                    route
                })
                .collect();
            if !exhaustive {
                routes.push(catch_all);
            }
            routes
        };
        (protocol, routes)
    }
}
