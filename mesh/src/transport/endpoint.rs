//! The node's quinn endpoint and what it learns from each connection.
//!
//! Liveness lives here: every connection sends QUIC keep-alives and closes after the configured
//! idle timeout, so a killed or cut-off peer is noticed within that timeout without any
//! application-level heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::{ALPN_CLIENT, ALPN_PEER};
use rustls::pki_types::CertificateDer;

use super::tls::{self, TlsError};
use crate::credentials::{Identity, NODE_SERVER_NAME, certificate_name};

/// Application close codes a node sends when it ends a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly shutdown.
    Shutdown = 0,
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

fn transport_config(liveness: Liveness) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(liveness.keep_alive));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(liveness.idle_timeout)
            .expect("validated to a few minutes at most"),
    ));
    Arc::new(transport)
}

/// Binds the node's QUIC endpoint: serving both ALPNs, dialing peers with its certificate.
pub fn bind(
    identity: &Identity,
    addr: SocketAddr,
    liveness: Liveness,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = transport_config(liveness);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls::quic_server(identity)?));
    server.transport_config(transport.clone());
    let mut endpoint = quinn::Endpoint::server(server, addr)
        .map_err(|source| TransportError::Bind { addr, source })?;
    let mut client = quinn::ClientConfig::new(Arc::new(tls::quic_peer_client(identity)?));
    client.transport_config(transport);
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

/// Completes an incoming handshake within `timeout` and sorts it by ALPN; a peer connection
/// must have presented a certificate from the cluster CA.
pub async fn accept(
    incoming: quinn::Incoming,
    timeout: Duration,
) -> Result<Accepted, TransportError> {
    let addr = incoming.remote_address();
    let connection = tokio::time::timeout(timeout, async { incoming.accept()?.await })
        .await
        .map_err(|_| TransportError::HandshakeTimeout(addr))?
        .map_err(|source| TransportError::Connection { addr, source })?;
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
