//! Which node decides an account's quota: its home, chosen by rendezvous hashing over the
//! nodes of the mesh (the highest SHA-256 of account and node name wins). Every node computes
//! the same home from the same members; a node that joins or leaves moves only the accounts
//! whose home it is or becomes. One decider per account is what keeps concurrent requests
//! entering at different nodes from each spending the same allocation.

use sha2::{Digest, Sha256};

/// The home of `account` among `members` (this node and its connected peers), if any.
pub fn home_of<'a>(account: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|node| (weight(account, node), *node))
}

fn weight(account: &str, node: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(account.as_bytes());
    hash.update([0]);
    hash.update(node.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_agrees_and_a_leaving_node_moves_only_its_own_accounts() {
        let nodes = ["a", "b", "c", "d", "e"];
        let accounts: Vec<String> = (0..1000).map(|i| format!("account-{i}")).collect();
        let before: Vec<&str> = accounts
            .iter()
            .map(|a| home_of(a, nodes).expect("a home"))
            .collect();
        // Order of the member list does not matter.
        let reversed: Vec<&str> = nodes.iter().rev().copied().collect();
        for (account, home) in accounts.iter().zip(&before) {
            assert_eq!(home_of(account, reversed.iter().copied()), Some(*home));
        }
        // Every node is home to a share.
        for node in nodes {
            let share = before.iter().filter(|h| **h == node).count();
            assert!((120..=280).contains(&share), "{node}: {share}");
        }
        // Without c, only c's accounts move.
        let without_c = ["a", "b", "d", "e"];
        for (account, home) in accounts.iter().zip(&before) {
            let after = home_of(account, without_c).expect("a home");
            if *home != "c" {
                assert_eq!(after, *home);
            }
        }
        assert_eq!(home_of("x", std::iter::empty()), None);
    }
}
