//! What mutual TLS, the admin token and the frame bounds keep out, against real node processes.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::sync::Arc;
use std::time::Duration;

use ganglion::Identity;
use ganglion::credentials::NODE_SERVER_NAME;
use ganglion::transport::CloseCode;
use ganglion_client::protocol::MAX_OPEN_FRAME_LEN;
use ganglion_client::{ALPN_PEER, PeerStreamKind, codec};
use ganglion_testkit::{self as harness, Cluster, TOKEN, eventually, names, raw_quic};

/// A QUIC client that trusts `trust`'s CA and presents `present`'s certificate, if any.
fn quic_client(trust: &Identity, present: Option<&Identity>) -> quinn::Endpoint {
    raw_quic::endpoint(trust, present, ALPN_PEER, quinn::TransportConfig::default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_certificate_from_another_ca_never_joins() {
    let cluster = Cluster::new("foreign-ca");
    let rogue_ca = Cluster::new("foreign-ca-rogue");
    let a = cluster.start("a", &[], &[]);
    let b = cluster.start("b", &[a.quic], &[]);
    // Same name as a real node, certificate from the wrong CA.
    let rogue = harness::Node::start(
        &rogue_ca,
        "c",
        &rogue_ca.identity("c"),
        &[a.quic, b.quic],
        &[],
    );

    eventually(Duration::from_secs(10), "a and b meet", || async {
        (a.connected_peers().await == names(&["b"])).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the rogue's dials fail",
        || async { rogue.log_text().contains("dial failed").then_some(()) },
    )
    .await;
    // Over several retry rounds, nobody lists the rogue and the rogue lists nobody.
    harness::stays(Duration::from_secs(2), "nobody lists the rogue", || async {
        !lists(&a, "c").await
            && !lists(&b, "c").await
            && rogue.json("/admin/peers").await == serde_json::json!([])
    })
    .await;
    assert_eq!(rogue.json("/admin/peers").await, serde_json::json!([]));
}

/// Whether `node`'s directory lists `peer`.
async fn lists(node: &harness::Node, peer: &str) -> bool {
    let peers = node.json("/admin/peers").await;
    peers.as_array().unwrap().iter().any(|p| p["name"] == peer)
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_connections_need_a_client_certificate_from_the_cluster_ca() {
    let cluster = Cluster::new("client-cert");
    let rogue_ca = Cluster::new("client-cert-rogue");
    let a = cluster.start("a", &[], &[]);
    let trusted = Identity::load(&cluster.identity("prober")).unwrap();
    let foreign = Identity::load(&rogue_ca.identity("prober")).unwrap();

    // No client certificate: the handshake may finish, but the node closes at once with a
    // code that says why, and no stream is ever served.
    let endpoint = quic_client(&trusted, None);
    let refused = async {
        let connection = endpoint.connect(a.quic, NODE_SERVER_NAME).unwrap().await?;
        Err::<(), _>(connection.closed().await)
    };
    match tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("refused in time")
    {
        Err(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(CloseCode::ClientCertificateRequired as u32)
            );
        }
        other => panic!("expected an application close, got {other:?}"),
    }

    // A certificate from another CA: refused in the handshake.
    let endpoint = quic_client(&trusted, Some(&foreign));
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let connection = endpoint.connect(a.quic, NODE_SERVER_NAME).unwrap().await?;
        // TLS 1.3 clients learn of a rejected certificate only after their last flight.
        connection.accept_bi().await.map(|_| ())
    })
    .await
    .expect("refused in time");
    assert!(result.is_err(), "a foreign client certificate was accepted");

    assert!(a.connected_peers().await.is_empty());
    assert_eq!(a.get("/healthz", None).await.status(), 200);
}

/// ractor_cluster always opens its TCP listener; the mesh runs sessions over QUIC only, where
/// the claimed name is checked against the certificate, so the listener refuses everyone, even
/// a member with a valid certificate (who could otherwise claim another member's name there).
#[tokio::test(flavor = "multi_thread")]
async fn the_loopback_cluster_listener_refuses_every_handshake() {
    let cluster = Cluster::new("cluster-tcp");
    let rogue_ca = Cluster::new("cluster-tcp-rogue");
    let a = cluster.start("a", &[], &[]);
    assert!(a.cluster_tcp.ip().is_loopback());
    let trusted = Identity::load(&cluster.identity("prober")).unwrap();
    let foreign = Identity::load(&rogue_ca.identity("prober")).unwrap();

    for present in [None, Some(&foreign), Some(&trusted)] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.ca_cert.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(raw_quic::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let config = match present {
            Some(id) => builder
                .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(a.cluster_tcp).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(NODE_SERVER_NAME).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = connector.connect(name, tcp).await?;
            // Something ractor_cluster would read as a frame header; the server must have
            // rejected the certificate instead, which surfaces on this read at the latest.
            tls.write_all(&[0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]).await?;
            let mut buf = [0u8; 16];
            match tls.read(&mut buf).await? {
                0 => Err(std::io::Error::other("closed without data")),
                _ => Ok(()),
            }
        })
        .await
        .expect("answered in time");
        assert!(
            outcome.is_err(),
            "cluster listener accepted {:?}",
            present.map(|p| &p.name)
        );
    }
    // The raw protocol without TLS gets nowhere either.
    let raw = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(a.cluster_tcp).await?;
        tcp.write_all(&[0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]).await?;
        let mut buf = [0u8; 64];
        let n = tcp.read(&mut buf).await?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    })
    .await
    .expect("answered in time");
    // Whatever comes back is a TLS alert at most, never a ractor_cluster frame.
    if let Ok(bytes) = raw {
        assert!(
            bytes.is_empty() || bytes[0] == 0x15,
            "unexpected answer {bytes:?}"
        );
    }
    assert_eq!(a.get("/healthz", None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_frames_reset_the_stream_and_the_node_keeps_serving() {
    let cluster = Cluster::new("frames");
    let a = cluster.start("a", &[], &[]);
    let prober = Identity::load(&cluster.identity("prober")).unwrap();
    let endpoint = quic_client(&prober, Some(&prober));
    let connection = endpoint
        .connect(a.quic, NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();

    let mut oversized = vec![codec::FRAME_VERSION];
    oversized.extend_from_slice(&(1u32 << 30).to_be_bytes());
    let mut wrong_version = codec::encode(&PeerStreamKind::Cluster, MAX_OPEN_FRAME_LEN).unwrap();
    wrong_version[0] = 0xee;
    let mut bad_variant = vec![codec::FRAME_VERSION, 0, 0, 0, 1];
    bad_variant.push(0x7f);
    let mut too_long_for_an_opening = vec![codec::FRAME_VERSION];
    too_long_for_an_opening.extend_from_slice(&((MAX_OPEN_FRAME_LEN as u32) + 1).to_be_bytes());
    too_long_for_an_opening.extend(std::iter::repeat_n(0u8, MAX_OPEN_FRAME_LEN + 1));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xde\xad\xbe\xef not a frame at all".to_vec()),
        ("oversized length", oversized),
        ("wrong version", wrong_version),
        ("unknown variant", bad_variant),
        (
            "longer than an opening frame may be",
            too_long_for_an_opening,
        ),
    ];
    for (what, bytes) in cases {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let _ = send.finish();
        let read = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1024)).await;
        match read {
            Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => {
                assert_eq!(code, quinn::VarInt::from_u32(1), "{what}");
            }
            other => panic!("{what}: expected a stream reset, got {other:?}"),
        }
    }

    // The node is unharmed: it answers, and a real peer still joins.
    assert_eq!(a.get("/healthz", None).await.status(), 200);
    let b = cluster.start("b", &[a.quic], &[]);
    eventually(
        Duration::from_secs(10),
        "a real peer joins after the abuse",
        || async { (b.connected_peers().await == names(&["a"])).then_some(()) },
    )
    .await;
    assert!(a.log_text().contains("peer stream refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_need_the_bearer_token() {
    let cluster = Cluster::new("admin-token");
    let a = cluster.start("a", &[], &[]);
    for path in ["/admin/node", "/admin/peers", "/admin/actors"] {
        assert_eq!(
            a.get(path, None).await.status(),
            401,
            "{path} without token"
        );
        assert_eq!(
            a.get(path, Some("wrong-token-0123456789")).await.status(),
            401,
            "{path} wrong token"
        );
        assert_eq!(
            a.get(path, Some(TOKEN)).await.status(),
            200,
            "{path} with token"
        );
    }
    assert_eq!(a.get("/healthz", None).await.status(), 200);
}
