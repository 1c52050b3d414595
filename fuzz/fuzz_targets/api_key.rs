//! API keys as a client presents them. The first byte picks what the rest is:
//! - even: the key's text, checked as the gateway checks a client's key;
//! - odd: a key's claims (JSON), signed with this target's key-signing key first, so that the
//!   fuzzer reaches past the signature. Such a key is accepted exactly when its claims are
//!   well-formed, unexpired and not revoked, and then stands for the account they name.
//!
//! Nothing may panic, and every refusal is `unauthenticated`.
#![no_main]

use std::sync::LazyLock;

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ganglion::credentials::api_keys::{
    KEY_PREFIX, KeyClaims, KeyVerifier, MAX_KEY_LEN, RevokedKeys,
};
use ganglion::request::authenticate::{Auth, client_account};
use ganglion_client::protocol::ErrorCode;

/// A fixed time (2026-11-28), so that expiry is reproducible.
const NOW: u64 = 1_795_000_000;
/// A key id the target's cluster revoked.
const REVOKED: &str = "00000000000000ff";

static SIGNER: LazyLock<Ed25519KeyPair> = LazyLock::new(|| {
    Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a fixed signing key")
});

static AUTH: LazyLock<Auth> = LazyLock::new(|| {
    use aws_lc_rs::signature::KeyPair;
    Auth {
        verifier: Some(KeyVerifier::new(SIGNER.public_key().as_ref().to_vec())),
        revoked: RevokedKeys::from_ids([REVOKED.to_owned()]),
        allow_anonymous: false,
    }
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let key = String::from_utf8_lossy(rest).into_owned();
        if let Err(e) = client_account(&AUTH, Some(key), NOW) {
            assert_eq!(e.code, ErrorCode::Unauthenticated);
        }
        return;
    }
    let key = format!(
        "{KEY_PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(rest),
        URL_SAFE_NO_PAD.encode(SIGNER.sign(rest).as_ref())
    );
    let claims = serde_json::from_slice::<KeyClaims>(rest).ok();
    let usable = claims.as_ref().filter(|c| {
        key.len() <= MAX_KEY_LEN && c.expires.is_none_or(|e| NOW < e) && c.kid != REVOKED
    });
    match (client_account(&AUTH, Some(key), NOW), usable) {
        (Ok(account), Some(claims)) => {
            assert_eq!(account.name, claims.account);
            assert_eq!(account.key_id, claims.kid);
        }
        (Err(e), None) => assert_eq!(e.code, ErrorCode::Unauthenticated),
        (got, expected) => panic!("accepted {got:?}, expected {expected:?}"),
    }
});
