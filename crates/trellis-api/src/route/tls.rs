//! `TLSRoute` (Gateway API, published upstream as `v1alpha2`): send a Service's TLS
//! connections to weighted backends by the server name (SNI) their clients ask for,
//! without terminating the clients' TLS.

use serde::{Deserialize, Serialize};

use super::tcp::{check_rules, TCPRouteRule};
use super::{check_parents, ParentReference};
use crate::error::Checked;
use crate::ObjectRef;

/// Routing for TLS connections to the Services in `parentRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TLSRouteSpec {
    /// The Services whose connections this route handles; at least one.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Server names this route takes (`books.example`, or `*.example` for every name
    /// under it); empty: every connection no other route names. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// One to 16 rules; connections go to the first rule's backends.
    #[serde(default)]
    pub rules: Vec<TCPRouteRule>,
}

impl TLSRouteSpec {
    /// Checks what types alone cannot; paths start at `spec`.
    pub fn validate(&self) -> Checked {
        check_parents(&self.parent_refs, Some(self.hostnames.as_slice()))?;
        check_rules(&self.rules)
    }

    /// Objects this route points at: parents and backends.
    pub(crate) fn references(&self, ns: &str) -> Vec<ObjectRef> {
        super::tcp::references(&self.parent_refs, &self.rules, ns)
    }
}
