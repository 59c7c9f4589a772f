//! The `trellis_tls_*` metrics: handshakes by direction and outcome, plaintext
//! connections on mTLS listeners, and when the proxy's certificates expire.
//!
//! Every label takes values from a closed set or from the configuration (listener
//! names), except the certificate fingerprints, of which there is one per trust anchor
//! plus the current leaf; expiry gauges are computed from the certificate store at each
//! scrape, so replaced certificates leave no series behind.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use trellis_identity::CertStore;

use super::HandshakeReason;

/// Which side of the connection this proxy was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A listener terminated the handshake.
    Inbound,
    /// The proxy connected to an endpoint.
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Labels of `trellis_tls_handshakes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
    /// Empty for `ok`; one of [`HandshakeReason`] for `error`.
    pub reason: &'static str,
}

/// Labels of `trellis_tls_plaintext_connections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PlaintextLabels {
    pub listener: Arc<str>,
    /// `accepted` (permissive) or `refused` (strict).
    pub action: &'static str,
}

/// The TLS metrics; clones share the same series.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub plaintext: Family<PlaintextLabels, Counter>,
    expiry: Arc<CertificateExpiry>,
}

// === impl TlsMetrics ===

impl TlsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let handshakes = Family::default();
        registry.register(
            "trellis_tls_handshakes",
            "mTLS handshakes, by direction, result and the reason of failures",
            handshakes.clone(),
        );
        let plaintext = Family::default();
        registry.register(
            "trellis_tls_plaintext_connections",
            "Plaintext connections to listeners with mTLS, accepted (permissive) or refused (strict)",
            plaintext.clone(),
        );
        let expiry = Arc::new(CertificateExpiry::default());
        registry.register_collector(Box::new(expiry.clone()));
        Self {
            handshakes,
            plaintext,
            expiry,
        }
    }

    /// Counts one handshake.
    pub fn handshake(&self, direction: Direction, outcome: Result<(), HandshakeReason>) {
        let labels = HandshakeLabels {
            direction: direction.as_str(),
            result: if outcome.is_ok() { "ok" } else { "error" },
            reason: outcome.err().map_or("", HandshakeReason::as_str),
        };
        self.handshakes.get_or_create(&labels).inc();
    }

    /// Counts one plaintext connection to an mTLS listener.
    pub fn plaintext(&self, listener: &Arc<str>, refused: bool) {
        let labels = PlaintextLabels {
            listener: listener.clone(),
            action: if refused { "refused" } else { "accepted" },
        };
        self.plaintext.get_or_create(&labels).inc();
    }

    /// Reports the expiry of `store`'s certificates from now on.
    pub fn watch_certificates(&self, store: Arc<CertStore>) {
        self.expiry.store.store(Some(store));
    }
}

/// `trellis_tls_certificate_expiry_timestamp_seconds`, read from the store at scrape
/// time.
#[derive(Default)]
struct CertificateExpiry {
    store: ArcSwapOption<CertStore>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExpiryLabels {
    /// `leaf` (the proxy's own certificate) or `trust_anchor`.
    kind: &'static str,
    /// SHA-256 of the certificate, lowercase hex.
    fingerprint: String,
}

impl fmt::Debug for CertificateExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateExpiry").finish_non_exhaustive()
    }
}

impl Collector for CertificateExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let Some(store) = self.store.load_full() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "trellis_tls_certificate_expiry_timestamp_seconds",
            "End of validity of the proxy's certificate and of each trust anchor, as a Unix timestamp",
            None,
            MetricType::Gauge,
        )?;
        let leaf = store.credentials();
        let rows = std::iter::once(("leaf", leaf.leaf().clone())).chain(
            store
                .trust_anchors()
                .into_iter()
                .map(|a| ("trust_anchor", a)),
        );
        for (kind, cert) in rows {
            let labels = ExpiryLabels {
                kind,
                fingerprint: cert.fingerprint,
            };
            ConstGauge::new(unix_seconds(cert.not_after)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
