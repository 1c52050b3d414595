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
pub const MAX_FLIGHTS: usize = 1024;
/// Bytes of key material the flights of one shard hold at most (each flight keeps its key's
/// material to tell it from another under the same hash); past it, lookups go without.
pub const MAX_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
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

/// What a lookup asks of a flight: how long it waits for someone else's fill, and how long it
/// would hold the lease itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Milliseconds it waits.
    pub wait_ms: u64,
    /// Milliseconds it would lead.
    pub lease_ms: u64,
}

/// What a tick found due.
#[derive(Debug)]
pub struct Due<W> {
    /// Waiters that lead now (their leader's lease ran out), with their key and lease.
    pub leaders: Vec<([u8; 32], W, u64)>,
    /// Waiters whose wait is over: they go without the cache.
    pub given_up: Vec<W>,
}

#[derive(Debug)]
struct Flight<W> {
    lease: u64,
    material: Vec<u8>,
    expires_at_ms: u64,
    waiters: VecDeque<Waiter<W>>,
}

#[derive(Debug)]
struct Waiter<W> {
    waiter: W,
    /// When it stops waiting.
    wait_until_ms: u64,
    /// Until when it could hold the lease, should it come to lead.
    lead_until_ms: u64,
}

/// The keys in flight at one shard.
#[derive(Debug)]
pub struct Flights<W> {
    flights: HashMap<[u8; 32], Flight<W>>,
    material_bytes: usize,
    next_lease: u64,
}

impl<W> Flights<W> {
    /// An empty table whose leases count from `first_lease` (random, so that a lease of a
    /// shard before its restart means nothing to the new one).
    pub fn new(first_lease: u64) -> Self {
        Self {
            flights: HashMap::new(),
            material_bytes: 0,
            next_lease: first_lease,
        }
    }

    /// Joins `key`'s flight at `now_ms`: leads it if there is none, else waits.
    pub fn join(
        &mut self,
        key: &CacheKey,
        waiter: W,
        patience: Patience,
        now_ms: u64,
    ) -> Joined<W> {
        if let Some(flight) = self.flights.get_mut(&key.hash) {
            if flight.material != key.material || flight.waiters.len() >= MAX_WAITERS {
                return Joined::Refused(waiter);
            }
            flight.waiters.push_back(Waiter {
                waiter,
                wait_until_ms: now_ms.saturating_add(patience.wait_ms),
                lead_until_ms: now_ms.saturating_add(patience.lease_ms),
            });
            return Joined::Waiting;
        }
        if self.flights.len() >= MAX_FLIGHTS
            || self.material_bytes + key.material.len() > MAX_FLIGHT_BYTES
        {
            return Joined::Refused(waiter);
        }
        let lease = self.lease();
        self.material_bytes += key.material.len();
        self.flights.insert(
            key.hash,
            Flight {
                lease,
                material: key.material.clone(),
                expires_at_ms: now_ms.saturating_add(patience.lease_ms),
                waiters: VecDeque::new(),
            },
        );
        Joined::Lead(lease, waiter)
    }

    /// The leader of `hash` filled it: the flight ends, and its waiters are returned to be
    /// answered. A stale lease (already handed on, or the flight gone) ends nothing: `None`.
    pub fn filled(&mut self, hash: &[u8; 32], lease: u64) -> Option<Vec<W>> {
        if self.flights.get(hash)?.lease != lease {
            return None;
        }
        let flight = self.remove(hash)?;
        Some(flight.waiters.into_iter().map(|w| w.waiter).collect())
    }

    /// The leader of `hash` gave up: the next waiter that `alive` accepts (and that still
    /// waits) leads, with the returned lease; with none, the flight ends. Waiters passed over
    /// because their wait is over are returned too, to be let go.
    pub fn abandoned(
        &mut self,
        hash: &[u8; 32],
        lease: u64,
        now_ms: u64,
        alive: impl Fn(&W) -> bool,
    ) -> Due<W> {
        let mut due = Due {
            leaders: Vec::new(),
            given_up: Vec::new(),
        };
        if self.flights.get(hash).is_some_and(|f| f.lease == lease)
            && let Some((waiter, lease)) = self.hand_on(hash, now_ms, &alive, &mut due.given_up)
        {
            due.leaders.push((*hash, waiter, lease));
        }
        due
    }

    /// At `now_ms`: hands each flight whose lease ran out to its next live waiter, and lets
    /// go of the waiters whose wait is over.
    pub fn expire(&mut self, now_ms: u64, alive: impl Fn(&W) -> bool) -> Due<W> {
        let mut given_up = Vec::new();
        for flight in self.flights.values_mut() {
            let (over, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut flight.waiters)
                .into_iter()
                .partition(|w| w.wait_until_ms <= now_ms);
            flight.waiters = waiting;
            given_up.extend(over.into_iter().map(|w| w.waiter));
        }
        let due: Vec<[u8; 32]> = self
            .flights
            .iter()
            .filter(|(_, f)| f.expires_at_ms <= now_ms)
            .map(|(hash, _)| *hash)
            .collect();
        let leaders = due
            .iter()
            .filter_map(|hash| {
                let (waiter, lease) = self.hand_on(hash, now_ms, &alive, &mut given_up)?;
                Some((*hash, waiter, lease))
            })
            .collect();
        Due { leaders, given_up }
    }

    fn hand_on(
        &mut self,
        hash: &[u8; 32],
        now_ms: u64,
        alive: &impl Fn(&W) -> bool,
        given_up: &mut Vec<W>,
    ) -> Option<(W, u64)> {
        let lease = self.lease();
        let flight = self.flights.get_mut(hash)?;
        while let Some(next) = flight.waiters.pop_front() {
            if !alive(&next.waiter) {
                continue;
            }
            if next.wait_until_ms <= now_ms {
                given_up.push(next.waiter);
                continue;
            }
            flight.lease = lease;
            flight.expires_at_ms = next.lead_until_ms;
            return Some((next.waiter, lease));
        }
        self.remove(hash);
        None
    }

    fn remove(&mut self, hash: &[u8; 32]) -> Option<Flight<W>> {
        let flight = self.flights.remove(hash)?;
        self.material_bytes -= flight.material.len();
        Some(flight)
    }

    fn lease(&mut self) -> u64 {
        let lease = self.next_lease;
        self.next_lease = self.next_lease.wrapping_add(1);
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

    fn patience(wait_ms: u64, lease_ms: u64) -> Patience {
        Patience { wait_ms, lease_ms }
    }

    #[test]
    fn one_leads_the_others_wait_and_the_fill_answers_them_all() {
        let mut flights = Flights::new(1);
        let k = key(b"k", 1);
        let Joined::Lead(lease, "a") = flights.join(&k, "a", patience(1000, 1000), 0) else {
            panic!("the first leads");
        };
        assert_eq!(
            flights.join(&k, "b", patience(1000, 1000), 0),
            Joined::Waiting
        );
        assert_eq!(
            flights.join(&k, "c", patience(1000, 1000), 0),
            Joined::Waiting
        );
        assert_eq!(flights.waiting(), 2);
        assert_eq!(flights.filled(&k.hash, lease + 7), None, "stale lease");
        assert_eq!(flights.filled(&k.hash, lease), Some(vec!["b", "c"]));
        assert!(flights.is_empty());
        assert_eq!(flights.filled(&k.hash, lease), None, "over");
    }

    #[test]
    fn a_leader_that_gives_up_hands_on_to_the_next_live_waiter() {
        let mut flights = Flights::new(1);
        let k = key(b"k", 1);
        let Joined::Lead(first, _) = flights.join(&k, 1, patience(1000, 1000), 0) else {
            panic!("leads");
        };
        for w in [2, 3, 4] {
            assert_eq!(flights.join(&k, w, patience(900, 500), 0), Joined::Waiting);
        }
        // Waiter 2 has gone away; 3 takes over, for what is left of its own time.
        let due = flights.abandoned(&k.hash, first, 10, |w| *w != 2);
        let (_, next, second) = due.leaders[0];
        assert_eq!(next, 3);
        assert_ne!(second, first);
        assert!(
            flights
                .abandoned(&k.hash, first, 10, |_| true)
                .leaders
                .is_empty(),
            "old lease"
        );
        // 3's lease runs out at 500 ms: 4 takes over.
        assert!(flights.expire(499, |_| true).leaders.is_empty());
        let due = flights.expire(500, |_| true);
        assert_eq!(due.leaders.len(), 1);
        assert_eq!((due.leaders[0].0, due.leaders[0].1), (k.hash, 4));
        // 4 fails too, with nobody left: the flight ends.
        assert!(
            flights
                .abandoned(&k.hash, due.leaders[0].2, 600, |_| true)
                .leaders
                .is_empty()
        );
        assert!(flights.is_empty());
    }

    #[test]
    fn a_waiter_stops_waiting_at_its_time_and_never_comes_to_lead_after_it() {
        let mut flights = Flights::new(1);
        let k = key(b"k", 1);
        let Joined::Lead(lease, _) = flights.join(&k, 1, patience(10_000, 10_000), 0) else {
            panic!("leads");
        };
        assert_eq!(
            flights.join(&k, 2, patience(100, 5_000), 0),
            Joined::Waiting
        );
        assert_eq!(
            flights.join(&k, 3, patience(300, 5_000), 0),
            Joined::Waiting
        );
        let due = flights.expire(100, |_| true);
        assert_eq!(due.given_up, vec![2]);
        assert!(due.leaders.is_empty());
        // Past 3's wait, the leader gives up: nobody is left to lead, and 3 is let go.
        let due = flights.abandoned(&k.hash, lease, 300, |_| true);
        assert!(due.leaders.is_empty());
        assert_eq!(due.given_up, vec![3]);
        assert!(flights.is_empty());
    }

    #[test]
    fn other_material_under_the_same_hash_and_crowds_are_refused() {
        let mut flights = Flights::new(1);
        let p = patience(1000, 1000);
        let Joined::Lead(..) = flights.join(&key(b"k", 1), 0, p, 0) else {
            panic!("leads");
        };
        assert_eq!(flights.join(&key(b"other", 1), 1, p, 0), Joined::Refused(1));
        for w in 0..MAX_WAITERS {
            assert_eq!(flights.join(&key(b"k", 1), w, p, 0), Joined::Waiting);
        }
        assert_eq!(flights.join(&key(b"k", 1), 9, p, 0), Joined::Refused(9));
        // Material beyond the byte bound is refused too.
        let big = vec![7u8; MAX_FLIGHT_BYTES];
        assert_eq!(flights.join(&key(&big, 2), 5, p, 0), Joined::Refused(5));
    }
}
