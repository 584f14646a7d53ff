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

/// An API error not yet rendered (small, so it can travel in a `Result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.status, self.error_type, self.message)
    }
}
