//! Secrets encrypted at rest with a key the operator keeps: the control plane's CA key,
//! bootstrap-token key and admin token in a shared store (etcd), so that reading the
//! store (a backup, a snapshot, an etcd user with read access) does not give them away.
//!
//! A sealed value is `sealed:v1:` then base64 of a 12-byte random nonce and the
//! AES-256-GCM ciphertext with its tag. The name of the value (its store key) is the
//! additional authenticated data, so a sealed value moved to another key does not open.
//! The operator's key is 32 bytes written as 64 hexadecimal digits.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// What starts every sealed value.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Why a key could not be read or a value not sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("an encryption key is 64 hexadecimal digits (32 bytes): {0}")]
    Key(String),
    #[error("{name} is encrypted, and cannot be decrypted with this key (a different key, or the value was altered)")]
    WrongKey { name: String },
    #[error("{name} is not a sealed value: {why}")]
    Malformed { name: String, why: String },
    #[error("the system random source failed")]
    Random,
}

/// The operator's key for values at rest.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// Whether `value` is sealed (it may still need a key to open).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(SEALED_PREFIX.as_bytes())
}

impl SealingKey {
    /// Reads a key written as 64 hexadecimal digits; surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(SealError::Key(format!("got {} characters", text.len())));
        }
        let bytes = crate::hex::decode(text)
            .ok_or_else(|| SealError::Key("found a character that is not hexadecimal".into()))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SealError::Key("not a valid AES-256 key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A new random key, as 64 hexadecimal digits.
    pub fn generate_hex() -> Result<String, SealError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(crate::hex::encode(&bytes))
    }

    /// Encrypts `plaintext`, bound to `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Random)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(blob)).into_bytes())
    }

    /// Decrypts a value [`SealingKey::seal`] made for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let malformed = |why: &str| SealError::Malformed {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX.as_bytes())
            .ok_or_else(|| malformed("no sealed:v1: prefix"))?;
        let mut blob = STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| malformed("not base64"))?;
        if blob.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(malformed("too short"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| SealError::WrongKey {
                name: name.to_owned(),
            })?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_hex(&SealingKey::generate_hex().expect("random")).expect("key")
    }

    #[test]
    fn seals_and_opens_bound_to_the_name() {
        let key = key();
        let sealed = key.seal("/ca/signer", b"secret").expect("seal");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open("/ca/signer", &sealed).expect("open"), b"secret");
        // Another name, another key, or a flipped byte: refused.
        assert!(matches!(
            key.open("/ca/token-key", &sealed),
            Err(SealError::WrongKey { .. })
        ));
        assert!(matches!(
            self::key().open("/ca/signer", &sealed),
            Err(SealError::WrongKey { .. })
        ));
        let mut altered = sealed.clone();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(key.open("/ca/signer", &altered).is_err());
        // Each seal has its own nonce.
        assert_ne!(sealed, key.seal("/ca/signer", b"secret").expect("seal"));
    }

    #[test]
    fn bad_keys_and_values_are_refused_clearly() {
        assert!(SealingKey::from_hex("abc").is_err());
        assert!(SealingKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SealingKey::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
        let key = key();
        assert!(matches!(
            key.open("k", b"plain"),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            key.open("k", b"sealed:v1:!!"),
            Err(SealError::Malformed { .. })
        ));
    }
}
