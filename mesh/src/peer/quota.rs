//! `Quota` streams: a hold on what a request could cost, or its release, at the account's
//! home node (one request, one reply). The home's meter answers
//! ([`crate::actors::meter::serve_quota_stream`]).

use std::time::Duration;

use ganglion_client::{PeerStreamKind, read_frame};

use super::PeerError;
use crate::metering::usage::{Day, OverQuota};

/// How long a reservation at the home node may take.
pub const HOME_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on a quota frame.
pub const MAX_QUOTA_FRAME: usize = 1024;

/// A request to an account's home node (on a `Quota` stream: one request, one reply).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QuotaRequest {
    /// Reserve `max_cost` for `account` on `day` within `limit`.
    Reserve {
        /// The account.
        account: String,
        /// Its daily limit (micro-Neurons).
        limit: Option<u64>,
        /// The day.
        day: Day,
        /// The most the request could cost.
        max_cost: u64,
        /// The request's charge id.
        charge_id: u128,
    },
    /// End a reservation.
    Release {
        /// The reservation.
        id: u64,
        /// Who charged it, and how much.
        charged_by: Option<(String, u64)>,
        /// The request ended without an answer after work may have run (its requester left, it
        /// was cancelled or ran out of time, its executor was lost): the hold stays for
        /// [`crate::actors::meter::LINGER`] or until the charge arrives, so that abandoned work cannot spend past
        /// the limit while its charge is on its way.
        linger: bool,
    },
}

/// The home node's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum QuotaReply {
    /// Reserved, under this id.
    Reserved(u64),
    /// Over quota.
    Over(OverQuota),
    /// Released.
    Released,
    /// The home's meter did not answer.
    Failed(String),
}

/// Asks the home node behind `connection`, within [`HOME_TIMEOUT`].
pub async fn ask(
    connection: &quinn::Connection,
    request: &QuotaRequest,
) -> Result<QuotaReply, PeerError> {
    super::ask(
        connection,
        PeerStreamKind::Quota,
        request,
        MAX_QUOTA_FRAME,
        HOME_TIMEOUT,
    )
    .await
}

/// Reads the request on a `Quota` stream, within [`HOME_TIMEOUT`].
pub async fn read_request(recv: &mut quinn::RecvStream) -> Result<QuotaRequest, PeerError> {
    super::within(HOME_TIMEOUT, async {
        read_frame(recv, MAX_QUOTA_FRAME)
            .await?
            .ok_or(PeerError::Ended)
    })
    .await
}

/// Sends the home's answer, within [`HOME_TIMEOUT`].
pub async fn answer(send: &mut quinn::SendStream, reply: &QuotaReply) {
    super::answer(send, reply, MAX_QUOTA_FRAME, HOME_TIMEOUT).await;
}
