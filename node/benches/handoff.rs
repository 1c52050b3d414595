//! Run with: cargo bench --workspace --profile dev --bench handoff
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! What one handoff costs, with real node processes on loopback: time to first token and
//! generation throughput when the client's node runs SmolLM2 itself, against the same request
//! entering at an edge node that hands it to that node (one hop).

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion_client::protocol::Route;
use ganglion_client::{Client, GenerateRequest, StreamEvent};
use ganglion_testkit::{Cluster, MINILM, SMOLLM2, ensure_models, eventually};

const RUNS: usize = 100;

/// Time to first token, generation tokens/s after it, and the route of one streamed request.
async fn measure(client: &Client, max_tokens: u32) -> (Duration, f64, Route) {
    let start = Instant::now();
    let mut stream = client
        .generate_stream(
            GenerateRequest::new(SMOLLM2, "Write a short story about a lighthouse keeper.")
                .max_tokens(max_tokens),
        )
        .await
        .unwrap();
    let mut first = None;
    let mut route = None;
    let mut output_tokens = 0;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(_) => {
                first.get_or_insert_with(Instant::now);
            }
            StreamEvent::Final(response) => {
                route = Some(response.route);
                output_tokens = response.usage.output_tokens;
            }
        }
    }
    let (end, first) = (Instant::now(), first.unwrap());
    (
        first - start,
        f64::from(output_tokens.saturating_sub(1)) / (end - first).as_secs_f64(),
        route.unwrap(),
    )
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    ensure_models();
    let cluster = Cluster::new("bench-handoff");
    let regional = cluster.start(
        "regional",
        &[],
        &["--host", SMOLLM2, "--model-concurrency", "1"],
    );
    let edge = cluster.start(
        "west-edge",
        &[regional.quic],
        &[
            "--host",
            SMOLLM2,
            "--host",
            MINILM,
            "--memory-limit",
            "200MiB",
        ],
    );
    let local = cluster.client(&regional).await;
    let via_edge = cluster.client(&edge).await;
    // Wait until the edge knows where the LLM is, and warm both paths.
    eventually(
        Duration::from_secs(20),
        "the edge hands a request to regional",
        || async {
            via_edge
                .generate(GenerateRequest::new(SMOLLM2, "Hi").max_tokens(1))
                .await
                .is_ok()
                .then_some(())
        },
    )
    .await;
    measure(&local, 4).await;

    // Seen by the client, inference variance included; and inside each handed-over request,
    // the edge's time to first token minus the executor's: exactly what the hop added.
    let (mut ttft_local, mut ttft_hop, mut added): (Vec<Duration>, Vec<Duration>, Vec<f64>) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ttft_local.push(measure(&local, 1).await.0);
        let (t, _, route) = measure(&via_edge, 1).await;
        assert_eq!(route.path, ["west-edge", "regional"]);
        ttft_hop.push(t);
        let at = |i: usize| route.per_hop[i].first_token_ms.unwrap();
        added.push(at(0) - at(1));
    }
    let (mut tps_local, mut tps_hop) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        tps_local.push(measure(&local, 128).await.1);
        tps_hop.push(measure(&via_edge, 128).await.1);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (tl, th) = (median(ttft_local.clone()), median(ttft_hop.clone()));
    println!(
        "time to first token, entry node runs it   p50 {:>7.2} ms  ({RUNS} runs)",
        ms(tl)
    );
    println!(
        "time to first token, one hop              p50 {:>7.2} ms  ({RUNS} runs)",
        ms(th)
    );
    println!(
        "added by one hop, measured inside requests  p50 {:>7.2} ms  p99 {:>7.2} ms",
        median(added.clone()),
        {
            added.sort_by(f64::total_cmp);
            added[added.len() * 99 / 100]
        }
    );
    let (gl, gh) = (median(tps_local), median(tps_hop));
    println!("generation, entry node runs it                {gl:>7.1} tok/s");
    println!(
        "generation, one hop                           {gh:>7.1} tok/s  (ratio {:.3})",
        gh / gl
    );
}
