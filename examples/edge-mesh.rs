//! Run with: ./examples/edge-mesh.sh
//!
//! An edge → regional fall-back, on one machine: two edge nodes whose memory limit is too small
//! for the LLM (they host the embedder), and two regional nodes hosting the LLM, about 5 ms and
//! 60 ms of round trip away (UDP relays add real delay). A client asks an edge node for
//! the LLM; the route shows it was handed to the nearer regional node. The same question again
//! is answered from the mesh's result cache, and the route says so. Then a long story streams
//! from the near node, which is killed mid-story: the far node continues it in the same stream,
//! and the route says where it moved. The next request (past the cache) goes to the far node.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use ganglion_client::protocol::{CachePolicy, FinalResponse};
use ganglion_client::{GenerateRequest, StreamEvent};
use ganglion_testkit::{
    Cluster, KEYS_REQUIRED, MINILM, Node, SMOLLM2, UdpRelay, WITH_CACHE, ensure_models, eventually,
};

const LLM: &str = SMOLLM2;
const EMBEDDER: &str = MINILM;

/// Every node: keys required and the result cache on, as a node runs by default; a peer silent
/// for 2 s is dead.
const NODE_FLAGS: [&str; 4] = ["--liveness-timeout", "2s", KEYS_REQUIRED, WITH_CACHE];

/// Starts node `name` of `cluster` seeded with `seeds`, with [`NODE_FLAGS`] and `args`.
fn start(cluster: &Cluster, name: &str, seeds: &[SocketAddr], args: &[&str]) -> Node {
    let flags: Vec<&str> = NODE_FLAGS.iter().chain(args).copied().collect();
    cluster.start(name, seeds, &flags)
}

/// `node`'s view of its peers (`/admin/peers`).
async fn peers(node: &Node) -> Vec<serde_json::Value> {
    node.json("/admin/peers")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn show(response: &FinalResponse) -> String {
    let mut text = format!("route {}", response.route_line());
    for attempt in &response.route.attempts {
        text.push_str(&format!(
            "\n      tried {} first: {}",
            attempt.node, attempt.reason
        ));
    }
    text
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The harness finds `ganglion-node` beside this example's folder (./examples/edge-mesh.sh
    // builds it), pulls the models, makes a cluster CA in a scratch folder and issues each
    // node's identity; nodes are killed when dropped, and their logs shown if this panics.
    ensure_models();
    let cluster = Cluster::new("edge-mesh");

    // Regional nodes behind relays: peers dial the relay, which adds the distance.
    let mut relays = Vec::new();
    let mut regional = Vec::new();
    for (name, one_way) in [("near", 2), ("far", 30)] {
        let relay = UdpRelay::bind(Duration::from_millis(one_way)).await?;
        let advertise = relay.addr.to_string();
        let node = start(
            &cluster,
            name,
            &[],
            &["--advertise", &advertise, "--host", LLM],
        );
        relay.route_to(node.quic);
        regional.push(node);
        relays.push(relay);
    }
    let edge_args = [
        "--host",
        LLM,
        "--host",
        EMBEDDER,
        "--memory-limit",
        "200MiB",
    ];
    let seeds: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    let edge1 = start(&cluster, "west-edge-1", &seeds, &edge_args);
    let edge2 = start(&cluster, "west-edge-2", &seeds, &edge_args);

    println!("waiting for the mesh and its adverts...");
    eventually(
        Duration::from_secs(30),
        "the mesh forms and every peer advertises its models",
        || async {
            let view = peers(&edge1).await;
            let hosts = view
                .iter()
                .filter(|p| {
                    p["models"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m == LLM))
                })
                .count();
            let advertised = view
                .iter()
                .all(|p| p["models"].as_array().is_some_and(|m| !m.is_empty()));
            (hosts == 2 && view.len() == 3 && advertised).then_some(())
        },
    )
    .await;
    println!("\n{} sees:", edge1.name);
    for p in peers(&edge1).await {
        println!(
            "  {:<12} rtt {:>6.1} ms  hosts {}",
            p["name"].as_str().unwrap_or("?"),
            p["rtt_ms"].as_f64().unwrap_or(0.0),
            p["models"]
        );
    }

    let key = cluster.issue_key("edge-demo", &[]);
    let client = cluster.keyed_client(&edge1, Some(&key)).await;
    let prompt = "What is the capital of France? Answer in one sentence.";
    let answer = client
        .generate(GenerateRequest::new(LLM, prompt).max_tokens(24))
        .await?;
    println!(
        "\nasked {} for the LLM: {:?}\n  {}",
        edge1.name,
        answer.text,
        show(&answer.response)
    );

    let client2 = cluster.keyed_client(&edge2, Some(&key)).await;
    let embedded = client2
        .embed_full(EMBEDDER, vec!["edge inference".into()])
        .await?;
    println!(
        "asked {} for embeddings (hosted there):\n  {}",
        edge2.name,
        show(&embedded)
    );

    // The same question again: the mesh's result cache answers, and the route says so.
    let again = client
        .generate(GenerateRequest::new(LLM, prompt).max_tokens(24))
        .await?;
    println!(
        "asked {} the same again: {:?}\n  {}",
        edge1.name,
        again.text,
        show(&again.response)
    );

    // A long story, past the cache, streams from the near node; that node is killed while it
    // writes (kill -9): the far node continues the story from the text the client has.
    let skip_cache = CachePolicy {
        skip: true,
        ..CachePolicy::default()
    };
    let story = GenerateRequest::new(LLM, "Tell me a long story about a lighthouse keeper.")
        .max_tokens(120)
        .cache(skip_cache.clone());
    let mut stream = client.generate_stream(story).await?;
    let mut text = String::new();
    let mut near = Some(regional.remove(0));
    print!("\nasked {} for a story, streaming: ", edge1.name);
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta(piece) => {
                print!("{piece}");
                text.push_str(&piece);
                if text.len() > 80
                    && let Some(node) = near.take()
                {
                    print!(" [killing {} (kill -9)] ", node.name);
                    drop(node);
                }
            }
            StreamEvent::Final(response) => println!("\n  {}", show(&response)),
        }
    }
    // Past the cache, so that a model runs: the request fails over to the far node.
    let answer = client
        .generate(
            GenerateRequest::new(LLM, prompt)
                .max_tokens(24)
                .cache(skip_cache),
        )
        .await?;
    println!(
        "asked {} again, past the cache: {:?}\n  {}",
        edge1.name,
        answer.text,
        show(&answer.response)
    );

    drop((edge1, edge2, regional));
    Ok(())
}
