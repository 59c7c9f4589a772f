//! Reading certificates: PEM in and out, the facts operators and metrics want
//! ([`CertInfo`]), and the SPIFFE ID a certificate names.
//!
//! Parsing here is for reporting and for checks on input this process produced or
//! was configured with. Deciding whether a peer's certificate is trusted is left to
//! rustls-webpki in [`crate::verify`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::error::{PeerIdentityError, PemError};
use crate::spiffe::SpiffeId;

/// What a certificate says about itself, for status pages and expiry metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name in RFC 4514 form (empty for workload leaves).
    pub subject: String,
    /// Issuer distinguished name in RFC 4514 form.
    pub issuer: String,
    /// Serial number, lowercase hexadecimal without separators.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// SHA-256 of the DER encoding, lowercase hexadecimal without separators.
    pub fingerprint: String,
    /// Whether basic constraints mark it as a CA.
    pub is_ca: bool,
    /// The SPIFFE ID of its single URI SAN, if it has exactly one valid one.
    pub spiffe_id: Option<SpiffeId>,
}

// === impl CertInfo ===

impl CertInfo {
    /// Reads the facts of one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PemError> {
        let cert = parse(der, 0)?;
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: format!("{:x}", cert.serial),
            not_before: to_system_time(cert.validity().not_before),
            not_after: to_system_time(cert.validity().not_after),
            fingerprint: fingerprint(der),
            is_ca: cert.is_ca(),
            spiffe_id: spiffe_id(&cert).ok(),
        })
    }

    /// Seconds from `now` until the end of validity; negative once expired. This is
    /// the value for a "seconds until expiry" gauge.
    pub fn seconds_until_expiry(&self, now: SystemTime) -> f64 {
        match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }
}

/// Parses one DER certificate, naming its position in the input on failure.
pub(crate) fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, PemError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PemError::BadCertificate {
            index,
            reason: "trailing data after the certificate".to_owned(),
        }),
        Err(e) => Err(PemError::BadCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

/// Reads every `CERTIFICATE` block of a PEM text, in order, and checks that each
/// parses. Other blocks (keys, comments) are skipped.
pub(crate) fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    for (index, der) in certs.iter().enumerate() {
        parse(der, index)?;
    }
    Ok(certs)
}

/// Encodes DER as one PEM block with 64-column lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    let _ = writeln!(out, "-----BEGIN {label}-----");
    // Base64 output is ASCII, so splitting on byte positions is safe.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// Encodes a certificate chain as consecutive PEM blocks.
pub(crate) fn certs_to_pem<'a, 'b: 'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'b>>,
) -> String {
    certs
        .into_iter()
        .map(|der| pem_encode("CERTIFICATE", der))
        .collect()
}

/// The SPIFFE ID of a certificate: its only URI SAN, which must be a valid ID.
pub(crate) fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, PeerIdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PeerIdentityError::BadCertificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PeerIdentityError::Missing),
        [uri] => uri.parse().map_err(|source| PeerIdentityError::Invalid {
            uri: (*uri).to_owned(),
            source,
        }),
        several => Err(PeerIdentityError::Several(several.len())),
    }
}

/// The SPIFFE ID of a DER certificate.
pub(crate) fn spiffe_id_of_der(der: &[u8]) -> Result<SpiffeId, PeerIdentityError> {
    let cert = parse(der, 0).map_err(|e| PeerIdentityError::BadCertificate(e.to_string()))?;
    spiffe_id(&cert)
}

/// Lowercase hex SHA-256 of `der`.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

pub(crate) use crate::hex::encode as hex;

pub(crate) fn to_system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der = (0u8..=200).collect::<Vec<u8>>();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .expect("one block")
            .expect("decodes");
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn certs_from_pem_refuses_garbage() {
        assert_eq!(certs_from_pem(""), Err(PemError::NoCertificate));
        assert_eq!(
            certs_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(PemError::NoCertificate)
        );
        let not_x509 = pem_encode("CERTIFICATE", b"not a certificate");
        assert!(matches!(
            certs_from_pem(&not_x509),
            Err(PemError::BadCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn hex_and_time() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        let t = ASN1Time::from_timestamp(1_000).expect("valid time");
        assert_eq!(to_system_time(t), UNIX_EPOCH + Duration::from_secs(1_000));
        let t = ASN1Time::from_timestamp(-5).expect("valid time");
        assert_eq!(to_system_time(t), UNIX_EPOCH - Duration::from_secs(5));
    }
}
