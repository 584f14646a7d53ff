//! Runtime API (`/2018-06-01/runtime/...`): what the function's runtime talks to.
//!
//! Consumes the runtime's HTTP requests; produces state changes in [`EnvState`] that the lifecycle
//! reacts to. `/invocation/next` long-polls: the handler parks a `oneshot` sender in the state and
//! the lifecycle completes it when an invocation arrives (never a busy loop). Responses larger
//! than 6 MB are refused with 413 as Lambda does.
//!
//! [`EnvState`]: crate::environment::state::EnvState

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::oneshot;

use crate::{
    api_error::{ApiError, accepted, api_error},
    environment::state::{EnvShared, RuntimeResult},
};

/// Largest synchronous response payload Lambda accepts.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
pub const HEADER_REQUEST_ID: &str = "Lambda-Runtime-Aws-Request-Id";
pub const HEADER_DEADLINE: &str = "Lambda-Runtime-Deadline-Ms";
pub const HEADER_FUNCTION_ARN: &str = "Lambda-Runtime-Invoked-Function-Arn";
pub const HEADER_TRACE_ID: &str = "Lambda-Runtime-Trace-Id";
pub const HEADER_ERROR_TYPE: &str = "Lambda-Runtime-Function-Error-Type";

pub fn routes() -> Router<Arc<EnvShared>> {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
}

async fn next(State(env): State<Arc<EnvShared>>) -> Response {
    let rx = {
        let mut st = env.lock();
        st.runtime.next_calls += 1;
        st.runtime.last_next_at = Some(Instant::now());
        if let Some(inv) = st.runtime.queued.take() {
            drop(st);
            env.notify();
            return invocation_response(inv);
        }
        let (tx, rx) = oneshot::channel();
        st.runtime.waiter = Some(tx);
        rx
    };
    env.notify();
    match rx.await {
        Ok(inv) => invocation_response(inv),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.EnvironmentShuttingDown",
            "the execution environment is shutting down",
        ),
    }
}

fn invocation_response(inv: crate::environment::state::RuntimeInvocation) -> Response {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(HEADER_REQUEST_ID, &inv.request_id);
    put(HEADER_DEADLINE, &inv.deadline_ms.to_string());
    put(HEADER_FUNCTION_ARN, &inv.function_arn);
    put(HEADER_TRACE_ID, &inv.trace_id);
    put("Content-Type", "application/json");
    (StatusCode::OK, headers, inv.payload).into_response()
}

/// Checks that `id` is the invocation in progress and has no answer yet.
fn check_current(env: &EnvShared, id: &str) -> Result<(), ApiError> {
    let st = env.lock();
    match &st.current {
        Some(cur) if cur.request_id == id && cur.result.is_none() => Ok(()),
        // The RIE answers a second response for an answered invocation with 403.
        Some(cur) if cur.request_id == id => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            format!("invocation {id} already has a response"),
        )),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            format!("Invalid request ID: {id}"),
        )),
    }
}

async fn response(
    State(env): State<Arc<EnvShared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    if let Err(r) = check_current(&env, &id) {
        return r.into_response();
    }
    if body.len() > MAX_RESPONSE_BYTES {
        let msg = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            body.len()
        );
        set_result(
            &env,
            &id,
            RuntimeResult::Error {
                error_type: "Function.ResponseSizeTooLarge".into(),
                body: Bytes::from(
                    serde_json::json!({"errorMessage": msg, "errorType": "Function.ResponseSizeTooLarge"})
                        .to_string(),
                ),
            },
            started,
        );
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Function.ResponseSizeTooLarge",
            msg,
        );
    }
    set_result(&env, &id, RuntimeResult::Response { body }, started);
    accepted()
}

async fn error(
    State(env): State<Arc<EnvShared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    if let Err(r) = check_current(&env, &id) {
        return r.into_response();
    }
    let error_type = error_type_of(&headers, &body);
    set_result(
        &env,
        &id,
        RuntimeResult::Error { error_type, body },
        started,
    );
    accepted()
}

/// The error type: the header if set, else the body's `errorType`, else `Unhandled`.
fn error_type_of(headers: &HeaderMap, body: &Bytes) -> String {
    headers
        .get(HEADER_ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("errorType")?.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "Unhandled".into())
}

fn set_result(env: &EnvShared, id: &str, result: RuntimeResult, started: Instant) {
    {
        let mut st = env.lock();
        if let Some(cur) = st.current.as_mut()
            && cur.request_id == id
            && cur.result.is_none()
        {
            cur.response_started = Some(started);
            cur.result = Some((result, Instant::now()));
        }
    }
    env.notify();
}

async fn init_error(
    State(env): State<Arc<EnvShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    {
        let mut st = env.lock();
        if st.initialised {
            return api_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "init/error is only allowed during INIT",
            );
        }
        let error_type = error_type_of(&headers, &body);
        st.runtime.init_error = Some((error_type, body));
    }
    env.notify();
    accepted()
}
