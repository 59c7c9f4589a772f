//! RateLimitPolicy resources into the `RateLimit`s of the inbound listener of every
//! workload of the Service they target: each replica's sidecar enforces the limits on
//! arrival, so a limit is per replica.

use std::collections::HashMap;

use trellis_api::proto::v1::{RateLimit, RateLimitKey};
use trellis_api::resilience::RateLimitPolicySpec;
use trellis_api::{Kind, Resource};

use super::ServiceKey;

/// The limits of each targeted Service, every policy's in order of namespace and name.
pub(super) fn by_service(
    policies: &[(&Resource, &RateLimitPolicySpec)],
) -> HashMap<ServiceKey, Vec<RateLimit>> {
    let mut sorted: Vec<_> = policies.to_vec();
    sorted.sort_by_key(|(r, _)| (r.metadata.namespace.clone(), r.metadata.name.clone()));
    let mut out: HashMap<ServiceKey, Vec<RateLimit>> = HashMap::new();
    for (r, spec) in sorted {
        if Kind::from_name(&spec.target_ref.kind) != Some(Kind::Service) {
            continue;
        }
        let key = ServiceKey::new(&r.metadata.namespace, &spec.target_ref.name);
        let name = format!("{}/{}", r.metadata.namespace, r.metadata.name);
        out.entry(key)
            .or_default()
            .extend(spec.local.iter().map(|l| RateLimit {
                name: name.clone(),
                requests_per_second: l.requests_per_second,
                burst: l.burst.unwrap_or(l.requests_per_second),
                key: RateLimitKey::from(l.per) as i32,
            }));
    }
    out
}
