//! Rendezvous (highest random weight) hashing: of a set of members, the one whose SHA-256 of
//! key and member name is highest owns the key. Every node computes the same owner from the same
//! members, and a member that joins or leaves moves only the keys it owns or comes to own.
//! Account homes ([`crate::metering::home`]) and cache shards ([`crate::cache`]) both use it.

use sha2::{Digest, Sha256};

/// The member of `members` that owns `key`, if any.
pub fn owner<M: AsRef<str>>(key: &[u8], members: impl IntoIterator<Item = M>) -> Option<M> {
    members
        .into_iter()
        .map(|m| (weight(key, m.as_ref()), m))
        .max_by(|(a, ma), (b, mb)| a.cmp(b).then_with(|| ma.as_ref().cmp(mb.as_ref())))
        .map(|(_, m)| m)
}

/// The `count` members of `members` that rank highest for `key`, best first: the owner, then
/// who would own it without the owner, and so on.
pub fn top<M: AsRef<str>>(
    key: &[u8],
    members: impl IntoIterator<Item = M>,
    count: usize,
) -> Vec<M> {
    let mut ranked: Vec<([u8; 32], M)> = members
        .into_iter()
        .map(|m| (weight(key, m.as_ref()), m))
        .collect();
    ranked.sort_by(|(a, ma), (b, mb)| b.cmp(a).then_with(|| mb.as_ref().cmp(ma.as_ref())));
    ranked.truncate(count);
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// `member`'s weight for `key`: the owner is the member of the highest.
pub fn weight(key: &[u8], member: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(key);
    hash.update([0]);
    hash.update(member.as_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_caller_agrees_and_a_leaving_member_moves_only_its_own_keys() {
        let members = ["a", "b", "c", "d", "e"];
        let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
        let before: Vec<&str> = keys
            .iter()
            .map(|k| owner(k.as_bytes(), members).expect("an owner"))
            .collect();
        let reversed: Vec<&str> = members.iter().rev().copied().collect();
        for (key, own) in keys.iter().zip(&before) {
            assert_eq!(owner(key.as_bytes(), reversed.iter().copied()), Some(*own));
        }
        for member in members {
            let share = before.iter().filter(|o| **o == member).count();
            assert!((120..=280).contains(&share), "{member}: {share}");
        }
        let without_c = ["a", "b", "d", "e"];
        for (key, own) in keys.iter().zip(&before) {
            let after = owner(key.as_bytes(), without_c).expect("an owner");
            if *own != "c" {
                assert_eq!(after, *own);
            }
        }
        assert_eq!(owner::<&str>(b"x", []), None);
        for key in &keys {
            let ranked = top(key.as_bytes(), members, 2);
            assert_eq!(ranked[0], owner(key.as_bytes(), members).expect("an owner"));
            assert_eq!(
                ranked[1],
                owner(
                    key.as_bytes(),
                    members.into_iter().filter(|m| *m != ranked[0])
                )
                .expect("a second")
            );
        }
        assert_eq!(top(b"x", ["a"], 2), vec!["a"]);
    }
}
