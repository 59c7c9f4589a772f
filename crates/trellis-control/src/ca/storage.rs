//! The CA's state in the store, beside the resources:
//!
//! | key | value |
//! | --- | --- |
//! | `/ca/signer` | `{"certChain": PEM, "key": PEM}`: the CA generated here |
//! | `/ca/bundle` | PEM: the roots proxies trust (two during a rotation) |
//! | `/ca/token-key` | hex: the key bootstrap tokens are signed with |
//! | `/ca/rotation` | JSON: a trust-anchor rotation's state and next root ([`super::rotate`]) |
//!
//! The signer, the token key and the rotation are [`Secrets`]: sealed with the
//! operator's key when one is given, else in plaintext, where whoever reads the store
//! can mint identities. `docs/identity.md` has the threat model.
//!
//! First writes use `Expect::Absent`, so replicas starting together on one store agree
//! on one CA: the loser of the race reads the winner's.

use serde::{Deserialize, Serialize};
use trellis_identity::token::TokenKey;
use trellis_identity::{CertificateAuthority, TrustBundle};

use super::rotate::StoredRotation;
use super::{CaError, CaSettings};
use crate::secrets::{SecretError, Secrets};
use crate::store::{Expect, Store, StoreError};

/// Where the CA's keys live; other control planes on the store watch it.
pub(super) const PREFIX: &str = "/ca/";
const SIGNER: &str = "/ca/signer";
const BUNDLE: &str = "/ca/bundle";
const TOKEN_KEY: &str = "/ca/token-key";
pub(super) const ROTATION: &str = "/ca/rotation";
/// The keys holding secrets, sealed at rest when the operator gives a key.
pub(super) const SECRETS: [&str; 3] = [SIGNER, TOKEN_KEY, ROTATION];

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredSigner {
    cert_chain: String,
    key: String,
}

/// The signer and bundle kept in the store, made on first start.
pub(super) async fn load_or_create(
    store: &dyn Store,
    secrets: &Secrets,
    settings: &CaSettings,
) -> Result<(CertificateAuthority, TrustBundle), CaError> {
    let signer = match load_signer(secrets).await? {
        Some(signer) => signer,
        None => {
            let root =
                CertificateAuthority::generate_root(&settings.trust_domain, settings.root_validity)
                    .map_err(|e| CaError::Create(e.to_string()))?;
            match save_signer(secrets, &root, Expect::Absent).await {
                Ok(()) => root,
                // Another replica made one first.
                Err(CaError::Secret(SecretError::Store(StoreError::Conflict { .. }))) => {
                    load_signer(secrets)
                        .await?
                        .ok_or_else(|| CaError::Stored("the signer vanished".into()))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    let bundle = match load_bundle(store).await? {
        Some(bundle) => bundle,
        None => {
            let bundle = signer.trust_bundle();
            let _ = save_bundle(store, &bundle, Expect::Absent).await;
            load_bundle(store).await?.unwrap_or(bundle)
        }
    };
    Ok((signer, bundle))
}

pub(super) async fn load_signer(
    secrets: &Secrets,
) -> Result<Option<CertificateAuthority>, CaError> {
    let Some((value, _)) = secrets.get(SIGNER).await? else {
        return Ok(None);
    };
    let stored: StoredSigner =
        serde_json::from_slice(&value).map_err(|e| CaError::Stored(format!("{SIGNER}: {e}")))?;
    stored.open(SIGNER).map(Some)
}

pub(super) async fn save_signer(
    secrets: &Secrets,
    signer: &CertificateAuthority,
    expect: Expect,
) -> Result<(), CaError> {
    let value = serde_json::to_vec(&StoredSigner::of(signer))
        .map_err(|e| CaError::Stored(e.to_string()))?;
    secrets.put(SIGNER, &value, expect).await?;
    Ok(())
}

impl StoredSigner {
    pub(super) fn of(signer: &CertificateAuthority) -> Self {
        let pem = signer.to_pem();
        Self {
            cert_chain: pem.cert_chain.clone(),
            key: pem.key.clone(),
        }
    }

    /// The CA it holds; `name` says where it was read, for errors.
    pub(super) fn open(&self, name: &str) -> Result<CertificateAuthority, CaError> {
        CertificateAuthority::from_pem(&self.cert_chain, &self.key)
            .map_err(|e| CaError::Stored(format!("{name}: {e}")))
    }
}

pub(super) async fn load_rotation(
    secrets: &Secrets,
) -> Result<Option<(StoredRotation, u64)>, CaError> {
    let Some((value, revision)) = secrets.get(ROTATION).await? else {
        return Ok(None);
    };
    let record =
        serde_json::from_slice(&value).map_err(|e| CaError::Stored(format!("{ROTATION}: {e}")))?;
    Ok(Some((record, revision)))
}

pub(super) async fn save_rotation(
    secrets: &Secrets,
    record: &StoredRotation,
    expect: Expect,
) -> Result<(), CaError> {
    let value = serde_json::to_vec(record).map_err(|e| CaError::Stored(e.to_string()))?;
    secrets.put(ROTATION, &value, expect).await?;
    Ok(())
}

pub(super) async fn load_bundle(store: &dyn Store) -> Result<Option<TrustBundle>, CaError> {
    let Some(entry) = store.get(BUNDLE).await? else {
        return Ok(None);
    };
    let pem =
        std::str::from_utf8(&entry.value).map_err(|e| CaError::Stored(format!("{BUNDLE}: {e}")))?;
    TrustBundle::from_pem(pem)
        .map(Some)
        .map_err(|e| CaError::Stored(format!("{BUNDLE}: {e}")))
}

pub(super) async fn save_bundle(
    store: &dyn Store,
    bundle: &TrustBundle,
    expect: Expect,
) -> Result<(), CaError> {
    store
        .put(BUNDLE, bundle.to_pem().into_bytes(), expect)
        .await?;
    Ok(())
}

pub(super) async fn load_or_create_token_key(secrets: &Secrets) -> Result<TokenKey, CaError> {
    loop {
        if let Some((value, _)) = secrets.get(TOKEN_KEY).await? {
            let bytes = std::str::from_utf8(&value)
                .ok()
                .and_then(|text| trellis_identity::hex::decode(text.trim()))
                .ok_or_else(|| CaError::Stored(format!("{TOKEN_KEY}: not hexadecimal")))?;
            return TokenKey::from_bytes(&bytes)
                .map_err(|e| CaError::Stored(format!("{TOKEN_KEY}: {e}")));
        }
        let key = TokenKey::generate().map_err(|e| CaError::Create(e.to_string()))?;
        let hex = trellis_identity::hex::encode(key.as_bytes());
        match secrets.put(TOKEN_KEY, hex.as_bytes(), Expect::Absent).await {
            Ok(_) => return Ok(key),
            // Another replica wrote one first: read it.
            Err(SecretError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
