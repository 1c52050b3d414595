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
//! that arrive meanwhile wait for its return (within their deadline, [`RESTART_WAIT`] at
//! most), and a new worker starts after the wait [`restarts`] decides, on lower CPU kernels
//! after repeated quick faults. A worker that does not answer a request by its deadline (and
//! a grace) is hung: it is killed and restarted. The worker maps the model file (llama.cpp's
//! mmap): weights are not copied between processes, and the page cache shares them.
//!
//! The worker runs as the node's user: it isolates faults, not privileges.

pub mod protocol;
pub mod restarts;
pub mod serve;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ganglion_client::codec::{read_frame, write_frame};
use ganglion_client::protocol::{ChatMessage, Input, Output, ResponseFrame};
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, watch};

use self::protocol::{Answer, FromWorker, MAX_FRAME, Ready, ToWorker, within_ms};
use self::restarts::{Death, Restarts};
use super::delivery::{CANCEL_SETTLE_LIMIT, pass_on};
use super::text_generation::Completion;
use super::{BackendError, LoadPlan};

/// How long a started worker has to connect to its socket (an emulated CPU is slow to start).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a worker has to load its model (and time its weights files).
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Orders waiting to be written to a worker.
const ORDERS: usize = 1024;
/// Frames of one request waiting to be read from a worker (its deltas and its end).
const PER_REQUEST: usize = super::delivery::RESPONSE_BUFFER + 8;
/// How long past a request's deadline its answer is waited for (the worker ends a generation
/// itself at the deadline): a worker that has not answered by then is hung, and is killed.
const DEADLINE_GRACE: Duration = Duration::from_secs(15);
/// The same for a whole answer (embeddings, labels, an image), which cannot be stopped at the deadline: a big batch may end
/// late without its worker being hung.
const WHOLE_GRACE: Duration = Duration::from_secs(60);
/// How long a request waits for a restarting worker before it is refused as `unavailable`
/// (and handed to a peer): longer than the longest wait between restarts plus the load of a
/// small model; a request for a model that loads for longer goes to a peer meanwhile.
const RESTART_WAIT: Duration = Duration::from_secs(20);
/// Failed starts in a row after which a worker is given up: its model answers `unavailable`
/// at once (peers serve it) until the node restarts.
const RESTART_ATTEMPTS: u32 = 30;
/// Starts tried before a model is given up as not loadable, when its worker keeps faulting
/// while it loads (the kernels step down after a few faults).
const START_ATTEMPTS: u32 = 12;
/// Most requests a worker may say it runs at once.
const MAX_SLOTS: usize = 64;

/// Environment variable naming a program (and its leading arguments, split on spaces) that
/// starts each worker, e.g. `qemu-x86_64 -cpu Haswell` to run engines as another CPU.
pub const LAUNCHER_ENV: &str = "GANGLION_WORKER_LAUNCHER";

/// A worker as `/admin/models` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerStatus {
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// `ready`; `restarting` while a dead worker's successor starts; `failed` once none
    /// could be started.
    pub state: &'static str,
    /// llama.cpp's CPU kernel variant it runs.
    pub kernels: String,
    /// Workers that died (since the node started).
    pub crashes: u64,
    /// How the last one ended, e.g. `was killed by signal 11 (SIGSEGV)`.
    pub last_exit: Option<String>,
    /// From the last death to the successor's readiness, in milliseconds.
    pub last_return_ms: Option<f64>,
    /// Why it runs below the best kernels for its CPU, if it does.
    pub fallback: Option<String>,
    /// Which weights file it serves and why, when the model has more than one.
    pub weights: Option<String>,
}

/// The node's handle to one model's worker; clones share it. The worker is watched (and
/// restarted) while a handle exists, and killed once none does.
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
    /// No successor could be started: requests are refused at once.
    gave_up: AtomicBool,
}

/// One running worker's connection.
#[derive(Debug)]
struct Link {
    orders: mpsc::Sender<ToWorker>,
    waiting: Mutex<HashMap<u64, mpsc::Sender<FromWorker>>>,
    dead: AtomicBool,
    /// How the process ended, once known.
    exit: Mutex<Option<String>>,
    /// The socket ended.
    ended: Notify,
    /// A request found the worker hung: it is to be killed.
    hung: Notify,
}

/// The data behind `m`, also after a panic elsewhere held it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Worker {
    /// Starts the worker of `plan` on the best of llama.cpp's CPU kernels for its CPU, waits
    /// until its model is loaded, and watches it from then on. A worker that faults while it
    /// loads is started again, on lower kernels after a few faults. Returns it with the
    /// requests it runs at once, or why the model could not be loaded.
    pub async fn start(plan: LoadPlan) -> Result<(Self, usize), BackendError> {
        let mut restarts = Restarts::default();
        let mut attempts = 0;
        let started = loop {
            match spawn(&plan, restarts.rung()).await {
                Ok(started) => break started,
                Err(failed) => {
                    attempts += 1;
                    if failed.death != Some(Death::Fault) || attempts >= START_ATTEMPTS {
                        return Err(failed.error);
                    }
                    tracing::warn!(model = %plan.model, error = %failed.error, "engine worker faulted while loading; starting it again");
                    let next = restarts.crashed(Duration::ZERO, Death::Fault);
                    tokio::time::sleep(next.after).await;
                }
            }
        };
        restarts.started(started.ready.lowest);
        let shared = Arc::new(Shared {
            model: plan.model.clone(),
            engine: started.ready.engine.clone(),
            context_tokens: started.ready.context_tokens,
            live: watch::Sender::new(Some(started.link.clone())),
            status: Mutex::new(WorkerStatus {
                pid: started.child.id(),
                state: "ready",
                kernels: started.ready.kernels.clone(),
                weights: started.ready.weights.clone(),
                fallback: (restarts.rung() > 0).then(|| {
                    format!(
                        "faulted while loading: running on `{}` kernels",
                        started.ready.kernels
                    )
                }),
                ..WorkerStatus::default()
            }),
            next_id: AtomicU64::new(1),
            gave_up: AtomicBool::new(false),
        });
        let slots = started.ready.slots;
        tokio::spawn(watch_over(Arc::downgrade(&shared), plan, restarts, started));
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
        match call.end(deadline + DEADLINE_GRACE).await? {
            Answer::Counted(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    /// Generates an answer in the worker, handing each piece to `deltas` without waiting (see
    /// `llama_cpp::LlamaGenerator::generate`); `sent` counts the pieces handed on.
    pub async fn generate(
        &self,
        chat: super::Chat<'_>,
        deadline: Instant,
        deltas: &mpsc::Sender<ResponseFrame>,
        sent: &AtomicU32,
    ) -> Result<Completion, BackendError> {
        let max_tokens = chat.max_tokens;
        let mut call = self
            .call(deadline, |id| ToWorker::Generate {
                id,
                messages: chat.messages.to_vec(),
                parameters: chat.parameters.clone(),
                max_tokens,
                scope: chat.scope,
                resume: chat.resume.map(str::to_owned),
                within_ms: within_ms(deadline),
            })
            .await?;
        let mut first_token_at = None;
        let give_up = tokio::time::sleep_until((deadline + DEADLINE_GRACE).into());
        tokio::pin!(give_up);
        loop {
            let frame = tokio::select! {
                frame = call.frames.recv() => frame,
                () = deltas.closed() => return Err(call.stop(BackendError::Cancelled, deadline).await),
                () = &mut give_up => return Err(call.hung()),
            };
            match frame {
                Some(FromWorker::Delta { piece, .. }) => {
                    first_token_at.get_or_insert_with(Instant::now);
                    if let Err(e) = pass_on(deltas, sent, piece) {
                        return Err(call.stop(e, deadline).await);
                    }
                }
                Some(FromWorker::Done { outcome, .. }) => {
                    return match outcome? {
                        Answer::Generated {
                            text,
                            finish_reason,
                            mut usage,
                            resumed_tokens,
                            ..
                        } => {
                            // What it reports is charged: within what was asked and handed on,
                            // and within the model's context.
                            usage.output_tokens = usage
                                .output_tokens
                                .clamp(sent.load(Ordering::Relaxed).min(max_tokens), max_tokens);
                            let context = u32::try_from(self.0.context_tokens).unwrap_or(u32::MAX);
                            usage.input_tokens = usage.input_tokens.min(context);
                            usage.cached_input_tokens =
                                usage.cached_input_tokens.min(usage.input_tokens);
                            Ok(Completion {
                                text,
                                finish_reason,
                                usage,
                                first_token_at,
                                resumed_tokens: resumed_tokens.min(usage.output_tokens),
                            })
                        }
                        _ => Err(unexpected()),
                    };
                }
                Some(FromWorker::Loaded(_)) => return Err(unexpected()),
                None => return Err(call.lost()),
            }
        }
    }

    /// Runs a request answered whole in the worker (texts to embed or classify, an image):
    /// its output and the tokens read. It cannot be interrupted: it is waited for (its slot
    /// stays taken) until it ends, or the worker is found hung past the deadline's grace, and
    /// killed.
    pub async fn whole(
        &self,
        input: &Input,
        deadline: Instant,
    ) -> Result<(Output, u32), BackendError> {
        let mut call = self
            .call(deadline, |id| ToWorker::Whole {
                id,
                input: input.clone(),
                within_ms: within_ms(deadline),
            })
            .await?;
        match call.end(deadline + WHOLE_GRACE).await? {
            Answer::Whole(output, tokens) if output.answers(input) => Ok((output, tokens)),
            _ => Err(unexpected()),
        }
    }

    /// Sends a request to the worker. While one is restarting, waits for it until `deadline`,
    /// or [`RESTART_WAIT`] at most: then the request is refused (`unavailable`, so that a peer
    /// may serve it) rather than held.
    async fn call(
        &self,
        deadline: Instant,
        order: impl FnOnce(u64) -> ToWorker,
    ) -> Result<Call, BackendError> {
        let restarting = || {
            BackendError::EngineLost(format!(
                "the engine worker of `{}` is restarting",
                self.0.model
            ))
        };
        let gave_up = || {
            BackendError::EngineLost(format!(
                "no engine worker of `{}` could be started",
                self.0.model
            ))
        };
        let mut live = self.0.live.subscribe();
        let wait = deadline.min(Instant::now() + RESTART_WAIT);
        let ready = tokio::time::timeout_at(
            wait.into(),
            live.wait_for(|link| {
                self.0.gave_up.load(Ordering::Acquire)
                    || link
                        .as_ref()
                        .is_some_and(|l| !l.dead.load(Ordering::Acquire))
            }),
        )
        .await
        // The watch's guard must not be held across an await.
        .map(|seen| seen.map(|link| link.clone()));
        if self.0.gave_up.load(Ordering::Acquire) {
            return Err(gave_up());
        }
        let link = match ready {
            Ok(Ok(link)) => link.ok_or_else(restarting)?,
            Ok(Err(_)) => return Err(restarting()),
            Err(_) if wait < deadline => return Err(restarting()),
            Err(_) => return Err(BackendError::DeadlineExceeded),
        };
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, frames) = mpsc::channel(PER_REQUEST);
        lock(&link.waiting).insert(id, sender);
        let call = Call { link, id, frames };
        // A worker that died meanwhile may have had its requests failed already: it is marked
        // dead before they are, so this sees it.
        if call.link.dead.load(Ordering::Acquire) {
            return Err(call.lost());
        }
        match tokio::time::timeout_at(deadline.into(), call.link.orders.send(order(id))).await {
            Ok(Ok(())) => Ok(call),
            // Its writer is gone: the worker is going.
            Ok(Err(_)) => Err(BackendError::EngineLost(call.exit())),
            Err(_) => Err(BackendError::DeadlineExceeded),
        }
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
    /// Waits for the request's last frame until `until`; a worker silent until then is hung.
    async fn end(&mut self, until: Instant) -> Result<Answer, BackendError> {
        loop {
            let Ok(frame) = tokio::time::timeout_at(until.into(), self.frames.recv()).await else {
                return Err(self.hung());
            };
            match frame {
                Some(FromWorker::Done { outcome, .. }) => return outcome,
                Some(_) => {}
                None => return Err(self.lost()),
            }
        }
    }

    /// Stops the request in the worker and waits until its engine has let it go, so that its
    /// slot is really free; returns `why`. A worker that does not let go within
    /// [`CANCEL_SETTLE_LIMIT`] (or by the request's deadline and grace) is hung.
    async fn stop(&mut self, why: BackendError, deadline: Instant) -> BackendError {
        let cancel = ToWorker::Cancel { id: self.id };
        let settle = (Instant::now() + CANCEL_SETTLE_LIMIT).min(deadline + DEADLINE_GRACE);
        let settle = tokio::time::Instant::from(settle);
        if tokio::time::timeout_at(settle, self.link.orders.send(cancel))
            .await
            .is_err()
        {
            self.hung();
            return why;
        }
        loop {
            match tokio::time::timeout_at(settle, self.frames.recv()).await {
                Ok(Some(FromWorker::Done { .. })) | Ok(None) => return why,
                Ok(Some(_)) => {}
                Err(_) => {
                    self.hung();
                    return why;
                }
            }
        }
    }

    /// The worker did not answer by the request's deadline and its grace: it is killed (and
    /// restarted), and the request ends `deadline_exceeded`.
    fn hung(&self) -> BackendError {
        tracing::error!("an engine worker did not answer a request in time; killing it");
        // Nothing new goes to it; its watcher kills it.
        self.link.dead.store(true, Ordering::Release);
        self.link.hung.notify_one();
        BackendError::DeadlineExceeded
    }

    /// Why the request's frames stopped: its worker died (or, with the worker alive, it was
    /// dropped for not reading its frames).
    fn lost(&self) -> BackendError {
        if self.link.dead.load(Ordering::Acquire) {
            BackendError::EngineLost(self.exit())
        } else {
            BackendError::SlowConsumer
        }
    }

    /// How the worker ended, as far as known.
    fn exit(&self) -> String {
        lock(&self.link.exit)
            .clone()
            .unwrap_or_else(|| "the engine worker ended".into())
    }
}

fn unexpected() -> BackendError {
    BackendError::Run("the worker answered with a frame of another kind".into())
}

/// A worker that has loaded its model.
struct Started {
    child: Child,
    link: Arc<Link>,
    /// What it said of itself (its slots bounded).
    ready: Ready,
    at: Instant,
}

/// A worker that did not start: why, and how it died if it did.
struct Failed {
    error: BackendError,
    death: Option<Death>,
}

impl From<BackendError> for Failed {
    fn from(error: BackendError) -> Self {
        Self { error, death: None }
    }
}

/// Starts a worker process for `plan` on kernels `rung` steps below its CPU's best, hands it
/// its load order over a private socket, and waits until the model is loaded.
async fn spawn(plan: &LoadPlan, rung: usize) -> Result<Started, Failed> {
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
        status = child.wait() => return Err(died(status, "before connecting", &load_error)),
    };
    let (stream, _) = accepted
        .map_err(|_| load_error("the worker did not connect in time".into()))?
        .map_err(|e| load_error(format!("worker socket: {e}")))?;
    drop(socket);
    // Only the process started here may speak for the worker.
    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
    if peer.and_then(|p| u32::try_from(p).ok()) != pid {
        let _ = child.start_kill();
        let error = load_error(format!(
            "a process other than the worker connected ({peer:?})"
        ));
        return Err(error.into());
    }
    let (mut reader, mut writer) = stream.into_split();
    let order = ToWorker::Load {
        plan: plan.clone(),
        rung,
    };
    write_frame(&mut writer, &order, MAX_FRAME)
        .await
        .map_err(|e| load_error(format!("worker socket: {e}")))?;
    let first = tokio::select! {
        first = tokio::time::timeout(LOAD_TIMEOUT, read_frame::<_, FromWorker>(&mut reader, MAX_FRAME)) => first,
        status = child.wait() => return Err(died(status, "while loading", &load_error)),
    };
    let ready = match first {
        Ok(Ok(Some(FromWorker::Loaded(ready)))) => Ready {
            slots: ready.slots.clamp(1, MAX_SLOTS),
            ..ready
        },
        Ok(Ok(Some(FromWorker::Done {
            outcome: Err(e), ..
        }))) => return Err(e.into()),
        Ok(_) => {
            // The socket ended or broke: how the process ended says why.
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = child.start_kill();
            return Err(match status {
                Ok(status) => died(status, "while loading", &load_error),
                Err(_) => load_error("the worker broke off while loading".into()).into(),
            });
        }
        Err(_) => {
            let _ = child.start_kill();
            return Err(load_error("the worker did not load the model in time".into()).into());
        }
    };
    let (orders, mut queued) = mpsc::channel::<ToWorker>(ORDERS);
    let link = Arc::new(Link::new(orders));
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
                FromWorker::Loaded(_) => continue,
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
        ready,
        at: Instant::now(),
    })
}

impl Link {
    fn new(orders: mpsc::Sender<ToWorker>) -> Self {
        Self {
            orders,
            waiting: Mutex::default(),
            dead: AtomicBool::new(false),
            exit: Mutex::new(None),
            ended: Notify::new(),
            hung: Notify::new(),
        }
    }
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
        // Its own process group: a Ctrl-C meant for the node is the node's to handle (its
        // workers end with it: their sockets close).
        .process_group(0)
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
        // Unpredictable and new: nobody else can have made it, or have a way in.
        let dir = std::env::temp_dir().join(format!(
            "ganglion-worker-{}-{}-{:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        ));
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

/// A worker that died before it was ready: why, and how.
fn died(
    status: std::io::Result<std::process::ExitStatus>,
    when: &str,
    load_error: &dyn Fn(String) -> BackendError,
) -> Failed {
    let signal = status.as_ref().ok().and_then(ExitStatusExt::signal);
    Failed {
        error: load_error(format!("the worker {} {when}", exit_text(status))),
        death: Some(Death::of_signal(signal)),
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
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Watches a model's worker for as long as the node keeps its handle: when it dies (or is
/// found hung, and killed), fails what it was running, and starts its successor after the
/// wait [`Restarts`] decides.
async fn watch_over(shared: Weak<Shared>, plan: LoadPlan, mut restarts: Restarts, first: Started) {
    let mut current = first;
    loop {
        let exited = tokio::select! {
            status = current.child.wait() => Some(status),
            () = current.link.ended.notified() => None,
            () = current.link.hung.notified() => None,
            // Nobody holds the handle: the worker goes with it (killed on drop).
            () = gone(&shared) => return,
        };
        let died = Instant::now();
        let link = current.link.clone();
        // Nothing new goes to it from here.
        link.dead.store(true, Ordering::Release);
        if let Some(shared) = shared.upgrade() {
            shared.live.send_replace(None);
        }
        let status = match exited {
            Some(status) => status,
            None => {
                // The socket ended, or the worker hung: it is of no use any more.
                let _ = current.child.start_kill();
                match tokio::time::timeout(Duration::from_secs(5), current.child.wait()).await {
                    Ok(status) => status,
                    Err(_) => Err(std::io::Error::other("it did not end when killed")),
                }
            }
        };
        let lived = died - current.at;
        let signal = status.as_ref().ok().and_then(ExitStatusExt::signal);
        let exit = exit_text(status);
        *lock(&link.exit) = Some(format!("the engine worker {exit}"));
        // Its requests end now: their senders go, and each sees the worker lost.
        lock(&link.waiting).clear();
        let Some(owner) = shared.upgrade() else {
            return;
        };
        tracing::error!(model = %owner.model, lived_ms = lived.as_millis() as u64, "engine worker {exit}; restarting it");
        let from = {
            let mut status = lock(&owner.status);
            status.pid = None;
            status.state = "restarting";
            status.crashes += 1;
            status.last_exit = Some(exit);
            status.kernels.clone()
        };
        drop(owner);
        let mut next = restarts.crashed(lived, Death::of_signal(signal));
        let mut attempts = 0;
        current = loop {
            tokio::time::sleep(next.after).await;
            if shared.strong_count() == 0 {
                return;
            }
            match spawn(&plan, next.rung).await {
                Ok(started) => break started,
                Err(failed) => {
                    tracing::error!(model = %plan.model, error = %failed.error, "engine worker did not start again");
                    attempts += 1;
                    if attempts >= RESTART_ATTEMPTS {
                        give_up(&shared, &failed.error);
                        return;
                    }
                    let death = failed.death.unwrap_or(Death::Other);
                    next = restarts.crashed(Duration::ZERO, death);
                }
            }
        };
        restarts.started(current.ready.lowest);
        let Some(owner) = shared.upgrade() else {
            return;
        };
        let back = died.elapsed();
        tracing::info!(model = %owner.model, return_ms = back.as_millis() as u64, kernels = %current.ready.kernels, "engine worker is back");
        {
            let mut status = lock(&owner.status);
            if current.ready.kernels != from {
                let why = format!(
                    "quick faults in a row on `{from}` kernels: running on `{}`",
                    current.ready.kernels
                );
                tracing::warn!(model = %owner.model, "{why}");
                status.fallback = Some(why);
            }
            status.pid = current.child.id();
            status.state = "ready";
            status.kernels = current.ready.kernels.clone();
            status.weights = current.ready.weights.clone();
            status.last_return_ms = Some(back.as_secs_f64() * 1000.0);
        }
        owner.live.send_replace(Some(current.link.clone()));
    }
}

/// No successor could be started: the model's requests are refused from now on (`unavailable`,
/// so that peers serve them), and `/admin/models` says why.
fn give_up(shared: &Weak<Shared>, why: &BackendError) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    tracing::error!(model = %shared.model, error = %why, "engine worker given up after {RESTART_ATTEMPTS} failed starts");
    {
        let mut status = lock(&shared.status);
        status.state = "failed";
        status.last_exit = Some(format!("{RESTART_ATTEMPTS} starts failed, the last: {why}"));
    }
    shared.gave_up.store(true, Ordering::Release);
    // Wakes the requests waiting for a successor.
    shared.live.send_replace(None);
}

/// Resolves once nobody holds the worker's handle (checked every few seconds).
async fn gone(shared: &Weak<Shared>) {
    while shared.strong_count() > 0 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
