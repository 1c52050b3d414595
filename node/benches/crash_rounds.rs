//! Run with: cargo bench --workspace --profile dev --bench crash_rounds [-- ROUNDS]
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! Crash consistency of metering, with real processes: 3 nodes; each round sends a burst of 200
//! metered requests spread over them, `kill -9`s a node (chosen by a seeded random draw) in
//! the middle, restarts it on the same data folder, and checks, over every round so far:
//! - every answer a client received has exactly one ledger record, on the node that ran it;
//! - a request refused with an error code before it ran has no record: every record beyond
//!   the answers belongs to a request whose connection, or whose executor, was lost;
//! - each node's mesh-wide usage counter for the account equals the sum of the ledgers.
//!
//! Prints one line per round, and panics on the first broken promise.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::protocol::ErrorCode;
use ganglion_testkit::{Cluster, KEYS_REQUIRED, MINILM, Node, QUIET, ensure_models, eventually};

const BURST: usize = 200;
const NAMES: [&str; 3] = ["a", "b", "c"];

fn args() -> Vec<&'static str> {
    vec!["--host", MINILM, KEYS_REQUIRED, QUIET]
}

/// How one request of a burst ended.
enum Outcome {
    /// Answered: its request id (hex) and the node that ran it.
    Answered(String, String),
    /// Refused with a code that says it did not run.
    Refused,
    /// The connection, or the peer running it, was lost: it may or may not have run.
    Lost,
}

async fn full_mesh(nodes: &[Node]) {
    for node in nodes {
        eventually(Duration::from_secs(30), "a full mesh", || async {
            (node.connected_peers().await.len() == nodes.len() - 1).then_some(())
        })
        .await;
    }
}

/// Every ledger record of the account, by request id, with the node that holds it.
async fn records(nodes: &[Node]) -> Vec<(String, String, u64)> {
    let mut all = Vec::new();
    for node in nodes {
        let ledger = node.json("/admin/ledger?account=acme").await;
        for r in ledger.as_array().unwrap() {
            all.push((
                r["request_id"].as_str().unwrap().to_owned(),
                node.name.clone(),
                r["micro_neurons"].as_u64().unwrap(),
            ));
        }
    }
    all
}

#[tokio::main]
async fn main() {
    ensure_models();
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::new("bench-crash");
    let first = cluster.start(NAMES[0], &[], &args());
    let mut nodes = vec![first];
    for name in &NAMES[1..] {
        let seed = nodes[0].quic;
        nodes.push(cluster.start(name, &[seed], &args()));
    }
    full_mesh(&nodes).await;
    let key = cluster.issue_key("acme", &["--plan", "paid"]);
    // A seeded draw (a linear congruential generator), so that a run can be repeated.
    let mut draw = 7u64;
    let mut answered: HashMap<String, String> = HashMap::new();
    let mut lost_total = 0;
    for round in 1..=rounds {
        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(Arc::new(cluster.keyed_client(node, Some(&key)).await));
        }
        draw = draw
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let victim = ((draw >> 33) % nodes.len() as u64) as usize;
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..BURST {
            let client = clients[i % clients.len()].clone();
            burst.spawn(async move {
                let text = vec![format!("round {round} request {i}")];
                match client.embed_full(MINILM, text).await {
                    Ok(response) => Outcome::Answered(
                        format!("{:032x}", response.id),
                        response.route.executed_by,
                    ),
                    Err(e) => match e.code() {
                        Some(ErrorCode::PeerLost) | None => Outcome::Lost,
                        Some(_) => Outcome::Refused,
                    },
                }
            });
        }
        // Kill the victim once about half the burst has ended.
        let (mut ok, mut codes, mut lost, mut ended) = (0, 0, 0, 0);
        let mut count = |outcome: Outcome| match outcome {
            Outcome::Answered(id, executor) => {
                ok += 1;
                answered.insert(id, executor);
            }
            Outcome::Refused => codes += 1,
            Outcome::Lost => lost += 1,
        };
        while ended < BURST / 2 {
            count(burst.join_next().await.unwrap().unwrap());
            ended += 1;
        }
        let killed_at = std::time::Instant::now();
        nodes[victim].kill();
        while let Some(outcome) = burst.join_next().await {
            count(outcome.unwrap());
        }
        drop(clients);
        let name = NAMES[victim];
        let seed = nodes[(victim + 1) % nodes.len()].quic;
        nodes[victim] = cluster.start(name, &[seed], &args());
        full_mesh(&nodes).await;
        let restarted_in = killed_at.elapsed();

        // Every answer has exactly one record, where it ran.
        let records = records(&nodes).await;
        let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, node, _) in &records {
            by_id.entry(id).or_default().push(node);
        }
        for (id, executor) in &answered {
            let holders = by_id.get(id.as_str()).cloned().unwrap_or_default();
            assert_eq!(
                holders,
                vec![executor.as_str()],
                "round {round}: answer {id} run by {executor} has records on {holders:?}"
            );
        }
        let duplicates = by_id.values().filter(|holders| holders.len() > 1).count();
        assert_eq!(duplicates, 0, "round {round}: a request charged twice");
        let total: u64 = records.iter().map(|(_, _, micro)| micro).sum();
        for node in &nodes {
            eventually(
                Duration::from_secs(20),
                "usage agrees with the ledgers",
                || async {
                    let usage = node.json("/admin/usage?account=acme").await;
                    (usage["accounts"][0]["micro_neurons"].as_u64() == Some(total)).then_some(())
                },
            )
            .await;
        }
        lost_total += lost;
        let undelivered = records.len() - answered.len();
        assert!(
            undelivered <= lost_total,
            "round {round}: {undelivered} records beyond the answers, but only {lost_total} requests lost"
        );
        println!(
            "round {round:>2}: killed {name}; {ok} answered, {codes} refused with a code, {lost} lost with the connection; \
             back in {:.1} s; {} records = {} answers + {undelivered} charged but not delivered; usage agrees ({} µN)",
            restarted_in.as_secs_f64(),
            records.len(),
            answered.len(),
            total
        );
    }
}
