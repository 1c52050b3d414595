//! A request's cache key, and whether it has one at all.
//!
//! The key material is a canonical encoding of (account, model, input, every parameter that
//! changes the output); the key is its SHA-256. Two requests that must give the same answer get
//! the same material: an unset `max_tokens` is the model's default, greedy decoding ignores
//! seed and top-p, and embedding models ignore generation parameters. A custom key replaces
//! input and parameters, inside the same account and model. The material is kept beside every
//! entry and compared on every lookup, so an entry is never served for another request, even
//! if two keys' hashes met.
//!
//! The material ends with an HMAC of the rest under a secret derived from the caller's API key
//! ([`CacheSecret`]), which never leaves the entry node. A member that knows an account's name
//! but not its key cannot build the material that account's requests look up, so it can neither
//! read nor fill their entries; and a shard takes an entry's owner from the material itself
//! ([`head`]), never from the word of whoever fills it. Entries are therefore per API key, as
//! AI Gateway keys its cache per `Authorization` header.

use aws_lc_rs::hmac;
use ganglion_client::protocol::{Input, Request};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Tags the encoding, so that a change of it never matches old material.
const VERSION: &str = "ganglion-cache/2";
/// Length of the HMAC that ends every material.
pub const PROOF_LEN: usize = 32;

/// A secret derived from an API key: only a holder of the key can build the cache material of
/// its requests. Kept on the entry node for one request; never on the wire.
#[derive(Clone)]
pub struct CacheSecret([u8; 32]);

impl std::fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheSecret(..)")
    }
}

impl CacheSecret {
    /// The secret of the API key `key`.
    pub fn of_api_key(key: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"ganglion-cache-secret/1\0");
        hash.update(key.as_bytes());
        Self(hash.finalize().into())
    }
}

/// Whose an entry is, as the front of its material says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Head {
    version: String,
    /// The account whose request the material was built for.
    pub account: String,
    /// The model.
    pub model: String,
}

/// The owner named at the front of `material`, if it is well-formed material of this version
/// (decoding is bounded: a shard calls this on a peer's bytes).
pub fn head(material: &[u8]) -> Option<Head> {
    let config = bincode::config::standard().with_limit::<1024>();
    let (head, used): (Head, usize) = bincode::serde::decode_from_slice(material, config).ok()?;
    let ok = head.version == VERSION
        && ganglion_client::protocol::account_name_ok(&head.account)
        && !head.model.is_empty()
        && head.model.len() <= ganglion_client::protocol::MAX_MODEL_ID_BYTES
        && used + PROOF_LEN <= material.len();
    ok.then_some(head)
}

/// A request's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// SHA-256 of the material: where the entry lives.
    pub hash: [u8; 32],
    /// The canonical encoding the hash was taken of, compared in full on lookup.
    pub material: Vec<u8>,
}

/// Why a request is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// The request asked to skip the cache.
    Skipped,
    /// Sampled without a seed: two runs may differ, so neither answer stands for the other.
    NotDeterministic,
}

/// The owner first (what [`head`] reads), then what the answer depends on.
#[derive(Serialize)]
struct Material<'a> {
    version: &'static str,
    account: &'a str,
    model: &'a str,
    body: Body<'a>,
}

#[derive(Serialize)]
enum Body<'a> {
    Request {
        input: &'a Input,
        generation: Option<Generation<'a>>,
    },
    Custom {
        key: &'a str,
    },
}

/// The parameters that change a text generation's output, canonically.
#[derive(Serialize)]
struct Generation<'a> {
    max_tokens: u32,
    /// `None` for greedy decoding; else temperature and top-p (as bits) and the seed.
    sampling: Option<(u32, Option<u32>, u64)>,
    stop: &'a [String],
}

/// The cache key of `request` on behalf of `account`, whose API key gave `secret`;
/// `default_max_tokens` is what the model generates when the request does not say.
pub fn key_of(
    account: &str,
    secret: &CacheSecret,
    request: &Request,
    default_max_tokens: u32,
) -> Result<CacheKey, NoKey> {
    if request.cache.skip {
        return Err(NoKey::Skipped);
    }
    let body = match &request.cache.key {
        Some(key) => Body::Custom { key },
        None => Body::Request {
            input: &request.input,
            generation: match &request.input {
                Input::Chat(_) => Some(generation(request, default_max_tokens)?),
                _ => None,
            },
        },
    };
    let material = Material {
        version: VERSION,
        account,
        model: &request.model,
        body,
    };
    let mut material = bincode::serde::encode_to_vec(&material, bincode::config::standard())
        .expect("encoding to a vector cannot fail");
    let proof = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret.0), &material);
    material.extend_from_slice(proof.as_ref());
    Ok(CacheKey {
        hash: Sha256::digest(&material).into(),
        material,
    })
}

fn generation(request: &Request, default_max_tokens: u32) -> Result<Generation<'_>, NoKey> {
    let p = &request.parameters;
    let sampling = match p.temperature.filter(|t| *t > 0.0) {
        None => None,
        Some(t) => {
            let seed = p.seed.ok_or(NoKey::NotDeterministic)?;
            Some((t.to_bits(), p.top_p.map(f32::to_bits), seed))
        }
    };
    Ok(Generation {
        max_tokens: p.max_tokens.unwrap_or(default_max_tokens),
        sampling,
        stop: &p.stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_client::protocol::{ChatMessage, Role};

    fn chat(text: &str) -> Request {
        Request::new(
            "m",
            Input::Chat(vec![ChatMessage {
                role: Role::User,
                content: text.into(),
            }]),
        )
    }

    fn secret() -> CacheSecret {
        CacheSecret::of_api_key("gnk1.k.s")
    }

    fn key(account: &str, r: &Request) -> CacheKey {
        key_of(account, &secret(), r, 256).expect("a key")
    }

    #[test]
    fn a_key_is_bound_to_its_api_key_and_names_its_owner() {
        let r = chat("hi");
        let other = key_of("acme", &CacheSecret::of_api_key("gnk1.other"), &r, 256).expect("key");
        assert_ne!(other, key("acme", &r), "another API key, another key");
        let material = key("acme", &r).material;
        let owner = head(&material).expect("well-formed");
        assert_eq!(
            (owner.account.as_str(), owner.model.as_str()),
            ("acme", "m")
        );
        assert_eq!(head(b"junk"), None);
        assert_eq!(
            head(&material[..material.len() - PROOF_LEN]),
            None,
            "no proof"
        );
        let mut old = material.clone();
        old[1..1 + VERSION.len()].copy_from_slice(b"ganglion-cache/1");
        assert_eq!(head(&old), None, "another version");
    }

    #[test]
    fn what_cannot_change_the_answer_does_not_change_the_key() {
        let base = key("acme", &chat("hi"));
        // The request id, deadline and path are not part of it.
        let mut r = chat("hi");
        r.id = 99;
        r.deadline_ms = Some(5);
        r.path = vec!["a".into()];
        assert_eq!(key("acme", &r), base);
        // Unset max_tokens is the model's default; temperature 0 is greedy, which ignores
        // seed and top-p.
        r.parameters.max_tokens = Some(256);
        r.parameters.temperature = Some(0.0);
        r.parameters.seed = Some(7);
        r.parameters.top_p = Some(0.5);
        assert_eq!(key("acme", &r), base);
        // Embedding models ignore generation parameters.
        let mut e = chat("x");
        e.input = Input::Embed(vec!["a".into()]);
        let embed = key("acme", &e);
        e.parameters.max_tokens = Some(3);
        assert_eq!(key("acme", &e), embed);
    }

    #[test]
    fn what_can_change_the_answer_changes_the_key() {
        let base = key("acme", &chat("hi"));
        assert_ne!(key("globex", &chat("hi")), base, "per account");
        assert_ne!(key("acme", &chat("hi!")), base, "input");
        let mut r = chat("hi");
        r.model = "other".into();
        assert_ne!(key("acme", &r), base, "model");
        let mut r = chat("hi");
        r.parameters.max_tokens = Some(8);
        assert_ne!(key("acme", &r), base, "max_tokens");
        let mut r = chat("hi");
        r.parameters.stop = vec!["\n".into()];
        assert_ne!(key("acme", &r), base, "stop");
        let mut r = chat("hi");
        r.parameters.temperature = Some(0.7);
        r.parameters.seed = Some(1);
        let seeded = key("acme", &r);
        assert_ne!(seeded, base, "sampled");
        r.parameters.seed = Some(2);
        assert_ne!(key("acme", &r), seeded, "seed");
    }

    #[test]
    fn skipped_and_unseeded_sampling_have_no_key() {
        let mut r = chat("hi");
        r.cache.skip = true;
        assert_eq!(key_of("acme", &secret(), &r, 256), Err(NoKey::Skipped));
        let mut r = chat("hi");
        r.parameters.temperature = Some(0.7);
        assert_eq!(
            key_of("acme", &secret(), &r, 256),
            Err(NoKey::NotDeterministic)
        );
    }

    #[test]
    fn a_custom_key_replaces_input_and_parameters_inside_account_and_model() {
        let mut a = chat("one");
        a.cache.key = Some("greeting".into());
        let mut b = chat("two");
        b.parameters.max_tokens = Some(3);
        b.cache.key = Some("greeting".into());
        assert_eq!(key("acme", &a), key("acme", &b));
        assert_ne!(key("globex", &a), key("acme", &a));
        let mut c = a.clone();
        c.model = "other".into();
        assert_ne!(key("acme", &c), key("acme", &a));
        // A custom key never equals a request's own key.
        assert_ne!(key("acme", &a), key("acme", &chat("one")));
    }
}
