//! The mesh's result cache: pure parts (no actors, sockets or clock).
//!
//! - [`key`]: a request's cache key (SHA-256 of account, model, canonical input and output-
//!   changing parameters), or why it has none;
//! - [`store`]: one shard's entries, bounded in bytes, with TTL and eviction;
//! - [`flight`]: single flight, so a key is filled once while identical requests wait;
//! - [`near`]: an entry node's copies of answers found at other nodes' shards;
//! - [`ShardId`] and [`owner_of`]: which shard of the mesh owns a key (rendezvous hashing over
//!   the live members of process group [`GROUP`]: first the node, then its shard, so that
//!   every node takes an equal share whatever its number of shards, and a node that claims
//!   many cannot draw the mesh's keys to itself).
//!
//! The shards themselves are actors ([`crate::actors::cache_shard`]); the request stage that
//! looks up, replays and fills is [`crate::request::cache`]. `docs/cache.md` tells the whole
//! story.

pub mod flight;
pub mod key;
pub mod near;
pub mod store;

/// The process group every cache shard joins.
pub const GROUP: &str = "ganglion.cache";
/// Most shards a node may run; members with a higher index are not counted.
pub const MAX_SHARDS: u16 = 64;

/// A cache shard somewhere in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardId {
    /// The node it runs on.
    pub node: String,
    /// Its index on that node.
    pub index: u16,
    /// `<node>/<index>`, the name rendezvous hashing weighs.
    label: String,
}

impl ShardId {
    /// Shard `index` of `node`.
    pub fn new(node: impl Into<String>, index: u16) -> Self {
        let node = node.into();
        let label = format!("{node}/{index}");
        Self { node, index, label }
    }

    /// `<node>/<index>`.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl AsRef<str> for ShardId {
    fn as_ref(&self) -> &str {
        &self.label
    }
}

/// The registered name of shard `index` on every node (its index is read back from it).
pub fn shard_name(index: u16) -> String {
    format!("{GROUP}.{index}")
}

/// The index in a shard's registered name (below [`MAX_SHARDS`]).
pub fn index_of(name: &str) -> Option<u16> {
    let index: u16 = name.strip_prefix(GROUP)?.strip_prefix('.')?.parse().ok()?;
    (index < MAX_SHARDS).then_some(index)
}

/// The shard of `members` that owns the key with `hash`: the owning node among those with
/// shards, then the owning shard among that node's.
pub fn owner_of<'a>(hash: &[u8; 32], members: &'a [ShardId]) -> Option<&'a ShardId> {
    use crate::routing::rendezvous::owner;
    let node = owner(hash, members.iter().map(|m| m.node.as_str()))?;
    owner(hash, members.iter().filter(|m| m.node == node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn shard_names_round_trip_and_others_are_not_shards() {
        assert_eq!(index_of(&shard_name(3)), Some(3));
        assert_eq!(index_of("ganglion.cache"), None);
        assert_eq!(index_of("ganglion.cache.x"), None);
        assert_eq!(index_of("ganglion.meter"), None);
        assert_eq!(index_of(&shard_name(MAX_SHARDS)), None);
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_keys() {
        let members: Vec<ShardId> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| (0..2).map(move |i| ShardId::new(*n, i)))
            .collect();
        let without_b: Vec<ShardId> = members.iter().filter(|s| s.node != "b").cloned().collect();
        for i in 0u32..500 {
            let hash: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            let before = owner_of(&hash, &members).expect("an owner");
            if before.node != "b" {
                assert_eq!(owner_of(&hash, &without_b), Some(before));
            }
        }
        assert_eq!(owner_of(&[0; 32], &[]), None);
    }

    #[test]
    fn a_node_with_many_shards_gets_no_more_keys_than_one_with_few() {
        let mut members: Vec<ShardId> =
            (0..MAX_SHARDS).map(|i| ShardId::new("greedy", i)).collect();
        members.push(ShardId::new("modest", 0));
        let greedy = (0u32..1000)
            .filter(|i| {
                let hash: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
                owner_of(&hash, &members).expect("an owner").node == "greedy"
            })
            .count();
        assert!((400..=600).contains(&greedy), "{greedy} of 1000");
    }
}
