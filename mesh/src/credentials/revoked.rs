//! Revoked API keys: a grow-only set of key ids that every node holds, replicated between nodes
//! by anti-entropy rather than by a list resent every second.
//!
//! Each advert carries the sender's [`Summary`]: how many ids its set holds, a digest of the set
//! that does not depend on the order ids arrived in (the XOR of each id's SHA-256), and the ids
//! it added last. A receiver adds those; if the digests still differ, it pulls the sender's
//! whole set. So one revocation crosses the mesh in an advert, and any number of them (a node
//! that was away, a mass revocation) in one pull, however many keys were ever revoked.
//!
//! The set is bounded ([`MAX_REVOKED`]): past it, ids from peers are refused, counted and
//! logged; a revocation made on this node is still taken.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Most ids a node keeps. At 8 bytes an id this is 8 MiB in memory and 17 MiB on disk; a
/// cluster revoking a thousand keys a day takes three millennia to fill it.
pub const MAX_REVOKED: usize = 1 << 20;
/// Most ids a summary carries as "added last".
pub const MAX_RECENT: usize = 64;

/// A key id: 16 lowercase hex digits on the wire of keys and in files, 8 bytes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub u64);

impl KeyId {
    /// The id `text` names, if it is 16 hex digits (either case: an id typed in upper case
    /// names the same key).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }

    fn digest(self) -> [u8; 16] {
        let hash = sha2::Sha256::digest(self.0.to_be_bytes());
        let mut out = [0; 16];
        out.copy_from_slice(&hash[..16]);
        out
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What an advert says of the sender's revoked set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Ids in the set.
    pub count: u64,
    /// XOR of the first 16 bytes of each id's SHA-256.
    pub digest: [u8; 16],
    /// The ids added last (at most [`MAX_RECENT`]), newest last.
    pub recent: Vec<KeyId>,
}

#[derive(Debug, Default)]
struct Set {
    ids: HashSet<KeyId>,
    digest: [u8; 16],
    recent: VecDeque<KeyId>,
    /// Ids from peers refused because the set is full.
    refused: u64,
}

impl Set {
    fn insert(&mut self, id: KeyId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        for (d, x) in self.digest.iter_mut().zip(id.digest()) {
            *d ^= x;
        }
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
        true
    }
}

/// Key ids revoked in this cluster, shared by the parts of a node that check, serve or store
/// them.
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    set: RwLock<Set>,
    /// Woken whenever the set grows (the writer stores it then).
    grown: tokio::sync::Notify,
}

/// How a peer's ids were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Learned {
    /// Ids new to this node.
    pub added: usize,
    /// New ids refused because the set is full.
    pub refused: usize,
}

impl RevokedKeys {
    /// A set holding the well-formed ids among `kids`.
    pub fn from_ids(kids: impl IntoIterator<Item = String>) -> Self {
        let set = Self::default();
        set.add(kids);
        set
    }

    /// Whether `kid` is revoked.
    pub fn contains(&self, kid: &str) -> bool {
        KeyId::parse(kid).is_some_and(|id| self.read().ids.contains(&id))
    }

    /// Revokes the well-formed ids among `kids` here (a revocation made on this node is taken
    /// even when the set is full); returns those that were new, in lowercase.
    pub fn add(&self, kids: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut set = self.write();
        let new: Vec<String> = kids
            .into_iter()
            .filter_map(|kid| KeyId::parse(&kid))
            .filter(|id| set.insert(*id))
            .map(|id| id.to_string())
            .collect();
        drop(set);
        if !new.is_empty() {
            self.0.grown.notify_one();
        }
        new
    }

    /// Takes ids a peer sent, as long as the set has room.
    pub fn learn(&self, ids: impl IntoIterator<Item = KeyId>) -> Learned {
        let mut set = self.write();
        let mut learned = Learned::default();
        for id in ids {
            if set.ids.contains(&id) {
                continue;
            }
            if set.ids.len() >= MAX_REVOKED {
                learned.refused += 1;
            } else if set.insert(id) {
                learned.added += 1;
            }
        }
        set.refused += learned.refused as u64;
        drop(set);
        if learned.added > 0 {
            self.0.grown.notify_one();
        }
        learned
    }

    /// The ids among `ids` not held here, each once.
    pub fn unknown(&self, ids: Vec<KeyId>) -> Vec<KeyId> {
        let set = self.read();
        let mut seen = HashSet::new();
        ids.into_iter()
            .filter(|id| !set.ids.contains(id) && seen.insert(*id))
            .collect()
    }

    /// The summary an advert carries.
    pub fn summary(&self) -> Summary {
        let set = self.read();
        Summary {
            count: set.ids.len() as u64,
            digest: set.digest,
            recent: set.recent.iter().copied().collect(),
        }
    }

    /// Every id, for a peer pulling the set.
    pub fn ids(&self) -> Vec<KeyId> {
        self.read().ids.iter().copied().collect()
    }

    /// Ids held, and ids from peers refused because the set was full.
    pub fn counts(&self) -> (usize, u64) {
        let set = self.read();
        (set.ids.len(), set.refused)
    }

    /// Every revoked id, sorted, in lowercase.
    pub fn all(&self) -> Vec<String> {
        let mut ids = self.ids();
        ids.sort_unstable();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Set> {
        self.0.set.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Set> {
        self.0.set.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the ids stored at `path` (one per line; none if the file does not exist).
    pub fn load(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::from_ids(text.lines().map(|l| l.trim().to_owned()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes every id to `path`, atomically (a temporary file, fsynced, renamed over it).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let text: String = self.all().into_iter().map(|kid| kid + "\n").collect();
        // Its own temporary name: the admin route and the background writer may save at once.
        let temporary = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Stores the set at `path` whenever it grows, at most once a second, off every caller's
    /// path (a peer's advert never waits on a disk). Runs until aborted.
    pub async fn keep_stored(self, path: std::path::PathBuf) {
        loop {
            self.0.grown.notified().await;
            let (set, path) = (self.clone(), path.clone());
            match tokio::task::spawn_blocking(move || set.save(&path)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot store revoked keys"),
                Err(e) => tracing::error!(error = %e, "storing revoked keys failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> KeyId {
        KeyId(n)
    }

    #[test]
    fn ids_parse_in_either_case_and_print_in_lowercase() {
        let lower = KeyId::parse("00ff00ff00ff00ff").expect("lower");
        assert_eq!(KeyId::parse("00FF00FF00FF00FF"), Some(lower));
        assert_eq!(lower.to_string(), "00ff00ff00ff00ff");
        for bad in [
            "",
            "00ff",
            "00ff00ff00ff00fg",
            "+0ff00ff00ff00ff",
            "00ff00ff00ff00ff0",
        ] {
            assert_eq!(KeyId::parse(bad), None, "{bad}");
        }
        let set = RevokedKeys::default();
        assert_eq!(set.add(["ABCDEF0123456789".into()]), ["abcdef0123456789"]);
        assert!(set.contains("abcdef0123456789") && set.contains("ABCDEF0123456789"));
    }

    #[test]
    fn the_digest_depends_on_the_set_not_the_order() {
        let (a, b) = (RevokedKeys::default(), RevokedKeys::default());
        a.learn((0..100).map(id));
        b.learn((0..100).rev().map(id));
        assert_eq!(a.summary().digest, b.summary().digest);
        assert_eq!(a.summary().count, 100);
        b.learn([id(100)]);
        assert_ne!(a.summary().digest, b.summary().digest);
        assert_eq!(b.summary().recent.last(), Some(&id(100)));
        assert_eq!(b.summary().recent.len(), MAX_RECENT);
    }

    #[test]
    fn a_full_set_refuses_peers_ids_but_not_a_local_revocation() {
        let set = RevokedKeys::default();
        let learned = set.learn((0..MAX_REVOKED as u64 + 5).map(id));
        assert_eq!(
            learned,
            Learned {
                added: MAX_REVOKED,
                refused: 5
            }
        );
        assert_eq!(
            set.learn([id(0)]),
            Learned::default(),
            "known ids are no refusal"
        );
        assert_eq!(set.counts(), (MAX_REVOKED, 5));
        assert_eq!(set.add(["ffffffffffffffff".into()]).len(), 1);
    }

    #[test]
    fn revocations_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("ganglion-revoked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // left by a run with the same process id
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("revoked-keys");
        let set = RevokedKeys::default();
        let kid = super::super::api_keys::new_key_id();
        set.add([kid.clone()]);
        set.save(&path).expect("save");
        let back = RevokedKeys::load(&path).expect("load");
        assert!(back.contains(&kid));
        assert_eq!(back.summary(), set.summary());
        assert!(
            RevokedKeys::load(&dir.join("none"))
                .expect("absent")
                .all()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
