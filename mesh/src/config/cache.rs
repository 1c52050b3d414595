//! The result cache's settings: this node's part of the mesh's cache (`cache` and the cache
//! shards take them).

use std::time::Duration;

/// Default cache shards per node.
pub const DEFAULT_CACHE_SHARDS: u16 = 2;
/// Default bytes of cache per node.
pub const DEFAULT_CACHE_SIZE: u64 = 256 * 1024 * 1024;
/// The share of a node's cache bytes kept for near copies when it also has shards (1 in this
/// many): enough for the hot keys its clients repeat, most of the budget left to its share of
/// the mesh's keys.
pub const NEAR_SHARE: u64 = 8;
/// Default cache TTL.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// The cache as configured.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Shards on this node (0 when the cache is off here).
    pub shards: u16,
    /// Bytes the shards share.
    pub bytes: u64,
    /// Bytes for copies of answers found at other nodes' shards (`cache::near`).
    pub near_bytes: u64,
    /// How long answers are kept when a request does not say.
    pub default_ttl: Duration,
}
