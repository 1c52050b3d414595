//! The cache shards' side of `Cache` streams (the wire is [`crate::peer::cache`]): the
//! lookup at the shard a peer names, and, after a lead, the fill or the lease given up.

use std::time::Duration;

use ganglion_client::protocol::{MAX_OPEN_FRAME_LEN, MAX_RESPONSE_FRAME_LEN};
use ganglion_client::{read_frame, write_frame};
use sha2::{Digest, Sha256};

use super::{Lookup, Shards};
use crate::cache::flight::Patience;
use crate::cache::key::CacheKey;
use crate::peer::cache::{
    CacheCall, CacheReply, EXCHANGE_TIMEOUT, GIVEN_UP, MAX_LEASE, MAX_LOOKUP_FRAME,
};

/// A lookup answered within this time needs no acknowledgement first.
const ANSWER_AT_ONCE: Duration = Duration::from_millis(5);

/// Serves one `Cache` stream that `peer` opened: the lookup at the shard it names, and, after
/// a lead, the fill (or the lease given up when the stream ends without one).
pub async fn serve(
    shards: Shards,
    peer: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let call = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        read_frame::<_, CacheCall>(&mut recv, MAX_LOOKUP_FRAME),
    )
    .await;
    let max = u64::try_from(MAX_LEASE.as_millis()).unwrap_or(u64::MAX);
    let (shard, material, patience) = match call {
        Ok(Ok(Some(CacheCall::Lookup {
            shard,
            material,
            wait_ms,
            lease_ms,
        }))) => (
            shard,
            material,
            Patience {
                wait_ms: wait_ms.min(max),
                lease_ms: lease_ms.min(max),
            },
        ),
        _ => {
            tracing::debug!(%peer, "malformed cache stream refused");
            let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
            return;
        }
    };
    let key = CacheKey {
        hash: Sha256::digest(&material).into(),
        material,
    };
    // The pinned lookup borrows the key: it ends within this block.
    let lookup = {
        let lookup = async {
            match shards.local(shard) {
                Some(handle) => handle.lookup(&key, patience).await,
                None => Ok(Lookup::Busy),
            }
        };
        tokio::pin!(lookup);
        match tokio::time::timeout(ANSWER_AT_ONCE, &mut lookup).await {
            Ok(answered) => answered,
            Err(_) => {
                let acknowledged = tokio::time::timeout(
                    EXCHANGE_TIMEOUT,
                    write_frame(&mut send, &CacheReply::Looking, MAX_OPEN_FRAME_LEN),
                )
                .await;
                if !matches!(acknowledged, Ok(Ok(()))) {
                    return;
                }
                lookup.await
            }
        }
    };
    let (reply, lease) = match lookup {
        Ok(Lookup::Hit(found)) => (
            CacheReply::Hit {
                answer: found.answer,
                age_ms: found.age_ms,
                expires_in_ms: found.expires_in_ms,
            },
            None,
        ),
        Ok(Lookup::Lead(lease)) => (CacheReply::Lead, Some(lease)),
        Ok(Lookup::Busy) | Err(_) => (CacheReply::Busy, None),
    };
    let written = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        write_frame(&mut send, &reply, MAX_RESPONSE_FRAME_LEN),
    )
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = send.finish();
    let Some(lease) = lease else {
        return;
    };
    // The lease lasts while the stream does, up to its time; dropping it gives it up.
    let fill = tokio::time::timeout(
        Duration::from_millis(patience.lease_ms),
        read_frame::<_, CacheCall>(&mut recv, MAX_RESPONSE_FRAME_LEN),
    )
    .await;
    // A fill is kept only within the protocol's bounds (the cache counts what it holds by them).
    if let Ok(Ok(Some(CacheCall::Fill { answer, ttl_ms }))) = fill
        && answer.output.within_bounds()
    {
        let ttl_ms = ttl_ms.min(u64::from(ganglion_client::protocol::MAX_CACHE_TTL_SECS) * 1000);
        lease.fill(key, answer, ttl_ms);
    }
}
