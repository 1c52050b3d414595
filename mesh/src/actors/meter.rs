//! Meter: Neurons accounting on this node. A child of `NodeSupervisor`, restarted by it on
//! failure (its own totals are rebuilt from the durable ledger).
//!
//! It keeps the usage counters ([`crate::metering::usage`]): this node's own totals, grown by
//! every request it executes and charges, and every peer's, merged from their adverts. The
//! entry node of a request reserves the most the request could cost before it runs; the
//! reservation counts against the account until the request ends, and a charge made on another
//! node stays counted here for [`SETTLE`] after, until that node's adverts carry it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{ActorSlot, LocalCallError};
use crate::metering::usage::{self, Day, NodeUsage, OverQuota, Totals, UsageCounters};

/// How long a charge made on another node keeps counting at the entry node: longer than an
/// advert takes to bring it (adverts go out every second).
pub const SETTLE: Duration = Duration::from_secs(3);

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
        /// A reservation id, or the account's state when over quota.
        reply: RpcReplyPort<Result<u64, OverQuota>>,
    },
    /// A reservation ended; `charged_elsewhere` is what another node charged for it.
    Release {
        /// The reservation.
        id: u64,
        /// Micro-Neurons another node charged (kept counted here for [`SETTLE`]).
        charged_elsewhere: Option<u64>,
    },
    /// This node charged a request it executed.
    Charged {
        /// The day.
        day: Day,
        /// The account.
        account: String,
        /// Micro-Neurons.
        micro: u64,
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
    /// Periodic: drop settled reservations and old days.
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
}

struct Reservation {
    day: Day,
    account: String,
    micro: u64,
    /// Set once the request ended with a charge on another node: counted until then.
    settles_at: Option<Instant>,
}

/// The meter's state.
pub struct State {
    node: String,
    counters: UsageCounters,
    reservations: BTreeMap<u64, Reservation>,
    next_id: u64,
}

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
            counters,
            reservations: BTreeMap::new(),
            next_id: 0,
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
                reply,
            } => {
                let used = state.counters.total(day, &account).micro;
                let reserved = state.reserved(day, &account);
                let decision = usage::admit(used, reserved, max_cost, limit, day).map(|()| {
                    state.next_id += 1;
                    state.reservations.insert(
                        state.next_id,
                        Reservation {
                            day,
                            account,
                            micro: max_cost,
                            settles_at: None,
                        },
                    );
                    state.next_id
                });
                let _ = reply.send(decision);
            }
            Msg::Release {
                id,
                charged_elsewhere,
            } => match charged_elsewhere {
                Some(micro) => {
                    if let Some(r) = state.reservations.get_mut(&id) {
                        r.micro = micro;
                        r.settles_at = Some(Instant::now() + SETTLE);
                    }
                }
                None => {
                    state.reservations.remove(&id);
                }
            },
            Msg::Charged {
                day,
                account,
                micro,
            } => state.counters.charge(&state.node, day, &account, micro),
            Msg::Merge { node, usage } => {
                if node != state.node {
                    state.counters.merge(&node, &usage);
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
                state
                    .reservations
                    .retain(|_, r| r.settles_at.is_none_or(|t| t > now));
                let today = usage::day_of(unix_now());
                state.counters.forget_before(today.saturating_sub(1));
            }
        }
        Ok(())
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Typed handle to the meter; follows it across restarts.
#[derive(Debug, Clone)]
pub struct MeterHandle(pub(crate) ActorSlot<Msg>);

/// Why a reservation was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The account has not enough left today.
    OverQuota(OverQuota),
    /// The meter did not answer.
    Meter(LocalCallError),
}

impl MeterHandle {
    /// Reserves `max_cost` for `account`; the returned guard releases it when dropped.
    pub async fn reserve(
        &self,
        account: &str,
        limit: Option<u64>,
        day: Day,
        max_cost: u64,
    ) -> Result<Hold, ReserveError> {
        let account = account.to_owned();
        let id = super::call_local(&self.0.get(), |reply| Msg::Reserve {
            account,
            limit,
            day,
            max_cost,
            reply,
        })
        .await
        .map_err(ReserveError::Meter)?
        .map_err(ReserveError::OverQuota)?;
        Ok(Hold {
            meter: self.clone(),
            id,
            charged_elsewhere: None,
        })
    }

    /// Records a charge this node made.
    pub fn charged(&self, day: Day, account: &str, micro: u64) {
        let _ = self.0.get().cast(Msg::Charged {
            day,
            account: account.to_owned(),
            micro,
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
}

/// A reservation, released when dropped (however the request ends).
#[derive(Debug)]
pub struct Hold {
    meter: MeterHandle,
    id: u64,
    charged_elsewhere: Option<u64>,
}

impl Hold {
    /// The request was charged `micro` on another node: keep it counted until that node's
    /// adverts bring it.
    pub fn charged_elsewhere(&mut self, micro: u64) {
        self.charged_elsewhere = Some(micro);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.meter.0.get().cast(Msg::Release {
            id: self.id,
            charged_elsewhere: self.charged_elsewhere,
        });
    }
}
