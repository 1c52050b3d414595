//! Router: where each request runs. A child of `NodeSupervisor`, restarted by it on failure
//! (its counters start again).
//!
//! The gateway asks it for a plan when the local model host cannot take a request (the model is
//! not hosted here, or its queue is full): the peers that host the model, ranked by
//! [`crate::routing::placement`] from their measured RTT, advertised load, what this node has
//! sent them and not yet seen finish, and their recent failures. The gateway reports every
//! handoff's start and end, which keeps those counts and the admin counters current.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use super::peer_directory::{PeerDirectoryHandle, Via};
use super::{ActorSlot, LocalCallError};
use crate::routing::placement::{self, Candidate};
use crate::routing::prefix::Prefix;

/// Most candidates one node tries for one request.
pub const MAX_ATTEMPTS: usize = 3;

/// Failures older than this no longer count against a peer.
const FAILURE_WINDOW: Duration = Duration::from_secs(30);

/// A ranked peer to hand a request to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The peer's name.
    pub name: String,
    /// Its connection.
    pub connection: quinn::Connection,
    /// Its score when ranked (lower is better).
    pub score: Duration,
    /// It ran the request's prefix lately.
    pub warm: bool,
    /// Whether it hosts the model or passes it on to another region.
    pub via: Via,
}

/// Messages of the router.
pub enum Msg {
    /// Rank the peers that could run `model`, leaving out those on `path`.
    Plan {
        /// The model.
        model: String,
        /// Nodes the request has visited (this one included).
        path: Vec<String>,
        /// Hops the request may still take.
        hop_budget: u8,
        /// The request's prefix, if it has one worth placing by.
        prefix: Option<Prefix>,
        /// The ranked targets, best first, at most [`MAX_ATTEMPTS`]; `Err` when the
        /// directory did not answer.
        reply: RpcReplyPort<Result<Vec<Target>, LocalCallError>>,
    },
    /// A request for `model` was admitted by the local model host.
    RanLocally {
        /// The model.
        model: String,
    },
    /// A request for `model` was handed to `peer`.
    Forwarded {
        /// The model.
        model: String,
        /// The peer.
        peer: String,
    },
    /// A handoff to `peer` ended.
    Ended {
        /// The peer.
        peer: String,
        /// Whether the peer answered (a final response, or a partial stream the client left).
        ok: bool,
    },
    /// Counters for the admin endpoint.
    Stats(RpcReplyPort<RoutingStats>),
}

impl ractor::Message for Msg {}

/// Routing counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutingStats {
    /// Per model: requests run here and requests handed to peers.
    pub models: BTreeMap<String, ModelCounters>,
    /// Per peer: handoffs, failures, what is outstanding, and its last score per model.
    pub peers: BTreeMap<String, PeerCounters>,
}

/// Per-model counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelCounters {
    /// Requests run on this node's model host.
    pub local: u64,
    /// Requests handed to a peer.
    pub forwarded: u64,
}

/// Per-peer counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerCounters {
    /// Requests handed to it.
    pub forwarded: u64,
    /// Handoffs that failed.
    pub failures: u64,
    /// Handoffs under way.
    pub outstanding: u32,
    /// Its score at the last plan, per model, in milliseconds.
    pub score_ms: BTreeMap<String, f64>,
    #[serde(skip)]
    recent_failures: VecDeque<Instant>,
}

/// The router actor.
#[derive(Debug, Default)]
pub struct Router;

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct Arguments {
    /// Where peers' loads and connections are known.
    pub directory: PeerDirectoryHandle,
}

/// The router's state.
pub struct State {
    directory: PeerDirectoryHandle,
    stats: RoutingStats,
}

impl Actor for Router {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        Ok(State {
            directory: args.directory,
            stats: RoutingStats::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Plan {
                model,
                path,
                hop_budget,
                prefix,
                reply,
            } => {
                let targets = state
                    .plan(&model, &path, hop_budget, prefix)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "no routing view");
                        e
                    });
                let _ = reply.send(targets);
            }
            Msg::RanLocally { model } => state.stats.models.entry(model).or_default().local += 1,
            Msg::Forwarded { model, peer } => {
                state.stats.models.entry(model).or_default().forwarded += 1;
                let counters = state.stats.peers.entry(peer).or_default();
                counters.forwarded += 1;
                counters.outstanding += 1;
            }
            Msg::Ended { peer, ok } => {
                let counters = state.stats.peers.entry(peer).or_default();
                counters.outstanding = counters.outstanding.saturating_sub(1);
                if !ok {
                    counters.failures += 1;
                    counters.recent_failures.push_back(Instant::now());
                }
            }
            Msg::Stats(reply) => {
                let _ = reply.send(state.stats.clone());
            }
        }
        Ok(())
    }
}

impl State {
    async fn plan(
        &mut self,
        model: &str,
        path: &[String],
        hop_budget: u8,
        prefix: Option<Prefix>,
    ) -> Result<Vec<Target>, LocalCallError> {
        let hosts = self.directory.candidates(model, path, hop_budget).await?;
        let now = Instant::now();
        let candidates: Vec<Candidate> = hosts
            .iter()
            .map(|h| {
                let counters = self.stats.peers.entry(h.name.clone()).or_default();
                while counters
                    .recent_failures
                    .front()
                    .is_some_and(|t| now - *t > FAILURE_WINDOW)
                {
                    counters.recent_failures.pop_front();
                }
                Candidate {
                    name: h.name.clone(),
                    rtt: h.connection.rtt(),
                    queued: h.load.queued,
                    in_flight: h.load.in_flight,
                    concurrency: h.load.concurrency,
                    service_time: placement::service_time(h.load.service_ms),
                    sent_by_us: counters.outstanding,
                    recent_failures: counters.recent_failures.len() as u32,
                    // Only a host's own advert says what it holds (a region's summary never does).
                    warm: h.via == Via::Host
                        && prefix.is_some_and(|p| h.load.warm.contains(&p.key)),
                }
            })
            .collect();
        for c in &candidates {
            let score = placement::score(c);
            if let Some(counters) = self.stats.peers.get_mut(&c.name) {
                counters
                    .score_ms
                    .insert(model.to_owned(), score.as_secs_f64() * 1000.0);
            }
        }
        let ranked = match &prefix {
            Some(prefix) => placement::rank_for_prefix(&candidates, path, MAX_ATTEMPTS, prefix),
            None => placement::rank(&candidates, path, MAX_ATTEMPTS),
        };
        Ok(ranked
            .into_iter()
            .filter_map(|c| {
                let host = hosts.iter().find(|h| h.name == c.name)?;
                Some(Target {
                    name: c.name.clone(),
                    connection: host.connection.clone(),
                    score: placement::score(c),
                    warm: c.warm,
                    via: host.via,
                })
            })
            .collect())
    }
}

/// Typed handle to the router; follows it across restarts.
#[derive(Debug, Clone)]
pub struct RouterHandle(pub(crate) ActorSlot<Msg>);

impl RouterHandle {
    /// Ranked peers for `model`, leaving out `path`, that a request with `hop_budget` hops left
    /// can reach it through: this region's hosts, else gateways towards another region (empty
    /// when none is known); `Err` when the router or the directory did not answer, which is not
    /// the same as "no peer".
    pub async fn plan(
        &self,
        model: &str,
        path: &[String],
        hop_budget: u8,
        prefix: Option<Prefix>,
    ) -> Result<Vec<Target>, LocalCallError> {
        let (model, path) = (model.to_owned(), path.to_vec());
        super::call_local(&self.0.get(), |reply| Msg::Plan {
            model,
            path,
            hop_budget,
            prefix,
            reply,
        })
        .await?
    }

    /// Records a request admitted locally.
    pub fn ran_locally(&self, model: &str) {
        let _ = self.0.get().cast(Msg::RanLocally {
            model: model.to_owned(),
        });
    }

    /// Records a handoff starting.
    pub fn forwarded(&self, model: &str, peer: &str) {
        let _ = self.0.get().cast(Msg::Forwarded {
            model: model.to_owned(),
            peer: peer.to_owned(),
        });
    }

    /// Records a handoff ending.
    pub fn ended(&self, peer: &str, ok: bool) {
        let _ = self.0.get().cast(Msg::Ended {
            peer: peer.to_owned(),
            ok,
        });
    }

    /// Routing counters.
    pub async fn stats(&self) -> Result<RoutingStats, LocalCallError> {
        super::call_local(&self.0.get(), Msg::Stats).await
    }
}
