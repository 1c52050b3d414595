//! PeerDirectory: the node's live view of its peers. A child of `NodeSupervisor`.
//!
//! It learns about connections and ractor_cluster sessions from `ClusterHost`, and about what
//! each peer knows from adverts that peers' directories send one another over the control plane
//! (every directory joins process group [`GROUP`]). Adverts carry the peer list that drives
//! peer exchange, and have room for what later subsystems publish (hardware, hosted models,
//! load).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::actors::model_host::LocalModels;
use crate::hardware::Hardware;
use crate::membership::{Direction, KnownPeer, dial_targets};

/// Process group every node's directory joins; its remote members are the adverts' audience.
pub const GROUP: &str = "ganglion.peers";

/// How often a directory sends its advert to every peer.
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);

/// Bound on an encoded advert; a larger one is dropped on arrival.
const MAX_ADVERT_LEN: usize = 256 * 1024;

/// Cast variant name of adverts on the wire.
const ADVERT_VARIANT: &str = "Advert";

/// What a node tells every peer about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// The sender's name.
    pub name: String,
    /// The address peers should dial.
    pub addr: SocketAddr,
    /// Peers the sender has a live session with.
    pub peers: Vec<KnownPeer>,
    /// Catalog ids of the models the sender hosts.
    pub models: Vec<String>,
    /// The sender's hardware.
    pub hardware: Hardware,
    /// Load of each hosted model, at most one advert interval old.
    pub loads: Vec<ModelLoad>,
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
    /// Models this peer hosts.
    pub models: Vec<String>,
    /// This peer's hardware, once advertised.
    pub hardware: Option<Hardware>,
    /// Its advertised load per hosted model.
    pub loads: Vec<ModelLoad>,
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
    /// An advert from a peer's directory (the only message that crosses nodes).
    Advert(PeerAdvert),
    /// Periodic: send this node's advert to every peer.
    Tick,
    /// The peers as `/admin/peers` shows them.
    List(RpcReplyPort<Vec<PeerView>>),
    /// Advertised peers this node is not connected to.
    DialTargets(RpcReplyPort<Vec<KnownPeer>>),
    /// Connected peers hosting a model.
    HostsOf(String, RpcReplyPort<Vec<HostingPeer>>),
}

impl ractor::Message for Msg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Msg::Advert(advert) => Ok(SerializedMessage::Cast {
                variant: ADVERT_VARIANT.to_owned(),
                args: ganglion_client::codec::encode(&advert, MAX_ADVERT_LEN)
                    .map_err(|_| BoxedDowncastErr)?,
                metadata: None,
            }),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        let SerializedMessage::Cast { variant, args, .. } = message else {
            return Err(BoxedDowncastErr);
        };
        if variant != ADVERT_VARIANT {
            return Err(BoxedDowncastErr);
        }
        let mut frame = args.as_slice();
        let len = ganglion_client::codec::check_header(
            frame
                .get(..5)
                .and_then(|h| h.try_into().ok())
                .ok_or(BoxedDowncastErr)?,
            MAX_ADVERT_LEN,
        )
        .map_err(|_| BoxedDowncastErr)?;
        frame = &frame[5..];
        if frame.len() != len {
            return Err(BoxedDowncastErr);
        }
        ganglion_client::codec::decode_payload(frame)
            .map(Msg::Advert)
            .map_err(|_| BoxedDowncastErr)
    }
}

/// The directory actor.
#[derive(Debug, Default)]
pub struct PeerDirectory;

/// Start-up arguments.
#[derive(Debug)]
pub struct Arguments {
    /// This node's name.
    pub name: String,
    /// The address this node advertises.
    pub advertise: SocketAddr,
    /// The model hosts of this node.
    pub hosts: LocalModels,
    /// This node's hardware.
    pub hardware: Hardware,
}

struct Entry {
    connection: quinn::Connection,
    direction: Direction,
    since: SystemTime,
    session: Option<usize>,
    advert: Option<(PeerAdvert, Instant)>,
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
    models: Vec<String>,
    hosts: LocalModels,
    hardware: Hardware,
    peers: BTreeMap<String, Entry>,
}

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
            models: self.models.clone(),
            hardware: self.hardware.clone(),
            loads: Vec::new(),
        }
    }

    /// Connected peers that advertise `model`, with their load.
    fn hosts_of(&self, model: &str) -> Vec<HostingPeer> {
        self.peers
            .iter()
            .filter(|(_, e)| e.state() == PeerState::Connected)
            .filter_map(|(name, e)| {
                let (advert, _) = e.advert.as_ref()?;
                let load = advert
                    .loads
                    .iter()
                    .find(|l| l.model == model)
                    .cloned()
                    .or_else(|| {
                        advert.models.iter().any(|m| m == model).then(|| ModelLoad {
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
                .map(|(a, _)| a.models.clone())
                .unwrap_or_default(),
            hardware: entry.advert.as_ref().map(|(a, _)| a.hardware.clone()),
            loads: entry
                .advert
                .as_ref()
                .map(|(a, _)| a.loads.clone())
                .unwrap_or_default(),
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
            models: args.hosts.ids(),
            hosts: args.hosts,
            hardware: args.hardware,
            peers: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
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
            Msg::Advert(advert) => match state.peers.get_mut(&advert.name) {
                Some(entry) => entry.advert = Some((advert, Instant::now())),
                None => {
                    tracing::debug!(peer = %advert.name, "advert from a peer without a connection")
                }
            },
            Msg::Tick => {
                let mut advert = state.advert();
                advert.loads = local_loads(&state.hosts).await;
                for member in ractor::pg::get_members(&GROUP.to_owned()) {
                    if !member.get_id().is_local()
                        && let Err(e) = member.send_message(Msg::Advert(advert.clone()))
                    {
                        tracing::debug!(error = %e, "advert not sent");
                    }
                }
            }
            Msg::List(reply) => {
                let _ = reply.send(state.peers.iter().map(|(n, e)| state.view(n, e)).collect());
            }
            Msg::DialTargets(reply) => {
                let _ = reply.send(state.dial_targets());
            }
            Msg::HostsOf(model, reply) => {
                let _ = reply.send(state.hosts_of(&model));
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
        if let Some(stats) = host.stats().await {
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

/// Why a directory query failed.
#[derive(Debug, thiserror::Error)]
#[error("peer directory did not answer: {0}")]
pub struct DirectoryUnavailable(String);

/// Typed handle to the directory.
#[derive(Debug, Clone)]
pub struct PeerDirectoryHandle(pub(crate) ActorRef<Msg>);

impl PeerDirectoryHandle {
    fn cast(&self, msg: Msg) {
        // The directory lives as long as the node; a failed cast means the node is stopping.
        let _ = self.0.cast(msg);
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
    pub async fn list(&self) -> Result<Vec<PeerView>, DirectoryUnavailable> {
        self.call(Msg::List).await
    }

    /// Advertised peers not yet connected.
    pub async fn dial_targets(&self) -> Result<Vec<KnownPeer>, DirectoryUnavailable> {
        self.call(Msg::DialTargets).await
    }

    /// Connected peers hosting `model`, with their advertised load.
    pub async fn hosts_of(&self, model: &str) -> Result<Vec<HostingPeer>, DirectoryUnavailable> {
        let model = model.to_owned();
        self.call(|reply| Msg::HostsOf(model, reply)).await
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> Msg,
    ) -> Result<T, DirectoryUnavailable> {
        super::call_local(&self.0, msg)
            .await
            .map_err(DirectoryUnavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message;

    fn advert() -> PeerAdvert {
        PeerAdvert {
            name: "a".into(),
            addr: "127.0.0.1:7400".parse().expect("addr"),
            peers: vec![KnownPeer {
                name: "b".into(),
                addr: "127.0.0.1:7401".parse().expect("addr"),
            }],
            models: vec!["@ganglion/all-minilm-l6-v2".into()],
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
        }
    }

    #[test]
    fn adverts_survive_the_wire_and_garbage_is_refused() {
        let wire = Msg::Advert(advert()).serialize().expect("serializable");
        match Msg::deserialize(wire) {
            Ok(Msg::Advert(back)) => assert_eq!(back, advert()),
            _ => panic!("advert did not round-trip"),
        }
        let garbage = SerializedMessage::Cast {
            variant: ADVERT_VARIANT.into(),
            args: vec![1, 255, 255, 255, 255],
            metadata: None,
        };
        assert!(Msg::deserialize(garbage).is_err());
        let wrong = SerializedMessage::Cast {
            variant: "Other".into(),
            args: vec![],
            metadata: None,
        };
        assert!(Msg::deserialize(wrong).is_err());
        assert!(
            Msg::Tick.serialize().is_err(),
            "local messages never cross nodes"
        );
    }
}
