//! Gateway: the client-facing data plane. A child of `NodeSupervisor`, restarted by it on
//! failure (the connections it served are dropped; clients reconnect).
//!
//! Clients connect with ALPN `ganglion-client/6` (server-authenticated TLS, the cluster CA) and
//! open one bidirectional stream per request: one [`ClientRequest`] frame in, response frames
//! out (deltas, then a final frame or a typed error). Peers hand requests over on
//! `PeerStreamKind::Data` streams of their mutual-TLS connection; after that opening frame such
//! a stream is exactly a client stream. Both go through [`crate::request::run`]; this module
//! only reads the request frame (within [`REQUEST_TIMEOUT`]) and writes response frames, each
//! within [`WRITE_TIMEOUT`]. A requester that stops its stream, or does not take a frame in
//! time, has its stream reset and its request cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion_client::protocol::{
    ApiKey, ClientRequest, ErrorCode, MAX_REQUEST_FRAME_LEN, MAX_RESPONSE_FRAME_LEN, ResponseFrame,
    WireError,
};
use ganglion_client::{FrameError, read_frame, write_frame};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::ActorSlot;
use crate::request::{self, Gone, Origin, Responder};

/// A request frame must arrive this soon after its stream opens.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response frame must be taken by the requester within this time, or its request is
/// cancelled: a reader that stalls cannot hold a model's slot.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC stream error code sent when a requester is cut off for not reading.
const TOO_SLOW: u32 = 3;

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

/// Start-up arguments (kept by the supervisor to restart the gateway).
#[derive(Debug, Clone)]
pub struct Arguments {
    /// What every request's stages need.
    pub context: request::Context,
    /// The HTTP APIs, when on.
    pub http: Option<HttpArguments>,
}

/// The HTTP door: its bound listener (kept, so that a restarted gateway serves it again).
#[derive(Clone)]
pub struct HttpArguments {
    /// The listener, bound before any actor started.
    pub listener: Arc<std::net::TcpListener>,
    /// TLS, for HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Clients from beyond loopback are served (else the door keeps `--allow-anonymous`'s
    /// promise, as the QUIC door does).
    pub remote_clients: bool,
}

impl std::fmt::Debug for HttpArguments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpArguments")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .field("remote_clients", &self.remote_clients)
            .finish()
    }
}

/// Serves the HTTP APIs on `http` until the returned task is dropped.
fn serve_http(
    http: &HttpArguments,
    api: crate::api::Api,
) -> Result<super::AbortOnDrop, ActorProcessingErr> {
    let listener = tokio::net::TcpListener::from_std(http.listener.try_clone()?)?;
    let keyless = api.context.auth.allow_anonymous;
    let router = crate::api::router(Arc::new(api));
    let (caps, clients) =
        crate::api::listener::client_door(http.max_connections, http.remote_clients, keyless);
    Ok(super::AbortOnDrop(tokio::spawn(
        crate::api::listener::serve_clients(listener, router, caps, clients, http.tls.clone()),
    )))
}

/// What every stream needs.
#[derive(Debug)]
struct Shared {
    context: request::Context,
}

/// The gateway's state: connections and streams being served.
pub struct State {
    shared: Arc<Shared>,
    connections: JoinSet<()>,
    _http: Option<super::AbortOnDrop>,
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
        let http = match &args.http {
            Some(http) => Some(serve_http(
                http,
                crate::api::Api {
                    context: args.context.clone(),
                },
            )?),
            None => None,
        };
        Ok(State {
            shared: Arc::new(Shared {
                context: args.context,
            }),
            connections: JoinSet::new(),
            _http: http,
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
        while state.connections.try_join_next().is_some() {}
        let node = &state.shared.context.node;
        match msg {
            Msg::Connection(connection) => {
                let span =
                    tracing::info_span!("client", %node, remote = %connection.remote_address());
                state
                    .connections
                    .spawn(serve_connection(state.shared.clone(), connection).instrument(span));
            }
            Msg::PeerStream { peer, send, recv } => {
                let span = tracing::info_span!("handed", %node, from = %peer);
                let origin = Origin::Peer(peer);
                state
                    .connections
                    .spawn(serve_stream(state.shared.clone(), origin, send, recv).instrument(span));
            }
        }
        Ok(())
    }
}

/// Typed handle to the gateway; follows it across restarts.
#[derive(Debug, Clone)]
pub struct GatewayHandle(pub(crate) ActorSlot<Msg>);

impl GatewayHandle {
    /// Hands over a client connection.
    pub fn connection(&self, connection: quinn::Connection) {
        if self
            .0
            .get()
            .cast(Msg::Connection(connection.clone()))
            .is_err()
        {
            connection.close(quinn::VarInt::from_u32(0), b"node not serving");
        }
    }

    /// Hands over a data stream a peer opened (its opening frame already read).
    pub fn peer_stream(&self, peer: String, send: quinn::SendStream, recv: quinn::RecvStream) {
        let _ = self.0.get().cast(Msg::PeerStream { peer, send, recv });
    }
}

async fn serve_connection(shared: Arc<Shared>, connection: quinn::Connection) {
    // If this task ends for any reason (the gateway stopped or failed), the client learns it
    // at once rather than keeping a connection nobody serves.
    let _close = CloseOnDrop(connection.clone());
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let stream = serve_stream(shared.clone(), Origin::Client, send, recv);
                    streams.spawn(stream.in_current_span());
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
    origin: Origin,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let received = Instant::now();
    let mut out = QuicResponder { send };
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
            let error = WireError::new(code, format!("bad request frame: {e}"));
            return request::fail(&mut out, error).await;
        }
        Err(_) => {
            let error = WireError::new(ErrorCode::InvalidInput, "no request frame within 10 s");
            return request::fail(&mut out, error).await;
        }
    };
    match request {
        ClientRequest::Usage { api_key } => {
            let frame = match account_usage(&shared.context, api_key).await {
                Ok(usage) => ResponseFrame::Usage(usage),
                Err(error) => ResponseFrame::Error(error),
            };
            let _ = out.send(frame).await;
        }
        ClientRequest::ListModels => answer_models(&shared, None, &mut out).await,
        ClientRequest::Models { api_key } => answer_models(&shared, api_key, &mut out).await,
        ClientRequest::Infer(request) => {
            let span =
                tracing::info_span!("request", request_id = %request.id, model = %request.model);
            request::run(&shared.context, origin, request, received, &mut out)
                .instrument(span)
                .await;
        }
        other => {
            let error = WireError::new(
                ErrorCode::InvalidInput,
                format!("request kind {other:?} is not served"),
            );
            request::fail(&mut out, error).await;
        }
    }
}

/// Closes a client connection when dropped.
struct CloseOnDrop(quinn::Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0
            .close(quinn::VarInt::from_u32(0), b"connection no longer served");
    }
}

/// The requester's QUIC stream as a [`Responder`].
struct QuicResponder {
    send: quinn::SendStream,
}

impl Responder for QuicResponder {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        let last = !matches!(frame, ResponseFrame::Delta(_));
        let written = tokio::time::timeout(
            WRITE_TIMEOUT,
            write_frame(&mut self.send, &frame, MAX_RESPONSE_FRAME_LEN),
        )
        .await;
        match written {
            Ok(Ok(())) => {
                if last {
                    let _ = self.send.finish();
                }
                Ok(())
            }
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::info!("requester did not read a frame in time; stream reset");
                let _ = self.send.reset(quinn::VarInt::from_u32(TOO_SLOW));
                Err(Gone)
            }
        }
    }

    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopped = self.send.stopped();
        async move {
            let _ = stopped.await;
        }
    }
}

/// Answers a model listing under the rule HTTP's `/v1/models` and every request follow (the
/// listing names the mesh's nodes): without a key only where keyless requests are served. The
/// keyless `ListModels` of older clients gets the same answer as `Models` without a key.
async fn answer_models(shared: &Shared, api_key: Option<ApiKey>, out: &mut QuicResponder) {
    let now = crate::metering::unix_now();
    let key = api_key.map(|k| k.0);
    let listed = match request::authenticate::client_account(&shared.context.auth, key, now) {
        Ok(_) => request::listing::list_models(&shared.context).await,
        Err(error) => Err(error),
    };
    let frame = match listed {
        Ok(listing) => ResponseFrame::Models(listing),
        Err(error) => ResponseFrame::Error(error),
    };
    let _ = out.send(frame).await;
}

/// The usage today of the account whose key this is.
async fn account_usage(
    ctx: &request::Context,
    api_key: Option<ApiKey>,
) -> Result<ganglion_client::protocol::AccountUsage, WireError> {
    use crate::metering::{MICRO, usage};
    let now = crate::metering::unix_now();
    let account = request::authenticate::client_account(&ctx.auth, api_key.map(|k| k.0), now)?;
    let day = usage::day_of(now);
    let totals = ctx
        .meter
        .usage(day)
        .await
        .map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("the meter did not answer: {e}"),
            )
        })?
        .remove(&account.name)
        .unwrap_or_default();
    Ok(ganglion_client::protocol::AccountUsage {
        account: account.name,
        plan: account.plan,
        day: usage::day_text(day),
        used_micro: totals.micro,
        requests: totals.requests,
        cached_requests: totals.cached,
        allocation_micro: usage::FREE_DAILY_NEURONS * MICRO,
        limit_micro: usage::daily_limit(account.plan, account.daily_limit),
        resets_at: usage::reset_at(day),
    })
}
