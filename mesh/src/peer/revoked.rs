//! `Revoked` streams: a peer's whole revoked-key set, pulled when its advert's digest differs
//! from ours (see [`crate::credentials::revoked`]). The puller opens the stream and finishes
//! its side; the peer sends its ids in chunks, then an empty chunk.

use std::time::Duration;

use ganglion_client::{PeerStreamKind, read_frame, write_frame};

use super::{PeerError, within};
use crate::credentials::revoked::{KeyId, MAX_REVOKED};

/// Bound on a whole pull.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// Ids per frame of a pull.
const CHUNK: usize = 8192;
/// Bound on one frame of a pull (8,192 ids of at most 9 bytes each, and the length).
const MAX_CHUNK_FRAME: usize = 80 * 1024;

/// Pulls a peer's whole revoked set, within [`PULL_TIMEOUT`]; more ids than any node keeps
/// is [`PeerError::Unexpected`].
pub async fn pull(connection: &quinn::Connection) -> Result<Vec<KeyId>, PeerError> {
    within(PULL_TIMEOUT, async {
        let (mut send, mut recv) = super::open(connection, PeerStreamKind::Revoked).await?;
        let _ = send.finish();
        let mut ids = Vec::new();
        loop {
            let chunk: Vec<KeyId> = read_frame(&mut recv, MAX_CHUNK_FRAME)
                .await?
                .ok_or(PeerError::Ended)?;
            if chunk.is_empty() {
                return Ok(ids);
            }
            if ids.len() + chunk.len() > MAX_REVOKED || chunk.len() > CHUNK {
                return Err(PeerError::Unexpected("more revoked ids than a node keeps"));
            }
            ids.extend(chunk);
        }
    })
    .await
}

/// Sends `ids` on a `Revoked` stream, in chunks, then the empty chunk, within
/// [`PULL_TIMEOUT`].
pub async fn send(send: &mut quinn::SendStream, ids: &[KeyId]) {
    let sent = within(PULL_TIMEOUT, async {
        for chunk in ids.chunks(CHUNK) {
            write_frame(send, &chunk, MAX_CHUNK_FRAME).await?;
        }
        write_frame(send, &Vec::<KeyId>::new(), MAX_CHUNK_FRAME).await?;
        let _ = send.finish();
        Ok(())
    })
    .await;
    if sent.is_err() {
        tracing::debug!("revoked set not sent in time");
    }
}
