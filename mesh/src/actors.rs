//! The node's actors. Supervision tree:
//!
//! ```text
//! NodeSupervisor      restarts any child that fails (a bounded number of times a minute)
//! ├── PeerDirectory   live view of peers; joins process group `ganglion.peers`
//! ├── Router          per request: local model host, or the best peer that hosts the model
//! ├── Gateway         data plane: one QUIC stream per request, from clients and peers
//! ├── ModelHost × n   one per hosted model; joins process group `ganglion.model.<id>`
//! ├── Meter           Neurons: usage counters (own and peers'), reservations
//! ├── ClusterHost     QUIC endpoint, dialing and accepting peers, liveness
//! │   └── NodeServer  ractor_cluster, one NodeSession per peer (over a QUIC stream)
//! └── Admin           the HTTP introspection endpoint
//! ```
//!
//! Each module holds one actor: its `Msg`, `State`, `Arguments` and a typed handle. Handles
//! hold an [`ActorSlot`], so a restarted actor is reached through the handles others already
//! have.

pub mod admin;
pub mod cache_shard;
pub mod cluster_host;
pub mod gateway;
pub mod meter;
pub mod model_host;
pub mod node_supervisor;
pub mod peer_directory;
pub mod router;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::ActorRef;

/// Timeout of calls between a node's own actors; they answer from memory, so anything slower
/// means an actor is stuck.
pub const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call to one of this node's actors got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalCallError {
    /// The actor did not answer within [`LOCAL_CALL_TIMEOUT`].
    #[error("timed out")]
    TimedOut,
    /// The actor is not running (stopped, failed, or being restarted).
    #[error("actor not running: {0}")]
    Gone(String),
}

/// Calls one of this node's actors within [`LOCAL_CALL_TIMEOUT`].
pub(crate) async fn call_local<M, T>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
) -> Result<T, LocalCallError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(msg, Some(LOCAL_CALL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
        Ok(ractor::rpc::CallResult::Timeout) => Err(LocalCallError::TimedOut),
        Ok(_) => Err(LocalCallError::Gone("reply dropped".into())),
        Err(e) => Err(LocalCallError::Gone(e.to_string())),
    }
}

/// A task that is aborted when this is dropped: an actor keeps one in its state, so that the
/// task ends with the actor however it ends (a failed or killed actor skips `post_stop`).
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The current incarnation of a supervised actor. Every clone sees the actor the supervisor
/// last (re)started, so handles stay valid across restarts.
pub struct ActorSlot<M>(Arc<RwLock<ActorRef<M>>>);

impl<M: ractor::Message> std::fmt::Debug for ActorSlot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ActorSlot")
            .field(&self.get().get_id())
            .finish()
    }
}

impl<M> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// A slot holding `actor`.
    pub fn new(actor: ActorRef<M>) -> Self {
        Self(Arc::new(RwLock::new(actor)))
    }

    /// The actor now.
    pub fn get(&self) -> ActorRef<M> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts a restarted actor in place.
    pub(crate) fn replace(&self, actor: ActorRef<M>) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = actor;
    }
}
