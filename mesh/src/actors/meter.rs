//! Meter: Neurons accounting on this node. A child of `NodeSupervisor`, restarted by it on
//! failure (its own totals are rebuilt from the durable ledger).
//!
//! It keeps the usage counters ([`crate::metering::usage`]): this node's own totals, grown by
//! every request it executes and charges, and every peer's, merged from their adverts. Each
//! account has a home node ([`crate::metering::home`]) whose meter decides its quota: the entry
//! node of a request asks the home (over a `Quota` stream of their QUIC connection) to reserve
//! the most the request could cost before it runs. The reservation counts against the account
//! until the request ends; its release reports who charged it and how much, and the home counts
//! that charge from then on (whether or not the charging node's adverts ever carry it). One
//! decider per account is what keeps requests entering at several nodes at once from each
//! spending the same allocation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ActorSlot, LocalCallError};
use crate::metering::unix_now;
use crate::metering::usage::{self, Day, NodeUsage, OverQuota, Totals, UsageCounters};
use crate::peer::quota::{self, QuotaReply, QuotaRequest};

/// How often expired reservations are swept.
const SWEEP: Duration = Duration::from_secs(1);

/// Messages of the meter.
pub enum Msg {
    /// Reserve `max_cost` for a request of `account` on `day`, or say why not.
    Reserve {
        /// The account.
        account: String,
        /// Its daily limit in micro-Neurons (`None`: unlimited).
        limit: Option<u64>,
        /// The day.
        day: Day,
        /// The most the request could cost.
        max_cost: u64,
        /// The request's charge id: its charge ends the hold, should it come before the release.
        charge_id: u128,
        /// The peer that asks (`None`: this node); only it may release the hold.
        owner: Option<String>,
        /// A reservation id, or why not.
        reply: RpcReplyPort<Result<u64, Refused>>,
    },
    /// A reservation ended; `charged_by` is the node that charged it and how much.
    Release {
        /// The reservation.
        id: u64,
        /// Who charged it, and micro-Neurons.
        charged_by: Option<(String, u64)>,
        /// The request may still be charged (see [`QuotaRequest::Release`]).
        linger: bool,
        /// The peer that releases it (`None`: this node); must be the one that reserved it.
        owner: Option<String>,
    },
    /// This node charged a request it executed.
    Charged {
        /// The request's charge id.
        charge_id: u128,
        /// The day.
        day: Day,
        /// The account.
        account: String,
        /// Micro-Neurons.
        micro: u64,
    },
    /// A request this node answered from the cache.
    Cached {
        /// The day.
        day: Day,
        /// The account.
        account: String,
    },
    /// A peer's own totals, from its advert.
    Merge {
        /// The peer.
        node: String,
        /// Its totals.
        usage: Vec<NodeUsage>,
    },
    /// This node's own totals for `day` (for adverts).
    Own(Day, RpcReplyPort<Vec<NodeUsage>>),
    /// Mesh-wide totals per account on `day`.
    Usage(Day, RpcReplyPort<BTreeMap<String, Totals>>),
    /// Periodic: drop expired holds and days that can no longer count.
    Sweep,
}

impl ractor::Message for Msg {}

/// The meter actor.
#[derive(Debug, Default)]
pub struct Meter;

/// Start-up arguments (kept by the supervisor to restart the meter).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// This node's name.
    pub node: String,
    /// The ledger, to rebuild this node's own totals.
    pub ledger: std::sync::Arc<crate::metering::ledger::Ledger>,
    /// Told whenever this node's own totals grow (the directory then advertises them at once).
    pub changed: std::sync::Arc<tokio::sync::Notify>,
}

struct Reservation {
    day: Day,
    account: String,
    micro: u64,
    charge_id: u128,
    owner: Option<String>,
    /// A hold whose release never arrives (its entry node died) ends by itself then.
    expires_at: Instant,
}

/// Longest a hold lasts without a release: beyond any request's deadline (at most an hour)
/// and the relay's grace after it.
const HOLD_LIMIT: Duration = Duration::from_secs(65 * 60);
/// How long a hold outlives a request that ended without an answer after work may have run:
/// longer than an abandoned embedding batch runs, and than a charge takes to reach the home in
/// an advert.
pub const LINGER: Duration = Duration::from_secs(30);

/// The meter's state.
pub struct State {
    node: String,
    changed: std::sync::Arc<tokio::sync::Notify>,
    counters: UsageCounters,
    reservations: BTreeMap<u64, Reservation>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The account has not enough left.
    Over(OverQuota),
    /// Too many holds outstanding (in total, or from the asking peer).
    Busy,
}

/// Most holds a meter keeps at once, and most from one peer.
const MAX_HOLDS: usize = 65_536;
const MAX_HOLDS_PER_PEER: usize = 4_096;

impl State {
    fn reserved(&self, day: Day, account: &str) -> u64 {
        self.reservations
            .values()
            .filter(|r| r.day == day && r.account == account)
            .fold(0u64, |sum, r| sum.saturating_add(r.micro))
    }
}

impl Actor for Meter {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        let ledger = args.ledger.clone();
        let records = tokio::task::spawn_blocking(move || ledger.records()).await??;
        let today = usage::day_of(unix_now());
        let mut counters = UsageCounters::default();
        for record in records.iter().filter(|r| r.day + 1 >= today) {
            counters.charge(
                &args.node,
                record.day,
                &record.account,
                record.micro_neurons,
            );
        }
        myself.send_interval(SWEEP, || Msg::Sweep);
        Ok(State {
            node: args.node,
            changed: args.changed,
            counters,
            reservations: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Reserve {
                account,
                limit,
                day,
                max_cost,
                charge_id,
                owner,
                reply,
            } => {
                let from_owner = state
                    .reservations
                    .values()
                    .filter(|r| r.owner == owner)
                    .count();
                if state.reservations.len() >= MAX_HOLDS
                    || (owner.is_some() && from_owner >= MAX_HOLDS_PER_PEER)
                {
                    let _ = reply.send(Err(Refused::Busy));
                    return Ok(());
                }
                let used = state.counters.total(day, &account).micro;
                let reserved = state.reserved(day, &account);
                let decision = usage::admit(used, reserved, max_cost, limit, day)
                    .map(|()| {
                        // Random ids: not guessable by another peer, and not reused after a
                        // restart of this meter.
                        let mut id: u64 = rand::random();
                        while state.reservations.contains_key(&id) {
                            id = rand::random();
                        }
                        state.reservations.insert(
                            id,
                            Reservation {
                                day,
                                account,
                                micro: max_cost,
                                charge_id,
                                owner,
                                expires_at: Instant::now() + HOLD_LIMIT,
                            },
                        );
                        id
                    })
                    .map_err(Refused::Over);
                let _ = reply.send(decision);
            }
            Msg::Release {
                id,
                charged_by,
                linger,
                owner,
            } => {
                if state.reservations.get(&id).is_none_or(|r| r.owner != owner) {
                    return Ok(());
                }
                if linger && charged_by.is_none() {
                    // Ended by its charge (`Charged`, here) or by the sweep.
                    if let Some(r) = state.reservations.get_mut(&id) {
                        r.expires_at = r.expires_at.min(Instant::now() + LINGER);
                    }
                    return Ok(());
                }
                // Charged here: already in the own counter. Charged elsewhere: counted as
                // reported by that node from now on (its adverts may lag, or never carry it).
                if let Some(r) = state.reservations.remove(&id)
                    && let Some((node, micro)) = charged_by
                    && node != state.node
                {
                    state.counters.report(&node, r.day, &r.account, micro);
                }
            }
            Msg::Charged {
                charge_id,
                day,
                account,
                micro,
            } => {
                state.counters.charge(&state.node, day, &account, micro);
                // Charged here, where it is held: the hold ends now, not when the entry node's
                // release arrives, which may come after the client's next request (the request
                // would count twice, charged and held, and the account be refused early).
                state.reservations.retain(|_, r| r.charge_id != charge_id);
                state.changed.notify_one();
            }
            Msg::Cached { day, account } => {
                state.counters.cached(&state.node, day, &account);
                state.changed.notify_one();
            }
            Msg::Merge { node, mut usage } => {
                // Only days that can count: yesterday to tomorrow (clocks differ a little).
                let today = usage::day_of(unix_now());
                usage.retain(|u| {
                    (today.saturating_sub(1)..=today.saturating_add(1)).contains(&u.day)
                });
                if node != state.node {
                    let dropped = state.counters.merge(&node, &usage);
                    if dropped > 0 {
                        tracing::debug!(%node, dropped, "usage of accounts past the bound of one peer's day dropped");
                    }
                }
            }
            Msg::Own(day, reply) => {
                let _ = reply.send(state.counters.own(&state.node, day));
            }
            Msg::Usage(day, reply) => {
                let _ = reply.send(state.counters.accounts(day));
            }
            Msg::Sweep => {
                let now = Instant::now();
                state.reservations.retain(|_, r| r.expires_at > now);
                let today = usage::day_of(unix_now());
                state
                    .counters
                    .keep_days(today.saturating_sub(1), today.saturating_add(1));
            }
        }
        Ok(())
    }
}

/// Typed handle to the meter; follows it across restarts.
#[derive(Debug, Clone)]
pub struct MeterHandle(pub(crate) ActorSlot<Msg>);

impl MeterHandle {
    /// A handle to `meter` (the supervisor hands out handles that follow restarts; this is for
    /// a meter started alone, as in benchmarks).
    pub fn new(meter: ActorRef<Msg>) -> Self {
        Self(ActorSlot::new(meter))
    }

    /// Reserves `max_cost` for `account` on this node's meter; the hold releases it when
    /// dropped.
    pub async fn reserve(
        &self,
        account: &str,
        limit: Option<u64>,
        day: Day,
        max_cost: u64,
        charge_id: u128,
    ) -> Result<Hold, ReserveError> {
        let id = self
            .reserve_id(account, limit, day, max_cost, charge_id, None)
            .await?;
        Ok(Hold {
            at: HoldAt::Local(self.clone()),
            id,
            charged_by: None,
            linger: false,
        })
    }

    async fn reserve_id(
        &self,
        account: &str,
        limit: Option<u64>,
        day: Day,
        max_cost: u64,
        charge_id: u128,
        owner: Option<String>,
    ) -> Result<u64, ReserveError> {
        let account = account.to_owned();
        match super::call_local(&self.0.get(), |reply| Msg::Reserve {
            account,
            limit,
            day,
            max_cost,
            charge_id,
            owner,
            reply,
        })
        .await
        .map_err(ReserveError::Meter)?
        {
            Ok(id) => Ok(id),
            Err(Refused::Over(over)) => Err(ReserveError::OverQuota(over)),
            Err(Refused::Busy) => Err(ReserveError::Home("too many holds outstanding".into())),
        }
    }

    /// Reserves on the meter of `home` (the account's home node) over `connection`.
    pub async fn reserve_at(
        connection: &quinn::Connection,
        request: QuotaRequest,
    ) -> Result<Hold, ReserveError> {
        match quota::ask(connection, &request).await {
            Ok(QuotaReply::Reserved(id)) => Ok(Hold {
                at: HoldAt::Remote(connection.clone()),
                id,
                charged_by: None,
                linger: false,
            }),
            Ok(QuotaReply::Over(over)) => Err(ReserveError::OverQuota(over)),
            Ok(other) => Err(ReserveError::Home(format!("unexpected answer {other:?}"))),
            Err(e) => Err(ReserveError::Home(e.to_string())),
        }
    }

    /// Records a charge this node made for the request of `charge_id`.
    pub fn charged(&self, charge_id: u128, day: Day, account: &str, micro: u64) {
        let _ = self.0.get().cast(Msg::Charged {
            charge_id,
            day,
            account: account.to_owned(),
            micro,
        });
    }

    /// Counts a request this node answered from the cache.
    pub fn cached(&self, day: Day, account: &str) {
        let _ = self.0.get().cast(Msg::Cached {
            day,
            account: account.to_owned(),
        });
    }

    /// Merges a peer's own totals.
    pub fn merge(&self, node: &str, usage: Vec<NodeUsage>) {
        let _ = self.0.get().cast(Msg::Merge {
            node: node.to_owned(),
            usage,
        });
    }

    /// This node's own totals for `day`.
    pub async fn own(&self, day: Day) -> Result<Vec<NodeUsage>, LocalCallError> {
        super::call_local(&self.0.get(), |reply| Msg::Own(day, reply)).await
    }

    /// Mesh-wide totals per account for `day`.
    pub async fn usage(&self, day: Day) -> Result<BTreeMap<String, Totals>, LocalCallError> {
        super::call_local(&self.0.get(), |reply| Msg::Usage(day, reply)).await
    }

    fn release(
        &self,
        id: u64,
        charged_by: Option<(String, u64)>,
        linger: bool,
        owner: Option<String>,
    ) {
        let _ = self.0.get().cast(Msg::Release {
            id,
            charged_by,
            linger,
            owner,
        });
    }
}

/// Why a reservation was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The account has not enough left today.
    OverQuota(OverQuota),
    /// The local meter did not answer.
    Meter(LocalCallError),
    /// The account's home node did not answer.
    Home(String),
}

/// Serves one `Quota` stream that `peer` opened: the request, then the answer of this node's
/// meter. Only days around today are accepted, and a peer may release only its own holds.
pub async fn serve_quota_stream(
    meter: MeterHandle,
    peer: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let today = usage::day_of(unix_now());
    let plausible = |day: Day| (today.saturating_sub(1)..=today.saturating_add(1)).contains(&day);
    let request = quota::read_request(&mut recv).await;
    let reply = match request {
        Ok(QuotaRequest::Reserve {
            account,
            limit,
            day,
            max_cost,
            charge_id,
        }) if plausible(day) => {
            match meter
                .reserve_id(&account, limit, day, max_cost, charge_id, Some(peer))
                .await
            {
                Ok(id) => QuotaReply::Reserved(id),
                Err(ReserveError::OverQuota(over)) => QuotaReply::Over(over),
                Err(e) => QuotaReply::Failed(format!("{e:?}")),
            }
        }
        Ok(QuotaRequest::Reserve { .. }) => QuotaReply::Failed("day out of range".to_owned()),
        Ok(QuotaRequest::Release {
            id,
            charged_by,
            linger,
        }) => {
            meter.release(id, charged_by, linger, Some(peer));
            QuotaReply::Released
        }
        _ => return,
    };
    quota::answer(&mut send, &reply).await;
}

/// Where a hold was made.
#[derive(Debug)]
enum HoldAt {
    Local(MeterHandle),
    Remote(quinn::Connection),
}

/// A reservation, released when dropped (however the request ends).
#[derive(Debug)]
pub struct Hold {
    at: HoldAt,
    id: u64,
    charged_by: Option<(String, u64)>,
    linger: bool,
}

impl Hold {
    /// The request was charged `micro` by `node`.
    pub fn charged(&mut self, node: &str, micro: u64) {
        self.charged_by = Some((node.to_owned(), micro));
    }

    /// The request ended without an answer after work may have run: the home keeps the hold
    /// until its charge arrives (at most [`LINGER`]).
    pub fn linger(&mut self) {
        self.linger = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (charged_by, linger) = (self.charged_by.take(), self.linger);
        match &self.at {
            HoldAt::Local(meter) => meter.release(self.id, charged_by, linger, None),
            HoldAt::Remote(connection) => {
                // Dropping cannot wait: the release goes out on a task of its own, bounded by
                // `quota::HOME_TIMEOUT`. If it is lost, the home keeps counting the hold until
                // HOLD_LIMIT: an early refusal at worst, never an overspend.
                let (connection, id) = (connection.clone(), self.id);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let release = QuotaRequest::Release {
                            id,
                            charged_by,
                            linger,
                        };
                        let _ = quota::ask(&connection, &release).await;
                    });
                }
            }
        }
    }
}
