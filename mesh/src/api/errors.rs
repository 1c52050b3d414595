//! Pipeline errors as HTTP answers, in each dialect: the statuses the OpenAI SDKs map to their
//! exceptions, and Workers AI's envelope and codes.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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

/// Why the door turned a caller away before any route ran: typed, as the pipeline's codes are,
/// but about who calls, not about what is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A client from beyond loopback, while the node serves clients on loopback only (the
    /// promise of `--allow-anonymous`; the QUIC door closes such connections with code 7).
    ClientsLoopbackOnly,
    /// A `Host` that does not name this loopback door: a page from elsewhere whose name was made
    /// to resolve to 127.0.0.1 (DNS rebinding).
    ForeignHost,
}

impl Refusal {
    /// The refusal's stable code (`error.code`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientsLoopbackOnly => "clients_loopback_only",
            Self::ForeignHost => "foreign_host",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::ClientsLoopbackOnly => "this node serves clients on loopback only",
            Self::ForeignHost => "this door answers only to localhost, 127.0.0.1 and [::1]",
        }
    }
}

/// `refusal` as a 403 with an OpenAI-style body whose `error.code` is the refusal's, with
/// `headers` (the request id) added; its connection closes.
pub fn refused(refusal: Refusal, headers: HeaderMap) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": refusal.message(),
            "type": "permission_error",
            "param": null,
            "code": refusal.as_str(),
        }
    });
    closing((StatusCode::FORBIDDEN, headers, Json(body)).into_response())
}

/// `response` as its connection's last: hyper closes the connection once it is written, so a
/// refused client cannot keep its place by asking again on it.
pub fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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

    #[test]
    fn a_refusal_is_a_typed_403_that_closes_its_connection() {
        let response = refused(Refusal::ClientsLoopbackOnly, HeaderMap::new());
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(Refusal::ForeignHost.as_str(), "foreign_host");
    }
}
