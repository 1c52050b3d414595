//! Identifiers and opening messages of the Ganglion wire protocol.
//!
//! One QUIC connection joins two parties; its ALPN says who they are. Node-to-node connections
//! use [`ALPN_PEER`] and mutual TLS; client connections use [`ALPN_CLIENT`] and server-side TLS.
//! Every bidirectional stream a node opens to a peer starts with a [`PeerStreamKind`] frame.

use serde::{Deserialize, Serialize};

/// ALPN of node-to-node connections (mutual TLS, cluster CA on both sides).
pub const ALPN_PEER: &[u8] = b"ganglion-peer/1";

/// ALPN of client-to-node connections (server-authenticated TLS).
pub const ALPN_CLIENT: &[u8] = b"ganglion-client/1";

/// Bound on the opening frame of a stream: it names the stream's purpose and nothing more.
pub const MAX_OPEN_FRAME_LEN: usize = 1024;

/// The first frame on every bidirectional stream opened on a peer connection: what the stream
/// carries from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerStreamKind {
    /// The ractor_cluster control-plane session (opened once, by the dialing node). After this
    /// frame the stream carries ractor_cluster's own framing.
    Cluster,
}
