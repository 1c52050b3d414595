//! A QUIC endpoint built by hand, for tests that speak the wire protocol themselves: as a
//! client, or as a member (presenting a certificate), with any transport settings.

use std::sync::Arc;

use ganglion::Identity;

/// The crypto provider the nodes use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A raw QUIC endpoint of a member holding `identity`'s certificate (for a member's attacks).
pub fn member(identity: &Identity) -> quinn::Endpoint {
    endpoint(
        identity,
        Some(identity),
        ganglion_client::ALPN_PEER,
        quinn::TransportConfig::default(),
    )
}

/// A raw QUIC endpoint speaking `alpn`, trusting the cluster CA, presenting `present`'s
/// certificate if given, with `transport` settings.
pub fn endpoint(
    ca: &Identity,
    present: Option<&Identity>,
    alpn: &[u8],
    transport: quinn::TransportConfig,
) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match present {
        Some(id) => builder
            .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}
