//! Text generation on GGUF chat models through llama.cpp (`llama-cpp-2`), with continuous
//! batching: one engine thread owns the model's context and, at every step, decodes the next
//! token of every running sequence and a slice of every new prompt in one batch. A sequence
//! joins at the next step and leaves the step it ends, so requests of any length share the
//! CPU without waiting for each other.
//!
//! The engine never waits on a requester. Each sequence reports to its `generate` call on a
//! channel that cannot fill (at most one event per generated token, plus one); `generate`
//! passes the text on without waiting and, when the requester is gone, too slow or out of
//! time, tells the engine to drop the sequence, and returns once the engine has let it go (its
//! slot in the KV cache is free then).
//!
//! A sequence that ends is parked rather than cleared, within a budget of KV cells beside the
//! running sequences' (`parking`): a later prompt of the same account that begins the same way
//! (a shared system prompt, a conversation's next turn) starts from its cells, and the engine
//! reads only the tokens after them.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ganglion_client::protocol::{ChatMessage, FinishReason, ResponseFrame, Usage};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::delivery::{CANCEL_SETTLE_LIMIT, Tokenizing, pass_on};
use super::parking::Parking;
use super::stop::StopScan;
use super::text_generation::Completion;
use super::{BackendError, Chat, sampling::SeededSampler};

/// Prompt tokens one step decodes at most, over all new prompts: a long prompt is read in
/// slices, so that running sequences keep getting a token every step.
const PREFILL_PER_STEP: usize = 256;

/// Most sequences a model runs at once unless the operator says otherwise.
pub const MAX_SLOTS: usize = 16;

/// llama.cpp's most sequence ids in one context (`LLAMA_MAX_SEQ`): running and parked.
const MAX_SEQUENCE_IDS: usize = 256;

/// KV cells for parked sequences, beside the running ones' windows: half as many as they have,
/// within what the memory budget leaves (none when it leaves nothing).
fn parking_cells(running_cells: usize, kv_budget: u64, kv_bytes_per_token: u64) -> usize {
    let used = running_cells as u64 * kv_bytes_per_token;
    let left = kv_budget.saturating_sub(used) / kv_bytes_per_token.max(1);
    (running_cells / 2).min(usize::try_from(left).unwrap_or(usize::MAX))
}

/// Sequences a llama.cpp model runs at once on a node with `cores`, given `kv_budget` bytes for
/// its KV cache: 4 per core (batched, they share each step's pass over the weights), at most
/// [`MAX_SLOTS`], and no more than the budget holds at `kv_bytes_per_sequence` each (never
/// none).
pub fn slots_for(cores: usize, kv_budget: u64, kv_bytes_per_sequence: u64) -> usize {
    let by_cores = (4 * cores).clamp(1, MAX_SLOTS);
    let by_memory = kv_budget / kv_bytes_per_sequence.max(1);
    by_cores
        .min(usize::try_from(by_memory).unwrap_or(usize::MAX))
        .max(1)
}

/// Bytes of KV cache (F16 keys and values) one sequence of `context_tokens` needs: the head
/// sizes the GGUF states (`<arch>.attention.key_length`, `value_length`), or the embedding
/// width over the heads where it states none.
fn kv_bytes_per_sequence(model: &LlamaModel, context_tokens: usize) -> u64 {
    let fallback = u64::try_from(model.n_embd()).unwrap_or(0) / u64::from(model.n_head().max(1));
    let length = |which: &str| -> u64 {
        let arch = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        model
            .meta_val_str(&format!("{arch}.attention.{which}_length"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(fallback)
    };
    let per_head = length("key") + length("value");
    let per_token = u64::from(model.n_layer()) * per_head * u64::from(model.n_head_kv()) * 2;
    per_token * context_tokens as u64
}

/// llama.cpp's process-wide state, initialised once, on the CPU kernels chosen for this
/// process (an engine worker chooses them before it loads a model; otherwise the best).
pub(super) fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            super::kernels::load(0)?;
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A context for `model` with `params`, on the process-wide backend (for the engine thread
/// that will own it).
pub(super) fn new_context(
    model: &LlamaModel,
    params: LlamaContextParams,
) -> Result<LlamaContext<'_>, String> {
    model
        .new_context(backend()?, params)
        .map_err(|e| format!("cannot create a context: {e}"))
}

/// A loaded chat model and its engine thread.
pub struct LlamaGenerator {
    model: Arc<LlamaModel>,
    template: Arc<LlamaChatTemplate>,
    jobs: std::sync::mpsc::Sender<Job>,
    context_tokens: usize,
    sequences: usize,
    tokenizing: Tokenizing,
}

/// How the engine picks each token.
enum Pick {
    Greedy,
    Seeded(Box<SeededSampler>),
}

/// One generation, as the engine runs it.
struct Job {
    prompt: Vec<LlamaToken>,
    /// Whose parked sequences it may start from.
    scope: u64,
    pick: Pick,
    stops: Vec<String>,
    /// The start of the answer, already sent by a lost executor (its tokens end `prompt`).
    answered: String,
    max_tokens: u32,
    dropped: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Event>,
}

/// What the engine tells a generation.
enum Event {
    /// More text.
    Text(String),
    /// It ended (not dropped).
    Done {
        finish_reason: FinishReason,
        output_tokens: u32,
        /// Prompt tokens taken from a parked sequence, not read.
        cached_tokens: u32,
    },
    /// It failed, or was dropped; its slot is free.
    Failed(String),
}

impl LlamaGenerator {
    /// Loads `file` (a GGUF chat model with a chat template llama.cpp knows) with room for
    /// `sequences` concurrent sequences (by default as many as [`slots_for`] the cores and
    /// `kv_budget` bytes of KV cache) of `context_tokens` each, computed on all of `hardware`'s
    /// cores; with `park`, finished sequences are kept in what the budget leaves.
    pub async fn load(
        file: &Path,
        sequences: Option<usize>,
        context_tokens: usize,
        hardware: &crate::hardware::Hardware,
        kv_budget: u64,
        park: bool,
    ) -> Result<Self, BackendError> {
        let threads = hardware.cores.max(1);
        let path = file.to_owned();
        let load_err = move |message: String| BackendError::Load {
            path: path.clone(),
            message,
        };
        let file = file.to_owned();
        let (model, template) = tokio::task::spawn_blocking(move || {
            let backend = backend()?;
            if !file.is_file() {
                return Err("no such file".to_owned());
            }
            let model = LlamaModel::load_from_file(backend, &file, &LlamaModelParams::default())
                .map_err(|e| e.to_string())?;
            let template = model
                .chat_template(None)
                .map_err(|e| format!("no chat template: {e}"))?;
            // llama.cpp recognises templates by their text; an unknown one fails here, not
            // on the first request.
            let probe =
                LlamaChatMessage::new("user".into(), "hi".into()).map_err(|e| e.to_string())?;
            model
                .apply_chat_template(&template, &[probe], true)
                .map_err(|e| format!("chat template not supported by llama.cpp: {e}"))?;
            Ok((Arc::new(model), Arc::new(template)))
        })
        .await
        .map_err(|e| load_err(e.to_string()))?
        .map_err(load_err.clone())?;
        let context_tokens = context_tokens.min(model.n_ctx_train() as usize).max(64);
        let sequences = sequences
            .unwrap_or_else(|| {
                slots_for(
                    threads,
                    kv_budget,
                    kv_bytes_per_sequence(&model, context_tokens),
                )
            })
            .clamp(1, 256);
        // A recurrent (or hybrid) model's state cannot be cut at a position: nothing is parked.
        let parked_cells = if park && !model.is_recurrent() && !model.is_hybrid() {
            parking_cells(
                context_tokens * sequences,
                kv_budget,
                kv_bytes_per_sequence(&model, 1),
            )
        } else {
            0
        };
        let (jobs, queue) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let engine_model = model.clone();
        let layout = Layout {
            sequences,
            context_tokens,
            parked_cells,
            threads,
        };
        std::thread::Builder::new()
            .name("llama.cpp engine".into())
            .spawn(move || engine(&engine_model, &layout, queue, ready_tx))
            .map_err(|e| load_err(e.to_string()))?;
        ready_rx
            .await
            .map_err(|_| load_err("the engine thread stopped".into()))?
            .map_err(load_err)?;
        Ok(Self {
            model,
            template,
            jobs,
            context_tokens,
            sequences,
            tokenizing: Tokenizing::default(),
        })
    }

    /// Sequences it runs at once.
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Each sequence's context window, in tokens (prompt and output together).
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// The prompt of `messages` with the chat template applied, as tokens, followed by
    /// `answered` (the start of the answer, as plain text) when there is one.
    async fn tokenize(
        &self,
        messages: &[ChatMessage],
        answered: Option<&str>,
        deadline: Instant,
    ) -> Result<(Vec<LlamaToken>, usize), BackendError> {
        let permit = self.tokenizing.permit(deadline).await?;
        let (model, template) = (self.model.clone(), self.template.clone());
        let chat: Vec<(String, String)> = messages
            .iter()
            .map(|m| (role(m.role).to_owned(), m.content.clone()))
            .collect();
        let answered = answered.map(str::to_owned);
        let tokenizing = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let chat = chat
                .into_iter()
                .map(|(role, content)| LlamaChatMessage::new(role, content))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::Run(format!("bad message: {e}")))?;
            let prompt = model
                .apply_chat_template(&template, &chat, true)
                .map_err(|e| BackendError::Run(format!("chat template: {e}")))?;
            let mut tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
            let asked = tokens.len();
            if let Some(answered) = answered {
                // The answer's text as the model would have written it: no special tokens.
                tokens.extend(model.vocab().tokenize(answered.as_bytes(), false, false));
            }
            Ok((tokens, asked))
        });
        tokio::time::timeout_at(deadline.into(), tokenizing)
            .await
            .map_err(|_| BackendError::DeadlineExceeded)?
            .map_err(|e| BackendError::Run(format!("tokenizer task failed: {e}")))?
    }

    /// Prompt tokens of `messages` with the chat template applied.
    pub async fn count_prompt_tokens(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<usize, BackendError> {
        Ok(self.tokenize(messages, None, deadline).await?.1)
    }

    /// Generates an answer, putting each new piece of text into `deltas` without ever waiting
    /// on it. A full `deltas` (the requester reads too slowly) or a closed one (it went away)
    /// ends this generation, as does passing `deadline`; it returns once the engine has let go
    /// of the sequence. `sent` counts the pieces handed on.
    pub async fn generate(
        &self,
        chat: Chat<'_>,
        deadline: Instant,
        deltas: &mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<Completion, BackendError> {
        let Chat {
            messages,
            parameters,
            max_tokens,
            scope,
            resume,
        } = chat;
        let (prompt, asked) = self.tokenize(messages, resume, deadline).await?;
        let input_tokens = u32::try_from(asked).unwrap_or(u32::MAX);
        // A resumed answer's start is read with the prompt, and counts as output.
        let resumed_tokens = u32::try_from(prompt.len() - asked).unwrap_or(u32::MAX);
        let answered = resume.unwrap_or_default();
        if resume.is_some() && resumed_tokens >= max_tokens {
            return Ok(Completion {
                text: answered.to_owned(),
                finish_reason: FinishReason::Length,
                usage: Usage {
                    input_tokens,
                    output_tokens: max_tokens,
                    ..Usage::default()
                },
                first_token_at: None,
                resumed_tokens: max_tokens,
            });
        }
        let pick = match parameters.temperature.filter(|t| *t > 0.0) {
            Some(t) => {
                let sampler = SeededSampler::new(
                    t,
                    parameters.top_p,
                    parameters.seed.unwrap_or_else(rand::random),
                );
                // The same draws as if this engine had generated the start itself.
                sampler.skip(resumed_tokens);
                Pick::Seeded(Box::new(sampler))
            }
            None => Pick::Greedy,
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicBool::new(false));
        self.jobs
            .send(Job {
                prompt,
                scope,
                pick,
                stops: parameters.stop.clone(),
                answered: answered.to_owned(),
                max_tokens: max_tokens - resumed_tokens,
                dropped: dropped.clone(),
                events: events_tx,
            })
            .map_err(|_| BackendError::Run("the engine stopped".into()))?;
        let mut text = answered.to_owned();
        let mut first_token_at = None;
        let outcome = loop {
            // What the engine already said comes first: a finished answer is not lost to a
            // deadline that passed meanwhile.
            let event = tokio::select! {
                biased;
                event = events.recv() => event,
                () = deltas.closed() => break Err(BackendError::Cancelled),
                () = tokio::time::sleep_until(deadline.into()) => break Err(BackendError::DeadlineExceeded),
            };
            match event {
                Some(Event::Text(piece)) => {
                    first_token_at.get_or_insert_with(Instant::now);
                    text.push_str(&piece);
                    if let Err(e) = pass_on(deltas, sent, piece) {
                        break Err(e);
                    }
                }
                Some(Event::Done {
                    finish_reason,
                    output_tokens,
                    cached_tokens,
                }) => {
                    return Ok(Completion {
                        text,
                        finish_reason,
                        usage: Usage {
                            input_tokens,
                            cached_input_tokens: cached_tokens.min(input_tokens),
                            output_tokens: output_tokens + resumed_tokens,
                            micro_neurons: 0,
                        },
                        first_token_at,
                        resumed_tokens,
                    });
                }
                Some(Event::Failed(message)) => return Err(BackendError::Run(message)),
                None => return Err(BackendError::Run("the engine stopped".into())),
            }
        };
        // The engine drops the sequence at its next step and then says so.
        dropped.store(true, Ordering::Relaxed);
        let settled = tokio::time::timeout(CANCEL_SETTLE_LIMIT, async {
            while let Some(event) = events.recv().await {
                if matches!(event, Event::Done { .. } | Event::Failed(_)) {
                    break;
                }
            }
        })
        .await;
        if settled.is_err() {
            tracing::warn!("a dropped sequence did not leave the engine in time");
        }
        outcome
    }
}

fn role(role: ganglion_client::protocol::Role) -> &'static str {
    use ganglion_client::protocol::Role;
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A sequence in the engine.
struct Sequence {
    id: i32,
    job: Job,
    /// Prompt tokens in the KV cache (read, or taken from a parked sequence).
    prefilled: usize,
    /// Prompt tokens taken from a parked sequence.
    cached: usize,
    /// Tokens in the KV cache.
    position: i32,
    /// Generated tokens decoded into the KV cache, after the prompt.
    decoded: Vec<LlamaToken>,
    /// The token to decode next, once the prompt is in.
    next: Option<LlamaToken>,
    /// Where this sequence's logits are in the current batch.
    logits_at: Option<i32>,
    generated: u32,
    decoder: encoding_rs::Decoder,
    stops: StopScan,
}

impl Sequence {
    /// Reports `event` (the receiver may be gone: then nobody listens any more).
    fn tell(&self, event: Event) {
        let _ = self.job.events.send(event);
    }

    /// The tokens its KV cells hold, in order.
    fn tokens(&self) -> Vec<LlamaToken> {
        let held = usize::try_from(self.position).unwrap_or(0);
        self.job
            .prompt
            .iter()
            .chain(&self.decoded)
            .take(held)
            .copied()
            .collect()
    }
}

/// How an engine lays out its context.
struct Layout {
    /// Sequences running at once.
    sequences: usize,
    /// Each one's window.
    context_tokens: usize,
    /// KV cells for parked sequences, beside the windows.
    parked_cells: usize,
    threads: usize,
}

impl Layout {
    /// Sequence ids: the running ones, and as many more to park (within llama.cpp's most).
    fn ids(&self) -> usize {
        (self.sequences * 2)
            .min(MAX_SEQUENCE_IDS)
            .max(self.sequences)
    }
}

/// The engine thread: creates the context, then runs steps while there is work.
fn engine(
    model: &LlamaModel,
    layout: &Layout,
    queue: std::sync::mpsc::Receiver<Job>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let threads = i32::try_from(layout.threads.max(1)).unwrap_or(1);
    let cells = layout.context_tokens * layout.sequences + layout.parked_cells;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(u32::try_from(cells).unwrap_or(u32::MAX)))
        .with_n_seq_max(u32::try_from(layout.ids()).unwrap_or(1))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // One cache shared by all sequences (each within its window, so they all fit). With a
        // cache per sequence, llama.cpp's decode got twice as slow after the first sequences
        // had come and gone (measured: 3.6 s, then 4.9, 5.6, 6.0 s for the same 8 streams).
        // Shared, a sequence can also start from another's cells without copying them.
        .with_kv_unified(true);
    let mut ctx = match new_context(model, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Each sequence's window, as llama.cpp laid the cache out.
    let window = (ctx.n_ctx() as usize / layout.sequences).min(layout.context_tokens);
    let batch_size = ctx.n_batch() as usize;
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(batch_size, 1);
    let mut running: Vec<Sequence> = Vec::new();
    let mut parking = Parking::new(layout.ids(), layout.parked_cells);
    loop {
        // Wait for work when idle; otherwise take whatever arrived, while there is room.
        if running.is_empty() {
            match queue.recv() {
                Ok(job) => admit(&mut ctx, &mut running, &mut parking, job, window),
                Err(_) => return,
            }
        }
        while running.len() < layout.sequences {
            match queue.try_recv() {
                Ok(job) => admit(&mut ctx, &mut running, &mut parking, job, window),
                Err(_) => break,
            }
        }
        // Dropped sequences leave before the step; what they read stays parked.
        let mut i = 0;
        while i < running.len() {
            let s = &running[i];
            if s.job.dropped.load(Ordering::Relaxed) || s.job.events.is_closed() {
                let s = running.swap_remove(i);
                park(&mut ctx, &mut parking, &s, Event::Failed("dropped".into()));
            } else {
                i += 1;
            }
        }
        if running.is_empty() {
            continue;
        }
        // A step that fails or panics fails the sequences in it, not the engine: the model
        // keeps serving the next requests.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(&mut ctx, &mut batch, &mut running)?;
            // Sequences that ended leave the step they ended.
            let mut ended = Vec::new();
            let mut i = 0;
            while i < running.len() {
                if let Some(end) = sample(&ctx, &mut running[i], model, window) {
                    ended.push((running.swap_remove(i), end));
                } else {
                    i += 1;
                }
            }
            Ok::<_, String>(ended)
        }));
        match stepped {
            Ok(Ok(ended)) => {
                for (s, end) in ended {
                    park(&mut ctx, &mut parking, &s, end);
                }
            }
            Ok(Err(message)) => fail_all(&mut ctx, &mut parking, &mut running, &message),
            Err(_) => {
                tracing::error!("a llama.cpp step panicked; its sequences fail");
                fail_all(&mut ctx, &mut parking, &mut running, "the engine failed");
                // Sequences taken out of the step before it panicked are gone with it: start
                // again from an empty cache with every id free.
                ctx.clear_kv_cache();
                parking.reset(layout.ids());
            }
        }
    }
}

/// Fails every running sequence, clearing its cells (a failed step may have left them half
/// written).
fn fail_all(
    ctx: &mut LlamaContext<'_>,
    parking: &mut Parking<LlamaToken>,
    running: &mut Vec<Sequence>,
    message: &str,
) {
    for s in running.drain(..) {
        let _ = ctx.kv_cache_seq_rm(s.id, None, None);
        parking.free(s.id);
        s.tell(Event::Failed(message.to_owned()));
    }
}

fn admit(
    ctx: &mut LlamaContext<'_>,
    running: &mut Vec<Sequence>,
    parking: &mut Parking<LlamaToken>,
    job: Job,
    window: usize,
) {
    // Admission checks prompt and output against the window; this only guards it.
    if job.prompt.is_empty() || job.prompt.len() >= window {
        let _ = (job.events).send(Event::Failed(format!(
            "a prompt of {} tokens does not fit a window of {window}",
            job.prompt.len()
        )));
        return;
    }
    let Some(start) = parking.start(job.scope, &job.prompt) else {
        let _ = job
            .events
            .send(Event::Failed("no free sequence in the engine".into()));
        return;
    };
    for id in &start.clear {
        let _ = ctx.kv_cache_seq_rm(*id, None, None);
    }
    let id = start.id;
    let reused = match start.from {
        // Taken over: its cells after the shared beginning go.
        Some((source, n)) if source == id => ctx
            .kv_cache_seq_rm(id, u32::try_from(n).ok(), None)
            .map(|()| n),
        // Shared: the new sequence's cells are the source's (no copy in a unified cache).
        Some((source, n)) => ctx
            .kv_cache_seq_cp(source, id, Some(0), u32::try_from(n).ok())
            .map(|()| n),
        None => Ok(0),
    };
    // Whatever went wrong, the sequence can always read its whole prompt.
    let reused = reused.unwrap_or_else(|_| {
        let _ = ctx.kv_cache_seq_rm(id, None, None);
        0
    });
    running.push(Sequence {
        id,
        stops: StopScan::resumed(&job.stops, &job.answered),
        job,
        prefilled: reused,
        cached: reused,
        position: i32::try_from(reused).unwrap_or(0),
        decoded: Vec::new(),
        next: None,
        logits_at: None,
        generated: 0,
        decoder: encoding_rs::UTF_8.new_decoder(),
    });
}

/// Parks `s` (or frees it, when it cannot be kept), and tells its generation how it ended.
fn park(ctx: &mut LlamaContext<'_>, parking: &mut Parking<LlamaToken>, s: &Sequence, end: Event) {
    for id in parking.park(s.id, s.job.scope, s.tokens()) {
        let _ = ctx.kv_cache_seq_rm(id, None, None);
    }
    s.tell(end);
}

/// Decodes one step: the next token of every sequence past its prompt, and a slice of each
/// prompt still being read.
fn step(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    running: &mut [Sequence],
) -> Result<(), String> {
    batch.clear();
    let capacity = (ctx.n_batch() as usize).saturating_sub(running.len());
    // While no sequence is generating, nobody waits on prompts: read them in whole batches.
    let generating = running.iter().any(|s| s.next.is_some());
    let per_step = if generating {
        PREFILL_PER_STEP
    } else {
        capacity
    };
    let mut prefill_budget = per_step.min(capacity).max(1);
    for s in running.iter_mut() {
        s.logits_at = None;
        if let Some(token) = s.next {
            batch
                .add(token, s.position, &[s.id], true)
                .map_err(|e| e.to_string())?;
            s.position += 1;
            s.decoded.push(token);
            s.logits_at = Some(batch.n_tokens() - 1);
            continue;
        }
        let rest = s.job.prompt.len() - s.prefilled;
        let take = rest.min(prefill_budget);
        if take == 0 {
            continue;
        }
        for k in 0..take {
            let last = s.prefilled + k + 1 == s.job.prompt.len();
            batch
                .add(s.job.prompt[s.prefilled + k], s.position, &[s.id], last)
                .map_err(|e| e.to_string())?;
            s.position += 1;
            if last {
                s.logits_at = Some(batch.n_tokens() - 1);
            }
        }
        s.prefilled += take;
        prefill_budget -= take;
    }
    if batch.n_tokens() == 0 {
        return Ok(());
    }
    ctx.decode(batch).map_err(|e| format!("decode failed: {e}"))
}

/// Picks `s`'s next token if this step gave it logits, and passes its text on; returns how
/// the sequence ended, if it did.
fn sample(
    ctx: &LlamaContext<'_>,
    s: &mut Sequence,
    model: &LlamaModel,
    window: usize,
) -> Option<Event> {
    let at = s.logits_at.take()?;
    let logits = ctx.get_logits_ith(at);
    let index = match &s.job.pick {
        Pick::Greedy => argmax(logits),
        Pick::Seeded(sampler) => sampler.draw(logits),
    };
    let token = LlamaToken::new(i32::try_from(index).unwrap_or(0));
    let vocab = model.vocab();
    let done = |s: &mut Sequence, finish_reason| {
        // Bytes of a character the answer ended inside come out as U+FFFD, not lost.
        let mut tail = String::with_capacity(8);
        let _ = s.decoder.decode_to_string(&[], &mut tail, true);
        let (mut rest, _) = s.stops.push(&tail);
        rest.push_str(&s.stops.finish());
        if !rest.is_empty() {
            s.tell(Event::Text(rest));
        }
        Some(Event::Done {
            finish_reason,
            output_tokens: s.generated,
            cached_tokens: u32::try_from(s.cached).unwrap_or(u32::MAX),
        })
    };
    if vocab.is_eog(token) {
        return done(s, FinishReason::Stop);
    }
    s.generated += 1;
    let bytes = vocab.token_to_piece(token, false, None);
    let mut piece = String::with_capacity(
        s.decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len() * 3 + 4),
    );
    let _ = s.decoder.decode_to_string(&bytes, &mut piece, false);
    let (ready, stopped) = s.stops.push(&piece);
    if !ready.is_empty() {
        s.tell(Event::Text(ready));
    }
    if stopped {
        return Some(Event::Done {
            finish_reason: FinishReason::Stop,
            output_tokens: s.generated,
            cached_tokens: u32::try_from(s.cached).unwrap_or(u32::MAX),
        });
    }
    if s.generated >= s.job.max_tokens || s.position as usize + 1 >= window {
        return done(s, FinishReason::Length);
    }
    s.next = Some(token);
    None
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i, l);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cores_within_the_memory_for_kv_cache() {
        const MIB: u64 = 1024 * 1024;
        // 2 cores, plenty of memory: 4 per core.
        assert_eq!(slots_for(2, 16 * 1024 * MIB, 47 * MIB), 8);
        // Many cores: capped.
        assert_eq!(slots_for(64, 1024 * 1024 * MIB, 47 * MIB), MAX_SLOTS);
        // A small box: what its budget holds, and never none.
        assert_eq!(slots_for(8, 100 * MIB, 47 * MIB), 2);
        assert_eq!(slots_for(8, 10 * MIB, 47 * MIB), 1);
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 2.9]), 1);
    }
}
