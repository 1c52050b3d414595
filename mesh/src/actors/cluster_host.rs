//! ClusterHost: the node's place in the mesh. A child of `NodeSupervisor` (restarted by it on
//! failure); supervises ractor_cluster's `NodeServer`.
//!
//! It owns the QUIC endpoint: accepts and dials peer connections (mutual TLS), keeps exactly one
//! connection per peer, carries each peer's ractor_cluster session over one bidirectional stream
//! of that connection, binds the session's node name to the certificate's name (before
//! ractor_cluster can elect between sessions, see [`crate::transport::cluster_stream`]), and
//! retries seeds and advertised peers with backoff. A connection whose session does not come
//! up in time is closed, so the dial book redials it. Adverts arrive on unidirectional streams
//! and are handed to the directory under the connection's certificate name. Liveness is QUIC's:
//! keep-alives and the idle timeout close a silent connection, which ends its session and its
//! process-group members.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ganglion_client::protocol::MAX_OPEN_FRAME_LEN;
use ganglion_client::{PeerStreamKind, read_frame, write_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::peer_directory::PeerDirectoryHandle;
use crate::credentials::Identity;
use crate::membership::{Direction, Keep, resolve_duplicate, retry_delay};
use crate::transport::cluster_stream::{QuicClusterStream, SessionLabel};
use crate::transport::endpoint::{self, Accepted, Liveness};
use crate::transport::limits::{ConnectionLimits, is_loopback};
use crate::transport::{CloseCode, PeerConnection, STREAM_REFUSED, tls};

/// Host part of every ractor_cluster node name (`<name>@ganglion`); the name part is the
/// certificate's name.
pub const CLUSTER_HOST: &str = "ganglion";

/// Registered name of ractor_cluster's `NodeServer`.
pub const NODE_SERVER_NAME: &str = "ganglion.node_server";

/// How often seeds and advertised peers are considered for dialing.
const TICK: Duration = Duration::from_millis(250);
/// First retry delay of a failed dial; doubles per failure.
const RETRY_BASE: Duration = Duration::from_millis(250);
/// Longest wait between dials of a seed, so a restarted seed is found within it.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A stream must name its purpose (and an advert arrive whole) within this time after opening.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer connection whose cluster session is not up this long after it connected is closed
/// (and redialed by whoever dials it).
const SESSION_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most addresses learned from adverts kept in the dial book (seeds come on top).
const MAX_LEARNED_ADDRESSES: usize = 64;
/// Most new dials started per tick, so that adverts cannot turn a node into a dialing storm.
const MAX_DIALS_PER_TICK: usize = 4;
/// A connection the region rule does not keep is closed only after it has been unwanted this
/// long (and up as long), so that both ends have exchanged adverts and learned whom to dial
/// instead, and a gateway set that changes for a moment cuts no link between regions.
const OTHER_REGION_GRACE: Duration = Duration::from_secs(5);

/// The ractor_cluster node name of the node called `name`.
pub fn cluster_name(name: &str) -> String {
    format!("{name}@{CLUSTER_HOST}")
}

/// The cluster host actor.
#[derive(Debug, Default)]
pub struct ClusterHost;

/// Start-up arguments (kept by the supervisor to restart the host).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The bound QUIC endpoint.
    pub endpoint: quinn::Endpoint,
    /// Seeds to dial and keep dialing.
    pub seeds: Vec<SocketAddr>,
    /// Liveness settings (also the handshake timeout).
    pub liveness: Liveness,
    /// Loopback address for ractor_cluster's TCP listener (port chosen already).
    pub cluster_tcp: SocketAddr,
    /// The directory to report to.
    pub directory: PeerDirectoryHandle,
    /// Where client connections go.
    pub clients: ClientDoor,
    /// Caps on incoming connections.
    pub limits: crate::transport::limits::ConnectionLimits,
    /// Who serves the streams peers open (all but `Cluster` and `Advert`).
    pub servers: crate::peer::Servers,
    /// The peer behind each cluster session, kept up to date here.
    pub sessions: crate::facts::SessionNodes,
}

/// Where client connections go: the gateway, which runs the request pipeline (above the
/// cluster host, so handed in as a function).
#[derive(Clone)]
pub struct ClientDoor(Arc<dyn Fn(quinn::Connection) + Send + Sync>);

impl ClientDoor {
    /// A door that hands each client connection to `enter`.
    pub fn new(enter: impl Fn(quinn::Connection) + Send + Sync + 'static) -> Self {
        Self(Arc::new(enter))
    }

    fn enter(&self, connection: quinn::Connection) {
        (self.0)(connection)
    }
}

impl std::fmt::Debug for ClientDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientDoor")
    }
}

/// A ractor_cluster session event, forwarded from the `NodeServer`.
#[derive(Debug)]
pub enum SessionEvent {
    /// The session passed the cookie check.
    Authenticated(NodeServerSessionInformation),
    /// The session finished its initial state exchange.
    Ready(NodeServerSessionInformation),
    /// The session ended.
    Disconnected(NodeServerSessionInformation),
}

/// Messages of the cluster host.
#[derive(Debug)]
pub enum Msg {
    /// A verified peer connection is ready to join the mesh.
    Connected {
        /// The connection and the peer's certificate name.
        peer: PeerConnection,
        /// Who dialed.
        direction: Direction,
        /// For a dial to an advertised address, the name it was advertised under: a
        /// connection that answers with another name is closed without touching any link.
        expected: Option<String>,
    },
    /// A peer connection ended.
    Closed {
        /// The peer's name.
        peer: String,
        /// quinn's stable id of the connection.
        connection_id: usize,
        /// Why it ended.
        reason: String,
        /// The peer closed it because it is in another region.
        other_region: bool,
    },
    /// A dial finished: the peer's name, or why it failed.
    DialDone {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer's name, or the error.
        outcome: Result<String, String>,
    },
    /// Periodic: dial seeds and advertised peers that are due, reap finished tasks.
    Tick,
    /// A ractor_cluster session event.
    Session(SessionEvent),
    /// Tell the directory about every link again (it was restarted).
    ReplayLinks,
}

impl ractor::Message for Msg {}

struct Link {
    connection: quinn::Connection,
    direction: Direction,
    since: Instant,
    session_ready: bool,
}

/// What the host remembers about an address it dials.
#[derive(Debug, Default)]
struct DialEntry {
    /// Seeds are dialed for as long as the node runs; learned addresses until they answer.
    seed: bool,
    /// The node's own address (a seed list that includes it): never dialed again.
    is_self: bool,
    /// The peer last reached at this address (for a learned one: the name it is advertised
    /// under).
    peer: Option<String>,
    /// A learned address that answered with a name other than the advertised one: not dialed
    /// again while it stays advertised so.
    mismatched: bool,
    /// A seed found to be in another region (its connection closed by the region rule): dialed
    /// again only while this node has no connection at all.
    other_region: bool,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// The cluster host's state.
pub struct State {
    name: String,
    cluster_name: String,
    endpoint: quinn::Endpoint,
    liveness: Liveness,
    node_server: ActorRef<NodeServerMessage>,
    directory: PeerDirectoryHandle,
    servers: crate::peer::Servers,
    sessions: crate::facts::SessionNodes,
    links: HashMap<String, Link>,
    dial_book: HashMap<SocketAddr, DialEntry>,
    dialing: BTreeSet<SocketAddr>,
    tasks: JoinSet<()>,
    /// Since when each peer has been unwanted by the region rule.
    unwanted_since: HashMap<String, Instant>,
}

/// Forwards ractor_cluster's session events to the cluster host.
struct SessionEvents(ActorRef<Msg>);

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(Msg::Session(SessionEvent::Authenticated(ses)));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(Msg::Session(SessionEvent::Ready(ses)));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(Msg::Session(SessionEvent::Disconnected(ses)));
    }
}

impl Actor for ClusterHost {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        let name = args.identity.name.clone();
        let node_server = NodeServer::new(
            args.cluster_tcp.port(),
            args.identity.cookie.clone(),
            name.clone(),
            CLUSTER_HOST.to_owned(),
            Some(IncomingEncryptionMode::Tls(tls::cluster_tcp_acceptor(
                &args.identity,
            )?)),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(args.cluster_tcp.ip())
        .with_max_inbound_frame_size(crate::transport::cluster_stream::MAX_CLUSTER_FRAME);
        let (node_server, _) = Actor::spawn_linked(
            Some(NODE_SERVER_NAME.into()),
            node_server,
            (),
            myself.get_cell(),
        )
        .await?;
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "ganglion.cluster_host".into(),
            subscription: Box::new(SessionEvents(myself.clone())),
        })?;

        // A restarted host starts from nothing: connections of an earlier incarnation are no
        // longer served, so the directory forgets them (and peers redial).
        args.directory.reset();
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            args.endpoint.clone(),
            args.liveness.idle_timeout,
            myself.clone(),
            args.clients.clone(),
            args.limits.clone(),
        ));
        myself.send_interval(TICK, || Msg::Tick);

        let dial_book = args
            .seeds
            .iter()
            .map(|addr| {
                (
                    *addr,
                    DialEntry {
                        seed: true,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Ok(State {
            cluster_name: cluster_name(&name),
            name,
            endpoint: args.endpoint,
            liveness: args.liveness,
            node_server,
            directory: args.directory,
            servers: args.servers,
            sessions: {
                // Sessions of an earlier host (and their node ids) are gone.
                args.sessions.clear();
                args.sessions
            },
            links: HashMap::new(),
            dial_book,
            dialing: BTreeSet::new(),
            unwanted_since: HashMap::new(),
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // The endpoint stays open: a restarted host serves it again (the supervisor closes it
        // when the node stops).
        state.tasks.abort_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Connected {
                peer,
                direction,
                expected,
            } => {
                if let Some(expected) = expected.filter(|e| *e != peer.name) {
                    tracing::warn!(advertised = %expected, answered = %peer.name, "an advertised address answers with another name; not connecting");
                    CloseCode::Duplicate.close(&peer.connection);
                } else {
                    state.admit(myself, peer, direction);
                }
            }
            Msg::Closed {
                peer,
                connection_id,
                reason,
                other_region,
            } => {
                if other_region {
                    state.mark_other_region(&peer);
                }
                if state
                    .links
                    .get(&peer)
                    .is_some_and(|l| l.connection.stable_id() == connection_id)
                {
                    state.links.remove(&peer);
                    tracing::info!(%peer, %reason, "peer connection closed");
                }
                state.directory.link_down(peer, connection_id);
            }
            Msg::DialDone { addr, outcome } => state.dial_done(addr, outcome),
            Msg::Tick => {
                while state.tasks.try_join_next().is_some() {}
                state.close_stalled_links();
                state.dial_due(&myself).await;
            }
            Msg::Session(event) => state.session_event(event),
            Msg::ReplayLinks => {
                for (peer, link) in &state.links {
                    state
                        .directory
                        .link_up(peer.clone(), link.connection.clone(), link.direction);
                    if link.session_ready {
                        state
                            .directory
                            .session_up(peer.clone(), link.connection.stable_id());
                    }
                }
            }
        }
        Ok(())
    }
}

impl State {
    /// Installs a verified connection, or refuses it in favour of the one already in place.
    fn admit(&mut self, myself: ActorRef<Msg>, peer: PeerConnection, direction: Direction) {
        let PeerConnection { name, connection } = peer;
        if name == self.name {
            CloseCode::SelfConnection.close(&connection);
            return;
        }
        if let Some(existing) = self.links.get(&name) {
            match resolve_duplicate(
                &self.cluster_name,
                &cluster_name(&name),
                existing.direction,
                direction,
            ) {
                Keep::Existing => {
                    tracing::debug!(peer = %name, ?direction, "duplicate connection refused");
                    CloseCode::Duplicate.close(&connection);
                    return;
                }
                Keep::New => CloseCode::Duplicate.close(&existing.connection),
            }
        }
        tracing::info!(peer = %name, remote = %connection.remote_address(), ?direction, "peer connection up");
        self.links.insert(
            name.clone(),
            Link {
                connection: connection.clone(),
                direction,
                since: Instant::now(),
                session_ready: false,
            },
        );
        self.directory
            .link_up(name.clone(), connection.clone(), direction);
        let span = tracing::info_span!("peer", node = %self.name, peer = %name);
        let owners = StreamOwners {
            node_server: self.node_server.clone(),
            directory: self.directory.clone(),
            servers: self.servers.clone(),
        };
        self.tasks
            .spawn(serve_connection(myself, owners, name, connection, direction).instrument(span));
    }

    fn dial_done(&mut self, addr: SocketAddr, outcome: Result<String, String>) {
        self.dialing.remove(&addr);
        let Some(entry) = self.dial_book.get_mut(&addr) else {
            return;
        };
        match outcome {
            Ok(peer) => {
                entry.failures = 0;
                entry.next_attempt = None;
                if peer == self.name {
                    entry.is_self = true;
                } else if entry.seed {
                    entry.peer = Some(peer);
                } else if entry.peer.as_deref() == Some(peer.as_str()) {
                    self.dial_book.remove(&addr);
                } else {
                    // Kept (until no longer advertised), so that it is not dialed again.
                    entry.mismatched = true;
                }
            }
            Err(error) => {
                entry.failures += 1;
                let delay = retry_delay(entry.failures, RETRY_BASE, RETRY_MAX);
                entry.next_attempt = Some(Instant::now() + delay);
                if entry.failures == 1 {
                    tracing::warn!(%addr, %error, "dial failed; retrying with backoff");
                } else {
                    tracing::debug!(%addr, %error, failures = entry.failures, "dial failed again");
                }
            }
        }
    }

    /// Closes connections whose cluster session never came up, so that they are redialed
    /// rather than left `connecting` for ever.
    fn close_stalled_links(&mut self) {
        for (peer, link) in &self.links {
            if !link.session_ready && link.since.elapsed() > SESSION_SETUP_TIMEOUT {
                tracing::warn!(%peer, "cluster session did not come up in time; closing the connection");
                CloseCode::SessionTimeout.close(&link.connection);
            }
        }
    }

    /// Closes the connections to `peers` that the region rule does not keep, once they have been
    /// up for [`OTHER_REGION_GRACE`]; a seed among them is not redialed while this node has
    /// other connections.
    fn close_unwanted(&mut self, peers: &[String]) {
        let now = Instant::now();
        self.unwanted_since.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            let since = *self.unwanted_since.entry(peer.clone()).or_insert(now);
            let Some(link) = self.links.get(peer) else {
                continue;
            };
            if link.since.elapsed() < OTHER_REGION_GRACE || since.elapsed() < OTHER_REGION_GRACE {
                continue;
            }
            tracing::info!(%peer, "another region's node, and not gateway to gateway: connection closed");
            CloseCode::OtherRegion.close(&link.connection);
            self.mark_other_region(peer);
        }
    }

    /// Remembers that the seed reached as `peer` is in another region.
    fn mark_other_region(&mut self, peer: &str) {
        for entry in self.dial_book.values_mut() {
            if entry.peer.as_deref() == Some(peer) {
                entry.other_region = true;
            }
        }
    }

    /// Dials every seed and advertised peer that is not connected and is due: at most
    /// [`MAX_DIALS_PER_TICK`] at a time, and at most [`MAX_LEARNED_ADDRESSES`] learned ones.
    async fn dial_due(&mut self, myself: &ActorRef<Msg>) {
        match self.directory.dial_plan().await {
            Ok(plan) => {
                self.close_unwanted(&plan.unwanted);
                let targets = plan.targets;
                // Learned addresses live only while some peer still advertises them (and
                // the peer is not connected): a member cannot fill the book for good.
                let advertised: std::collections::HashSet<SocketAddr> = targets
                    .iter()
                    .filter(|t| !self.links.contains_key(&t.name))
                    .map(|t| t.addr)
                    .collect();
                self.dial_book
                    .retain(|addr, e| e.seed || advertised.contains(addr));
                for target in targets {
                    if self.links.contains_key(&target.name) {
                        continue;
                    }
                    let learned = self.dial_book.values().filter(|e| !e.seed).count();
                    match self.dial_book.get_mut(&target.addr) {
                        // A seed is known by the name it answered with, not by what adverts say.
                        Some(entry) if entry.seed => {}
                        Some(entry) => entry.peer = Some(target.name),
                        None if learned >= MAX_LEARNED_ADDRESSES => {
                            tracing::debug!(addr = %target.addr, "dial book full; advertised address ignored");
                        }
                        None => {
                            self.dial_book.insert(
                                target.addr,
                                DialEntry {
                                    peer: Some(target.name),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read dial targets"),
        }
        let now = Instant::now();
        let mut due: Vec<(bool, SocketAddr)> = self
            .dial_book
            .iter()
            .filter(|(addr, e)| {
                !e.is_self
                    && !e.mismatched
                    && (!e.other_region || self.links.is_empty())
                    && !self.dialing.contains(*addr)
                    && !e.peer.as_ref().is_some_and(|p| self.links.contains_key(p))
                    && e.next_attempt.is_none_or(|t| t <= now)
            })
            .map(|(addr, e)| (e.seed, *addr))
            .collect();
        // Seeds first, then learned addresses; a few at a time.
        due.sort_by_key(|(seed, addr)| (!seed, *addr));
        let due: Vec<SocketAddr> = due
            .into_iter()
            .map(|(_, addr)| addr)
            .take(MAX_DIALS_PER_TICK.saturating_sub(self.dialing.len()))
            .collect();
        for addr in due {
            self.dialing.insert(addr);
            let expected = self
                .dial_book
                .get(&addr)
                .filter(|e| !e.seed)
                .and_then(|e| e.peer.clone());
            let endpoint = self.endpoint.clone();
            let timeout = self.liveness.idle_timeout;
            let myself = myself.clone();
            self.tasks.spawn(async move {
                let outcome = match endpoint::dial(&endpoint, addr, timeout).await {
                    Ok(peer) => {
                        let name = peer.name.clone();
                        let _ = myself.cast(Msg::Connected {
                            peer,
                            direction: Direction::Dialed,
                            expected,
                        });
                        Ok(name)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = myself.cast(Msg::DialDone { addr, outcome });
            });
        }
    }

    fn session_event(&mut self, event: SessionEvent) {
        let (SessionEvent::Authenticated(info)
        | SessionEvent::Ready(info)
        | SessionEvent::Disconnected(info)) = &event;
        let label = SessionLabel::parse(&info.peer_addr);
        match (&event, label) {
            (SessionEvent::Authenticated(_), label) => {
                let claimed = info
                    .peer_name
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                let bound = label
                    .as_ref()
                    .is_some_and(|l| cluster_name(&l.peer) == claimed);
                if !bound {
                    tracing::warn!(%claimed, via = %info.peer_addr, "cluster session refused: node name does not match the certificate, or it did not arrive over QUIC");
                    info.actor
                        .stop(Some("node name does not match certificate".into()));
                    if let Some(link) = label.and_then(|l| self.links.get(&l.peer)) {
                        CloseCode::NameMismatch.close(&link.connection);
                    }
                }
            }
            (SessionEvent::Ready(_), Some(label)) => {
                if let Some(link) = self.links.get_mut(&label.peer)
                    && link.connection.stable_id() == label.connection_id
                {
                    link.session_ready = true;
                    self.sessions
                        .up(info.node_id, &label.peer, link.connection.clone());
                }
                self.directory.session_up(label.peer, label.connection_id);
            }
            (SessionEvent::Disconnected(_), Some(label)) => {
                tracing::info!(peer = %label.peer, "cluster session ended");
                if let Some(link) = self.links.get(&label.peer)
                    && link.connection.stable_id() == label.connection_id
                {
                    // A live connection without its session is of no use: close it, so that
                    // the peers reconnect and open a fresh session.
                    CloseCode::SessionTimeout.close(&link.connection);
                }
                self.sessions.down(info.node_id);
                self.directory.session_down(label.peer, label.connection_id);
            }
            _ => {}
        }
    }
}

/// Accepts incoming connections; each handshake runs in its own task so a slow one cannot hold
/// up the others. Peers join the mesh; clients go through the client door.
///
/// Every incoming connection holds a place under [`ConnectionLimits`] (in total and per source
/// address) from its first packet until it closes; past a cap, or past
/// [`endpoint::MAX_HANDSHAKES`] handshakes in progress, new ones are refused before the
/// handshake (a client reads that as `overloaded`). A handshake gets at least as long as a
/// client waits for one, so a node never gives up on a connection its client already counts
/// as open. Client connections from beyond loopback are refused unless allowed.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    idle_timeout: Duration,
    host: ActorRef<Msg>,
    clients: ClientDoor,
    limits: ConnectionLimits,
) {
    let handshake_timeout = idle_timeout.max(ganglion_client::client::HANDSHAKE_TIMEOUT);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(endpoint::MAX_HANDSHAKES));
    let mut connections = JoinSet::new();
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                // Under pressure (places or handshake slots half taken), a source must prove
                // its address (a QUIC retry costs it one round trip) before it may hold either:
                // spoofed Initials cannot fill them. Loopback cannot be spoofed from off the
                // host, so it is spared the round trip.
                let pressed = limits.under_pressure()
                    || handshakes.available_permits() < endpoint::MAX_HANDSHAKES / 2;
                if pressed && !is_loopback(remote.ip()) && !incoming.remote_address_validated() && incoming.may_retry() {
                    let _ = incoming.retry();
                    continue;
                }
                let Some(place) = limits.admit(remote.ip()) else {
                    if last_cap_warning.is_none_or(|at: Instant| at.elapsed() > Duration::from_secs(10)) {
                        last_cap_warning = Some(Instant::now());
                        tracing::warn!(%remote, max = limits.max_total(), refused = limits.refused(), "connection refused: the cap on connections is reached (clients.max_connections, see /admin/membership)");
                    }
                    incoming.refuse();
                    continue;
                };
                let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%remote, "connection refused: too many handshakes in progress");
                    incoming.refuse();
                    continue;
                };
                let (host, clients, limits) = (host.clone(), clients.clone(), limits.clone());
                connections.spawn(async move {
                    let accepted = endpoint::accept(incoming, handshake_timeout).await;
                    drop(handshake);
                    let connection = match accepted {
                        Ok(Accepted::Peer(peer)) => {
                            let connection = peer.connection.clone();
                            endpoint::widen_for_peer(&connection);
                            let _ = host.cast(Msg::Connected { peer, direction: Direction::Accepted, expected: None });
                            connection
                        }
                        Ok(Accepted::Client(connection)) => {
                            if !limits.client_allowed(connection.remote_address().ip()) {
                                CloseCode::ClientsLoopbackOnly.close(&connection);
                                return;
                            }
                            clients.enter(connection.clone());
                            connection
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "incoming connection refused");
                            return;
                        }
                    };
                    // The place is held until the connection closes.
                    connection.closed().await;
                    drop(place);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Who takes over the streams a peer opens, by their opening frame.
#[derive(Clone)]
struct StreamOwners {
    /// `Cluster` streams: the ractor_cluster session.
    node_server: ActorRef<NodeServerMessage>,
    /// `Advert` streams: the peer's adverts.
    directory: PeerDirectoryHandle,
    /// Every other kind.
    servers: crate::peer::Servers,
}

/// Runs one peer connection: opens the cluster session (when this node dialed), serves the
/// streams the peer opens, and reports the connection's end.
async fn serve_connection(
    host: ActorRef<Msg>,
    owners: StreamOwners,
    peer: String,
    connection: quinn::Connection,
    direction: Direction,
) {
    let label = SessionLabel {
        peer: peer.clone(),
        connection_id: connection.stable_id(),
    };
    if direction == Direction::Dialed {
        let opened = tokio::time::timeout(
            SESSION_SETUP_TIMEOUT,
            open_cluster_session(&owners.node_server, &connection, label.clone()),
        )
        .await;
        let failure = match opened {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".to_owned()),
        };
        if let Some(error) = failure {
            // Without a session the connection is useless: close it, so the dial book redials.
            tracing::warn!(%error, "cannot open cluster session; closing the connection");
            CloseCode::SessionTimeout.close(&connection);
        }
    }
    let cluster_opened = Arc::new(AtomicBool::new(direction == Direction::Dialed));
    let mut streams = JoinSet::new();
    let reason = loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let stream = serve_stream(owners.clone(), send, recv, label.clone(), connection.clone(), cluster_opened.clone());
                    streams.spawn(stream.in_current_span());
                }
                Err(e) => break e.to_string(),
            },
            accepted = connection.accept_uni() => match accepted {
                Ok(recv) => {
                    let advert = receive_advert(owners.directory.clone(), label.peer.clone(), recv);
                    streams.spawn(advert.in_current_span());
                }
                Err(e) => break e.to_string(),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    let other_region = matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(CloseCode::OtherRegion as u32)
    );
    let _ = host.cast(Msg::Closed {
        peer,
        connection_id: label.connection_id,
        reason,
        other_region,
    });
}

async fn open_cluster_session(
    node_server: &ActorRef<NodeServerMessage>,
    connection: &quinn::Connection,
    label: SessionLabel,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (mut send, recv) = connection.open_bi().await?;
    write_frame(&mut send, &PeerStreamKind::Cluster, MAX_OPEN_FRAME_LEN).await?;
    let stream = QuicClusterStream {
        send,
        recv,
        expected_name: cluster_name(&label.peer),
        label,
        connection: connection.clone(),
    };
    ractor_cluster::client_connect_external(node_server, Box::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads one advert from a unidirectional stream and hands it to the directory under the
/// connection's certificate name; anything else on such a stream is dropped.
async fn receive_advert(directory: PeerDirectoryHandle, peer: String, mut recv: quinn::RecvStream) {
    match crate::peer::within(STREAM_OPEN_TIMEOUT, crate::peer::advert::receive(&mut recv)).await {
        Ok(advert) => directory.advert(peer, advert),
        Err(error) => {
            if let crate::peer::PeerError::TimedOut(_) = error {
                tracing::debug!("advert did not arrive in time");
            } else {
                tracing::warn!(%error, "advert stream refused");
            }
            let _ = recv.stop(quinn::VarInt::from_u32(STREAM_REFUSED));
        }
    }
}

/// Reads a stream's opening frame and hands the stream to its owner; anything malformed,
/// oversized or unexpected resets the stream and nothing else.
async fn serve_stream(
    owners: StreamOwners,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    label: SessionLabel,
    connection: quinn::Connection,
    cluster_opened: Arc<AtomicBool>,
) {
    let opening = tokio::time::timeout(
        STREAM_OPEN_TIMEOUT,
        read_frame::<_, PeerStreamKind>(&mut recv, MAX_OPEN_FRAME_LEN),
    )
    .await;
    let refusal = match opening {
        Ok(Ok(Some(PeerStreamKind::Cluster))) if !cluster_opened.swap(true, Ordering::SeqCst) => {
            let stream = Box::new(QuicClusterStream {
                send,
                recv,
                expected_name: cluster_name(&label.peer),
                label,
                connection,
            });
            if let Err(e) = owners
                .node_server
                .cast(NodeServerMessage::ConnectionOpenedExternal {
                    stream,
                    is_server: true,
                })
            {
                tracing::warn!(error = %e, "node server gone; cluster stream dropped");
            }
            return;
        }
        Ok(Ok(Some(PeerStreamKind::Cluster))) => {
            "a second cluster stream on one connection".to_owned()
        }
        Ok(Ok(Some(kind))) => match owners.servers.get(&kind) {
            Some(serve) => return serve(label.peer, send, recv).await,
            None => format!("stream kind {kind:?} is not served"),
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no opening frame in time".to_owned(),
    };
    tracing::warn!(reason = %refusal, "peer stream refused");
    let code = quinn::VarInt::from_u32(STREAM_REFUSED);
    let _ = send.reset(code);
    let _ = recv.stop(code);
}
