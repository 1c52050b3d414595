//! Facts about this node that several parts report: where it listens, its hardware, and the
//! state of each model it was configured to host. A leaf module: it imports no actor, so the
//! supervisor, the directory's adverts and the admin routes can all read it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// Addresses a node is reachable at.
#[derive(Debug, Clone, Serialize)]
pub struct Addresses {
    /// Bound QUIC endpoint.
    pub quic: SocketAddr,
    /// Address advertised to peers.
    pub advertise: SocketAddr,
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// ractor_cluster's loopback TCP listener (refuses every handshake: sessions run over QUIC).
    pub cluster_tcp: SocketAddr,
    /// The HTTP API, when it is on.
    pub http: Option<SocketAddr>,
}

/// Static facts about a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Build version.
    pub version: &'static str,
    /// Where it listens.
    pub addresses: Addresses,
    /// Its hardware.
    pub hardware: crate::hardware::Hardware,
    /// Its CPU's features and the llama.cpp kernels its engines start on.
    pub cpu: crate::inference::kernels::CpuKernels,
}

/// Whether a configured model was loaded at start-up, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Catalog id.
    pub id: String,
    /// Task name.
    pub task: &'static str,
    /// Memory the model needs.
    pub memory_bytes: u64,
    /// Whether it was loaded for hosting.
    pub hosted: bool,
    /// Why it is not hosted.
    pub reason: Option<String>,
}

/// Live state of a model this node hosts, as `/admin/models` and adverts show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Being loaded; not serving yet.
    Loading,
    /// Serving.
    Hosted,
    /// Its host failed and is being restarted; requests go elsewhere meanwhile.
    Restarting,
    /// Its host failed too often and was given up on.
    Failed,
}

/// The live state of every model hosted here, written by the supervisor, read by the
/// directory (adverts) and the admin routes.
#[derive(Debug, Clone, Default)]
pub struct ModelStates(Arc<RwLock<BTreeMap<String, ModelState>>>);

impl ModelStates {
    /// Records the state of `model`.
    pub fn set(&self, model: &str, state: ModelState) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(model.to_owned(), state);
    }

    /// The state of `model`, if it is hosted here.
    pub fn get(&self, model: &str) -> Option<ModelState> {
        self.read().get(model).copied()
    }

    /// Every hosted model with its state.
    pub fn all(&self) -> BTreeMap<String, ModelState> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ModelState>> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The peer behind each ractor_cluster session on this node, by the session's node id, with
/// the connection the session runs on: how a remote actor (whose id carries only that node id)
/// is tied to a peer's certificate name, and how to reach that peer at once. Written by the
/// cluster host as sessions come and go.
#[derive(Debug, Clone, Default)]
pub struct SessionNodes(
    Arc<RwLock<BTreeMap<u64, (String, quinn::Connection)>>>,
    Arc<RwLock<std::collections::BTreeSet<String>>>,
);

impl SessionNodes {
    /// The peers of this node's region, as the peer directory last learned them from their
    /// adverts: their cache shards are this region's (a gateway's peers of other regions, and a
    /// peer whose region is not known yet, are left out).
    pub fn set_region_peers(&self, peers: std::collections::BTreeSet<String>) {
        *self.1.write().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Whether `peer` is known to be in this node's region.
    pub fn in_region(&self, peer: &str) -> bool {
        self.1
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }

    /// Session `node_id` is with `peer`, over `connection`.
    pub fn up(&self, node_id: u64, peer: &str, connection: quinn::Connection) {
        self.write().insert(node_id, (peer.to_owned(), connection));
    }

    /// Forgets every session (a new NodeServer numbers its sessions afresh).
    pub fn clear(&self) {
        self.write().clear();
    }

    /// Session `node_id` ended.
    pub fn down(&self, node_id: u64) {
        self.write().remove(&node_id);
    }

    /// The peer of session `node_id`, while it lasts.
    pub fn name(&self, node_id: u64) -> Option<String> {
        self.read().get(&node_id).map(|(name, _)| name.clone())
    }

    /// The connection to `peer`, while a session with it lasts: the newest one still open
    /// (a replaced link's session lingers until its end is noticed).
    pub fn connection(&self, peer: &str) -> Option<quinn::Connection> {
        self.read()
            .values()
            .rev()
            .find(|(name, connection)| name == peer && connection.close_reason().is_none())
            .map(|(_, connection)| connection.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, (String, quinn::Connection)>> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, (String, quinn::Connection)>> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
