//! Run with: cargo bench --workspace --profile dev --bench resume
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! How often a generation that moved to another executor goes on as it would have. For each of
//! 50 prompts, SmolLM2-135M (llama.cpp, greedy, in process) writes 64 tokens uninterrupted;
//! then, for k in 1, 8 and 32, the text of its first k tokens is handed to the engine as a
//! resumed answer (as a node does when the executor was lost after k tokens), which continues
//! it to 64 tokens. It prints how many continuations equal the uninterrupted text exactly, and
//! how far the others agree. The engine reads the resumed text as a prompt (one batch, and a
//! canonical tokenization of the text), where the original decoded it one token at a time, so
//! equality is expected often, not promised.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use ganglion::inference::{self, Backend, Chat};
use ganglion::models::catalog::SMOLLM2;
use ganglion::models::{Catalog, ModelStore};
use ganglion_client::protocol::{ChatMessage, Parameters, ResponseFrame, Role};

const PROMPTS: usize = 50;
const TOKENS: u32 = 64;
const KILLED_AFTER: [u32; 3] = [1, 8, 32];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let catalog = Catalog::builtin();
    let store = ModelStore::new(ModelStore::default_root().expect("HOME"));
    let llm = catalog.get(SMOLLM2).expect("catalog");
    let hardware = ganglion::hardware::Hardware::detect(None);
    let engine = ganglion::config::engines::TextEngine::LlamaCpp;
    let plan = inference::plan(llm, &store, Some(1), engine, &hardware, 0)
        .expect("SmolLM2 in the store (run `ganglion-node models pull`)");
    let generator = match inference::load(&plan).await.expect("load SmolLM2").backend {
        Backend::Text(generator) => generator,
        _ => unreachable!("SmolLM2 is a text model"),
    };
    let topics = [
        "a lighthouse keeper",
        "a river",
        "the moon",
        "a baker",
        "a storm at sea",
        "an old clock",
        "a mountain village",
        "a lost cat",
        "a library at night",
        "the first snow",
    ];
    let styles = ["story", "poem", "description", "letter", "diary entry"];
    let parameters = Parameters::default();
    let generate = |messages: Vec<ChatMessage>, max_tokens: u32, resume: Option<String>| {
        let (generator, parameters) = (&generator, &parameters);
        async move {
            let (deltas, mut pieces) = tokio::sync::mpsc::channel::<ResponseFrame>(1024);
            let drain = tokio::spawn(async move { while pieces.recv().await.is_some() {} });
            let chat = Chat {
                messages: &messages,
                parameters,
                max_tokens,
                scope: 0,
                resume: resume.as_deref(),
            };
            let deadline = Instant::now() + Duration::from_secs(300);
            let done = generator
                .generate(chat, deadline, &deltas, &AtomicU32::new(0))
                .await
                .expect("generate");
            drop(deltas);
            let _ = drain.await;
            done.text
        }
    };
    let mut equal = [0usize; KILLED_AFTER.len()];
    let mut agreed = [0usize; KILLED_AFTER.len()];
    let mut runs = 0;
    for i in 0..PROMPTS {
        let prompt = format!(
            "Write a short {} about {}.",
            styles[i % styles.len()],
            topics[i % topics.len()]
        );
        let messages = vec![ChatMessage {
            role: Role::User,
            content: prompt,
        }];
        let whole = generate(messages.clone(), TOKENS, None).await;
        runs += 1;
        for (j, &k) in KILLED_AFTER.iter().enumerate() {
            // What the client had when the executor was lost after k tokens.
            let sent = generate(messages.clone(), k, None).await;
            let moved = generate(messages.clone(), TOKENS, Some(sent)).await;
            if moved == whole {
                equal[j] += 1;
            }
            agreed[j] += whole
                .chars()
                .zip(moved.chars())
                .take_while(|(a, b)| a == b)
                .count();
        }
        eprint!(".");
    }
    eprintln!();
    println!(
        "SmolLM2-135M-Instruct on llama.cpp, greedy, {TOKENS} tokens, {runs} prompts; the generation moved after k tokens"
    );
    println!();
    println!(
        "| moved after | continuations equal to the uninterrupted text | characters agreeing, mean |"
    );
    println!("|---|---|---|");
    for (j, k) in KILLED_AFTER.iter().enumerate() {
        println!(
            "| {k} token(s) | {} of {runs} ({:.0} %) | {:.0} |",
            equal[j],
            100.0 * equal[j] as f64 / runs as f64,
            agreed[j] as f64 / runs as f64
        );
    }
}
