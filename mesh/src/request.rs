//! The way every inference request takes through a node, one stage per module, in order:
//!
//! 1. [`admit`]: bounds, the model's catalog entry, path and hop budget, the request's
//!    deadline, and the model's default `max_tokens`;
//! 2. [`authenticate`]: the account, from the client's API key or the handing peer;
//! 3. [`cache`] (entry node only): a hit is answered here and ends the request; a miss runs
//!    on, and its answer is stored as it passes;
//! 4. [`quota`]: the charge id, and a hold on the most the request could cost, released with
//!    the charge as the final frame passes. The hold is asked for here and answered while the
//!    next stages place the request; they wait for it ([`Responder::before_work`]) just before
//!    a model or a peer is given the request;
//! 5. [`local`]: run on this node's model host when it hosts the model and has room (at the
//!    entry node, after the peers when [`affinity`] finds one holding the chat's prefix);
//! 6. [`handoff`]: otherwise hand it to the best peers that host it, one after another until
//!    one answers, before any output;
//! 7. [`charge`]: on the node that ran the model (this one after stage 5, or the peer of
//!    stage 6 after its own stage 5), once the work has stopped: price what ran, record it in
//!    the ledger, then make the final frame, so that it never leaves without its record.
//!
//! Before them, at the entry node, [`fallback`] runs a request that names fallback models with
//! each in turn until one answers.
//!
//! Stage 1 makes the state the others share ([`admit::Admitted`]: the request, its catalog
//! entry, its times, what the cache did, the nodes that did not serve it). Stages 2 to 6 have
//! one shape, `run(ctx, &mut admitted, out)`: stages 2 to 5 return a [`Flow`], going on with
//! what they leave for the rest (a cache lease, a quota hold) or ending the request, having
//! sent its last frame themselves; stage 6, the last, returns nothing. Stage 7 runs in the
//! model host's task, which owns the work, so that a requester that leaves cannot make the
//! work free. The final frame is made in one place ([`final_frame`]).
//!
//! Each stage relays the answer to the requester through a [`Responder`]. Nothing here
//! knows which door (QUIC data plane, or a later HTTP API) the request came through: the door
//! supplies the [`Responder`].

pub mod admit;
pub mod affinity;
pub mod authenticate;
pub mod cache;
pub mod charge;
pub mod fallback;
pub mod final_frame;
pub mod handoff;
pub mod listing;
pub mod local;
pub mod observed;
pub mod quota;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::protocol::{Attempt, ErrorCode, Request, ResponseFrame, WireError};

use crate::actors::model_host::LocalModels;
use crate::actors::router::RouterHandle;
use crate::config::requests::Limits;
use crate::models::Catalog;

/// What every stage needs: who this node is and handles to its actors.
#[derive(Debug, Clone)]
pub struct Context {
    /// This node's name.
    pub node: String,
    /// The model catalog.
    pub catalog: Arc<Catalog>,
    /// This node's model hosts.
    pub hosts: LocalModels,
    /// Placement among peers.
    pub router: RouterHandle,
    /// Deadlines.
    pub limits: Limits,
    /// API keys.
    pub auth: authenticate::Auth,
    /// Neurons: reservations and counters.
    pub meter: crate::actors::meter::MeterHandle,
    /// This node's ledger, where the charge stage records what ran here.
    pub ledger: crate::metering::ledger::LedgerWriter,
    /// Peers (to reach an account's home node, or a cache shard).
    pub directory: crate::actors::peer_directory::PeerDirectoryHandle,
    /// The result cache.
    pub cache: cache::Settings,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Nodes in the mesh as the peer directory last counted them (this one included): a quota
    /// decided without a peer view uses the share of the limit over them.
    pub mesh_size: Arc<std::sync::atomic::AtomicUsize>,
    /// Regions the peer directory last knew of: each region's home grants its share of a daily
    /// limit.
    pub regions: Arc<std::sync::atomic::AtomicUsize>,
}

/// Who sent a request to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client (entry node): its path and hop budget are not trusted.
    Client,
    /// A peer handing the request over, by its certificate name.
    Peer(String),
}

/// How a stage ended.
#[must_use]
#[derive(Debug)]
pub enum Flow<T = ()> {
    /// The request goes on to the next stage, with what this one leaves it.
    Next(T),
    /// The request ended here: the stage sent its last frame (an answer or an error), or the
    /// requester left.
    Ended,
}

/// The requester went away, stopped its stream, or read too slowly; the request must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Where a request's response frames go.
pub trait Responder: Send {
    /// Sends one frame, within the door's write timeout; a last frame (final or error) ends
    /// the response. `Err` means the requester is gone and the request must be cancelled.
    fn send(&mut self, frame: ResponseFrame) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Resolves when the requester goes away (so that work can stop before the next write).
    fn gone(&self) -> impl Future<Output = ()> + Send + 'static;

    /// The cache stage decided what the cache does for this request, before any frame (a door
    /// that sends headers before the body, as HTTP does, can say it there).
    fn cache_decided(&mut self, _report: &ganglion_client::protocol::CacheReport) {}

    /// Resolves once work may start for the request (its quota hold is in place, see
    /// [`quota::Watched`]), or with why it may not; stages call it just before a model or a
    /// peer is given the request.
    fn before_work(&mut self) -> impl Future<Output = Result<(), WireError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Runs one inference request through every stage, answering on `out`; a client's request
/// that names fallback models runs with each in turn until one answers ([`fallback`]).
pub async fn run(
    ctx: &Context,
    origin: Origin,
    request: Request,
    received: Instant,
    out: &mut impl Responder,
) {
    let falls_back = origin == Origin::Client
        && !request.fallbacks.is_empty()
        && ganglion_client::protocol::validate(&request).is_ok();
    if falls_back {
        fallback::run(ctx, request, received, out).await;
    } else {
        run_model(ctx, origin, request, received, out).await;
    }
}

/// Runs one inference request, with its own model, through every stage.
async fn run_model(
    ctx: &Context,
    origin: Origin,
    request: Request,
    received: Instant,
    out: &mut impl Responder,
) {
    // The request's one catalog lookup: admission refuses a model the catalog does not know,
    // and the later stages read the entry it admitted. The request is counted where it
    // entered, under its model's name only if the catalog knows it (a client cannot mint
    // label values).
    let spec = ctx.catalog.get(&request.model);
    let label = spec.map_or("unknown", |spec| spec.id.as_str());
    let metrics = (origin == Origin::Client).then(|| ctx.metrics.clone());
    let out = &mut observed::Observed::new(out, metrics, request.id, label, &ctx.node);
    let now = crate::metering::unix_now();
    let admitted = admit::admit(&ctx.node, spec, ctx.limits, origin, request, received, now);
    let mut admitted = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return fail(out, error).await,
    };
    let Flow::Next(()) = authenticate::run(ctx, &mut admitted, out).await else {
        return;
    };
    out.account(admitted.request.account.as_ref());
    let Flow::Next(fill) = cache::run(ctx, &mut admitted, out).await else {
        return;
    };
    let out = &mut cache::Filling { inner: out, fill };
    let Flow::Next(reserving) = quota::run(ctx, &mut admitted, out).await else {
        return;
    };
    let out = &mut quota::Watched::new(out, reserving);
    let prefix = ctx
        .limits
        .prefix_affinity
        .then(|| affinity::prefix_of(&admitted))
        .flatten();
    let first = match &prefix {
        Some(prefix) => affinity::peers_first(ctx, &admitted, prefix).await,
        None => None,
    };
    if let Some(first) = first {
        let peers = handoff::Peers::Before(first);
        let Flow::Next(_) = handoff::try_peers(ctx, &mut admitted, out, prefix, peers).await else {
            return;
        };
        let Flow::Next(()) = local::run(ctx, &mut admitted, out).await else {
            return;
        };
        let error = match &admitted.request.resume {
            // Text reached the requester from a peer that was lost, and this node could not
            // continue it either.
            Some(resume) => WireError::partial(
                ErrorCode::PeerLost,
                format!(
                    "node `{}` was lost after output had started, and this node could not continue it",
                    resume.from
                ),
            ),
            None => unserved(
                &admitted.request.model,
                &admitted.attempts,
                "neither a peer nor this node could take it",
            ),
        };
        return fail(out, error).await;
    }
    let Flow::Next(()) = local::run(ctx, &mut admitted, out).await else {
        return;
    };
    let peers = handoff::Peers::All;
    if let Flow::Next(why) = handoff::try_peers(ctx, &mut admitted, out, prefix, peers).await {
        fail(
            out,
            unserved(&admitted.request.model, &admitted.attempts, &why),
        )
        .await;
    }
}

/// Answers with an error as the last frame (if the requester is still there).
pub(crate) async fn fail(out: &mut impl Responder, error: WireError) {
    let _ = out.send(ResponseFrame::Error(error)).await;
}

/// The error when no node could take a request: `overloaded` if some host was merely full,
/// otherwise `unavailable`; the message names the model, why, and every attempt.
pub(crate) fn unserved(model: &str, attempts: &[Attempt], why: &str) -> WireError {
    let code = if attempts.iter().any(|a| a.code == ErrorCode::Overloaded) {
        ErrorCode::Overloaded
    } else {
        ErrorCode::Unavailable
    };
    let mut message = format!("model `{model}` is not available: {why}");
    if !attempts.is_empty() {
        let tried: Vec<String> = attempts
            .iter()
            .map(|a| format!("{}: {}", a.node, a.reason))
            .collect();
        message.push_str(&format!("; tried {}", tried.join("; ")));
    }
    WireError::new(code, message)
}

/// Errors another node might not hit, so worth trying the next candidate for (before output).
pub(crate) fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Overloaded | ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::PeerLost
    )
}

/// Milliseconds of a duration, as the wire reports times.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(code: ErrorCode, reason: &str) -> Attempt {
        Attempt {
            node: "n".into(),
            code,
            reason: reason.into(),
        }
    }

    #[test]
    fn unserved_is_classified_by_code_not_by_message() {
        // A message that happens to say "capacity" does not make a failure `overloaded`...
        let e = unserved(
            "m",
            &[attempt(ErrorCode::Unavailable, "capacity planning")],
            "x",
        );
        assert_eq!(e.code, ErrorCode::Unavailable);
        // ...and a full host is `overloaded` whatever its message says.
        let e = unserved("m", &[attempt(ErrorCode::Overloaded, "busy")], "x");
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(e.message.contains("n: busy"));
        assert_eq!(unserved("m", &[], "x").code, ErrorCode::Unavailable);
    }
}
