//! Pure membership logic: which peers to dial, which of two connections to keep, how long to
//! wait before retrying a seed. No sockets and no clock: callers pass what they know.
//!
//! ractor_cluster's transitive mode would dial TCP connection strings and bypass QUIC, so nodes
//! run it in isolated mode and exchange peer lists themselves (in [`crate::actors::peer_directory`]
//! adverts); this module decides what to do with them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A peer as others advertise it: its name and the address it can be dialed at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer's name (its certificate's name).
    pub name: String,
    /// The address it advertises.
    pub addr: SocketAddr,
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

/// The peers worth dialing, given what connected peers advertise.
///
/// Skips this node, peers already connected, addresses being dialed, and duplicate entries; a
/// peer advertised at several addresses is dialed at the first (adverts are sorted by name).
pub fn dial_targets<'a>(
    local_name: &str,
    connected: &BTreeSet<String>,
    dialing: &BTreeSet<SocketAddr>,
    advertised: impl IntoIterator<Item = &'a KnownPeer>,
) -> Vec<KnownPeer> {
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for peer in advertised {
        if peer.name == local_name
            || connected.contains(&peer.name)
            || dialing.contains(&peer.addr)
            || !seen.insert(peer.name.as_str())
        {
            continue;
        }
        targets.push(peer.clone());
    }
    targets
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

    fn peer(name: &str, port: u16) -> KnownPeer {
        KnownPeer {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

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
    fn dial_targets_skip_self_connected_dialing_and_duplicates() {
        let connected = BTreeSet::from(["b".to_owned()]);
        let dialing = BTreeSet::from([peer("c", 3).addr]);
        let adverts = [
            peer("a", 1),
            peer("b", 2),
            peer("c", 3),
            peer("d", 4),
            peer("d", 5),
            peer("e", 6),
        ];
        let targets = dial_targets("a", &connected, &dialing, &adverts);
        assert_eq!(targets, vec![peer("d", 4), peer("e", 6)]);
    }

    #[test]
    fn a_full_mesh_forms_from_one_seed() {
        // Simulate n nodes that each know only node 0. Each round, every node learns the
        // connected peers of its neighbours and dials what `dial_targets` says; connections are
        // symmetric. The mesh must be full after a couple of rounds.
        let n = 50;
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let addrs: Vec<KnownPeer> = (0..n).map(|i| peer(&names[i], 1000 + i as u16)).collect();
        let mut links = vec![BTreeSet::<usize>::new(); n];
        for i in 1..n {
            links[i].insert(0);
            links[0].insert(i);
        }
        for _round in 0..2 {
            let snapshot = links.clone();
            for i in 0..n {
                let connected: BTreeSet<String> =
                    snapshot[i].iter().map(|&j| names[j].clone()).collect();
                let advertised: Vec<&KnownPeer> = snapshot[i]
                    .iter()
                    .flat_map(|&j| snapshot[j].iter().map(|&k| &addrs[k]))
                    .collect();
                for target in dial_targets(&names[i], &connected, &BTreeSet::new(), advertised) {
                    let j = addrs.iter().position(|p| p == &target).expect("known");
                    links[i].insert(j);
                    links[j].insert(i);
                }
            }
        }
        for (i, l) in links.iter().enumerate() {
            assert_eq!(l.len(), n - 1, "node {i} is missing peers");
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
