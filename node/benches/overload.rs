//! Run with: cargo bench --workspace --profile dev --bench overload [-- CLIENTS]
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! One node on this machine, asked by CLIENTS (default 1,000) clients at once, each with its own
//! QUIC connection as separate CLI processes would have, then as many HTTP clients: every
//! request must end, within its deadline, with an answer or a clear `overloaded` or
//! `deadline_exceeded`. Prints how each wave ended, the slowest ending against the deadline,
//! the node's peak memory (VmHWM), and whether it answers normally right after.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ganglion_client::{Client, GenerateRequest};
use ganglion_testkit::{self as harness, Cluster, KEYS_REQUIRED, QUIET, SMOLLM2, ensure_models};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);
const TOKENS: u32 = 32;

/// How one request ended: "answer", an error code, or what went wrong below the protocol.
type Ending = (String, Duration);

async fn over_quic(node: &harness::Node, ca: &std::path::Path, key: &str, i: usize) -> Ending {
    let start = Instant::now();
    let connected = Client::builder()
        .node(node.quic)
        .ca_file(ca)
        .unwrap()
        .api_key(key)
        .request_timeout(DEADLINE)
        .connect()
        .await;
    let ending = match connected {
        Err(e) => match e.code() {
            Some(code) => format!("{} (connection refused at the limit)", code.as_str()),
            None => format!("connect: {}", kind_of(&e)),
        },
        Ok(client) => {
            let prompt = format!("Request {i}: name a colour.");
            let answer = client
                .generate(GenerateRequest::new(SMOLLM2, prompt).max_tokens(TOKENS))
                .await;
            client.close().await;
            match answer {
                Ok(_) => "answer".to_owned(),
                Err(e) => match e.code() {
                    Some(code) => code.as_str().to_owned(),
                    None => kind_of(&e),
                },
            }
        }
    };
    (ending, start.elapsed())
}

fn kind_of(e: &ganglion_client::ClientError) -> String {
    use ganglion_client::ClientError;
    match e {
        ClientError::Unreachable { .. } => "unreachable".into(),
        ClientError::Connection { message, .. } => format!("connection ({message})"),
        ClientError::Timeout(_) => "client timeout".into(),
        other => other.to_string(),
    }
}

async fn over_http(http: &reqwest::Client, base: &str, key: &str, i: usize) -> Ending {
    let start = Instant::now();
    let body = json!({
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": format!("Request {i}: name a colour.")}],
        "max_tokens": TOKENS,
    });
    let sent = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("ganglion-skip-cache", "true")
        .timeout(DEADLINE + Duration::from_secs(5))
        .json(&body)
        .send()
        .await;
    let ending = match sent {
        Err(e) => format!(
            "http error ({})",
            if e.is_timeout() { "timeout" } else { "connect" }
        ),
        Ok(response) if response.status().is_success() => "answer".to_owned(),
        Ok(response) => {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"]
                .as_str()
                .or(body["error"]["type"].as_str())
                .unwrap_or("?");
            format!("{} {code}", status.as_u16())
        }
    };
    (ending, start.elapsed())
}

fn summarise(what: &str, endings: &[Ending], took: Duration) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (ending, _) in endings {
        *counts.entry(ending.as_str()).or_default() += 1;
    }
    let slowest = endings.iter().map(|(_, t)| *t).max().unwrap_or_default();
    println!(
        "{what}: {} requests in {:.1} s; slowest ended after {:.1} s (deadline {} s)",
        endings.len(),
        took.as_secs_f64(),
        slowest.as_secs_f64(),
        DEADLINE.as_secs()
    );
    for (ending, count) in counts {
        println!("  {count:>5}  {ending}");
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    ensure_models();
    let clients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    let cluster = Cluster::new("bench-overload");
    let node = cluster.start(
        "a",
        &[],
        &[
            "--host",
            SMOLLM2,
            "--http",
            "127.0.0.1:0",
            KEYS_REQUIRED,
            QUIET,
        ],
    );
    let key = cluster.issue_key("load", &["--plan", "paid"]);
    let ca = cluster.ca_dir().join("ca.crt");
    let pid = node.child.id();
    println!(
        "one node, SmolLM2 ({} slots), {clients} clients at once, {TOKENS} tokens each",
        node.model_status(SMOLLM2).await["stats"]["concurrency"]
    );

    let start = Instant::now();
    let endings =
        futures::future::join_all((0..clients).map(|i| over_quic(&node, &ca, &key, i))).await;
    summarise("QUIC, a connection each", &endings, start.elapsed());

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let base = format!("http://{}", node.http.unwrap());
    let start = Instant::now();
    let endings =
        futures::future::join_all((0..clients).map(|i| over_http(&http, &base, &key, i))).await;
    summarise("HTTP, a connection each", &endings, start.elapsed());

    println!("node peak memory (VmHWM): {:.0} MiB", peak_rss_mib(pid));
    let after = over_quic(&node, &ca, &key, 0).await;
    println!("right after: {} in {:.2} s", after.0, after.1.as_secs_f64());
}
