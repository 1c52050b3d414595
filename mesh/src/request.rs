//! The way every inference request takes through a node, one stage per module, in order:
//!
//! 1. [`admit`]: bounds, catalog, path and hop budget, the request's deadline;
//! 2. [`authenticate`]: the account, from the client's API key or the handing peer;
//! 3. [`cache`] (entry node only): a hit is answered here and ends the request; a miss runs
//!    on, and its answer is stored as it passes;
//! 4. [`quota`]: the charge id, and a hold on the most the request could cost;
//! 5. [`local`]: run on this node's model host when it hosts the model and has room (the
//!    executing node charges the request in its ledger before the final frame leaves);
//! 6. [`handoff`]: otherwise hand it to the best peers that host it, one after another until
//!    one answers, before any output;
//!
//! each stage relaying the answer to the requester through a [`Responder`]. Nothing here
//! knows which door (QUIC data plane, or a later HTTP API) the request came through: the door
//! supplies the [`Responder`].

pub mod admit;
pub mod authenticate;
pub mod cache;
pub mod handoff;
pub mod listing;
pub mod local;
pub mod observed;
pub mod quota;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::protocol::{Attempt, ErrorCode, Input, Request, ResponseFrame, WireError};

use crate::actors::model_host::LocalModels;
use crate::actors::router::RouterHandle;
use crate::models::Catalog;

/// Deadlines the node grants.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of a request that names none.
    pub default_deadline: Duration,
    /// Longest deadline a request may ask for; longer ones are cut to it.
    pub max_deadline: Duration,
}

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
    /// Peers (to reach an account's home node, or a cache shard).
    pub directory: crate::actors::peer_directory::PeerDirectoryHandle,
    /// The result cache.
    pub cache: cache::Settings,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Nodes in the mesh as the peer directory last counted them (this one included): a quota
    /// decided without a peer view uses the share of the limit over them.
    pub mesh_size: Arc<std::sync::atomic::AtomicUsize>,
}

/// Who sent a request to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client (entry node): its path and hop budget are not trusted.
    Client,
    /// A peer handing the request over, by its certificate name.
    Peer(String),
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
}

/// Runs one inference request through every stage, answering on `out`.
pub async fn run(
    ctx: &Context,
    origin: Origin,
    request: Request,
    received: Instant,
    out: &mut impl Responder,
) {
    // Counted where it entered, under its model's name only if the catalog knows it (a client
    // cannot mint label values).
    let label = if ctx.catalog.get(&request.model).is_some() {
        request.model.as_str()
    } else {
        "unknown"
    };
    let metrics = (origin == Origin::Client).then(|| ctx.metrics.clone());
    let out = &mut observed::Observed::new(out, metrics, request.id, label, &ctx.node);
    let mut admitted = match admit::admit(
        &ctx.node,
        &ctx.catalog,
        ctx.limits,
        &origin,
        request,
        received,
    ) {
        Ok(admitted) => admitted,
        Err(error) => return fail(out, error).await,
    };
    let now = crate::metering::unix_now();
    if let Err(error) = authenticate::authenticate(&ctx.auth, &origin, &mut admitted.request, now) {
        return fail(out, error).await;
    }
    out.account(admitted.request.account.as_ref());
    let Some(spec) = ctx.catalog.get(&admitted.request.model) else {
        let error = WireError::new(ErrorCode::UnknownModel, "model left the catalog");
        return fail(out, error).await;
    };
    if origin == Origin::Client
        && matches!(admitted.request.input, Input::Chat(_))
        && admitted.request.parameters.max_tokens.is_none()
    {
        // The entry node's default holds along the whole path, so the answer matches the
        // cache key and the quota hold it was given.
        admitted.request.parameters.max_tokens = Some(spec.default_max_tokens);
    }
    let filler = match origin {
        Origin::Client => match cache::begin(ctx, &admitted, spec, out).await {
            cache::Began::Answered => return,
            cache::Began::Run(filler) => Some(filler),
        },
        Origin::Peer(_) => None,
    };
    let out = &mut cache::Filling { inner: out, filler };
    let hold = match quota::reserve(ctx, spec, &origin, &mut admitted.request, now).await {
        Ok(hold) => hold,
        Err(error) => return fail(out, error).await,
    };
    let out = &mut quota::Watched::new(out, hold);
    let mut attempts = Vec::new();
    match local::run(ctx, &admitted, out).await {
        local::Outcome::Answered => return,
        local::Outcome::NotHosted => {}
        local::Outcome::Refused(error) => attempts.push(Attempt {
            node: ctx.node.clone(),
            code: error.code,
            reason: error.message,
        }),
        local::Outcome::Failed(error) => return fail(out, error).await,
    }
    handoff::run(ctx, &admitted, attempts, out).await;
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
