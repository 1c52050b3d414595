//! Engines out of process: each hosted model's engine runs in a worker process
//! (`ganglion-node worker`), so that native code that crashes (a fault in llama.cpp, an abort
//! on input it dislikes, the kernel's OOM killer) takes down only that model's worker, never
//! the node's membership, cache, meter, ledger or other models. The design follows Ollama's
//! runner process per model and vLLM's engine-core process.
//!
//! The node side, [`Worker`], is what the model host holds in place of an engine. It starts
//! the worker, talks to it over a private Unix socket (frames of [`protocol`], bounded, every
//! wait with a deadline), and watches it: when the worker dies, the requests it was running
//! end with [`BackendError::EngineLost`] (the host makes that `unavailable` before the first
//! token, so the request is handed to a peer, and `peer_lost`, partial, after it), requests
//! that arrive meanwhile wait for its return within their deadline, and a new worker starts
//! after the wait [`restarts`] decides, stepping down llama.cpp's CPU kernels after repeated
//! quick crashes. The worker maps the model file (llama.cpp's mmap): weights are not copied
//! between processes, and the page cache shares them with any other worker of the same file.

pub mod protocol;
pub mod restarts;
pub mod serve;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_client::codec::{read_frame, write_frame};
use ganglion_client::protocol::{ChatMessage, Parameters, ResponseFrame};
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, watch};

use self::protocol::{Answer, FromWorker, MAX_FRAME, ToWorker, within_ms};
use self::restarts::Restarts;
use super::delivery::{CANCEL_SETTLE_LIMIT, pass_on};
use super::text_generation::Completion;
use super::{BackendError, LoadPlan};

/// How long a started worker has to connect to its socket (an emulated CPU is slow to start).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a worker has to load its model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Orders waiting to be written to a worker.
const ORDERS: usize = 1024;
/// Frames of one request waiting to be read from a worker (its deltas and its end).
const PER_REQUEST: usize = crate::actors::model_host::RESPONSE_BUFFER + 8;
/// How long past a request's deadline its answer is waited for (the worker ends it itself at
/// the deadline; this guards against a worker that never does).
const DEADLINE_GRACE: Duration = Duration::from_secs(15);

/// Environment variable naming a program (and its leading arguments, split on spaces) that
/// starts each worker, e.g. `qemu-x86_64 -cpu Haswell` to run engines as another CPU.
pub const LAUNCHER_ENV: &str = "GANGLION_WORKER_LAUNCHER";

/// A worker as `/admin/models` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerStatus {
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// `ready`, or `restarting` while a dead worker's successor starts.
    pub state: &'static str,
    /// llama.cpp's CPU kernel variant it runs.
    pub kernels: String,
    /// Workers that died (since the node started).
    pub crashes: u64,
    /// How the last one ended, e.g. `killed by signal 11 (SIGSEGV)`.
    pub last_exit: Option<String>,
    /// From the last death to the successor's readiness, in milliseconds.
    pub last_return_ms: Option<f64>,
    /// Why it runs below the best kernels for this CPU, if it does.
    pub fallback: Option<String>,
    /// Which weights file it serves and why, when the model has more than one.
    pub weights: Option<String>,
}

/// The node's handle to one model's worker; clones share it.
#[derive(Debug, Clone)]
pub struct Worker(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    model: String,
    engine: String,
    context_tokens: usize,
    live: watch::Sender<Option<Arc<Link>>>,
    status: Mutex<WorkerStatus>,
    next_id: AtomicU64,
}

/// One running worker's connection.
#[derive(Debug)]
struct Link {
    orders: mpsc::Sender<ToWorker>,
    waiting: Mutex<HashMap<u64, mpsc::Sender<FromWorker>>>,
    dead: AtomicBool,
    /// How the process ended, once known.
    exit: Mutex<Option<String>>,
    ended: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Worker {
    /// Starts the worker of `plan` on the best of `ladder` (llama.cpp's CPU variants, best
    /// first), waits until its model is loaded, and watches it from then on. Returns it with
    /// the requests it runs at once, or why it could not load.
    pub async fn start(
        plan: LoadPlan,
        ladder: Vec<&'static str>,
    ) -> Result<(Self, usize), BackendError> {
        let restarts = Restarts::new(ladder);
        let started = spawn(&plan, restarts.variant()).await?;
        let shared = Arc::new(Shared {
            model: plan.model.clone(),
            engine: started.engine.clone(),
            context_tokens: started.context_tokens,
            live: watch::Sender::new(Some(started.link.clone())),
            status: Mutex::new(WorkerStatus {
                pid: started.child.id(),
                state: "ready",
                kernels: restarts.variant().to_owned(),
                weights: started.weights.clone(),
                ..WorkerStatus::default()
            }),
            next_id: AtomicU64::new(1),
        });
        let slots = started.slots;
        tokio::spawn(watch_over(shared.clone(), plan, restarts, started));
        Ok((Self(shared), slots))
    }

    /// The library the worker runs the model on.
    pub fn engine(&self) -> &str {
        &self.0.engine
    }

    /// Context window of its chat model, in tokens.
    pub fn context_tokens(&self) -> usize {
        self.0.context_tokens
    }

    /// How it is doing.
    pub fn status(&self) -> WorkerStatus {
        lock(&self.0.status).clone()
    }

    /// Prompt tokens of `messages` with the chat template applied.
    pub async fn count_prompt_tokens(
        &self,
        messages: &[ChatMessage],
        deadline: Instant,
    ) -> Result<usize, BackendError> {
        let mut call = self
            .call(deadline, |id| ToWorker::Count {
                id,
                messages: messages.to_vec(),
                within_ms: within_ms(deadline),
            })
            .await?;
        match call.end(deadline).await? {
            Answer::Counted(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    /// Generates an answer in the worker, handing each piece to `deltas` without waiting (see
    /// `llama_cpp::LlamaGenerator::generate`); `sent` counts the pieces handed on.
    pub async fn generate(
        &self,
        messages: &[ChatMessage],
        parameters: &Parameters,
        max_tokens: u32,
        deadline: Instant,
        deltas: &mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<Completion, BackendError> {
        let arrived = Instant::now();
        let mut call = self
            .call(deadline, |id| ToWorker::Generate {
                id,
                messages: messages.to_vec(),
                parameters: parameters.clone(),
                max_tokens,
                within_ms: within_ms(deadline),
            })
            .await?;
        let give_up = tokio::time::sleep_until((deadline + DEADLINE_GRACE).into());
        tokio::pin!(give_up);
        loop {
            let frame = tokio::select! {
                frame = call.frames.recv() => frame,
                () = deltas.closed() => return Err(call.stop(BackendError::Cancelled).await),
                () = &mut give_up => return Err(call.stop(BackendError::DeadlineExceeded).await),
            };
            match frame {
                Some(FromWorker::Delta { piece, .. }) => {
                    if let Err(e) = pass_on(deltas, sent, piece) {
                        return Err(call.stop(e).await);
                    }
                }
                Some(FromWorker::Done { outcome, .. }) => {
                    return match outcome? {
                        Answer::Generated {
                            text,
                            finish_reason,
                            usage,
                            first_token_after_ms,
                        } => Ok(Completion {
                            text,
                            finish_reason,
                            usage,
                            first_token_at: first_token_after_ms
                                .map(|ms| arrived + Duration::from_millis(ms)),
                        }),
                        _ => Err(unexpected()),
                    };
                }
                Some(FromWorker::Loaded { .. }) => return Err(unexpected()),
                None => return Err(call.lost()),
            }
        }
    }

    /// Embeds `texts` in the worker: one unit-length vector each, and the tokens read. An
    /// embedding cannot be interrupted: it is waited for until the deadline (and its grace).
    pub async fn embed(
        &self,
        texts: &[String],
        deadline: Instant,
    ) -> Result<(Vec<Vec<f32>>, u32), BackendError> {
        let mut call = self
            .call(deadline, |id| ToWorker::Embed {
                id,
                texts: texts.to_vec(),
            })
            .await?;
        match call.end(deadline + DEADLINE_GRACE).await? {
            Answer::Embedded(vectors, tokens) => Ok((vectors, tokens)),
            _ => Err(unexpected()),
        }
    }

    /// Sends a request to the worker, waiting (until `deadline`) for one to be running.
    async fn call(
        &self,
        deadline: Instant,
        order: impl FnOnce(u64) -> ToWorker,
    ) -> Result<Call, BackendError> {
        let mut live = self.0.live.subscribe();
        let link = tokio::time::timeout_at(
            deadline.into(),
            live.wait_for(|link| {
                link.as_ref()
                    .is_some_and(|l| !l.dead.load(Ordering::Acquire))
            }),
        )
        .await
        .map_err(|_| BackendError::DeadlineExceeded)?
        .map_err(|_| BackendError::EngineLost("the worker is gone".into()))?
        .clone()
        .ok_or_else(|| BackendError::EngineLost("the worker is gone".into()))?;
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, frames) = mpsc::channel(PER_REQUEST);
        lock(&link.waiting).insert(id, sender);
        let call = Call { link, id, frames };
        // A worker that died meanwhile may have had its requests failed already: marked dead
        // before they are, so this sees it.
        if call.link.dead.load(Ordering::Acquire) {
            return Err(call.lost());
        }
        tokio::time::timeout_at(deadline.into(), call.link.orders.send(order(id)))
            .await
            .map_err(|_| BackendError::DeadlineExceeded)?
            .map_err(|_| call.lost())?;
        Ok(call)
    }
}

/// One request in flight to a worker; dropping it forgets the request's frames.
struct Call {
    link: Arc<Link>,
    id: u64,
    frames: mpsc::Receiver<FromWorker>,
}

impl Drop for Call {
    fn drop(&mut self) {
        lock(&self.link.waiting).remove(&self.id);
    }
}

impl Call {
    /// Waits for the request's last frame until `until`.
    async fn end(&mut self, until: Instant) -> Result<Answer, BackendError> {
        loop {
            let frame = tokio::time::timeout_at(until.into(), self.frames.recv())
                .await
                .map_err(|_| BackendError::DeadlineExceeded)?;
            match frame {
                Some(FromWorker::Done { outcome, .. }) => return outcome,
                Some(_) => {}
                None => return Err(self.lost()),
            }
        }
    }

    /// Stops the request in the worker and waits (briefly) until its engine has let it go,
    /// so that its slot is really free; returns `why`.
    async fn stop(&mut self, why: BackendError) -> BackendError {
        let _ = self.link.orders.try_send(ToWorker::Cancel { id: self.id });
        let settle = tokio::time::Instant::now() + CANCEL_SETTLE_LIMIT;
        while let Ok(Some(frame)) = tokio::time::timeout_at(settle, self.frames.recv()).await {
            if matches!(frame, FromWorker::Done { .. }) {
                break;
            }
        }
        why
    }

    /// Why the request's frames stopped: its worker died (or, with the worker alive, it was
    /// dropped for not reading its frames).
    fn lost(&self) -> BackendError {
        if self.link.dead.load(Ordering::Acquire) {
            let exit = lock(&self.link.exit).clone();
            BackendError::EngineLost(exit.unwrap_or_else(|| "the worker process ended".into()))
        } else {
            BackendError::SlowConsumer
        }
    }
}

fn unexpected() -> BackendError {
    BackendError::Run("the worker answered with a frame of another kind".into())
}

/// A worker that has loaded its model.
struct Started {
    child: Child,
    link: Arc<Link>,
    slots: usize,
    context_tokens: usize,
    engine: String,
    weights: Option<String>,
    at: Instant,
}

/// Starts a worker process for `plan` on `variant`, hands it its load order over a private
/// socket, and waits until the model is loaded.
async fn spawn(plan: &LoadPlan, variant: &str) -> Result<Started, BackendError> {
    let load_error = |message: String| BackendError::Load {
        path: plan.location.clone(),
        message,
    };
    let socket = Socket::new().map_err(|e| load_error(format!("worker socket: {e}")))?;
    let listener =
        UnixListener::bind(&socket.path).map_err(|e| load_error(format!("worker socket: {e}")))?;
    let mut child = command(&socket.path)
        .map_err(load_error)?
        .spawn()
        .map_err(|e| load_error(format!("cannot start the worker: {e}")))?;
    let pid = child.id();
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()) => accepted,
        status = child.wait() => return Err(load_error(format!("the worker {} before connecting", exit_text(status)))),
    };
    let (stream, _) = accepted
        .map_err(|_| load_error("the worker did not connect in time".into()))?
        .map_err(|e| load_error(format!("worker socket: {e}")))?;
    drop(socket);
    // Only the process started here may speak for the worker.
    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
    if peer.and_then(|p| u32::try_from(p).ok()) != pid {
        let _ = child.start_kill();
        return Err(load_error(format!(
            "a process other than the worker connected ({peer:?})"
        )));
    }
    let (mut reader, mut writer) = stream.into_split();
    let order = ToWorker::Load {
        plan: plan.clone(),
        variant: variant.to_owned(),
    };
    write_frame(&mut writer, &order, MAX_FRAME)
        .await
        .map_err(|e| load_error(format!("worker socket: {e}")))?;
    let first = tokio::select! {
        first = tokio::time::timeout(LOAD_TIMEOUT, read_frame::<_, FromWorker>(&mut reader, MAX_FRAME)) => first,
        status = child.wait() => return Err(load_error(format!("the worker {} while loading", exit_text(status)))),
    };
    let (slots, context_tokens, engine, weights) = match first {
        Ok(Ok(Some(FromWorker::Loaded {
            slots,
            context_tokens,
            engine,
            weights,
        }))) => (slots.max(1), context_tokens, engine, weights),
        Ok(Ok(Some(FromWorker::Done {
            outcome: Err(e), ..
        }))) => return Err(e),
        Ok(Ok(_)) => return Err(load_error("the worker ended while loading".into())),
        Ok(Err(e)) => return Err(load_error(format!("worker socket: {e}"))),
        Err(_) => {
            let _ = child.start_kill();
            return Err(load_error(
                "the worker did not load the model in time".into(),
            ));
        }
    };
    let (orders, mut queued) = mpsc::channel::<ToWorker>(ORDERS);
    let link = Arc::new(Link {
        orders,
        waiting: Mutex::default(),
        dead: AtomicBool::new(false),
        exit: Mutex::new(None),
        ended: Notify::new(),
    });
    tokio::spawn(async move {
        while let Some(order) = queued.recv().await {
            if write_frame(&mut writer, &order, MAX_FRAME).await.is_err() {
                break;
            }
        }
    });
    let reading = link.clone();
    tokio::spawn(async move {
        loop {
            let frame = match read_frame::<_, FromWorker>(&mut reader, MAX_FRAME).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "bad frame from an engine worker");
                    break;
                }
            };
            let id = match &frame {
                FromWorker::Delta { id, .. } | FromWorker::Done { id, .. } => *id,
                FromWorker::Loaded { .. } => continue,
            };
            let mut waiting = lock(&reading.waiting);
            if let Some(to) = waiting.get(&id)
                && to.try_send(frame).is_err()
            {
                // Its reader stopped reading: it is forgotten, which it sees as slow.
                waiting.remove(&id);
                let _ = reading.orders.try_send(ToWorker::Cancel { id });
            }
        }
        reading.dead.store(true, Ordering::Release);
        reading.ended.notify_one();
    });
    Ok(Started {
        child,
        link,
        slots,
        context_tokens,
        engine,
        weights,
        at: Instant::now(),
    })
}

/// The command that runs a worker connecting to `socket`: this very program in worker mode,
/// behind the launcher of [`LAUNCHER_ENV`] when one is set.
fn command(socket: &std::path::Path) -> Result<Command, String> {
    let exe: PathBuf =
        std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let launcher = std::env::var(LAUNCHER_ENV).unwrap_or_default();
    let mut words = launcher.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .arg("worker")
        .arg("--socket")
        .arg(socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// A private folder (0700) holding the socket a worker connects to; removed when dropped.
struct Socket {
    dir: PathBuf,
    path: PathBuf,
}

impl Socket {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ganglion-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("socket");
        Ok(Self { dir, path })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a process ended, in words.
fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!(
                "was killed by signal {signal}{}",
                signal_name(signal)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            _ => "ended".into(),
        },
        Err(e) => format!("ended (its status is unknown: {e})"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Watches a model's worker for as long as the node runs: when it dies, fails what it was
/// running, and starts its successor after the wait [`Restarts`] decides.
async fn watch_over(shared: Arc<Shared>, plan: LoadPlan, mut restarts: Restarts, first: Started) {
    let mut current = first;
    loop {
        let exited = tokio::select! {
            status = current.child.wait() => Some(status),
            () = current.link.ended.notified() => None,
        };
        let status = match exited {
            Some(status) => status,
            None => {
                // The socket ended or broke: the process is of no use any more.
                let _ = current.child.start_kill();
                current.child.wait().await
            }
        };
        let died = Instant::now();
        let lived = died - current.at;
        let exit = exit_text(status);
        tracing::error!(model = %shared.model, lived_ms = lived.as_millis() as u64, "engine worker {exit}; restarting it");
        let link = current.link.clone();
        *lock(&link.exit) = Some(format!("the engine worker {exit}"));
        link.dead.store(true, Ordering::Release);
        shared.live.send_replace(None);
        // Its requests end now: their senders go, and each sees the worker lost.
        lock(&link.waiting).clear();
        {
            let mut status = lock(&shared.status);
            status.pid = None;
            status.state = "restarting";
            status.crashes += 1;
            status.last_exit = Some(exit);
        }
        let mut next = restarts.crashed(lived);
        current = loop {
            if let Some(why) = &next.stepped_down {
                tracing::warn!(model = %shared.model, "{why}");
            }
            lock(&shared.status).fallback = restarts.stepped_down().map(str::to_owned);
            tokio::time::sleep(next.after).await;
            match spawn(&plan, next.variant).await {
                Ok(started) => break started,
                Err(e) => {
                    tracing::error!(model = %shared.model, error = %e, "engine worker did not start again");
                    next = restarts.crashed(Duration::ZERO);
                }
            }
        };
        let back = died.elapsed();
        tracing::info!(model = %shared.model, return_ms = back.as_millis() as u64, kernels = next.variant, "engine worker is back");
        {
            let mut status = lock(&shared.status);
            status.pid = current.child.id();
            status.state = "ready";
            status.kernels = next.variant.to_owned();
            status.weights = current.weights.clone();
            status.last_return_ms = Some(back.as_secs_f64() * 1000.0);
        }
        shared.live.send_replace(Some(current.link.clone()));
    }
}
