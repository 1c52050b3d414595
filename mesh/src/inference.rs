//! Inference backends: the code that turns a validated request into model output.
//!
//! - [`llama_cpp`]: GGUF chat models through llama.cpp, every running sequence batched into
//!   each step (the default on CPU: see `docs/performance.md`);
//! - [`text_generation`]: GGUF chat models through mistralrs (streaming deltas, greedy by
//!   default, seeded sampling), for nodes with accelerators;
//! - [`stop`]: stop strings over streamed text;
//! - [`delivery`]: what both chat engines share towards the requester.
//! - [`embeddings`]: BERT sentence embeddings through candle, mean-pooled and normalised as
//!   sentence-transformers does.
//!
//! Backends know nothing of actors or the network: `ModelHost` owns one and drives it.

pub mod bert_gguf;
pub mod delivery;
pub mod embeddings;
pub mod llama_cpp;
pub mod llama_embeddings;
pub mod sampling;
pub mod stop;
pub mod text_generation;

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use ganglion_client::protocol::{ChatMessage, Parameters, ResponseFrame};

/// A loaded model.
pub enum Backend {
    /// A chat model.
    Text(Generator),
    /// An embedding model.
    Embed(Embedder),
}

/// A sentence embedder: llama.cpp on the model converted to GGUF (about 5x faster than candle
/// for one sentence, measured in `docs/performance.md`), or candle where the conversion does
/// not apply.
pub enum Embedder {
    /// llama.cpp.
    LlamaCpp(Box<llama_embeddings::LlamaEmbedder>),
    /// candle.
    Candle(Box<embeddings::Embedder>),
}

impl Embedder {
    /// Embeds a batch of texts: one unit-length vector each, and the number of tokens read.
    /// CPU-bound; call from a blocking thread.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), BackendError> {
        match self {
            Self::LlamaCpp(e) => e.embed(texts),
            Self::Candle(e) => e.embed(texts),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text(_) => "Backend::Text",
            Self::Embed(_) => "Backend::Embed",
        })
    }
}

impl Backend {
    /// The library that runs it.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Text(Generator::LlamaCpp(_)) => TextEngine::LlamaCpp.as_str(),
            Self::Text(Generator::Mistralrs(_)) => TextEngine::Mistralrs.as_str(),
            Self::Embed(e) => match e {
                Embedder::LlamaCpp(_) => "llama.cpp",
                Embedder::Candle(_) => "candle",
            },
        }
    }
}

/// Requests a mistralrs model runs at once unless told: its scheduler alternates sequences
/// rather than batching them, so more slots only share the same speed.
const MISTRALRS_SLOTS: usize = 2;

/// Which library runs GGUF chat models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEngine {
    /// llama.cpp: batched, fastest on CPU.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    /// mistralrs: meant for accelerators (CUDA, Metal builds; this build detects none, so it
    /// is chosen by config, or when llama.cpp cannot serve a model).
    Mistralrs,
}

impl TextEngine {
    /// The engine for this hardware: mistralrs where it has accelerators, llama.cpp on CPU.
    pub fn for_hardware(hardware: &crate::hardware::Hardware) -> Self {
        if hardware.accelerators.is_empty() {
            Self::LlamaCpp
        } else {
            Self::Mistralrs
        }
    }

    /// Its name in configuration and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlamaCpp => "llama.cpp",
            Self::Mistralrs => "mistralrs",
        }
    }
}

/// A chat model on one of the engines.
pub enum Generator {
    /// On llama.cpp.
    LlamaCpp(llama_cpp::LlamaGenerator),
    /// On mistralrs.
    Mistralrs(text_generation::TextGenerator),
}

impl Generator {
    /// Each sequence's context window, in tokens.
    pub fn context_tokens(&self) -> usize {
        match self {
            Self::LlamaCpp(g) => g.context_tokens(),
            Self::Mistralrs(g) => g.context_tokens(),
        }
    }

    /// Prompt tokens of `messages` with the chat template applied.
    pub async fn count_prompt_tokens(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<usize, BackendError> {
        match self {
            Self::LlamaCpp(g) => g.count_prompt_tokens(messages, deadline).await,
            Self::Mistralrs(g) => g.count_prompt_tokens(messages, deadline).await,
        }
    }

    /// Generates an answer, streaming pieces into `deltas` (see each engine's `generate`).
    pub async fn generate(
        &self,
        messages: &[ChatMessage],
        parameters: &Parameters,
        max_tokens: u32,
        deadline: Instant,
        deltas: &tokio::sync::mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<text_generation::Completion, BackendError> {
        match self {
            Self::LlamaCpp(g) => {
                g.generate(messages, parameters, max_tokens, deadline, deltas, sent)
                    .await
            }
            Self::Mistralrs(g) => {
                g.generate(messages, parameters, max_tokens, deadline, deltas, sent)
                    .await
            }
        }
    }
}

/// Why a backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The model could not be loaded.
    #[error("cannot load model from {path}: {message}")]
    Load {
        /// Where it was loaded from.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// Running the model failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The requester went away; the work was stopped.
    #[error("cancelled: the requester went away")]
    Cancelled,
    /// The request's deadline passed; the work was stopped.
    #[error("the deadline passed")]
    DeadlineExceeded,
    /// The requester read too slowly: its buffer filled up, so the work was stopped.
    #[error("cancelled: the requester did not keep up with the output")]
    SlowConsumer,
}

/// Loads the backend of `spec` from the model store, chat models on `engine`, and returns it
/// with the requests it runs at once: `concurrency` when the operator set it, otherwise what
/// the hardware, the model and `kv_budget` bytes of KV cache allow (see
/// [`llama_cpp::slots_for`]; an embedder takes one per core).
pub async fn load(
    spec: &crate::models::ModelSpec,
    store: &crate::models::ModelStore,
    concurrency: Option<usize>,
    engine: TextEngine,
    hardware: &crate::hardware::Hardware,
    kv_budget: u64,
) -> Result<(Backend, usize), BackendError> {
    let threads = hardware.cores.max(1);
    use crate::models::{Task, requantize};
    let location = store.locate(spec).map_err(|e| BackendError::Load {
        path: store.model_dir(&spec.id),
        message: e.to_string(),
    })?;
    match spec.task {
        Task::TextGeneration => {
            let file = if location.is_file() {
                location.clone()
            } else {
                requantize::best_gguf(spec, &location).ok_or_else(|| BackendError::Load {
                    path: location.clone(),
                    message: "no GGUF file in the model folder".into(),
                })?
            };
            let (dir, name) = match (file.parent(), file.file_name()) {
                (Some(dir), Some(name)) => (dir.to_owned(), name.to_string_lossy().into_owned()),
                _ => {
                    return Err(BackendError::Load {
                        path: file.clone(),
                        message: "not a file path".into(),
                    });
                }
            };
            Ok(match engine {
                TextEngine::LlamaCpp => {
                    let generator = llama_cpp::LlamaGenerator::load(
                        &file,
                        concurrency,
                        spec.context_tokens as usize,
                        hardware,
                        kv_budget,
                    )
                    .await?;
                    let slots = generator.sequences();
                    (Backend::Text(Generator::LlamaCpp(generator)), slots)
                }
                TextEngine::Mistralrs => {
                    let slots = concurrency.unwrap_or(MISTRALRS_SLOTS);
                    let generator =
                        text_generation::TextGenerator::load(&dir, &name, slots).await?;
                    (Backend::Text(Generator::Mistralrs(generator)), slots)
                }
            })
        }
        Task::TextEmbeddings => {
            let max_tokens = spec.context_tokens as usize;
            let embedder = tokio::task::spawn_blocking(move || {
                match llama_embeddings::LlamaEmbedder::load(&location, max_tokens, threads) {
                    Ok(embedder) => Ok(Embedder::LlamaCpp(Box::new(embedder))),
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding on candle: llama.cpp cannot run this model");
                        embeddings::Embedder::load(&location, max_tokens)
                            .map(|e| Embedder::Candle(Box::new(e)))
                    }
                }
            })
            .await
            .map_err(|e| BackendError::Run(e.to_string()))??;
            Ok((Backend::Embed(embedder), concurrency.unwrap_or(threads)))
        }
    }
}
