//! PeerDirectory: the node's live view of its peers. A child of `NodeSupervisor`, restarted by
//! it on failure (the cluster host then replays the links it holds).
//!
//! It learns about connections and ractor_cluster sessions from `ClusterHost`, and about what
//! each peer knows from adverts. Every second it sends its own advert to each connected peer
//! on a unidirectional stream of that peer's QUIC connection; an advert that arrives is filed
//! under the name of the certificate of the connection it came on, never under the name it
//! claims (a mismatch is dropped and logged), and only after every field was checked against
//! its bounds ([`PeerAdvert::check`]). Adverts carry the peer list that drives peer exchange,
//! the sender's hardware, and the live state and load of each model it hosts.

mod revocations;

pub use revocations::serve as serve_revoked;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::task::JoinSet;

use super::{AbortOnDrop, ActorSlot, LocalCallError};
use crate::actors::model_host::LocalModels;
use crate::credentials::revoked::{self, KeyId, RevokedKeys};
use crate::hardware::Hardware;
use crate::membership::view::{BoundsReached, Candidates, View};
use crate::membership::{Direction, KnownPeer};
use crate::peer::advert::{AdvertisedModel, MAX_ADVERT_ACCOUNTS, ModelLoad, PeerAdvert};
use revocations::{Budget, PullState};

/// Process group every node's directory joins (it shows the mesh's directories in
/// `/admin/actors`; adverts travel on QUIC streams, not through the group).
pub const GROUP: &str = "ganglion.peers";

/// How often a directory sends its advert to every peer.
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);

/// A peer a request for a model can be handed to, with what routing needs to know of it.
#[derive(Debug, Clone)]
pub struct HostingPeer {
    /// The peer's name.
    pub name: String,
    /// Its connection (for RTT, and to open data streams on).
    pub connection: quinn::Connection,
    /// Its advertised load for the model (a region's, added up, for another region's gateway;
    /// none known for this region's gateway).
    pub load: ModelLoad,
    /// Whether it hosts the model, or passes it on to another region.
    pub via: Via,
}

/// How a candidate reaches the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// It hosts the model (a peer of this region).
    Host,
    /// It is a gateway of another region that hosts the model.
    OtherRegion,
    /// It is a gateway of this region, which knows a region that hosts the model.
    Gateway,
}

/// The membership of this node, as `/admin/membership` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipView {
    /// This node's region.
    pub region: String,
    /// Whether this node is one of its region's gateways.
    pub gateway: bool,
    /// Its region's gateways, as this node sees them.
    pub gateways: Vec<String>,
    /// Members of its region with a session, this node included.
    pub region_size: usize,
    /// Regions it knows of (each region's home grants this share of a daily limit).
    pub regions_known: usize,
    /// Other regions' gateways connected (a gateway's).
    pub other_regions: BTreeMap<String, Vec<String>>,
    /// Bounds reached.
    pub bounds: BoundsReached,
}

/// What the cluster host should do with its connections.
#[derive(Debug, Clone, Default)]
pub struct DialPlan {
    /// Addresses worth dialing.
    pub targets: Vec<KnownPeer>,
    /// Connected peers that the region rule does not keep.
    pub unwanted: Vec<String>,
}

/// Where a peer's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// The QUIC connection is up; the ractor_cluster session is not (yet).
    Connecting,
    /// The QUIC connection and the ractor_cluster session are up.
    Connected,
}

/// A peer as `/admin/peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// The peer's name (from its certificate).
    pub name: String,
    /// The address it advertises (or, before its first advert, the one it was reached at).
    pub address: SocketAddr,
    /// The remote address of the QUIC connection.
    pub remote_address: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// Connection state.
    pub state: PeerState,
    /// Smoothed round-trip time measured by QUIC.
    pub rtt_ms: f64,
    /// When the current connection was established (RFC 3339, UTC).
    pub connected_since: String,
    /// Milliseconds since the last advert from this peer, if any arrived.
    pub last_advert_ms: Option<u64>,
    /// Its region.
    pub region: Option<String>,
    /// Whether it is a gateway of its region.
    pub gateway: bool,
    /// Members of its region it has a session with, itself included.
    pub region_size: u32,
    /// Its region's members it named in its last advert (a rotating sample).
    pub peers: Vec<String>,
    /// Models this peer serves now.
    pub models: Vec<String>,
    /// Every model this peer was configured to host, with its live state.
    pub model_states: Vec<AdvertisedModel>,
    /// This peer's hardware, once advertised.
    pub hardware: Option<Hardware>,
    /// Its advertised load per hosted model.
    pub loads: Vec<ModelLoad>,
    /// Revoked key ids it offered beyond its budget or the set's bound.
    pub revoked_held_back: u64,
    /// Its adverts refused (a field out of bounds, or another member's name).
    pub adverts_refused: u64,
}

/// Messages of the directory.
pub enum Msg {
    /// A verified QUIC connection to `peer` is in place (replacing any earlier one).
    LinkUp {
        /// The peer's name.
        peer: String,
        /// The connection, for RTT and addresses.
        connection: quinn::Connection,
        /// Who dialed.
        direction: Direction,
    },
    /// The connection with this id to `peer` ended.
    LinkDown {
        /// The peer's name.
        peer: String,
        /// quinn's stable id of the connection that ended.
        connection_id: usize,
    },
    /// The ractor_cluster session over this connection is ready.
    SessionUp {
        /// The peer's name.
        peer: String,
        /// The connection the session runs on.
        connection_id: usize,
    },
    /// The ractor_cluster session over this connection ended.
    SessionDown {
        /// The peer's name.
        peer: String,
        /// The connection the session ran on.
        connection_id: usize,
    },
    /// An advert that arrived on the connection of `peer` (not yet checked).
    Advert {
        /// The certificate name of the connection it came on.
        peer: String,
        /// The advert.
        advert: Box<PeerAdvert>,
    },
    /// A pull of `peer`'s revoked set (whose digest was `digest`) ended.
    Pulled {
        /// The peer pulled from.
        peer: String,
        /// The digest its advert gave for the set pulled.
        digest: [u8; 16],
        /// The ids, or why not.
        pulled: Result<Vec<KeyId>, crate::peer::PeerError>,
    },
    /// Periodic: send this node's advert to every peer.
    Tick,
    /// Forget every peer (a restarted cluster host replays the links it holds).
    Reset,
    /// The peers as `/admin/peers` shows them.
    List(RpcReplyPort<Vec<PeerView>>),
    /// Advertised peers this node is not connected to, and connections to let go.
    DialPlan(RpcReplyPort<DialPlan>),
    /// Where a request for a model (its path, its hops left) can be handed.
    Candidates {
        /// The model.
        model: String,
        /// Nodes the request visited.
        path: Vec<String>,
        /// Hops it may still take.
        hop_budget: u8,
        /// Where the answer goes.
        reply: RpcReplyPort<Vec<HostingPeer>>,
    },
    /// Connected peers of this region, with their connections.
    Members(RpcReplyPort<Vec<(String, quinn::Connection)>>),
    /// This node's membership.
    Membership(RpcReplyPort<MembershipView>),
}

// Serializable only so that the directory can be a member of a process group that other
// nodes see; no variant ever crosses the wire (adverts travel on QUIC streams).
impl ractor::Message for Msg {
    fn serializable() -> bool {
        true
    }
}

/// The directory actor.
#[derive(Debug, Default)]
pub struct PeerDirectory;

/// Start-up arguments (kept by the supervisor to restart the directory).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// This node's name.
    pub name: String,
    /// The address this node advertises.
    pub advertise: SocketAddr,
    /// The region this node belongs to.
    pub region: String,
    /// Sessions by peer; told which peers are in other regions.
    pub sessions: crate::facts::SessionNodes,
    /// The model hosts of this node.
    pub hosts: LocalModels,
    /// This node's hardware.
    pub hardware: Hardware,
    /// Revoked API keys: gossiped in adverts, grown from peers' adverts.
    pub revoked: RevokedKeys,
    /// Where the revoked set is kept across restarts.
    pub revoked_file: std::path::PathBuf,
    /// Where usage counters are kept (advertised, and merged from peers' adverts).
    pub meter: crate::actors::meter::MeterHandle,
    /// Told when this node's usage grew: an advert goes out soon, not only at the next tick.
    pub usage_changed: std::sync::Arc<tokio::sync::Notify>,
    /// Injected faults (a member list answered too late).
    pub faults: std::sync::Arc<crate::faults::Faults>,
    /// Nodes in the mesh, this one included, counted at every tick (read when this directory
    /// does not answer in time).
    pub mesh_size: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Regions known, counted at every tick (each region's home grants its share of a limit).
    pub regions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Entry {
    connection: quinn::Connection,
    direction: Direction,
    since: SystemTime,
    session: Option<usize>,
    advert: Option<(PeerAdvert, Instant)>,
    /// When to pull the peer's revoked set.
    pull: PullState,
}

impl Entry {
    fn state(&self) -> PeerState {
        if self.session == Some(self.connection.stable_id()) {
            PeerState::Connected
        } else {
            PeerState::Connecting
        }
    }

    /// Where the peer can be dialed: what it advertises, unless that is a wildcard address
    /// (a node listening on 0.0.0.0 without `advertise`), in which case the address its
    /// packets come from, which is its one UDP socket.
    fn address(&self) -> SocketAddr {
        match &self.advert {
            Some((advert, _)) if !advert.addr.ip().is_unspecified() => advert.addr,
            _ => self.connection.remote_address(),
        }
    }
}

/// The directory's state.
pub struct State {
    name: String,
    hosts: LocalModels,
    /// What adverts taught: regions, gateways, samples, summaries.
    view: View,
    sessions: crate::facts::SessionNodes,
    hardware: Hardware,
    peers: BTreeMap<String, Entry>,
    /// Adverts being sent, one task per peer and tick, each bounded by the advert interval.
    sending: JoinSet<()>,
    revoked: RevokedKeys,
    /// What each member did, kept across its reconnections.
    conduct: HashMap<String, Conduct>,
    /// Which accounts' usage the next advert carries.
    usage_window: crate::metering::usage::AdvertWindow,
    meter: crate::actors::meter::MeterHandle,
    faults: std::sync::Arc<crate::faults::Faults>,
    mesh_size: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    regions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Sends an extra advert soon after usage grows; aborted with the state.
    _on_usage: AbortOnDrop,
    /// Stores the revoked set when it grows; aborted with the state.
    _store_revoked: AbortOnDrop,
}

/// What the directory keeps of one member's conduct.
struct Conduct {
    /// How many revoked ids it may still add.
    budget: Budget,
    /// Revoked ids it offered beyond its budget or the set's bound.
    revoked_held_back: u64,
    /// Its adverts refused.
    adverts_refused: u64,
    /// When a warning about it was last logged.
    warned: Option<Instant>,
}

/// Least time between two adverts heard from one peer; one sooner is dropped.
const MIN_ADVERT_GAP: Duration = Duration::from_millis(100);
/// Least time between two warnings logged about one peer.
const WARN_GAP: Duration = Duration::from_secs(10);

/// Least time between two adverts sent because usage grew.
const USAGE_ADVERT_GAP: Duration = Duration::from_millis(200);

impl State {
    /// This node's advert, with this round's gossip (given the load of what it serves).
    fn advert(&mut self, loads: Vec<ModelLoad>) -> PeerAdvert {
        let models: Vec<AdvertisedModel> = self
            .hosts
            .states()
            .all()
            .into_iter()
            .map(|(id, state)| AdvertisedModel { id, state })
            .collect();
        let serving: Vec<ModelLoad> = loads
            .iter()
            .filter(|l| {
                models
                    .iter()
                    .any(|m| m.id == l.model && m.state == crate::facts::ModelState::Hosted)
            })
            .cloned()
            .collect();
        let membership = self.view.gossip(crate::metering::unix_now(), &serving);
        if self.view.bounds().summary_cut == 1 && membership.summary.is_some() {
            tracing::warn!(
                max = crate::membership::regions::MAX_SUMMARY_MODELS,
                "this region serves more models than a region summary lists; the ones with fewest hosts are left out"
            );
        }
        PeerAdvert {
            name: self.name.clone(),
            addr: self.view.me().addr,
            membership,
            models,
            hardware: self.hardware.clone(),
            loads,
            revoked: self.revoked.summary(),
            usage: Vec::new(),
        }
    }

    /// Takes revoked ids from `peer` within its budget; returns how many were new and whether
    /// every new one was taken. `pulled` is the digest of the set they came from, if a pull.
    fn learn_revoked(
        &mut self,
        peer: &str,
        ids: Vec<KeyId>,
        pulled: Option<[u8; 16]>,
    ) -> (usize, bool) {
        let new = self.revoked.unknown(ids);
        if new.is_empty() {
            return (0, true);
        }
        let granted = self.conduct(peer).budget.take(new.len(), Instant::now());
        let learned = self.revoked.learn(new[..granted].iter().copied());
        let over_budget = new.len() - granted;
        let held_back = over_budget + learned.refused;
        if held_back > 0 {
            self.conduct(peer).revoked_held_back += held_back as u64;
            if self.may_warn(peer) {
                tracing::warn!(
                    %peer,
                    held_back,
                    over_budget,
                    set_full = learned.refused,
                    "revoked ids from a peer held back (its budget or the set's bound)"
                );
            }
        }
        if learned.added > 0 {
            tracing::info!(%peer, added = learned.added, from_pull = pulled.is_some(), "API keys revoked");
        }
        // Ids refused because the set is full are not asked for again until the peer's set
        // changes: pulling it every few seconds would teach nothing.
        (learned.added, over_budget == 0)
    }

    /// Whether to log a warning about `peer` now: at most one per [`WARN_GAP`], so that a
    /// member cannot flood the log.
    fn may_warn(&mut self, peer: &str) -> bool {
        let now = Instant::now();
        let conduct = self.conduct(peer);
        if conduct
            .warned
            .is_some_and(|at| now.duration_since(at) < WARN_GAP)
        {
            return false;
        }
        conduct.warned = Some(now);
        true
    }

    /// What is kept of `peer`'s conduct (a full budget for a member first heard of now).
    fn conduct(&mut self, peer: &str) -> &mut Conduct {
        self.conduct
            .entry(peer.to_owned())
            .or_insert_with(|| Conduct {
                budget: Budget::new(Instant::now()),
                revoked_held_back: 0,
                adverts_refused: 0,
                warned: None,
            })
    }

    /// Starts a pull of `peer`'s revoked set if its summary differs from ours and one is due.
    fn pull_revoked_if_due(
        &mut self,
        myself: &ActorRef<Msg>,
        peer: &str,
        theirs: &revoked::Summary,
    ) {
        let ours = self.revoked.summary();
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        if !entry.pull.due(theirs, &ours, Instant::now()) {
            return;
        }
        entry.pull.start();
        let (connection, myself, peer, digest) = (
            entry.connection.clone(),
            myself.clone(),
            peer.to_owned(),
            theirs.digest,
        );
        tokio::spawn(async move {
            let pulled = crate::peer::revoked::pull(&connection).await;
            let _ = myself.cast(Msg::Pulled {
                peer,
                digest,
                pulled,
            });
        });
    }

    /// Where a request for `model` can go (see [`View::candidates`]), with the connections.
    fn candidates(&self, model: &str, path: &[String], hop_budget: u8) -> Vec<HostingPeer> {
        let idle = || ModelLoad::idle(model);
        let found: Vec<(String, ModelLoad, Via)> = match self
            .view
            .candidates(model, path, hop_budget)
        {
            Candidates::Hosts(hosts) => hosts.into_iter().map(|(n, l)| (n, l, Via::Host)).collect(),
            Candidates::Regions(gateways) => gateways
                .into_iter()
                .map(|(n, l)| (n, l, Via::OtherRegion))
                .collect(),
            Candidates::Gateways(gateways) => gateways
                .into_iter()
                .map(|n| (n, idle(), Via::Gateway))
                .collect(),
            Candidates::None => Vec::new(),
        };
        found
            .into_iter()
            .filter_map(|(name, load, via)| {
                let entry = self.peers.get(&name)?;
                (entry.state() == PeerState::Connected).then(|| HostingPeer {
                    name,
                    connection: entry.connection.clone(),
                    load,
                    via,
                })
            })
            .collect()
    }

    /// Forgets what `peer` said, and tells the cache which peers are of this region.
    fn forget(&mut self, peer: &str) {
        let was_member = self.view.in_region(peer);
        self.view.forget(peer);
        if was_member {
            self.publish_region();
        }
    }

    /// Learns `peer`'s stored advert into the view, if its session is up; tells the cache when
    /// the peer's region became known or changed.
    fn learn(&mut self, peer: &str) {
        let Some(entry) = self.peers.get(peer) else {
            return;
        };
        let Some((advert, _)) = &entry.advert else {
            return;
        };
        if entry.state() != PeerState::Connected {
            return;
        }
        let was_member = self.view.in_region(peer);
        let (addr, gossip, serving) = (
            entry.address(),
            std::sync::Arc::new(advert.membership.clone()),
            advert.serving_loads().into(),
        );
        if self.view.learn(peer, addr, gossip, serving) && self.view.bounds().heard_full == 1 {
            tracing::warn!(
                max = crate::membership::view::MAX_HEARD,
                "too many addresses heard of to keep: the rest are dropped until some expire (see /admin/membership)"
            );
        }
        if was_member != self.view.in_region(peer) {
            self.publish_region();
        }
    }

    /// Tells the cache's shard set which connected peers are of this region.
    fn publish_region(&self) {
        let members: BTreeSet<String> = self.view.region_peers().map(str::to_owned).collect();
        self.sessions.set_region_peers(members);
    }

    fn membership(&self) -> MembershipView {
        let mut other_regions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in self.peers.keys() {
            if let Some(region) = self.view.region_of(name)
                && region != self.view.me().region
            {
                other_regions
                    .entry(region.to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        MembershipView {
            region: self.view.me().region.clone(),
            gateway: self.view.is_gateway(),
            gateways: self
                .view
                .gateways()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            region_size: self.view.region_peers().count() + 1,
            regions_known: self.view.regions_known(),
            other_regions,
            bounds: self.view.bounds().clone(),
        }
    }

    fn view(&self, name: &str, entry: &Entry) -> PeerView {
        PeerView {
            name: name.to_owned(),
            address: entry.address(),
            remote_address: entry.connection.remote_address(),
            direction: entry.direction,
            state: entry.state(),
            rtt_ms: (entry.connection.rtt().as_secs_f64() * 1e6).round() / 1000.0,
            connected_since: humantime::format_rfc3339_millis(entry.since).to_string(),
            last_advert_ms: entry
                .advert
                .as_ref()
                .map(|(_, at)| at.elapsed().as_millis() as u64),
            region: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.membership.region.clone()),
            gateway: entry
                .advert
                .as_ref()
                .is_some_and(|(a, _)| a.membership.gateway),
            region_size: entry
                .advert
                .as_ref()
                .map_or(0, |(a, _)| a.membership.region_size),
            peers: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.membership.peers.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default(),
            models: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.serving().map(str::to_owned).collect())
                .unwrap_or_default(),
            model_states: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.models.clone())
                .unwrap_or_default(),
            hardware: entry.advert.as_ref().map(|(a, _)| a.hardware.clone()),
            loads: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.loads.clone())
                .unwrap_or_default(),
            revoked_held_back: self.conduct.get(name).map_or(0, |c| c.revoked_held_back),
            adverts_refused: self.conduct.get(name).map_or(0, |c| c.adverts_refused),
        }
    }

    fn dial_plan(&self) -> DialPlan {
        DialPlan {
            targets: self.view.dial_targets(|peer| self.peers.contains_key(peer)),
            unwanted: self.view.unwanted(),
        }
    }
}

impl Actor for PeerDirectory {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);
        myself.send_interval(ADVERT_INTERVAL, || Msg::Tick);
        Ok(State {
            view: View::new(
                KnownPeer {
                    name: args.name.clone(),
                    addr: args.advertise,
                    region: args.region,
                },
                crate::metering::unix_now(),
            ),
            sessions: args.sessions,
            name: args.name,
            hosts: args.hosts,
            hardware: args.hardware,
            peers: BTreeMap::new(),
            sending: JoinSet::new(),
            _store_revoked: AbortOnDrop(tokio::spawn(
                args.revoked.clone().keep_stored(args.revoked_file),
            )),
            revoked: args.revoked,
            conduct: HashMap::new(),
            usage_window: Default::default(),
            faults: args.faults,
            mesh_size: args.mesh_size,
            regions: args.regions,
            meter: args.meter,
            _on_usage: {
                let (changed, myself) = (args.usage_changed, myself.clone());
                AbortOnDrop(tokio::spawn(async move {
                    loop {
                        changed.notified().await;
                        tokio::time::sleep(USAGE_ADVERT_GAP).await;
                        if myself.cast(Msg::Tick).is_err() {
                            return;
                        }
                    }
                }))
            },
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::LinkUp {
                peer,
                connection,
                direction,
            } => {
                // A replaced connection's session and advert go with it.
                state.forget(&peer);
                state.peers.insert(
                    peer,
                    Entry {
                        connection,
                        direction,
                        since: SystemTime::now(),
                        session: None,
                        advert: None,
                        pull: PullState::default(),
                    },
                );
            }
            Msg::LinkDown {
                peer,
                connection_id,
            } => {
                if state
                    .peers
                    .get(&peer)
                    .is_some_and(|e| e.connection.stable_id() == connection_id)
                {
                    state.peers.remove(&peer);
                    state.forget(&peer);
                    tracing::info!(%peer, "peer removed from directory");
                }
            }
            Msg::SessionUp {
                peer,
                connection_id,
            } => {
                if let Some(entry) = state.peers.get_mut(&peer) {
                    entry.session = Some(connection_id);
                    tracing::info!(%peer, "peer connected");
                    // An advert that came before the session is learned now.
                    state.learn(&peer);
                }
            }
            Msg::SessionDown {
                peer,
                connection_id,
            } => {
                if let Some(entry) = state.peers.get_mut(&peer)
                    && entry.session == Some(connection_id)
                {
                    entry.session = None;
                    state.forget(&peer);
                }
            }
            Msg::Advert { peer, mut advert } => {
                let too_soon = state.peers.get(&peer).is_some_and(|e| {
                    e.advert
                        .as_ref()
                        .is_some_and(|(_, at)| at.elapsed() < MIN_ADVERT_GAP)
                });
                if too_soon {
                    // An honest node sends one a second, and one more soon after its usage grew.
                    tracing::debug!(%peer, "advert dropped: too soon after the last");
                } else if let Err(e) = advert.check(&peer) {
                    state.conduct(&peer).adverts_refused += 1;
                    if state.may_warn(&peer) {
                        tracing::warn!(%peer, error = %e, "advert refused");
                    }
                } else if state.peers.contains_key(&peer) {
                    let dropped = advert.drop_bad_records();
                    if dropped > 0 && state.may_warn(&peer) {
                        tracing::warn!(%peer, dropped, "usage records naming no valid account dropped");
                    }
                    state.learn_revoked(&peer, advert.revoked.recent.clone(), None);
                    state.pull_revoked_if_due(&myself, &peer, &advert.revoked);
                    state.meter.merge(&peer, advert.usage.clone());
                    if let Some(entry) = state.peers.get_mut(&peer) {
                        entry.advert = Some((*advert, Instant::now()));
                        state.learn(&peer);
                    }
                } else {
                    tracing::debug!(%peer, "advert from a peer without a connection");
                }
            }
            Msg::Pulled {
                peer,
                digest,
                pulled,
            } => {
                let (added, complete) = match pulled {
                    Ok(ids) => state.learn_revoked(&peer, ids, Some(digest)),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "revoked set not pulled");
                        (0, false)
                    }
                };
                if let Some(entry) = state.peers.get_mut(&peer) {
                    entry
                        .pull
                        .done(Some(digest), added, complete, Instant::now());
                }
            }
            Msg::Tick => {
                while state.sending.try_join_next().is_some() {}
                let region_size = state.view.region_peers().count() + 1;
                state
                    .mesh_size
                    .store(region_size, std::sync::atomic::Ordering::Relaxed);
                state.regions.store(
                    state.view.regions_known(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let loads = local_loads(&state.hosts).await;
                let mut advert = state.advert(loads);
                let today = crate::metering::usage::day_of(crate::metering::unix_now());
                match state.meter.own(today).await {
                    Ok(mut usage) => {
                        // A record charged before accounts were checked on handoff.
                        usage.retain(|u| ganglion_client::protocol::account_name_ok(&u.account));
                        advert.usage = state.usage_window.pick(usage, MAX_ADVERT_ACCOUNTS);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "meter did not answer; advert without usage")
                    }
                }
                let frame = match crate::peer::advert::encode(&advert) {
                    Ok(frame) => std::sync::Arc::new(frame),
                    Err(e) => {
                        tracing::error!(error = %e, "own advert does not encode");
                        return Ok(());
                    }
                };
                for (peer, entry) in &state.peers {
                    if entry.state() != PeerState::Connected {
                        continue;
                    }
                    let (connection, frame) = (entry.connection.clone(), frame.clone());
                    let peer = peer.clone();
                    state.sending.spawn(async move {
                        let sent = tokio::time::timeout(
                            ADVERT_INTERVAL,
                            crate::peer::advert::send(&connection, &frame),
                        )
                        .await;
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::debug!(%peer, "advert not sent in time");
                        }
                    });
                }
            }
            Msg::Reset => {
                if !state.peers.is_empty() {
                    tracing::info!(peers = state.peers.len(), "peer directory reset");
                }
                state.peers.clear();
                state.view.clear();
                state.publish_region();
            }
            Msg::List(reply) => {
                let _ = reply.send(state.peers.iter().map(|(n, e)| state.view(n, e)).collect());
            }
            Msg::DialPlan(reply) => {
                let _ = reply.send(state.dial_plan());
            }
            Msg::Membership(reply) => {
                let _ = reply.send(state.membership());
            }
            Msg::Members(reply) if state.faults.directory_stalled() => {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let _ = reply.send(Vec::new());
                });
            }
            Msg::Members(reply) => {
                let members = state
                    .peers
                    .iter()
                    .filter(|(name, e)| {
                        e.state() == PeerState::Connected && state.view.in_region(name)
                    })
                    .map(|(name, e)| (name.clone(), e.connection.clone()))
                    .collect();
                let _ = reply.send(members);
            }
            Msg::Candidates {
                model,
                path,
                hop_budget,
                reply,
            } => {
                let _ = reply.send(state.candidates(&model, &path, hop_budget));
            }
        }
        Ok(())
    }
}

/// The load of every model hosted here, from the model hosts.
async fn local_loads(hosts: &LocalModels) -> Vec<ModelLoad> {
    let mut loads = Vec::new();
    for model in hosts.ids() {
        let Some(host) = hosts.get(&model) else {
            continue;
        };
        if let Ok(stats) = host.stats().await {
            loads.push(ModelLoad {
                model,
                queued: stats.queued as u32,
                in_flight: stats.in_flight as u32,
                concurrency: stats.concurrency as u32,
                service_ms: stats.service_ms,
                warm: stats.warm,
            });
        }
    }
    loads
}

/// Typed handle to the directory; follows it across restarts.
#[derive(Debug, Clone)]
pub struct PeerDirectoryHandle(pub(crate) ActorSlot<Msg>);

impl PeerDirectoryHandle {
    fn cast(&self, msg: Msg) {
        // A failed cast means the node is stopping or the directory is being restarted (the
        // cluster host replays its links to the new one).
        let _ = self.0.get().cast(msg);
    }

    /// Hands over an advert that arrived on `peer`'s connection.
    pub fn advert(&self, peer: String, advert: PeerAdvert) {
        self.cast(Msg::Advert {
            peer,
            advert: Box::new(advert),
        });
    }

    /// Forgets every peer (their connections are dropped with them).
    pub fn reset(&self) {
        self.cast(Msg::Reset);
    }

    /// Records a new connection to `peer`.
    pub fn link_up(&self, peer: String, connection: quinn::Connection, direction: Direction) {
        self.cast(Msg::LinkUp {
            peer,
            connection,
            direction,
        });
    }

    /// Records the end of a connection.
    pub fn link_down(&self, peer: String, connection_id: usize) {
        self.cast(Msg::LinkDown {
            peer,
            connection_id,
        });
    }

    /// Records a ready ractor_cluster session.
    pub fn session_up(&self, peer: String, connection_id: usize) {
        self.cast(Msg::SessionUp {
            peer,
            connection_id,
        });
    }

    /// Records the end of a ractor_cluster session.
    pub fn session_down(&self, peer: String, connection_id: usize) {
        self.cast(Msg::SessionDown {
            peer,
            connection_id,
        });
    }

    /// The peers, for the admin endpoint.
    pub async fn list(&self) -> Result<Vec<PeerView>, LocalCallError> {
        self.call(Msg::List).await
    }

    /// Advertised peers not yet connected, and connections the region rule does not keep.
    pub async fn dial_plan(&self) -> Result<DialPlan, LocalCallError> {
        self.call(Msg::DialPlan).await
    }

    /// This node's membership: region, gateways, bounds reached.
    pub async fn membership(&self) -> Result<MembershipView, LocalCallError> {
        self.call(Msg::Membership).await
    }

    /// Connected peers of this node's region, with their connections.
    pub async fn members(&self) -> Result<Vec<(String, quinn::Connection)>, LocalCallError> {
        self.call(Msg::Members).await
    }

    /// Where a request for `model` that visited `path` and may take `hop_budget` more hops
    /// can be handed: this region's hosts, else gateways towards a region that hosts it.
    pub async fn candidates(
        &self,
        model: &str,
        path: &[String],
        hop_budget: u8,
    ) -> Result<Vec<HostingPeer>, LocalCallError> {
        let (model, path) = (model.to_owned(), path.to_vec());
        self.call(|reply| Msg::Candidates {
            model,
            path,
            hop_budget,
            reply,
        })
        .await
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> Msg,
    ) -> Result<T, LocalCallError> {
        super::call_local(&self.0.get(), msg).await
    }
}
