//! What the node and an engine worker say to each other over the worker's socket: frames of
//! the project's codec (length-prefixed bincode, bounded), requests tagged with an id so that
//! many run at once. Deadlines cross as time left, since `Instant`s do not cross processes.

use std::time::{Duration, Instant};

use ganglion_client::protocol::{ChatMessage, FinishReason, Input, Output, Parameters, Usage};
use serde::{Deserialize, Serialize};

use crate::inference::{BackendError, LoadPlan};

/// Largest frame either side accepts: the codec's own bound (4 MiB), above any request the
/// client protocol admits and any batch of vectors an embedder returns.
pub const MAX_FRAME: usize = ganglion_client::codec::MAX_FRAME_LEN;

/// From the node to its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// The first frame: load this model, on llama.cpp's CPU kernels `rung` steps below the
    /// best for the worker's CPU (see `inference::kernels::ladder`).
    Load {
        /// What to load.
        plan: LoadPlan,
        /// 0 for the best kernels.
        rung: usize,
    },
    /// Count the prompt tokens of `messages`.
    Count {
        /// Request id.
        id: u64,
        /// The chat.
        messages: Vec<ChatMessage>,
        /// Time left, in milliseconds.
        within_ms: u64,
    },
    /// Generate an answer, streaming its pieces.
    Generate {
        /// Request id.
        id: u64,
        /// The chat.
        messages: Vec<ChatMessage>,
        /// Sampling parameters.
        parameters: Parameters,
        /// Most tokens to generate.
        max_tokens: u32,
        /// Whose earlier prompts it may reuse (`inference::Chat::scope`).
        scope: u64,
        /// The start of the answer a lost executor sent (`inference::Chat::resume`).
        resume: Option<String>,
        /// Time left, in milliseconds.
        within_ms: u64,
    },
    /// Run a request answered whole: texts to embed or classify, an image, a recording.
    Whole {
        /// Request id.
        id: u64,
        /// Its input.
        input: Input,
        /// Time left, in milliseconds (a model that works in steps stops at it).
        within_ms: u64,
    },
    /// Stop request `id` (its requester left or read too slowly).
    Cancel {
        /// Request id.
        id: u64,
    },
}

/// From a worker to its node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromWorker {
    /// The model is loaded.
    Loaded(Ready),
    /// A piece of generated text of request `id`.
    Delta {
        /// Request id.
        id: u64,
        /// The text.
        piece: String,
    },
    /// Request `id` ended (its last frame).
    Done {
        /// Request id.
        id: u64,
        /// What it produced.
        outcome: Result<Answer, BackendError>,
    },
}

/// A worker that has loaded its model, as it describes itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// Requests it runs at once.
    pub slots: usize,
    /// Context window of a chat model, in tokens (0 for embedders).
    pub context_tokens: usize,
    /// The library that runs it.
    pub engine: String,
    /// Which weights file it serves and why, when it had a choice.
    pub weights: Option<String>,
    /// llama.cpp's CPU variant it loaded.
    pub kernels: String,
    /// Whether that is the lowest rung for its CPU.
    pub lowest: bool,
}

/// What a finished request produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// Prompt tokens counted.
    Counted(usize),
    /// A generation.
    Generated {
        /// The whole text.
        text: String,
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Milliseconds from the request's arrival at the worker to its first token.
        first_token_after_ms: Option<u64>,
        /// Output tokens of a resumed answer's start.
        resumed_tokens: u32,
    },
    /// A whole answer's output (vectors or labels, one per text; an image's labels or text)
    /// and the tokens (or megapixels) read.
    Whole(Output, u32),
}

/// Milliseconds left until `deadline` (0 when passed).
pub fn within_ms(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The deadline `within_ms` from now.
pub fn deadline_in(within_ms: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_millis(within_ms))
        .unwrap_or(now + Duration::from_secs(24 * 3600))
}
