//! One shard's entries: bounded in bytes, each with its own expiry, the least recently useful
//! evicted first (quick_cache's CLOCK-Pro). The clock is passed in, so expiry is tested without
//! waiting. [`SharedStore`] is a store behind a lock with its hit count, for a shard's entries
//! and an entry node's near copies alike.

use ganglion_client::protocol::Output;
use serde::{Deserialize, Serialize};

use super::key::CacheKey;

/// Bytes an entry is counted for on top of its material and answer (the map's own share).
const ENTRY_OVERHEAD: u64 = 160;
/// The size of an entry the store plans its table for.
const TYPICAL_ENTRY: u64 = 4096;

/// A complete, successful answer as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The output.
    pub output: Output,
    /// Prompt (or embedded) tokens of the run that produced it.
    pub input_tokens: u32,
    /// Generated tokens of that run.
    pub output_tokens: u32,
}

impl Answer {
    /// Bytes the answer takes, about.
    pub fn bytes(&self) -> u64 {
        match &self.output {
            Output::Text { text, .. } => text.len() as u64,
            Output::Embeddings(vectors) => vectors.iter().map(|v| v.len() as u64 * 4 + 24).sum(),
            // Each list and label counts its own header, so that empty ones are not free.
            Output::Labels(lists) => lists
                .iter()
                .map(|labels| {
                    24 + labels
                        .iter()
                        .map(|l| l.label.len() as u64 + 32)
                        .sum::<u64>()
                })
                .sum(),
            Output::Regions(regions) => regions.iter().map(|r| r.text.len() as u64 + 48).sum(),
            _ => 0,
        }
    }
}

/// Who an entry belongs to, for purges and the admin view: always what its key's material
/// says ([`Owner::of`]), never the word of whoever filled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The account whose request filled it.
    pub account: String,
    /// The model that answered.
    pub model: String,
}

impl Owner {
    /// The owner that key material names, if it is well-formed.
    pub fn of(material: &[u8]) -> Option<Owner> {
        super::key::head(material).map(|head| Owner {
            account: head.account,
            model: head.model,
        })
    }
}

/// What to purge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Only this model's entries.
    pub model: Option<String>,
    /// Only this account's entries.
    pub account: Option<String>,
}

impl Purge {
    fn matches(&self, owner: &Owner) -> bool {
        self.model.as_ref().is_none_or(|m| *m == owner.model)
            && self.account.as_ref().is_none_or(|a| *a == owner.account)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    material: Vec<u8>,
    owner: Owner,
    answer: Answer,
    stored_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bytes;

impl quick_cache::Weighter<[u8; 32], Entry> for Bytes {
    fn weight(&self, _: &[u8; 32], entry: &Entry) -> u64 {
        ENTRY_OVERHEAD
            + entry.material.len() as u64
            + entry.owner.account.len() as u64
            + entry.owner.model.len() as u64
            + entry.answer.bytes()
    }
}

/// Counts what eviction takes out.
#[derive(Debug, Clone, Copy, Default)]
struct CountEvictions;

impl quick_cache::Lifecycle<[u8; 32], Entry> for CountEvictions {
    type RequestState = u64;

    fn on_evict(&self, evicted: &mut u64, _: [u8; 32], _: Entry) {
        *evicted += 1;
    }
}

type Table = quick_cache::unsync::Cache<
    [u8; 32],
    Entry,
    Bytes,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// One shard's entries.
pub struct Store {
    table: Table,
    evictions: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.table.len())
            .field("bytes", &self.table.weight())
            .finish()
    }
}

/// A stored answer found for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The answer.
    pub answer: Answer,
    /// How long ago it was stored, in milliseconds.
    pub age_ms: u64,
    /// How long it may still be served, in milliseconds.
    pub expires_in_ms: u64,
}

impl Store {
    /// A store of at most `bytes`.
    pub fn new(bytes: u64) -> Self {
        let items = (bytes / TYPICAL_ENTRY).clamp(16, 1 << 20) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(bytes.max(1))
            .build()
            .expect("the options are in range");
        Self {
            table: Table::with_options(options, Bytes, Default::default(), CountEvictions),
            evictions: 0,
        }
    }

    /// The live answer stored under exactly `key`, if any; an expired one is dropped.
    pub fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Found> {
        let entry = self.table.get(&key.hash)?;
        if entry.material != key.material {
            return None;
        }
        if now_ms >= entry.expires_at_ms {
            self.table.remove(&key.hash);
            return None;
        }
        Some(Found {
            answer: entry.answer.clone(),
            age_ms: now_ms.saturating_sub(entry.stored_at_ms),
            expires_in_ms: entry.expires_at_ms - now_ms,
        })
    }

    /// Stores `answer` under `key` for `ttl_ms`; an answer larger than the whole store is not
    /// kept.
    pub fn insert(
        &mut self,
        key: CacheKey,
        owner: Owner,
        answer: Answer,
        ttl_ms: u64,
        now_ms: u64,
    ) {
        let found = Found {
            answer,
            age_ms: 0,
            expires_in_ms: ttl_ms,
        };
        self.copy(key, owner, found, now_ms);
    }

    /// Keeps a copy of an answer found elsewhere, with the age and expiry it had there.
    pub fn copy(&mut self, key: CacheKey, owner: Owner, found: Found, now_ms: u64) {
        let entry = Entry {
            material: key.material,
            owner,
            answer: found.answer,
            stored_at_ms: now_ms.saturating_sub(found.age_ms),
            expires_at_ms: now_ms.saturating_add(found.expires_in_ms),
        };
        let mut evicted = 0;
        self.table
            .insert_with_lifecycle(key.hash, entry, &mut evicted);
        self.evictions += evicted;
    }

    /// Drops the entries `purge` names; says how many.
    pub fn purge(&mut self, purge: &Purge) -> usize {
        let before = self.table.len();
        self.table.retain(|_, entry| !purge.matches(&entry.owner));
        before - self.table.len()
    }

    /// Drops every expired entry (so that they stop taking room); says how many.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.table.len();
        self.table.retain(|_, entry| now_ms < entry.expires_at_ms);
        before - self.table.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes held (as entries are counted).
    pub fn bytes(&self) -> u64 {
        self.table.weight()
    }

    /// Entries evicted for room (or refused as larger than the store) so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// A store behind a lock, with its hit count: read by any task that asks, changed by its owner
/// (a shard's actor, or the near copies' keeper).
#[derive(Debug)]
pub struct SharedStore {
    store: std::sync::Mutex<Store>,
    hits: std::sync::atomic::AtomicU64,
}

impl SharedStore {
    /// No entries yet, within `bytes`.
    pub fn new(bytes: u64) -> Self {
        Self {
            store: std::sync::Mutex::new(Store::new(bytes)),
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The store, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves entries that are each whole: go on with them.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live answer stored under exactly `key`, counted as a hit.
    pub fn hit(&self, key: &CacheKey, now_ms: u64) -> Option<Found> {
        let found = self.lock().get(key, now_ms)?;
        self.count_hit();
        Some(found)
    }

    /// Counts a hit answered otherwise (a fill handed to its waiters).
    pub fn count_hit(&self) {
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Empties it, within `bytes`, and starts the hit count again.
    pub fn reset(&self, bytes: u64) {
        *self.lock() = Store::new(bytes);
        self.hits.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A node's cache shards, summed (the dashboard's report, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardTotals {
    /// Shards answering.
    pub shards: usize,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Byte budget.
    pub capacity_bytes: u64,
    /// Lookups answered.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Requests that entered here and bypassed the cache.
    pub bypasses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_client::protocol::FinishReason;

    fn key(text: &str) -> CacheKey {
        use sha2::Digest;
        CacheKey {
            hash: sha2::Sha256::digest(text.as_bytes()).into(),
            material: text.as_bytes().to_vec(),
        }
    }

    fn answer(text: &str) -> Answer {
        Answer {
            output: Output::Text {
                text: text.into(),
                finish_reason: FinishReason::Stop,
            },
            input_tokens: 3,
            output_tokens: 5,
        }
    }

    fn owner(account: &str, model: &str) -> Owner {
        Owner {
            account: account.into(),
            model: model.into(),
        }
    }

    #[test]
    fn an_entry_lives_until_its_ttl_on_the_given_clock() {
        let mut store = Store::new(1 << 20);
        store.insert(key("a"), owner("acme", "m"), answer("A"), 60_000, 1_000);
        let found = store.get(&key("a"), 31_000).expect("live");
        assert_eq!(found.answer, answer("A"));
        assert_eq!(found.age_ms, 30_000);
        assert!(store.get(&key("a"), 60_999).is_some());
        assert_eq!(store.get(&key("a"), 61_000), None, "expired at its TTL");
        assert!(store.is_empty(), "an expired entry is dropped when found");
    }

    #[test]
    fn a_copy_keeps_the_age_and_expiry_it_had_where_it_was_found() {
        let mut shard = Store::new(1 << 20);
        shard.insert(key("a"), owner("acme", "m"), answer("A"), 60_000, 1_000);
        let found = shard.get(&key("a"), 21_000).expect("live");
        assert_eq!(found.expires_in_ms, 40_000);
        let mut copies = Store::new(1 << 20);
        copies.copy(key("a"), owner("acme", "m"), found, 500_000);
        let copy = copies.get(&key("a"), 510_000).expect("live");
        assert_eq!((copy.age_ms, copy.expires_in_ms), (30_000, 30_000));
        assert_eq!(
            copies.get(&key("a"), 540_000),
            None,
            "gone when the original is"
        );
    }

    #[test]
    fn an_entry_is_served_only_for_its_whole_key() {
        let mut store = Store::new(1 << 20);
        store.insert(key("a"), owner("acme", "m"), answer("A"), 60_000, 0);
        let mut forged = key("a");
        forged.material = b"b".to_vec();
        assert_eq!(store.get(&forged, 1), None, "same hash, other material");
        assert!(store.get(&key("a"), 1).is_some());
    }

    #[test]
    fn the_byte_budget_holds_and_evictions_are_counted() {
        let mut store = Store::new(64 * 1024);
        for i in 0..200 {
            let text = format!("answer {i} {}", "x".repeat(1000));
            store.insert(
                key(&i.to_string()),
                owner("acme", "m"),
                answer(&text),
                60_000,
                0,
            );
        }
        assert!(store.bytes() <= 64 * 1024, "{} bytes", store.bytes());
        assert!(store.evictions() > 100);
        assert_eq!(store.len() as u64 + store.evictions(), 200);
        // An answer larger than the store is not kept.
        store.insert(
            key("big"),
            owner("acme", "m"),
            answer(&"y".repeat(100_000)),
            60_000,
            0,
        );
        assert_eq!(store.get(&key("big"), 1), None);
    }

    #[test]
    fn purges_and_sweeps_take_what_they_name() {
        let mut store = Store::new(1 << 20);
        store.insert(key("1"), owner("acme", "m"), answer("A"), 60_000, 0);
        store.insert(key("2"), owner("acme", "n"), answer("A"), 60_000, 0);
        store.insert(key("3"), owner("globex", "m"), answer("A"), 10_000, 0);
        assert_eq!(store.sweep(10_000), 1);
        assert_eq!(
            store.purge(&Purge {
                model: Some("n".into()),
                account: None
            }),
            1
        );
        assert_eq!(store.len(), 1);
        assert_eq!(store.purge(&Purge::default()), 1);
        assert!(store.is_empty());
    }
}
