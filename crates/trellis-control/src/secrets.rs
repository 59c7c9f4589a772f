//! Secrets in the store: the CA's key, the bootstrap-token key, a rotation's next root
//! key and the admin token. With the operator's key (`--ca-encryption-key`) they are
//! written sealed ([`trellis_identity::seal`]), and plaintext ones found at start are
//! sealed in place; without it they are written in plaintext, and a sealed one cannot
//! be read, which stops the control plane with a clear error rather than making a new
//! CA. `docs/identity.md` has the threat model.

use std::sync::Arc;

use trellis_identity::seal::{is_sealed, SealError, SealingKey};

use crate::store::{Expect, Store, StoreError};

/// Why a secret could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{name} in the store is encrypted: start the control plane with --ca-encryption-key FILE holding the key it was encrypted with")]
    NoKey { name: String },
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Reads and writes secrets, sealing them when a key is given.
#[derive(Clone)]
pub struct Secrets {
    store: Arc<dyn Store>,
    key: Option<Arc<SealingKey>>,
}

impl Secrets {
    pub fn new(store: Arc<dyn Store>, key: Option<Arc<SealingKey>>) -> Self {
        Self { store, key }
    }

    /// The secret at `name`, opened, with the entry's revision.
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, SecretError> {
        let Some(entry) = self.store.get(name).await? else {
            return Ok(None);
        };
        Ok(Some((self.open(name, &entry.value)?, entry.revision)))
    }

    /// Writes `plaintext` at `name`, sealed when there is a key.
    pub async fn put(
        &self,
        name: &str,
        plaintext: &[u8],
        expect: Expect,
    ) -> Result<u64, SecretError> {
        let value = match &self.key {
            Some(key) => key.seal(name, plaintext)?,
            None => plaintext.to_vec(),
        };
        Ok(self.store.put(name, value, expect).await?)
    }

    /// Seals in place those of `names` still in plaintext, when there is a key.
    /// Returns how many it sealed.
    pub async fn seal_at_rest(&self, names: &[&str]) -> Result<usize, SecretError> {
        let Some(key) = &self.key else {
            return Ok(0);
        };
        let mut sealed = 0;
        for name in names {
            let Some(entry) = self.store.get(name).await? else {
                continue;
            };
            if is_sealed(&entry.value) {
                // Fails here, at start, if it was sealed with another key.
                key.open(name, &entry.value)?;
                continue;
            }
            let value = key.seal(name, &entry.value)?;
            match self
                .store
                .put(name, value, Expect::Revision(entry.revision))
                .await
            {
                Ok(_) => sealed += 1,
                // Another replica sealed it (or changed it) first.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sealed)
    }

    fn open(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, SecretError> {
        if !is_sealed(value) {
            return Ok(value.to_vec());
        }
        match &self.key {
            Some(key) => Ok(key.open(name, value)?),
            None => Err(SecretError::NoKey {
                name: name.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn key() -> Arc<SealingKey> {
        let hex = SealingKey::generate_hex().expect("random");
        Arc::new(SealingKey::from_hex(&hex).expect("key"))
    }

    #[tokio::test]
    async fn sealed_with_a_key_and_refused_without_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let plain = Secrets::new(store.clone(), None);
        plain.put("/s/a", b"alpha", Expect::Any).await.expect("put");
        let key = key();
        let sealing = Secrets::new(store.clone(), Some(key.clone()));
        // Plaintext written before the key was given is sealed in place.
        assert_eq!(
            sealing
                .seal_at_rest(&["/s/a", "/s/missing"])
                .await
                .expect("seal"),
            1
        );
        let raw = store.get("/s/a").await.expect("get").expect("present");
        assert!(is_sealed(&raw.value));
        assert_eq!(
            sealing.get("/s/a").await.expect("get").expect("present").0,
            b"alpha"
        );
        assert!(matches!(
            plain.get("/s/a").await,
            Err(SecretError::NoKey { .. })
        ));
        let other = Secrets::new(store.clone(), Some(self::key()));
        assert!(matches!(other.get("/s/a").await, Err(SecretError::Seal(_))));
        assert!(other.seal_at_rest(&["/s/a"]).await.is_err());
        // Sealing again changes nothing.
        assert_eq!(sealing.seal_at_rest(&["/s/a"]).await.expect("seal"), 0);
    }
}
