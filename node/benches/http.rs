//! Run with: cargo bench --workspace --profile dev --bench http
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! What the HTTP door costs against the QUIC door of the same node, in one run, real
//! processes on loopback:
//! - generation tokens/s of a streamed answer (SSE through `/v1/chat/completions` against
//!   the Rust client over QUIC), the cache skipped so that the model runs every time;
//! - the latency of a cache HIT (the whole answer at once) through each door.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::time::{Duration, Instant};

use futures::StreamExt;
use ganglion_client::protocol::{CachePolicy, CacheStatus};
use ganglion_client::{Client, GenerateRequest, StreamEvent};
use ganglion_testkit::{Cluster, KEYS_REQUIRED, QUIET, SMOLLM2, WITH_CACHE, ensure_models};
use serde_json::json;

const PROMPT: &str = "Write a short story about a lighthouse keeper.";
const TOKENS: u32 = 200;
const RUNS: usize = 6;
const HITS: usize = 1_000;

/// Tokens/s after the first token of one QUIC generation.
async fn quic_run(client: &Client) -> f64 {
    let request = GenerateRequest::new(SMOLLM2, PROMPT)
        .max_tokens(TOKENS)
        .cache(CachePolicy {
            skip: true,
            ..Default::default()
        });
    let mut stream = client.generate_stream(request).await.unwrap();
    let (mut first, mut tokens) = (None, 0);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(_) => {
                first.get_or_insert_with(Instant::now);
            }
            StreamEvent::Final(response) => tokens = response.usage.output_tokens,
        }
    }
    f64::from(tokens.saturating_sub(1)) / first.unwrap().elapsed().as_secs_f64()
}

/// Tokens/s after the first token of one SSE generation.
async fn http_run(http: &reqwest::Client, base: &str, key: &str) -> f64 {
    let body = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": TOKENS,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("ganglion-skip-cache", "true")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (mut first, mut text) = (None, String::new());
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("\"content\"") {
            first.get_or_insert_with(Instant::now);
        }
    }
    let end = Instant::now();
    let usage = text
        .split("data: ")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
        .find_map(|v| v["usage"]["completion_tokens"].as_u64())
        .unwrap();
    (usage.saturating_sub(1)) as f64 / (end - first.unwrap()).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    ensure_models();
    let cluster = Cluster::new("bench-http");
    let a = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--http",
            "127.0.0.1:0",
            KEYS_REQUIRED,
            WITH_CACHE,
            QUIET,
        ],
    );
    let key = cluster.issue_key("bench", &["--plan", "paid"]);
    let client = cluster.keyed_client(&a, Some(&key)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", a.http.unwrap());

    // Warm up both doors, then alternate.
    quic_run(&client).await;
    http_run(&http, &base, &key).await;
    let (mut quic, mut over_http) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        quic.push(quic_run(&client).await);
        over_http.push(http_run(&http, &base, &key).await);
    }
    let (quic, over_http) = (median(quic), median(over_http));

    // A stored answer, then hits through each door.
    let short = GenerateRequest::new(SMOLLM2, "Name a colour.").max_tokens(16);
    client.generate(short.clone()).await.unwrap();
    let body = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 16,
    });
    let mut quic_hits = Vec::with_capacity(HITS);
    let mut http_hits = Vec::with_capacity(HITS);
    for _ in 0..HITS {
        let start = Instant::now();
        let answer = client.generate(short.clone()).await.unwrap();
        quic_hits.push(start.elapsed());
        assert_eq!(answer.response.cache.status, CacheStatus::Hit);
        let start = Instant::now();
        let response = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["ganglion-cache-status"], "HIT");
        response.bytes().await.unwrap();
        http_hits.push(start.elapsed());
    }
    quic_hits.sort();
    http_hits.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;

    println!();
    println!("| {TOKENS} tokens streamed, median of {RUNS} | tokens/s after the first |");
    println!("|---|---|");
    println!("| QUIC (Rust client) | {quic:.1} |");
    println!("| HTTP (SSE, /v1/chat/completions) | {over_http:.1} |");
    println!("| ratio HTTP / QUIC | {:.3} |", over_http / quic);
    println!();
    println!("| cache HIT, {HITS} each | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| QUIC | {:.0} µs | {:.0} µs |",
        us(percentile(&quic_hits, 0.5)),
        us(percentile(&quic_hits, 0.99))
    );
    println!(
        "| HTTP | {:.0} µs | {:.0} µs |",
        us(percentile(&http_hits, 0.5)),
        us(percentile(&http_hits, 0.99))
    );
    println!(
        "| HTTP adds (p50) | {:.0} µs | |",
        us(percentile(&http_hits, 0.5)) - us(percentile(&quic_hits, 0.5))
    );
}
