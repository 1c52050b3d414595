//! Run with: cargo bench --workspace --profile dev --bench prefix
//! (models must be pulled first; the first run builds llama.cpp's `llama-server`, as the
//! `serving` bench does)
//!
//! Prefix reuse: a node against llama-server with its prompt cache on (its default), in one
//! run on this machine, the same GGUF file (SmolLM2-135M-Instruct Q8_0), every core, greedy,
//! the same streaming OpenAI clients.
//!
//! - a system prompt of about 1,200 tokens shared by 32 requests with different questions,
//!   asked one after another: time to first token of the first (a miss, median of 3 distinct
//!   system prompts) and of the 31 others (hits), and the prompt tokens each hit did not read;
//! - the same 8 at once;
//! - a 4-turn conversation: time to first token of each turn.
//!
//! Each side runs 2 rounds (every prompt names its round, so no round reuses another's work),
//! and each figure is the median of its rounds.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::time::Duration;

use ganglion_testkit::{
    Cluster, LlamaServer, QUIET, SMOLLM2, Streamed, ensure_models, llama_cpp_tools, percentile,
    smollm2_q8_0, stream_chat, system_prompt,
};
use serde_json::{Value, json};

const QUESTIONS: usize = 32;
const AT_ONCE: usize = 8;
const TURNS: usize = 4;
const ROUNDS: usize = 2;
const ANSWER_TOKENS: u32 = 16;

/// A system prompt of about 1,200 tokens, its first words naming `which`.
fn long_prompt(which: &str) -> String {
    system_prompt(which, 14)
}

fn chat(system: &str, turns: &[(String, String)], question: &str) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (asked, answered) in turns {
        messages.push(json!({"role": "user", "content": asked}));
        messages.push(json!({"role": "assistant", "content": answered}));
    }
    messages.push(json!({"role": "user", "content": question}));
    Value::Array(messages)
}

/// What one side did in one round.
#[derive(Debug, Default, Clone)]
struct Figures {
    prompt_tokens: u64,
    miss: Duration,
    hit_p50: Duration,
    hit_p95: Duration,
    hit_cached: f64,
    at_once_p50: Duration,
    at_once_p95: Duration,
    turns: Vec<(Duration, u64, u64)>,
}

async fn measure(base: &str, key: &str, round: usize) -> Figures {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ask = |messages: Value| {
        let http = http.clone();
        async move { stream_chat(&http, base, key, SMOLLM2, messages, ANSWER_TOKENS).await }
    };
    let mut figures = Figures::default();
    // Misses: three system prompts never seen.
    let mut misses = Vec::new();
    for k in 0..3 {
        let system = long_prompt(&format!("Round {round}, desk {k}"));
        let r = ask(chat(&system, &[], "Where do I collect a parcel?")).await;
        figures.prompt_tokens = r.prompt_tokens;
        misses.push(r.first_token);
    }
    figures.miss = percentile(&misses, 0.5);
    // Hits: the first desk's prompt again, a different question each time.
    let system = long_prompt(&format!("Round {round}, desk 0"));
    let mut hits: Vec<Streamed> = Vec::new();
    for q in 0..QUESTIONS - 1 {
        let question = format!("Question {q}: when does the canteen serve lunch?");
        hits.push(ask(chat(&system, &[], &question)).await);
    }
    figures.hit_cached =
        hits.iter().map(|r| r.cached_tokens as f64).sum::<f64>() / hits.len() as f64;
    let firsts: Vec<Duration> = hits.iter().map(|r| r.first_token).collect();
    figures.hit_p50 = percentile(&firsts, 0.5);
    figures.hit_p95 = percentile(&firsts, 0.95);
    // The same prompt, 8 questions at once.
    let at_once = futures::future::join_all((0..AT_ONCE).map(|q| {
        let question = format!("Question {q} of a wave: where do visitors sign in?");
        ask(chat(&system, &[], &question))
    }))
    .await;
    let firsts: Vec<Duration> = at_once.iter().map(|r| r.first_token).collect();
    figures.at_once_p50 = percentile(&firsts, 0.5);
    figures.at_once_p95 = percentile(&firsts, 0.95);
    // A conversation: each turn sends the whole conversation so far.
    let system = long_prompt(&format!("Round {round}, conversation"));
    let questions = [
        "Where do I collect a parcel?",
        "And when does the office open?",
        "Where do visitors sign in?",
        "When is lunch served?",
    ];
    let mut turns = Vec::new();
    for question in questions.iter().take(TURNS) {
        let r = ask(chat(&system, &turns, question)).await;
        figures
            .turns
            .push((r.first_token, r.prompt_tokens, r.cached_tokens));
        let said = r.text;
        turns.push(((*question).to_owned(), said));
    }
    figures
}

fn median(runs: &[Figures]) -> Figures {
    let mid =
        |f: &dyn Fn(&Figures) -> Duration| percentile(&runs.iter().map(f).collect::<Vec<_>>(), 0.5);
    let turns = (0..runs[0].turns.len())
        .map(|t| {
            (
                mid(&|r| r.turns[t].0),
                runs[0].turns[t].1,
                runs[0].turns[t].2,
            )
        })
        .collect();
    Figures {
        prompt_tokens: runs[0].prompt_tokens,
        miss: mid(&|r| r.miss),
        hit_p50: mid(&|r| r.hit_p50),
        hit_p95: mid(&|r| r.hit_p95),
        hit_cached: runs.iter().map(|r| r.hit_cached).sum::<f64>() / runs.len() as f64,
        at_once_p50: mid(&|r| r.at_once_p50),
        at_once_p95: mid(&|r| r.at_once_p95),
        turns,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    ensure_models();
    let gguf = smollm2_q8_0();
    let tools = llama_cpp_tools();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let server = LlamaServer::start(&tools, &gguf, cores, AT_ONCE, &[]).await;
    let cluster = Cluster::new("bench-prefix");
    let key = cluster.issue_key("bench", &["--plan", "paid"]);
    let node = cluster.start(
        "node",
        &[],
        &["--host", SMOLLM2, "--http", "127.0.0.1:0", QUIET],
    );
    let sides = [
        ("llama-server", server.base.clone(), "none".to_owned()),
        ("node", format!("http://{}", node.http.unwrap()), key),
    ];
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); sides.len()];
    for round in 0..ROUNDS {
        for k in 0..sides.len() {
            let i = (k + round) % sides.len();
            let (label, base, key) = &sides[i];
            eprintln!("round {}: {label}", round + 1);
            runs[i].push(measure(base, key, round).await);
        }
    }
    let figures: Vec<Figures> = runs.iter().map(|r| median(r)).collect();
    println!();
    println!(
        "SmolLM2-135M-Instruct Q8_0, {cores} threads, greedy, {ANSWER_TOKENS} tokens out; llama-server --parallel {AT_ONCE} (prompt cache on); medians of {ROUNDS} rounds"
    );
    println!();
    println!("| time to first token (ms) | llama-server | node |");
    println!("|---|---|---|");
    let row = |what: String, cell: &dyn Fn(&Figures) -> String| {
        println!("| {what} | {} | {} |", cell(&figures[0]), cell(&figures[1]));
    };
    row(
        format!(
            "miss: a new system prompt ({} prompt tokens)",
            figures[1].prompt_tokens
        ),
        &|f| ms(f.miss),
    );
    row(
        format!(
            "hit: the same system prompt, {} other questions in turn, p50 / p95",
            QUESTIONS - 1
        ),
        &|f| format!("{} / {}", ms(f.hit_p50), ms(f.hit_p95)),
    );
    row("miss ÷ hit p50".into(), &|f| {
        format!("{:.1}×", f.miss.as_secs_f64() / f.hit_p50.as_secs_f64())
    });
    row("prompt tokens not read again per hit (mean)".into(), &|f| {
        format!("{:.0}", f.hit_cached)
    });
    row(
        format!("{AT_ONCE} questions at once on the same prompt, p50 / p95"),
        &|f| format!("{} / {}", ms(f.at_once_p50), ms(f.at_once_p95)),
    );
    for t in 0..TURNS {
        row(
            format!(
                "conversation, turn {} (prompt tokens, not read again)",
                t + 1
            ),
            &|f| {
                let (first, prompt, cached) = f.turns[t];
                format!("{} ({prompt}, {cached})", ms(first))
            },
        );
    }
    drop(server);
}
