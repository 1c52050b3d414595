//! Pure membership logic: which peers to dial, which of two connections to keep, how long to
//! wait before retrying a seed. No sockets and no clock: callers pass what they know.
//!
//! ractor_cluster's transitive mode would dial TCP connection strings and bypass QUIC, so nodes
//! run it in isolated mode and exchange peer lists themselves (in [`crate::actors::peer_directory`]
//! adverts); this module decides what to do with them: [`regions`] says which nodes are gateways
//! and which connections are kept, [`view`] what a node tells its peers and whom it dials.

pub mod regions;
pub mod view;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A peer as others advertise it: its name, the address it can be dialed at, its region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer's name (its certificate's name).
    pub name: String,
    /// The address it advertises.
    pub addr: SocketAddr,
    /// The region it says it is in.
    pub region: String,
}

/// The load of one served model, as advertised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLoad {
    /// Catalog id.
    pub model: String,
    /// Requests waiting.
    pub queued: u32,
    /// Requests running.
    pub in_flight: u32,
    /// Requests run at once.
    pub concurrency: u32,
    /// Recent time to serve one request, in milliseconds.
    pub service_ms: f64,
    /// Prefix keys of the chats it ran last (`routing::prefix`), at most
    /// [`crate::routing::prefix::WARM_PREFIXES`].
    pub warm: Vec<u64>,
}

impl ModelLoad {
    /// `model` with nothing queued or running, one slot, and no service time known: what a
    /// host that gave no load counts as.
    pub fn idle(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            queued: 0,
            in_flight: 0,
            concurrency: 1,
            service_ms: 0.0,
            warm: Vec::new(),
        }
    }
}

/// Which side opened a connection, from the local node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node dialed the peer.
    Dialed,
    /// The peer dialed this node.
    Accepted,
}

/// Of two connections between the same pair of nodes, which one survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The connection that just arrived.
    New,
    /// The connection already in place.
    Existing,
}

/// Decides between an existing connection to a peer and a new one.
///
/// Both nodes see the same two connections and must keep the same one without talking about it.
/// Two connections in opposite directions: keep the one dialed by the node whose cluster name
/// sorts last, which is also ractor_cluster's own rule for simultaneous sessions, so the two
/// layers never disagree. Two in the same direction: the peer reconnected (say, after a restart)
/// and the newer connection replaces the older one.
pub fn resolve_duplicate(
    local_cluster_name: &str,
    remote_cluster_name: &str,
    existing: Direction,
    new: Direction,
) -> Keep {
    if existing == new {
        return Keep::New;
    }
    let preferred = if remote_cluster_name > local_cluster_name {
        Direction::Accepted
    } else {
        Direction::Dialed
    };
    if new == preferred {
        Keep::New
    } else {
        Keep::Existing
    }
}

/// Delay before retry number `failures` (1-based) of a seed: doubling from `base`, capped at
/// `max`, so a restarted seed is found again within `max`.
pub fn retry_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_keep_the_same_connection() {
        use Direction::*;
        // Node "a" and node "b" each see one connection they dialed and one they accepted.
        // The connection dialed by "b" (the name that sorts last) must win on both sides,
        // whichever arrives first.
        let (a, b) = ("a@ganglion", "b@ganglion");
        // On a: the b-dialed connection is Accepted.
        assert_eq!(resolve_duplicate(a, b, Dialed, Accepted), Keep::New);
        assert_eq!(resolve_duplicate(a, b, Accepted, Dialed), Keep::Existing);
        // On b: the b-dialed connection is Dialed.
        assert_eq!(resolve_duplicate(b, a, Accepted, Dialed), Keep::New);
        assert_eq!(resolve_duplicate(b, a, Dialed, Accepted), Keep::Existing);
    }

    #[test]
    fn a_reconnect_in_the_same_direction_replaces_the_old_connection() {
        use Direction::*;
        for (local, remote) in [("a@g", "b@g"), ("b@g", "a@g")] {
            assert_eq!(resolve_duplicate(local, remote, Dialed, Dialed), Keep::New);
            assert_eq!(
                resolve_duplicate(local, remote, Accepted, Accepted),
                Keep::New
            );
        }
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let base = Duration::from_millis(250);
        let max = Duration::from_secs(2);
        let delays: Vec<_> = (1..=6)
            .map(|f| retry_delay(f, base, max).as_millis())
            .collect();
        assert_eq!(delays, vec![250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX, base, max), max);
    }
}
