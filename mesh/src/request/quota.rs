//! Stage 3: can the account pay. The entry node gives the request its charge id and reserves
//! the most it could cost (its model's flat price, or prompt tokens × input rate + `max_tokens`
//! × output rate) against what the account has left today, mesh-wide; over the limit, nothing
//! runs (`quota_exceeded`, with what was used, the limit and when it resets). The hold lasts
//! until the request ends; a charge made on another node then keeps counting here until that
//! node's adverts carry it. A request handed over by a peer was reserved at its entry node.

use ganglion_client::protocol::{ErrorCode, Input, Request, ResponseFrame, WireError};

use super::{Gone, Origin, Responder};
use crate::actors::meter::{Hold, MeterHandle, ReserveError};
use crate::metering::{neurons_text, pricing, usage};
use crate::models::ModelSpec;

/// Tokens the chat template may add per message, on top of one token per byte of content (a
/// safe upper bound for any tokenizer: a token covers at least one byte).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;

/// Gives `request` its charge id and reserves what it could cost; `None` for a handed-over
/// request (its entry node holds the reservation).
pub async fn reserve(
    meter: &MeterHandle,
    spec: &ModelSpec,
    origin: &Origin,
    request: &mut Request,
    now: u64,
) -> Result<Option<Hold>, WireError> {
    if let Origin::Peer(peer) = origin {
        if request.charge_id.is_none() {
            return Err(WireError::new(
                ErrorCode::InvalidInput,
                format!("a request handed over by `{peer}` must carry its charge id"),
            ));
        }
        return Ok(None);
    }
    request.charge_id = Some(rand::random());
    let Some(account) = &request.account else {
        return Err(WireError::new(
            ErrorCode::Internal,
            "a request reached the quota without an account",
        ));
    };
    let day = usage::day_of(now);
    let limit = usage::daily_limit(account.plan, account.daily_limit);
    let most = max_cost(spec, request);
    match meter.reserve(&account.name, limit, day, most).await {
        Ok(hold) => Ok(Some(hold)),
        Err(ReserveError::OverQuota(over)) => Err(WireError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "account `{}` has used {} of its {} Neurons today (this request could cost up to {}); it resets at {}",
                account.name,
                neurons_text(over.used),
                neurons_text(over.limit),
                neurons_text(most),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(over.reset_at)
                ),
            ),
        )),
        Err(ReserveError::Meter(e)) => Err(WireError::new(
            ErrorCode::Unavailable,
            format!("the meter did not answer: {e}"),
        )),
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
        Input::Embed(texts) => (
            texts.iter().map(|t| t.len() as u64 + 2).sum(),
            texts.len() as u64,
        ),
        _ => (0, 0),
    };
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

/// A responder that tells the hold what another node charged, as the final frame passes.
pub struct Watched<'a, R> {
    /// Where frames go.
    pub inner: &'a mut R,
    /// The entry node's hold, if this node is the entry.
    pub hold: Option<Hold>,
    /// This node's name.
    pub node: &'a str,
}

impl<R: Responder> Responder for Watched<'_, R> {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        if let (ResponseFrame::Final(response), Some(hold)) = (&frame, &mut self.hold)
            && response.route.executed_by != self.node
        {
            hold.charged_elsewhere(response.usage.micro_neurons);
        }
        self.inner.send(frame).await
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
        Request {
            id: 1,
            model: "m".into(),
            input,
            parameters: ganglion_client::protocol::Parameters {
                max_tokens,
                ..Default::default()
            },
            deadline_ms: None,
            hop_budget: 3,
            path: vec![],
            api_key: None,
            account: None,
            charge_id: None,
        }
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
