//! Single flight: the keys being filled right now, and who waits for each.
//!
//! The first lookup of a key that is not stored leads: it gets a lease and runs the model.
//! Lookups of the same key meanwhile wait. A fill ends the flight and answers every waiter;
//! a leader that gives up (its run failed, it was cancelled, its node died, its lease ran out)
//! hands the lease to the next live waiter, so one of them runs instead and the rest keep
//! waiting. Nothing here knows about actors or clocks: waiters are any value, time is passed in.

use std::collections::{HashMap, VecDeque};

use super::key::CacheKey;

/// Keys in flight per shard at most; past it, lookups are told to go without the cache.
pub const MAX_FLIGHTS: usize = 4096;
/// Waiters per key at most; past it, lookups are told to go without the cache.
pub const MAX_WAITERS: usize = 256;

/// What joining a key's flight gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<W> {
    /// Nobody fills the key: the caller leads, with this lease.
    Lead(u64, W),
    /// Somebody fills it: the caller waits (the table keeps the waiter).
    Waiting,
    /// Too many flights or waiters, or the key's hash is in flight for other material: the
    /// caller goes without the cache.
    Refused(W),
}

#[derive(Debug)]
struct Flight<W> {
    lease: u64,
    material: Vec<u8>,
    expires_at_ms: u64,
    /// Each waiter with the lease time it asked for, should it come to lead.
    waiters: VecDeque<(W, u64)>,
}

/// The keys in flight at one shard.
#[derive(Debug)]
pub struct Flights<W> {
    flights: HashMap<[u8; 32], Flight<W>>,
    next_lease: u64,
}

impl<W> Default for Flights<W> {
    fn default() -> Self {
        Self {
            flights: HashMap::new(),
            next_lease: 1,
        }
    }
}

impl<W> Flights<W> {
    /// Joins `key`'s flight: leads it if there is none (for `lease_ms` from `now_ms`), else
    /// waits.
    pub fn join(&mut self, key: &CacheKey, waiter: W, lease_ms: u64, now_ms: u64) -> Joined<W> {
        if let Some(flight) = self.flights.get_mut(&key.hash) {
            if flight.material != key.material || flight.waiters.len() >= MAX_WAITERS {
                return Joined::Refused(waiter);
            }
            flight.waiters.push_back((waiter, lease_ms));
            return Joined::Waiting;
        }
        if self.flights.len() >= MAX_FLIGHTS {
            return Joined::Refused(waiter);
        }
        let lease = self.lease();
        self.flights.insert(
            key.hash,
            Flight {
                lease,
                material: key.material.clone(),
                expires_at_ms: now_ms.saturating_add(lease_ms),
                waiters: VecDeque::new(),
            },
        );
        Joined::Lead(lease, waiter)
    }

    /// The leader of `hash` filled it: the flight ends, and its waiters are returned to be
    /// answered. A stale lease (already handed on) ends nothing.
    pub fn filled(&mut self, hash: &[u8; 32], lease: u64) -> Vec<W> {
        match self.flights.get(hash) {
            Some(flight) if flight.lease == lease => {}
            _ => return Vec::new(),
        }
        self.flights
            .remove(hash)
            .map(|f| f.waiters.into_iter().map(|(w, _)| w).collect())
            .unwrap_or_default()
    }

    /// The leader of `hash` gave up: the next waiter that `alive` accepts leads, with the
    /// returned lease; with none, the flight ends.
    pub fn abandoned(
        &mut self,
        hash: &[u8; 32],
        lease: u64,
        now_ms: u64,
        alive: impl Fn(&W) -> bool,
    ) -> Option<(W, u64)> {
        match self.flights.get(hash) {
            Some(flight) if flight.lease == lease => {}
            _ => return None,
        }
        self.hand_on(hash, now_ms, &alive)
    }

    /// Ends the leases that ran out by `now_ms`, handing each flight to its next live waiter;
    /// returns the new leaders with their keys' hashes and their leases.
    pub fn expire(&mut self, now_ms: u64, alive: impl Fn(&W) -> bool) -> Vec<([u8; 32], W, u64)> {
        let due: Vec<[u8; 32]> = self
            .flights
            .iter()
            .filter(|(_, f)| f.expires_at_ms <= now_ms)
            .map(|(hash, _)| *hash)
            .collect();
        due.iter()
            .filter_map(|hash| {
                let (waiter, lease) = self.hand_on(hash, now_ms, &alive)?;
                Some((*hash, waiter, lease))
            })
            .collect()
    }

    fn hand_on(
        &mut self,
        hash: &[u8; 32],
        now_ms: u64,
        alive: &impl Fn(&W) -> bool,
    ) -> Option<(W, u64)> {
        let lease = self.lease();
        let flight = self.flights.get_mut(hash)?;
        while let Some((waiter, lease_ms)) = flight.waiters.pop_front() {
            if alive(&waiter) {
                flight.lease = lease;
                flight.expires_at_ms = now_ms.saturating_add(lease_ms);
                return Some((waiter, lease));
            }
        }
        self.flights.remove(hash);
        None
    }

    fn lease(&mut self) -> u64 {
        let lease = self.next_lease;
        self.next_lease += 1;
        lease
    }

    /// Keys in flight.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    /// Whether no key is in flight.
    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Lookups waiting, over every key.
    pub fn waiting(&self) -> usize {
        self.flights.values().map(|f| f.waiters.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(material: &[u8], hash: u8) -> CacheKey {
        CacheKey {
            hash: [hash; 32],
            material: material.to_vec(),
        }
    }

    #[test]
    fn one_leads_the_others_wait_and_the_fill_answers_them_all() {
        let mut flights = Flights::default();
        let k = key(b"k", 1);
        let Joined::Lead(lease, "a") = flights.join(&k, "a", 1000, 0) else {
            panic!("the first leads");
        };
        assert_eq!(flights.join(&k, "b", 1000, 0), Joined::Waiting);
        assert_eq!(flights.join(&k, "c", 1000, 0), Joined::Waiting);
        assert_eq!(flights.waiting(), 2);
        assert_eq!(
            flights.filled(&k.hash, lease + 7),
            Vec::<&str>::new(),
            "stale lease"
        );
        assert_eq!(flights.filled(&k.hash, lease), vec!["b", "c"]);
        assert!(flights.is_empty());
    }

    #[test]
    fn a_leader_that_gives_up_hands_on_to_the_next_live_waiter() {
        let mut flights = Flights::default();
        let k = key(b"k", 1);
        let Joined::Lead(first, _) = flights.join(&k, 1, 1000, 0) else {
            panic!("leads");
        };
        for w in [2, 3, 4] {
            assert_eq!(flights.join(&k, w, 500, 0), Joined::Waiting);
        }
        // Waiter 2 has gone away; 3 takes over.
        let (next, second) = flights
            .abandoned(&k.hash, first, 10, |w| *w != 2)
            .expect("handed on");
        assert_eq!(next, 3);
        assert_ne!(second, first);
        assert_eq!(
            flights.abandoned(&k.hash, first, 10, |_| true),
            None,
            "old lease"
        );
        // 3's lease runs out after its own 500 ms: 4 takes over.
        assert!(flights.expire(509, |_| true).is_empty());
        let handed = flights.expire(510, |_| true);
        assert_eq!(handed.len(), 1);
        assert_eq!((handed[0].0, handed[0].1), (k.hash, 4));
        // 4 fails too, with nobody left: the flight ends.
        assert_eq!(flights.abandoned(&k.hash, handed[0].2, 600, |_| true), None);
        assert!(flights.is_empty());
    }

    #[test]
    fn other_material_under_the_same_hash_and_crowds_are_refused() {
        let mut flights = Flights::default();
        let Joined::Lead(..) = flights.join(&key(b"k", 1), 0, 1000, 0) else {
            panic!("leads");
        };
        assert_eq!(
            flights.join(&key(b"other", 1), 1, 1000, 0),
            Joined::Refused(1)
        );
        for w in 0..MAX_WAITERS {
            assert_eq!(flights.join(&key(b"k", 1), w, 1000, 0), Joined::Waiting);
        }
        assert_eq!(flights.join(&key(b"k", 1), 9, 1000, 0), Joined::Refused(9));
    }
}
