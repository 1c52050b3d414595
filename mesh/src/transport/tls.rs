//! rustls configurations, all built from a node's [`Identity`].
//!
//! Peer connections are mutual TLS 1.3: both sides present a certificate chained to the cluster
//! CA. The QUIC server accepts handshakes without a client certificate only so that clients
//! (ALPN `ganglion-client/6`) can connect; [`super::endpoint`] refuses a peer-ALPN connection
//! that did not present one. A certificate that is presented is always verified during the
//! handshake, so a certificate from another CA never gets a connection.

use std::sync::Arc;

use ganglion_client::{ALPN_CLIENT, ALPN_PEER};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use crate::credentials::Identity;

/// Why a TLS configuration could not be built from an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA certificate is not usable as a trust anchor.
    #[error("cluster CA certificate is not a usable trust anchor: {0}")]
    TrustAnchor(rustls::Error),
    /// A verifier could not be built.
    #[error("cannot build certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The node certificate and key do not form a usable pair.
    #[error("node certificate or key rejected: {0}")]
    Certificate(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC refused the TLS configuration: {0}")]
    Quic(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(identity: &Identity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_cert.clone())
        .map_err(TlsError::TrustAnchor)?;
    Ok(Arc::new(roots))
}

/// Server side: mutual TLS for peers, optional client certificates for clients.
fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .allow_unauthenticated()
        .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    Ok(config)
}

/// The QUIC server configuration of a node (both ALPNs).
pub fn quic_server(
    identity: &Identity,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let mut config = server_config(identity)?;
    config.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// The QUIC client configuration a node uses to dial peers: presents the node certificate and
/// trusts only the cluster CA.
pub fn quic_peer_client(
    identity: &Identity,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_PEER.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// The acceptor for ractor_cluster's own TCP listener, which ractor_cluster always opens but
/// the mesh never uses (sessions run over QUIC, where the claimed node name is checked against
/// the certificate before ractor_cluster sees it). It refuses every handshake, certificate or
/// not, so no session can reach the actor system through that port.
pub fn cluster_tcp_acceptor(identity: &Identity) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(RefuseEveryClient))
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client-certificate verifier that accepts no client at all.
#[derive(Debug)]
struct RefuseEveryClient;

impl rustls::server::danger::ClientCertVerifier for RefuseEveryClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Err(rustls::Error::General("sessions run over QUIC only".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("sessions run over QUIC only".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("sessions run over QUIC only".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
