//! The mesh's names: which query names are Services, and what answers them.
//!
//! A Service `books` in namespace `shop` with virtual IP `240.240.3.9` is
//! `books.shop.svc.trellis.local`, `books.shop`, and, for a sidecar in `shop`, `books`.
//! A resolver that walks the search list `shop.svc.trellis.local svc.trellis.local
//! trellis.local` (what transparent mode writes into the pod's `resolv.conf`) tries
//! these suffixed forms first; everything under `trellis.local` that is not a Service
//! is NXDOMAIN, so such walks end quickly. Other names belong to the host's resolver,
//! except the exact hosts of ExternalServices: those answer their virtual IP, so a call
//! to one reaches the sidecar, which knows it as a declared destination. A Service's
//! name wins over an external host spelt the same.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::config::{ExternalHost, MeshService};

/// The mesh's own DNS zone.
pub const MESH_DOMAIN: &str = "trellis.local";

/// What a query name is, as far as the mesh goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A Service or an external host: its virtual IP.
    Service(Ipv4Addr),
    /// A name in the mesh's zone that is no Service.
    NoSuchName,
    /// Not the mesh's: ask the upstream resolver.
    Elsewhere,
}

/// Services by namespace and name, external hosts by name.
#[derive(Debug, Default)]
pub struct ServiceNames {
    by_name: HashMap<(String, String), Ipv4Addr>,
    external: HashMap<String, Ipv4Addr>,
}

impl ServiceNames {
    pub fn new(services: &[MeshService], external: &[ExternalHost]) -> Self {
        let external = external
            .iter()
            .map(|h| (h.host.to_ascii_lowercase(), h.virtual_ip))
            .collect();
        let by_name = services
            .iter()
            .map(|s| {
                let key = (
                    s.namespace.to_ascii_lowercase(),
                    s.name.to_ascii_lowercase(),
                );
                (key, s.virtual_ip)
            })
            .collect();
        Self { by_name, external }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.by_name
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// What `qname` (with or without the final dot, any case) means to a sidecar in
    /// `namespace`.
    pub fn lookup(&self, qname: &str, namespace: &str) -> Lookup {
        let qname = qname.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = qname.split('.').collect();
        let in_zone = qname == MESH_DOMAIN || qname.ends_with(&format!(".{MESH_DOMAIN}"));
        if in_zone {
            // `<service>.<namespace>.svc.trellis.local`, nothing else.
            let service = match labels.as_slice() {
                [name, ns, "svc", _, _] => self.get(ns, name),
                _ => None,
            };
            return service.map_or(Lookup::NoSuchName, Lookup::Service);
        }
        let service = match labels.as_slice() {
            [name] => self.get(namespace, name),
            [name, ns] => self.get(ns, name),
            _ => None,
        };
        service
            .or_else(|| self.external.get(&qname).copied())
            .map_or(Lookup::Elsewhere, Lookup::Service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_as_a_resolver_with_the_mesh_search_list_expects() {
        let service = |namespace: &str, name: &str, ip: [u8; 4]| MeshService {
            name: name.into(),
            namespace: namespace.into(),
            virtual_ip: ip.into(),
        };
        let external = |host: &str, ip: [u8; 4]| ExternalHost {
            host: host.into(),
            virtual_ip: ip.into(),
        };
        let names = ServiceNames::new(
            &[
                service("shop", "books", [240, 240, 0, 1]),
                service("default", "ratings", [240, 240, 0, 2]),
            ],
            &[
                external("api.payments.example", [240, 240, 0, 3]),
                external("books.shop", [240, 240, 0, 4]),
            ],
        );
        let books = Lookup::Service([240, 240, 0, 1].into());
        let ratings = Lookup::Service([240, 240, 0, 2].into());
        #[rustfmt::skip]
        let cases: &[(&str, Lookup)] = &[
            ("books", books),
            ("BOOKS.", books),
            ("books.shop", books),
            ("books.shop.svc.trellis.local", books),
            ("books.shop.svc.trellis.local.", books),
            // Another namespace's Service needs its namespace.
            ("ratings", Lookup::Elsewhere),
            ("ratings.default", ratings),
            ("ratings.default.svc.trellis.local", ratings),
            // The search list's tries for `books.shop` before the hit.
            ("books.shop.shop.svc.trellis.local", Lookup::NoSuchName),
            ("books.svc.trellis.local", Lookup::NoSuchName),
            ("books.shop.trellis.local", Lookup::NoSuchName),
            ("nothing.shop.svc.trellis.local", Lookup::NoSuchName),
            ("trellis.local", Lookup::NoSuchName),
            ("example.com", Lookup::Elsewhere),
            ("nothing", Lookup::Elsewhere),
            ("books.shop.example.com", Lookup::Elsewhere),
            // External hosts, exactly; a Service spelt the same wins.
            ("api.payments.example", Lookup::Service([240, 240, 0, 3].into())),
            ("API.Payments.Example.", Lookup::Service([240, 240, 0, 3].into())),
            ("eu.payments.example", Lookup::Elsewhere),
            ("api.payments.example.shop.svc.trellis.local", Lookup::NoSuchName),
        ];
        for (qname, want) in cases {
            assert_eq!(names.lookup(qname, "shop"), *want, "{qname}");
        }
    }
}
