//! Virtual IPs: one stable IPv4 address per Service, which the mesh DNS answers for the
//! Service's names and the sidecars' original-destination routing recognises.
//!
//! An address is chosen by hashing `namespace/name` into [`VIP_RANGE`] and probing the
//! following addresses on a collision, then recorded in the store under two keys:
//!
//! - `/vips/by-address/<ip>` → `<namespace>/<name>`: the claim, written only if absent,
//!   so two control planes on one store can never give one address to two Services;
//! - `/vips/by-service/<namespace>/<name>` → `<ip>`: the lookup.
//!
//! Once recorded an address never moves, across control-plane restarts and across the
//! order in which Services appear. Records outlive their Service, so a Service deleted
//! and declared again gets its old address back; the range holds 65 534 addresses.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::compile::names::fnv1a;
use crate::compile::ServiceKey;
use crate::store::{Expect, Store, StoreError};

/// The block virtual IPs come from: `240.240.0.0/16`, reserved address space no real
/// host uses, so a VIP never shadows a reachable address.
pub const VIP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

const BY_SERVICE: &str = "/vips/by-service/";
const BY_ADDRESS: &str = "/vips/by-address/";

/// Every Service's recorded virtual IP.
pub type VipTable = HashMap<ServiceKey, Ipv4Addr>;

/// Why an address could not be given.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no free virtual IP left in {}/{} for {service}", VIP_RANGE.0, VIP_RANGE.1)]
    Exhausted { service: String },
}

/// The recorded addresses, and the store revision they were read at.
pub async fn read(store: &dyn Store) -> Result<(VipTable, u64), StoreError> {
    let (entries, revision) = store.list(BY_SERVICE).await?;
    let table = entries
        .iter()
        .filter_map(|e| {
            let (namespace, name) = e.key.strip_prefix(BY_SERVICE)?.split_once('/')?;
            let ip = std::str::from_utf8(&e.value).ok()?.parse().ok()?;
            Some((ServiceKey::new(namespace, name), ip))
        })
        .collect();
    Ok((table, revision))
}

/// Gives every Service of `services` without one an address, records it, and adds it
/// to `table`. Returns the store revision of the last write, if any was made.
pub async fn assign<'a>(
    store: &dyn Store,
    table: &mut VipTable,
    services: impl Iterator<Item = &'a ServiceKey>,
) -> Result<Option<u64>, VipError> {
    let mut last = None;
    let mut missing: Vec<&ServiceKey> = services.filter(|s| !table.contains_key(s)).collect();
    // In a fixed order, so control planes racing over the same Services probe alike.
    missing.sort();
    for service in missing {
        let (ip, revision) = claim(store, service).await?;
        table.insert(service.clone(), ip);
        last = Some(revision.max(last.unwrap_or(0)));
    }
    Ok(last)
}

/// Claims the first free address of the Service's probe sequence and records it.
async fn claim(store: &dyn Store, service: &ServiceKey) -> Result<(Ipv4Addr, u64), VipError> {
    let owner = owner(service);
    for ip in probe(service) {
        let claim_key = format!("{BY_ADDRESS}{ip}");
        let taken = match store
            .put(&claim_key, owner.clone().into_bytes(), Expect::Absent)
            .await
        {
            Ok(_) => false,
            Err(StoreError::Conflict { .. }) => {
                // Ours already when an earlier attempt claimed it and stopped before
                // recording the lookup.
                let current = store.get(&claim_key).await?;
                current.is_none_or(|c| c.value != owner.as_bytes())
            }
            Err(e) => return Err(e.into()),
        };
        if taken {
            continue;
        }
        let key = format!("{BY_SERVICE}{}/{}", service.namespace, service.name);
        let revision = store
            .put(&key, ip.to_string().into_bytes(), Expect::Any)
            .await?;
        tracing::info!(service = %owner, %ip, "virtual IP assigned");
        return Ok((ip, revision));
    }
    Err(VipError::Exhausted { service: owner })
}

fn owner(service: &ServiceKey) -> String {
    format!("{}/{}", service.namespace, service.name)
}

/// The addresses a Service tries, in order: from its hash onwards through the range,
/// wrapping, without the network and broadcast addresses.
fn probe(service: &ServiceKey) -> impl Iterator<Item = Ipv4Addr> {
    let (base, len) = VIP_RANGE;
    let size = 1u32 << (32 - len);
    let usable = size - 2;
    let start = (fnv1a(owner(service).as_bytes()) % u64::from(usable)) as u32;
    let base = u32::from(base);
    (0..usable).map(move |i| Ipv4Addr::from(base + 1 + (start + i) % usable))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    #[test]
    fn probing_stays_in_the_range_and_starts_from_the_hash() {
        let first: Vec<Ipv4Addr> = probe(&key("books")).take(3).collect();
        assert_eq!(first, probe(&key("books")).take(3).collect::<Vec<_>>());
        for ip in probe(&key("books")).take(70_000) {
            let o = ip.octets();
            assert_eq!((o[0], o[1]), (240, 240), "{ip}");
            assert_ne!(ip, Ipv4Addr::new(240, 240, 0, 0));
            assert_ne!(ip, Ipv4Addr::new(240, 240, 255, 255));
        }
        assert_eq!(probe(&key("books")).count(), 65_534);
    }

    #[tokio::test]
    async fn addresses_are_recorded_and_survive_a_new_reader() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let services = [key("books"), key("web"), ServiceKey::new("shop", "books")];
        let mut table = VipTable::new();
        let written = assign(store.as_ref(), &mut table, services.iter())
            .await
            .expect("assign");
        assert!(written.is_some());
        assert_eq!(table.len(), 3);
        let mut distinct: Vec<Ipv4Addr> = table.values().copied().collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{table:?}");

        // A restarted control plane reads the same addresses and writes nothing.
        let (mut again, _) = read(store.as_ref()).await.expect("read");
        assert_eq!(again, table);
        let written = assign(store.as_ref(), &mut again, services.iter())
            .await
            .expect("assign");
        assert_eq!(written, None);
    }

    #[tokio::test]
    async fn a_taken_address_is_skipped_and_a_half_finished_claim_is_reused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut sequence = probe(&key("books"));
        let (first, second) = (
            sequence.next().expect("an address"),
            sequence.next().expect("an address"),
        );
        // Another Service holds books' first choice.
        store
            .put(
                &format!("{BY_ADDRESS}{first}"),
                b"default/other".to_vec(),
                Expect::Absent,
            )
            .await
            .expect("put");
        let mut table = VipTable::new();
        assign(store.as_ref(), &mut table, [key("books")].iter())
            .await
            .expect("assign");
        assert_eq!(table[&key("books")], second);

        // A claim recorded without its lookup (a crash in between) is picked up again.
        let ratings_first = probe(&key("ratings")).next().expect("an address");
        store
            .put(
                &format!("{BY_ADDRESS}{ratings_first}"),
                b"default/ratings".to_vec(),
                Expect::Any,
            )
            .await
            .expect("put");
        let mut table = VipTable::new();
        assign(store.as_ref(), &mut table, [key("ratings")].iter())
            .await
            .expect("assign");
        assert_eq!(table[&key("ratings")], ratings_first);
    }
}
