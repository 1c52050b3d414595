//! What both chat engines share between them and the requester: text handed on without ever
//! waiting, a bound on tokenizing tasks that may outlive their request, and how long a dropped
//! sequence may take to leave its engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ganglion_client::protocol::ResponseFrame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::BackendError;

/// Longest a dropped sequence may take to leave its engine before its slot is freed anyway (a
/// step of a small model takes milliseconds; this only guards against an engine bug).
pub const CANCEL_SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Frames a request's response buffer holds: deltas wait here while the requester's stream is
/// written. A requester that falls this far behind is cancelled rather than allowed to hold
/// the model (at 60 tokens a second, about four seconds of output).
pub const RESPONSE_BUFFER: usize = 256;

/// Tokenizing tasks a model runs at once (each may outlive the request that started it).
const TOKENIZING_AT_ONCE: usize = 4;

/// Puts `piece` into the requester's buffer without waiting, and counts it in `sent`. A full
/// buffer (the requester reads too slowly) or a closed one (it went away) ends the request.
pub fn pass_on(
    deltas: &mpsc::Sender<ResponseFrame>,
    sent: &AtomicU32,
    piece: String,
) -> Result<(), BackendError> {
    deltas
        .try_send(ResponseFrame::Delta(piece))
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BackendError::SlowConsumer,
            mpsc::error::TrySendError::Closed(_) => BackendError::Cancelled,
        })?;
    sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Bounds the tokenizing tasks of one model: a task keeps its permit until it ends, even after
/// its request's deadline, so requests with short deadlines cannot pile up tokenizer work.
#[derive(Debug, Clone)]
pub struct Tokenizing(Arc<Semaphore>);

impl Default for Tokenizing {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(TOKENIZING_AT_ONCE)))
    }
}

impl Tokenizing {
    /// A permit, waited for until `deadline` at most.
    pub async fn permit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, BackendError> {
        tokio::time::timeout_at(deadline.into(), self.0.clone().acquire_owned())
            .await
            .map_err(|_| BackendError::DeadlineExceeded)?
            .map_err(|_| BackendError::Run("tokenizer closed".into()))
    }
}
