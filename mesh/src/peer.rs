//! The wire between nodes: what travels on each kind of stream a peer opens on the mutual-TLS
//! connection, with its bounds and the call that opens it. A stream's first frame is its
//! [`PeerStreamKind`]; what follows is in one file per kind:
//!
//! - [`advert`]: what a node tells every peer about itself, each advert interval;
//! - [`quota`]: a hold or a release at an account's home node;
//! - [`cache`]: a lookup at a peer's cache shard, and the fill it may lead;
//! - [`report`]: a node's report, for the dashboard's mesh view;
//! - [`revoked`]: a peer's whole revoked-key set, in chunks;
//! - [`handoff`]: a request handed to a peer that hosts its model (a `Data` stream).
//!
//! Here: [`open`], the one way a stream is opened, [`PeerError`], the one way one fails, and
//! [`Servers`], which says who serves each kind a peer opens. The servers stay with the actors
//! that own the state; the supervisor fills the table, so the cluster host dispatches streams
//! without knowing who serves them.

pub mod advert;
pub mod cache;
pub mod handoff;
pub mod quota;
pub mod report;
pub mod revoked;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ganglion_client::protocol::MAX_OPEN_FRAME_LEN;
use ganglion_client::{FrameError, PeerStreamKind, read_frame, write_frame};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No stream could be opened: the connection is gone.
    #[error("{0}")]
    Open(#[from] quinn::ConnectionError),
    /// A frame could not be written or read (the stream broke, or the peer sent one out of
    /// bounds).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Bytes could not be written.
    #[error("stream write failed: {0}")]
    Write(quinn::WriteError),
    /// The stream ended before what was expected on it.
    #[error("the stream ended early")]
    Ended,
    /// The peer sent something not accepted here.
    #[error("the peer sent {0}")]
    Unexpected(&'static str),
    /// Not done in time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Runs `call`, failing with [`PeerError::TimedOut`] past `limit`.
pub async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| PeerError::TimedOut(limit))?
}

/// Opens a bidirectional stream of `kind` on the peer connection (its opening frame sent).
pub async fn open(
    connection: &quinn::Connection,
    kind: PeerStreamKind,
) -> Result<(quinn::SendStream, quinn::RecvStream), PeerError> {
    let (mut send, recv) = connection.open_bi().await?;
    write_frame(&mut send, &kind, MAX_OPEN_FRAME_LEN).await?;
    Ok((send, recv))
}

/// One question on a new stream of `kind`, and its answer, both at most `max` bytes, within
/// `limit`.
pub async fn ask<Q: Serialize, A: DeserializeOwned>(
    connection: &quinn::Connection,
    kind: PeerStreamKind,
    question: &Q,
    max: usize,
    limit: Duration,
) -> Result<A, PeerError> {
    within(limit, async {
        let (mut send, mut recv) = open(connection, kind).await?;
        write_frame(&mut send, question, max).await?;
        let _ = send.finish();
        read_frame(&mut recv, max).await?.ok_or(PeerError::Ended)
    })
    .await
}

/// Writes `answer` and finishes the stream, within `limit`; an answer that cannot be sent is
/// dropped (the asker times out or sees the stream end).
pub async fn answer<A: Serialize>(
    send: &mut quinn::SendStream,
    answer: &A,
    max: usize,
    limit: Duration,
) {
    let written = within(limit, async {
        write_frame(send, answer, max).await?;
        Ok(())
    })
    .await;
    if written.is_ok() {
        let _ = send.finish();
    }
}

/// What serving one stream a peer opened is: the peer's certificate name and the stream,
/// after its opening frame.
pub type Serve = dyn Fn(String, quinn::SendStream, quinn::RecvStream) -> Pin<Box<dyn Future<Output = ()> + Send>>
    + Send
    + Sync;

/// Who serves each kind of stream a peer opens (`Cluster` and `Advert` streams are the
/// cluster host's own and never listed).
#[derive(Clone, Default)]
pub struct Servers(Vec<(PeerStreamKind, Arc<Serve>)>);

impl Servers {
    /// The table, with `serve` serving streams of `kind`.
    pub fn with<F, Fut>(mut self, kind: PeerStreamKind, serve: F) -> Self
    where
        F: Fn(String, quinn::SendStream, quinn::RecvStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.retain(|(k, _)| *k != kind);
        self.0.push((
            kind,
            Arc::new(move |peer, send, recv| Box::pin(serve(peer, send, recv))),
        ));
        self
    }

    /// The server of streams of `kind`, if any.
    pub fn get(&self, kind: &PeerStreamKind) -> Option<Arc<Serve>> {
        self.0
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, serve)| serve.clone())
    }
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(kind, _)| kind))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_server_replaces_an_earlier_one_for_its_kind() {
        let servers = Servers::default()
            .with(PeerStreamKind::Quota, |_, _, _| async {})
            .with(PeerStreamKind::Report, |_, _, _| async {})
            .with(PeerStreamKind::Quota, |_, _, _| async {});
        assert_eq!(
            format!("{servers:?}"),
            format!("{:?}", [PeerStreamKind::Report, PeerStreamKind::Quota])
        );
    }
}
