//! Stage 6: hand the request to the best peers that host its model, one after another until
//! one answers, before any output; relay that peer's answer, adding this node to its route.
//!
//! Every wait on the peer is bounded: opening the stream and sending the request by
//! [`peer::handoff::OPEN_TIMEOUT`], every response frame by the request's deadline.

use std::time::Instant;

use ganglion_client::protocol::{
    Attempt, ErrorCode, Input, MAX_MOVES, MAX_RESUME_BYTES, Request, ResponseFrame, Resume,
    WireError,
};
use tracing::Instrument;

use super::admit::Admitted;
use super::{Context, Flow, Responder, fail, final_frame, retryable};
use crate::actors::router::Target;
use crate::peer;
use crate::routing::prefix::Prefix;

/// Hands the request to peers in the router's order (by `prefix` too, when it has one); its
/// attempts hold why this node (or earlier candidates) did not serve it. Goes on, with why,
/// when no peer took it before any output (the attempts then hold every refusal): the request
/// is still unanswered.
pub async fn try_peers(
    ctx: &Context,
    admitted: &mut Admitted<'_>,
    out: &mut impl Responder,
    prefix: Option<Prefix>,
    peers: Peers,
) -> Flow<String> {
    let request = &admitted.request;
    let route_text = request.path.join(" → ");
    if request.hop_budget == 0 {
        return Flow::Next(format!("the hop budget is exhausted (path {route_text})"));
    }
    let peers_first = matches!(peers, Peers::Before(_));
    let targets = match peers {
        Peers::Before(targets) => targets,
        Peers::All => match ctx
            .router
            .plan(&request.model, &request.path, request.hop_budget, prefix)
            .await
        {
            Ok(targets) => targets,
            Err(e) => return Flow::Next(format!("cannot place it: {e}")),
        },
    };
    if targets.is_empty() {
        return Flow::Next(if request.path.len() > 1 {
            format!("no reachable peer off the request's path ({route_text}) hosts it")
        } else {
            "no reachable peer hosts it".to_owned()
        });
    }
    // Placement ran while the reservation was under way; no peer is sent the request before
    // its hold is in place.
    if let Err(error) = out.before_work().await {
        fail(out, error).await;
        return Flow::Ended;
    }
    let mut attempts = std::mem::take(&mut admitted.attempts);
    let request = &admitted.request;
    // A generation whose executor was lost mid-stream (here, or before it reached this node),
    // continued by the next candidate.
    let mut resume: Option<Resume> = request.resume.clone();
    for target in targets {
        let left = admitted.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let error = WireError::new(
                ErrorCode::DeadlineExceeded,
                "deadline passed before a node could take the request",
            );
            fail(out, error).await;
            return Flow::Ended;
        }
        let mut handed = request.clone();
        handed.resume.clone_from(&resume);
        handed.hop_budget -= 1;
        handed.deadline_ms = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        let mut underway = Underway::start(ctx, &request.model, &target.name);
        let span = tracing::info_span!("handoff", peer = %target.name);
        let outcome = hand_to(ctx, &target, &handed, admitted, &attempts, out)
            .instrument(span)
            .await;
        // Before any output, a peer tried first for a prefix leaves the request to this
        // node's own host, whatever went wrong there: a refusal.
        let outcome = match outcome {
            Handoff::Failed(error) if peers_first && !error.partial && resume.is_none() => {
                Handoff::Refused(error)
            }
            other => other,
        };
        match outcome {
            Handoff::Served | Handoff::Cancelled => return Flow::Ended,
            Handoff::Lost { sent, why } => {
                underway.failed();
                let (mut text, moves) = resume
                    .take()
                    .map_or((String::new(), 0), |r| (r.text, r.moves));
                text.push_str(&sent);
                if moves >= MAX_MOVES || text.len() > MAX_RESUME_BYTES {
                    drop(underway);
                    let error = WireError::partial(
                        ErrorCode::PeerLost,
                        format!(
                            "node `{}` was lost after output had started ({why}); the generation had moved {moves} time(s) already or is too long to move",
                            target.name
                        ),
                    );
                    fail(out, error).await;
                    return Flow::Ended;
                }
                tracing::warn!(peer = %target.name, reason = %why, "executor lost mid-stream; its generation moves to the next candidate");
                resume = Some(Resume {
                    text,
                    from: target.name.clone(),
                    moves: moves + 1,
                });
            }
            Handoff::Refused(error) => {
                tracing::info!(peer = %target.name, code = %error.code, reason = %error.message, "handoff refused before output; trying the next candidate");
                underway.failed();
                attempts.push(Attempt {
                    node: target.name.clone(),
                    code: error.code,
                    reason: crate::metrics::recent::short(&error.message),
                });
            }
            Handoff::Failed(error) => {
                underway.failed();
                drop(underway);
                fail(out, error).await;
                return Flow::Ended;
            }
        }
    }
    if let Some(resume) = resume.filter(|r| Some(r) != request.resume.as_ref()) {
        if peers_first {
            // Peers came before this node's own host: it continues the generation.
            admitted.request.resume = Some(resume);
            admitted.attempts = attempts;
            return Flow::Next("the peers that took it were lost mid-stream".to_owned());
        }
        // Text reached the requester from here: no other stage may answer now.
        let error = WireError::partial(
            ErrorCode::PeerLost,
            format!(
                "node `{}` was lost after output had started, and no other candidate could continue it",
                resume.from
            ),
        );
        fail(out, error).await;
        return Flow::Ended;
    }
    admitted.attempts = attempts;
    Flow::Next("every candidate failed".to_owned())
}

/// Which peers a request is handed to.
#[derive(Debug, Clone)]
pub enum Peers {
    /// Every candidate the router ranks, best first: this node cannot serve the request.
    All,
    /// These, placed before this node's own host for the request's prefix
    /// (`affinity::peers_first`); when none takes the request before output, it comes back to
    /// this node.
    Before(Vec<Target>),
}

/// A handoff the router counts as outstanding until this is dropped, however the request ends
/// (including its task being aborted when the requester's connection goes).
struct Underway<'a> {
    ctx: &'a Context,
    peer: &'a str,
    ok: bool,
}

impl<'a> Underway<'a> {
    fn start(ctx: &'a Context, model: &str, peer: &'a str) -> Self {
        ctx.router.forwarded(model, peer);
        Self {
            ctx,
            peer,
            ok: true,
        }
    }

    /// The peer failed this request.
    fn failed(&mut self) {
        self.ok = false;
    }
}

impl Drop for Underway<'_> {
    fn drop(&mut self) {
        self.ctx.router.ended(self.peer, self.ok);
    }
}

/// How a handoff to one peer ended.
enum Handoff {
    /// The final response was relayed.
    Served,
    /// The requester went away; the handoff was dropped, cancelling it downstream.
    Cancelled,
    /// The peer could not take it, before any output: try the next candidate.
    Refused(WireError),
    /// The peer was lost after it had sent `sent` (a generation's text, all of which reached
    /// the requester): the next candidate continues it.
    Lost {
        /// The text relayed from it.
        sent: String,
        /// What was lost.
        why: String,
    },
    /// It failed for good (after output had started, or with an error no other node would
    /// avoid).
    Failed(WireError),
}

/// Hands `request` to `target` over a data stream of the peer connection and relays its
/// answer, adding this node to the route of the final response.
async fn hand_to(
    ctx: &Context,
    target: &Target,
    request: &Request,
    admitted: &Admitted<'_>,
    attempts: &[Attempt],
    out: &mut impl Responder,
) -> Handoff {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Handoff::Refused(WireError::new(
            ErrorCode::Unavailable,
            format!("{what}: {e}"),
        ))
    };
    let (_peer_send, mut peer_recv) = match peer::handoff::open(&target.connection, request).await {
        Ok(streams) => streams,
        Err(e) => return unavailable("cannot open a stream", &e),
    };
    // Dropping `peer_recv` unread would leave the peer writing into flow control until its
    // own timeout; it is stopped explicitly whenever this node gives up on it.
    let abandon = peer::handoff::abandon;
    let gone = out.gone();
    tokio::pin!(gone);
    let mut first_output: Option<Instant> = None;
    // The text relayed so far (bounded: past the most a move carries, it is not kept).
    let mut relayed = String::new();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(
                admitted.deadline.into(),
                peer::handoff::next(&mut peer_recv),
            ) => next,
            () = &mut gone => {
                abandon(&mut peer_recv);
                return Handoff::Cancelled;
            }
        };
        // An answer without deltas (embeddings, labels) is complete when the node charges it:
        // once the request reached such a node, losing it may mean its final frame was lost
        // after the charge, so it is not run again elsewhere (that would charge it twice).
        let answers_at_once = matches!(
            request.input,
            Input::Embed(_) | Input::Classify(_) | Input::Image(_) | Input::Audio(_)
        );
        // `gone`: the connection or stream was lost (the node is gone, or cut off), as opposed
        // to a node that answered wrongly (it may have charged: that answer is not run again).
        let mut lost = |why: String, gone: bool| match first_output {
            None if answers_at_once => Handoff::Failed(WireError::new(
                ErrorCode::PeerLost,
                format!(
                    "node `{}` was lost while running the request (not retried elsewhere, so as not to charge it twice): {why}",
                    target.name
                ),
            )),
            None => Handoff::Refused(WireError::new(
                ErrorCode::Unavailable,
                format!("connection lost: {why}"),
            )),
            // A generation the lost node had started moves on: the next candidate continues
            // from the text the requester has. The lost node charged nothing (it never reached
            // its final frame); the node that finishes charges the whole answer.
            Some(_)
                if gone
                    && matches!(request.input, Input::Chat(_))
                    && relayed.len() <= MAX_RESUME_BYTES =>
            {
                Handoff::Lost {
                    sent: std::mem::take(&mut relayed),
                    why,
                }
            }
            Some(_) => Handoff::Failed(WireError::partial(
                ErrorCode::PeerLost,
                format!(
                    "node `{}` was lost after output had started: {why}",
                    target.name
                ),
            )),
        };
        let next = match next {
            Ok(next) => next,
            Err(_) => {
                abandon(&mut peer_recv);
                return Handoff::Failed(WireError {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("node `{}` did not answer by the deadline", target.name),
                    partial: first_output.is_some(),
                });
            }
        };
        match next {
            Ok(Some(ResponseFrame::Delta(text))) => {
                first_output.get_or_insert_with(Instant::now);
                if relayed.len() <= MAX_RESUME_BYTES {
                    relayed.push_str(&text);
                }
                if out.send(ResponseFrame::Delta(text)).await.is_err() {
                    abandon(&mut peer_recv);
                    return Handoff::Cancelled;
                }
            }
            Ok(Some(ResponseFrame::Final(response))) if !response.route.within_bounds() => {
                abandon(&mut peer_recv);
                return lost("its answer's route is out of bounds".to_owned(), false);
            }
            Ok(Some(ResponseFrame::Final(response)))
                if !response.output.answers(&admitted.request.input) =>
            {
                abandon(&mut peer_recv);
                return lost("its answer does not fit the request".to_owned(), false);
            }
            Ok(Some(ResponseFrame::Final(response))) => {
                let response =
                    final_frame::passed_on(response, &ctx.node, admitted, attempts, first_output);
                let _ = out.send(ResponseFrame::Final(response)).await;
                return Handoff::Served;
            }
            Ok(Some(ResponseFrame::Error(error)))
                if first_output.is_none() && retryable(error.code) =>
            {
                return Handoff::Refused(error);
            }
            Ok(Some(ResponseFrame::Error(error))) => return Handoff::Failed(error),
            Ok(Some(_)) => {
                abandon(&mut peer_recv);
                return lost("unexpected frame".to_owned(), false);
            }
            Ok(None) => return lost("the stream ended without an answer".to_owned(), true),
            Err(e) => return lost(e.to_string(), true),
        }
    }
}
