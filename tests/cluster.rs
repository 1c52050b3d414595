//! Mesh formation, liveness and rejoin, with real `ganglion-node` processes on loopback.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::time::Duration;

use ganglion_testkit::{Cluster, UdpRelay, eventually, names, stays};

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_form_a_full_mesh_from_one_seed() {
    let cluster = Cluster::new("mesh");
    let a = cluster.start("a", &[], &[]);
    // b listens on the wildcard address without --advertise: c, which learns of b only from a's
    // advert, must dial the address b's packets come from.
    let b = cluster.start("b", &[a.quic], &["--listen", "0.0.0.0:0"]);
    let c = cluster.start("c", &[a.quic], &[]);

    for (node, others) in [(&a, ["b", "c"]), (&b, ["a", "c"]), (&c, ["a", "b"])] {
        eventually(
            Duration::from_secs(10),
            &format!("{} lists {others:?}", node.name),
            || async { (node.connected_peers().await == names(&others)).then_some(()) },
        )
        .await;
    }

    // b and c learned of each other from a and may have dialed each other at once: each pair
    // must still end with exactly one connection, seen from opposite ends.
    let b_view = b.json("/admin/peers").await;
    let c_view = c.json("/admin/peers").await;
    let direction = |view: &serde_json::Value, peer: &str| {
        let entries: Vec<_> = view
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == peer)
            .collect();
        assert_eq!(entries.len(), 1, "one entry for {peer}");
        entries[0]["direction"].as_str().unwrap().to_owned()
    };
    assert_ne!(direction(&b_view, "c"), direction(&c_view, "b"));

    // The control plane carries process groups: every node sees every directory.
    eventually(
        Duration::from_secs(5),
        "process group spans the mesh",
        || async {
            (a.group_nodes("ganglion.peers").await == names(&["a", "b", "c"])).then_some(())
        },
    )
    .await;

    let node = a.json("/admin/node").await;
    assert_eq!(node["name"], "a");
    assert_eq!(node["addresses"]["quic"], a.quic.to_string());
    let actors = a.json("/admin/actors").await;
    let kinds: Vec<&str> = actors["tree"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(actors["tree"]["kind"], "NodeSupervisor");
    assert_eq!(
        kinds,
        vec![
            "Admin",
            "ClusterHost",
            "Gateway",
            "Meter",
            "PeerDirectory",
            "Router"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_dialing_each_other_at_once_keep_one_session() {
    let cluster = Cluster::new("simultaneous");
    // Each node is the other's seed: both dial as soon as they start. b's address, known
    // before b starts, is a relay the test binds and keeps: b advertises it, and it carries
    // datagrams to b from the moment b is up, so a's dials, unanswered until then, reach b
    // while b dials a.
    let to_b = UdpRelay::bind(Duration::ZERO).await.unwrap();
    let a = cluster.start("a", &[to_b.addr], &[]);
    let b_advertise = to_b.addr.to_string();
    let b = cluster.start("b", &[a.quic], &["--advertise", &b_advertise]);
    to_b.route_to(b.quic);
    for (node, other) in [(&a, "b"), (&b, "a")] {
        eventually(Duration::from_secs(10), "connected", || async {
            (node.connected_peers().await == names(&[other])).then_some(())
        })
        .await;
    }
    // Stable: over a few adverts, one connected session each way, all along.
    stays(Duration::from_secs(2), "one session each way", || async {
        a.connected_peers().await == names(&["b"]) && b.connected_peers().await == names(&["a"])
    })
    .await;
    assert_eq!(a.group_nodes("ganglion.peers").await, names(&["a", "b"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_is_dropped_within_the_liveness_timeout_and_rejoins_after_restart() {
    let cluster = Cluster::new("liveness");
    let liveness = ["--liveness-timeout", "2s"];
    let a = cluster.start("a", &[], &liveness);
    let b = cluster.start("b", &[a.quic], &liveness);
    let mut c = cluster.start("c", &[a.quic], &liveness);
    for node in [&a, &b] {
        eventually(Duration::from_secs(10), "full mesh", || async {
            (node.connected_peers().await.len() == 2).then_some(())
        })
        .await;
    }

    c.kill();
    // Liveness timeout 2 s; the extra second covers polling and the admin round trip.
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(3),
            &format!("{} drops c", node.name),
            || async {
                let peers = node.json("/admin/peers").await;
                let gone = peers.as_array().unwrap().iter().all(|p| p["name"] != "c");
                (gone && node.group_nodes("ganglion.peers").await == names(&["a", "b"]))
                    .then_some(())
            },
        )
        .await;
    }

    let c = cluster.start("c", &[a.quic], &liveness);
    for (node, others) in [(&a, ["b", "c"]), (&b, ["a", "c"]), (&c, ["a", "b"])] {
        eventually(
            Duration::from_secs(10),
            &format!("{} sees {others:?} after restart", node.name),
            || async { (node.connected_peers().await == names(&others)).then_some(()) },
        )
        .await;
    }
    eventually(
        Duration::from_secs(5),
        "c's directory back in the group",
        || async {
            (b.group_nodes("ganglion.peers").await == names(&["a", "b", "c"])).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_seed_is_found_again_by_its_peers() {
    let cluster = Cluster::new("seed-restart");
    let liveness = ["--liveness-timeout", "2s"];
    // a's address is a relay the test binds and keeps: a advertises it, and the restarted a,
    // on whatever port it gets then, is reached through it at the same address.
    let to_a = UdpRelay::bind(Duration::ZERO).await.unwrap();
    let a_advertise = to_a.addr.to_string();
    let seed_args = ["--advertise", &a_advertise, "--liveness-timeout", "2s"];
    let mut a = cluster.start("a", &[], &seed_args);
    to_a.route_to(a.quic);
    let b = cluster.start("b", &[to_a.addr], &liveness);
    eventually(Duration::from_secs(10), "b joins a", || async {
        (b.connected_peers().await == names(&["a"])).then_some(())
    })
    .await;

    a.kill();
    eventually(Duration::from_secs(3), "b drops a", || async {
        b.connected_peers().await.is_empty().then_some(())
    })
    .await;

    // Same address, no seeds of its own: b's seed retries must bring it back.
    let a = cluster.start("a", &[], &seed_args);
    to_a.route_to(a.quic);
    eventually(
        Duration::from_secs(10),
        "b reconnects to the restarted seed",
        || async {
            (b.connected_peers().await == names(&["a"])
                && a.connected_peers().await == names(&["b"]))
            .then_some(())
        },
    )
    .await;
}
