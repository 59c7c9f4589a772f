use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;

use super::*;
use crate::ca::CertificateAuthority;
use crate::csr::WorkloadKey;
use crate::store::Credentials;

const HOUR: Duration = Duration::from_secs(3600);

fn id(sa: &str) -> SpiffeId {
    SpiffeId::in_default_domain("shop", sa).expect("id")
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

fn issue_at(
    ca: &CertificateAuthority,
    me: &SpiffeId,
    at: SystemTime,
    validity: Duration,
) -> Vec<CertificateDer<'static>> {
    let key = WorkloadKey::generate().expect("key");
    let issued = ca
        .sign_csr_at(&key.csr(me).expect("csr"), me, at, validity)
        .expect("signed");
    chain(&issued.chain_pem)
}

fn check(
    bundle: &TrustBundle,
    chain: &[CertificateDer<'static>],
    role: PeerRole,
) -> Result<SpiffeId, rustls::Error> {
    verify_peer(bundle, &chain[0], &chain[1..], UnixTime::now(), role)
}

fn other_error(err: &rustls::Error) -> Option<PeerIdentityError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PeerIdentityError>().cloned()
        }
        _ => None,
    }
}

/// A CA made directly with rcgen, to produce leaves this crate's CA never would.
struct RawCa {
    issuer: Issuer<'static, KeyPair>,
    bundle: TrustBundle,
}

impl RawCa {
    fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("root");
        let bundle = TrustBundle::new([cert.der().clone()]).expect("bundle");
        Self {
            issuer: Issuer::new(params, key),
            bundle,
        }
    }

    fn leaf(&self, edit: impl FnOnce(&mut CertificateParams)) -> Vec<CertificateDer<'static>> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id("cart").to_uri().try_into().expect("ia5"))];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        edit(&mut params);
        vec![params
            .signed_by(&key, &self.issuer)
            .expect("leaf")
            .der()
            .clone()]
    }
}

#[test]
fn accepts_a_leaf_from_the_bundle_for_both_roles() {
    let ca = CertificateAuthority::generate_root("trellis.local", HOUR).expect("root");
    let leaf = issue_at(&ca, &id("cart"), SystemTime::now(), HOUR);
    let bundle = ca.trust_bundle();
    assert_eq!(check(&bundle, &leaf, PeerRole::Server), Ok(id("cart")));
    assert_eq!(check(&bundle, &leaf, PeerRole::Client), Ok(id("cart")));
}

#[test]
fn refuses_untrusted_expired_and_future_leaves() {
    let ca = CertificateAuthority::generate_root("trellis.local", HOUR).expect("root");
    let stranger = CertificateAuthority::generate_root("trellis.local", HOUR).expect("root");
    let bundle = ca.trust_bundle();
    let now = SystemTime::now();

    let untrusted = issue_at(&stranger, &id("cart"), now, HOUR);
    assert_eq!(
        check(&bundle, &untrusted, PeerRole::Client),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );

    let expired = issue_at(&ca, &id("cart"), now - HOUR, Duration::from_secs(600));
    let err = check(&bundle, &expired, PeerRole::Server).expect_err("expired");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired"), "{err}");

    let future = issue_at(&ca, &id("cart"), now + HOUR / 2, Duration::from_secs(600));
    let err = check(&bundle, &future, PeerRole::Server).expect_err("not yet valid");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
        ),
        "{err:?}"
    );

    let empty = TrustBundle::default();
    let leaf = issue_at(&ca, &id("cart"), now, HOUR);
    assert!(check(&empty, &leaf, PeerRole::Server).is_err());
}

#[test]
fn refuses_leaves_outside_the_spiffe_profile() {
    let raw = RawCa::new();
    assert_eq!(
        check(&raw.bundle, &raw.leaf(|_| {}), PeerRole::Server),
        Ok(id("cart"))
    );

    let server_only =
        raw.leaf(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]);
    assert_eq!(
        check(&raw.bundle, &server_only, PeerRole::Server),
        Ok(id("cart"))
    );
    assert_eq!(
        check(&raw.bundle, &server_only, PeerRole::Client),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose
        ))
    );
    let no_eku = raw.leaf(|p| p.extended_key_usages.clear());
    assert_eq!(
        check(&raw.bundle, &no_eku, PeerRole::Server),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose
        ))
    );
    let signs_certs = raw.leaf(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign));
    assert_eq!(
        check(&raw.bundle, &signs_certs, PeerRole::Server),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose
        ))
    );
    let is_ca = raw.leaf(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    assert!(check(&raw.bundle, &is_ca, PeerRole::Server).is_err());

    let no_uri = raw.leaf(|p| {
        p.subject_alt_names = vec![SanType::DnsName("cart.shop".try_into().expect("ia5"))];
    });
    let err = check(&raw.bundle, &no_uri, PeerRole::Server).expect_err("no id");
    assert_eq!(other_error(&err), Some(PeerIdentityError::Missing));

    let two = raw.leaf(|p| {
        p.subject_alt_names
            .push(SanType::URI(id("admin").to_uri().try_into().expect("ia5")));
    });
    let err = check(&raw.bundle, &two, PeerRole::Server).expect_err("two ids");
    assert_eq!(other_error(&err), Some(PeerIdentityError::Several(2)));

    let not_spiffe = raw.leaf(|p| {
        p.subject_alt_names = vec![SanType::URI("https://cart.shop/".try_into().expect("ia5"))];
    });
    let err = check(&raw.bundle, &not_spiffe, PeerRole::Server).expect_err("not spiffe");
    assert!(
        matches!(other_error(&err), Some(PeerIdentityError::Invalid { .. })),
        "{err:?}"
    );

    let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
    assert_eq!(
        check(&raw.bundle, &garbage, PeerRole::Server),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding
        ))
    );
}

#[test]
fn server_verifier_checks_the_expected_identity() {
    let ca = CertificateAuthority::generate_root("trellis.local", HOUR).expect("root");
    let key = WorkloadKey::generate().expect("key");
    let me = id("cart");
    let issued = ca
        .sign_csr(&key.csr(&me).expect("csr"), &me, HOUR)
        .expect("signed");
    let store = CertStore::new(
        Credentials::new(&key, &issued.chain_pem).expect("creds"),
        ca.trust_bundle(),
    );
    let name = ServerName::try_from("ignored.example").expect("name");
    let leaf = chain(&issued.chain_pem);

    let right = SpiffeServerVerifier::new(store.clone(), me.clone());
    assert_eq!(right.expected(), &me);
    right
        .verify_server_cert(&leaf[0], &[], &name, &[], UnixTime::now())
        .expect("expected identity");

    let wrong = SpiffeServerVerifier::new(store.clone(), id("db"));
    let err = wrong
        .verify_server_cert(&leaf[0], &[], &name, &[], UnixTime::now())
        .expect_err("other identity");
    assert_eq!(
        other_error(&err),
        Some(PeerIdentityError::Mismatch {
            expected: id("db"),
            presented: me.clone(),
        })
    );
    assert!(
        err.to_string()
            .contains("peer presented spiffe://trellis.local/ns/shop/sa/cart, but spiffe://trellis.local/ns/shop/sa/db was expected"),
        "{err}"
    );

    let client_side = SpiffeClientVerifier::new(store);
    assert!(client_side.client_auth_mandatory());
    assert!(client_side.root_hint_subjects().is_empty());
    client_side
        .verify_client_cert(&leaf[0], &[], UnixTime::now())
        .expect("any identity from the bundle");
}

#[test]
fn only_tls13_signature_schemes() {
    let schemes = tls13_schemes(&algorithms());
    assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
    assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
    assert!(!schemes.contains(&SignatureScheme::RSA_PKCS1_SHA256));
    assert!(!schemes.contains(&SignatureScheme::ECDSA_SHA1_Legacy));
    assert!(schemes.iter().all(|s| TLS13_SCHEMES.contains(s)));
}
