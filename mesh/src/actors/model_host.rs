//! ModelHost: one per hosted model. A child of `NodeSupervisor`, restarted by it on failure.
//!
//! It owns the model's backend (text generation on llama.cpp or mistralrs, embeddings, or a
//! text classifier), admits requests into a bounded queue (a full queue is a clear `overloaded`
//! error), runs at most `concurrency` of them at once, and frees a slot only once a request's
//! work has really stopped: the model finished, or let go of a cancelled sequence, or a
//! blocking batch (embeddings, labels) returned. A queued request whose deadline passed or whose requester left is dropped
//! when its turn comes. Turns are fair between accounts (`model_host/fairness.rs`): a freed slot goes to
//! the account running the fewest, and a full queue makes way for an account under its share.
//! A job that panics frees its slot and answers `internal`.
//!
//! The host prices and records nothing. When a job's work stops, however it ended, the host
//! reports what ran ([`Ran`]: tokens in and out, texts embedded, its times, or why it stopped)
//! to the job's settlement ([`Settle`]: the request's charge stage, `request::charge`), in the
//! job's own task, so that it runs whether or not the requester is still there; then it
//! delivers the last frame the settlement returns.
//!
//! Each request has its own bounded response buffer ([`RESPONSE_BUFFER`] frames): the model
//! never waits on a requester, and a requester that lets its buffer fill up is cancelled.
//! It joins process group `ganglion.model.<id>`, so every node sees who hosts what; requests
//! themselves arrive over data-plane streams, never as actor messages.

mod fairness;

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use ganglion_client::protocol::{
    ErrorCode, Input, Output, Request, ResponseFrame, Usage, WireError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{ActorSlot, LocalCallError};
use crate::facts::{ModelState, ModelStates};
use crate::faults::Faults;
use crate::inference::parking::{scope_of, shares_prompts};
use crate::inference::{Backend, BackendError, Chat};
use crate::models::ModelSpec;
use crate::routing::prefix::{self, Warm};

pub use crate::inference::delivery::RESPONSE_BUFFER;

/// How long the last frame of a request may wait for room in its buffer.
const LAST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Process group of the hosts of model `id`.
pub fn group(id: &str) -> String {
    format!("ganglion.model.{id}")
}

/// Registered actor name of the host of model `id` on this node.
pub fn actor_name(id: &str) -> String {
    format!("ganglion.model_host.{id}")
}

/// A request on its way into a model.
pub struct Job {
    /// The admitted request (a chat request has its `max_tokens`).
    pub request: Request,
    /// When the node received it.
    pub received: Instant,
    /// The latest moment to finish.
    pub deadline: Instant,
    /// Where response frames go ([`RESPONSE_BUFFER`] of them); closing it cancels the job.
    pub frames: mpsc::Sender<ResponseFrame>,
    /// What becomes of what ran, once the work has stopped.
    pub settle: Settle,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request", &self.request)
            .field("received", &self.received)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Run by the job's task once its work has stopped, however it ended (the requester may have
/// left): given what ran and the ledger writer of this node, it charges the run and returns
/// the request's last frame, which the host then delivers. The request's charge stage makes
/// it (`request::charge`).
pub type Settle = Box<dyn FnOnce(Ran) -> BoxFuture<'static, ResponseFrame> + Send>;

/// What a job ran, as the host reports it once the work has stopped.
#[derive(Debug)]
pub struct Ran {
    /// The answer, or why there is none (the requester left: `cancelled`; the deadline
    /// passed: `deadline_exceeded`; or the engine's or the host's error).
    pub outcome: Result<Output, WireError>,
    /// What the engine did, whether or not an answer came of it.
    pub work: Work,
    /// When the job left the queue and started.
    pub started: Instant,
    /// When its first piece of output was handed on (text generation, with an answer).
    pub first_token_at: Option<Instant>,
    /// When its work stopped.
    pub ended: Instant,
}

/// What an engine did for a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Tokens of the prompt read (or of the texts embedded).
    pub input_tokens: u32,
    /// Of those, the ones not read again (an earlier prompt's work reused).
    pub cached_input_tokens: u32,
    /// Of the output tokens, those of a resumed answer's start (sent by a lost executor).
    pub resumed_tokens: u32,
    /// With an answer, the tokens generated; without one, the pieces of output handed on.
    pub output_tokens: u32,
    /// Texts embedded (with an answer, every text of the batch; without one, those of a batch
    /// that ran to its end after its requester left or its deadline passed).
    pub items: u32,
    /// The engine was given the prompt (or the texts).
    pub prompt_read: bool,
}

/// A job as its task runs it (its settlement taken apart).
struct Order {
    request: Request,
    received: Instant,
    deadline: Instant,
    frames: mpsc::Sender<ResponseFrame>,
}

/// Messages of a model host.
pub enum Msg {
    /// Admit a job: queued or started, or refused with `overloaded`.
    Submit(Box<Job>, RpcReplyPort<Result<(), WireError>>),
    /// A running job's work has stopped; its slot is free.
    Finished {
        /// Whether it produced a final response.
        ok: bool,
        /// How long it ran.
        took: Duration,
        /// The account it ran for.
        account: String,
        /// The prefix its chat left parked, if any.
        prefix: Option<u64>,
    },
    /// Counters for the admin endpoint.
    Stats(RpcReplyPort<ModelStats>),
}

// Serializable so that the host can be a member of a process group seen by other nodes; no
// variant ever crosses the wire (requests use data-plane streams).
impl ractor::Message for Msg {
    fn serializable() -> bool {
        true
    }
}

/// Load and traffic of a model host.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Requests running (cancelled ones included until the model has let go of them).
    pub in_flight: usize,
    /// Slots.
    pub concurrency: usize,
    /// Queue bound.
    pub queue_capacity: usize,
    /// Requests that produced a final response.
    pub completed: u64,
    /// Requests that failed or were cancelled.
    pub failed: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Queued requests dropped because their deadline passed before their turn.
    pub expired: u64,
    /// Recent time to serve one request, in milliseconds (exponentially weighted).
    pub service_ms: f64,
    /// The engine's worker process, when it runs in one.
    pub worker: Option<crate::inference::worker::WorkerStatus>,
    /// Prefix keys of the chats it ran last, whose work its engine keeps (`routing::prefix`).
    #[serde(skip)]
    pub warm: Vec<u64>,
}

/// The model host actor.
#[derive(Debug, Default)]
pub struct ModelHost;

/// Start-up arguments (kept by the supervisor to restart the host).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// The catalog entry.
    pub spec: ModelSpec,
    /// The loaded backend (survives restarts of the host).
    pub backend: Arc<Backend>,
    /// Requests run at once.
    pub concurrency: usize,
    /// Requests that may wait.
    pub queue_capacity: usize,
    /// This node's name (for routes and logs).
    pub node: String,
    /// Injected faults.
    pub faults: Arc<Faults>,
}

/// The host's state.
pub struct State {
    spec: Arc<ModelSpec>,
    backend: Arc<Backend>,
    node: Arc<str>,
    faults: Arc<Faults>,
    queue: VecDeque<Job>,
    running: JoinSet<()>,
    /// Requests running per account, for fair turns.
    running_by: fairness::Running,
    stats: ModelStats,
    /// The prefixes of the chats it ran last, when its engine keeps their work.
    warm: Warm,
}

/// The account a job runs for (every job that reaches a host has one).
fn account_of(job: &Job) -> &str {
    account(&job.request)
}

/// The account a request runs for.
fn account(request: &Request) -> &str {
    request.account.as_ref().map_or("", |a| a.name.as_str())
}

/// The engine's scope for a request of `account`: the account's own, or a fresh one for each
/// request of an account whose requests share nothing.
fn prompt_scope(account: &str) -> u64 {
    if shares_prompts(account) {
        scope_of(account)
    } else {
        rand::random()
    }
}

impl Actor for ModelHost {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        ractor::pg::join(group(&args.spec.id), vec![myself.get_cell()]);
        Ok(State {
            stats: ModelStats {
                queued: 0,
                in_flight: 0,
                concurrency: args.concurrency.max(1),
                queue_capacity: args.queue_capacity,
                completed: 0,
                failed: 0,
                rejected: 0,
                expired: 0,
                service_ms: 0.0,
                worker: None,
                warm: Vec::new(),
            },
            warm: Warm::default(),
            spec: Arc::new(args.spec),
            backend: args.backend,
            node: args.node.into(),
            faults: args.faults,
            queue: VecDeque::new(),
            running: JoinSet::new(),
            running_by: fairness::Running::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Requests still waiting get an answer, not a stream that just ends.
        for job in state.queue.drain(..) {
            let _ = job.frames.try_send(ResponseFrame::Error(WireError::new(
                ErrorCode::Unavailable,
                format!("model `{}` stopped on node `{}`", state.spec.id, state.node),
            )));
        }
        state.running.abort_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Submit(job, reply) => {
                let job = *job;
                // Requests whose requester left while they waited hold no place.
                let before = state.queue.len();
                state.queue.retain(|j| !j.frames.is_closed());
                state.stats.failed += (before - state.queue.len()) as u64;
                let admitted = if state.stats.in_flight < state.stats.concurrency {
                    state.start(&myself, job);
                    Ok(())
                } else if state.queue.len() < state.stats.queue_capacity
                    || state.make_way(account_of(&job))
                {
                    state.queue.push_back(job);
                    Ok(())
                } else {
                    state.stats.rejected += 1;
                    Err(WireError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "model `{}` on node `{}` is at capacity ({} running, {} queued); retry later",
                            state.spec.id,
                            state.node,
                            state.stats.in_flight,
                            state.queue.len()
                        ),
                    ))
                };
                let _ = reply.send(admitted);
            }
            Msg::Finished {
                ok,
                took,
                account,
                prefix,
            } => {
                while state.running.try_join_next().is_some() {}
                state.stats.in_flight = state.stats.in_flight.saturating_sub(1);
                state.running_by.finish(&account);
                if let (true, Some(key)) = (ok, prefix) {
                    state.warm.ran(key);
                }
                if ok {
                    // Exponentially weighted, so routers see the recent service time.
                    let took = ms(took);
                    state.stats.service_ms = if state.stats.completed == 0 {
                        took
                    } else {
                        0.8 * state.stats.service_ms + 0.2 * took
                    };
                    state.stats.completed += 1;
                } else {
                    state.stats.failed += 1;
                }
                state.start_queued(&myself);
            }
            Msg::Stats(reply) => {
                let mut stats = state.stats.clone();
                stats.queued = state.queue.len();
                stats.worker = state.backend.worker().map(|w| w.status());
                stats.warm = state.warm.keys();
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }
}

impl State {
    /// In a full queue, frees the place of the newest request of the account waiting the most
    /// beyond its share, for a newcomer of `account` (that request is refused `overloaded`);
    /// whether a place was freed.
    fn make_way(&mut self, account: &str) -> bool {
        let queued: Vec<&str> = self.queue.iter().map(account_of).collect();
        let share = fairness::queue_share(self.stats.queue_capacity);
        let Some(evicted) =
            fairness::make_way(&queued, account, share).and_then(|place| self.queue.remove(place))
        else {
            return false;
        };
        self.stats.rejected += 1;
        let _ = evicted.frames.try_send(ResponseFrame::Error(WireError::new(
            ErrorCode::Overloaded,
            format!(
                "account `{}` holds more than its share of the queue of model `{}` on node `{}` while another account waits; retry later",
                account_of(&evicted),
                self.spec.id,
                self.node
            ),
        )));
        true
    }

    /// Starts queued jobs while slots are free, each time of the account running the fewest,
    /// dropping those whose requester left or whose deadline passed while they waited.
    fn start_queued(&mut self, myself: &ActorRef<Msg>) {
        let now = Instant::now();
        while self.stats.in_flight < self.stats.concurrency {
            let Some(next) = self.running_by.next(self.queue.iter().map(account_of)) else {
                break;
            };
            let Some(job) = self.queue.remove(next) else {
                break;
            };
            if job.deadline <= now {
                self.stats.expired += 1;
                let _ = job.frames.try_send(ResponseFrame::Error(WireError::new(
                    ErrorCode::DeadlineExceeded,
                    format!(
                        "deadline passed after {:.0} ms in the queue of model `{}`",
                        ms(now - job.received),
                        self.spec.id
                    ),
                )));
                continue;
            }
            if job.frames.is_closed() {
                self.stats.failed += 1;
                continue;
            }
            self.start(myself, job);
        }
    }

    fn start(&mut self, myself: &ActorRef<Msg>, job: Job) {
        self.stats.in_flight += 1;
        let account = account_of(&job).to_owned();
        // The prefix this job leaves parked, once it has run: known to peers as warm here.
        let prefix = match &job.request.input {
            Input::Chat(messages) if self.backend.parks_prompts() && shares_prompts(&account) => {
                prefix::of_chat(&account, &self.spec.id, messages).map(|p| p.key)
            }
            _ => None,
        };
        self.running_by.start(&account);
        let span = tracing::info_span!("request", node = %self.node, model = %self.spec.id, request_id = %job.request.id);
        let (spec, backend, faults, myself) = (
            self.spec.clone(),
            self.backend.clone(),
            self.faults.clone(),
            myself.clone(),
        );
        let Job {
            request,
            received,
            deadline,
            frames,
            settle,
        } = job;
        let job = Order {
            request,
            received,
            deadline,
            frames,
        };
        self.running.spawn(
            async move {
                let started = Instant::now();
                let streamed = Streamed::default();
                let work = async {
                    if faults.take_job_panic() {
                        panic!("injected fault: job panics");
                    }
                    let ran = run(&spec, &backend, &job, &streamed, started).await;
                    settle(ran).await
                };
                let last = AssertUnwindSafe(work)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        tracing::error!("a job panicked; its slot is freed");
                        ResponseFrame::Error(WireError::new(
                            ErrorCode::Internal,
                            "the model failed while running this request",
                        ))
                    });
                let took = started.elapsed();
                let ok = matches!(last, ResponseFrame::Final(_));
                // The work has stopped: free the slot before waiting to deliver the last frame.
                let _ = myself.cast(Msg::Finished {
                    ok,
                    took,
                    account,
                    prefix,
                });
                if let ResponseFrame::Error(error) = &last {
                    tracing::debug!(code = %error.code, message = %error.message, "request failed");
                }
                let _ = job.frames.send_timeout(last, LAST_FRAME_TIMEOUT).await;
            }
            .instrument(span),
        );
    }
}

/// What a job has run so far, to report when it ends without an answer.
#[derive(Debug, Default)]
struct Streamed {
    /// Tokens of the prompt (or of the texts embedded).
    prompt_tokens: AtomicU32,
    /// Pieces of output handed on.
    pieces: AtomicU32,
    /// The engine was given the prompt.
    started: std::sync::atomic::AtomicBool,
    /// Texts embedded by a batch whose requester left or whose deadline passed.
    items: AtomicU32,
    /// Output tokens of a resumed answer's start, read here as part of the prompt.
    resumed_tokens: AtomicU32,
}

impl Streamed {
    /// What ran, for a job that ended without an answer.
    fn work(&self) -> Work {
        Work {
            input_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            cached_input_tokens: 0,
            resumed_tokens: 0,
            output_tokens: self.pieces.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            prompt_read: self.started.load(Ordering::Relaxed),
        }
    }
}

/// Runs one job on the backend, within its deadline, and reports what ran.
async fn run(
    spec: &ModelSpec,
    backend: &Arc<Backend>,
    job: &Order,
    streamed: &Streamed,
    started: Instant,
) -> Ran {
    let outcome = execute(spec, backend, job, streamed).await;
    let ended = Instant::now();
    match outcome {
        Ok((output, usage, first_token_at)) => {
            let items = match &job.request.input {
                Input::Embed(texts) | Input::Classify(texts) => {
                    u32::try_from(texts.len()).unwrap_or(u32::MAX)
                }
                Input::Image(_) | Input::Audio(_) => 1,
                _ => 0,
            };
            Ran {
                outcome: Ok(output),
                work: Work {
                    input_tokens: usage.input_tokens,
                    cached_input_tokens: usage.cached_input_tokens,
                    resumed_tokens: streamed.resumed_tokens.load(Ordering::Relaxed),
                    output_tokens: usage.output_tokens,
                    items,
                    prompt_read: true,
                },
                started,
                first_token_at,
                ended,
            }
        }
        Err(error) => Ran {
            outcome: Err(error),
            work: streamed.work(),
            started,
            first_token_at: None,
            ended,
        },
    }
}

type Executed = (Output, Usage, Option<Instant>);

/// What a request answered whole returns: its output, and the tokens (or megapixels) read.
type Whole = Result<(Output, u32), BackendError>;

async fn execute(
    spec: &ModelSpec,
    backend: &Arc<Backend>,
    job: &Order,
    streamed: &Streamed,
) -> Result<Executed, WireError> {
    let wrong_input = |task: &str, takes: &str| {
        Err(WireError::new(
            ErrorCode::InvalidInput,
            format!("model `{}` is for {task} and takes {takes}", spec.id),
        ))
    };
    let deadline_passed =
        || backend_error(BackendError::DeadlineExceeded, Some(job.received.elapsed()));
    match (&**backend, &job.request.input) {
        (Backend::Text(generator), Input::Chat(messages)) => {
            // Admission gave every chat request its model's default.
            let Some(max_tokens) = job.request.parameters.max_tokens else {
                return Err(WireError::new(
                    ErrorCode::Internal,
                    "a chat request reached the model without `max_tokens`",
                ));
            };
            let prompt_tokens = generator
                .count_prompt_tokens(messages, job.deadline)
                .await
                .map_err(|e| match e {
                    BackendError::DeadlineExceeded => deadline_passed(),
                    other => backend_error(other, None),
                })?;
            streamed.prompt_tokens.store(
                u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
            let context = generator.context_tokens();
            if prompt_tokens.saturating_add(max_tokens as usize) > context {
                return Err(WireError::new(
                    ErrorCode::ContextLengthExceeded,
                    format!(
                        "{prompt_tokens} prompt tokens plus max_tokens {max_tokens} exceed the context of model `{}` ({context} tokens)",
                        spec.id
                    ),
                ));
            }
            streamed.started.store(true, Ordering::Relaxed);
            let chat = Chat {
                messages,
                parameters: &job.request.parameters,
                max_tokens,
                scope: prompt_scope(account(&job.request)),
                resume: job.request.resume.as_ref().map(|r| r.text.as_str()),
            };
            let generation = generator.generate(chat, job.deadline, &job.frames, &streamed.pieces);
            let mut completion = generation.await.map_err(|e| match e {
                BackendError::DeadlineExceeded => deadline_passed(),
                // Output already reached the requester: it cannot be retried elsewhere.
                BackendError::EngineLost(why) if streamed.pieces.load(Ordering::Relaxed) > 0 => {
                    WireError::partial(ErrorCode::PeerLost, format!("model `{}`: {why}", spec.id))
                }
                other => backend_error(other, None),
            })?;
            // An answer cut at a stop string before the engine reported usage still read its
            // prompt (and is charged for it).
            if completion.usage.input_tokens == 0 {
                completion.usage.input_tokens = u32::try_from(prompt_tokens).unwrap_or(u32::MAX);
            }
            streamed
                .resumed_tokens
                .store(completion.resumed_tokens, Ordering::Relaxed);
            Ok((
                Output::Text {
                    text: completion.text,
                    finish_reason: completion.finish_reason,
                },
                completion.usage,
                completion.first_token_at,
            ))
        }
        (Backend::Embed(_), Input::Embed(_))
        | (Backend::Classify(_), Input::Classify(_))
        | (Backend::Vision(_), Input::Image(_))
        | (Backend::Speech(_), Input::Audio(_)) => {
            // Such work is CPU-bound and cannot be interrupted: the slot stays taken until it
            // is done, even when the requester leaves or the deadline passes meanwhile, and
            // what it ran is charged then.
            let input = &job.request.input;
            let work = backend.clone().whole(input.clone(), job.deadline);
            let mut work = std::pin::pin!(work);
            let stopped_early = tokio::select! {
                joined = &mut work => {
                    // A file admitted on its header that fails to decode was decoded as far as
                    // it went: that work is charged, as one item.
                    // So is a recording decoded until its deadline.
                    let ran = match &joined {
                        Err(BackendError::Input(_)) => {
                            matches!(input, Input::Image(_) | Input::Audio(_))
                        }
                        Err(BackendError::DeadlineExceeded) => matches!(input, Input::Audio(_)),
                        _ => false,
                    };
                    if ran {
                        streamed.items.store(1, Ordering::Relaxed);
                        streamed.started.store(true, Ordering::Relaxed);
                    }
                    return whole(joined);
                }
                () = job.frames.closed() => BackendError::Cancelled,
                () = tokio::time::sleep_until(job.deadline.into()) => BackendError::DeadlineExceeded,
            };
            let items = match input {
                Input::Embed(texts) | Input::Classify(texts) => texts.len(),
                _ => 1,
            };
            let items = u32::try_from(items).unwrap_or(u32::MAX);
            match work.await {
                Ok((_, tokens)) => {
                    streamed.prompt_tokens.store(tokens, Ordering::Relaxed);
                    streamed.items.store(items, Ordering::Relaxed);
                }
                // A recording decoded step by step until its deadline: that work ran, and is
                // charged as the one item it was.
                Err(BackendError::DeadlineExceeded) if matches!(input, Input::Audio(_)) => {
                    streamed.items.store(items, Ordering::Relaxed);
                    streamed.started.store(true, Ordering::Relaxed);
                }
                Err(_) => {}
            }
            Err(match stopped_early {
                BackendError::DeadlineExceeded => deadline_passed(),
                other => backend_error(other, None),
            })
        }
        (Backend::Text(_), _) => wrong_input("text-generation", "chat messages"),
        (Backend::Embed(_), _) => wrong_input("text-embeddings", "texts to embed"),
        (Backend::Classify(_), _) => wrong_input("text-classification", "texts to classify"),
        (Backend::Vision(_), _) => wrong_input("image", "an image"),
        (Backend::Speech(_), _) => wrong_input("speech", "a recording"),
    }
}

fn whole(done: Whole) -> Result<Executed, WireError> {
    let (output, tokens) = done.map_err(|e| backend_error(e, None))?;
    Ok((
        output,
        Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
        None,
    ))
}

fn backend_error(e: BackendError, elapsed: Option<Duration>) -> WireError {
    match e {
        BackendError::Cancelled | BackendError::SlowConsumer => {
            WireError::new(ErrorCode::Cancelled, e.to_string())
        }
        BackendError::DeadlineExceeded => WireError::new(
            ErrorCode::DeadlineExceeded,
            format!(
                "deadline passed after {:.0} ms",
                elapsed.map(ms).unwrap_or_default()
            ),
        ),
        // Nothing reached the requester: another node may serve it.
        BackendError::EngineLost(_) => WireError::new(ErrorCode::Unavailable, e.to_string()),
        BackendError::Input(_) => WireError::new(ErrorCode::InvalidInput, e.to_string()),
        other => WireError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Typed handle to a model host; follows the host across restarts.
#[derive(Debug, Clone)]
pub struct ModelHostHandle(pub(crate) ActorSlot<Msg>);

/// The model hosts of this node, by model id, with their live state.
///
/// Kept by the node itself rather than looked up in ractor's name registry: ractor unregisters
/// a name when any actor of that name stops, remote stand-ins included, so a peer's model host
/// going away (a peer disconnecting) would erase the local host's registration.
#[derive(Debug, Clone, Default)]
pub struct LocalModels {
    hosts: Arc<std::collections::BTreeMap<String, ModelHostHandle>>,
    states: ModelStates,
}

impl LocalModels {
    /// Wraps the hosts started by the supervisor and the states it keeps.
    pub fn new(
        hosts: std::collections::BTreeMap<String, ModelHostHandle>,
        states: ModelStates,
    ) -> Self {
        Self {
            hosts: Arc::new(hosts),
            states,
        }
    }

    /// The host of model `id` on this node, if it serves now.
    pub fn get(&self, id: &str) -> Option<&ModelHostHandle> {
        if self.states.get(id) != Some(ModelState::Hosted) {
            return None;
        }
        self.hosts
            .get(id)
            .filter(|h| h.0.get().get_status() == ractor::ActorStatus::Running)
    }

    /// Ids of the models configured here (whatever their state).
    pub fn ids(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// The live state of every model hosted here.
    pub fn states(&self) -> &ModelStates {
        &self.states
    }
}

impl ModelHostHandle {
    /// Admits a job (queued or started), or says why not.
    pub async fn submit(&self, job: Job) -> Result<(), WireError> {
        super::call_local(&self.0.get(), |reply| Msg::Submit(Box::new(job), reply))
            .await
            .unwrap_or_else(|why| {
                Err(WireError::new(
                    ErrorCode::Unavailable,
                    format!("model host did not answer: {why}"),
                ))
            })
    }

    /// Load and traffic counters.
    pub async fn stats(&self) -> Result<ModelStats, LocalCallError> {
        super::call_local(&self.0.get(), Msg::Stats).await
    }
}
