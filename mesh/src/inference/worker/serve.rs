//! The worker's side: `ganglion-node worker --socket PATH`. It connects to the node that
//! started it, loads the one model it is told to (on the best CPU kernels for its own CPU,
//! less the rungs it is told to step down), and runs requests until the node goes away (its
//! socket ends), then exits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganglion_client::codec::{read_frame, write_frame};
use ganglion_client::protocol::ResponseFrame;
use tokio::net::UnixStream;
use tokio::sync::{Notify, mpsc};

use super::lock;
use super::protocol::{Answer, FromWorker, MAX_FRAME, Ready, ToWorker, deadline_in};
use crate::inference::delivery::RESPONSE_BUFFER;
use crate::inference::{Backend, BackendError, kernels};

/// How long the node has to send the load instruction after the worker connects.
const LOAD_ORDER_TIMEOUT: Duration = Duration::from_secs(30);

/// Frames waiting to be written to the node.
const OUTGOING: usize = 1024;

/// Runs a worker until its node goes away.
pub async fn run(socket: &Path) -> anyhow::Result<()> {
    // A worker lives no longer than its node. One busy loading or measuring when the node dies
    // would not notice its socket close for minutes, so it watches its parent as well (under
    // a launcher such as qemu-user, the parent is still the node).
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(1);
            }
        }
    });
    let stream = UnixStream::connect(socket).await?;
    let (mut reader, mut writer) = stream.into_split();
    let Some(ToWorker::Load { plan, rung }) = tokio::time::timeout(
        LOAD_ORDER_TIMEOUT,
        read_frame::<_, ToWorker>(&mut reader, MAX_FRAME),
    )
    .await??
    else {
        anyhow::bail!("the node's first frame was not a load order");
    };
    // Chosen here, from this process's own CPU (an emulator's, under a launcher).
    let loaded = match kernels::load(rung) {
        Ok(kernels) => crate::inference::load(&plan)
            .await
            .map(|loaded| (kernels, loaded)),
        Err(message) => Err(BackendError::Load {
            path: plan.location.clone(),
            message,
        }),
    };
    let (
        kernels,
        crate::inference::Loaded {
            backend,
            slots,
            weights,
        },
    ) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let failed = FromWorker::Done {
                id: 0,
                outcome: Err(e.clone()),
            };
            write_frame(&mut writer, &failed, MAX_FRAME).await?;
            anyhow::bail!("{e}");
        }
    };
    let context_tokens = match &backend {
        Backend::Text(generator) => generator.context_tokens(),
        Backend::Embed(_) | Backend::Classify(_) | Backend::Vision(_) | Backend::Speech(_) => 0,
    };
    tracing::info!(model = %plan.model, kernels = %kernels.variant, engine = backend.engine(), slots, "worker ready");
    let loaded = FromWorker::Loaded(Ready {
        slots,
        context_tokens,
        engine: backend.engine().to_owned(),
        weights,
        kernels: kernels.variant,
        lowest: kernels.lowest,
    });
    write_frame(&mut writer, &loaded, MAX_FRAME).await?;

    let (outgoing, mut queued) = mpsc::channel::<FromWorker>(OUTGOING);
    let writing = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if write_frame(&mut writer, &frame, MAX_FRAME).await.is_err() {
                break;
            }
        }
    });
    let backend = Arc::new(backend);
    // Each running request's cancel signal.
    let running: Arc<Mutex<HashMap<u64, Arc<Notify>>>> = Arc::default();
    loop {
        let order = match read_frame::<_, ToWorker>(&mut reader, MAX_FRAME).await {
            Ok(Some(order)) => order,
            // The node went away (or broke the protocol): nothing is left to serve.
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "worker: bad frame from the node");
                break;
            }
        };
        match order {
            ToWorker::Cancel { id } => {
                if let Some(cancel) = lock(&running).remove(&id) {
                    cancel.notify_one();
                }
            }
            ToWorker::Load { .. } => tracing::warn!("worker: a second load order is ignored"),
            request => {
                let id = request_id(&request);
                let cancel = Arc::new(Notify::new());
                lock(&running).insert(id, cancel.clone());
                let (backend, outgoing, done) =
                    (backend.clone(), outgoing.clone(), running.clone());
                tokio::spawn(async move {
                    let outcome = serve(backend, request, &outgoing, &cancel).await;
                    lock(&done).remove(&id);
                    let _ = outgoing.send(FromWorker::Done { id, outcome }).await;
                });
            }
        }
    }
    writing.abort();
    Ok(())
}

fn request_id(order: &ToWorker) -> u64 {
    match order {
        ToWorker::Count { id, .. }
        | ToWorker::Generate { id, .. }
        | ToWorker::Whole { id, .. }
        | ToWorker::Cancel { id } => *id,
        ToWorker::Load { .. } => 0,
    }
}

/// Runs one request. Cancelling a generation drops its pieces' receiver, which the engine
/// notices at its next step: it lets the sequence go and the request ends `cancelled`.
async fn serve(
    backend: Arc<Backend>,
    order: ToWorker,
    outgoing: &mpsc::Sender<FromWorker>,
    cancel: &Notify,
) -> Result<Answer, BackendError> {
    match (&*backend, order) {
        (
            Backend::Text(generator),
            ToWorker::Count {
                messages,
                within_ms,
                ..
            },
        ) => generator
            .count_prompt_tokens(&messages, deadline_in(within_ms))
            .await
            .map(Answer::Counted),
        (
            Backend::Text(generator),
            ToWorker::Generate {
                id,
                messages,
                parameters,
                max_tokens,
                scope,
                resume,
                within_ms,
            },
        ) => {
            let arrived = Instant::now();
            let (deltas, mut pieces) = mpsc::channel(RESPONSE_BUFFER);
            let forward = async move {
                loop {
                    let frame = tokio::select! {
                        frame = pieces.recv() => frame,
                        () = cancel.notified() => None,
                    };
                    let Some(frame) = frame else { break };
                    if let ResponseFrame::Delta(piece) = frame {
                        let _ = outgoing.send(FromWorker::Delta { id, piece }).await;
                    }
                }
            };
            let sent = AtomicU32::new(0);
            let generate = async {
                let done = generator
                    .generate(
                        crate::inference::Chat {
                            messages: &messages,
                            parameters: &parameters,
                            max_tokens,
                            scope,
                            resume: resume.as_deref(),
                        },
                        deadline_in(within_ms),
                        &deltas,
                        &sent,
                    )
                    .await;
                drop(deltas);
                done
            };
            let (done, ()) = tokio::join!(generate, forward);
            let completion = done?;
            Ok(Answer::Generated {
                text: completion.text,
                finish_reason: completion.finish_reason,
                usage: completion.usage,
                first_token_after_ms: completion
                    .first_token_at
                    .map(|t| u64::try_from((t - arrived).as_millis()).unwrap_or(u64::MAX)),
                resumed_tokens: completion.resumed_tokens,
            })
        }
        (
            _,
            ToWorker::Whole {
                input, within_ms, ..
            },
        ) => {
            // A model that works in steps (speech) stops at the deadline; the node bounds the
            // wait for the others (it kills a worker hung past the deadline's grace).
            let deadline = deadline_in(within_ms);
            let (output, tokens) = backend.clone().whole(input, deadline).await?;
            Ok(Answer::Whole(output, tokens))
        }
        _ => Err(BackendError::Run(
            "this worker's model does not take that request".into(),
        )),
    }
}
