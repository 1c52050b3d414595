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

use ganglion_client::protocol::{MAX_MODEL_ID_BYTES, MAX_NODE_NAME_BYTES, MAX_OPEN_FRAME_LEN};
use ganglion_client::{PeerStreamKind, write_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::{AbortOnDrop, ActorSlot, LocalCallError};
use crate::actors::model_host::LocalModels;
use crate::credentials::revoked::{self, KeyId, MAX_RECENT, RevokedKeys};
use crate::facts::ModelState;
use crate::hardware::Hardware;
use crate::membership::{Direction, KnownPeer, dial_targets};
use crate::routing::placement::MAX_SERVICE_TIME;
use revocations::{Budget, PullState};

/// Process group every node's directory joins (it shows the mesh's directories in
/// `/admin/actors`; adverts travel on QUIC streams, not through the group).
pub const GROUP: &str = "ganglion.peers";

/// How often a directory sends its advert to every peer.
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);

/// Bound on an encoded advert; a larger one is refused on arrival. Every list in an advert is
/// bounded, and their bounds together fit well within it (about 80 KiB at most).
pub const MAX_ADVERT_LEN: usize = 128 * 1024;

/// Most peers an advert may list.
pub const MAX_ADVERT_PEERS: usize = 256;
/// Most models an advert may list.
pub const MAX_ADVERT_MODELS: usize = 64;
/// Most accounts whose usage an advert may carry.
pub const MAX_ADVERT_ACCOUNTS: usize = 256;
/// Most accelerators an advert may list, and the longest name of one.
const MAX_ACCELERATORS: usize = 16;
const MAX_ACCELERATOR_NAME: usize = 128;

/// What a node tells every peer about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// The sender's name.
    pub name: String,
    /// The address peers should dial.
    pub addr: SocketAddr,
    /// Peers the sender has a live session with.
    pub peers: Vec<KnownPeer>,
    /// The models the sender was configured to host, each with its live state.
    pub models: Vec<AdvertisedModel>,
    /// The sender's hardware.
    pub hardware: Hardware,
    /// Load of each hosted model, at most one advert interval old.
    pub loads: Vec<ModelLoad>,
    /// The sender's set of revoked API keys, summarised (a grow-only set: every node adds
    /// what it hears and pulls what it lacks, so a revocation reaches every live node and any
    /// that joins later).
    pub revoked: revoked::Summary,
    /// The sender's own usage totals per account, today (grow-only counters).
    pub usage: Vec<crate::metering::usage::NodeUsage>,
}

/// A model in an advert, with its live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedModel {
    /// Catalog id.
    pub id: String,
    /// Whether it serves now.
    pub state: ModelState,
}

/// Why an advert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertRefused {
    /// It names a node other than the certificate of the connection it came on.
    #[error("advert claims to be from `{claimed}` but arrived on the connection of `{peer}`")]
    WrongSender {
        /// The name in the advert.
        claimed: String,
        /// The certificate's name.
        peer: String,
    },
    /// A field is out of bounds.
    #[error("advert field `{0}` is out of bounds")]
    OutOfBounds(&'static str),
}

impl PeerAdvert {
    /// Checks that the advert is `peer`'s own and that every field is within its bounds.
    pub fn check(&self, peer: &str) -> Result<(), AdvertRefused> {
        let bad = |field| Err(AdvertRefused::OutOfBounds(field));
        if self.name != peer {
            return Err(AdvertRefused::WrongSender {
                claimed: self.name.clone(),
                peer: peer.to_owned(),
            });
        }
        // A node listening on a wildcard address without `--advertise` advertises it as is; its
        // peers then dial the address its packets come from (see `Entry::address`).
        if self.addr.port() == 0 || self.addr.ip().is_multicast() {
            return bad("addr");
        }
        if self.peers.len() > MAX_ADVERT_PEERS
            || self
                .peers
                .iter()
                .any(|p| !node_name_ok(&p.name) || !dialable(p.addr))
        {
            return bad("peers");
        }
        if self.models.len() > MAX_ADVERT_MODELS || self.models.iter().any(|m| !model_id_ok(&m.id))
        {
            return bad("models");
        }
        let max_ms = MAX_SERVICE_TIME.as_secs_f64() * 1000.0;
        if self.loads.len() > MAX_ADVERT_MODELS
            || self.loads.iter().any(|l| {
                !model_id_ok(&l.model)
                    || !l.service_ms.is_finite()
                    || !(0.0..=max_ms).contains(&l.service_ms)
            })
        {
            return bad("loads");
        }
        if self.revoked.recent.len() > MAX_RECENT {
            return bad("revoked");
        }
        if self.usage.len() > MAX_ADVERT_ACCOUNTS {
            return bad("usage");
        }
        let h = &self.hardware;
        if h.accelerators.len() > MAX_ACCELERATORS
            || h.accelerators
                .iter()
                .any(|a| a.len() > MAX_ACCELERATOR_NAME)
        {
            return bad("hardware.accelerators");
        }
        Ok(())
    }

    /// Drops usage records that name no valid account (one bad record costs itself, not the
    /// advert); returns how many were dropped.
    pub fn drop_bad_records(&mut self) -> usize {
        let before = self.usage.len();
        self.usage
            .retain(|u| ganglion_client::protocol::account_name_ok(&u.account));
        before - self.usage.len()
    }

    /// Ids of the models the sender serves now.
    pub fn serving(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .filter(|m| m.state == ModelState::Hosted)
            .map(|m| m.id.as_str())
    }
}

fn node_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME_BYTES
}

fn model_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_MODEL_ID_BYTES
}

/// An address worth dialing: a concrete unicast address with a port.
fn dialable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast())
}

/// The load of one hosted model, as advertised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLoad {
    /// Catalog id.
    pub model: String,
    /// Requests waiting.
    pub queued: u32,
    /// Requests running.
    pub in_flight: u32,
    /// Requests run at once.
    pub concurrency: u32,
    /// Recent time to serve one request, in milliseconds.
    pub service_ms: f64,
}

/// A peer that hosts a model, with what routing needs to know of it.
#[derive(Debug, Clone)]
pub struct HostingPeer {
    /// The peer's name.
    pub name: String,
    /// Its connection (for RTT, and to open data streams on).
    pub connection: quinn::Connection,
    /// Its advertised load for the model.
    pub load: ModelLoad,
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
    /// Peers this peer reports a live session with.
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
        pulled: Result<Vec<KeyId>, revocations::PullError>,
    },
    /// Periodic: send this node's advert to every peer.
    Tick,
    /// Forget every peer (a restarted cluster host replays the links it holds).
    Reset,
    /// The peers as `/admin/peers` shows them.
    List(RpcReplyPort<Vec<PeerView>>),
    /// Advertised peers this node is not connected to.
    DialTargets(RpcReplyPort<Vec<KnownPeer>>),
    /// Connected peers hosting a model.
    HostsOf(String, RpcReplyPort<Vec<HostingPeer>>),
    /// Connected peers, with their connections.
    Members(RpcReplyPort<Vec<(String, quinn::Connection)>>),
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
    advertise: SocketAddr,
    hosts: LocalModels,
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
    fn advert(&self) -> PeerAdvert {
        PeerAdvert {
            name: self.name.clone(),
            addr: self.advertise,
            // Only peers whose own advert has arrived: until then the address they want to be
            // dialed at (`--advertise`, e.g. behind NAT) is not known, and the address their
            // packets come from may be one that others cannot reach.
            peers: self
                .peers
                .iter()
                .filter(|(_, e)| e.state() == PeerState::Connected && e.advert.is_some())
                .map(|(name, e)| KnownPeer {
                    name: name.clone(),
                    addr: e.address(),
                })
                .collect(),
            models: self
                .hosts
                .states()
                .all()
                .into_iter()
                .map(|(id, state)| AdvertisedModel { id, state })
                .collect(),
            hardware: self.hardware.clone(),
            loads: Vec::new(),
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
            let pulled = revocations::pull(&connection).await;
            let _ = myself.cast(Msg::Pulled {
                peer,
                digest,
                pulled,
            });
        });
    }

    /// Connected peers that advertise `model`, with their load.
    fn hosts_of(&self, model: &str) -> Vec<HostingPeer> {
        self.peers
            .iter()
            .filter(|(_, e)| e.state() == PeerState::Connected)
            .filter_map(|(name, e)| {
                let (advert, _) = e.advert.as_ref()?;
                if !advert.serving().any(|m| m == model) {
                    return None;
                }
                let load = advert
                    .loads
                    .iter()
                    .find(|l| l.model == model)
                    .cloned()
                    .or_else(|| {
                        Some(ModelLoad {
                            model: model.to_owned(),
                            queued: 0,
                            in_flight: 0,
                            concurrency: 1,
                            service_ms: 0.0,
                        })
                    })?;
                Some(HostingPeer {
                    name: name.clone(),
                    connection: e.connection.clone(),
                    load,
                })
            })
            .collect()
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
            peers: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.peers.iter().map(|p| p.name.clone()).collect())
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

    fn dial_targets(&self) -> Vec<KnownPeer> {
        let known: BTreeSet<String> = self.peers.keys().cloned().collect();
        let mut advertised: Vec<&KnownPeer> = self
            .peers
            .values()
            .filter(|e| e.state() == PeerState::Connected)
            .filter_map(|e| e.advert.as_ref())
            .flat_map(|(a, _)| &a.peers)
            .collect();
        advertised.sort();
        dial_targets(&self.name, &known, &BTreeSet::new(), advertised)
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
            name: args.name,
            advertise: args.advertise,
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
                let connected = state
                    .peers
                    .values()
                    .filter(|e| e.state() == PeerState::Connected)
                    .count();
                state
                    .mesh_size
                    .store(connected + 1, std::sync::atomic::Ordering::Relaxed);
                let mut advert = state.advert();
                advert.loads = local_loads(&state.hosts).await;
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
                let frame = match ganglion_client::codec::encode(&advert, MAX_ADVERT_LEN) {
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
                        let sent =
                            tokio::time::timeout(ADVERT_INTERVAL, send_advert(&connection, &frame))
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
            }
            Msg::List(reply) => {
                let _ = reply.send(state.peers.iter().map(|(n, e)| state.view(n, e)).collect());
            }
            Msg::DialTargets(reply) => {
                let _ = reply.send(state.dial_targets());
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
                    .filter(|(_, e)| e.state() == PeerState::Connected)
                    .map(|(name, e)| (name.clone(), e.connection.clone()))
                    .collect();
                let _ = reply.send(members);
            }
            Msg::HostsOf(model, reply) => {
                let _ = reply.send(state.hosts_of(&model));
            }
        }
        Ok(())
    }
}

/// Sends one encoded advert on a fresh unidirectional stream.
async fn send_advert(connection: &quinn::Connection, frame: &[u8]) -> Result<(), String> {
    let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
    write_frame(&mut stream, &PeerStreamKind::Advert, MAX_OPEN_FRAME_LEN)
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(frame).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())
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

    /// Advertised peers not yet connected.
    pub async fn dial_targets(&self) -> Result<Vec<KnownPeer>, LocalCallError> {
        self.call(Msg::DialTargets).await
    }

    /// Connected peers, with their connections.
    pub async fn members(&self) -> Result<Vec<(String, quinn::Connection)>, LocalCallError> {
        self.call(Msg::Members).await
    }

    /// Connected peers hosting `model`, with their advertised load.
    pub async fn hosts_of(&self, model: &str) -> Result<Vec<HostingPeer>, LocalCallError> {
        let model = model.to_owned();
        self.call(|reply| Msg::HostsOf(model, reply)).await
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> Msg,
    ) -> Result<T, LocalCallError> {
        super::call_local(&self.0.get(), msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::api_keys::MAX_ACCOUNT_LEN;

    fn advert() -> PeerAdvert {
        PeerAdvert {
            name: "a".into(),
            addr: "127.0.0.1:7400".parse().expect("addr"),
            peers: vec![KnownPeer {
                name: "b".into(),
                addr: "127.0.0.1:7401".parse().expect("addr"),
            }],
            models: vec![AdvertisedModel {
                id: "@ganglion/all-minilm-l6-v2".into(),
                state: ModelState::Hosted,
            }],
            hardware: Hardware {
                cores: 2,
                memory_total: 8 << 30,
                memory_available: 6 << 30,
                memory_limit: None,
                accelerators: Vec::new(),
            },
            loads: vec![ModelLoad {
                model: "@ganglion/all-minilm-l6-v2".into(),
                queued: 1,
                in_flight: 2,
                concurrency: 2,
                service_ms: 12.5,
            }],
            revoked: revoked::Summary {
                count: 1,
                digest: [7; 16],
                recent: vec![KeyId(0x0123456789abcdef)],
            },
            usage: vec![],
        }
    }

    #[test]
    fn adverts_survive_the_wire() {
        let frame = ganglion_client::codec::encode(&advert(), MAX_ADVERT_LEN).expect("encode");
        let back: PeerAdvert = ganglion_client::codec::decode_payload(&frame[5..]).expect("decode");
        assert_eq!(back, advert());
        assert!(back.check("a").is_ok());
    }

    #[test]
    fn an_advert_over_its_bound_is_refused_before_it_is_decoded() {
        let mut a = advert();
        a.peers = vec![a.peers[0].clone(); MAX_ADVERT_LEN / 8];
        let frame = ganglion_client::codec::encode(&a, 4 * MAX_ADVERT_LEN).expect("encode");
        assert!(frame.len() > MAX_ADVERT_LEN);
        let read = futures::executor::block_on(ganglion_client::read_frame::<_, PeerAdvert>(
            &mut frame.as_slice(),
            MAX_ADVERT_LEN,
        ));
        assert!(
            matches!(read, Err(ganglion_client::FrameError::TooLarge { .. })),
            "{read:?}"
        );
    }

    #[test]
    fn an_advert_with_every_list_full_still_fits_its_frame() {
        let mut a = advert();
        let name = "n".repeat(MAX_NODE_NAME_BYTES);
        let id = "m".repeat(MAX_MODEL_ID_BYTES);
        a.peers = vec![
            KnownPeer {
                name: name.clone(),
                addr: "[2001:db8::1]:65535".parse().expect("addr"),
            };
            MAX_ADVERT_PEERS
        ];
        a.models = vec![
            AdvertisedModel {
                id: id.clone(),
                state: ModelState::Restarting,
            };
            MAX_ADVERT_MODELS
        ];
        a.loads = vec![
            ModelLoad {
                model: id,
                queued: u32::MAX,
                in_flight: u32::MAX,
                concurrency: u32::MAX,
                service_ms: 1e6,
            };
            MAX_ADVERT_MODELS
        ];
        a.revoked.recent = vec![KeyId(u64::MAX); MAX_RECENT];
        a.usage = vec![
            crate::metering::usage::NodeUsage {
                day: u64::MAX,
                account: "a".repeat(MAX_ACCOUNT_LEN),
                totals: crate::metering::usage::Totals {
                    micro: u64::MAX,
                    requests: u64::MAX,
                    cached: u64::MAX,
                },
            };
            MAX_ADVERT_ACCOUNTS
        ];
        a.hardware.accelerators = vec!["x".repeat(MAX_ACCELERATOR_NAME); MAX_ACCELERATORS];
        assert!(a.check("a").is_ok());
        let frame = ganglion_client::codec::encode(&a, MAX_ADVERT_LEN).expect("fits");
        assert!(frame.len() < MAX_ADVERT_LEN, "{} bytes", frame.len());
    }

    #[test]
    fn a_node_on_a_wildcard_address_is_heard() {
        let mut a = advert();
        a.addr = "0.0.0.0:7400".parse().expect("addr");
        assert!(a.check("a").is_ok());
    }

    #[test]
    fn an_advert_counts_only_for_the_connection_it_came_on() {
        assert!(matches!(
            advert().check("b"),
            Err(AdvertRefused::WrongSender { .. })
        ));
    }

    #[test]
    fn out_of_bounds_adverts_are_refused() {
        let refused = |change: &dyn Fn(&mut PeerAdvert), field: &str| {
            let mut a = advert();
            change(&mut a);
            assert_eq!(
                a.check("a"),
                Err(AdvertRefused::OutOfBounds(match field {
                    "addr" => "addr",
                    "peers" => "peers",
                    "models" => "models",
                    "loads" => "loads",
                    "revoked" => "revoked",
                    _ => "hardware.accelerators",
                })),
                "{field}"
            );
        };
        refused(&|a| a.loads[0].service_ms = f64::INFINITY, "loads");
        refused(&|a| a.loads[0].service_ms = f64::NAN, "loads");
        refused(&|a| a.loads[0].service_ms = -1.0, "loads");
        refused(&|a| a.loads[0].service_ms = 1e300, "loads");
        refused(
            &|a| a.addr = "224.0.0.1:7400".parse().expect("addr"),
            "addr",
        );
        refused(&|a| a.addr.set_port(0), "addr");
        refused(
            &|a| a.peers = vec![a.peers[0].clone(); MAX_ADVERT_PEERS + 1],
            "peers",
        );
        refused(
            &|a| a.peers[0].addr = "224.0.0.1:5".parse().expect("addr"),
            "peers",
        );
        refused(
            &|a| a.peers[0].name = "x".repeat(MAX_NODE_NAME_BYTES + 1),
            "peers",
        );
        refused(&|a| a.models[0].id = String::new(), "models");
        refused(
            &|a| a.models = vec![a.models[0].clone(); MAX_ADVERT_MODELS + 1],
            "models",
        );
        refused(
            &|a| a.hardware.accelerators = vec![String::new(); MAX_ACCELERATORS + 1],
            "accelerators",
        );
        refused(
            &|a| a.revoked.recent = vec![KeyId(1); MAX_RECENT + 1],
            "revoked",
        );
    }

    #[test]
    fn a_usage_record_naming_no_account_costs_itself_not_the_advert() {
        let record = |account: &str| crate::metering::usage::NodeUsage {
            day: 1,
            account: account.to_owned(),
            totals: Default::default(),
        };
        let mut a = advert();
        a.usage = vec![
            record(""),
            record("acme"),
            record(&"x".repeat(MAX_ACCOUNT_LEN + 1)),
            record("a\u{7}"),
        ];
        assert!(a.check("a").is_ok());
        assert_eq!(a.drop_bad_records(), 3);
        assert_eq!(a.usage, [record("acme")]);
    }

    #[test]
    fn only_hosted_models_count_as_served() {
        let mut a = advert();
        assert_eq!(
            a.serving().collect::<Vec<_>>(),
            ["@ganglion/all-minilm-l6-v2"]
        );
        a.models[0].state = ModelState::Restarting;
        assert_eq!(a.serving().count(), 0);
    }
}
