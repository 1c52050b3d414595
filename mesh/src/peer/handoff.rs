//! `Data` streams: a request handed to a peer that hosts its model. After the opening frame
//! such a stream is exactly a client's data-plane stream: one [`ClientRequest::Infer`], then
//! the peer's response frames. The peer's gateway serves it as it serves a client's
//! ([`crate::actors::gateway`]); the handing side is [`crate::request::handoff`].

use std::time::Duration;

use ganglion_client::protocol::{
    ClientRequest, MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN, Request, ResponseFrame,
};
use ganglion_client::{FrameError, PeerStreamKind, read_frame, write_frame};

use super::{PeerError, within};

/// Opening a data stream to a peer and sending it the request must take no longer.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// QUIC stream error code sent to a peer when the handing node gives up on a handoff.
pub const HANDOFF_ABANDONED: u32 = 2;

/// Opens a `Data` stream and sends `request` on it, within [`OPEN_TIMEOUT`]; the answer comes
/// on the receiving side, one [`next`] frame at a time.
pub async fn open(
    connection: &quinn::Connection,
    request: &Request,
) -> Result<(quinn::SendStream, quinn::RecvStream), PeerError> {
    within(OPEN_TIMEOUT, async {
        let (mut send, recv) = super::open(connection, PeerStreamKind::Data).await?;
        let infer = ClientRequest::Infer(request.clone());
        write_frame(&mut send, &infer, MAX_REQUEST_FRAME_LEN).await?;
        send.finish().map_err(|_| PeerError::Ended)?;
        Ok((send, recv))
    })
    .await
}

/// The peer's next response frame; `None` when it ended the stream.
pub async fn next(recv: &mut quinn::RecvStream) -> Result<Option<ResponseFrame>, FrameError> {
    read_frame(recv, MAX_RESPONSE_FRAME_LEN).await
}

/// Tells the peer that this node gives up on its answer.
pub fn abandon(recv: &mut quinn::RecvStream) {
    let _ = recv.stop(quinn::VarInt::from_u32(HANDOFF_ABANDONED));
}
