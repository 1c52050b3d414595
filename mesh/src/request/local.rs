//! Stage 5: run on this node's model host, when it hosts the model and has room, relaying the
//! host's frames to the requester. The job carries the request's [`Bill`]: once the model's
//! work has stopped, stage 7 ([`super::charge`]) charges what ran and makes the last frame,
//! in the host's task, whether or not the requester is still there.
//! A host that is full or restarting leaves the request to the next stage (its reason kept
//! among the request's attempts).

use std::time::{Duration, Instant};

use ganglion_client::protocol::{Attempt, ErrorCode, ResponseFrame, WireError};
use tokio::sync::mpsc;

use super::admit::Admitted;
use super::charge::Bill;
use super::{Context, Flow, Responder, fail};
use crate::actors::model_host::{Job, RESPONSE_BUFFER};

/// How long past the deadline the relay waits for a host's last frame.
const RELAY_GRACE: Duration = Duration::from_secs(15);

/// Submits the request to the local host of its model, if any, and relays the answer. Goes on
/// (to hand the request to a peer) when the model is not served here now, or the host could
/// not take it now (full, or restarting, or its engine lost before any output).
pub async fn run(ctx: &Context, admitted: &mut Admitted<'_>, out: &mut impl Responder) -> Flow {
    let Some(host) = ctx.hosts.get(&admitted.request.model) else {
        return Flow::Next(());
    };
    if let Err(error) = out.before_work().await {
        fail(out, error).await;
        return Flow::Ended;
    }
    let (frames, receiver) = mpsc::channel(RESPONSE_BUFFER);
    let job = Job {
        request: admitted.request.clone(),
        received: admitted.received,
        deadline: admitted.deadline,
        frames,
        settle: Bill::of(ctx, admitted).settle(),
    };
    let refused = match host.submit(job).await {
        Ok(()) => {
            ctx.router.ran_locally(&admitted.request.model);
            match relay(receiver, admitted.deadline, out).await {
                Some(lost) => lost,
                None => return Flow::Ended,
            }
        }
        Err(e) if e.code == ErrorCode::Overloaded || e.code == ErrorCode::Unavailable => e,
        Err(e) => {
            fail(out, e).await;
            return Flow::Ended;
        }
    };
    admitted.attempts.push(Attempt {
        node: ctx.node.clone(),
        code: refused.code,
        reason: refused.message,
    });
    Flow::Next(())
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
