//! Inference backends: the code that turns a validated request into model output.
//!
//! - [`llama_cpp`]: GGUF chat models through llama.cpp, every running sequence batched into
//!   each step (the default on CPU: see `docs/performance.md`);
//! - [`text_generation`]: GGUF chat models through mistralrs (streaming deltas, greedy by
//!   default, seeded sampling), for nodes with accelerators;
//! - [`stop`]: stop strings over streamed text;
//! - [`parking`]: which finished sequences llama.cpp keeps, so that a prompt sharing their
//!   beginning reads only what is new;
//! - [`delivery`]: what both chat engines share towards the requester.
//! - [`embeddings`]: BERT sentence embeddings through candle, mean-pooled and normalised as
//!   sentence-transformers does.
//! - [`classify`]: text classifiers (sentiment, moderation, language).
//! - [`onnx`]: ONNX Runtime, opened at run time, for the models that run on it;
//! - [`vision`]: image models on ONNX Runtime (OCR, image classifiers).
//! - [`speech`]: speech to text on ONNX Runtime (Moonshine).
//!
//! Backends know nothing of actors or the network: `ModelHost` owns one and drives it.

pub mod bert_gguf;
pub mod classify;
pub mod delivery;
pub mod embeddings;
pub mod kernels;
pub mod llama_cpp;
pub mod llama_embeddings;
pub mod onnx;
pub mod parking;
pub mod sampling;
pub mod speech;
pub mod stop;
pub mod text_generation;
pub mod vision;
pub mod weights;
pub mod worker;

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use ganglion_client::protocol::{ChatMessage, Input, Output, Parameters, ResponseFrame};

use crate::config::engines::TextEngine;

/// A chat to answer, as every chat engine takes it.
#[derive(Debug, Clone, Copy)]
pub struct Chat<'a> {
    /// The conversation.
    pub messages: &'a [ChatMessage],
    /// Sampling and stops.
    pub parameters: &'a Parameters,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Whose earlier prompts this one may reuse the work of (a hash of its account): an
    /// engine that keeps finished prompts (`parking`) reuses them only within a scope.
    pub scope: u64,
    /// The start of the answer, which a lost executor already sent: read as part of the
    /// prompt, and continued.
    pub resume: Option<&'a str>,
}

/// A loaded model.
pub enum Backend {
    /// A chat model.
    Text(Generator),
    /// An embedding model.
    Embed(Embedder),
    /// A text classifier.
    Classify(classify::Classifier),
    /// An image model.
    Vision(vision::Vision),
    /// A speech model.
    Speech(Transcriber),
}

/// A speech-to-text model.
pub enum Transcriber {
    /// Moonshine, in this process.
    Moonshine(Box<speech::Moonshine>),
    /// In a worker process.
    Worker(worker::Worker),
}

/// A sentence embedder: llama.cpp on the model converted to GGUF (about 5x faster than candle
/// for one sentence, measured in `docs/performance.md`), or candle where the conversion does
/// not apply.
pub enum Embedder {
    /// llama.cpp.
    LlamaCpp(Box<llama_embeddings::LlamaEmbedder>),
    /// candle.
    Candle(Box<embeddings::Embedder>),
    /// Either of them in a worker process (asked with [`worker::Worker::embed`]).
    Worker(worker::Worker),
}

impl Embedder {
    /// Embeds a batch of texts: one unit-length vector each, and the number of tokens read.
    /// CPU-bound; call from a blocking thread.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), BackendError> {
        match self {
            Self::LlamaCpp(e) => e.embed(texts),
            Self::Candle(e) => e.embed(texts),
            Self::Worker(_) => Err(BackendError::Run(
                "an embedder in a worker is asked through Worker::batch".into(),
            )),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text(_) => "Backend::Text",
            Self::Embed(_) => "Backend::Embed",
            Self::Classify(_) => "Backend::Classify",
            Self::Vision(_) => "Backend::Vision",
            Self::Speech(_) => "Backend::Speech",
        })
    }
}

impl Backend {
    /// The library that runs it.
    pub fn engine(&self) -> &str {
        match self {
            Self::Text(Generator::LlamaCpp(_)) => TextEngine::LlamaCpp.as_str(),
            Self::Text(Generator::Mistralrs(_)) => TextEngine::Mistralrs.as_str(),
            Self::Text(Generator::Worker(w))
            | Self::Embed(Embedder::Worker(w))
            | Self::Classify(classify::Classifier::Worker(w))
            | Self::Vision(vision::Vision::Worker(w))
            | Self::Speech(Transcriber::Worker(w)) => w.engine(),
            Self::Embed(Embedder::LlamaCpp(_)) => "llama.cpp",
            Self::Embed(Embedder::Candle(_)) => "candle",
            Self::Classify(classify::Classifier::Sentiment(_)) => "vader",
            Self::Classify(classify::Classifier::Moderation(_)) => "tf-idf linear",
            Self::Classify(classify::Classifier::Language) => "whatlang",
            Self::Vision(_) | Self::Speech(_) => "onnxruntime",
        }
    }

    /// Runs a request answered whole (texts to embed or classify, an image): the output, and
    /// the tokens read (texts) or megapixels (an image). A model in process runs on a blocking
    /// thread and cannot be interrupted, so this ends when it does; one in a worker is waited
    /// for until `deadline` and its grace ([`worker::Worker::whole`]).
    pub async fn whole(
        self: std::sync::Arc<Self>,
        input: Input,
        deadline: Instant,
    ) -> Result<(Output, u32), BackendError> {
        match &*self {
            Self::Embed(Embedder::Worker(worker))
            | Self::Classify(classify::Classifier::Worker(worker))
            | Self::Vision(vision::Vision::Worker(worker))
            | Self::Speech(Transcriber::Worker(worker)) => worker.whole(&input, deadline).await,
            Self::Text(_) => Err(wrong_input()),
            _ => tokio::task::spawn_blocking(move || self.whole_here(&input, deadline))
                .await
                .unwrap_or_else(|e| Err(BackendError::Run(format!("the model failed: {e}")))),
        }
    }

    /// Runs a request answered whole in this thread. CPU-bound.
    fn whole_here(&self, input: &Input, deadline: Instant) -> Result<(Output, u32), BackendError> {
        match (self, input) {
            (Self::Embed(embedder), Input::Embed(texts)) => embedder
                .embed(texts)
                .map(|(vectors, tokens)| (Output::Embeddings(vectors), tokens)),
            (Self::Classify(classifier), Input::Classify(texts)) => classifier
                .classify(texts)
                .map(|(labels, words)| (Output::Labels(labels), words)),
            (Self::Vision(model), Input::Image(bytes)) => model.run(bytes),
            (Self::Speech(Transcriber::Moonshine(model)), Input::Audio(bytes)) => {
                let samples = speech::audio::samples_16k(bytes)
                    .map_err(|e| BackendError::Input(e.to_string()))?;
                let (text, tokens) = model.transcribe(&samples, deadline)?;
                let text = Output::Text {
                    text,
                    finish_reason: ganglion_client::protocol::FinishReason::Stop,
                };
                Ok((text, tokens))
            }
            _ => Err(wrong_input()),
        }
    }

    /// Whether its engine keeps finished chats' work for prompts that begin the same way
    /// (llama.cpp's parked sequences).
    pub fn parks_prompts(&self) -> bool {
        matches!(self, Self::Text(_)) && self.engine() == TextEngine::LlamaCpp.as_str()
    }

    /// Its worker process, when it runs in one.
    pub fn worker(&self) -> Option<&worker::Worker> {
        match self {
            Self::Text(Generator::Worker(w))
            | Self::Embed(Embedder::Worker(w))
            | Self::Classify(classify::Classifier::Worker(w))
            | Self::Vision(vision::Vision::Worker(w))
            | Self::Speech(Transcriber::Worker(w)) => Some(w),
            _ => None,
        }
    }

    /// Loads `plan` in a worker process, which starts on the best of llama.cpp's CPU kernels
    /// for its CPU (see [`kernels`]): the backend and the requests it runs at once.
    pub async fn in_worker(plan: LoadPlan) -> Result<(Self, usize), BackendError> {
        let task = plan.task;
        let (worker, slots) = worker::Worker::start(plan).await?;
        Ok(match task {
            crate::models::Task::TextGeneration => (Self::Text(Generator::Worker(worker)), slots),
            crate::models::Task::TextEmbeddings => (Self::Embed(Embedder::Worker(worker)), slots),
            crate::models::Task::TextClassification => {
                (Self::Classify(classify::Classifier::Worker(worker)), slots)
            }
            crate::models::Task::ImageToText | crate::models::Task::ImageClassification => {
                (Self::Vision(vision::Vision::Worker(worker)), slots)
            }
            crate::models::Task::SpeechRecognition => {
                (Self::Speech(Transcriber::Worker(worker)), slots)
            }
        })
    }
}

/// A request the model does not take (the host checks inputs first: this is a last guard).
fn wrong_input() -> BackendError {
    BackendError::Input("this model does not take that input".into())
}

/// Requests a mistralrs model runs at once unless told: its scheduler alternates sequences
/// rather than batching them, so more slots only share the same speed.
const MISTRALRS_SLOTS: usize = 2;

/// A chat model on one of the engines.
pub enum Generator {
    /// On llama.cpp.
    LlamaCpp(llama_cpp::LlamaGenerator),
    /// On mistralrs.
    Mistralrs(text_generation::TextGenerator),
    /// On either, in a worker process.
    Worker(worker::Worker),
}

impl Generator {
    /// Each sequence's context window, in tokens.
    pub fn context_tokens(&self) -> usize {
        match self {
            Self::LlamaCpp(g) => g.context_tokens(),
            Self::Mistralrs(g) => g.context_tokens(),
            Self::Worker(w) => w.context_tokens(),
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
            Self::Worker(w) => w.count_prompt_tokens(messages, deadline).await,
        }
    }

    /// Generates an answer, streaming pieces into `deltas` (see each engine's `generate`).
    pub async fn generate(
        &self,
        chat: Chat<'_>,
        deadline: Instant,
        deltas: &tokio::sync::mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<text_generation::Completion, BackendError> {
        match self {
            Self::LlamaCpp(g) => g.generate(chat, deadline, deltas, sent).await,
            Self::Mistralrs(g) => g.generate(chat, deadline, deltas, sent).await,
            Self::Worker(w) => w.generate(chat, deadline, deltas, sent).await,
        }
    }
}

/// Why a backend failed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// The input is not what the model takes (an image that does not decode).
    #[error("{0}")]
    Input(String),
    /// The requester went away; the work was stopped.
    #[error("cancelled: the requester went away")]
    Cancelled,
    /// The request's deadline passed; the work was stopped.
    #[error("the deadline passed")]
    DeadlineExceeded,
    /// The requester read too slowly: its buffer filled up, so the work was stopped.
    #[error("cancelled: the requester did not keep up with the output")]
    SlowConsumer,
    /// The engine's worker process died while running this request (it is restarted).
    #[error("the engine process died: {0}")]
    EngineLost(String),
}

/// Everything an engine needs to load a model, resolved from the catalog and the store: plain
/// data, so that an engine worker process can be sent it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadPlan {
    /// Catalog id (for logs).
    pub model: String,
    /// What the model does.
    pub task: crate::models::Task,
    /// The GGUF file (chat models) or the model folder (embedders).
    pub location: std::path::PathBuf,
    /// Every GGUF file of a chat model, `location` first: llama.cpp serves the fastest on
    /// this machine ([`weights`]).
    pub candidates: Vec<std::path::PathBuf>,
    /// Context window (chat) or longest input (embeddings), in tokens.
    pub context_tokens: u32,
    /// Requests run at once, when the operator set it.
    pub concurrency: Option<usize>,
    /// Which library runs chat models.
    pub engine: TextEngine,
    /// The machine.
    pub hardware: crate::hardware::Hardware,
    /// Bytes of KV cache the model may use.
    pub kv_budget: u64,
    /// Whether a llama.cpp chat model keeps finished chats' work (within `kv_budget`).
    pub park_prompts: bool,
    /// The library a model compiled into the node comes with (nothing is read from disk).
    pub compiled: Option<String>,
    /// ONNX Runtime's library, for the models that run on it.
    pub onnx_runtime: Option<std::path::PathBuf>,
}

/// Resolves what loading `spec` from the model store needs, chat models on `engine`:
/// `concurrency` when the operator set it, otherwise what the hardware, the model and
/// `kv_budget` bytes of KV cache allow (see [`llama_cpp::slots_for`]; an embedder takes one
/// per core).
pub fn plan(
    spec: &crate::models::ModelSpec,
    store: &crate::models::ModelStore,
    concurrency: Option<usize>,
    engine: TextEngine,
    hardware: &crate::hardware::Hardware,
    kv_budget: u64,
) -> Result<LoadPlan, BackendError> {
    use crate::models::catalog::Source;
    use crate::models::{Task, requantize};
    let location = store.locate(spec).map_err(|e| BackendError::Load {
        path: store.model_dir(&spec.id),
        message: e.to_string(),
    })?;
    let (location, candidates) = match spec.task {
        Task::TextGeneration if !location.is_file() => {
            let best =
                requantize::best_gguf(spec, &location).ok_or_else(|| BackendError::Load {
                    path: location.clone(),
                    message: "no GGUF file in the model folder".into(),
                })?;
            let mut candidates = vec![best.clone()];
            candidates.extend(
                requantize::source_gguf(spec, &location).filter(|s| *s != best && s.is_file()),
            );
            (best, candidates)
        }
        Task::TextGeneration => (location.clone(), vec![location]),
        Task::TextEmbeddings
        | Task::TextClassification
        | Task::ImageToText
        | Task::ImageClassification
        | Task::SpeechRecognition => (location, Vec::new()),
    };
    let onnx_runtime = if spec.task.on_onnx_runtime() {
        let library = store.onnx_runtime().map_err(|e| BackendError::Load {
            path: location.clone(),
            message: e.to_string(),
        })?;
        // Native code, opened in the worker: only the file pinned at pull time, as it is still
        // (a regular file of its size and hash, not a link).
        let pinned = crate::models::catalog::onnx_runtime();
        let trusted = match &pinned.source {
            crate::models::catalog::Source::PypiWheel { files, .. } => files
                .iter()
                .all(|f| crate::models::pull::in_place(&library, f.size, f.sha256)),
            _ => false,
        };
        if !trusted {
            return Err(BackendError::Load {
                path: library,
                message: "ONNX Runtime's library is not the pinned file (pull it again)".into(),
            });
        }
        Some(library)
    } else {
        None
    };
    Ok(LoadPlan {
        model: spec.id.clone(),
        task: spec.task,
        location,
        candidates,
        context_tokens: spec.context_tokens,
        concurrency,
        engine,
        hardware: hardware.clone(),
        kv_budget,
        park_prompts: true,
        compiled: match spec.source {
            Source::Compiled { library, .. } => Some(library.to_owned()),
            _ => None,
        },
        onnx_runtime,
    })
}

/// A backend loaded in this process.
pub struct Loaded {
    /// It.
    pub backend: Backend,
    /// Requests it runs at once.
    pub slots: usize,
    /// Which weights file it serves and why, when it had a choice.
    pub weights: Option<String>,
}

/// Loads the backend of `plan` in this process.
pub async fn load(plan: &LoadPlan) -> Result<Loaded, BackendError> {
    let threads = plan.hardware.cores.max(1);
    let concurrency = plan.concurrency;
    match plan.task {
        crate::models::Task::TextGeneration => {
            let file = plan.location.clone();
            let (dir, name) = match (file.parent(), file.file_name()) {
                (Some(dir), Some(name)) => (dir.to_owned(), name.to_string_lossy().into_owned()),
                _ => {
                    return Err(BackendError::Load {
                        path: file.clone(),
                        message: "not a file path".into(),
                    });
                }
            };
            Ok(match plan.engine {
                TextEngine::LlamaCpp => {
                    let choice = choose_weights(plan).await;
                    let file = choice.as_ref().map_or(file, |c| c.file.clone());
                    let generator = llama_cpp::LlamaGenerator::load(
                        &file,
                        concurrency,
                        plan.context_tokens as usize,
                        &plan.hardware,
                        plan.kv_budget,
                        plan.park_prompts,
                    )
                    .await?;
                    Loaded {
                        slots: generator.sequences(),
                        backend: Backend::Text(Generator::LlamaCpp(generator)),
                        weights: choice.map(|c| c.why),
                    }
                }
                TextEngine::Mistralrs => {
                    let slots = concurrency.unwrap_or(MISTRALRS_SLOTS);
                    let generator =
                        text_generation::TextGenerator::load(&dir, &name, slots).await?;
                    Loaded {
                        backend: Backend::Text(Generator::Mistralrs(generator)),
                        slots,
                        weights: None,
                    }
                }
            })
        }
        crate::models::Task::TextEmbeddings => {
            let max_tokens = plan.context_tokens as usize;
            let location = plan.location.clone();
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
            Ok(Loaded {
                backend: Backend::Embed(embedder),
                slots: concurrency.unwrap_or(threads),
                weights: None,
            })
        }
        crate::models::Task::TextClassification => {
            let (location, compiled) = (plan.location.clone(), plan.compiled.clone());
            let classifier =
                tokio::task::spawn_blocking(move || classify::load(&location, compiled.as_deref()))
                    .await
                    .map_err(|e| BackendError::Run(e.to_string()))??;
            Ok(Loaded {
                backend: Backend::Classify(classifier),
                slots: concurrency.unwrap_or(threads),
                weights: None,
            })
        }
        crate::models::Task::ImageToText | crate::models::Task::ImageClassification => {
            let plan = plan.clone();
            let model = tokio::task::spawn_blocking(move || vision::load(&plan))
                .await
                .map_err(|e| BackendError::Run(e.to_string()))??;
            // A session runs one image at a time, on every core; a second slot keeps the next
            // image decoding while one runs.
            Ok(Loaded {
                backend: Backend::Vision(model),
                // At most 2 whatever the operator set for chat models: each holds a decoded
                // image (up to 16 megapixels) while it runs.
                slots: concurrency.unwrap_or(2).min(2),
                weights: None,
            })
        }
        crate::models::Task::SpeechRecognition => {
            let library = plan
                .onnx_runtime
                .clone()
                .ok_or_else(|| BackendError::Load {
                    path: plan.location.clone(),
                    message: "no ONNX Runtime library in the load plan".into(),
                })?;
            let dir = plan.location.clone();
            let model = tokio::task::spawn_blocking(move || {
                speech::Moonshine::load(&library, &dir, threads)
            })
            .await
            .map_err(|e| BackendError::Run(e.to_string()))??;
            Ok(Loaded {
                backend: Backend::Speech(Transcriber::Moonshine(Box::new(model))),
                // One recording at a time: its decoder steps use every core.
                slots: concurrency.unwrap_or(1).min(2),
                weights: None,
            })
        }
    }
}

/// Of a chat model's GGUF files, the one llama.cpp runs fastest here: remembered, or measured
/// now with a short greedy generation on each ([`weights`]). `None` when there is no choice
/// or nothing ran (the plan's own file is then loaded, and fails with its own error).
async fn choose_weights(plan: &LoadPlan) -> Option<weights::Choice> {
    if plan.candidates.len() < 2 {
        return None;
    }
    let variant = kernels::load(0).ok()?.variant;
    let threads = plan.hardware.cores.max(1);
    let memo = weights::memo_path(&plan.location, &variant, threads);
    if let Some(choice) = weights::remembered(&memo, &plan.candidates) {
        return Some(choice);
    }
    let mut timed = Vec::new();
    for file in &plan.candidates {
        let took = time_generation(file, plan).await;
        if let Err(e) = &took {
            tracing::warn!(file = %file.display(), error = %e, "weights file did not run");
        }
        timed.push((file.clone(), took.ok()));
    }
    let choice = weights::fastest(&timed)?;
    tracing::info!(model = %plan.model, why = %choice.why, "weights chosen");
    weights::remember(&memo, &choice);
    Some(choice)
}

/// Tokens the weights measurement generates.
const TIMED_TOKENS: u32 = 32;
/// Longest one file's measurement may take: on any real CPU it takes well under a second; under
/// an emulator (scripts/emulated-cpus.sh) it could take minutes, and a file not measured in
/// time is not chosen (nor is either, when neither is: the plan's own file is served).
const MEASURE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long llama.cpp takes to generate [`TIMED_TOKENS`] greedy tokens from `file` (after a
/// short warm-up that brings the mapped weights into memory), one sequence on every core.
async fn time_generation(
    file: &std::path::Path,
    plan: &LoadPlan,
) -> Result<std::time::Duration, BackendError> {
    use ganglion_client::protocol::Role;
    let generator =
        llama_cpp::LlamaGenerator::load(file, Some(1), 512, &plan.hardware, plan.kv_budget, false)
            .await?;
    let messages = [ChatMessage {
        role: Role::User,
        content: "Count from 1 to 100, separated by commas.".into(),
    }];
    let deadline = Instant::now() + MEASURE_LIMIT;
    let generator = &generator;
    let messages = &messages;
    let run = |max_tokens| async move {
        // Room for every piece: nothing reads them.
        let (deltas, _pieces) = tokio::sync::mpsc::channel(TIMED_TOKENS as usize + 8);
        let started = Instant::now();
        let chat = Chat {
            messages,
            parameters: &Parameters::default(),
            max_tokens,
            scope: 0,
            resume: None,
        };
        let done = generator
            .generate(chat, deadline, &deltas, &AtomicU32::new(0))
            .await?;
        Ok::<_, BackendError>((started.elapsed(), done.usage.output_tokens.max(1)))
    };
    run(4).await?;
    let (took, tokens) = run(TIMED_TOKENS).await?;
    // Per token, scaled: a file that stopped early is not favoured.
    Ok(took.mul_f64(f64::from(TIMED_TOKENS) / f64::from(tokens)))
}
