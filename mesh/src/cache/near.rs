//! Near copies: answers found at another node's shard, kept by the entry node that asked, so
//! that its next hits for the same key skip the trip to the shard (a tiered cache: the shard
//! is the upper tier, each entry node a lower one).
//!
//! A copy keeps the age and expiry it had at the shard, so it is never served longer than the
//! original would have been, and lives at most [`MAX_LIFE`]: what it cannot follow (a purge at
//! the shard's node, a refill after one, a shard that lied about the expiry) reaches it within
//! that. It is keyed by the same material, with the API key's proof, so only the requests that
//! could have read the original read the copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::key::CacheKey;
use super::store::{Found, Owner, Purge, SharedStore};

/// Longest a copy is served: the most a purge or a refill at the shard's node goes unseen.
pub const MAX_LIFE: Duration = Duration::from_secs(60);
/// Copies kept between two sweeps of the expired ones (which otherwise hold room until
/// evicted).
const SWEEP_EVERY: u64 = 1024;

/// An entry node's copies of answers found at other nodes' shards.
#[derive(Debug)]
pub struct NearCopies {
    copies: SharedStore,
    capacity_bytes: u64,
    kept: AtomicU64,
}

/// What the admin endpoint shows of the near copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NearStats {
    /// Copies held.
    pub entries: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Their budget.
    pub capacity_bytes: u64,
    /// Hits answered from a copy.
    pub hits: u64,
    /// Copies evicted for room.
    pub evictions: u64,
}

impl NearCopies {
    /// No copies yet, within `bytes`.
    pub fn new(bytes: u64) -> Self {
        Self {
            copies: SharedStore::new(bytes),
            capacity_bytes: bytes,
            kept: AtomicU64::new(0),
        }
    }

    /// The copy kept for exactly `key`, counted as a hit.
    pub fn hit(&self, key: &CacheKey, now_ms: u64) -> Option<Found> {
        self.copies.hit(key, now_ms)
    }

    /// Keeps a copy of `found`, the answer a shard gave for `key`, for at most [`MAX_LIFE`].
    pub fn keep(&self, key: &CacheKey, found: &Found, now_ms: u64) {
        if self.capacity_bytes == 0 {
            return;
        }
        let Some(owner) = Owner::of(&key.material) else {
            return;
        };
        let life = u64::try_from(MAX_LIFE.as_millis()).unwrap_or(u64::MAX);
        let copy = Found {
            expires_in_ms: found.expires_in_ms.min(life),
            ..found.clone()
        };
        let mut store = self.copies.lock();
        if self.kept.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            store.sweep(now_ms);
        }
        store.copy(key.clone(), owner, copy, now_ms);
    }

    /// Drops the copies `purge` names; says how many.
    pub fn purge(&self, purge: &Purge) -> usize {
        self.copies.lock().purge(purge)
    }

    /// Counters for the admin endpoint.
    pub fn stats(&self) -> NearStats {
        let store = self.copies.lock();
        NearStats {
            entries: store.len(),
            bytes: store.bytes(),
            capacity_bytes: self.capacity_bytes,
            hits: self.copies.hits(),
            evictions: store.evictions(),
        }
    }
}
