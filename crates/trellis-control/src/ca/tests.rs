use std::sync::Arc;
use std::time::Duration;

use trellis_identity::{CertificateAuthority, CsrError, TrustBundle, WorkloadKey};

use super::*;
use crate::store::MemoryStore;

fn settings() -> CaSettings {
    CaSettings::new("trellis.local")
}

fn books() -> SpiffeId {
    SpiffeId::new("trellis.local", "shop", "books").expect("id")
}

#[tokio::test]
async fn a_root_is_made_once_and_kept_in_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = MeshCa::start(store.clone(), settings()).await.expect("ca");
    let token = first
        .issue_token(&books(), Duration::from_secs(60))
        .expect("token");
    let again = MeshCa::start(store, settings()).await.expect("ca");
    assert_eq!(first.signer().fingerprint, again.signer().fingerprint);
    assert_eq!(again.trust_bundle().len(), 1);
    // The token key survives too: a token from before the restart still verifies.
    assert_eq!(again.verify_token(&token).expect("valid").id, books());
}

fn encrypted(hex: &str) -> CaSettings {
    let mut settings = settings();
    let key = trellis_identity::SealingKey::from_hex(hex).expect("key");
    settings.encryption_key = Some(Arc::new(key));
    settings
}

#[tokio::test]
async fn an_encryption_key_seals_the_ca_in_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // A CA made without a key, then given one: its secrets are sealed in place.
    let plain = MeshCa::start(store.clone(), settings()).await.expect("ca");
    let hex = trellis_identity::SealingKey::generate_hex().expect("random");
    let sealed = MeshCa::start(store.clone(), encrypted(&hex))
        .await
        .expect("ca");
    assert_eq!(plain.signer().fingerprint, sealed.signer().fingerprint);
    for key in ["/ca/signer", "/ca/token-key"] {
        let raw = store.get(key).await.expect("get").expect("present");
        assert!(raw.value.starts_with(b"sealed:v1:"), "{key} not sealed");
        assert!(!String::from_utf8_lossy(&raw.value).contains("PRIVATE KEY"));
    }
    // Without the key, or with another, the control plane refuses to start rather
    // than make a new CA.
    let refused = MeshCa::start(store.clone(), settings()).await.err();
    let message = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--ca-encryption-key"), "{message}");
    let other = trellis_identity::SealingKey::generate_hex().expect("random");
    assert!(MeshCa::start(store.clone(), encrypted(&other))
        .await
        .is_err());
    let again = MeshCa::start(store, encrypted(&hex)).await.expect("ca");
    assert_eq!(again.signer().fingerprint, plain.signer().fingerprint);
}

#[tokio::test]
async fn signs_only_the_identity_asked_for() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ca = MeshCa::start(store, settings()).await.expect("ca");
    let key = WorkloadKey::generate().expect("key");
    let csr = key.csr(&books()).expect("csr");
    let issued = ca.sign(&csr, &books()).expect("signed");
    assert_eq!(issued.id, books());
    let other = SpiffeId::new("trellis.local", "shop", "ratings").expect("id");
    assert!(matches!(
        ca.sign(&csr, &other),
        Err(CsrError::IdentityMismatch { .. })
    ));
    assert!(matches!(
        ca.sign("not a csr", &books()),
        Err(CsrError::Malformed { .. })
    ));
}

#[tokio::test]
async fn an_operator_intermediate_signs_and_its_root_is_the_anchor() {
    let org_root = CertificateAuthority::generate_root("trellis.local", Duration::from_secs(3600))
        .expect("root");
    let intermediate = org_root
        .issue_intermediate(Duration::from_secs(3600))
        .expect("intermediate");
    let mut settings = settings();
    settings.operator = Some(intermediate.to_pem());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ca = MeshCa::start(store, settings).await.expect("ca");
    let anchors: Vec<String> = ca
        .trust_bundle()
        .roots()
        .map(|r| r.fingerprint.clone())
        .collect();
    assert_eq!(anchors, [org_root.certificate().fingerprint.clone()]);
    let ca = Arc::new(ca);
    let refused = ca.rotate(Duration::from_millis(10)).await;
    assert!(matches!(refused, Err(CaError::Rotation(_))));
}

#[tokio::test]
async fn a_bad_operator_ca_is_refused() {
    let mut settings = settings();
    settings.operator = Some(trellis_identity::CaPem {
        cert_chain: "garbage".into(),
        key: "garbage".into(),
    });
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    assert!(matches!(
        MeshCa::start(store, settings).await,
        Err(CaError::Operator(_))
    ));
}

#[tokio::test]
async fn rotation_distributes_reissues_then_retires() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ca = Arc::new(MeshCa::start(store.clone(), settings()).await.expect("ca"));
    let old = ca.signer().fingerprint;
    let mut versions = ca.subscribe();
    let generation = versions.borrow_and_update().signer_generation;
    let driver = tokio::spawn(ca.clone().drive_rotation());

    let new = ca
        .rotate(Duration::from_millis(200))
        .await
        .expect("rotation");
    // Step 1 is done when rotate returns: both roots are trusted, the old one signs.
    let both = TrustBundle::from_pem(&versions.borrow_and_update().bundle_pem).expect("pem");
    assert!(both.contains(&old) && both.contains(&new));
    assert_eq!(ca.signer().fingerprint, old);
    assert!(
        ca.rotate(Duration::from_millis(200)).await.is_err(),
        "one at a time"
    );

    // Step 2: the new root signs, the bundle still has both.
    versions.changed().await.expect("reissue");
    let v = versions.borrow_and_update().clone();
    assert_eq!(v.signer_generation, generation + 1);
    assert_eq!(ca.signer().fingerprint, new);
    assert_eq!(TrustBundle::from_pem(&v.bundle_pem).expect("pem").len(), 2);

    // Step 3: only the new root is left, in memory and in the store.
    versions.changed().await.expect("retire");
    let last = TrustBundle::from_pem(&versions.borrow_and_update().bundle_pem).expect("pem");
    assert!(last.contains(&new) && !last.contains(&old));
    for _ in 0..200 {
        if ca.rotation_status().phase == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ca.rotation_status().phase, "done");
    let restarted = MeshCa::start(store, settings()).await.expect("ca");
    assert_eq!(restarted.signer().fingerprint, new);
    assert_eq!(restarted.trust_bundle().len(), 1);
    assert_eq!(restarted.rotation_status().phase, "done");
    driver.abort();
}

#[tokio::test]
async fn a_control_plane_on_the_same_store_follows_a_rotation() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let pacing = Arc::new(MeshCa::start(store.clone(), settings()).await.expect("ca"));
    let other = Arc::new(MeshCa::start(store.clone(), settings()).await.expect("ca"));
    assert_eq!(pacing.signer().fingerprint, other.signer().fingerprint);
    let follower = tokio::spawn(other.clone().follow_store());
    // The later steps are the leader's; here the other control plane leads, so the
    // rotation outlives the one that started it.
    let driver = tokio::spawn(other.clone().drive_rotation());
    let mut seen = other.subscribe();
    let generation = seen.borrow_and_update().signer_generation;

    let new = pacing
        .rotate(Duration::from_millis(300))
        .await
        .expect("rotation");
    // The other control plane trusts both roots, then signs with the new one, then
    // trusts it alone, as the pacing one does.
    let mut saw_both = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bundle = TrustBundle::from_pem(&seen.borrow_and_update().bundle_pem).expect("pem");
        saw_both |= bundle.len() == 2;
        if bundle.len() == 1 && bundle.contains(&new) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never followed");
        let _ = tokio::time::timeout(Duration::from_millis(100), seen.changed()).await;
    }
    assert!(saw_both, "the overlap with both roots was skipped");
    assert_eq!(other.signer().fingerprint, new);
    assert!(seen.borrow().signer_generation > generation);
    assert_eq!(other.rotation_status().phase, "done");
    follower.abort();
    driver.abort();
}
