//! The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) for ad-hoc use.
//!
//! Consumes HTTP requests; `X-Amz-Invocation-Type` `RequestResponse` (default) waits for the
//! function and answers 200 with its payload (`X-Amz-Function-Error: Unhandled` when it failed),
//! `Event` enqueues an async invocation and answers 202, `DryRun` answers 204. Beyond the
//! concurrency limit the answer is 429 `TooManyRequestsException`; an unknown function is 404
//! `ResourceNotFoundException`. An `X-Amzn-Trace-Id` header is passed through unchanged to the
//! INVOKE event's `tracing.value`, `Lambda-Runtime-Trace-Id` and the `platform.*` records.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use crate::{
    async_invoke::{AsyncEvent, AsyncQueue},
    function::{FunctionHandle, NotInvoked},
    ids,
};

/// The caller's X-Ray trace header, passed through to the function and the extensions.
pub const HEADER_TRACE_ID: &str = "X-Amzn-Trace-Id";
/// Largest request payload (synchronous invocations).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest async payload.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct InvokeApi {
    pub function: FunctionHandle,
    pub async_queue: AsyncQueue,
}

pub fn router(api: Arc<InvokeApi>) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SYNC_PAYLOAD + 1))
        .with_state(api)
}

fn aws_error(status: StatusCode, kind: &str, message: &str, reason: Option<&str>) -> Response {
    let mut body = json!({"Type": "User", "message": message});
    if let Some(r) = reason {
        body["Reason"] = json!(r);
    }
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        resp.headers_mut().insert("X-Amzn-ErrorType", v);
    }
    resp
}

async fn invoke(
    State(api): State<Arc<InvokeApi>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = &api.function.config;
    // The name may be a plain name, a qualified name or an ARN.
    let bare = name
        .rsplit(':')
        .find(|p| !p.is_empty() && *p != "$LATEST")
        .unwrap_or(&name);
    if bare != cfg.name && name != cfg.name && !name.ends_with(&format!(":function:{}", cfg.name)) {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}", name),
            None,
        );
    }
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    if serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json",
            None,
        );
    }
    let invocation_type = headers
        .get("X-Amz-Invocation-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    let request_id = ids::uuid_v4();
    let trace = headers
        .get(HEADER_TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    match invocation_type {
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        "Event" => {
            if payload.len() > MAX_ASYNC_PAYLOAD {
                return aws_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestTooLargeException",
                    "Request must be smaller than 1048576 bytes for the async invocation",
                    None,
                );
            }
            api.async_queue.enqueue(AsyncEvent {
                request_id: request_id.clone(),
                payload,
                trace,
            });
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("X-Amzn-RequestId", v);
            }
            resp
        }
        "RequestResponse" => {
            match api
                .function
                .invoke(request_id.clone(), payload, trace, "RequestResponse", 1)
                .await
            {
                Ok(r) => {
                    let mut resp = (StatusCode::OK, r.body).into_response();
                    let h = resp.headers_mut();
                    h.insert("Content-Type", HeaderValue::from_static("application/json"));
                    if let Ok(v) = HeaderValue::from_str(&r.request_id) {
                        h.insert("X-Amzn-RequestId", v);
                    }
                    if let Ok(v) = HeaderValue::from_str(&cfg.version) {
                        h.insert("X-Amz-Executed-Version", v);
                    }
                    if let Some(e) = r.function_error
                        && let Ok(v) = HeaderValue::from_str(&e)
                    {
                        h.insert("X-Amz-Function-Error", v);
                    }
                    resp
                }
                Err(NotInvoked::Throttled) => aws_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                    Some("ReservedFunctionConcurrentInvocationLimitExceeded"),
                ),
                Err(NotInvoked::ShuttingDown) => aws_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceException",
                    "the sandbox is shutting down",
                    None,
                ),
            }
        }
        other => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("Unsupported invocation type {other}"),
            None,
        ),
    }
}
