//! API keys: signed claims that every node verifies with the cluster's public key-signing key
//! alone, with no database and no round trip.
//!
//! A key reads `gnk1.<claims>.<signature>`: the claims (key id, account, plan, daily limit,
//! expiry) as JSON, and an Ed25519 signature over the claims' bytes, both base64url without
//! padding. Signing and verification are aws-lc-rs's (the TLS stack's own crypto library).
//! Whether a key is revoked is a set of key ids the caller holds ([`RevokedKeys`]); the clock
//! is a parameter.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Prefix of every key (and its format version).
pub const KEY_PREFIX: &str = "gnk1";
/// Longest key accepted: anything longer is malformed before any decoding.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest account name.
pub const MAX_ACCOUNT_LEN: usize = ganglion_client::protocol::MAX_ACCOUNT_NAME_BYTES;
/// Length of a key id (hex).
pub const KEY_ID_LEN: usize = 16;

pub use super::revoked::RevokedKeys;
pub use ganglion_client::protocol::Plan;

/// What a key says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaims {
    /// Key id: names the key in logs, ledgers and revocations.
    pub kid: String,
    /// The account it bills.
    pub account: String,
    /// The account's plan.
    pub plan: Plan,
    /// Most Neurons the account may use a day, if limited below its plan.
    pub daily_limit: Option<u64>,
    /// Unix time (seconds) after which the key is refused, if any.
    pub expires: Option<u64>,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a key of this format, or its parts do not decode.
    #[error("malformed API key")]
    Malformed,
    /// The signature does not verify with this cluster's key.
    #[error("API key signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("API key expired")]
    Expired,
    /// Revoked.
    #[error("API key revoked")]
    Revoked,
    /// The claims cannot be signed (an invalid account name).
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// The key-signing key is unusable.
    #[error("key-signing key unusable: {0}")]
    SigningKey(String),
}

/// The private half: signs keys (held in the cluster folder only).
pub struct KeySigner(Ed25519KeyPair);

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySigner(..)")
    }
}

impl KeySigner {
    /// A fresh key pair, and its PKCS#8 document to store.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| KeyError::SigningKey(e.to_string()))?;
        let pkcs8 = document.as_ref().to_vec();
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The pair from a stored PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(Self)
            .map_err(|e| KeyError::SigningKey(e.to_string()))
    }

    /// The public half's raw bytes.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    /// A key for `claims`.
    pub fn sign(&self, claims: &KeyClaims) -> Result<String, KeyError> {
        if !ganglion_client::protocol::account_name_ok(&claims.account) {
            return Err(KeyError::InvalidClaims(format!(
                "account names are 1 to {MAX_ACCOUNT_LEN} bytes without control characters"
            )));
        }
        let payload =
            serde_json::to_vec(claims).map_err(|e| KeyError::InvalidClaims(e.to_string()))?;
        let signature = self.0.sign(&payload);
        Ok(format!(
            "{KEY_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Keys whose signature a verifier remembers having checked.
const VERIFIED_MEMORY: usize = 4096;

/// The public half: verifies keys (every node holds it). A signature, once checked, is
/// remembered (by the key's SHA-256, never the key itself), as it cannot change: a client's
/// every request then costs a hash, not an Ed25519 verification. Expiry and revocation are
/// checked on every use.
#[derive(Clone)]
pub struct KeyVerifier {
    public_key: Vec<u8>,
    verified: Arc<std::sync::Mutex<quick_cache::unsync::Cache<[u8; 32], KeyClaims>>>,
}

impl std::fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVerifier").finish_non_exhaustive()
    }
}

impl KeyVerifier {
    /// A verifier for the raw public key bytes.
    pub fn new(public_key: Vec<u8>) -> Self {
        Self {
            public_key,
            verified: Arc::new(std::sync::Mutex::new(quick_cache::unsync::Cache::new(
                VERIFIED_MEMORY,
            ))),
        }
    }

    /// The claims of `key` if it is well-formed, signed by this cluster, unexpired at `now`
    /// (Unix seconds) and not in `revoked`.
    pub fn verify(
        &self,
        key: &str,
        now: u64,
        revoked: &RevokedKeys,
    ) -> Result<KeyClaims, KeyError> {
        let claims = self.verify_signature(key)?;
        if claims.expires.is_some_and(|expires| now >= expires) {
            return Err(KeyError::Expired);
        }
        if revoked.contains(&claims.kid) {
            return Err(KeyError::Revoked);
        }
        Ok(claims)
    }

    /// The claims of `key` if it is well-formed and signed by this cluster (whatever its
    /// expiry or revocation).
    pub fn verify_signature(&self, key: &str) -> Result<KeyClaims, KeyError> {
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::Malformed);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        let memory = || {
            self.verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if let Some(claims) = memory().get(&digest) {
            return Ok(claims.clone());
        }
        let claims = self.check_signature(key)?;
        memory().insert(digest, claims.clone());
        Ok(claims)
    }

    fn check_signature(&self, key: &str) -> Result<KeyClaims, KeyError> {
        let mut parts = key.split('.');
        let (Some(KEY_PREFIX), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Malformed);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| KeyError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| KeyError::Malformed)?;
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(&payload, &signature)
            .map_err(|_| KeyError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|_| KeyError::Malformed)
    }
}

/// A fresh random key id.
pub fn new_key_id() -> String {
    let bytes: [u8; KEY_ID_LEN / 2] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `kid` is a key id as keys carry them (16 lowercase hex digits).
pub fn is_key_id(kid: &str) -> bool {
    kid != "-" && ganglion_client::protocol::key_id_ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> KeyClaims {
        KeyClaims {
            kid: new_key_id(),
            account: "acme".into(),
            plan: Plan::Free,
            daily_limit: Some(500),
            expires: Some(2_000),
        }
    }

    #[test]
    fn a_signed_key_verifies_with_the_public_half_only() {
        let (signer, pkcs8) = KeySigner::generate().expect("generate");
        let verifier = KeyVerifier::new(signer.public_key());
        let key = signer.sign(&claims()).expect("sign");
        assert!(key.starts_with("gnk1."));
        let got = verifier
            .verify(&key, 1_000, &RevokedKeys::default())
            .expect("valid");
        assert_eq!(got.account, "acme");
        // The stored document gives the same signer.
        let again = KeySigner::from_pkcs8(&pkcs8).expect("reload");
        assert_eq!(again.public_key(), signer.public_key());
    }

    #[test]
    fn expired_revoked_forged_and_malformed_keys_are_refused() {
        let (signer, _) = KeySigner::generate().expect("generate");
        let verifier = KeyVerifier::new(signer.public_key());
        let c = claims();
        let key = signer.sign(&c).expect("sign");
        let none = RevokedKeys::default();
        assert!(verifier.verify(&key, 1_000, &none).is_ok());
        // A remembered signature still expires and can still be revoked.
        assert_eq!(verifier.verify(&key, 2_000, &none), Err(KeyError::Expired));
        let revoked = RevokedKeys::default();
        let added = revoked.add([c.kid.clone(), "not a kid".into()]);
        assert_eq!(added, vec![c.kid.clone()]);
        assert_eq!(
            verifier.verify(&key, 1_000, &revoked),
            Err(KeyError::Revoked)
        );

        // Another cluster's signer, and claims edited after signing.
        let (other, _) = KeySigner::generate().expect("generate");
        let foreign = other.sign(&c).expect("sign");
        assert_eq!(
            verifier.verify(&foreign, 1_000, &none),
            Err(KeyError::BadSignature)
        );
        let mut parts: Vec<&str> = key.split('.').collect();
        let mut edited = c.clone();
        edited.plan = Plan::Paid;
        let edited_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).expect("json"));
        parts[1] = &edited_payload;
        assert_eq!(
            verifier.verify(&parts.join("."), 1_000, &none),
            Err(KeyError::BadSignature)
        );

        for bad in [
            "",
            "gnk1",
            "gnk1.a.b.c",
            "xxx.a.b",
            "gnk1.!!.!!",
            &"a".repeat(MAX_KEY_LEN + 1),
        ] {
            assert_eq!(
                verifier.verify(bad, 0, &none),
                Err(KeyError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn account_names_are_bounded() {
        let (signer, _) = KeySigner::generate().expect("generate");
        let mut c = claims();
        c.account = "x".repeat(MAX_ACCOUNT_LEN + 1);
        assert!(matches!(signer.sign(&c), Err(KeyError::InvalidClaims(_))));
        c.account = String::new();
        assert!(matches!(signer.sign(&c), Err(KeyError::InvalidClaims(_))));
    }
}
