//! Meter: Neurons accounting on this node. A child of `NodeSupervisor`, restarted by it on
//! failure (its own totals are rebuilt from the durable ledger).
//!
//! It keeps the usage counters ([`crate::metering::usage`]): this node's own totals, grown by
//! every request it executes and charges, and every peer's, merged from their adverts. Each
//! account has a home node ([`crate::metering::home`]) whose meter decides its quota: the entry
//! node of a request asks the home (over a `Quota` stream of their QUIC connection) to reserve
//! the most the request could cost before it runs. The reservation counts against the account
//! until the request ends; a charge made on a node other than the home then stays counted for
//! [`SETTLE`], until that node's adverts carry it. One decider per account is what keeps
//! requests entering at several nodes at once from each spending the same allocation.

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
    /// A reservation ended; `charged_by` is the node that charged it and how much.
    Release {
        /// The reservation.
        id: u64,
        /// Who charged it, and micro-Neurons (kept counted for [`SETTLE`] unless this node).
        charged_by: Option<(String, u64)>,
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
    /// Told whenever this node's own totals grow (the directory then advertises them at once).
    pub changed: std::sync::Arc<tokio::sync::Notify>,
}

struct Reservation {
    day: Day,
    account: String,
    micro: u64,
    /// Set once the request ended with a charge on another node: counted until then.
    settles_at: Option<Instant>,
    /// A hold whose release never arrives (its entry node died) ends by itself then.
    expires_at: Instant,
}

/// Longest a hold lasts without a release: beyond any request's deadline.
const HOLD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The meter's state.
pub struct State {
    node: String,
    changed: std::sync::Arc<tokio::sync::Notify>,
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
            changed: args.changed,
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
                            expires_at: Instant::now() + HOLD_LIMIT,
                        },
                    );
                    state.next_id
                });
                let _ = reply.send(decision);
            }
            Msg::Release { id, charged_by } => match charged_by {
                Some((node, micro)) if node != state.node => {
                    if let Some(r) = state.reservations.get_mut(&id) {
                        r.micro = micro;
                        r.settles_at = Some(Instant::now() + SETTLE);
                    }
                }
                // Charged here (already in the own counter), or not charged at all.
                _ => {
                    state.reservations.remove(&id);
                }
            },
            Msg::Charged {
                day,
                account,
                micro,
            } => {
                state.counters.charge(&state.node, day, &account, micro);
                state.changed.notify_one();
            }
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
                    .retain(|_, r| r.settles_at.is_none_or(|t| t > now) && r.expires_at > now);
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
    ) -> Result<Hold, ReserveError> {
        let id = self.reserve_id(account, limit, day, max_cost).await?;
        Ok(Hold {
            at: HoldAt::Local(self.clone()),
            id,
            charged_by: None,
        })
    }

    async fn reserve_id(
        &self,
        account: &str,
        limit: Option<u64>,
        day: Day,
        max_cost: u64,
    ) -> Result<u64, ReserveError> {
        let account = account.to_owned();
        super::call_local(&self.0.get(), |reply| Msg::Reserve {
            account,
            limit,
            day,
            max_cost,
            reply,
        })
        .await
        .map_err(ReserveError::Meter)?
        .map_err(ReserveError::OverQuota)
    }

    /// Reserves on the meter of `home` (the account's home node) over `connection`.
    pub async fn reserve_at(
        connection: &quinn::Connection,
        request: QuotaRequest,
    ) -> Result<Hold, ReserveError> {
        match ask_home(connection, &request).await {
            Ok(QuotaReply::Reserved(id)) => Ok(Hold {
                at: HoldAt::Remote(connection.clone()),
                id,
                charged_by: None,
            }),
            Ok(QuotaReply::Over(over)) => Err(ReserveError::OverQuota(over)),
            Ok(other) => Err(ReserveError::Home(format!("unexpected answer {other:?}"))),
            Err(e) => Err(ReserveError::Home(e)),
        }
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

    fn release(&self, id: u64, charged_by: Option<(String, u64)>) {
        let _ = self.0.get().cast(Msg::Release { id, charged_by });
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

/// How long a reservation at the home node may take.
pub const HOME_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on a quota frame.
const MAX_QUOTA_FRAME: usize = 1024;

/// A request to an account's home node (on a `Quota` stream: one request, one reply).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QuotaRequest {
    /// Reserve `max_cost` for `account` on `day` within `limit`.
    Reserve {
        /// The account.
        account: String,
        /// Its daily limit (micro-Neurons).
        limit: Option<u64>,
        /// The day.
        day: Day,
        /// The most the request could cost.
        max_cost: u64,
    },
    /// End a reservation.
    Release {
        /// The reservation.
        id: u64,
        /// Who charged it, and how much.
        charged_by: Option<(String, u64)>,
    },
}

/// The home node's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QuotaReply {
    /// Reserved, under this id.
    Reserved(u64),
    /// Over quota.
    Over(OverQuota),
    /// Released.
    Released,
    /// The home's meter did not answer.
    Failed(String),
}

async fn ask_home(
    connection: &quinn::Connection,
    request: &QuotaRequest,
) -> Result<QuotaReply, String> {
    use ganglion_client::protocol::MAX_OPEN_FRAME_LEN;
    use ganglion_client::{PeerStreamKind, read_frame, write_frame};
    tokio::time::timeout(HOME_TIMEOUT, async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &PeerStreamKind::Quota, MAX_OPEN_FRAME_LEN)
            .await
            .map_err(|e| e.to_string())?;
        write_frame(&mut send, request, MAX_QUOTA_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        read_frame::<_, QuotaReply>(&mut recv, MAX_QUOTA_FRAME)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no answer".to_owned())
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// Serves one `Quota` stream a peer opened: the request, then the answer of this node's meter.
pub async fn serve_quota_stream(
    meter: MeterHandle,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use ganglion_client::{read_frame, write_frame};
    let request = tokio::time::timeout(
        HOME_TIMEOUT,
        read_frame::<_, QuotaRequest>(&mut recv, MAX_QUOTA_FRAME),
    )
    .await;
    let reply = match request {
        Ok(Ok(Some(QuotaRequest::Reserve {
            account,
            limit,
            day,
            max_cost,
        }))) => match meter.reserve_id(&account, limit, day, max_cost).await {
            Ok(id) => QuotaReply::Reserved(id),
            Err(ReserveError::OverQuota(over)) => QuotaReply::Over(over),
            Err(e) => QuotaReply::Failed(format!("{e:?}")),
        },
        Ok(Ok(Some(QuotaRequest::Release { id, charged_by }))) => {
            meter.release(id, charged_by);
            QuotaReply::Released
        }
        _ => return,
    };
    let _ = tokio::time::timeout(HOME_TIMEOUT, async {
        if write_frame(&mut send, &reply, MAX_QUOTA_FRAME)
            .await
            .is_ok()
        {
            let _ = send.finish();
        }
    })
    .await;
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
}

impl Hold {
    /// The request was charged `micro` by `node`.
    pub fn charged(&mut self, node: &str, micro: u64) {
        self.charged_by = Some((node.to_owned(), micro));
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let charged_by = self.charged_by.take();
        match &self.at {
            HoldAt::Local(meter) => meter.release(self.id, charged_by),
            HoldAt::Remote(connection) => {
                // Dropping cannot wait: the release goes out on a task of its own, bounded by
                // HOME_TIMEOUT. If it is lost, the home keeps counting the hold until
                // HOLD_LIMIT: an early refusal at worst, never an overspend.
                let (connection, id) = (connection.clone(), self.id);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ =
                            ask_home(&connection, &QuotaRequest::Release { id, charged_by }).await;
                    });
                }
            }
        }
    }
}
