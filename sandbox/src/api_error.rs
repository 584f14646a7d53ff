//! The error body every Lambda-internal API answers with:
//! `{"errorMessage": "...", "errorType": "..."}` (as the AWS Runtime Interface Emulator does).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

pub fn api_error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"errorMessage": message.into(), "errorType": error_type})),
    )
        .into_response()
}

/// `202 {"status":"OK"}`, the RIE's acknowledgement of `/response`, `/error` and `/init/error`.
pub fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({"status": "OK"}))).into_response()
}
