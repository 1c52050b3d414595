//! CacheShard: one slice of the mesh's result cache.
//!
//! Each node runs a few shards (`--cache-shards`), sharing the node's byte budget
//! (`--cache-size`). Each joins process group [`GROUP`] under the name
//! [`crate::cache::shard_name`], so every node sees every shard and finds a key's owner by
//! rendezvous hashing over them ([`Shards::members`]). A shard holds its entries
//! ([`crate::cache::store`]) and the keys being filled ([`crate::cache::flight`]): a lookup is
//! answered with the stored answer, with a lease to fill the key, or (when someone else is
//! filling it) later, with their answer or, if they give up, with the lease. Peers reach a
//! shard over `Cache` streams ([`remote`]). A shard that fails is restarted empty: its entries
//! are lost (misses), its waiters go on without the cache.
//!
//! The entries sit behind a lock that the shard's handle reads too ([`Entries`]): a hit is
//! answered by the task that asks, without a message to the actor and back, which costs more
//! than the lookup itself. Everything that changes entries, and every miss (which joins or
//! leads a flight), goes through the actor.

pub mod remote;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use super::{ActorSlot, LocalCallError};
use crate::cache::flight::{Due, Flights, Joined, Patience};
use crate::cache::key::CacheKey;
use crate::cache::near::NearCopies;
use crate::cache::store::{Answer, Found, Owner, Purge, ShardTotals, SharedStore};
use crate::cache::{GROUP, ShardId, index_of};
use crate::facts::SessionNodes;

/// How often leases that ran out are handed on.
const TICK: Duration = Duration::from_secs(1);
/// How often expired entries are swept out (ticks).
const SWEEP_TICKS: u64 = 10;

/// The actor.
#[derive(Debug, Default)]
pub struct CacheShard;

/// Start-up arguments (kept by the supervisor to restart the shard).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// Its index on this node.
    pub index: u16,
    /// Its share of the node's byte budget.
    pub bytes: u64,
    /// Its entries, shared with its handle (emptied when the shard starts again).
    pub entries: Entries,
}

/// A shard's entries and its hit count, read by the handle's lookups and changed by the actor.
#[derive(Debug, Clone)]
pub struct Entries(Arc<SharedStore>);

impl Entries {
    /// No entries yet, within `bytes`.
    pub fn new(bytes: u64) -> Self {
        Self(Arc::new(SharedStore::new(bytes)))
    }
}

/// A shard's answer to a lookup.
#[derive(Debug)]
pub enum Reply {
    /// Stored (or just filled by another request).
    Hit(Found),
    /// Not stored: the caller fills it, under this lease (dropping it gives it up).
    Lead(LocalLease),
    /// The shard is too busy with this key or others: go without the cache.
    Busy,
}

/// Messages of a shard.
pub enum Msg {
    /// Look `key` up; lead its flight or wait for it.
    Lookup {
        /// The key.
        key: CacheKey,
        /// How long the caller waits, and would hold the lease.
        patience: Patience,
        /// The answer (perhaps much later, for a waiter).
        reply: RpcReplyPort<Reply>,
    },
    /// The leader's answer for `key`.
    Fill {
        /// The key.
        key: CacheKey,
        /// The lease it led under.
        lease: u64,
        /// The answer.
        answer: Answer,
        /// How long to keep it.
        ttl_ms: u64,
    },
    /// The leader of `hash` gave up.
    Abandon {
        /// The key's hash.
        hash: [u8; 32],
        /// The lease it led under.
        lease: u64,
    },
    /// Counters for the admin endpoint.
    Stats(RpcReplyPort<ShardStats>),
    /// Drops the entries named; answers how many.
    Purge(Purge, RpcReplyPort<usize>),
    /// Hands on leases that ran out; now and then sweeps out expired entries.
    Tick,
}

// Serializable so that the shard can be a member of a process group seen by other nodes; no
// variant ever crosses the wire (peers use `Cache` streams).
impl ractor::Message for Msg {
    fn serializable() -> bool {
        true
    }
}

/// A shard's counters, as `/admin/cache` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    /// Its index on this node.
    pub index: u16,
    /// Entries held.
    pub entries: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Its byte budget.
    pub capacity_bytes: u64,
    /// Lookups answered from it (waiters answered by a fill included).
    pub hits: u64,
    /// Lookups that found nothing and led the fill.
    pub misses: u64,
    /// Lookups refused for want of room in the flight table.
    pub busy: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Keys being filled now.
    pub in_flight: usize,
    /// Lookups waiting for a fill now.
    pub waiting: usize,
}

/// A shard's state.
pub struct State {
    entries: Entries,
    flights: Flights<RpcReplyPort<Reply>>,
    stats: ShardStats,
    ticks: u64,
}

/// Wall-clock milliseconds, the cache's clock.
pub(crate) fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl State {
    /// Gives each new leader its lease. The lease travels as a [`LocalLease`], whose drop
    /// gives it up: a leader that left meanwhile (the reply undelivered, or delivered to a
    /// call that was abandoned at that moment) sends the shard an `Abandon`, and the next
    /// waiter leads.
    /// Answers the waiters whose wait is over (`Busy`: they go without the cache) and gives
    /// the new leaders their leases.
    fn let_go(myself: &ActorRef<Msg>, due: Due<RpcReplyPort<Reply>>) {
        for waiter in due.given_up {
            let _ = waiter.send(Reply::Busy);
        }
        Self::hand_leases(myself, due.leaders);
    }

    fn hand_leases(myself: &ActorRef<Msg>, leaders: Vec<([u8; 32], RpcReplyPort<Reply>, u64)>) {
        for (hash, waiter, lease) in leaders {
            let _ = waiter.send(Reply::Lead(LocalLease {
                shard: myself.clone(),
                hash,
                lease,
                done: false,
            }));
        }
    }
}

impl Actor for CacheShard {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);
        myself.send_interval(TICK, || Msg::Tick);
        args.entries.0.reset(args.bytes);
        Ok(State {
            entries: args.entries,
            flights: Flights::new(u64::from(rand::random::<u32>()) << 16),
            stats: ShardStats {
                index: args.index,
                entries: 0,
                bytes: 0,
                capacity_bytes: args.bytes,
                hits: 0,
                misses: 0,
                busy: 0,
                evictions: 0,
                in_flight: 0,
                waiting: 0,
            },
            ticks: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Lookup {
                key,
                patience,
                reply,
            } => {
                let now = now_ms();
                // Material that names no owner (a peer's junk) never leads a flight.
                if Owner::of(&key.material).is_none() {
                    state.stats.busy += 1;
                    let _ = reply.send(Reply::Busy);
                    return Ok(());
                }
                if let Some(found) = state.entries.0.hit(&key, now) {
                    let _ = reply.send(Reply::Hit(found));
                    return Ok(());
                }
                match state.flights.join(&key, reply, patience, now) {
                    Joined::Lead(lease, reply) => {
                        state.stats.misses += 1;
                        State::hand_leases(&myself, vec![(key.hash, reply, lease)]);
                    }
                    Joined::Waiting => {}
                    Joined::Refused(reply) => {
                        state.stats.busy += 1;
                        let _ = reply.send(Reply::Busy);
                    }
                }
            }
            Msg::Fill {
                key,
                lease,
                answer,
                ttl_ms,
            } => {
                // A stale lease (handed on meanwhile, or from before a purge or a restart)
                // stores nothing: the flight's current leader fills it.
                let Some(waiters) = state.flights.filled(&key.hash, lease) else {
                    return Ok(());
                };
                for waiter in waiters {
                    state.entries.0.count_hit();
                    let _ = waiter.send(Reply::Hit(Found {
                        answer: answer.clone(),
                        age_ms: 0,
                        expires_in_ms: ttl_ms,
                    }));
                }
                if let Some(owner) = Owner::of(&key.material) {
                    state
                        .entries
                        .0
                        .lock()
                        .insert(key, owner, answer, ttl_ms, now_ms());
                }
            }
            Msg::Abandon { hash, lease } => {
                let due = state
                    .flights
                    .abandoned(&hash, lease, now_ms(), |w| !w.is_closed());
                State::let_go(&myself, due);
            }
            Msg::Stats(reply) => {
                let mut stats = state.stats.clone();
                stats.hits = state.entries.0.hits();
                let store = state.entries.0.lock();
                stats.entries = store.len();
                stats.bytes = store.bytes();
                stats.evictions = store.evictions();
                drop(store);
                stats.in_flight = state.flights.len();
                stats.waiting = state.flights.waiting();
                let _ = reply.send(stats);
            }
            Msg::Purge(purge, reply) => {
                let _ = reply.send(state.entries.0.lock().purge(&purge));
            }
            Msg::Tick => {
                let now = now_ms();
                let due = state.flights.expire(now, |w| !w.is_closed());
                State::let_go(&myself, due);
                state.ticks += 1;
                if state.ticks.is_multiple_of(SWEEP_TICKS) {
                    state.entries.0.lock().sweep(now);
                }
            }
        }
        Ok(())
    }
}

/// What a lookup at a local shard gave.
#[derive(Debug)]
pub enum Lookup {
    /// The stored answer.
    Hit(Found),
    /// Not stored: fill it under this lease (dropping the lease gives it up).
    Lead(LocalLease),
    /// Go without the cache.
    Busy,
}

/// A typed handle to one shard of this node.
#[derive(Debug, Clone)]
pub struct CacheShardHandle {
    pub(crate) actor: ActorSlot<Msg>,
    pub(crate) entries: Entries,
}

impl CacheShardHandle {
    /// Looks `key` up, waiting (as `patience` says) for another request's fill. The shard
    /// itself ends a wait that is over; the call's own timeout, a little later, only guards
    /// against a shard that stopped.
    pub async fn lookup(
        &self,
        key: &CacheKey,
        patience: Patience,
    ) -> Result<Lookup, LocalCallError> {
        // A hit needs nothing of the actor (material that names no owner is the actor's to
        // refuse, and is never stored).
        if Owner::of(&key.material).is_some()
            && let Some(found) = self.entries.0.hit(key, now_ms())
        {
            return Ok(Lookup::Hit(found));
        }
        let msg = |reply| Msg::Lookup {
            key: key.clone(),
            patience,
            reply,
        };
        let backstop = Duration::from_millis(patience.wait_ms) + TICK * 2;
        let reply = match self.actor.get().call(msg, Some(backstop)).await {
            Ok(ractor::rpc::CallResult::Success(reply)) => reply,
            Ok(ractor::rpc::CallResult::Timeout) => return Err(LocalCallError::TimedOut),
            Ok(_) => return Err(LocalCallError::Gone("reply dropped".into())),
            Err(e) => return Err(LocalCallError::Gone(e.to_string())),
        };
        Ok(match reply {
            Reply::Hit(found) => Lookup::Hit(found),
            Reply::Lead(lease) => Lookup::Lead(lease),
            Reply::Busy => Lookup::Busy,
        })
    }

    /// This shard's counters.
    pub async fn stats(&self) -> Result<ShardStats, LocalCallError> {
        super::call_local(&self.actor.get(), Msg::Stats).await
    }

    /// Drops the entries `purge` names.
    pub async fn purge(&self, purge: Purge) -> Result<usize, LocalCallError> {
        super::call_local(&self.actor.get(), |reply| Msg::Purge(purge, reply)).await
    }
}

/// The right to fill a key at a local shard; dropped unfilled, it is given up, and the next
/// waiter leads.
#[derive(Debug)]
pub struct LocalLease {
    shard: ActorRef<Msg>,
    hash: [u8; 32],
    lease: u64,
    done: bool,
}

impl LocalLease {
    /// Stores the answer and answers the waiters.
    pub fn fill(mut self, key: CacheKey, answer: Answer, ttl_ms: u64) {
        self.done = true;
        let _ = self.shard.cast(Msg::Fill {
            key,
            lease: self.lease,
            answer,
            ttl_ms,
        });
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shard.cast(Msg::Abandon {
                hash: self.hash,
                lease: self.lease,
            });
        }
    }
}

/// Cache streams this node keeps open to peers' shards at once (each a lookup, a wait, or a
/// lease being filled); past it, requests go without the cache, so that waiting requests
/// never crowd handoffs and quota calls out of a peer connection's streams.
pub const MAX_REMOTE_STREAMS: usize = 64;

/// This node's shards, and how to find every shard of the mesh.
#[derive(Debug, Clone)]
pub struct Shards {
    node: String,
    local: Arc<Vec<CacheShardHandle>>,
    near: Arc<NearCopies>,
    sessions: SessionNodes,
    bypasses: Arc<AtomicU64>,
    remote_streams: Arc<tokio::sync::Semaphore>,
}

impl Shards {
    /// `node`'s shards (none when its cache is off) and its copies of other nodes' answers;
    /// `sessions` names the peers behind ractor_cluster's remote actors.
    pub fn new(
        node: String,
        local: Vec<CacheShardHandle>,
        near: NearCopies,
        sessions: SessionNodes,
    ) -> Self {
        Self {
            node,
            local: Arc::new(local),
            near: Arc::new(near),
            sessions,
            bypasses: Arc::default(),
            remote_streams: Arc::new(tokio::sync::Semaphore::new(MAX_REMOTE_STREAMS)),
        }
    }

    /// One of the cache streams this node may keep open to peers, if one is free.
    pub fn remote_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.remote_streams.clone().try_acquire_owned().ok()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's shard `index`, if it has one.
    pub fn local(&self, index: u16) -> Option<&CacheShardHandle> {
        self.local.get(usize::from(index))
    }

    /// This node's shards.
    pub fn all_local(&self) -> &[CacheShardHandle] {
        &self.local
    }

    /// This node's copies of answers found at other nodes' shards.
    pub fn near(&self) -> &NearCopies {
        &self.near
    }

    /// This node's shards summed: those that answer within `each`, asked at once.
    pub async fn totals(&self, each: Duration) -> ShardTotals {
        let stats = futures::future::join_all(
            self.local
                .iter()
                .map(|shard| tokio::time::timeout(each, shard.stats())),
        )
        .await;
        let mut totals = ShardTotals {
            bypasses: self.bypasses(),
            ..ShardTotals::default()
        };
        for stats in stats.into_iter().filter_map(|s| s.ok()?.ok()) {
            totals.shards += 1;
            totals.entries += stats.entries as u64;
            totals.bytes += stats.bytes;
            totals.capacity_bytes += stats.capacity_bytes;
            totals.hits += stats.hits;
            totals.misses += stats.misses;
            totals.evictions += stats.evictions;
        }
        totals
    }

    /// Every live shard of the region, sorted: the members of [`GROUP`] on this node and on the
    /// peers of its region with a cluster session (each named by its session, never by what it
    /// claims).
    pub fn members(&self) -> Vec<ShardId> {
        let mut members: Vec<ShardId> = ractor::pg::get_members(&GROUP.to_owned())
            .iter()
            .filter_map(|cell| {
                let index = index_of(&cell.get_name()?)?;
                let node = match cell.get_id() {
                    ractor::ActorId::Local(_) => self.node.clone(),
                    ractor::ActorId::Remote { node_id, .. } => self
                        .sessions
                        .name(node_id)
                        .filter(|peer| self.sessions.in_region(peer))?,
                };
                Some(ShardId::new(node, index))
            })
            .collect();
        members.sort();
        members.dedup();
        members
    }

    /// The connection to `peer`, while a cluster session with it lasts (the same view the
    /// shard members come from).
    pub fn connection(&self, peer: &str) -> Option<quinn::Connection> {
        self.sessions.connection(peer)
    }

    /// Counts a request that went without the cache.
    pub fn bypassed(&self) {
        self.bypasses.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that went without the cache at this node.
    pub fn bypasses(&self) -> u64 {
        self.bypasses.load(Ordering::Relaxed)
    }
}
