//! Regions, with real `ganglion-node` processes on loopback: two regions of three nodes, one
//! of them seeded from the other region. Each region is a full mesh; between regions only the
//! gateways (the top two of each region by rendezvous) stay connected; a request entering at a
//! node that is not a gateway, for a model only the other region serves, is handed across.

#![allow(clippy::unwrap_used)] // tests may panic on the unexpected

use std::time::Duration;

use ganglion::membership::regions::gateways;
use ganglion::models::catalog::LANGUAGE;
use ganglion_client::ClassifyRequest;
use ganglion_testkit::{Cluster, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_request_entering_one_region_is_served_in_the_region_that_hosts_its_model() {
    let cluster = Cluster::new("regions");
    let region = |r: &'static str| ["--region", r];
    let e0 = cluster.start("e0", &[], &region("eu"));
    let e1 = cluster.start("e1", &[e0.quic], &region("eu"));
    let e2 = cluster.start("e2", &[e0.quic], &region("eu"));
    // us's first node knows only a node of eu: it must find its way to its own region's nodes,
    // and let go of that connection unless both ends are gateways.
    let u0 = cluster.start("u0", &[e0.quic], &region("us"));
    let u1 = cluster.start("u1", &[u0.quic], &region("us"));
    let mut us_host = vec!["--host", LANGUAGE];
    us_host.extend(region("us"));
    let u2 = cluster.start("u2", &[u0.quic], &us_host);

    let eu_gateways = gateways("eu", ["e0", "e1", "e2"]);
    let us_gateways = gateways("us", ["u0", "u1", "u2"]);
    let eu_member = ["e0", "e1", "e2"]
        .into_iter()
        .find(|n| !eu_gateways.contains(n))
        .unwrap();
    let entry = [&e0, &e1, &e2]
        .into_iter()
        .find(|n| n.name == eu_member)
        .unwrap();

    // Every node sees its region whole, agrees on its gateways, and knows both regions (each
    // region's home grants half of a key's daily limit).
    for (node, region, gws) in [
        (&e0, "eu", &eu_gateways),
        (&e1, "eu", &eu_gateways),
        (&e2, "eu", &eu_gateways),
        (&u0, "us", &us_gateways),
        (&u1, "us", &us_gateways),
        (&u2, "us", &us_gateways),
    ] {
        eventually(
            Duration::from_secs(20),
            &format!("{} sees region {region} whole", node.name),
            || async {
                let view = node.json("/admin/membership").await;
                let m = &view["membership"];
                (m["region"] == region
                    && m["region_size"] == 3
                    && m["regions_known"] == 2
                    && m["gateways"] == serde_json::json!(gws))
                .then_some(())
            },
        )
        .await;
    }
    // Each gateway reaches both of the other region's gateways; a member reaches no one of the
    // other region (the seed connection across regions was let go).
    for gateway in [&e0, &e1, &e2]
        .into_iter()
        .filter(|n| eu_gateways.contains(&n.name.as_str()))
    {
        eventually(
            Duration::from_secs(20),
            &format!("{} reaches us's gateways", gateway.name),
            || async {
                let view = gateway.json("/admin/membership").await;
                (view["membership"]["other_regions"]["us"] == serde_json::json!(us_gateways))
                    .then_some(())
            },
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        &format!("{eu_member} keeps no connection to us"),
        || async {
            let peers = entry.json("/admin/peers").await;
            let regions: Vec<String> = peers
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["region"].as_str().unwrap_or("?").to_owned())
                .collect();
            (regions == ["eu", "eu"]).then_some(())
        },
    )
    .await;

    // A language-id request at the eu member goes to an eu gateway, then to a us gateway, then
    // (if that gateway does not host it) to u2.
    let client = cluster.client(entry).await;
    let answer = eventually(
        Duration::from_secs(20),
        "the eu gateways learn that us serves the model",
        || async {
            client
                .classify_request(ClassifyRequest::new(
                    LANGUAGE,
                    vec![
                        "Ceci est une phrase en français, assez longue pour être reconnue.".into(),
                    ],
                ))
                .await
                .ok()
        },
    )
    .await;
    let route = &answer.route;
    assert_eq!(route.executed_by, "u2");
    assert_eq!(route.path.first().map(String::as_str), Some(eu_member));
    assert_eq!(route.path.last().map(String::as_str), Some("u2"));
    assert!(
        route.path.iter().any(|n| eu_gateways.contains(&n.as_str()))
            && route
                .path
                .iter()
                .any(|n| us_gateways.contains(&n.as_str()) || n == "u2"),
        "the route crosses from eu's gateways to us: {:?}",
        route.path
    );
    let ganglion_client::protocol::Output::Labels(labels) = &answer.output else {
        panic!("labels expected: {:?}", answer.output);
    };
    assert_eq!(labels[0][0].label, "fra");

    // A model no region serves is a clear error at once, not a wander through the gateways.
    let error = client
        .classify_request(ClassifyRequest::new("@nobody/nothing", vec!["x".into()]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nothing"), "{error}");
}
