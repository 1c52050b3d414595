//! Stage 4: can the account pay. The entry node gives the request its charge id and reserves
//! the most it could cost (its model's flat price, or prompt tokens × input rate + `max_tokens`
//! × output rate) against what the account has left today, mesh-wide, at the account's home
//! node ([`crate::metering::home`]), which decides for every request of that account wherever
//! it enters; over the limit, nothing runs (`quota_exceeded`, with what was used, the limit and
//! when it resets). The hold lasts until the request ends; a charge made on a node other than
//! the home then keeps counting until that node's adverts carry it. A request that ended
//! without an answer after work may have run leaves its hold lingering at the home until that
//! charge can have arrived ([`Watched`]). If the home cannot be reached in time, or this node's
//! peer directory does not answer, the entry node decides alone within its share of the limit
//! (logged: the mesh-wide bound then loosens).
//! A request handed over by a peer was reserved at its entry node.
//!
//! The reservation is asked for at once, on a task of its own, and the request goes on while
//! its answer travels: the next stages plan where it runs, and wait for the hold
//! ([`Responder::before_work`], answered by [`Watched`]) only where work would start (before the
//! local host takes the job, before a peer is sent the request). A home on another node then
//! costs the request the longer of its round trip and the placement, not their sum. Nothing
//! runs without the hold; a hold that arrives for a request that ended first is dropped, which
//! releases it.

use std::sync::atomic::Ordering;

use ganglion_client::protocol::{ErrorCode, Input, Request, ResponseFrame, WireError};

use tokio::task::JoinHandle;

use super::admit::Admitted;
use super::{Context, Flow, Gone, Origin, Responder, fail};
use crate::actors::meter::{Hold, MeterHandle, ReserveError};
use crate::actors::peer_directory::PeerDirectoryHandle;
use crate::metering::{home, neurons_text, pricing, usage};
use crate::models::ModelSpec;
use crate::peer::quota::QuotaRequest;

/// Tokens the chat template may add per message, on top of one token per byte of content (a
/// safe upper bound for any tokenizer: a token covers at least one byte).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;

/// A client's request's reservation, asked for and not yet answered.
#[derive(Debug)]
pub struct Reserving(JoinHandle<Result<Hold, WireError>>);

/// Gives a client's request its charge id and starts holding what it could cost; goes on with
/// the reservation under way, for the responder that waits for it and releases it (`None` for
/// a handed-over request: its entry node holds the reservation), or answers why not.
pub async fn run(
    ctx: &Context,
    admitted: &mut Admitted<'_>,
    out: &mut impl Responder,
) -> Flow<Option<Reserving>> {
    match reserve(ctx, admitted) {
        Ok(reserving) => Flow::Next(reserving),
        Err(error) => {
            fail(out, error).await;
            Flow::Ended
        }
    }
}

/// Gives the request its charge id and starts reserving what it could cost; `None` for a
/// handed-over request (its entry node holds the reservation).
fn reserve(ctx: &Context, admitted: &mut Admitted<'_>) -> Result<Option<Reserving>, WireError> {
    let (spec, now) = (admitted.spec, admitted.now);
    let request = &mut admitted.request;
    if let Origin::Peer(peer) = &admitted.origin {
        if request.charge_id.is_none() {
            return Err(WireError::new(
                ErrorCode::InvalidInput,
                format!("a request handed over by `{peer}` must carry its charge id"),
            ));
        }
        return Ok(None);
    }
    let charge_id = rand::random();
    request.charge_id = Some(charge_id);
    let Some(account) = &request.account else {
        return Err(WireError::new(
            ErrorCode::Internal,
            "a request reached the quota without an account",
        ));
    };
    let day = usage::day_of(now);
    let regions = ctx.regions.load(Ordering::Relaxed).max(1);
    let limit = usage::regional_share(
        usage::daily_limit(account.plan, account.daily_limit),
        regions,
    );
    let most = max_cost(spec, request);
    let meters = Meters {
        node: ctx.node.clone(),
        meter: ctx.meter.clone(),
        directory: ctx.directory.clone(),
        mesh_size: ctx.mesh_size.load(Ordering::Relaxed),
    };
    let account = account.clone();
    let asked = async move {
        let reserved = reserve_at_home(&meters, &account.name, limit, day, most, charge_id).await;
        decided(&account, regions, most, reserved)
    };
    Ok(Some(Reserving(tokio::spawn(asked))))
}

/// What a reservation's answer means for the request: its hold, or why it may not run.
fn decided(
    account: &ganglion_client::protocol::Account,
    regions: usize,
    most: u64,
    reserved: Result<Hold, ReserveError>,
) -> Result<Hold, WireError> {
    match reserved {
        Ok(hold) => Ok(hold),
        Err(ReserveError::OverQuota(over)) => Err(WireError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "account `{}` has used {} of its {} Neurons today{} (this request could cost up to {}); it resets at {}",
                account.name,
                neurons_text(over.used),
                neurons_text(over.limit),
                if regions > 1 {
                    format!(
                        " in this region (its daily allocation is shared by the mesh's {regions} regions)"
                    )
                } else {
                    String::new()
                },
                neurons_text(most),
                usage::time_text(over.reset_at),
            ),
        )),
        Err(ReserveError::Meter(e)) => Err(WireError::new(
            ErrorCode::Unavailable,
            format!("the meter did not answer: {e}"),
        )),
        Err(ReserveError::Home(e)) => Err(WireError::new(
            ErrorCode::Unavailable,
            format!("the account's home node did not answer: {e}"),
        )),
    }
}

/// What a reservation needs of this node, owned by the task that asks for it.
struct Meters {
    node: String,
    meter: MeterHandle,
    directory: PeerDirectoryHandle,
    /// Nodes in the mesh as last counted (this one included).
    mesh_size: usize,
}

/// Reserves at the account's home node (this one, or a connected peer). When the home cannot
/// be asked, this node decides alone, but only within its share of the limit (the limit over
/// the number of nodes it knows), so that nodes cut off from the home together cannot spend
/// more than the allocation.
async fn reserve_at_home(
    ctx: &Meters,
    account: &str,
    limit: Option<u64>,
    day: usage::Day,
    max_cost: u64,
    charge_id: u128,
) -> Result<Hold, ReserveError> {
    let local = |meter: &MeterHandle, limit: Option<u64>| {
        let meter = meter.clone();
        async move {
            meter
                .reserve(account, limit, day, max_cost, charge_id)
                .await
        }
    };
    let peers = match ctx.directory.members().await {
        Ok(peers) => peers,
        Err(e) => {
            // Fail to the share, over the nodes last known: never to the whole limit.
            let nodes = ctx.mesh_size.max(1) as u64;
            tracing::warn!(error = %e, nodes, "no peer view; this node decides within its share");
            return local(&ctx.meter, limit.map(|l| l / nodes)).await;
        }
    };
    let share = limit.map(|l| l / (peers.len() as u64 + 1));
    let names = std::iter::once(ctx.node.as_str()).chain(peers.iter().map(|(n, _)| n.as_str()));
    let Some(home) = home::home_of(account, names).filter(|h| *h != ctx.node) else {
        return local(&ctx.meter, limit).await;
    };
    let Some((_, connection)) = peers.iter().find(|(n, _)| n == home) else {
        return local(&ctx.meter, share).await;
    };
    let request = QuotaRequest::Reserve {
        account: account.to_owned(),
        limit,
        day,
        max_cost,
        charge_id,
    };
    match MeterHandle::reserve_at(connection, request).await {
        Err(ReserveError::Home(e)) => {
            tracing::warn!(%home, error = %e, "the account's home node did not answer; this node decides within its share");
            local(&ctx.meter, share).await
        }
        decided => decided,
    }
}

/// The most `request` could cost under its model's rule.
pub fn max_cost(spec: &ModelSpec, request: &Request) -> u64 {
    let (prompt_tokens, items) = match &request.input {
        Input::Chat(messages) => (
            messages
                .iter()
                .map(|m| m.content.len() as u64 + TEMPLATE_TOKENS_PER_MESSAGE)
                .sum(),
            0,
        ),
        Input::Embed(texts) | Input::Classify(texts) => (
            texts.iter().map(|t| t.len() as u64 + 2).sum(),
            texts.len() as u64,
        ),
        // An image is one item; its megapixels are its tokens (at most 17).
        Input::Image(_) => (17, 1),
        // A recording is one item; its tokens are what Moonshine generates (about 6 a second).
        Input::Audio(_) => (400, 1),
        _ => (0, 0),
    };
    // Admission gave every chat request its `max_tokens`; the model's default otherwise.
    let max_tokens = match &request.input {
        Input::Chat(_) => u64::from(
            request
                .parameters
                .max_tokens
                .unwrap_or(spec.default_max_tokens),
        ),
        _ => 0,
    };
    pricing::max_cost(spec.pricing, prompt_tokens, max_tokens, items)
}

/// A responder that waits for the reservation before work starts ([`Responder::before_work`]),
/// tells the hold who charged the request and how much, as the final frame passes; or, when
/// the request ends otherwise after work may have run, keeps the hold at the home until that
/// work's charge arrives.
pub struct Watched<'a, R> {
    /// Where frames go.
    pub inner: &'a mut R,
    /// The reservation, until its answer is waited for.
    reserving: Option<Reserving>,
    /// The entry node's hold, if this node is the entry, until the final answer releases it
    /// (or, however else the request ends, until this is dropped).
    hold: Option<Hold>,
    /// A last frame passed (else the requester left before one could).
    ended: bool,
}

impl<'a, R> Watched<'a, R> {
    /// Watches the frames to `inner` for the reservation under way, if any.
    pub fn new(inner: &'a mut R, reserving: Option<Reserving>) -> Self {
        Self {
            inner,
            reserving,
            hold: None,
            ended: false,
        }
    }

    /// Waits for the reservation's answer, once: the hold, or why the request may not run.
    async fn settle(&mut self) -> Result<(), WireError> {
        let Some(Reserving(asked)) = self.reserving.take() else {
            return Ok(());
        };
        self.hold = Some(asked.await.map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("the quota reservation failed: {e}"),
            )
        })??);
        Ok(())
    }
}

impl<R> Drop for Watched<'_, R> {
    fn drop(&mut self) {
        // No last frame passed: the requester left, and what ran for it may still be charged.
        if !self.ended
            && let Some(hold) = self.hold.as_mut()
        {
            hold.linger();
        }
    }
}

/// Whether a request that ended with `error` may still be charged for work that ran.
fn may_be_charged(error: &WireError) -> bool {
    error.partial
        || matches!(
            error.code,
            ErrorCode::Cancelled | ErrorCode::DeadlineExceeded | ErrorCode::PeerLost
        )
}

impl<R: Responder> Responder for Watched<'_, R> {
    async fn before_work(&mut self) -> Result<(), WireError> {
        self.settle().await
    }

    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        match &frame {
            ResponseFrame::Final(response) => {
                self.ended = true;
                // Work ran only after the hold was in place; should a stage have skipped
                // waiting for it, the answer still releases it with its charge.
                let _ = self.settle().await;
                if let Some(mut hold) = self.hold.take() {
                    // Released, with its charge, before the answer leaves: a client that sends
                    // its next request at once must not find this one still held as well as
                    // charged (it was counted twice, and an account refused below its limit).
                    hold.charged(&response.route.executed_by, response.usage.micro_neurons);
                }
            }
            ResponseFrame::Error(error) => {
                if may_be_charged(error)
                    && let Some(hold) = self.hold.as_mut()
                {
                    hold.linger();
                }
            }
            _ => {}
        }
        let last = !matches!(frame, ResponseFrame::Delta(_));
        let sent = self.inner.send(frame).await;
        self.ended |= last && sent.is_ok();
        sent
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.gone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::MICRO;
    use crate::models::Catalog;
    use ganglion_client::protocol::{ChatMessage, Role};

    fn request(input: Input, max_tokens: Option<u32>) -> Request {
        let mut request = Request::new("m", input);
        request.parameters.max_tokens = max_tokens;
        request
    }

    #[test]
    fn the_reservation_covers_the_most_a_request_could_cost() {
        let catalog = Catalog::builtin();
        let smollm = catalog
            .get(crate::models::catalog::SMOLLM2)
            .expect("smollm");
        let chat = Input::Chat(vec![ChatMessage {
            role: Role::User,
            content: "hello".into(),
        }]);
        assert_eq!(max_cost(smollm, &request(chat, Some(100))), 3 * MICRO);
        let minilm = catalog.get(crate::models::catalog::MINILM).expect("minilm");
        let texts = Input::Embed(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(max_cost(minilm, &request(texts, None)), 3 * MICRO);
        let mut per_token = smollm.clone();
        per_token.pricing = pricing::PricingRule::PerToken {
            input_per_million: 1_000,
            output_per_million: 5_000,
        };
        let chat = Input::Chat(vec![ChatMessage {
            role: Role::User,
            content: "x".repeat(92),
        }]);
        // (92 bytes + 8) input tokens at most, 10 output tokens.
        assert_eq!(
            max_cost(&per_token, &request(chat, Some(10))),
            100 * 1_000 + 10 * 5_000
        );
    }
}
