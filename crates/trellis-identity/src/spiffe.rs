//! SPIFFE IDs of Trellis workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! The character rules follow the SPIFFE ID specification (trust domain: lowercase
//! letters, digits, `.`, `-`, `_`; path segments: letters, digits, `.`, `-`, `_`, not
//! `.` or `..`). Trellis adds the fixed `ns/…/sa/…` path shape that Istio also uses, so
//! an identity always maps back to one namespace and one service account.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SpiffeIdError;

/// Trust domain used when the operator configures none.
pub const DEFAULT_TRUST_DOMAIN: &str = "trellis.local";

const SCHEME: &str = "spiffe://";
const NS_SEP: &str = "/ns/";
const SA_SEP: &str = "/sa/";
/// SPIFFE limits the whole URI to 2048 bytes.
const MAX_ID_LEN: usize = 2048;
/// A trust domain is a DNS-like name; DNS names stop at 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// The identity of a workload: a trust domain, a namespace and a service account.
///
/// Parse one with [`str::parse`] or build one with [`SpiffeId::new`]; both check every
/// part, so a `SpiffeId` value is always well formed. It serializes as its URI string.
///
/// The URI is kept whole in a shared string, with the part boundaries beside it:
/// identities are cloned into every TLS config, cache key and error that names a
/// peer, and a clone is then one reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// End of the trust domain in `uri`.
    td_end: u16,
    /// End of the namespace in `uri`.
    ns_end: u16,
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Builds an identity from its parts, checking each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
        validate_segment("namespace", namespace)?;
        validate_segment("service account", service_account)?;
        Self::assemble(trust_domain, namespace, service_account)
    }

    /// Builds an identity in [`DEFAULT_TRUST_DOMAIN`].
    pub fn in_default_domain(
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::new(DEFAULT_TRUST_DOMAIN, namespace, service_account)
    }

    /// The trust domain, e.g. `trellis.local`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..usize::from(self.td_end)]
    }

    /// The namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.uri[usize::from(self.td_end) + NS_SEP.len()..usize::from(self.ns_end)]
    }

    /// The service account the workload runs as.
    pub fn service_account(&self) -> &str {
        &self.uri[usize::from(self.ns_end) + SA_SEP.len()..]
    }

    /// The URI form, as carried in a certificate's URI SAN.
    pub fn as_uri(&self) -> &str {
        &self.uri
    }

    /// The URI form as an owned string.
    pub fn to_uri(&self) -> String {
        self.uri.to_string()
    }

    /// Joins parts already checked.
    fn assemble(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let uri = format!("{SCHEME}{trust_domain}{NS_SEP}{namespace}{SA_SEP}{service_account}");
        if uri.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: uri.len() });
        }
        let td_end = SCHEME.len() + trust_domain.len();
        let ns_end = td_end + NS_SEP.len() + namespace.len();
        // Both are below MAX_ID_LEN, which fits u16.
        let (Ok(td_end), Ok(ns_end)) = (u16::try_from(td_end), u16::try_from(ns_end)) else {
            return Err(SpiffeIdError::TooLong { len: uri.len() });
        };
        Ok(Self {
            uri: uri.into(),
            td_end,
            ns_end,
        })
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&&*self.uri).finish()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: value.len() });
        }
        let Some(rest) = value.strip_prefix(SCHEME) else {
            return Err(SpiffeIdError::BadScheme {
                value: value.to_owned(),
            });
        };
        // Everything up to the first '/' is the trust domain; a port, user info,
        // query or fragment would show up there or in the path as a character
        // outside the allowed sets, and is refused by the checks below.
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain {
                value: value.to_owned(),
            });
        }
        validate_trust_domain(trust_domain)?;

        let wrong_shape = || SpiffeIdError::WrongShape {
            value: value.to_owned(),
        };
        let mut parts = path.split('/');
        // `path` starts with '/', so the first piece is always empty.
        if parts.next() != Some("") {
            return Err(wrong_shape());
        }
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(wrong_shape());
        };
        validate_segment("namespace", namespace)?;
        validate_segment("service account", service_account)?;
        Self::assemble(trust_domain, namespace, service_account)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a trust domain name on its own (the part after `spiffe://`).
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    let valid = !trust_domain.is_empty()
        && trust_domain.len() <= MAX_TRUST_DOMAIN_LEN
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
        })
    }
}

fn validate_segment(segment: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    if value.is_empty() {
        return Err(SpiffeIdError::EmptySegment { segment });
    }
    let valid = value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::InvalidSegment {
            segment,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let id: SpiffeId = "spiffe://trellis.local/ns/shop/sa/cart"
            .parse()
            .expect("valid id");
        assert_eq!(id.trust_domain(), "trellis.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://trellis.local/ns/shop/sa/cart");
        assert_eq!(id.as_uri(), "spiffe://trellis.local/ns/shop/sa/cart");
        assert_eq!(
            format!("{id:?}"),
            "SpiffeId(\"spiffe://trellis.local/ns/shop/sa/cart\")"
        );
        assert_eq!(
            SpiffeId::in_default_domain("shop", "cart").expect("valid parts"),
            id
        );
    }

    #[test]
    fn accepts_spec_characters() {
        for ok in [
            "spiffe://example.org/ns/a/sa/b",
            "spiffe://td_1-x.y/ns/Shop.v2/sa/cart_svc-1",
            "spiffe://a/ns/0/sa/Z",
        ] {
            let id: SpiffeId = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(id.to_string(), ok);
            let rebuilt = SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account())
                .expect("same parts");
            assert_eq!(rebuilt, id);
        }
    }

    #[test]
    fn refuses_bad_ids_with_the_right_error() {
        type Check = fn(&SpiffeIdError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("http://trellis.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::BadScheme { .. })
            }),
            ("SPIFFE://trellis.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::BadScheme { .. })
            }),
            ("trellis.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::BadScheme { .. })
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::EmptyTrustDomain { .. })
            }),
            ("spiffe://Trellis.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::InvalidTrustDomain { .. })
            }),
            ("spiffe://trellis.local:8443/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::InvalidTrustDomain { .. })
            }),
            ("spiffe://user@trellis.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::InvalidTrustDomain { .. })
            }),
            ("spiffe://trellis.local", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/ns/a", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/ns/a/sa/b/", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/ns/a/sa/b/c", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/namespace/a/sa/b", |e| {
                matches!(e, SpiffeIdError::WrongShape { .. })
            }),
            ("spiffe://trellis.local/ns//sa/b", |e| {
                matches!(
                    e,
                    SpiffeIdError::EmptySegment {
                        segment: "namespace"
                    }
                )
            }),
            ("spiffe://trellis.local/ns/a/sa/", |e| {
                matches!(
                    e,
                    SpiffeIdError::EmptySegment {
                        segment: "service account"
                    }
                )
            }),
            ("spiffe://trellis.local/ns/../sa/b", |e| {
                matches!(
                    e,
                    SpiffeIdError::InvalidSegment {
                        segment: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://trellis.local/ns/a/sa/b?x=1", |e| {
                matches!(
                    e,
                    SpiffeIdError::InvalidSegment {
                        segment: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://trellis.local/ns/a b/sa/c", |e| {
                matches!(e, SpiffeIdError::InvalidSegment { .. })
            }),
            ("spiffe://trellis.local/ns/a/sa/b#frag", |e| {
                matches!(e, SpiffeIdError::InvalidSegment { .. })
            }),
            ("spiffe://trellis.local/ns/caf%C3%A9/sa/b", |e| {
                matches!(e, SpiffeIdError::InvalidSegment { .. })
            }),
        ];
        for (input, check) in cases {
            let Err(err) = input.parse::<SpiffeId>() else {
                panic!("{input} should be refused");
            };
            assert!(check(&err), "{input}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
        let long = format!("spiffe://trellis.local/ns/a/sa/{}", "b".repeat(2048));
        assert!(matches!(
            long.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong { .. })
        ));
    }

    #[test]
    fn new_checks_parts() {
        assert!(SpiffeId::new("trellis.local", "a", "b").is_ok());
        assert!(matches!(
            SpiffeId::new("", "a", "b"),
            Err(SpiffeIdError::InvalidTrustDomain { .. })
        ));
        assert!(matches!(
            SpiffeId::new("trellis.local", "a/b", "c"),
            Err(SpiffeIdError::InvalidSegment { .. })
        ));
        assert!(matches!(
            SpiffeId::new("trellis.local", "a", ""),
            Err(SpiffeIdError::EmptySegment { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_value_and_the_rule() {
        let err = "spiffe://trellis.local/ns/a!/sa/b"
            .parse::<SpiffeId>()
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("namespace"), "{msg}");
        assert!(msg.contains("\"a!\""), "{msg}");
        assert!(msg.contains("letters, digits"), "{msg}");
    }

    #[test]
    fn serde_is_the_uri_string() {
        let id = SpiffeId::in_default_domain("shop", "cart").expect("valid parts");
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, "\"spiffe://trellis.local/ns/shop/sa/cart\"");
        let back: SpiffeId = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, id);
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://trellis.local/ns/shop\"")
            .expect_err("wrong shape");
        assert!(err.to_string().contains("does not have the shape"), "{err}");
    }
}
