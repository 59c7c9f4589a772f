//! FaultInjection resources into the proxy's `Fault` of each route they target. A
//! fault reaches only the proxies of its sources: a caller's identity and namespace are
//! known when its configuration is compiled, so the proxy never has to judge them.

use std::collections::HashMap;

use trellis_api::fault::{FaultInjectionSpec, FaultSources};
use trellis_api::proto::v1::{Fault, FaultAbort, FaultDelay};
use trellis_api::{ObjectRef, Resource};

use super::index::millis;
use super::names::Created;
use super::routes::value_match;

/// A compiled fault and the callers it is for.
#[derive(Debug, Clone)]
pub(super) struct ScopedFault {
    pub fault: Fault,
    /// `None`: every caller.
    sources: Option<FaultSources>,
}

impl ScopedFault {
    /// Whether the fault applies to some callers only.
    pub fn is_scoped(&self) -> bool {
        self.sources.is_some()
    }

    /// Whether the fault applies to calls from the workload with this SPIFFE ID in
    /// this namespace.
    pub fn applies_to(&self, identity: &str, namespace: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|s| s.includes(identity, namespace))
    }
}

/// The fault of each targeted route. When several target one route, the oldest (then
/// first by name) applies, as with conflicting policies.
pub(super) fn by_route(
    faults: &[(&Resource, &FaultInjectionSpec)],
) -> HashMap<ObjectRef, ScopedFault> {
    let mut sorted: Vec<_> = faults.to_vec();
    sorted.sort_by_key(|(r, _)| {
        (
            Created::parse(r.metadata.creation_timestamp.as_deref()),
            r.metadata.namespace.clone(),
            r.metadata.name.clone(),
        )
    });
    let mut out = HashMap::new();
    for (r, spec) in sorted {
        let Some(target) = spec.target(&r.metadata.namespace) else {
            continue;
        };
        out.entry(target).or_insert_with(|| compile(r, spec));
    }
    out
}

fn compile(r: &Resource, spec: &FaultInjectionSpec) -> ScopedFault {
    let matches = spec.matches.clone().unwrap_or_default();
    let fault = Fault {
        name: format!("{}/{}", r.metadata.namespace, r.metadata.name),
        headers: matches
            .headers
            .iter()
            .map(|h| value_match(&h.name.to_ascii_lowercase(), h.type_, &h.value))
            .collect(),
        delay: spec.delay.as_ref().map(|d| FaultDelay {
            fixed_ms: millis(d.fixed),
            percent: d.percent,
        }),
        abort: spec.abort.as_ref().map(|a| FaultAbort {
            http_status: a.http_status.map_or(0, u32::from),
            grpc_status: a.grpc_status.unwrap_or(0),
            percent: a.percent,
        }),
    };
    ScopedFault {
        fault,
        sources: matches.from,
    }
}
