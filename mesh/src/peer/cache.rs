//! `Cache` streams: lookups at a peer's cache shard, and the fills they lead.
//!
//! The asking node opens a stream, says `Cache`, and sends one [`CacheCall::Lookup`] naming the
//! shard and carrying the key's whole material (the shard's node takes the hash, and the
//! entry's owner, from the material itself, never the asker's word for them). It answers a
//! hit, a lead, or busy; when the answer is not ready at once (a fill it waits for), it first
//! acknowledges the lookup, so that a dead node is told from a long wait within seconds.
//! After a lead the stream stays open: it *is* the lease. The asker sends [`CacheCall::Fill`] with its answer and
//! finishes; a stream that ends any other way (the run failed, the asker's node died and QUIC
//! noticed) gives the lease up, and the next waiter leads. Values stay off the control plane:
//! a large answer never holds up ractor_cluster's gossip. The shards' side is
//! [`crate::actors::cache_shard::remote`].

use std::time::Duration;

use ganglion_client::protocol::{MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN};
use ganglion_client::{PeerStreamKind, read_frame, write_frame};
use serde::{Deserialize, Serialize};

use super::{PeerError, within};
use crate::cache::flight::Patience;
use crate::cache::key::CacheKey;
use crate::cache::store::{Answer, Found};

/// Bound on a lookup frame: a request's material plus a little.
pub const MAX_LOOKUP_FRAME: usize = MAX_REQUEST_FRAME_LEN + 4096;
/// Longest a lease can last (a request's deadline is at most an hour; a lease past this
/// passes to a waiter, which is harmless).
pub const MAX_LEASE: Duration = Duration::from_secs(15 * 60);
/// Time to open a stream and exchange a frame that needs no waiting.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Stream error code of a lease given up.
pub const GIVEN_UP: u32 = 1;

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
        /// How long it may still be served, in milliseconds.
        expires_in_ms: u64,
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
) -> Result<RemoteLookup, PeerError> {
    let (mut send, mut recv) = within(EXCHANGE_TIMEOUT, async {
        let (mut send, recv) = super::open(connection, PeerStreamKind::Cache).await?;
        let call = CacheCall::Lookup {
            shard,
            material: key.material.clone(),
            wait_ms: patience.wait_ms,
            lease_ms: patience.lease_ms,
        };
        write_frame(&mut send, &call, MAX_LOOKUP_FRAME).await?;
        Ok((send, recv))
    })
    .await?;
    // The answer, or an acknowledgement first when the shard has to wait for a fill.
    let mut reply = within(EXCHANGE_TIMEOUT, async {
        Ok(read_frame::<_, CacheReply>(&mut recv, MAX_RESPONSE_FRAME_LEN).await?)
    })
    .await;
    if let Ok(Some(CacheReply::Looking)) = reply {
        let patient = Duration::from_millis(patience.wait_ms) + EXCHANGE_TIMEOUT;
        reply = within(patient, async {
            Ok(read_frame::<_, CacheReply>(&mut recv, MAX_RESPONSE_FRAME_LEN).await?)
        })
        .await;
    }
    match reply {
        Ok(Some(CacheReply::Hit {
            answer,
            age_ms,
            expires_in_ms,
        })) => {
            let _ = send.finish();
            // A peer's word: never longer than any request may ask for.
            let longest = u64::from(ganglion_client::protocol::MAX_CACHE_TTL_SECS) * 1000;
            Ok(RemoteLookup::Hit(Found {
                answer,
                age_ms,
                expires_in_ms: expires_in_ms.min(longest),
            }))
        }
        Ok(Some(CacheReply::Lead)) => Ok(RemoteLookup::Lead(RemoteLease {
            send: Some(send),
            slot: Some(slot),
        })),
        Ok(Some(CacheReply::Busy | CacheReply::Looking)) => Ok(RemoteLookup::Busy),
        Ok(None) => Err(PeerError::Ended),
        Err(e) => {
            let _ = send.reset(quinn::VarInt::from_u32(GIVEN_UP));
            Err(e)
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
