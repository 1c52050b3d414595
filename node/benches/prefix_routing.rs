//! Run with: cargo bench --workspace --profile dev --bench prefix_routing
//! (models must be pulled first)
//!
//! Prefix-aware placement on a 3-node mesh, in one run: 4 distinct system prompts of about
//! 1,200 tokens, 200 chats entering at random nodes (4 clients at a time, a fixed seed), each
//! with its own question. The same traffic on three fresh meshes of SmolLM2 hosts:
//!
//! - before prefix reuse: every node runs what enters it, and reads every prompt whole
//!   (`--park-prompts false --prefix-affinity false`);
//! - prompts parked, placement as before (`--prefix-affinity false`): each node reuses what it
//!   read itself;
//! - prompts parked and prefix-aware placement (the defaults).
//!
//! It prints the prefix hit rate (chats whose engine read less than a tenth of the system
//! prompt), time to first token p50 / p95 as the client saw it, and how the chats spread over
//! the nodes.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion_client::protocol::{ChatMessage, Role};
use ganglion_client::{GenerateRequest, StreamEvent};
use ganglion_testkit::{Cluster, QUIET, SMOLLM2, ensure_models, percentile, system_prompt};

const PROMPTS: usize = 4;
const CHATS: usize = 200;
const CLIENTS: usize = 4;
const NODES: [&str; 3] = ["a", "b", "c"];

/// One chat as its client saw it.
struct Chat {
    first_token: Duration,
    prompt_tokens: u32,
    cached: u32,
    executed_by: String,
}

/// What one layout did.
struct Outcome {
    hits: usize,
    p50: Duration,
    p95: Duration,
    wall: Duration,
    spread: BTreeMap<String, usize>,
}

/// A deterministic stream of choices (xorshift), the same for every layout.
fn choices(seed: u64, n: usize) -> Vec<(usize, usize)> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                (x % NODES.len() as u64) as usize,
                ((x >> 32) % PROMPTS as u64) as usize,
            )
        })
        .collect()
}

async fn run(label: &str, flags: &[&str]) -> Outcome {
    let cluster = Cluster::new(&format!("bench-prefix-routing-{label}"));
    let mut args = vec!["--host", SMOLLM2, QUIET];
    args.extend_from_slice(flags);
    let first = cluster.start(NODES[0], &[], &args);
    let mut nodes = vec![first];
    for name in &NODES[1..] {
        let seed = nodes[0].quic;
        nodes.push(cluster.start(name, &[seed], &args));
    }
    for node in &nodes {
        for peer in NODES.iter().filter(|p| **p != node.name) {
            node.sees_serving(peer, SMOLLM2).await;
        }
    }
    let key = cluster.issue_key("desks", &["--plan", "paid"]);
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(cluster.keyed_client(node, Some(&key)).await);
    }
    let prompts: Vec<String> = (0..PROMPTS)
        .map(|p| system_prompt(&format!("Desk {p}"), 14))
        .collect();
    let plan = choices(0x9e37_79b9_7f4a_7c15, CHATS);
    let started = Instant::now();
    let (clients, prompts) = (&clients, &prompts);
    let lanes = (0..CLIENTS).map(|lane| {
        let mine: Vec<(usize, (usize, usize))> = plan
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| i % CLIENTS == lane)
            .collect();
        async move {
            let mut chats = Vec::new();
            for (i, (node, prompt)) in mine {
                let mut request = GenerateRequest::new(
                    SMOLLM2,
                    format!("Question {i}: where do visitors sign in?"),
                )
                .max_tokens(8);
                request.messages.insert(
                    0,
                    ChatMessage {
                        role: Role::System,
                        content: prompts[prompt].clone(),
                    },
                );
                let sent = Instant::now();
                let mut stream = clients[node].generate_stream(request).await.unwrap();
                let mut first = None;
                while let Some(event) = stream.next().await {
                    match event.unwrap() {
                        StreamEvent::Delta(_) => {
                            first.get_or_insert_with(|| sent.elapsed());
                        }
                        StreamEvent::Final(response) => chats.push(Chat {
                            first_token: first.unwrap_or_else(|| sent.elapsed()),
                            prompt_tokens: response.usage.input_tokens,
                            cached: response.usage.cached_input_tokens,
                            executed_by: response.route.executed_by,
                        }),
                    }
                }
            }
            chats
        }
    });
    let chats: Vec<Chat> = futures::future::join_all(lanes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let wall = started.elapsed();
    let hits = chats
        .iter()
        .filter(|c| c.prompt_tokens.saturating_sub(c.cached) < c.prompt_tokens / 10)
        .count();
    let mut spread = BTreeMap::new();
    for c in &chats {
        *spread.entry(c.executed_by.clone()).or_default() += 1;
    }
    let firsts: Vec<Duration> = chats.iter().map(|c| c.first_token).collect();
    Outcome {
        hits,
        p50: percentile(&firsts, 0.5),
        p95: percentile(&firsts, 0.95),
        wall,
        spread,
    }
}

#[tokio::main]
async fn main() {
    ensure_models();
    let layouts: [(&str, &[&str]); 3] = [
        (
            "before prefix reuse",
            &["--park-prompts", "false", "--prefix-affinity", "false"],
        ),
        (
            "parked, placement as before",
            &["--prefix-affinity", "false"],
        ),
        ("parked, prefix-aware placement", &[]),
    ];
    let mut rows = Vec::new();
    for (label, flags) in layouts {
        eprintln!("{label}...");
        rows.push((label, run(&label.replace([' ', ','], "-"), flags).await));
    }
    println!();
    println!(
        "SmolLM2-135M-Instruct, 3 nodes on one machine, {PROMPTS} system prompts of ~1,200 tokens, {CHATS} chats at random nodes, {CLIENTS} at a time, 8 tokens out"
    );
    println!();
    println!(
        "| layout | prefix hits | time to first token p50 / p95 (ms) | wall (s) | chats per node |"
    );
    println!("|---|---|---|---|---|");
    for (label, o) in &rows {
        let spread: Vec<String> = o.spread.iter().map(|(n, c)| format!("{n} {c}")).collect();
        println!(
            "| {label} | {:.0} % | {:.0} / {:.0} | {:.1} | {} |",
            100.0 * o.hits as f64 / CHATS as f64,
            o.p50.as_secs_f64() * 1000.0,
            o.p95.as_secs_f64() * 1000.0,
            o.wall.as_secs_f64(),
            spread.join(", ")
        );
    }
}
