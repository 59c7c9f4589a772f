//! RateLimitPolicy resources into the `RateLimit`s of the inbound listener of every
//! workload of the Service they target: each replica's sidecar enforces the limits on
//! arrival. A `local` limit is per replica; a `global` one is the Service's, and each
//! replica gets a share of it in proportion to its weight among the Service's ready
//! replicas, so the shares add up to the limit. Every change to the workloads
//! recompiles every proxy, so shares follow replicas as they come and go.

use std::collections::HashMap;

use trellis_api::proto::v1::{Endpoint, RateLimit, RateLimitKey};
use trellis_api::resilience::{RateLimitPolicySpec, TokenBucket};
use trellis_api::{Kind, Resource};

use super::ServiceKey;

/// One limit of a policy, as its Service's replicas share it.
#[derive(Debug, Clone)]
pub(super) struct ServiceLimit {
    limit: RateLimit,
    /// For the whole Service, split among its replicas.
    global: bool,
}

/// The limits of each targeted Service, every policy's in order of namespace and name,
/// each policy's local limits before its global ones.
pub(super) fn by_service(
    policies: &[(&Resource, &RateLimitPolicySpec)],
) -> HashMap<ServiceKey, Vec<ServiceLimit>> {
    let mut sorted: Vec<_> = policies.to_vec();
    sorted.sort_by_key(|(r, _)| (r.metadata.namespace.clone(), r.metadata.name.clone()));
    let mut out: HashMap<ServiceKey, Vec<ServiceLimit>> = HashMap::new();
    for (r, spec) in sorted {
        if Kind::from_name(&spec.target_ref.kind) != Some(Kind::Service) {
            continue;
        }
        let key = ServiceKey::new(&r.metadata.namespace, &spec.target_ref.name);
        let name = format!("{}/{}", r.metadata.namespace, r.metadata.name);
        let limit = |l: &TokenBucket, global: bool| ServiceLimit {
            limit: RateLimit {
                name: name.clone(),
                requests_per_second: l.requests_per_second,
                burst: l.burst.unwrap_or(l.requests_per_second),
                key: RateLimitKey::from(l.per) as i32,
                ..RateLimit::default()
            },
            global,
        };
        let limits = out.entry(key).or_default();
        limits.extend(spec.local.iter().map(|l| limit(l, false)));
        limits.extend(spec.global.iter().map(|l| limit(l, true)));
    }
    out
}

/// The limits the replica at `me` (its `address:inboundPort`) enforces, given the
/// Service's ready `replicas`: global limits carry its share, its weight out of the
/// sum of the replicas' weights. A replica that is not among the ready ones (callers
/// do not send to it, but one with an old configuration still may) is counted as one
/// more replica of weight 1, so it is limited too.
pub(super) fn for_replica(
    limits: &[ServiceLimit],
    replicas: &[Endpoint],
    me: &str,
) -> Vec<RateLimit> {
    let total: u32 = replicas
        .iter()
        .map(|e| e.weight)
        .fold(0, u32::saturating_add);
    let (weight, total) = match replicas.iter().find(|e| e.address == me) {
        Some(mine) => (mine.weight, total),
        None => (1, total.saturating_add(1)),
    };
    limits
        .iter()
        .map(|l| {
            let mut limit = l.limit.clone();
            if l.global {
                limit.share_weight = weight;
                // Never 0, which would mean "all of it".
                limit.share_total = total.max(1);
            }
            limit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(address: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            weight: 1,
            ..Endpoint::default()
        }
    }

    fn limits(global: bool) -> Vec<ServiceLimit> {
        vec![ServiceLimit {
            limit: RateLimit {
                name: "shop/limits".into(),
                requests_per_second: 300,
                burst: 300,
                ..RateLimit::default()
            },
            global,
        }]
    }

    #[test]
    fn a_global_limit_is_shared_by_weight_and_a_local_one_is_not() {
        let three = [
            replica("10.0.0.1:7143"),
            replica("10.0.0.2:7143"),
            replica("10.0.0.3:7143"),
        ];
        let share = |replicas: &[Endpoint], me: &str, global: bool| {
            let l = &for_replica(&limits(global), replicas, me)[0];
            (l.share_weight, l.share_total)
        };
        assert_eq!(share(&three, "10.0.0.2:7143", true), (1, 3));
        assert_eq!(
            share(&three, "10.0.0.2:7143", false),
            (0, 0),
            "local: all of it"
        );
        // A replica not ready is counted as one more.
        assert_eq!(share(&three, "10.0.0.9:7143", true), (1, 4));
        assert_eq!(share(&[], "10.0.0.9:7143", true), (1, 1));
        let mut heavy = three.clone();
        heavy[0].weight = 2;
        assert_eq!(share(&heavy, "10.0.0.1:7143", true), (2, 4));
    }
}
