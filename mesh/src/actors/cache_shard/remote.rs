//! Cache lookups across the mesh, on `Cache` streams of the peer connection.
//!
//! The asking node opens a stream, says `Cache`, and sends one [`CacheCall::Lookup`] naming the
//! shard and carrying the key's whole material (the shard's node takes the hash, and the
//! entry's owner, from the material itself, never the asker's word for them). It answers a hit, a lead, or busy; when the answer is not ready
//! at once (a fill it waits for), it first acknowledges the lookup, so that a dead node is
//! told from a long wait within seconds. After a lead the stream
//! stays open: it *is* the lease. The asker sends [`CacheCall::Fill`] with its answer and
//! finishes; a stream that ends any other way (the run failed, the asker's node died and QUIC
//! noticed) gives the lease up, and the next waiter leads. Values stay off the control plane:
//! a large answer never holds up ractor_cluster's gossip.

use std::time::Duration;

use ganglion_client::protocol::{
    MAX_OPEN_FRAME_LEN, MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN,
};
use ganglion_client::{PeerStreamKind, read_frame, write_frame};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Lookup, Shards};
use crate::cache::flight::Patience;
use crate::cache::key::CacheKey;
use crate::cache::store::{Answer, Found};

/// Bound on a lookup frame: a request's material plus a little.
const MAX_LOOKUP_FRAME: usize = MAX_REQUEST_FRAME_LEN + 4096;
/// Longest a lease can last (a request's deadline is at most an hour; a lease past this
/// passes to a waiter, which is harmless).
pub const MAX_LEASE: Duration = Duration::from_secs(15 * 60);
/// Time to open a stream and exchange a frame that needs no waiting.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// A lookup answered within this time needs no acknowledgement first.
const ANSWER_AT_ONCE: Duration = Duration::from_millis(5);
/// Stream error code of a lease given up.
const GIVEN_UP: u32 = 1;

/// What the asker says on a `Cache` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CacheCall {
    /// Look a key up at shard `shard` of the node, waiting for a fill in flight, or leading
    /// its fill if nobody does.
    Lookup {
        /// The shard's index on the node.
        shard: u16,
        /// The key's material.
        material: Vec<u8>,
        /// Milliseconds the asker waits for another's fill.
        wait_ms: u64,
        /// Milliseconds it would hold the lease.
        lease_ms: u64,
    },
    /// The answer for the key led (only after a lead).
    Fill {
        /// The answer.
        answer: Answer,
        /// How long to keep it.
        ttl_ms: u64,
    },
}

/// The shard's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CacheReply {
    /// The lookup arrived (the first frame; the answer follows).
    Looking,
    /// Stored.
    Hit {
        /// The answer.
        answer: Answer,
        /// How old it is, in milliseconds.
        age_ms: u64,
    },
    /// Not stored: the asker fills it on this stream.
    Lead,
    /// Go without the cache (no such shard, too busy, a malformed lookup).
    Busy,
}

/// What a lookup at a peer's shard gave.
#[derive(Debug)]
pub enum RemoteLookup {
    /// The stored answer.
    Hit(Found),
    /// Not stored: fill it on this lease (dropping it gives it up).
    Lead(RemoteLease),
    /// Go without the cache.
    Busy,
}

/// Looks `key` up at shard `shard` of the peer on `connection`, as patient as `patience`
/// says; `slot` (one of a bounded number of cache streams this node keeps open) is held as
/// long as the stream is.
pub async fn lookup(
    connection: &quinn::Connection,
    shard: u16,
    key: &CacheKey,
    patience: Patience,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<RemoteLookup, String> {
    let (mut send, mut recv) = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let (mut send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &PeerStreamKind::Cache, MAX_OPEN_FRAME_LEN)
            .await
            .map_err(|e| e.to_string())?;
        let call = CacheCall::Lookup {
            shard,
            material: key.material.clone(),
            wait_ms: patience.wait_ms,
            lease_ms: patience.lease_ms,
        };
        write_frame(&mut send, &call, MAX_LOOKUP_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((send, recv))
    })
    .await
    .map_err(|_| "timed out".to_owned())??;
    // The answer, or an acknowledgement first when the shard has to wait for a fill.
    let first = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        read_frame::<_, CacheReply>(&mut recv, MAX_RESPONSE_FRAME_LEN),
    )
    .await;
    let reply = match first {
        Ok(Ok(Some(CacheReply::Looking))) => {
            tokio::time::timeout(
                Duration::from_millis(patience.wait_ms) + EXCHANGE_TIMEOUT,
                read_frame::<_, CacheReply>(&mut recv, MAX_RESPONSE_FRAME_LEN),
            )
            .await
        }
        other => other,
    };
    match reply {
        Ok(Ok(Some(CacheReply::Hit { answer, age_ms }))) => {
            let _ = send.finish();
            Ok(RemoteLookup::Hit(Found { answer, age_ms }))
        }
        Ok(Ok(Some(CacheReply::Lead))) => Ok(RemoteLookup::Lead(RemoteLease {
            send: Some(send),
            slot: Some(slot),
        })),
        Ok(Ok(Some(CacheReply::Busy | CacheReply::Looking))) => Ok(RemoteLookup::Busy),
        Ok(Ok(None)) => Err("the shard's node closed the stream".to_owned()),
        Ok(Err(e)) => {
            let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
            Err(e.to_string())
        }
        Err(_) => {
            let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
            Err("no answer in time".to_owned())
        }
    }
}

/// The right to fill a key at a peer's shard: the open stream of the lookup.
#[derive(Debug)]
pub struct RemoteLease {
    send: Option<quinn::SendStream>,
    /// Held until the stream is done with, the fill's write included.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl RemoteLease {
    /// Sends the answer (on a task of its own: the requester's final frame does not wait).
    pub fn fill(mut self, answer: Answer, ttl_ms: u64) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        let slot = self.slot.take();
        tokio::spawn(async move {
            let _slot = slot;
            let call = CacheCall::Fill { answer, ttl_ms };
            let sent = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
                write_frame(&mut send, &call, MAX_RESPONSE_FRAME_LEN).await?;
                let _ = send.finish();
                Ok::<_, ganglion_client::FrameError>(())
            })
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!("cache fill did not reach the shard");
                let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
            }
        });
    }
}

impl Drop for RemoteLease {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
        }
    }
}

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
    if let Ok(Ok(Some(CacheCall::Fill { answer, ttl_ms }))) = fill {
        let ttl_ms = ttl_ms.min(u64::from(ganglion_client::protocol::MAX_CACHE_TTL_SECS) * 1000);
        lease.fill(key, answer, ttl_ms);
    }
}
