//! The QUIC transport: one quinn endpoint per node, TLS configuration, and the adapter that
//! carries ractor_cluster sessions over QUIC streams.
//!
//! - [`tls`] builds the rustls configurations: mutual TLS between peers, the loopback TCP
//!   listener of ractor_cluster (client certificates required), and the dialer side.
//! - [`endpoint`] configures quinn (keep-alive and idle timeout, which are the node's liveness
//!   detector) and inspects established connections (ALPN, peer name).
//! - [`cluster_stream`] turns a QUIC bidirectional stream into a ractor_cluster transport, and
//!   checks the node name a peer claims on it.
//! - [`limits`] caps incoming connections, in total and per source address.

pub mod cluster_stream;
pub mod endpoint;
pub mod limits;
pub mod tls;

pub use endpoint::{CloseCode, PeerConnection, TransportError};

/// QUIC stream error code sent when a peer's stream is refused (by whichever part serves its
/// kind).
pub const STREAM_REFUSED: u32 = 1;
