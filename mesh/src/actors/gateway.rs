//! Gateway: the client-facing data plane. A child of `NodeSupervisor`.
//!
//! Clients connect with ALPN `ganglion-client/1` (server-authenticated TLS, the cluster CA) and
//! open one bidirectional stream per request: one [`ClientRequest`] frame in, response frames
//! out (deltas, then a final frame or a typed error). Requests are validated against the
//! protocol's bounds before anything is queued; a client that resets its stream or drops its
//! connection cancels the request and frees its slot on the model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::protocol::{
    ClientRequest, ErrorCode, MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN, ModelListing,
    ResponseFrame, WireError, validate,
};
use ganglion_client::{FrameError, read_frame, write_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::model_host::{self, Job, RESPONSE_CHANNEL_CAPACITY};
use super::peer_directory::PeerDirectoryHandle;
use crate::models::Catalog;

/// A request frame must arrive this soon after its stream opens.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages of the gateway.
pub enum Msg {
    /// A client connection completed its handshake.
    Connection(quinn::Connection),
}

impl ractor::Message for Msg {}

/// The gateway actor.
#[derive(Debug, Default)]
pub struct Gateway;

/// Start-up arguments.
#[derive(Debug)]
pub struct Arguments {
    /// This node's name.
    pub node: String,
    /// The model catalog.
    pub catalog: Arc<Catalog>,
    /// Models hosted here.
    pub hosted: Vec<String>,
    /// Where peers' hosted models are known.
    pub directory: PeerDirectoryHandle,
}

/// What every client stream needs.
#[derive(Debug)]
struct Shared {
    node: String,
    catalog: Arc<Catalog>,
    hosted: Vec<String>,
    directory: PeerDirectoryHandle,
}

/// The gateway's state: client connections being served.
pub struct State {
    shared: Arc<Shared>,
    connections: JoinSet<()>,
}

impl Actor for Gateway {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        Ok(State {
            shared: Arc::new(Shared {
                node: args.node,
                catalog: args.catalog,
                hosted: args.hosted,
                directory: args.directory,
            }),
            connections: JoinSet::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state.connections.abort_all();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Connection(connection) => {
                while state.connections.try_join_next().is_some() {}
                let span = tracing::info_span!("client", node = %state.shared.node, remote = %connection.remote_address());
                state
                    .connections
                    .spawn(serve_connection(state.shared.clone(), connection).instrument(span));
            }
        }
        Ok(())
    }
}

/// Typed handle to the gateway.
#[derive(Debug, Clone)]
pub struct GatewayHandle(pub(crate) ActorRef<Msg>);

impl GatewayHandle {
    /// Hands over a client connection.
    pub fn connection(&self, connection: quinn::Connection) {
        if self.0.cast(Msg::Connection(connection.clone())).is_err() {
            connection.close(quinn::VarInt::from_u32(0), b"node shutting down");
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, connection: quinn::Connection) {
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(shared.clone(), send, recv).in_current_span());
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "client connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let received = Instant::now();
    let request = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<_, ClientRequest>(&mut recv, MAX_REQUEST_FRAME_LEN),
    )
    .await
    {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let code = match e {
                FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::InvalidInput,
            };
            tracing::warn!(error = %e, "bad request frame");
            return reply(
                &mut send,
                ResponseFrame::Error(WireError::new(code, format!("bad request frame: {e}"))),
            )
            .await;
        }
        Err(_) => {
            return reply(
                &mut send,
                ResponseFrame::Error(WireError::new(
                    ErrorCode::InvalidInput,
                    "no request frame within 10 s",
                )),
            )
            .await;
        }
    };
    match request {
        ClientRequest::ListModels => {
            let listing = list_models(&shared).await;
            reply(&mut send, ResponseFrame::Models(listing)).await;
        }
        ClientRequest::Infer(request) => {
            let span =
                tracing::info_span!("request", request_id = %request.id, model = %request.model);
            let frames = match admit(&shared, request, received)
                .instrument(span.clone())
                .await
            {
                Ok(frames) => frames,
                Err(error) => return reply(&mut send, ResponseFrame::Error(error)).await,
            };
            forward(frames, &mut send).instrument(span).await;
        }
        other => {
            let error = WireError::new(
                ErrorCode::InvalidInput,
                format!("request kind {other:?} is not served"),
            );
            reply(&mut send, ResponseFrame::Error(error)).await;
        }
    }
}

/// Validates a request and submits it to the local host of its model.
async fn admit(
    shared: &Shared,
    request: ganglion_client::protocol::Request,
    received: Instant,
) -> Result<mpsc::Receiver<ResponseFrame>, WireError> {
    validate(&request)?;
    if shared.catalog.get(&request.model).is_none() {
        return Err(WireError::new(
            ErrorCode::UnknownModel,
            format!("model `{}` is not in the catalog", request.model),
        ));
    }
    let Some(host) = model_host::ModelHostHandle::find(&request.model) else {
        let elsewhere = hosts_of(shared, &request.model).await;
        let message = if elsewhere.is_empty() {
            format!(
                "model `{}` is not hosted by this node (`{}`) or any reachable peer",
                request.model, shared.node
            )
        } else {
            format!(
                "model `{}` is not hosted by this node (`{}`); hosted by {} (send the request there; handoff between nodes is not built yet)",
                request.model,
                shared.node,
                elsewhere.join(", ")
            )
        };
        return Err(WireError::new(ErrorCode::Unavailable, message));
    };
    let (frames, receiver) = mpsc::channel(RESPONSE_CHANNEL_CAPACITY);
    let deadline = request
        .deadline_ms
        .map(|ms| received + Duration::from_millis(ms));
    host.submit(Job {
        request,
        received,
        deadline,
        frames,
    })
    .await?;
    Ok(receiver)
}

/// Writes response frames to the client until the last one, or until the client goes away
/// (then dropping the receiver cancels the request).
async fn forward(mut frames: mpsc::Receiver<ResponseFrame>, send: &mut quinn::SendStream) {
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = send.stopped() => {
                tracing::info!("client went away; request cancelled");
                return;
            }
        };
        let Some(frame) = frame else { return };
        let last = matches!(frame, ResponseFrame::Final(_) | ResponseFrame::Error(_));
        if let Err(e) = write_frame(send, &frame, MAX_RESPONSE_FRAME_LEN).await {
            tracing::info!(error = %e, "client stream closed; request cancelled");
            return;
        }
        if last {
            let _ = send.finish();
            return;
        }
    }
}

async fn reply(send: &mut quinn::SendStream, frame: ResponseFrame) {
    if write_frame(send, &frame, MAX_RESPONSE_FRAME_LEN)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// Peers (and this node) hosting `model`, by their adverts.
async fn hosts_of(shared: &Shared, model: &str) -> Vec<String> {
    let mut hosts: Vec<String> = shared
        .hosted
        .iter()
        .any(|m| m == model)
        .then(|| shared.node.clone())
        .into_iter()
        .collect();
    if let Ok(peers) = shared.directory.list().await {
        hosts.extend(
            peers
                .into_iter()
                .filter(|p| p.models.iter().any(|m| m == model))
                .map(|p| p.name),
        );
    }
    hosts
}

async fn list_models(shared: &Shared) -> Vec<ModelListing> {
    let mut listing = Vec::new();
    for spec in shared.catalog.models() {
        listing.push(ModelListing {
            id: spec.id.clone(),
            task: spec.task.as_str().to_owned(),
            hosted_by: hosts_of(shared, &spec.id).await,
        });
    }
    listing
}
