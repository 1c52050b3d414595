//! Prefix affinity: requests that begin the same way (one system prompt, one conversation) go
//! to the node that already read that beginning, whose engine starts from it
//! (`inference::parking`) instead of reading it again.
//!
//! A request's prefix is its leading system messages, or, without any, its first message
//! (Mesh-LLM's rule), within its account and model: the engine reuses work only within an
//! account, so the key names the account too. Each host remembers the last [`WARM_PREFIXES`]
//! prefixes it ran per model ([`Warm`]) and advertises them; placement counts the prefill a warm
//! host saves against its queue ([`saving`]), and breaks near-ties between hosts by rendezvous
//! on the prefix, so that every entry node sends a prefix nobody holds yet to the same host
//! without sharing any state.

use std::collections::VecDeque;
use std::time::Duration;

use ganglion_client::protocol::{ChatMessage, Role};
use sha2::{Digest, Sha256};

/// Prefixes a host advertises per model: about what its parked sequences hold.
pub const WARM_PREFIXES: usize = 32;

/// Prefill time a warm host saves per token of prefix, as placement counts it: SmolLM2-135M
/// reads about 900 prompt tokens a second on 2 cores (`docs/performance.md`), bigger models
/// fewer, so this undercounts rather than overcounts.
pub const PREFILL_PER_TOKEN: Duration = Duration::from_millis(1);

/// Prefixes shorter than this (in estimated tokens) are not worth a hop.
pub const MIN_PREFIX_TOKENS: u32 = 64;

/// The longest prefix placement counts (in estimated tokens), whatever a client sends: its
/// saving (4 s) stays below one recent failure's penalty, so a failing warm host still loses.
pub const MAX_PREFIX_TOKENS: u32 = 4096;

/// Scores closer than this are a tie, broken by rendezvous on the prefix.
pub const TIE: Duration = Duration::from_millis(10);

/// A request's prefix, as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Its key: what hosts advertise.
    pub key: u64,
    /// Its length, estimated in tokens (4 bytes each).
    pub tokens: u32,
}

impl Prefix {
    /// The key's bytes, for rendezvous hashing.
    pub fn key_bytes(&self) -> [u8; 8] {
        self.key.to_be_bytes()
    }
}

/// The prefix of a chat of `account` for `model`: its leading system messages, or its first
/// message; `None` when that is too short to matter.
pub fn of_chat(account: &str, model: &str, messages: &[ChatMessage]) -> Option<Prefix> {
    let system: Vec<&ChatMessage> = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .collect();
    let prefix: Vec<&ChatMessage> = if system.is_empty() {
        messages.iter().take(1).collect()
    } else {
        system
    };
    let bytes: usize = prefix.iter().map(|m| m.content.len()).sum();
    let tokens = u32::try_from(bytes / 4)
        .unwrap_or(u32::MAX)
        .min(MAX_PREFIX_TOKENS);
    if tokens < MIN_PREFIX_TOKENS {
        return None;
    }
    let mut hash = Sha256::new();
    hash.update(b"ganglion-prefix/1\0");
    for part in [account, model] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    for m in prefix {
        hash.update([m.role as u8]);
        hash.update((m.content.len() as u64).to_be_bytes());
        hash.update(m.content.as_bytes());
    }
    let digest = hash.finalize();
    let mut key = [0; 8];
    key.copy_from_slice(&digest[..8]);
    Some(Prefix {
        key: u64::from_be_bytes(key),
        tokens,
    })
}

/// The prefill a host holding `prefix` saves.
pub fn saving(prefix: &Prefix) -> Duration {
    PREFILL_PER_TOKEN.saturating_mul(prefix.tokens)
}

/// The prefixes a host ran last for one model, most recent first, at most [`WARM_PREFIXES`].
#[derive(Debug, Clone, Default)]
pub struct Warm(VecDeque<u64>);

impl Warm {
    /// `key` ran here now.
    pub fn ran(&mut self, key: u64) {
        self.0.retain(|k| *k != key);
        self.0.push_front(key);
        self.0.truncate(WARM_PREFIXES);
    }

    /// Whether `key` ran here lately.
    pub fn holds(&self, key: u64) -> bool {
        self.0.contains(&key)
    }

    /// The keys, most recent first, as an advert carries them.
    pub fn keys(&self) -> Vec<u64> {
        self.0.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn the_prefix_is_the_system_prompt_within_account_and_model() {
        let system = "You answer questions about lighthouses. ".repeat(10);
        let chat = |question: &str| {
            vec![
                message(Role::System, &system),
                message(Role::User, question),
            ]
        };
        let a = of_chat("acme", "m", &chat("Who keeps it?")).unwrap();
        assert_eq!(of_chat("acme", "m", &chat("How tall is it?")), Some(a));
        assert_eq!(a.tokens as usize, system.len() / 4);
        assert_ne!(
            of_chat("other", "m", &chat("Who keeps it?")).unwrap().key,
            a.key
        );
        assert_ne!(
            of_chat("acme", "n", &chat("Who keeps it?")).unwrap().key,
            a.key
        );
        // No system prompt: the first message; a short one is no prefix at all.
        let long_question = "Summarise this log. ".repeat(20);
        let first = of_chat("acme", "m", &[message(Role::User, &long_question)]).unwrap();
        let turn = [
            message(Role::User, &long_question),
            message(Role::Assistant, "It says little."),
            message(Role::User, "Say more."),
        ];
        assert_eq!(of_chat("acme", "m", &turn), Some(first));
        assert_eq!(of_chat("acme", "m", &[message(Role::User, "Hi")]), None);
    }

    #[test]
    fn warm_keeps_the_most_recent_prefixes() {
        let mut warm = Warm::default();
        for key in 0..40 {
            warm.ran(key);
        }
        warm.ran(20);
        let keys = warm.keys();
        assert_eq!(keys.len(), WARM_PREFIXES);
        assert_eq!(keys[0], 20);
        assert!(warm.holds(39) && warm.holds(8) && !warm.holds(7));
    }
}
