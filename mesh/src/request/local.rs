//! Stage 2: run on this node's model host, when it hosts the model and has room, relaying the
//! host's frames to the requester.

use std::time::{Duration, Instant};

use ganglion_client::protocol::{ErrorCode, ResponseFrame, WireError};
use tokio::sync::mpsc;

use super::admit::Admitted;
use super::{Context, Responder};
use crate::actors::model_host::{Job, RESPONSE_BUFFER};

/// How long past the deadline the relay waits for a host's last frame.
const RELAY_GRACE: Duration = Duration::from_secs(15);

/// How the local stage ended.
#[derive(Debug)]
pub enum Outcome {
    /// The request ran here; the requester has its answer (or left).
    Answered,
    /// The model is not served here now.
    NotHosted,
    /// The host could not take it now (full, or restarting): try peers.
    Refused(WireError),
    /// The host refused the request for good.
    Failed(WireError),
}

/// Submits the request to the local host of its model, if any, and relays the answer.
pub async fn run(ctx: &Context, admitted: &Admitted, out: &mut impl Responder) -> Outcome {
    let Some(host) = ctx.hosts.get(&admitted.request.model) else {
        return Outcome::NotHosted;
    };
    let (frames, receiver) = mpsc::channel(RESPONSE_BUFFER);
    let job = Job {
        request: admitted.request.clone(),
        received: admitted.received,
        deadline: admitted.deadline,
        frames,
    };
    match host.submit(job).await {
        Ok(()) => {
            ctx.router.ran_locally(&admitted.request.model);
            match relay(receiver, admitted.deadline, out).await {
                Some(lost) => Outcome::Refused(lost),
                None => Outcome::Answered,
            }
        }
        Err(e) if e.code == ErrorCode::Overloaded || e.code == ErrorCode::Unavailable => {
            Outcome::Refused(e)
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// Writes the host's frames to the requester until the last one. When the requester goes
/// away (or cannot be written to in time), the receiver is dropped, which cancels the job.
/// A host that stops without a last frame is reported as an error, never a silent end.
/// An `unavailable` before any output (the model's engine died under the request) is not
/// written but returned, so that the request can be handed to a peer.
async fn relay(
    mut frames: mpsc::Receiver<ResponseFrame>,
    deadline: Instant,
    out: &mut impl Responder,
) -> Option<WireError> {
    let mut first = true;
    let gone = out.gone();
    tokio::pin!(gone);
    // The job ends itself at its deadline; this only guards against a host that never does.
    let give_up = tokio::time::sleep_until((deadline + RELAY_GRACE).into());
    tokio::pin!(give_up);
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            () = &mut gone => {
                tracing::info!("requester went away; request cancelled");
                return None;
            }
            () = &mut give_up => Some(ResponseFrame::Error(WireError::new(
                ErrorCode::DeadlineExceeded,
                "the model host did not answer by the deadline",
            ))),
        };
        let frame = frame.unwrap_or_else(|| {
            ResponseFrame::Error(WireError::new(
                ErrorCode::Internal,
                "the model host stopped before answering",
            ))
        });
        if let ResponseFrame::Error(e) = &frame
            && first
            && e.code == ErrorCode::Unavailable
        {
            return Some(e.clone());
        }
        first = false;
        let last = !matches!(frame, ResponseFrame::Delta(_));
        if out.send(frame).await.is_err() {
            tracing::info!("requester stream closed or too slow; request cancelled");
            return None;
        }
        if last {
            return None;
        }
    }
}
