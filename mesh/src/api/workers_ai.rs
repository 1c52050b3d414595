//! The Workers-AI-style REST API: `POST /ai/run/{model}` and
//! `POST /accounts/{account}/ai/run/{model}`, answers in Workers AI's envelope
//! (`{"result", "success", "errors", "messages"}`), streams as `data: {"response": ...}` events.
//! Image models take the image as the body (`image/png`, `image/jpeg`, `application/octet-stream`)
//! or as `{"image": [bytes]}`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ganglion_client::protocol::{ErrorCode, Input, Output, Parameters, ResponseFrame, WireError};

use super::bodies::{RunBody, RunShape, invalid};
use super::{Api, Call, common_headers, errors, final_headers, read_json};
use crate::models::Task;

/// `POST /ai/run/{model}`.
pub async fn run(
    State(api): State<Arc<Api>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    answer(&api, model, &headers, body).await
}

/// `POST /accounts/{account}/ai/run/{model}`: the account must be the key's.
pub async fn run_in_account(
    State(api): State<Arc<Api>>,
    Path((account, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let key = super::api_key(&headers).map(|k| k.0);
    let now = crate::metering::unix_now();
    match crate::request::authenticate::client_account(&api.context.auth, key, now) {
        Ok(verified) if verified.name == account => answer(&api, model, &headers, body).await,
        Ok(verified) => {
            let error = WireError::new(
                ErrorCode::Unauthenticated,
                format!(
                    "this key belongs to account `{}`, not `{account}`",
                    verified.name
                ),
            );
            let mut response = errors::workers_ai(&error, common_headers(rand::random(), None));
            *response.status_mut() = StatusCode::FORBIDDEN;
            response
        }
        Err(error) => errors::workers_ai(&error, common_headers(rand::random(), None)),
    }
}

async fn answer(api: &Api, model: String, headers: &HeaderMap, body: axum::body::Body) -> Response {
    let built = async {
        let task = api
            .context
            .catalog
            .get(&model)
            .map(|spec| spec.task)
            .ok_or_else(|| {
                WireError::new(ErrorCode::UnknownModel, format!("no such model `{model}`"))
            })?;
        if super::sends_image(headers) {
            // The image or recording itself as the body, as Workers AI's REST API takes it.
            let bytes = super::read_body(body).await?.to_vec();
            let input = match task {
                Task::SpeechRecognition => Input::Audio(bytes),
                Task::ImageToText | Task::ImageClassification => Input::Image(bytes),
                _ => {
                    return Err(invalid(format!(
                        "model `{model}` is for {} and takes {}, not a file",
                        task.as_str(),
                        task.input_name()
                    )));
                }
            };
            let request = super::request(model.clone(), input, Parameters::default(), headers)?;
            return Ok((request, RunShape::One));
        }
        let body: RunBody = read_json(body).await?;
        body.into_request(model.clone(), task, headers)
    };
    let (request, shape) = match built.await {
        Ok(built) => built,
        Err(error) => return errors::workers_ai(&error, common_headers(rand::random(), None)),
    };
    let transcribing = matches!(request.input, Input::Audio(_));
    let mut call = Call::start(api, request);
    if shape == RunShape::Streamed {
        return match call.next().await {
            Some(ResponseFrame::Error(error)) => {
                errors::workers_ai(&error, common_headers(call.id, call.cache().as_ref()))
            }
            None => errors::workers_ai(&super::ended_early(), common_headers(call.id, None)),
            Some(first) => stream(call, first),
        };
    }
    let id = call.id;
    let response = match call.finish().await {
        Ok(response) => response,
        Err(error) => return errors::workers_ai(&error, common_headers(id, None)),
    };
    let result = match &response.output {
        // Workers AI's speech recognition answers the text and its word count.
        Output::Text { text, .. } if transcribing => serde_json::json!({
            "text": text,
            "word_count": text.split_whitespace().count(),
        }),
        Output::Text { text, .. } => serde_json::json!({
            "response": text,
            "usage": {
                "prompt_tokens": response.usage.input_tokens,
                "completion_tokens": response.usage.output_tokens,
                "total_tokens": response.usage.input_tokens + response.usage.output_tokens,
            },
        }),
        Output::Embeddings(vectors) => serde_json::json!({
            "shape": [vectors.len(), vectors.first().map_or(0, Vec::len)],
            "data": vectors,
        }),
        // One text or image gives its list of labels (Workers AI's shape); an array of texts,
        // one list each.
        Output::Labels(lists) => match (shape, lists.as_slice()) {
            (RunShape::One, [one]) => serde_json::json!(one),
            (_, each) => serde_json::json!(each),
        },
        Output::Regions(regions) => {
            let text = regions
                .iter()
                .map(|r| r.text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            // `description` is what Workers AI's image-to-text models answer.
            serde_json::json!({ "text": text, "description": text, "regions": regions })
        }
        _ => serde_json::Value::Null,
    };
    let body =
        serde_json::json!({ "result": result, "success": true, "errors": [], "messages": [] });
    (final_headers(&response), Json(body)).into_response()
}

/// Streams text as `data: {"response": "..."}` events, then `data: [DONE]`.
fn stream(call: Call, first: ResponseFrame) -> Response {
    let headers = common_headers(call.id, call.cache().as_ref());
    let events = futures::stream::unfold(
        (call, Some(first), false),
        |(mut call, next, done)| async move {
            if done {
                return None;
            }
            let frame = match next {
                Some(frame) => Some(frame),
                None => call.next().await,
            };
            let (data, done) = match frame {
                Some(ResponseFrame::Delta(text)) => {
                    (serde_json::json!({ "response": text }).to_string(), false)
                }
                Some(ResponseFrame::Final(response)) => {
                    let last = serde_json::json!({
                        "response": "",
                        "usage": {
                            "prompt_tokens": response.usage.input_tokens,
                            "completion_tokens": response.usage.output_tokens,
                            "total_tokens": response.usage.input_tokens + response.usage.output_tokens,
                        },
                    });
                    // The [DONE] line follows as the stream's last event.
                    let events = vec![
                        Ok::<_, Infallible>(Event::default().data(last.to_string())),
                        Ok(Event::default().data("[DONE]")),
                    ];
                    return Some((futures::stream::iter(events), (call, None, true)));
                }
                Some(ResponseFrame::Error(error)) => {
                    (errors::workers_ai_body(&error).to_string(), true)
                }
                Some(_) => (String::new(), false),
                None => (
                    errors::workers_ai_body(&super::ended_early()).to_string(),
                    true,
                ),
            };
            let events = if data.is_empty() {
                Vec::new()
            } else {
                vec![Ok(Event::default().data(data))]
            };
            Some((futures::stream::iter(events), (call, None, done)))
        },
    );
    let events = futures::StreamExt::flatten(events);
    (headers, Sse::new(events).keep_alive(KeepAlive::default())).into_response()
}
