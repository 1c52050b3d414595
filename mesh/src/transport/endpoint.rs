//! The node's quinn endpoint and what it learns from each connection.
//!
//! Liveness lives here: every connection sends QUIC keep-alives and closes after the configured
//! idle timeout, so a killed or cut-off peer is noticed within that timeout without any
//! application-level heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::protocol::{CLOSE_CLIENTS_LOOPBACK_ONLY, CLOSE_NOT_SERVING, CLOSE_OVERLOADED};
use ganglion_client::{ALPN_CLIENT, ALPN_PEER};
use rustls::pki_types::CertificateDer;

use super::tls::{self, TlsError};
use crate::credentials::{Identity, NODE_SERVER_NAME, certificate_name};

/// Application close codes a node sends when it ends a connection. The ones a client acts on
/// are defined in [`ganglion_client::protocol`], where clients read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly shutdown.
    Shutdown = CLOSE_NOT_SERVING,
    /// Another connection to the same peer was kept instead of this one.
    Duplicate = 1,
    /// A peer-ALPN connection without a client certificate.
    ClientCertificateRequired = 2,
    /// The ractor_cluster node name differs from the certificate's name.
    NameMismatch = 3,
    /// The node dialed itself (a seed list that names the node).
    SelfConnection = 4,
    /// An ALPN this node does not serve.
    UnsupportedProtocol = 5,
    /// The cluster session did not come up (or ended) on this connection.
    SessionTimeout = 6,
    /// The peer is in another region, and the two are not both gateways.
    OtherRegion = 10,
    /// Client connections are accepted from loopback only on this node.
    ClientsLoopbackOnly = CLOSE_CLIENTS_LOOPBACK_ONLY,
    /// The handshake did not finish in time: the node is too busy, and the client should
    /// retry (rather than find its connection dropped without a word).
    Overloaded = CLOSE_OVERLOADED,
}

impl CloseCode {
    /// Closes `connection` with this code and its reason text.
    pub fn close(self, connection: &quinn::Connection) {
        connection.close(
            quinn::VarInt::from_u32(self as u32),
            self.reason().as_bytes(),
        );
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "node shutting down",
            Self::Duplicate => "duplicate connection",
            Self::ClientCertificateRequired => "peer connections require a client certificate",
            Self::NameMismatch => "cluster node name does not match certificate",
            Self::SelfConnection => "connected to itself",
            Self::UnsupportedProtocol => "protocol not served",
            Self::SessionTimeout => "cluster session not up",
            Self::OtherRegion => "another region's node, and not gateway to gateway",
            Self::ClientsLoopbackOnly => "this node serves clients on loopback only",
            Self::Overloaded => "node overloaded; retry in 1 s",
        }
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Dialing failed before the handshake started.
    #[error("cannot dial {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// The handshake failed or the connection was lost.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        /// The remote address.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    /// The connection is not a peer connection with a valid certificate name.
    #[error("connection from {addr} refused: {why}")]
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// Why it was refused.
        why: &'static str,
        /// The close code sent.
        code: CloseCode,
    },
}

/// Liveness settings applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// A connection with no packets for this long is closed (QUIC idle timeout).
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive packets; well below `idle_timeout`.
    pub keep_alive: Duration,
}

/// Limits of one kind of connection: what a client may hold open, or what a peer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Bidirectional streams the other side may have open at once.
    pub bidi_streams: u32,
    /// Unidirectional streams the other side may have open at once.
    pub uni_streams: u32,
    /// Bytes the other side may have in flight on the whole connection.
    pub receive_window: u32,
}

/// A client: one request per stream, 16 at once, no unidirectional streams; its requests (at
/// most 1 MiB each) may be in flight two at a time.
pub const CLIENT_LIMITS: StreamLimits = StreamLimits {
    bidi_streams: 16,
    uni_streams: 0,
    receive_window: 2 * 1024 * 1024,
};

/// A peer: its handoffs, its cluster session, and a few adverts in flight.
pub const PEER_LIMITS: StreamLimits = StreamLimits {
    bidi_streams: 256,
    uni_streams: 16,
    receive_window: 16 * 1024 * 1024,
};

/// Bytes one stream may have in flight: a whole request frame, and a little more.
const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024 + 64 * 1024;

/// Every connection starts with a client's limits (its ALPN, and so its kind, is only known
/// once the handshake is done); a connection that turns out to be a peer's is widened by
/// [`widen_for_peer`]. Datagrams are off: nothing uses them.
fn transport_config(liveness: Liveness, limits: StreamLimits) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(liveness.keep_alive));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(liveness.idle_timeout)
            .expect("validated to a few minutes at most"),
    ));
    transport
        .max_concurrent_bidi_streams(limits.bidi_streams.into())
        .max_concurrent_uni_streams(limits.uni_streams.into())
        .receive_window(limits.receive_window.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .datagram_receive_buffer_size(None);
    Arc::new(transport)
}

/// Raises an accepted connection's limits from a client's to a peer's.
pub fn widen_for_peer(connection: &quinn::Connection) {
    connection.set_max_concurrent_bi_streams(PEER_LIMITS.bidi_streams.into());
    connection.set_max_concurrent_uni_streams(PEER_LIMITS.uni_streams.into());
    connection.set_receive_window(PEER_LIMITS.receive_window.into());
}

/// Binds the node's QUIC endpoint: serving both ALPNs, dialing peers with its certificate.
pub fn bind(
    identity: &Identity,
    addr: SocketAddr,
    liveness: Liveness,
) -> Result<quinn::Endpoint, TransportError> {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls::quic_server(identity)?));
    server.transport_config(transport_config(liveness, CLIENT_LIMITS));
    let mut endpoint = quinn::Endpoint::server(server, addr)
        .map_err(|source| TransportError::Bind { addr, source })?;
    let mut client = quinn::ClientConfig::new(Arc::new(tls::quic_peer_client(identity)?));
    client.transport_config(transport_config(liveness, PEER_LIMITS));
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// An established, verified peer connection.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    /// The peer's name, from its certificate.
    pub name: String,
    /// The QUIC connection.
    pub connection: quinn::Connection,
}

/// Dials a peer at `addr`, verifying it against the cluster CA, within `timeout`.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<PeerConnection, TransportError> {
    let connecting = endpoint
        .connect(addr, NODE_SERVER_NAME)
        .map_err(|source| TransportError::Connect { addr, source })?;
    let connection = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| TransportError::HandshakeTimeout(addr))?
        .map_err(|source| TransportError::Connection { addr, source })?;
    verified_peer(connection)
}

/// An accepted connection, by its ALPN.
#[derive(Debug)]
pub enum Accepted {
    /// A verified peer (mutual TLS).
    Peer(PeerConnection),
    /// A client of the data plane.
    Client(quinn::Connection),
}

/// Most incoming handshakes in progress at once; more are refused before their TLS handshake,
/// which a client takes as `overloaded`. A burst of connections then costs the node a bounded
/// amount of work, and the handshakes it took on can finish in time.
pub const MAX_HANDSHAKES: usize = 64;

/// Completes an incoming handshake within `timeout` and sorts it by ALPN; a peer connection
/// must have presented a certificate from the cluster CA. A handshake that does not finish in
/// time is closed with [`CloseCode::Overloaded`]: its client may already count the connection
/// as open, and must learn to retry rather than find it dropped.
pub async fn accept(
    incoming: quinn::Incoming,
    timeout: Duration,
) -> Result<Accepted, TransportError> {
    let addr = incoming.remote_address();
    let mut connecting = incoming
        .accept()
        .map_err(|source| TransportError::Connection { addr, source })?;
    let handshake = tokio::time::timeout(timeout, &mut connecting).await;
    let connection = match handshake {
        Ok(finished) => finished.map_err(|source| TransportError::Connection { addr, source })?,
        Err(_) => {
            // On the server side this always succeeds; dropping `connecting` instead would close
            // with code 0 and no reason.
            if let Ok((connection, _)) = connecting.into_0rtt() {
                CloseCode::Overloaded.close(&connection);
            }
            return Err(TransportError::HandshakeTimeout(addr));
        }
    };
    match alpn(&connection).as_deref() {
        Some(ALPN_PEER) => verified_peer(connection).map(Accepted::Peer),
        Some(ALPN_CLIENT) => Ok(Accepted::Client(connection)),
        _ => Err(refuse(
            &connection,
            "unknown protocol",
            CloseCode::UnsupportedProtocol,
        )),
    }
}

fn refuse(connection: &quinn::Connection, why: &'static str, code: CloseCode) -> TransportError {
    code.close(connection);
    TransportError::Refused {
        addr: connection.remote_address(),
        why,
        code,
    }
}

fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The peer's name from the certificate it presented (already verified against the CA).
fn verified_peer(connection: quinn::Connection) -> Result<PeerConnection, TransportError> {
    let name = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().and_then(certificate_name));
    match name {
        Some(name) => Ok(PeerConnection { name, connection }),
        None => Err(refuse(
            &connection,
            "no client certificate",
            CloseCode::ClientCertificateRequired,
        )),
    }
}
