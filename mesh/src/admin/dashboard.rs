//! The dashboard: a page compiled into the binary (`GET /`, open: it holds no data), the mesh
//! view it polls (`GET /admin/mesh`), and its "try it" box (`POST /admin/try`), both behind
//! the admin token. The page keeps the token in `sessionStorage` and sends it as a bearer
//! header, never in a URL.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ganglion_client::protocol::{ChatMessage, Input, Parameters, Request, ResponseFrame, Role};

use super::context::{Context, unavailable};
use crate::api::Call;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Everything the page loads comes from this node; nothing from anywhere else, no inline
/// script, and no framing by other pages.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /admin/mesh`: every node's report, and today's Neurons per account.
pub async fn mesh(State(ctx): State<Context>) -> Response {
    let Some(_view) = ctx.view_slot() else {
        return unavailable("too many mesh views are being gathered; try again");
    };
    let parts = ctx.parts();
    Json(crate::dashboard::mesh_view(&parts.reporter, &parts.meter).await).into_response()
}

/// Body of `POST /admin/try`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Try {
    /// The model.
    pub model: String,
    /// The API key to run it under.
    pub key: String,
    /// The prompt (for an embedding model, the text).
    pub prompt: String,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
}

/// `POST /admin/try`: runs a prompt under an API key, as a client of this node would, and
/// streams it back as server-sent events: `delta` (text), then `final` (the answer with its
/// route, cache status and Neurons) or `error` (code and message).
pub async fn try_it(State(ctx): State<Context>, body: axum::body::Body) -> Response {
    let body: Try = match crate::api::read_json(body).await {
        Ok(body) => body,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, Json(error_json(&error))).into_response();
        }
    };
    let api = &ctx.parts().api;
    let input = match api.context.catalog.get(&body.model).map(|spec| spec.task) {
        Some(crate::models::Task::TextEmbeddings) => Input::Embed(vec![body.prompt]),
        Some(crate::models::Task::TextClassification) => Input::Classify(vec![body.prompt]),
        _ => Input::Chat(vec![ChatMessage {
            role: Role::User,
            content: body.prompt,
        }]),
    };
    let request = Request {
        parameters: Parameters {
            max_tokens: body.max_tokens,
            ..Parameters::default()
        },
        api_key: Some(ganglion_client::protocol::ApiKey(body.key)),
        ..Request::new(body.model, input)
    };
    let call = Call::start(api, request);
    let events = futures::stream::unfold((call, false), |(mut call, done)| async move {
        if done {
            return None;
        }
        let (event, done) = match call.next().await {
            Some(ResponseFrame::Delta(text)) => (
                Event::default()
                    .event("delta")
                    .data(serde_json::json!({ "text": text }).to_string()),
                false,
            ),
            Some(ResponseFrame::Final(response)) => (
                Event::default()
                    .event("final")
                    .data(final_json(&response).to_string()),
                true,
            ),
            Some(ResponseFrame::Error(error)) => (
                Event::default()
                    .event("error")
                    .data(error_json(&error).to_string()),
                true,
            ),
            Some(_) => (Event::default().comment("frame"), false),
            None => (
                Event::default()
                    .event("error")
                    .data(error_json(&crate::api::ended_early()).to_string()),
                true,
            ),
        };
        Some((Ok::<_, Infallible>(event), (call, done)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn error_json(error: &ganglion_client::protocol::WireError) -> serde_json::Value {
    serde_json::json!({ "code": error.code.as_str(), "message": error.message })
}

fn final_json(response: &ganglion_client::protocol::FinalResponse) -> serde_json::Value {
    use ganglion_client::protocol::Output;
    let output = match &response.output {
        Output::Text { text, .. } => serde_json::json!({ "text": text }),
        Output::Embeddings(vectors) => serde_json::json!({
            "dimensions": vectors.first().map_or(0, Vec::len),
            "head": vectors.first().map(|v| v.iter().take(8).collect::<Vec<_>>()),
        }),
        Output::Labels(lists) => serde_json::json!({ "labels": lists.first() }),
        Output::Regions(regions) => serde_json::json!({
            "text": regions.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n"),
        }),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "id": format!("{:032x}", response.id),
        "output": output,
        "route": {
            "entry": response.route.entry,
            "executed_by": response.route.executed_by,
            "path": response.route.path,
            "hops": response.route.hops(),
        },
        "cache": {
            "status": response.cache.status.as_str(),
            "shard": response.cache.shard,
            "age_ms": response.cache.age_ms,
        },
        "neurons": crate::metering::neurons_text(response.usage.micro_neurons),
        "usage": {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
        },
        "timings": {
            "first_token_ms": response.timings.first_token_ms,
            "total_ms": response.timings.total_ms,
        },
    })
}
