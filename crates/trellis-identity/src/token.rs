//! Bootstrap tokens: short-lived, HMAC-SHA256-signed statements that the bearer may
//! obtain a certificate for one SPIFFE ID. The control plane issues one per
//! workload (`trellis token create`), the proxy sends it with its first CSR, and the
//! CA signs only a CSR for the identity in the token.
//!
//! Wire form: `v1.<payload>.<tag>`, both parts base64url without padding. The payload
//! is `issued_at` and `expires_at` (big-endian u64 Unix seconds), a 16-byte random
//! nonce, then the SPIFFE ID in UTF-8. The tag is HMAC-SHA256 over the text
//! `v1.<payload>`, so the version cannot be swapped without breaking it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::TokenError;
use crate::spiffe::SpiffeId;

const VERSION: &str = "v1";
const MIN_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 8 + NONCE_LEN;
/// Far above any real token (a 2048-byte SPIFFE ID encodes to under 3 KiB); refusing
/// longer input first bounds the work done for garbage.
const MAX_TOKEN_LEN: usize = 4096;
/// A token issued by a control plane whose clock is slightly ahead is still accepted.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The secret key tokens are signed with. `Debug` does not print it.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
    bytes: Vec<u8>,
}

// === impl TokenKey ===

impl TokenKey {
    /// A fresh 32-byte key from the system random source.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = vec![0u8; MIN_KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenError::Random)?;
        Self::from_bytes(&bytes)
    }

    /// A key from stored bytes; at least 32 are required.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(TokenError::ShortKey { len: bytes.len() });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            bytes: bytes.to_vec(),
        })
    }

    /// The key bytes, for storing.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// What a verified token states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The only identity the bearer may obtain a certificate for.
    pub id: SpiffeId,
    /// When the token was issued (whole seconds).
    pub issued_at: SystemTime,
    /// When it stops being accepted (whole seconds).
    pub expires_at: SystemTime,
    /// Random per token, lowercase hex; a control plane that wants single-use tokens
    /// remembers the nonces it has accepted until they expire.
    pub nonce: String,
}

/// Issues a token for `id`, valid for `ttl` from now (at least 1 s).
pub fn issue(key: &TokenKey, id: &SpiffeId, ttl: Duration) -> Result<String, TokenError> {
    issue_at(key, id, SystemTime::now(), ttl)
}

/// [`issue`] as if the current time were `now`.
pub fn issue_at(
    key: &TokenKey,
    id: &SpiffeId,
    now: SystemTime,
    ttl: Duration,
) -> Result<String, TokenError> {
    if ttl < Duration::from_secs(1) {
        return Err(TokenError::InvalidTtl);
    }
    let issued_at = unix_secs(now);
    let expires_at = issued_at
        .checked_add(ttl.as_secs())
        .ok_or(TokenError::InvalidTtl)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| TokenError::Random)?;

    let id = id.to_string();
    let mut payload = Vec::with_capacity(HEADER_LEN + id.len());
    payload.extend_from_slice(&issued_at.to_be_bytes());
    payload.extend_from_slice(&expires_at.to_be_bytes());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(id.as_bytes());

    let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(&payload));
    let tag = hmac::sign(&key.key, signed.as_bytes());
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
}

/// Checks a token's signature and lifetime at time `now` and returns what it states.
///
/// Nothing in the payload is trusted before the signature verifies; the comparison
/// of tags is constant-time (ring's `hmac::verify`).
pub fn verify(key: &TokenKey, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
    let malformed = |reason| TokenError::Malformed { reason };
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("longer than 4096 characters"));
    }
    // Tokens pasted from a terminal or read from a file often end in a newline.
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(version), Some(payload_b64), Some(tag_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    if version != VERSION {
        return Err(malformed("unknown version, expected \"v1\""));
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag_b64)
        .map_err(|_| malformed("signature is not base64url"))?;
    let signed_len = version.len() + 1 + payload_b64.len();
    let signed = &token[..signed_len];
    hmac::verify(&key.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| malformed("payload is not base64url"))?;
    if payload.len() <= HEADER_LEN {
        return Err(malformed("payload too short"));
    }
    let (header, id) = payload.split_at(HEADER_LEN);
    let (issued_at, rest) = header.split_at(8);
    let (expires_at, nonce) = rest.split_at(8);
    let secs = |b: &[u8]| -> Result<SystemTime, TokenError> {
        let arr: [u8; 8] = b.try_into().map_err(|_| malformed("bad timestamp"))?;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(u64::from_be_bytes(arr)))
            .ok_or(malformed("timestamp out of range"))
    };
    let issued_at = secs(issued_at)?;
    let expires_at = secs(expires_at)?;
    let id: SpiffeId = std::str::from_utf8(id)
        .map_err(|_| malformed("identity is not UTF-8"))?
        .parse()
        .map_err(|_| malformed("identity is not a SPIFFE ID"))?;

    if now >= expires_at {
        return Err(TokenError::Expired { id, expires_at });
    }
    if issued_at > now + MAX_CLOCK_SKEW {
        return Err(TokenError::NotYetValid { id, issued_at });
    }
    Ok(Claims {
        id,
        issued_at,
        expires_at,
        nonce: crate::x509::hex(nonce),
    })
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SpiffeId {
        SpiffeId::in_default_domain("shop", "cart").expect("id")
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn valid_token_round_trips() {
        let key = TokenKey::generate().expect("key");
        let token = issue_at(&key, &id(), at(1_000), Duration::from_secs(600)).expect("issued");
        assert!(token.starts_with("v1."));
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
        let claims = verify(&key, &token, at(1_100)).expect("valid");
        assert_eq!(claims.id, id());
        assert_eq!(claims.issued_at, at(1_000));
        assert_eq!(claims.expires_at, at(1_600));
        assert_eq!(claims.nonce.len(), 32);

        let again = issue_at(&key, &id(), at(1_000), Duration::from_secs(600)).expect("issued");
        assert_ne!(token, again, "nonce makes tokens distinct");

        let now = issue(&key, &id(), Duration::from_secs(60)).expect("issued");
        assert_eq!(
            verify(&key, &now, SystemTime::now()).expect("valid").id,
            id()
        );
    }

    #[test]
    fn tampered_token_is_refused() {
        let key = TokenKey::generate().expect("key");
        let token = issue_at(&key, &id(), at(1_000), Duration::from_secs(600)).expect("issued");
        let (signed, tag) = token.rsplit_once('.').expect("three parts");

        // Same layout, another identity, original tag.
        let other = SpiffeId::in_default_domain("shop", "admin").expect("id");
        let forged = issue_at(&key, &other, at(1_000), Duration::from_secs(600)).expect("issued");
        let (forged_signed, _) = forged.rsplit_once('.').expect("three parts");
        assert_eq!(
            verify(&key, &format!("{forged_signed}.{tag}"), at(1_100)),
            Err(TokenError::BadSignature)
        );

        // Every single-character change in the signed part breaks the tag (or the
        // format).
        for i in 3..signed.len() {
            let mut bytes = signed.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = format!("{}.{tag}", String::from_utf8(bytes).expect("ascii"));
            let err = verify(&key, &altered, at(1_100)).expect_err("altered");
            assert!(
                matches!(err, TokenError::BadSignature | TokenError::Malformed { .. }),
                "{err:?}"
            );
        }

        let version_swapped = format!("v2{}", &token[2..]);
        assert!(matches!(
            verify(&key, &version_swapped, at(1_100)),
            Err(TokenError::Malformed { .. })
        ));
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let key = TokenKey::generate().expect("key");
        let token = issue_at(&key, &id(), at(1_000), Duration::from_secs(600)).expect("issued");
        assert_eq!(
            verify(&key, &token, at(1_600)),
            Err(TokenError::Expired {
                id: id(),
                expires_at: at(1_600)
            })
        );
        assert!(verify(&key, &token, at(1_599)).is_ok());
        assert!(verify(&key, &token, at(1_000 - 60)).is_ok(), "within skew");
        assert!(matches!(
            verify(&key, &token, at(1_000 - 61)),
            Err(TokenError::NotYetValid { .. })
        ));
        let err = verify(&key, &token, at(5_000)).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn wrong_key_is_refused() {
        let key = TokenKey::generate().expect("key");
        let other = TokenKey::generate().expect("key");
        let token = issue_at(&key, &id(), at(1_000), Duration::from_secs(600)).expect("issued");
        assert_eq!(
            verify(&other, &token, at(1_100)),
            Err(TokenError::BadSignature)
        );

        let restored = TokenKey::from_bytes(key.as_bytes()).expect("same key");
        assert!(verify(&restored, &token, at(1_100)).is_ok());
        assert_eq!(format!("{key:?}"), "TokenKey(<redacted>)");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let key = TokenKey::generate().expect("key");
        let long = "a".repeat(5000);
        for bad in [
            "",
            "v1",
            "v1.abc",
            "v1.a.b.c",
            "v1.abc.!!!",
            "x.y.z",
            long.as_str(),
        ] {
            let err = verify(&key, bad, at(0)).expect_err("malformed");
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn key_and_ttl_rules() {
        assert_eq!(
            TokenKey::from_bytes(&[0u8; 16]).map(|_| ()),
            Err(TokenError::ShortKey { len: 16 })
        );
        let key = TokenKey::generate().expect("key");
        assert_eq!(
            issue(&key, &id(), Duration::from_millis(500)),
            Err(TokenError::InvalidTtl)
        );
    }
}
