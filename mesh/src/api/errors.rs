//! Pipeline errors as HTTP answers, in each dialect: the statuses the OpenAI SDKs map to their
//! exceptions, and Workers AI's envelope and codes.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ganglion_client::protocol::{ErrorCode, WireError};

/// The HTTP status of a pipeline error.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput | ErrorCode::ContextLengthExceeded => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::UnknownModel => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::QuotaExceeded | ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable | ErrorCode::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::PeerLost => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Retry advice: a spent quota is not worth retrying today (`x-should-retry: false` stops the
/// OpenAI SDKs' automatic retries); a full node is, a second later.
fn retry_headers(code: ErrorCode) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match code {
        ErrorCode::QuotaExceeded => {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        ErrorCode::Overloaded => {
            headers.insert("retry-after", HeaderValue::from_static("1"));
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        _ => {}
    }
    headers
}

/// OpenAI's error type for a code.
fn openai_type(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthenticated => "authentication_error",
        ErrorCode::QuotaExceeded => "insufficient_quota",
        ErrorCode::Overloaded => "rate_limit_error",
        ErrorCode::InvalidInput
        | ErrorCode::ContextLengthExceeded
        | ErrorCode::UnknownModel
        | ErrorCode::TooLarge => "invalid_request_error",
        _ => "server_error",
    }
}

/// The OpenAI error body of `error`.
pub fn openai_body(error: &WireError) -> serde_json::Value {
    let code = match error.code {
        ErrorCode::UnknownModel => "model_not_found",
        ErrorCode::Unauthenticated => "invalid_api_key",
        ErrorCode::QuotaExceeded => "insufficient_quota",
        other => other.as_str(),
    };
    serde_json::json!({
        "error": {
            "message": error.message,
            "type": openai_type(error.code),
            "param": null,
            "code": code,
        }
    })
}

/// `error` as an OpenAI-style answer, with `headers` (the request id) added.
pub fn openai(error: &WireError, mut headers: HeaderMap) -> Response {
    headers.extend(retry_headers(error.code));
    (status(error.code), headers, Json(openai_body(error))).into_response()
}

/// Workers AI's error code for a pipeline error.
pub fn workers_ai_code(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::UnknownModel => 5007,
        ErrorCode::TooLarge => 3006,
        ErrorCode::DeadlineExceeded => 3007,
        ErrorCode::Overloaded | ErrorCode::Unavailable => 3040,
        ErrorCode::QuotaExceeded => 4006,
        ErrorCode::Unauthenticated => 10000,
        ErrorCode::InvalidInput | ErrorCode::ContextLengthExceeded => 5006,
        _ => 5000,
    }
}

/// The Workers AI envelope of `error`.
pub fn workers_ai_body(error: &WireError) -> serde_json::Value {
    serde_json::json!({
        "result": null,
        "success": false,
        "errors": [{ "code": workers_ai_code(error.code), "message": format!("{}: {}", error.code, error.message) }],
        "messages": [],
    })
}

/// `error` as a Workers-AI-style answer.
pub fn workers_ai(error: &WireError, mut headers: HeaderMap) -> Response {
    headers.extend(retry_headers(error.code));
    (status(error.code), headers, Json(workers_ai_body(error))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_gets_the_status_the_sdks_expect() {
        for (code, expected) in [
            (ErrorCode::InvalidInput, 400),
            (ErrorCode::ContextLengthExceeded, 400),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::UnknownModel, 404),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::QuotaExceeded, 429),
            (ErrorCode::Overloaded, 429),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::DeadlineExceeded, 504),
        ] {
            assert_eq!(status(code).as_u16(), expected, "{code}");
        }
        let quota = WireError::new(ErrorCode::QuotaExceeded, "spent");
        let response = openai(&quota, HeaderMap::new());
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert_eq!(workers_ai_code(ErrorCode::QuotaExceeded), 4006);
        assert_eq!(workers_ai_code(ErrorCode::UnknownModel), 5007);
    }
}
