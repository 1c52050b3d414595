//! ModelHost: one per hosted model. A child of `NodeSupervisor`.
//!
//! It owns the model's backend (mistralrs text generation or candle embeddings), admits
//! requests into a bounded queue (a full queue is a clear `overloaded` error), runs at most
//! `concurrency` of them at once, and frees a slot as soon as a request ends, fails, passes its
//! deadline or loses its requester (the response channel closes). It joins process group
//! `ganglion.model.<id>`, so every node sees who hosts what; requests themselves arrive over
//! data-plane streams, never as actor messages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::protocol::{
    ErrorCode, FinalResponse, HopTime, Input, Output, Request, ResponseFrame, Route, Timings,
    Usage, WireError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::inference::{Backend, BackendError};
use crate::models::ModelSpec;

/// Capacity of a request's response channel: deltas wait here while the stream is written.
pub const RESPONSE_CHANNEL_CAPACITY: usize = 64;

/// Process group of the hosts of model `id`.
pub fn group(id: &str) -> String {
    format!("ganglion.model.{id}")
}

/// Registered actor name of the host of model `id` on this node.
pub fn actor_name(id: &str) -> String {
    format!("ganglion.model_host.{id}")
}

/// A request on its way into a model.
#[derive(Debug)]
pub struct Job {
    /// The validated request.
    pub request: Request,
    /// When the node received it.
    pub received: Instant,
    /// The latest moment to finish, if any.
    pub deadline: Option<Instant>,
    /// Where response frames go; closing it cancels the job.
    pub frames: mpsc::Sender<ResponseFrame>,
}

/// Messages of a model host.
pub enum Msg {
    /// Admit a job: queued or started, or refused with `overloaded`.
    Submit(Box<Job>, RpcReplyPort<Result<(), WireError>>),
    /// A running job ended; its slot is free.
    Finished {
        /// Whether it produced a final response.
        ok: bool,
        /// How long it ran.
        took: Duration,
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
    /// Requests running.
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
    /// Recent time to serve one request, in milliseconds (exponentially weighted).
    pub service_ms: f64,
}

/// The model host actor.
#[derive(Debug, Default)]
pub struct ModelHost;

/// Start-up arguments.
#[derive(Debug)]
pub struct Arguments {
    /// The catalog entry.
    pub spec: ModelSpec,
    /// The loaded backend.
    pub backend: Arc<Backend>,
    /// Requests run at once.
    pub concurrency: usize,
    /// Requests that may wait.
    pub queue_capacity: usize,
    /// This node's name (for routes and logs).
    pub node: String,
}

/// The host's state.
pub struct State {
    spec: Arc<ModelSpec>,
    backend: Arc<Backend>,
    node: Arc<str>,
    queue: VecDeque<Job>,
    running: JoinSet<()>,
    stats: ModelStats,
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
                service_ms: 0.0,
            },
            spec: Arc::new(args.spec),
            backend: args.backend,
            node: args.node.into(),
            queue: VecDeque::new(),
            running: JoinSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
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
                let admitted = if state.stats.in_flight < state.stats.concurrency {
                    state.start(&myself, job);
                    Ok(())
                } else if state.queue.len() < state.stats.queue_capacity {
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
            Msg::Finished { ok, took } => {
                while state.running.try_join_next().is_some() {}
                state.stats.in_flight -= 1;
                if ok {
                    // Exponentially weighted, so routers see the recent service time.
                    let took = ms(took);
                    state.stats.service_ms = if state.stats.completed == 0 {
                        took
                    } else {
                        0.8 * state.stats.service_ms + 0.2 * took
                    };
                }
                if ok {
                    state.stats.completed += 1;
                } else {
                    state.stats.failed += 1;
                }
                state.start_queued(&myself);
            }
            Msg::Stats(reply) => {
                let mut stats = state.stats.clone();
                stats.queued = state.queue.len();
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }
}

impl State {
    /// Starts queued jobs while slots are free, dropping those whose requester left or whose
    /// deadline passed while they waited.
    fn start_queued(&mut self, myself: &ActorRef<Msg>) {
        while self.stats.in_flight < self.stats.concurrency {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if job.frames.is_closed() {
                self.stats.failed += 1;
                continue;
            }
            self.start(myself, job);
        }
    }

    fn start(&mut self, myself: &ActorRef<Msg>, job: Job) {
        self.stats.in_flight += 1;
        let span = tracing::info_span!("request", node = %self.node, model = %self.spec.id, request_id = %job.request.id);
        let (spec, backend, node, myself) = (
            self.spec.clone(),
            self.backend.clone(),
            self.node.clone(),
            myself.clone(),
        );
        self.running.spawn(
            async move {
                let frames = job.frames.clone();
                let started = Instant::now();
                let outcome = run(&spec, &backend, &node, job).await;
                let took = started.elapsed();
                let ok = outcome.is_ok();
                match outcome {
                    Ok(final_response) => {
                        let _ = frames.send(ResponseFrame::Final(final_response)).await;
                    }
                    Err(error) => {
                        tracing::debug!(code = %error.code, message = %error.message, "request failed");
                        let _ = frames.send(ResponseFrame::Error(error)).await;
                    }
                }
                let _ = myself.cast(Msg::Finished { ok, took });
            }
            .instrument(span),
        );
    }
}

/// Runs one job on the backend, within its deadline.
async fn run(
    spec: &ModelSpec,
    backend: &Arc<Backend>,
    node: &str,
    job: Job,
) -> Result<FinalResponse, WireError> {
    let started = Instant::now();
    let queue_ms = ms(started - job.received);
    let work = execute(spec, backend, &job);
    let result = match job.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or_else(|_| {
                Err(WireError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("deadline passed after {:.0} ms", ms(job.received.elapsed())),
                ))
            }),
        None => work.await,
    }?;
    let (output, usage, first_token_at) = result;
    Ok(FinalResponse {
        id: job.request.id,
        output,
        usage,
        timings: Timings {
            queue_ms,
            first_token_ms: first_token_at.map(|t| ms(t - job.received)),
            total_ms: ms(job.received.elapsed()),
        },
        route: Route {
            entry: node.to_owned(),
            executed_by: node.to_owned(),
            path: vec![node.to_owned()],
            attempts: Vec::new(),
            per_hop: vec![HopTime {
                node: node.to_owned(),
                first_token_ms: first_token_at.map(|t| ms(t - job.received)),
                total_ms: ms(job.received.elapsed()),
            }],
        },
    })
}

type Executed = (Output, Usage, Option<Instant>);

async fn execute(
    spec: &ModelSpec,
    backend: &Arc<Backend>,
    job: &Job,
) -> Result<Executed, WireError> {
    let wrong_input = |task: &str| {
        Err(WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "model `{}` is a {task} model and takes {}",
                spec.id,
                match task {
                    "text-generation" => "chat messages",
                    _ => "texts to embed",
                }
            ),
        ))
    };
    match (&**backend, &job.request.input) {
        (Backend::Text(generator), Input::Chat(messages)) => {
            let completion = generator
                .generate(
                    messages,
                    &job.request.parameters,
                    spec.default_max_tokens,
                    &job.frames,
                )
                .await
                .map_err(backend_error)?;
            Ok((
                Output::Text {
                    text: completion.text,
                    finish_reason: completion.finish_reason,
                },
                completion.usage,
                completion.first_token_at,
            ))
        }
        (Backend::Embed(_), Input::Embed(texts)) => {
            // The embedder is CPU-bound: run it on a blocking thread, and stop waiting (freeing
            // the slot) if the requester leaves meanwhile.
            let (backend, texts) = (backend.clone(), texts.clone());
            let work = tokio::task::spawn_blocking(move || match &*backend {
                Backend::Embed(embedder) => embedder.embed(&texts),
                Backend::Text(_) => Err(BackendError::Run("not an embedding model".into())),
            });
            let (vectors, tokens) = tokio::select! {
                joined = work => joined.map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?.map_err(backend_error)?,
                () = job.frames.closed() => return Err(backend_error(BackendError::Cancelled)),
            };
            Ok((
                Output::Embeddings(vectors),
                Usage {
                    input_tokens: tokens,
                    output_tokens: 0,
                },
                None,
            ))
        }
        (Backend::Text(_), _) => wrong_input("text-generation"),
        (Backend::Embed(_), _) => wrong_input("text-embeddings"),
    }
}

fn backend_error(e: BackendError) -> WireError {
    match e {
        BackendError::Cancelled => WireError::new(ErrorCode::Internal, "cancelled"),
        other => WireError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Typed handle to a model host.
#[derive(Debug, Clone)]
pub struct ModelHostHandle(pub(crate) ActorRef<Msg>);

/// The model hosts of this node, by model id.
///
/// Kept by the node itself rather than looked up in ractor's name registry: ractor unregisters
/// a name when any actor of that name stops, remote stand-ins included, so a peer's model host
/// going away (a peer disconnecting) would erase the local host's registration.
#[derive(Debug, Clone, Default)]
pub struct LocalModels(std::sync::Arc<std::collections::BTreeMap<String, ModelHostHandle>>);

impl LocalModels {
    /// Wraps the hosts started by the supervisor.
    pub fn new(hosts: std::collections::BTreeMap<String, ModelHostHandle>) -> Self {
        Self(std::sync::Arc::new(hosts))
    }

    /// The host of model `id` on this node, if it runs.
    pub fn get(&self, id: &str) -> Option<&ModelHostHandle> {
        self.0
            .get(id)
            .filter(|h| h.0.get_status() == ractor::ActorStatus::Running)
    }

    /// Ids of the models hosted here.
    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

impl ModelHostHandle {
    /// Admits a job (queued or started), or says why not.
    pub async fn submit(&self, job: Job) -> Result<(), WireError> {
        let unavailable = |why: String| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("model host did not answer: {why}"),
            )
        };
        super::call_local(&self.0, |reply| Msg::Submit(Box::new(job), reply))
            .await
            .unwrap_or_else(|why| Err(unavailable(why)))
    }

    /// Load and traffic counters.
    pub async fn stats(&self) -> Option<ModelStats> {
        super::call_local(&self.0, Msg::Stats).await.ok()
    }
}
