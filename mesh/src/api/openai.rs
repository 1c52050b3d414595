//! The OpenAI-compatible API (`/v1`): what the official SDKs send and expect, so that they work
//! unchanged with `base_url` set to a node. Unknown fields are ignored, as OpenAI does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ganglion_client::protocol::{
    ErrorCode, FinalResponse, FinishReason, Input, Output, Parameters, ResponseFrame, Usage,
    WireError,
};

use super::bodies::{ChatBody, CompletionBody, EmbeddingsBody, ModerationsBody, invalid};
use super::{Api, Call, common_headers, errors, final_headers, read_json};
use crate::metering::unix_now;

fn finish_reason(output: &Output) -> &'static str {
    match output {
        Output::Text {
            finish_reason: FinishReason::Length,
            ..
        } => "length",
        _ => "stop",
    }
}

fn text(output: &Output) -> &str {
    match output {
        Output::Text { text, .. } => text,
        _ => "",
    }
}

fn usage(usage: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": usage.input_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.cached_input_tokens },
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "neurons": usage.micro_neurons as f64 / 1e6,
    })
}

/// The two text dialects: chat (`chat.completion`) and plain (`text_completion`).
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Chat,
    Text,
}

/// How one answer is written: its id, creation time and model, shared by all its chunks.
#[derive(Debug, Clone)]
struct Shape {
    dialect: Dialect,
    id: String,
    created: u64,
    model: String,
}

impl Shape {
    fn new(dialect: Dialect, request_id: u128, model: &str) -> Self {
        let prefix = match dialect {
            Dialect::Chat => "chatcmpl",
            Dialect::Text => "cmpl",
        };
        Self {
            dialect,
            id: format!("{prefix}-{request_id:032x}"),
            created: unix_now(),
            model: model.to_owned(),
        }
    }

    fn whole(&self, response: &FinalResponse) -> serde_json::Value {
        let choice = match self.dialect {
            Dialect::Chat => serde_json::json!({
                "index": 0,
                "message": { "role": "assistant", "content": text(&response.output) },
                "finish_reason": finish_reason(&response.output),
                "logprobs": null,
            }),
            Dialect::Text => serde_json::json!({
                "index": 0,
                "text": text(&response.output),
                "finish_reason": finish_reason(&response.output),
                "logprobs": null,
            }),
        };
        serde_json::json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": answered_by(response, &self.model),
            "choices": [choice],
            "usage": usage(&response.usage),
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.dialect, chunk) {
            (Dialect::Chat, false) => "chat.completion",
            (Dialect::Chat, true) => "chat.completion.chunk",
            (Dialect::Text, _) => "text_completion",
        }
    }

    fn chunk(&self, choices: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn piece(&self, text: &str, first: bool, finish: Option<&str>) -> serde_json::Value {
        let choice = match self.dialect {
            Dialect::Chat => {
                let mut delta = serde_json::json!({});
                if first {
                    delta["role"] = "assistant".into();
                }
                if !text.is_empty() || first {
                    delta["content"] = text.into();
                }
                serde_json::json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null })
            }
            Dialect::Text => {
                serde_json::json!({ "index": 0, "text": text, "finish_reason": finish, "logprobs": null })
            }
        };
        self.chunk(serde_json::json!([choice]))
    }
}

fn event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

/// Streams an answer as server-sent events: a chunk per delta, then one with the finish
/// reason (and Ganglion's route and cache facts), the usage chunk when asked for, then
/// `[DONE]`. An error after the stream began is an `error` object in a data line, as OpenAI
/// sends it. Dropping the stream (the client went away) cancels the request.
fn stream(call: Call, first: ResponseFrame, shape: Shape, include_usage: bool) -> Response {
    let headers = common_headers(call.id, call.cache().as_ref());
    let state = Streaming {
        call,
        next: Some(first),
        pending: VecDeque::new(),
        first: true,
        done: false,
        shape,
        include_usage,
    };
    let events = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), s));
            }
            if s.done {
                return None;
            }
            let frame = match s.next.take() {
                Some(frame) => Some(frame),
                None => s.call.next().await,
            };
            s.push(frame);
        }
    });
    (headers, Sse::new(events).keep_alive(KeepAlive::default())).into_response()
}

struct Streaming {
    call: Call,
    next: Option<ResponseFrame>,
    pending: VecDeque<Event>,
    first: bool,
    done: bool,
    shape: Shape,
    include_usage: bool,
}

impl Streaming {
    fn push(&mut self, frame: Option<ResponseFrame>) {
        match frame {
            Some(ResponseFrame::Delta(text)) => {
                let first = std::mem::take(&mut self.first);
                self.pending
                    .push_back(event(&self.shape.piece(&text, first, None)));
            }
            Some(ResponseFrame::Final(response)) => {
                let first = std::mem::take(&mut self.first);
                let mut last = self
                    .shape
                    .piece("", first, Some(finish_reason(&response.output)));
                last["model"] = answered_by(&response, &self.shape.model).into();
                last["ganglion"] = serde_json::json!({
                    "cache_status": response.cache.status.as_str(),
                    "executed_by": response.route.executed_by,
                    "neurons": response.usage.micro_neurons as f64 / 1e6,
                });
                self.pending.push_back(event(&last));
                if self.include_usage {
                    let mut chunk = self.shape.chunk(serde_json::json!([]));
                    chunk["usage"] = usage(&response.usage);
                    self.pending.push_back(event(&chunk));
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
            Some(ResponseFrame::Error(error)) => {
                self.pending.push_back(event(&errors::openai_body(&error)));
                self.done = true;
            }
            Some(_) => {}
            None => {
                self.pending
                    .push_back(event(&errors::openai_body(&super::ended_early())));
                self.done = true;
            }
        }
    }
}

/// Runs a text request and answers it whole or streamed (`Some(include_usage)`), or answers
/// the error that building it met.
async fn answer_text(
    api: &Api,
    built: Result<(ganglion_client::protocol::Request, Option<bool>), WireError>,
    dialect: Dialect,
) -> Response {
    let (request, streaming) = match built {
        Ok(built) => built,
        Err(error) => return errors::openai(&error, common_headers(rand::random(), None)),
    };
    let shape = Shape::new(dialect, request.id, &request.model);
    let mut call = Call::start(api, request);
    match streaming {
        Some(include_usage) => match call.next().await {
            Some(ResponseFrame::Error(error)) => {
                errors::openai(&error, common_headers(call.id, call.cache().as_ref()))
            }
            None => errors::openai(&super::ended_early(), common_headers(call.id, None)),
            Some(first) => stream(call, first, shape, include_usage),
        },
        None => {
            let id = call.id;
            match call.finish().await {
                Ok(response) => {
                    (final_headers(&response), Json(shape.whole(&response))).into_response()
                }
                Err(error) => errors::openai(&error, common_headers(id, None)),
            }
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let built = async { read_json::<ChatBody>(body).await?.into_request(&headers) };
    answer_text(&api, built.await, Dialect::Chat).await
}

/// `POST /v1/completions`: the prompt as one user message.
pub async fn completions(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let built = async {
        read_json::<CompletionBody>(body)
            .await?
            .into_request(&headers)
    };
    answer_text(&api, built.await, Dialect::Text).await
}

/// `POST /v1/embeddings`: vectors as floats, or as base64 of little-endian f32 (what recent
/// SDKs ask for when the caller does not say).
pub async fn embeddings(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let built = async {
        read_json::<EmbeddingsBody>(body)
            .await?
            .into_request(&headers)
    };
    let (request, base64) = match built.await {
        Ok(built) => built,
        Err(error) => return errors::openai(&error, common_headers(rand::random(), None)),
    };
    let model = request.model.clone();
    let call = Call::start(&api, request);
    let id = call.id;
    let response = match call.finish().await {
        Ok(response) => response,
        Err(error) => return errors::openai(&error, common_headers(id, None)),
    };
    let Output::Embeddings(vectors) = &response.output else {
        let error = invalid(format!("`{model}` is not an embedding model"));
        return errors::openai(&error, final_headers(&response));
    };
    let data: Vec<serde_json::Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(vector)
            };
            serde_json::json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": answered_by(&response, &model),
        "usage": {
            "prompt_tokens": response.usage.input_tokens,
            "total_tokens": response.usage.input_tokens,
            "neurons": response.usage.micro_neurons as f64 / 1e6,
        },
    });
    (final_headers(&response), Json(body)).into_response()
}

/// `POST /v1/moderations`: each input classified by a moderation model (refused before it runs
/// when the model, or a fallback, is not one); an input is flagged when its likeliest label
/// is not `neither`. OpenAI's categories are all present: `hate` is hatesonar's
/// `hate_speech`, `harassment` its `offensive_language`, and the others are never flagged.
pub async fn moderations(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let built = async {
        read_json::<ModerationsBody>(body)
            .await?
            .into_request(&headers)
    };
    let request = match built.await {
        Ok(request) => request,
        Err(error) => return errors::openai(&error, common_headers(rand::random(), None)),
    };
    let catalog = &api.context.catalog;
    if let Some(other) = std::iter::once(&request.model)
        .chain(&request.fallbacks)
        .find(|id| !catalog.get(id).is_some_and(moderates))
    {
        let error = invalid(format!("`{other}` is not a moderation model"));
        return errors::openai(&error, common_headers(rand::random(), None));
    }
    let model = request.model.clone();
    let call = Call::start(&api, request);
    let id = call.id;
    let response = match call.finish().await {
        Ok(response) => response,
        Err(error) => return errors::openai(&error, common_headers(id, None)),
    };
    let Output::Labels(lists) = &response.output else {
        let error = invalid(format!("`{model}` is not a text classifier"));
        return errors::openai(&error, final_headers(&response));
    };
    let results: Vec<serde_json::Value> = lists
        .iter()
        .map(|labels| {
            let top = labels.first().map(|l| l.label.as_str());
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            for category in OPENAI_CATEGORIES {
                let label = CATEGORY_LABELS
                    .iter()
                    .find(|(name, _)| *name == category)
                    .and_then(|(_, label)| labels.iter().find(|l| l.label == *label));
                categories.insert(
                    category.into(),
                    label.is_some_and(|l| Some(l.label.as_str()) == top).into(),
                );
                scores.insert(
                    category.into(),
                    label.map_or(0.0, |l| f64::from(l.score)).into(),
                );
            }
            serde_json::json!({
                "flagged": top.is_some_and(|top| top != SAFE_LABEL),
                "categories": categories,
                "category_scores": scores,
            })
        })
        .collect();
    let body = serde_json::json!({
        "id": format!("modr-{id:032x}"),
        "model": answered_by(&response, &model),
        "results": results,
    });
    (final_headers(&response), Json(body)).into_response()
}

/// `POST /v1/audio/transcriptions`: a `multipart/form-data` form with `file` (a WAV recording),
/// `model` (default `@ganglion/moonshine-base-en`) and `response_format` (`json`, the default,
/// or `text`); answers `{"text": ...}` or the bare text. The form is read within the door's
/// bounds (1 MiB, 10 s) and only with an API key (see `api::guard`).
pub async fn transcriptions(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    form: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let id = rand::random();
    let read = async {
        let mut form = form.map_err(|e| invalid(format!("not a multipart form: {e}")))?;
        let (mut file, mut model, mut text) = (None, None, false);
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| invalid(format!("a bad form: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                let message = format!("a bad form field `{name}`: {e}");
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    WireError::new(ErrorCode::TooLarge, message)
                } else {
                    invalid(message)
                }
            })?;
            match name.as_str() {
                "file" => file = Some(bytes.to_vec()),
                "model" => model = Some(String::from_utf8_lossy(&bytes).into_owned()),
                "response_format" => match &*bytes {
                    b"json" => text = false,
                    b"text" => text = true,
                    other => {
                        return Err(invalid(format!(
                            "response_format `{}` is not supported (json or text)",
                            String::from_utf8_lossy(other)
                        )));
                    }
                },
                // `language`, `prompt`, `temperature`: Moonshine is English and greedy.
                _ => {}
            }
        }
        let file = file.ok_or_else(|| invalid("the form has no `file`"))?;
        let model = model.unwrap_or_else(|| crate::models::catalog::SPEECH.to_owned());
        let request = super::request(model, Input::Audio(file), Parameters::default(), &headers)?;
        Ok::<_, WireError>((request, text))
    };
    let (request, as_text) = match tokio::time::timeout(super::BODY_TIMEOUT, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return errors::openai(&error, common_headers(id, None)),
        Err(_) => {
            let error = invalid("the form did not arrive within 10 s");
            return errors::openai(&error, common_headers(id, None));
        }
    };
    let call = Call::start(&api, request);
    let id = call.id;
    let response = match call.finish().await {
        Ok(response) => response,
        Err(error) => return errors::openai(&error, common_headers(id, None)),
    };
    let Output::Text { text, .. } = &response.output else {
        let error = invalid("the model is not a speech model");
        return errors::openai(&error, final_headers(&response));
    };
    if as_text {
        (final_headers(&response), text.clone()).into_response()
    } else {
        (
            final_headers(&response),
            Json(serde_json::json!({ "text": text })),
        )
            .into_response()
    }
}

/// The label of a moderation model that flags nothing (hatesonar's).
const SAFE_LABEL: &str = "neither";

/// OpenAI's moderation categories, every one of which its answers carry.
const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// The OpenAI categories a moderation model's labels stand for.
const CATEGORY_LABELS: [(&str, &str); 2] = [
    ("hate", "hate_speech"),
    ("harassment", "offensive_language"),
];

/// Whether `spec` is a moderation model: the built-in one, or an operator's text classifier
/// (whose labels the operator answers for).
fn moderates(spec: &crate::models::ModelSpec) -> bool {
    spec.id == crate::models::catalog::MODERATION
        || (spec.task == crate::models::Task::TextClassification
            && matches!(spec.source, crate::models::catalog::Source::Local(_)))
}

fn model_object(listing: &ganglion_client::protocol::ModelListing) -> serde_json::Value {
    serde_json::json!({
        "id": listing.id,
        "object": "model",
        "created": 0,
        "owned_by": "ganglion",
        "task": listing.task,
        "class": listing.class,
        "pricing": listing.pricing,
        "hosted_by": listing.hosted_by,
    })
}

/// `GET /v1/models`: the catalog, each model with the nodes hosting it. Listings name the mesh's
/// nodes: the guard lets only callers through who may run requests.
pub async fn models(State(api): State<Arc<Api>>) -> Response {
    let id = rand::random();
    match crate::request::listing::list_models(&api.context).await {
        Ok(listing) => {
            let data: Vec<_> = listing.iter().map(model_object).collect();
            (
                common_headers(id, None),
                Json(serde_json::json!({ "object": "list", "data": data })),
            )
                .into_response()
        }
        Err(error) => errors::openai(&error, common_headers(id, None)),
    }
}

/// `GET /v1/models/{id}` (catalog ids hold `@` and `/`).
pub async fn model(State(api): State<Arc<Api>>, Path(model): Path<String>) -> Response {
    let id = rand::random();
    let listing = match crate::request::listing::list_models(&api.context).await {
        Ok(listing) => listing,
        Err(error) => return errors::openai(&error, common_headers(id, None)),
    };
    match listing.iter().find(|m| m.id == model) {
        Some(found) => (common_headers(id, None), Json(model_object(found))).into_response(),
        None => {
            let error = WireError::new(
                ErrorCode::UnknownModel,
                format!("model `{model}` is not in the catalog"),
            );
            errors::openai(&error, common_headers(id, None))
        }
    }
}

/// The model that answered `response`: the one asked for, or a fallback.
fn answered_by<'a>(response: &'a FinalResponse, asked: &'a str) -> &'a str {
    if response.route.model.is_empty() {
        asked
    } else {
        &response.route.model
    }
}
