use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use super::*;
use crate::csr::WorkloadKey;
use crate::verify::{verify_peer, PeerRole};

const HOUR: Duration = Duration::from_secs(3600);

fn root() -> CertificateAuthority {
    CertificateAuthority::generate_root("trellis.local", HOUR).expect("root")
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::in_default_domain("shop", sa).expect("id")
}

fn csr_for(id: &SpiffeId) -> String {
    WorkloadKey::generate().expect("key").csr(id).expect("csr")
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

fn verify_chain(bundle: &TrustBundle, chain_pem: &str) -> Result<SpiffeId, rustls::Error> {
    let chain = ders(chain_pem);
    verify_peer(
        bundle,
        &chain[0],
        &chain[1..],
        rustls_pki_types::UnixTime::now(),
        PeerRole::Server,
    )
}

#[test]
fn ca_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CertificateAuthority>();
}

#[test]
fn root_certificate_profile() {
    let ca = root();
    assert_eq!(ca.trust_domain(), Some("trellis.local"));
    let pem = ca.to_pem();
    let der = &ders(&pem.cert_chain)[0];
    let (_, cert) = X509Certificate::from_der(der).expect("parses");
    assert_eq!(cert.subject(), cert.issuer());
    assert!(cert
        .subject()
        .to_string()
        .contains("CN=Trellis root CA trellis.local"));
    assert!(cert.is_ca());
    let ku = cert.key_usage().expect("parses").expect("present");
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert_eq!(
        signing_trust_domain(&cert).as_deref(),
        Some("trellis.local")
    );
    cert.verify_signature(None).expect("self-signed");

    let info = ca.certificate();
    assert_eq!(
        info.not_after.duration_since(info.not_before).ok(),
        Some(HOUR + Duration::from_secs(60)),
        "validity plus the one-minute backdate"
    );
    assert_eq!(ca.trust_bundle().len(), 1);
    assert!(format!("{pem:?}").contains("<redacted>"));
    assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
}

#[test]
fn root_refuses_bad_input() {
    assert!(matches!(
        CertificateAuthority::generate_root("Not Valid", HOUR),
        Err(CaError::TrustDomain(_))
    ));
    assert!(matches!(
        CertificateAuthority::generate_root("trellis.local", Duration::from_secs(u64::MAX)),
        Err(CaError::InvalidValidity { .. })
    ));
}

#[test]
fn leaf_certificate_profile() {
    let ca = root();
    let me = id("cart");
    // A whole second, so that no truncation to X.509's one-second resolution applies.
    let now = UNIX_EPOCH
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Duration::from_secs(d.as_secs()))
            .expect("after 1970");
    let issued = ca
        .sign_csr_at(&csr_for(&me), &me, now, Duration::from_secs(600))
        .expect("signed");
    assert_eq!(issued.id, me);
    assert_eq!(
        issued.chain_pem, issued.cert_pem,
        "a root CA adds no intermediates"
    );

    let der = &ders(&issued.cert_pem)[0];
    let (_, cert) = X509Certificate::from_der(der).expect("parses");
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().expect("parses").expect("present");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().expect("parses").expect("present");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let eku = cert.extended_key_usage().expect("parses").expect("present");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert_eq!(crate::x509::spiffe_id(&cert), Ok(me.clone()));
    assert!(cert.subject().to_string().is_empty());
    assert_eq!(format!("{:x}", cert.serial), issued.serial);
    assert_eq!(issued.serial.len(), 32);

    // notBefore is backdated a minute; notAfter is now + validity.
    assert_eq!(issued.not_before, now - Duration::from_secs(60));
    assert_eq!(issued.not_after, now + Duration::from_secs(600));

    assert_eq!(verify_chain(&ca.trust_bundle(), &issued.chain_pem), Ok(me));
}

#[test]
fn serials_are_unique() {
    let ca = root();
    let me = id("cart");
    let csr = csr_for(&me);
    let a = ca.sign_csr(&csr, &me, HOUR).expect("signed");
    let b = ca.sign_csr(&csr, &me, HOUR).expect("signed");
    assert_ne!(a.serial, b.serial, "same key, new serial");
}

#[test]
fn tiny_validity_backdates_less() {
    let ca = root();
    let me = id("cart");
    let now = SystemTime::now();
    let issued = ca
        .sign_csr_at(&csr_for(&me), &me, now, Duration::from_secs(3))
        .expect("signed");
    // Backdated by the validity itself rather than a full minute; whole seconds.
    let life = issued
        .not_after
        .duration_since(issued.not_before)
        .expect("ordered");
    assert_eq!(life, Duration::from_secs(6));
    assert!(issued.not_after > now - Duration::from_secs(1));
}

#[test]
fn validity_limits() {
    let ca = root();
    let me = id("cart");
    let csr = csr_for(&me);
    assert!(matches!(
        ca.sign_csr(&csr, &me, Duration::from_millis(999)),
        Err(CsrError::InvalidValidity { seconds: 0 })
    ));
    // A leaf never outlives its CA.
    let issued = ca
        .sign_csr(&csr, &me, Duration::from_secs(10 * 3600))
        .expect("signed");
    assert!(issued.not_after <= ca.certificate().not_after);
}

#[test]
fn csr_refusals_surface_from_the_ca() {
    let ca = root();
    let me = id("cart");
    let err = ca
        .sign_csr(&csr_for(&id("admin")), &me, HOUR)
        .expect_err("foreign identity");
    assert!(matches!(err, CsrError::IdentityMismatch { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is for spiffe://trellis.local/ns/shop/sa/admin, but the caller may only obtain spiffe://trellis.local/ns/shop/sa/cart"),
        "{err}"
    );

    let err = ca.sign_csr("garbage", &me, HOUR).expect_err("malformed");
    assert!(matches!(err, CsrError::Malformed { .. }), "{err:?}");

    let elsewhere = SpiffeId::new("other.domain", "shop", "cart").expect("id");
    let err = ca
        .sign_csr(&csr_for(&elsewhere), &elsewhere, HOUR)
        .expect_err("other trust domain");
    assert!(
        matches!(err, CsrError::ForeignTrustDomain { .. }),
        "{err:?}"
    );
}

#[test]
fn pem_round_trip() {
    let ca = root();
    let pem = ca.to_pem();
    let loaded = CertificateAuthority::from_pem(&pem.cert_chain, &pem.key).expect("loads");
    assert_eq!(loaded.certificate(), ca.certificate());
    assert_eq!(loaded.trust_domain(), Some("trellis.local"));
    assert_eq!(loaded.to_pem(), pem);

    let me = id("cart");
    let issued = loaded.sign_csr(&csr_for(&me), &me, HOUR).expect("signed");
    assert_eq!(verify_chain(&ca.trust_bundle(), &issued.chain_pem), Ok(me));
}

#[test]
fn intermediate_chain() {
    let org_root = root();
    let inter = org_root.issue_intermediate(HOUR).expect("intermediate");
    let pem = inter.to_pem();
    assert_eq!(ders(&pem.cert_chain).len(), 2);

    // As an operator would hand it over: intermediate + root, and its key.
    let ca = CertificateAuthority::from_pem(&pem.cert_chain, &pem.key).expect("loads");
    assert_eq!(ca.trust_domain(), Some("trellis.local"));
    assert_eq!(
        ca.trust_bundle().to_pem(),
        org_root.trust_bundle().to_pem(),
        "the bundle is the organisation root"
    );
    let inter_chain = ders(&pem.cert_chain);
    let (_, cert) = X509Certificate::from_der(&inter_chain[0]).expect("parses");
    let bc = cert.basic_constraints().expect("parses").expect("present");
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let me = id("cart");
    let issued = ca.sign_csr(&csr_for(&me), &me, HOUR).expect("signed");
    let chain = ders(&issued.chain_pem);
    assert_eq!(chain.len(), 2, "leaf and intermediate, not the root");
    assert_eq!(
        verify_chain(&org_root.trust_bundle(), &issued.chain_pem),
        Ok(me.clone())
    );
    // Without the intermediate the leaf does not chain to the root.
    assert_eq!(
        verify_chain(&org_root.trust_bundle(), &issued.cert_pem),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    );
    // And an intermediate with path length 0 cannot make another CA that works.
    let nested = ca.issue_intermediate(HOUR).expect("rcgen signs it anyway");
    let issued = nested.sign_csr(&csr_for(&me), &me, HOUR).expect("signed");
    assert!(verify_chain(&org_root.trust_bundle(), &issued.chain_pem).is_err());
}

#[test]
fn from_pem_refusals() {
    let ca = root();
    let pem = ca.to_pem();
    let other = root().to_pem();

    let err = CertificateAuthority::from_pem(&pem.cert_chain, &other.key).expect_err("mismatch");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let err = CertificateAuthority::from_pem(&pem.cert_chain, "nope").expect_err("bad key");
    assert!(matches!(err, CaError::Key { .. }), "{err:?}");

    let err = CertificateAuthority::from_pem("", &pem.key).expect_err("no cert");
    assert!(
        matches!(err, CaError::Chain(PemError::NoCertificate)),
        "{err:?}"
    );

    // A self-signed certificate that is not a CA.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = CertificateParams::new(vec!["x.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let err =
        CertificateAuthority::from_pem(&leaf.pem(), &key.serialize_pem()).expect_err("not CA");
    assert!(matches!(err, CaError::NotCa { .. }), "{err:?}");

    // An intermediate without the root it chains to.
    let inter = ca.issue_intermediate(HOUR).expect("intermediate").to_pem();
    let only_inter = x509::certs_to_pem(ders(&inter.cert_chain).iter().take(1));
    let err = CertificateAuthority::from_pem(&only_inter, &inter.key).expect_err("no root");
    assert!(matches!(err, CaError::ChainWithoutRoot { .. }), "{err:?}");

    // An intermediate followed by a root that did not sign it.
    let wrong = format!("{only_inter}{}", other.cert_chain);
    let err = CertificateAuthority::from_pem(&wrong, &inter.key).expect_err("wrong order");
    assert!(matches!(err, CaError::ChainOrder { .. }), "{err:?}");

    // An expired CA.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let old = params.self_signed(&key).expect("cert");
    let err =
        CertificateAuthority::from_pem(&old.pem(), &key.serialize_pem()).expect_err("expired");
    assert!(matches!(err, CaError::Expired { .. }), "{err:?}");
}

#[test]
fn ca_without_trust_domain_signs_any_domain() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.not_after = rcgen::date_time_ymd(2999, 1, 1);
    let cert = params.self_signed(&key).expect("cert");
    let ca = CertificateAuthority::from_pem(&cert.pem(), &key.serialize_pem()).expect("loads");
    assert_eq!(ca.trust_domain(), None);
    let elsewhere = SpiffeId::new("example.org", "a", "b").expect("id");
    let issued = ca
        .sign_csr(&csr_for(&elsewhere), &elsewhere, HOUR)
        .expect("signed");
    assert_eq!(
        verify_chain(&ca.trust_bundle(), &issued.chain_pem),
        Ok(elsewhere)
    );
}

fn webhook_names() -> Vec<String> {
    vec![
        "trellis-control.mesh.svc".to_owned(),
        "trellis-control.mesh.svc.cluster.local".to_owned(),
    ]
}

#[test]
fn server_certificate_is_for_its_dns_names_and_serving_only() {
    let ca = root();
    let names = webhook_names();
    let csr = WorkloadKey::generate()
        .expect("key")
        .server_csr(&names)
        .expect("csr");
    let cert = ca.sign_server_csr(&csr, &names, HOUR).expect("signed");
    assert_eq!(cert.names, names);
    let chain = ders(&cert.chain_pem);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("parses");
    assert!(!leaf.is_ca());
    let eku = leaf
        .extended_key_usage()
        .expect("parses")
        .expect("has EKU")
        .value;
    assert!(eku.server_auth && !eku.client_auth);

    // A TLS client that trusts the mesh's root (the API server, given the caBundle)
    // accepts it for the Service's name, and for no other.
    let mut roots = rustls::RootCertStore::empty();
    for root in ders(&ca.trust_bundle().to_pem()) {
        roots.add(root).expect("root");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let verify = |name: &str| {
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name"),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
    };
    verify("trellis-control.mesh.svc").expect("valid for the Service's name");
    assert!(verify("books.shop.svc").is_err());

    // It is no workload identity: a proxy refuses it as a peer.
    assert!(verify_chain(&ca.trust_bundle(), &cert.chain_pem).is_err());
}

#[test]
fn server_csr_refusals() {
    let ca = root();
    let allowed = webhook_names();
    let key = WorkloadKey::generate().expect("key");
    let foreign = key.server_csr(&["books.shop.svc".to_owned()]).expect("csr");
    assert!(matches!(
        ca.sign_server_csr(&foreign, &allowed, HOUR),
        Err(CsrError::NameNotAllowed { name, .. }) if name == "books.shop.svc"
    ));
    let workload = key.csr(&id("cart")).expect("csr");
    assert!(matches!(
        ca.sign_server_csr(&workload, &allowed, HOUR),
        Err(CsrError::UnexpectedSan { kind: "URI", .. })
    ));
    let server = key.server_csr(&allowed).expect("csr");
    assert!(matches!(
        ca.sign_server_csr(&server, &allowed, Duration::ZERO),
        Err(CsrError::InvalidValidity { seconds: 0 })
    ));
    // A workload's request never gets a DNS name: the server CSR is refused there.
    assert!(matches!(
        ca.sign_csr(&server, &id("cart"), HOUR),
        Err(CsrError::UnexpectedSan { kind: "DNS", .. })
    ));
    let no_names = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"))
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(matches!(
        ca.sign_server_csr(&no_names, &allowed, HOUR),
        Err(CsrError::MissingDnsName)
    ));
}

#[test]
fn a_server_key_is_certified_only_by_its_own_chain() {
    let ca = root();
    let names = webhook_names();
    let key = WorkloadKey::generate().expect("key");
    let other = WorkloadKey::generate().expect("key");
    let csr = key.server_csr(&names).expect("csr");
    let cert = ca.sign_server_csr(&csr, &names, HOUR).expect("signed");
    assert!(key.certified(&cert.chain_pem).is_ok());
    assert!(other.certified(&cert.chain_pem).is_err());
    assert!(key.certified("not a certificate").is_err());
}
