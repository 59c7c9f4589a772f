//! The mesh certificate authority: a root made on first start, or an intermediate
//! the operator hands over; it signs workload CSRs after checking they ask for the
//! identity the caller is entitled to.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::bundle::TrustBundle;
use crate::csr::{check_csr, check_server_csr};
use crate::error::{CaError, CsrError, PemError};
use crate::spiffe::{validate_trust_domain, SpiffeId};
use crate::x509::{self, CertInfo};

/// How far back a leaf's `notBefore` is set, so that a peer whose clock runs a
/// little behind the CA's still accepts it. Capped by the validity itself so very
/// short certificates (tests use seconds) are not mostly in the past.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

/// A CA certificate chain and its private key, as PEM, for persisting. `Debug` does
/// not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The CA certificate first, then each issuer above it, ending with the root.
    pub cert_chain: String,
    /// The CA private key, PKCS#8 `PRIVATE KEY`.
    pub key: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_chain", &self.cert_chain)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A workload certificate the CA just signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The identity certified.
    pub id: SpiffeId,
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The leaf followed by the intermediates up to, not including, the root: what
    /// the workload presents in a handshake.
    pub chain_pem: String,
    /// Start of validity (backdated for clock skew).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, lowercase hexadecimal.
    pub serial: String,
}

/// A TLS server's certificate the CA just signed ([`CertificateAuthority::sign_server_csr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCert {
    /// The DNS names certified.
    pub names: Vec<String>,
    /// The leaf followed by the intermediates up to, not including, the root.
    pub chain_pem: String,
    /// Start of validity (backdated for clock skew).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// A signed leaf, before it is told apart as a workload's or a server's.
struct Leaf {
    cert_pem: String,
    chain_pem: String,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

/// A certificate authority able to sign workload certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate first, then each issuer above it, ending with the root.
    chain: Vec<CertificateDer<'static>>,
    info: CertInfo,
    /// The earliest end of validity along the chain: no certificate this CA signs
    /// may outlive it, since it would stop verifying at that point anyway.
    chain_not_after: SystemTime,
    /// Known when the CA certificate carries the SPIFFE ID of its trust domain, as
    /// the roots made here do; the CA then refuses identities of other domains.
    trust_domain: Option<String>,
    bundle: TrustBundle,
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// Makes a new self-signed root for `trust_domain`, valid for `validity` from now.
    pub fn generate_root(trust_domain: &str, validity: Duration) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain)?;
        let now = SystemTime::now();
        let not_after = checked_end(now, validity).ok_or(CaError::InvalidValidity {
            seconds: validity.as_secs(),
        })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let params = ca_params(
            &format!("Trellis root CA {trust_domain}"),
            Some(trust_domain),
            BasicConstraints::Unconstrained,
            now - MAX_BACKDATE.min(validity),
            not_after,
        )?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Self::assemble(Issuer::new(params, key), vec![cert.der().clone()])
    }

    /// Loads a CA from PEM: `cert_chain_pem` holds the CA certificate first, then any
    /// intermediates, and ends with the self-signed root (an operator's intermediate
    /// with its chain to the organisation root, or a root saved by [`Self::to_pem`]);
    /// `key_pem` holds the CA's private key as PKCS#8 `PRIVATE KEY` (an OpenSSL
    /// `EC PRIVATE KEY` converts with `openssl pkcs8 -topk8 -nocrypt`).
    ///
    /// Checks that the key belongs to the first certificate, that the certificate
    /// may sign others, that each certificate is signed by the next, that the chain
    /// ends in a root, and that nothing in it has expired.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let chain = x509::certs_from_pem(cert_chain_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key {
            reason: format!("expected one PKCS#8 \"PRIVATE KEY\" PEM block ({e})"),
        })?;
        let parsed = chain
            .iter()
            .enumerate()
            .map(|(i, der)| x509::parse(der, i))
            .collect::<Result<Vec<_>, PemError>>()?;
        let Some(ca) = parsed.first() else {
            return Err(PemError::NoCertificate.into());
        };
        let subject = ca.subject().to_string();

        if rcgen::PublicKeyData::subject_public_key_info(&key) != ca.public_key().raw {
            return Err(CaError::KeyMismatch { subject });
        }
        check_can_sign(ca)?;
        for pair in parsed.windows(2) {
            let [cert, issuer] = pair else { continue };
            if cert.verify_signature(Some(issuer.public_key())).is_err() {
                return Err(CaError::ChainOrder {
                    subject: cert.subject().to_string(),
                    issuer: issuer.subject().to_string(),
                });
            }
        }
        if let Some(last) = parsed.last() {
            let self_signed =
                last.subject() == last.issuer() && last.verify_signature(None).is_ok();
            if !self_signed {
                return Err(CaError::ChainWithoutRoot {
                    subject: last.subject().to_string(),
                    issuer: last.issuer().to_string(),
                });
            }
        }
        let now = SystemTime::now();
        for cert in &parsed {
            let not_after = x509::to_system_time(cert.validity().not_after);
            if not_after <= now {
                return Err(CaError::Expired {
                    subject: cert.subject().to_string(),
                    not_after,
                });
            }
        }
        drop(parsed);

        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Self::assemble(issuer, chain)
    }

    /// The chain and key as PEM, to store and later give to [`Self::from_pem`].
    pub fn to_pem(&self) -> CaPem {
        CaPem {
            cert_chain: x509::certs_to_pem(&self.chain),
            key: self.issuer.key().serialize_pem(),
        }
    }

    /// Makes an intermediate CA under this one, valid for `validity` (cut short at
    /// this CA's own expiry). It may sign leaves only (path length 0). Its chain is
    /// the new certificate followed by this CA's chain.
    pub fn issue_intermediate(&self, validity: Duration) -> Result<Self, CaError> {
        let now = SystemTime::now();
        let not_after = checked_end(now, validity)
            .ok_or(CaError::InvalidValidity {
                seconds: validity.as_secs(),
            })?
            .min(self.chain_not_after);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let name = match &self.trust_domain {
            Some(td) => format!("Trellis intermediate CA {td}"),
            None => "Trellis intermediate CA".to_owned(),
        };
        let params = ca_params(
            &name,
            self.trust_domain.as_deref(),
            BasicConstraints::Constrained(0),
            now - MAX_BACKDATE.min(validity),
            not_after,
        )?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(cert.der().clone());
        chain.extend(self.chain.iter().cloned());
        Self::assemble(Issuer::new(params, key), chain)
    }

    /// Signs `csr_pem` for `expected`, valid from now for `validity`.
    ///
    /// Refuses a request that does not parse, whose self-signature does not verify,
    /// that names another identity than `expected` (or none, or several, or any DNS,
    /// IP or e-mail name), that asks to be a CA, or whose identity is outside this
    /// CA's trust domain. The leaf is not a CA, may only make digital signatures, is
    /// for TLS servers and clients, and names `expected` as its only SAN.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        validity: Duration,
    ) -> Result<IssuedCert, CsrError> {
        self.sign_csr_at(csr_pem, expected, SystemTime::now(), validity)
    }

    /// [`Self::sign_csr`] as if the current time were `now`: for callers that keep
    /// their own clock, and for tests that need a certificate already expired.
    pub fn sign_csr_at(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuedCert, CsrError> {
        if let Some(td) = &self.trust_domain {
            if expected.trust_domain() != td {
                return Err(CsrError::ForeignTrustDomain {
                    trust_domain: td.clone(),
                    requested: expected.clone(),
                });
            }
        }
        let public_key = check_csr(csr_pem, expected)?;
        let uri = SanType::URI(
            expected
                .to_uri()
                .try_into()
                .map_err(|e: rcgen::Error| CsrError::Signing(e.to_string()))?,
        );
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = self.sign_leaf(&public_key, vec![uri], usages, now, validity)?;
        Ok(IssuedCert {
            id: expected.clone(),
            cert_pem: leaf.cert_pem,
            chain_pem: leaf.chain_pem,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
        })
    }

    /// Signs `csr_pem` for a TLS server known by DNS names (the control plane's
    /// admission webhook, which the API server calls by its Service's name), valid
    /// from now for `validity`.
    ///
    /// Refuses a request that does not parse or verify, that names no DNS name, a
    /// name outside `allowed`, or any URI, IP or e-mail name, or that asks to be a CA.
    /// The leaf is for TLS servers only and carries no SPIFFE ID, so no proxy takes
    /// it for a workload.
    pub fn sign_server_csr(
        &self,
        csr_pem: &str,
        allowed: &[String],
        validity: Duration,
    ) -> Result<ServerCert, CsrError> {
        let (public_key, names) = check_server_csr(csr_pem, allowed)?;
        let sans = names
            .iter()
            .map(|name| {
                name.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e: rcgen::Error| CsrError::Signing(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = self.sign_leaf(&public_key, sans, usages, SystemTime::now(), validity)?;
        Ok(ServerCert {
            names,
            chain_pem: leaf.chain_pem,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }

    /// A leaf for `public_key` with `sans`, for `usages`, valid from `now` for
    /// `validity` (cut short at the chain's end), chained to this CA's intermediates.
    fn sign_leaf(
        &self,
        public_key: &rcgen::SubjectPublicKeyInfo,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Leaf, CsrError> {
        let invalid = || CsrError::InvalidValidity {
            seconds: validity.as_secs(),
        };
        if validity < Duration::from_secs(1) {
            return Err(invalid());
        }
        let not_after = checked_end(now, validity)
            .ok_or_else(invalid)?
            .min(self.chain_not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().map_err(CsrError::Signing)?);
        params.not_before = x509_time(now - MAX_BACKDATE.min(validity)).ok_or_else(invalid)?;
        params.not_after = x509_time(not_after).ok_or_else(invalid)?;

        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        let info = CertInfo::from_der(cert.der()).map_err(|e| CsrError::Signing(e.to_string()))?;
        let leaf = cert.der().clone();
        Ok(Leaf {
            cert_pem: x509::pem_encode("CERTIFICATE", &leaf),
            chain_pem: x509::certs_to_pem(std::iter::once(&leaf).chain(self.intermediates())),
            not_before: info.not_before,
            not_after: info.not_after,
            serial: info.serial,
        })
    }

    /// The root this CA chains to, as a bundle. During a rotation the control plane
    /// merges the old CA's bundle into the new one's ([`TrustBundle::merge`]).
    pub fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// Facts about this CA's own certificate (subject, expiry, fingerprint).
    pub fn certificate(&self) -> &CertInfo {
        &self.info
    }

    /// The trust domain this CA is restricted to, when its certificate names one.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    /// The certificates between a leaf and the root: this CA and those above it,
    /// without the root, which peers already hold in their bundle.
    fn intermediates(&self) -> impl Iterator<Item = &CertificateDer<'static>> + '_ {
        let n = self.chain.len().saturating_sub(1);
        self.chain.iter().take(n)
    }

    fn assemble(
        issuer: Issuer<'static, KeyPair>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CaError> {
        let mut infos = Vec::with_capacity(chain.len());
        let mut trust_domain = None;
        for (index, der) in chain.iter().enumerate() {
            infos.push(CertInfo::from_der(der).map_err(|e| match e {
                PemError::BadCertificate { reason, .. } => {
                    PemError::BadCertificate { index, reason }
                }
                other => other,
            })?);
            if index == 0 {
                trust_domain = signing_trust_domain(&x509::parse(der, 0)?);
            }
        }
        let chain_not_after = infos
            .iter()
            .map(|i| i.not_after)
            .min()
            .ok_or(PemError::NoCertificate)?;
        let root = chain.last().cloned().ok_or(PemError::NoCertificate)?;
        let bundle = TrustBundle::new([root])?;
        let info = infos.swap_remove(0);
        Ok(Self {
            issuer,
            chain,
            info,
            chain_not_after,
            trust_domain,
            bundle,
        })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.info.subject)
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.info.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn ca_params(
    common_name: &str,
    trust_domain: Option<&str>,
    constraints: BasicConstraints,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let invalid = || CaError::InvalidValidity {
        seconds: not_after
            .duration_since(not_before)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let serial = random_serial().map_err(CaError::Signing)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Trellis");
    // Each CA gets a name of its own: during a rotation the old and new roots sit in
    // one bundle, and both operators and chain building need to tell them apart.
    let tag = x509::hex(serial.as_ref().get(..4).unwrap_or_default());
    dn.push(DnType::CommonName, format!("{common_name} {tag}"));
    params.distinguished_name = dn;
    // A signing certificate carries the SPIFFE ID of its trust domain, without a
    // path, as the X.509-SVID profile recommends.
    if let Some(td) = trust_domain {
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{td}").try_into().map_err(
                |e: rcgen::Error| CaError::Signing(e.to_string()),
            )?)];
    }
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial);
    params.not_before = x509_time(not_before).ok_or_else(invalid)?;
    params.not_after = x509_time(not_after).ok_or_else(invalid)?;
    Ok(params)
}

/// The trust domain named by a signing certificate's `spiffe://<trust-domain>` URI.
fn signing_trust_domain(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => {
            let td = uri.strip_prefix("spiffe://")?;
            validate_trust_domain(td).ok()?;
            Some(td.to_owned())
        }
        _ => None,
    })
}

fn check_can_sign(cert: &X509Certificate<'_>) -> Result<(), CaError> {
    let not_ca = |reason| CaError::NotCa {
        subject: cert.subject().to_string(),
        reason,
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_ca("basic constraints do not mark it as a CA")),
        Err(_) => return Err(not_ca("its basic constraints do not parse")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err(not_ca("its key usage does not allow certificate signing"))
        }
        Ok(_) => Ok(()),
        Err(_) => Err(not_ca("its key usage does not parse")),
    }
}

/// A random positive 128-bit serial, as RFC 5280 asks of CAs (unpredictable, at
/// most 20 octets).
fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "system random source failed".to_owned())?;
    // Clear the top bit so the DER INTEGER is positive, and set the next one so the
    // encoding always has the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn checked_end(now: SystemTime, validity: Duration) -> Option<SystemTime> {
    now.checked_add(validity)
}

/// X.509 times have whole seconds; truncating here makes the reported validity match
/// what the certificate says.
fn x509_time(t: SystemTime) -> Option<OffsetDateTime> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
