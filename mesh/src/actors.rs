//! The node's actors. Supervision tree:
//!
//! ```text
//! NodeSupervisor
//! ├── PeerDirectory   live view of peers; joins process group `ganglion.peers`
//! ├── Router          per request: local model host, or the best peer that hosts the model
//! ├── Gateway         data plane: one QUIC stream per request, from clients and peers
//! ├── ModelHost × n   one per hosted model; joins process group `ganglion.model.<id>`
//! ├── ClusterHost     QUIC endpoint, dialing and accepting peers, liveness
//! │   └── NodeServer  ractor_cluster, one NodeSession per peer (over a QUIC stream)
//! └── Admin           the HTTP introspection endpoint
//! ```
//!
//! Each module holds one actor: its `Msg`, `State`, `Arguments` and a typed handle.

pub mod admin;
pub mod cluster_host;
pub mod gateway;
pub mod model_host;
pub mod node_supervisor;
pub mod peer_directory;
pub mod router;

/// Timeout of calls between a node's own actors; they answer from memory, so anything slower
/// means an actor is stuck.
pub const LOCAL_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Calls one of this node's actors within [`LOCAL_CALL_TIMEOUT`]; `Err` says why no answer came.
pub(crate) async fn call_local<M, T>(
    actor: &ractor::ActorRef<M>,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
) -> Result<T, String>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(msg, Some(LOCAL_CALL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
        Ok(ractor::rpc::CallResult::Timeout) => Err("timed out".into()),
        Ok(_) => Err("reply dropped".into()),
        Err(e) => Err(e.to_string()),
    }
}
