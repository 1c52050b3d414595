//! Which node decides an account's quota: its home, chosen by rendezvous hashing
//! ([`crate::routing::rendezvous`]) over the nodes of the mesh. Every node computes the same
//! home from the same members; a node that joins or leaves moves only the accounts whose home
//! it is or becomes. One decider per account is what keeps concurrent requests
//! entering at different nodes from each spending the same allocation.

/// The home of `account` among `members` (this node and its connected peers), if any.
pub fn home_of<'a>(account: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    crate::routing::rendezvous::owner(account.as_bytes(), members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_finds_the_same_home() {
        let home = home_of("acme", ["a", "b", "c"]).expect("a home");
        assert_eq!(home_of("acme", ["c", "b", "a"]), Some(home));
        assert_eq!(home_of("acme", std::iter::empty()), None);
    }
}
