//! Both ends of a certificate signing request: the workload's key, which never
//! leaves the process that made it, and the CA's inspection of a request before it
//! signs anything.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::error::{CredentialsError, CsrError, KeyError};
use crate::spiffe::SpiffeId;

/// A workload's private key: ECDSA P-256, generated in this process.
///
/// Only a CSR (which carries the public key) and, for the local TLS configuration, a
/// [`PrivateKeyDer`] come out of it. `Debug` does not print the key.
pub struct WorkloadKey {
    key: KeyPair,
}

// === impl WorkloadKey ===

impl WorkloadKey {
    /// Generates a fresh key from the system random source.
    pub fn generate() -> Result<Self, KeyError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Self { key })
    }

    /// A PEM certificate signing request for `id`, signed with this key. The SPIFFE
    /// ID is the only subject alternative name and the subject is empty, as the
    /// SPIFFE X.509-SVID profile recommends.
    pub fn csr(&self, id: &SpiffeId) -> Result<String, KeyError> {
        let uri = id
            .to_uri()
            .try_into()
            .map_err(|e: rcgen::Error| KeyError::Csr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(|e| KeyError::Csr(e.to_string()))
    }

    /// A PEM certificate signing request for a server known by DNS names (the
    /// control plane's admission webhook, which the API server calls by its Service's
    /// name): the names are the subject alternative names, the first one also the
    /// subject's common name.
    pub fn server_csr(&self, dns_names: &[String]) -> Result<String, KeyError> {
        let Some(first) = dns_names.first() else {
            return Err(KeyError::Csr(
                "a server certificate needs a DNS name".to_owned(),
            ));
        };
        let mut params = CertificateParams::new(dns_names.to_vec())
            .map_err(|e| KeyError::Csr(format!("{dns_names:?}: {e}")))?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(|e| KeyError::Csr(e.to_string()))
    }

    /// This key with `chain_pem`, the chain that certifies it (leaf first), as a TLS
    /// server presents them: for a server known by DNS names ([`Self::server_csr`]).
    /// Fails if the chain does not parse or its leaf certifies another key.
    pub fn certified(
        &self,
        chain_pem: &str,
    ) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, CredentialsError> {
        let chain = crate::x509::certs_from_pem(chain_pem)?;
        rustls::sign::CertifiedKey::from_der(chain, self.private_key_der(), &crate::tls::provider())
            .map(std::sync::Arc::new)
            .map_err(|e| CredentialsError::KeyMismatch(e.to_string()))
    }

    /// The private key in PKCS#8 form, for rustls.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }
}

impl fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadKey")
            .field("algorithm", &"ECDSA P-256")
            .finish_non_exhaustive()
    }
}

/// What a request whose self-signature verifies asks for.
struct Request {
    uris: Vec<String>,
    dns_names: Vec<String>,
    public_key: rcgen::SubjectPublicKeyInfo,
}

/// Decodes a PEM CSR, verifies its self-signature and reads its subject alternative
/// names. A name that is neither a URI nor a DNS name, or a request to be a CA, is
/// refused here: no certificate the mesh CA signs carries one.
fn read_request(csr_pem: &str) -> Result<Request, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        CsrError::Malformed {
            reason: format!("no PEM \"CERTIFICATE REQUEST\" block ({e})"),
        }
    })?;
    let csr = match X509CertificationRequest::from_der(der.as_ref()) {
        Ok(([], csr)) => csr,
        Ok(_) => {
            return Err(CsrError::Malformed {
                reason: "trailing data after the request".to_owned(),
            })
        }
        Err(e) => {
            return Err(CsrError::Malformed {
                reason: e.to_string(),
            })
        }
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let (mut uris, mut dns_names) = (Vec::new(), Vec::new());
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                        GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                        other => {
                            let (kind, value) = describe(other);
                            return Err(CsrError::UnexpectedSan { kind, value });
                        }
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::RequestsCa),
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Malformed {
                    reason: format!("requested extension does not parse: {error}"),
                })
            }
            // Other requested extensions (key usage and the like) are ignored: the
            // CA decides what a certificate allows.
            _ => {}
        }
    }
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| CsrError::UnsupportedKey {
                reason: e.to_string(),
            })?;
    Ok(Request {
        uris,
        dns_names,
        public_key,
    })
}

/// Parses a CSR and checks everything the CA requires before signing: it decodes,
/// its self-signature verifies, it names exactly `expected` and nothing else, and
/// it does not ask to be a CA. Returns the public key to certify.
pub(crate) fn check_csr(
    csr_pem: &str,
    expected: &SpiffeId,
) -> Result<rcgen::SubjectPublicKeyInfo, CsrError> {
    let request = read_request(csr_pem)?;
    if let Some(dns) = request.dns_names.first() {
        return Err(CsrError::UnexpectedSan {
            kind: "DNS",
            value: dns.clone(),
        });
    }
    let uri = match request.uris.as_slice() {
        [] => {
            return Err(CsrError::MissingSpiffeId {
                expected: expected.clone(),
            })
        }
        [uri] => uri,
        several => {
            return Err(CsrError::SeveralUris {
                count: several.len(),
                expected: expected.clone(),
            })
        }
    };
    let requested: SpiffeId = uri.parse().map_err(|source| CsrError::InvalidSpiffeId {
        uri: uri.clone(),
        source,
    })?;
    if &requested != expected {
        return Err(CsrError::IdentityMismatch {
            expected: expected.clone(),
            requested,
        });
    }
    Ok(request.public_key)
}

/// Checks a server's CSR ([`WorkloadKey::server_csr`]): it decodes, its
/// self-signature verifies, it names at least one DNS name, only names in `allowed`,
/// and no URI (a server certificate is never a workload identity). Returns the public
/// key to certify and the names.
pub(crate) fn check_server_csr(
    csr_pem: &str,
    allowed: &[String],
) -> Result<(rcgen::SubjectPublicKeyInfo, Vec<String>), CsrError> {
    let request = read_request(csr_pem)?;
    if let Some(uri) = request.uris.first() {
        return Err(CsrError::UnexpectedSan {
            kind: "URI",
            value: uri.clone(),
        });
    }
    if request.dns_names.is_empty() {
        return Err(CsrError::MissingDnsName);
    }
    if let Some(name) = request.dns_names.iter().find(|n| !allowed.contains(n)) {
        return Err(CsrError::NameNotAllowed {
            name: name.clone(),
            allowed: allowed.to_vec(),
        });
    }
    Ok((request.public_key, request.dns_names))
}

fn describe(name: &GeneralName<'_>) -> (&'static str, String) {
    match name {
        GeneralName::DNSName(dns) => ("DNS", (*dns).to_owned()),
        GeneralName::RFC822Name(mail) => ("email", (*mail).to_owned()),
        GeneralName::IPAddress(ip) => ("IP", crate::x509::hex(ip)),
        other => ("other", format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::in_default_domain(ns, sa).expect("valid id")
    }

    fn csr_with(params: CertificateParams, key: &KeyPair) -> String {
        params
            .serialize_request(key)
            .expect("serializes")
            .pem()
            .expect("encodes")
    }

    #[test]
    fn workload_csr_is_accepted_for_its_identity() {
        let key = WorkloadKey::generate().expect("key");
        let me = id("shop", "cart");
        let csr = key.csr(&me).expect("csr");
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let spki = check_csr(&csr, &me).expect("accepted");
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&spki),
            key.public_key_der()
        );
        assert!(format!("{key:?}").contains("P-256"));
    }

    #[test]
    fn server_csr_names_the_dns_names() {
        let key = WorkloadKey::generate().expect("key");
        let names = [
            "trellis-control.mesh.svc".to_owned(),
            "trellis-control.mesh.svc.cluster.local".to_owned(),
        ];
        let pem = key.server_csr(&names).expect("csr");
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).expect("PEM");
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("DER");
        csr.verify_signature().expect("self-signed by the key");
        let mut dns = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::DNSName(name) = name {
                        dns.push((*name).to_owned());
                    }
                }
            }
        }
        assert_eq!(dns, names);
        assert!(csr
            .certification_request_info
            .subject
            .to_string()
            .contains("trellis-control.mesh.svc"));
        // A workload CA never signs it: it names no SPIFFE ID.
        let err = check_csr(&pem, &id("mesh", "trellis-control")).expect_err("DNS names");
        assert!(
            matches!(err, CsrError::UnexpectedSan { kind: "DNS", .. }),
            "{err:?}"
        );
        assert!(key.server_csr(&[]).is_err());
    }

    #[test]
    fn csr_for_another_identity_is_refused() {
        let key = WorkloadKey::generate().expect("key");
        let csr = key.csr(&id("shop", "payments")).expect("csr");
        let err = check_csr(&csr, &id("shop", "cart")).expect_err("foreign identity");
        assert!(matches!(err, CsrError::IdentityMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("ns/shop/sa/payments"), "{err}");
    }

    #[test]
    fn malformed_csrs_are_refused() {
        let me = id("shop", "cart");
        for input in [
            "",
            "not pem at all",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            let err = check_csr(input, &me).expect_err("malformed");
            assert!(
                matches!(err, CsrError::Malformed { .. }),
                "{input:?}: {err:?}"
            );
        }
    }

    #[test]
    fn tampered_csr_signature_is_refused() {
        let key = WorkloadKey::generate().expect("key");
        let me = id("shop", "cart");
        let csr = key.csr(&me).expect("csr");
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .expect("decodes")
            .as_ref()
            .to_vec();
        // The last byte belongs to the signature value.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = crate::x509::pem_encode("CERTIFICATE REQUEST", &der);
        assert_eq!(check_csr(&tampered, &me), Err(CsrError::BadSignature));
    }

    #[test]
    fn csr_san_rules() {
        let me = id("shop", "cart");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let uri = |s: &str| SanType::URI(s.try_into().expect("ia5"));
        let with = |sans: Vec<SanType>, ca: bool| {
            let mut p = CertificateParams::default();
            p.subject_alt_names = sans;
            if ca {
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }
            csr_with(p, &key)
        };
        type Check = fn(&CsrError) -> bool;
        let cases: Vec<(&str, String, Check)> = vec![
            ("no SAN", with(vec![], false), |e| {
                matches!(e, CsrError::MissingSpiffeId { .. })
            }),
            (
                "DNS pretending",
                with(
                    vec![SanType::DnsName(
                        "spiffe.trellis.local".try_into().expect("ia5"),
                    )],
                    false,
                ),
                |e| matches!(e, CsrError::UnexpectedSan { kind: "DNS", .. }),
            ),
            (
                "DNS beside the right URI",
                with(
                    vec![
                        uri(&me.to_uri()),
                        SanType::DnsName("cart".try_into().expect("ia5")),
                    ],
                    false,
                ),
                |e| matches!(e, CsrError::UnexpectedSan { .. }),
            ),
            (
                "two URIs",
                with(
                    vec![
                        uri(&me.to_uri()),
                        uri("spiffe://trellis.local/ns/shop/sa/x"),
                    ],
                    false,
                ),
                |e| matches!(e, CsrError::SeveralUris { count: 2, .. }),
            ),
            (
                "not a SPIFFE URI",
                with(vec![uri("https://cart.shop")], false),
                |e| matches!(e, CsrError::InvalidSpiffeId { .. }),
            ),
            ("asks for CA", with(vec![uri(&me.to_uri())], true), |e| {
                matches!(e, CsrError::RequestsCa)
            }),
        ];
        for (name, csr, check) in cases {
            let err = check_csr(&csr, &me).expect_err(name);
            assert!(check(&err), "{name}: unexpected {err:?}");
        }
    }
}
