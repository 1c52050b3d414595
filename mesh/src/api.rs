//! The HTTP front door: the APIs existing tools speak, feeding the same request pipeline as the
//! QUIC data plane ([`crate::request::run`]: keys, cache, quota, placement, handoff, metering).
//! One pipeline, two doors.
//!
//! - [`openai`]: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, as
//!   the OpenAI SDKs expect them;
//! - [`workers_ai`]: `/ai/run/{model}` and `/accounts/{account}/ai/run/{model}`, in Workers AI's
//!   envelope;
//! - [`errors`]: typed pipeline errors as each dialect's statuses and bodies;
//! - [`listener`]: the server loop and its bounds (connections, slow heads, stalled writes,
//!   optional TLS).
//!
//! One guard runs before every route, before any byte of a body is read: the loopback promise
//! of `--allow-anonymous`, the `Host` a loopback door answers to, the API key
//! (`Authorization: Bearer <api key>`, model listings included), and JSON bodies only as
//! `Content-Type: application/json`. A refused caller's connection is closed. A body is
//! bounded in size and in time; every response carries `x-request-id`. Cache controls come from
//! `ganglion-cache-ttl`, `ganglion-skip-cache` and `ganglion-cache-key` (or AI Gateway's
//! `cf-aig-*` names), and the answer says `ganglion-cache-status` and `cf-aig-cache-status`,
//! plus `ganglion-executed-by` and `ganglion-neurons` when the whole answer is in one body.
//! A client that disconnects drops the response, which cancels the request along its path.

pub mod bodies;
pub mod errors;
pub mod listener;
pub mod openai;
pub mod workers_ai;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use ganglion_client::protocol::{
    ApiKey, CachePolicy, CacheReport, ErrorCode, FinalResponse, Input, MAX_REQUEST_FRAME_LEN,
    Parameters, Request, ResponseFrame, WireError,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::request::{self, Gone, Origin, Responder};

/// Bound on a request body (the QUIC door's request frame bound).
pub const MAX_BODY: usize = MAX_REQUEST_FRAME_LEN;
/// A request body must arrive within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A response piece must be taken within this time, or the request is cancelled.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames buffered between the pipeline and an HTTP response.
const FRAMES: usize = 64;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    /// The pipeline's context.
    pub context: request::Context,
}

/// The HTTP API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/moderations", post(openai::moderations))
        .route("/v1/audio/transcriptions", post(openai::transcriptions))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*id}", get(openai::model))
        .route("/ai/run/{*model}", post(workers_ai::run))
        .route(
            "/accounts/{account}/ai/run/{*model}",
            post(workers_ai::run_in_account),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(api.clone(), guard))
        .with_state(api)
}

/// The door's one rule for every route (unknown paths included), before any byte of a body is
/// read: the client's connection may be served at all (the loopback promise), the `Host` names
/// this door, the key is valid (or keyless requests are served), and a body is JSON. A refused
/// caller's connection is closed: asking again needs a new connection, which needs a place
/// among those yet to authenticate ([`listener::Clients::unauthenticated`]).
async fn guard(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let id = rand::random();
    let client = request
        .extensions()
        .get::<Arc<listener::ClientConnection>>()
        .cloned();
    if let Some(client) = &client {
        if !client.allowed {
            let refusal = errors::Refusal::ClientsLoopbackOnly;
            return errors::refused(refusal, common_headers(id, None));
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !client.host_allowed(host) {
            let refusal = errors::Refusal::ForeignHost;
            return errors::refused(refusal, common_headers(id, None));
        }
    }
    let path = request.uri().path().to_owned();
    let key = api_key(request.headers()).map(|k| k.0);
    let now = crate::metering::unix_now();
    if let Err(error) = crate::request::authenticate::client_account(&api.context.auth, key, now) {
        return errors::closing(error_answer(&path, &error, id));
    }
    if let Some(client) = &client {
        client.authenticated();
    }
    let workers_ai = path.starts_with("/ai/") || path.starts_with("/accounts/");
    // A form is a type any web page may send to another origin without asking; one that
    // carries a key was sent by a program (a page cannot add the header without asking).
    let keyed_form = path == TRANSCRIPTIONS
        && sends_form(request.headers())
        && api_key(request.headers()).is_some();
    let accepted = sends_json(request.headers())
        || (workers_ai && sends_image(request.headers()))
        || keyed_form;
    if request.method() == Method::POST && !accepted {
        let error = WireError::new(
            ErrorCode::InvalidInput,
            "the body must be JSON, sent as `Content-Type: application/json` (or, to /ai/run, an image or a recording as `image/png`, `image/jpeg`, `audio/wav` or `application/octet-stream`; to /v1/audio/transcriptions, a `multipart/form-data` form with an API key)",
        );
        return error_answer(&path, &error, id);
    }
    let response = next.run(request).await;
    // The pipeline authenticates again (a key revoked meanwhile): its refusal closes too.
    if response.status() == StatusCode::UNAUTHORIZED {
        return errors::closing(response);
    }
    response
}

/// The essence of the body's declared type (`application/json` of
/// `application/json; charset=utf-8`).
fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
}

/// Whether the body is declared JSON (`application/json`, parameters such as `charset` allowed).
/// The types a web page can make a browser send to another origin without asking first (a
/// CORS "simple request": `text/plain`, forms) are never read.
fn sends_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|t| t.eq_ignore_ascii_case("application/json"))
}

/// The route of OpenAI's transcriptions, which take a form.
const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

/// Whether the body is declared a form (`multipart/form-data`).
fn sends_form(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data"))
}

/// Whether the body is declared an image or a recording (`image/png`, `image/jpeg`,
/// `audio/wav`, `application/octet-stream`, …): none of these is a "simple request" type
/// either, so a browser asks the door first, and the door does not answer that question.
pub fn sends_image(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|t| {
        [
            "image/png",
            "image/jpeg",
            "image/jpg",
            "audio/wav",
            "audio/x-wav",
            "audio/wave",
            "application/octet-stream",
        ]
        .iter()
        .any(|image| t.eq_ignore_ascii_case(image))
    })
}

/// `error` in the dialect of the route at `path`: Workers AI's envelope on its routes, OpenAI's
/// on the others.
fn error_answer(path: &str, error: &WireError, id: u128) -> Response {
    let headers = common_headers(id, None);
    if path.starts_with("/ai/") || path.starts_with("/accounts/") {
        errors::workers_ai(error, headers)
    } else {
        errors::openai(error, headers)
    }
}

/// Reads a JSON body: at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`]; anything else is a
/// typed error (`too_large`, `invalid_input`).
pub async fn read_json<T: DeserializeOwned>(body: axum::body::Body) -> Result<T, WireError> {
    bodies::parse(&read_body(body).await?)
}

/// Reads a body: at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
pub async fn read_body(body: axum::body::Body) -> Result<Bytes, WireError> {
    let bytes: Bytes =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return Err(WireError::new(
                    ErrorCode::TooLarge,
                    format!("the request body is over {MAX_BODY} bytes, or was cut off"),
                ));
            }
            Err(_) => {
                return Err(WireError::new(
                    ErrorCode::InvalidInput,
                    "the request body did not arrive within 10 s",
                ));
            }
        };
    Ok(bytes)
}

/// The API key of `Authorization: Bearer <key>`.
pub fn api_key(headers: &HeaderMap) -> Option<ApiKey> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(ApiKey(key.trim().to_owned()))
}

/// Cache controls from `ganglion-*` headers, or AI Gateway's `cf-aig-*` ones.
pub fn cache_policy(headers: &HeaderMap) -> Result<CachePolicy, WireError> {
    let header = |names: [&str; 2]| -> Option<&str> {
        names
            .iter()
            .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
            .map(str::trim)
    };
    let invalid = |what: &str, value: &str| {
        WireError::new(
            ErrorCode::InvalidInput,
            format!("bad {what} header `{value}`"),
        )
    };
    let ttl_secs = match header(["ganglion-cache-ttl", "cf-aig-cache-ttl"]) {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| invalid("cache TTL", v))?),
    };
    let skip = match header(["ganglion-skip-cache", "cf-aig-skip-cache"]) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(v) => return Err(invalid("skip-cache", v)),
    };
    let key = header(["ganglion-cache-key", "cf-aig-cache-key"]).map(str::to_owned);
    Ok(CachePolicy {
        ttl_secs,
        skip,
        key,
    })
}

/// A pipeline request from an HTTP call.
pub fn request(
    model: String,
    input: Input,
    parameters: Parameters,
    headers: &HeaderMap,
) -> Result<Request, WireError> {
    Ok(Request {
        parameters,
        api_key: api_key(headers),
        cache: cache_policy(headers)?,
        ..Request::new(model, input)
    })
}

/// A request running in the pipeline, its frames arriving on a channel. Dropping it (the
/// HTTP client went away) cancels the request.
pub struct Call {
    /// The request's id.
    pub id: u128,
    frames: mpsc::Receiver<ResponseFrame>,
    cache: Arc<Mutex<Option<CacheReport>>>,
}

impl Call {
    /// Starts `request` through the pipeline as a client request.
    pub fn start(api: &Api, request: Request) -> Self {
        let id = request.id;
        let (tx, frames) = mpsc::channel(FRAMES);
        let cache = Arc::new(Mutex::new(None));
        let mut out = ChannelResponder {
            tx,
            cache: cache.clone(),
        };
        let context = api.context.clone();
        let received = Instant::now();
        tokio::spawn(async move {
            request::run(&context, Origin::Client, request, received, &mut out).await;
        });
        Self { id, frames, cache }
    }

    /// The next frame; `None` once the pipeline is done.
    pub async fn next(&mut self) -> Option<ResponseFrame> {
        self.frames.recv().await
    }

    /// The whole answer, or the error that ended it.
    pub async fn finish(mut self) -> Result<FinalResponse, WireError> {
        while let Some(frame) = self.next().await {
            match frame {
                ResponseFrame::Final(response) => return Ok(response),
                ResponseFrame::Error(error) => return Err(error),
                _ => {}
            }
        }
        Err(ended_early())
    }

    /// What the cache did, once it has decided (before the first frame).
    pub fn cache(&self) -> Option<CacheReport> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The error when the pipeline stopped without a last frame.
pub fn ended_early() -> WireError {
    WireError::new(ErrorCode::Internal, "the request ended without an answer")
}

/// The pipeline's side of a [`Call`].
struct ChannelResponder {
    tx: mpsc::Sender<ResponseFrame>,
    cache: Arc<Mutex<Option<CacheReport>>>,
}

impl Responder for ChannelResponder {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    fn cache_decided(&mut self, report: &CacheReport) {
        *self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report.clone());
    }
}

/// Response headers every answer carries: the request id and, once known, the cache status.
pub fn common_headers(id: u128, cache: Option<&CacheReport>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert(&mut headers, "x-request-id", &format!("{id:032x}"));
    if let Some(cache) = cache {
        insert(&mut headers, "ganglion-cache-status", cache.status.as_str());
        insert(&mut headers, "cf-aig-cache-status", cache.status.as_str());
    }
    headers
}

/// Headers of a whole answer: who ran it and what it cost.
pub fn final_headers(response: &FinalResponse) -> HeaderMap {
    let mut headers = common_headers(response.id, Some(&response.cache));
    insert(
        &mut headers,
        "ganglion-executed-by",
        &response.route.executed_by,
    );
    insert(
        &mut headers,
        "ganglion-neurons",
        &crate::metering::neurons_text(response.usage.micro_neurons),
    );
    headers
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_controls_come_from_either_header_family() {
        let mut headers = HeaderMap::new();
        headers.insert("cf-aig-cache-ttl", HeaderValue::from_static("120"));
        headers.insert("ganglion-skip-cache", HeaderValue::from_static("true"));
        headers.insert("cf-aig-cache-key", HeaderValue::from_static("k"));
        let policy = cache_policy(&headers).expect("valid");
        assert_eq!(policy.ttl_secs, Some(120));
        assert!(policy.skip);
        assert_eq!(policy.key.as_deref(), Some("k"));
        headers.insert("ganglion-cache-ttl", HeaderValue::from_static("soon"));
        assert_eq!(
            cache_policy(&headers).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }

    #[test]
    fn the_key_comes_from_a_bearer_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(api_key(&headers), None);
        headers.insert("authorization", HeaderValue::from_static("Bearer gnk1.a.b"));
        assert_eq!(api_key(&headers), Some(ApiKey("gnk1.a.b".into())));
        headers.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(api_key(&headers), None);
    }

    #[test]
    fn a_body_is_json_only_when_its_type_says_so() {
        let typed = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            sends_json(&headers)
        };
        assert!(typed("application/json"));
        assert!(typed("Application/JSON; charset=utf-8"));
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            assert!(!typed(other), "{other}");
        }
        assert!(!sends_json(&HeaderMap::new()), "no type at all");
    }
}
