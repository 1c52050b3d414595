//! Gateway: the client-facing data plane. A child of `NodeSupervisor`.
//!
//! Clients connect with ALPN `ganglion-client/1` (server-authenticated TLS, the cluster CA) and
//! open one bidirectional stream per request: one [`ClientRequest`] frame in, response frames
//! out (deltas, then a final frame or a typed error). Requests are validated against the
//! protocol's bounds before anything is queued; a client that resets its stream or drops its
//! connection cancels the request and frees its slot on the model.
//!
//! Peers hand requests over on `PeerStreamKind::Data` streams of their mutual-TLS connection;
//! after that opening frame such a stream is exactly a client stream, served by the same code.
//! A request runs on the local model host when it can, otherwise the router ranks the peers
//! that host the model and the request is handed to the best (see [`infer`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::PeerStreamKind;
use ganglion_client::protocol::{
    Attempt, ClientRequest, ErrorCode, HopTime, MAX_OPEN_FRAME_LEN, MAX_REQUEST_FRAME_LEN,
    MAX_RESPONSE_FRAME_LEN, ModelListing, Request, ResponseFrame, WireError, validate,
};
use ganglion_client::{FrameError, read_frame, write_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::model_host::{Job, LocalModels, RESPONSE_CHANNEL_CAPACITY};
use super::peer_directory::PeerDirectoryHandle;
use super::router::{RouterHandle, Target};
use crate::models::Catalog;

/// A request frame must arrive this soon after its stream opens.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages of the gateway.
pub enum Msg {
    /// A client connection completed its handshake.
    Connection(quinn::Connection),
    /// A peer opened a data stream to hand a request over.
    PeerStream {
        /// The peer's name.
        peer: String,
        /// Sending half.
        send: quinn::SendStream,
        /// Receiving half (its opening frame already read).
        recv: quinn::RecvStream,
    },
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
    /// The model hosts of this node.
    pub hosts: LocalModels,
    /// Where peers' hosted models are known.
    pub directory: PeerDirectoryHandle,
    /// Where requests that cannot run here go.
    pub router: RouterHandle,
}

/// What every stream needs.
#[derive(Debug)]
struct Shared {
    node: String,
    catalog: Arc<Catalog>,
    hosts: LocalModels,
    directory: PeerDirectoryHandle,
    router: RouterHandle,
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
                hosts: args.hosts,
                directory: args.directory,
                router: args.router,
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
            Msg::PeerStream { peer, send, recv } => {
                while state.connections.try_join_next().is_some() {}
                let span = tracing::info_span!("handed", node = %state.shared.node, from = %peer);
                state
                    .connections
                    .spawn(serve_stream(state.shared.clone(), send, recv).instrument(span));
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

    /// Hands over a data stream a peer opened (its opening frame already read).
    pub fn peer_stream(&self, peer: String, send: quinn::SendStream, recv: quinn::RecvStream) {
        let _ = self.0.cast(Msg::PeerStream { peer, send, recv });
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
            infer(&shared, request, received, &mut send)
                .instrument(span)
                .await;
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

/// Runs an inference request: on the local model host when it is hosted here and has room,
/// otherwise handed to the best peer that hosts it (then the next, before any output), within
/// the request's hop budget, never back to a node on its path.
async fn infer(
    shared: &Shared,
    mut request: Request,
    received: Instant,
    send: &mut quinn::SendStream,
) {
    if let Err(error) = check(shared, &request) {
        return reply(send, ResponseFrame::Error(error)).await;
    }
    request.path.push(shared.node.clone());
    let deadline = request
        .deadline_ms
        .map(|ms| received + Duration::from_millis(ms));
    let mut attempts = Vec::new();

    if let Some(host) = shared.hosts.get(&request.model) {
        let (frames, receiver) = mpsc::channel(RESPONSE_CHANNEL_CAPACITY);
        let job = Job {
            request: request.clone(),
            received,
            deadline,
            frames,
        };
        match host.submit(job).await {
            Ok(()) => {
                shared.router.ran_locally(&request.model);
                return relay_local(receiver, send).await;
            }
            Err(e) if e.code == ErrorCode::Overloaded => {
                attempts.push(Attempt {
                    node: shared.node.clone(),
                    reason: e.message,
                });
            }
            Err(e) => return reply(send, ResponseFrame::Error(e)).await,
        }
    }

    let route_text = request.path.join(" → ");
    if request.hop_budget == 0 {
        let error = unserved(
            &request.model,
            &attempts,
            format!("the hop budget is exhausted (path {route_text})"),
        );
        return reply(send, ResponseFrame::Error(error)).await;
    }
    let targets = shared.router.plan(&request.model, &request.path).await;
    if targets.is_empty() {
        let why = if request.path.len() > 1 {
            format!("no reachable peer off the request's path ({route_text}) hosts it")
        } else {
            "no reachable peer hosts it".to_owned()
        };
        let error = unserved(&request.model, &attempts, why);
        return reply(send, ResponseFrame::Error(error)).await;
    }
    for target in targets {
        let mut handed = request.clone();
        handed.hop_budget -= 1;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let error = WireError::new(
                    ErrorCode::DeadlineExceeded,
                    "deadline passed before a node could take the request",
                );
                return reply(send, ResponseFrame::Error(error)).await;
            }
            handed.deadline_ms = Some(left.as_millis() as u64);
        }
        shared.router.forwarded(&request.model, &target.name);
        let span = tracing::info_span!("handoff", peer = %target.name);
        let outcome = handoff(&shared.node, &target, &handed, received, &attempts, send)
            .instrument(span)
            .await;
        match outcome {
            Handoff::Served | Handoff::Cancelled => {
                shared.router.ended(&target.name, true);
                return;
            }
            Handoff::Refused(reason) => {
                tracing::info!(peer = %target.name, %reason, "handoff refused before output; trying the next candidate");
                shared.router.ended(&target.name, false);
                attempts.push(Attempt {
                    node: target.name.clone(),
                    reason,
                });
            }
            Handoff::Failed(error) => {
                shared.router.ended(&target.name, false);
                return reply(send, ResponseFrame::Error(error)).await;
            }
        }
    }
    let error = unserved(
        &request.model,
        &attempts,
        "every candidate failed".to_owned(),
    );
    reply(send, ResponseFrame::Error(error)).await
}

/// Checks a request before any work: bounds, catalog, loops.
fn check(shared: &Shared, request: &Request) -> Result<(), WireError> {
    validate(request)?;
    if shared.catalog.get(&request.model).is_none() {
        return Err(WireError::new(
            ErrorCode::UnknownModel,
            format!("model `{}` is not in the catalog", request.model),
        ));
    }
    if request.path.contains(&shared.node) {
        return Err(WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "request already passed through node `{}` (path {})",
                shared.node,
                request.path.join(" → ")
            ),
        ));
    }
    Ok(())
}

/// The error when no node could take a request: `overloaded` if some host was merely full,
/// otherwise `unavailable`; the message names the model, why, and every attempt.
fn unserved(model: &str, attempts: &[Attempt], why: String) -> WireError {
    let full = attempts.iter().any(|a| a.reason.contains("capacity"));
    let code = if full {
        ErrorCode::Overloaded
    } else {
        ErrorCode::Unavailable
    };
    let mut message = format!("model `{model}` is not available: {why}");
    if !attempts.is_empty() {
        let tried: Vec<String> = attempts
            .iter()
            .map(|a| format!("{}: {}", a.node, a.reason))
            .collect();
        message.push_str(&format!("; tried {}", tried.join("; ")));
    }
    WireError::new(code, message)
}

/// How a handoff to one peer ended.
enum Handoff {
    /// The final response was relayed.
    Served,
    /// The requester went away; the handoff was dropped, cancelling it downstream.
    Cancelled,
    /// The peer could not take it, before any output: try the next candidate.
    Refused(String),
    /// It failed for good (after output had started, or with an error no other node would
    /// avoid).
    Failed(WireError),
}

/// Hands `request` to `target` over a data stream of the peer connection and relays its
/// answer, adding this node to the route of the final response.
async fn handoff(
    node: &str,
    target: &Target,
    request: &Request,
    received: Instant,
    attempts: &[Attempt],
    send: &mut quinn::SendStream,
) -> Handoff {
    let opened = async {
        let (mut peer_send, peer_recv) = target
            .connection
            .open_bi()
            .await
            .map_err(|e| e.to_string())?;
        write_frame(&mut peer_send, &PeerStreamKind::Data, MAX_OPEN_FRAME_LEN)
            .await
            .map_err(|e| e.to_string())?;
        write_frame(
            &mut peer_send,
            &ClientRequest::Infer(request.clone()),
            MAX_REQUEST_FRAME_LEN,
        )
        .await
        .map_err(|e| e.to_string())?;
        peer_send.finish().map_err(|e| e.to_string())?;
        Ok::<_, String>((peer_send, peer_recv))
    };
    let (_peer_send, mut peer_recv) = match opened.await {
        Ok(streams) => streams,
        Err(e) => return Handoff::Refused(format!("cannot open a stream: {e}")),
    };
    let mut first_output: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            next = read_frame::<_, ResponseFrame>(&mut peer_recv, MAX_RESPONSE_FRAME_LEN) => next,
            _ = send.stopped() => return Handoff::Cancelled,
        };
        let lost = |why: String| match first_output {
            None => Handoff::Refused(format!("connection lost: {why}")),
            Some(_) => Handoff::Failed(WireError {
                code: ErrorCode::PeerLost,
                message: format!(
                    "node `{}` was lost after output had started: {why}",
                    target.name
                ),
                partial: true,
            }),
        };
        match next {
            Ok(Some(ResponseFrame::Delta(text))) => {
                first_output.get_or_insert_with(Instant::now);
                if write_frame(send, &ResponseFrame::Delta(text), MAX_RESPONSE_FRAME_LEN)
                    .await
                    .is_err()
                {
                    return Handoff::Cancelled;
                }
            }
            Ok(Some(ResponseFrame::Final(mut response))) => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                // This node's own view replaces the downstream one in the timings; the route
                // keeps every node's.
                let first_token_ms = first_output.map(|first| ms(first - received));
                let total_ms = ms(received.elapsed());
                let route = &mut response.route;
                route.path.insert(0, node.to_owned());
                route.entry = node.to_owned();
                route.attempts.splice(0..0, attempts.iter().cloned());
                route.per_hop.insert(
                    0,
                    HopTime {
                        node: node.to_owned(),
                        first_token_ms,
                        total_ms,
                    },
                );
                response.timings.total_ms = total_ms;
                if first_token_ms.is_some() {
                    response.timings.first_token_ms = first_token_ms;
                }
                if write_frame(
                    send,
                    &ResponseFrame::Final(response),
                    MAX_RESPONSE_FRAME_LEN,
                )
                .await
                .is_ok()
                {
                    let _ = send.finish();
                }
                return Handoff::Served;
            }
            Ok(Some(ResponseFrame::Error(error)))
                if first_output.is_none() && retryable(error.code) =>
            {
                return Handoff::Refused(error.message);
            }
            Ok(Some(ResponseFrame::Error(error))) => return Handoff::Failed(error),
            Ok(Some(other)) => return lost(format!("unexpected frame {other:?}")),
            Ok(None) => return lost("the stream ended without an answer".to_owned()),
            Err(e) => return lost(e.to_string()),
        }
    }
}

/// Errors another node might not hit.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Overloaded | ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::PeerLost
    )
}

/// Writes a local model host's frames to the requester until the last one, or until the
/// requester goes away (then dropping the receiver cancels the request).
async fn relay_local(mut frames: mpsc::Receiver<ResponseFrame>, send: &mut quinn::SendStream) {
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = send.stopped() => {
                tracing::info!("requester went away; request cancelled");
                return;
            }
        };
        let Some(frame) = frame else { return };
        let last = matches!(frame, ResponseFrame::Final(_) | ResponseFrame::Error(_));
        if let Err(e) = write_frame(send, &frame, MAX_RESPONSE_FRAME_LEN).await {
            tracing::info!(error = %e, "requester stream closed; request cancelled");
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

/// The catalog, each model with the nodes hosting it: this node, and peers by their adverts
/// (one directory query for the whole listing).
async fn list_models(shared: &Shared) -> Vec<ModelListing> {
    let peers = shared.directory.list().await.unwrap_or_default();
    shared
        .catalog
        .models()
        .iter()
        .map(|spec| {
            let here = shared.hosts.get(&spec.id).map(|_| shared.node.clone());
            let there = peers
                .iter()
                .filter(|p| p.models.contains(&spec.id))
                .map(|p| p.name.clone());
            ModelListing {
                id: spec.id.clone(),
                task: spec.task.as_str().to_owned(),
                hosted_by: here.into_iter().chain(there).collect(),
            }
        })
        .collect()
}
