//! Stage 7, on the node that ran the model: charge what ran, then answer.
//!
//! The local stage ([`super::local`]) gives its job a [`Bill`]; once the model's work has
//! stopped, the model host hands it what ran ([`Ran`]) and this stage:
//!
//! - prices what ran by the model's rule ([`crate::metering::pricing`]). What ran is charged
//!   however the request ended: an answer in full; without one, output that reached the
//!   requester, a prompt the engine read before the requester left or the deadline passed, and
//!   the texts of an embedding batch whose requester left (the embedders cannot be
//!   interrupted). Stopping early must not make a run free. A request refused, or failed
//!   before any work, is free;
//! - records the charge in this node's ledger, durably, under the request's charge id (so a
//!   request handed on or retried is charged once), and counts it on the meter, which ends a
//!   hold of the request made here;
//! - then builds the final frame ([`super::final_frame::answered_here`]), after the record:
//!   every final response a client receives has its ledger record. An answer whose charge
//!   could not be recorded is withheld (`internal`).
//!
//! It runs in the job's own task, which the model host owns, so it runs whether or not the
//! requester is still there: a requester that leaves, or whose connection goes, cannot make
//! the work free. The hold stage 4 made at the account's home is released with this charge as
//! the final frame passes back through the entry node ([`super::quota::Watched`]).

use std::time::Instant;

use futures::future::BoxFuture;
use ganglion_client::protocol::{
    Account, CacheReport, ErrorCode, Migration, ResponseFrame, Timings, Usage, WireError,
};

use super::admit::Admitted;
use super::{Context, final_frame, ms};
use crate::actors::meter::MeterHandle;
use crate::actors::model_host::{Ran, Settle, Work};
use crate::metering::ledger::{LedgerWriter, Record};
use crate::metering::pricing::{self, Metered, PricingRule};
use crate::metering::usage;

/// What the charge needs to know of a request, taken when its job is submitted.
#[derive(Debug)]
pub struct Bill {
    /// This node: the executor.
    node: String,
    /// Where this node's charges are counted.
    meter: MeterHandle,
    /// Where they are recorded, durably.
    ledger: LedgerWriter,
    /// The model, and its pricing rule.
    model: String,
    pricing: PricingRule,
    /// The request's id, account and charge id.
    request_id: u128,
    account: Option<Account>,
    charge_id: Option<u128>,
    /// The node the client asked.
    entry: String,
    /// When this node received the request (its times are measured from there).
    received: Instant,
    /// The cache report for the final frame (this node's own when it is the entry node).
    cache: CacheReport,
    /// The executor lost before this one, when this node continues its answer.
    resumed_from: Option<String>,
}

impl Bill {
    /// The bill of `admitted`, to run on this node.
    pub fn of(ctx: &Context, admitted: &Admitted<'_>) -> Self {
        let request = &admitted.request;
        Self {
            node: ctx.node.clone(),
            meter: ctx.meter.clone(),
            ledger: ctx.ledger.clone(),
            model: admitted.spec.id.clone(),
            pricing: admitted.spec.pricing,
            request_id: request.id,
            account: request.account.clone(),
            charge_id: request.charge_id,
            entry: request
                .path
                .first()
                .cloned()
                .unwrap_or_else(|| ctx.node.clone()),
            received: admitted.received,
            cache: admitted
                .cache_report
                .clone()
                .unwrap_or_else(CacheReport::bypass),
            resumed_from: request.resume.as_ref().map(|r| r.from.clone()),
        }
    }

    /// What the job's host runs once the work has stopped: this stage, on what ran.
    pub fn settle(self) -> Settle {
        Box::new(move |ran: Ran| -> BoxFuture<'static, ResponseFrame> {
            Box::pin(charge(self, ran))
        })
    }
}

/// Charges what ran (recording it in the ledger), then makes the request's last frame: its
/// final frame, or the error it ended with.
pub async fn charge(bill: Bill, ran: Ran) -> ResponseFrame {
    let Ran {
        outcome,
        work,
        started,
        first_token_at,
        ended,
    } = ran;
    let output = match outcome {
        Ok(output) => output,
        Err(error) => {
            if let Some(metered) = used_without_answer(&error, work)
                && let Err(e) = commit(&bill, metered).await
            {
                tracing::error!(error = %e.message, "work that ran not charged");
            }
            return ResponseFrame::Error(error);
        }
    };
    let micro = match commit(&bill, used(work)).await {
        Ok(micro) => micro,
        Err(error) => return ResponseFrame::Error(error),
    };
    let since_received = |at: Instant| ms(at.saturating_duration_since(bill.received));
    let timings = Timings {
        queue_ms: since_received(started),
        first_token_ms: first_token_at.map(since_received),
        total_ms: since_received(ended),
    };
    let usage = Usage {
        input_tokens: work.input_tokens,
        cached_input_tokens: work.cached_input_tokens,
        output_tokens: work.output_tokens,
        micro_neurons: micro,
    };
    let mut response = final_frame::answered_here(
        &bill.node,
        &bill.model,
        bill.request_id,
        output,
        usage,
        timings,
        bill.cache,
    );
    if let Some(from) = bill.resumed_from {
        response.route.migrations.push(Migration {
            from,
            at_token: work.resumed_tokens,
        });
    }
    ResponseFrame::Final(response)
}

/// Prices `used`, records it in the ledger durably and counts it, before any final frame
/// leaves; the micro-Neurons charged (also when the charge id was charged already: a handoff
/// retried after this node had answered is not charged twice).
async fn commit(bill: &Bill, used: Metered) -> Result<u64, WireError> {
    let (Some(account), Some(charge_id)) = (&bill.account, bill.charge_id) else {
        return Err(WireError::new(
            ErrorCode::Internal,
            "a request reached a model without an account or charge id",
        ));
    };
    let micro = pricing::cost(bill.pricing, used);
    let now_ms = crate::metering::unix_now_ms();
    let record = ledger_record(bill, account, charge_id, used, micro, now_ms);
    let day = record.day;
    match bill.ledger.commit(record).await {
        Ok(true) => bill.meter.charged(charge_id, day, &account.name, micro),
        // Charged already (a handoff retried after this node had answered): not twice.
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "charge not recorded; the answer is withheld");
            return Err(WireError::new(
                ErrorCode::Internal,
                "the charge for this request could not be recorded",
            ));
        }
    }
    Ok(micro)
}

/// The ledger record of a charge of `micro` for `used`, made at `now_ms` (Unix milliseconds).
fn ledger_record(
    bill: &Bill,
    account: &Account,
    charge_id: u128,
    used: Metered,
    micro: u64,
    now_ms: u64,
) -> Record {
    Record {
        // 32 hex digits, as every other place shows a request id (`x-request-id`, the dashboard).
        charge_id: format!("{charge_id:032x}"),
        request_id: format!("{:032x}", bill.request_id),
        account: account.name.clone(),
        key_id: account.key_id.clone(),
        model: bill.model.clone(),
        input_tokens: used.input_tokens,
        output_tokens: used.output_tokens,
        micro_neurons: micro,
        entry: bill.entry.clone(),
        executor: bill.node.clone(),
        at_ms: now_ms,
        day: usage::day_of(now_ms / 1000),
    }
}

/// What a run used, as pricing sees it.
fn used(work: Work) -> Metered {
    Metered {
        input_tokens: u64::from(work.input_tokens),
        output_tokens: u64::from(work.output_tokens),
        items: u64::from(work.items),
    }
}

/// What a run that ended with `error` is charged for, if anything ran: output that reached the
/// requester, texts embedded, or a prompt the engine read before the requester left or the
/// deadline passed.
fn used_without_answer(error: &WireError, work: Work) -> Option<Metered> {
    let read_prompt = work.prompt_read
        && matches!(
            error.code,
            ErrorCode::Cancelled | ErrorCode::DeadlineExceeded
        );
    (work.output_tokens > 0 || work.items > 0 || read_prompt).then(|| used(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> WireError {
        WireError::new(code, "x")
    }

    #[test]
    fn work_that_ran_is_charged_however_the_request_ended() {
        let read = Work {
            input_tokens: 1_800,
            prompt_read: true,
            ..Work::default()
        };
        // A prompt read before the requester left or the deadline passed.
        for code in [ErrorCode::Cancelled, ErrorCode::DeadlineExceeded] {
            let charged = used_without_answer(&error(code), read).expect("charged");
            assert_eq!((charged.input_tokens, charged.output_tokens), (1_800, 0));
        }
        // A prompt read, then a failure of the node or its engine: free.
        assert_eq!(used_without_answer(&error(ErrorCode::Internal), read), None);
        // Output that reached the requester, whatever ended the request.
        let streamed = Work {
            output_tokens: 12,
            ..read
        };
        let charged = used_without_answer(&error(ErrorCode::PeerLost), streamed);
        assert_eq!(charged.map(|m| m.output_tokens), Some(12));
        // An abandoned embedding batch, in full.
        let batch = Work {
            input_tokens: 640,
            items: 64,
            ..Work::default()
        };
        let charged = used_without_answer(&error(ErrorCode::Cancelled), batch);
        assert_eq!(charged.map(|m| m.items), Some(64));
        // Nothing ran.
        assert_eq!(
            used_without_answer(&error(ErrorCode::DeadlineExceeded), Work::default()),
            None
        );
    }
}
