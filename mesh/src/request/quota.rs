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

use std::sync::atomic::Ordering;

use ganglion_client::protocol::{ErrorCode, Input, Request, ResponseFrame, WireError};

use super::admit::Admitted;
use super::{Context, Flow, Gone, Origin, Responder, fail};
use crate::actors::meter::{Hold, MeterHandle, ReserveError};
use crate::metering::{home, neurons_text, pricing, usage};
use crate::models::ModelSpec;
use crate::peer::quota::QuotaRequest;

/// Tokens the chat template may add per message, on top of one token per byte of content (a
/// safe upper bound for any tokenizer: a token covers at least one byte).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;

/// Gives a client's request its charge id and holds what it could cost; goes on with the hold,
/// for the responder that releases it (`None` for a handed-over request: its entry node holds
/// the reservation), or answers why not.
pub async fn run(
    ctx: &Context,
    admitted: &mut Admitted<'_>,
    out: &mut impl Responder,
) -> Flow<Option<Hold>> {
    match reserve(ctx, admitted).await {
        Ok(hold) => Flow::Next(hold),
        Err(error) => {
            fail(out, error).await;
            Flow::Ended
        }
    }
}

/// Gives the request its charge id and reserves what it could cost; `None` for a handed-over
/// request (its entry node holds the reservation).
async fn reserve(ctx: &Context, admitted: &mut Admitted<'_>) -> Result<Option<Hold>, WireError> {
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
    match reserve_at_home(ctx, &account.name, limit, day, most, charge_id).await {
        Ok(hold) => Ok(Some(hold)),
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

/// Reserves at the account's home node (this one, or a connected peer). When the home cannot
/// be asked, this node decides alone, but only within its share of the limit (the limit over
/// the number of nodes it knows), so that nodes cut off from the home together cannot spend
/// more than the allocation.
async fn reserve_at_home(
    ctx: &Context,
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
            let nodes = ctx.mesh_size.load(Ordering::Relaxed).max(1) as u64;
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

/// A responder that tells the hold who charged the request and how much, as the final frame
/// passes; or, when the request ends otherwise after work may have run, keeps the hold at the
/// home until that work's charge arrives.
pub struct Watched<'a, R> {
    /// Where frames go.
    pub inner: &'a mut R,
    /// The entry node's hold, if this node is the entry, until the final answer releases it
    /// (or, however else the request ends, until this is dropped).
    pub hold: Option<Hold>,
    /// A last frame passed (else the requester left before one could).
    ended: bool,
}

impl<'a, R> Watched<'a, R> {
    /// Watches the frames to `inner` for `hold`.
    pub fn new(inner: &'a mut R, hold: Option<Hold>) -> Self {
        Self {
            inner,
            hold,
            ended: false,
        }
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
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        match &frame {
            ResponseFrame::Final(response) => {
                self.ended = true;
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
