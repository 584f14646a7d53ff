//! Extensions API (`/2020-01-01/extension/...`): what external extensions talk to.
//!
//! Consumes extension requests; produces registrations and readiness in [`EnvState`]. Errors follow
//! the AWS Runtime Interface Emulator: 403 with `Extension.MissingExtensionIdentifier`,
//! `Extension.InvalidExtensionIdentifier`, `Extension.UnknownExtensionIdentifier`,
//! `Extension.InvalidEventType` (also for SHUTDOWN asked by an internal extension, one whose name
//! is not the file name of an executable in the extensions directory),
//! `Extension.InvalidExtensionName` (missing or duplicate name), `Extension.RegistrationClosed`,
//! `Extension.MissingHeader`, `Extension.InvalidExtensionState` (calls after `/exit/error`, which
//! also makes the lifecycle reset the environment); 400
//! `InvalidRequestFormat` for a body that is not the documented JSON. `/event/next` long-polls on a
//! parked `oneshot`.
//!
//! [`EnvState`]: crate::environment::state::EnvState

use std::{collections::VecDeque, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{
    api_error::{ApiError, accepted, api_error},
    environment::state::{EnvShared, ExtensionEntry},
    ids,
    telemetry_api::events,
};

pub const HEADER_NAME: &str = "Lambda-Extension-Name";
pub const HEADER_IDENTIFIER: &str = "Lambda-Extension-Identifier";
pub const HEADER_EVENT_IDENTIFIER: &str = "Lambda-Extension-Event-Identifier";
pub const HEADER_ERROR_TYPE: &str = "Lambda-Extension-Function-Error-Type";
pub const HEADER_ACCEPT_FEATURE: &str = "Lambda-Extension-Accept-Feature";
/// Lambda's limit on external extensions per function.
pub const MAX_EXTENSIONS: usize = 10;

pub fn routes() -> Router<Arc<EnvShared>> {
    Router::new()
        .route("/2020-01-01/extension/register", post(register))
        .route("/2020-01-01/extension/event/next", get(next))
        .route("/2020-01-01/extension/init/error", post(init_error))
        .route("/2020-01-01/extension/exit/error", post(exit_error))
}

#[derive(Debug, Deserialize)]
struct RegisterBody {
    events: Vec<String>,
}

async fn register(State(env): State<Arc<EnvShared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(name) = header(&headers, HEADER_NAME) else {
        // The RIE's answer (not `Extension.MissingHeader`): a missing name is an invalid name.
        return api_error(
            StatusCode::FORBIDDEN,
            "Extension.InvalidExtensionName",
            format!("Missing {HEADER_NAME} header"),
        );
    };
    let parsed: RegisterBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestFormat",
                format!("cannot parse the register body: {e}"),
            );
        }
    };
    let mut invoke = false;
    let mut shutdown = false;
    for ev in &parsed.events {
        match ev.as_str() {
            "INVOKE" => invoke = true,
            "SHUTDOWN" => shutdown = true,
            other => {
                return api_error(
                    StatusCode::FORBIDDEN,
                    "Extension.InvalidEventType",
                    format!("Unknown event type: {other}"),
                );
            }
        }
    }
    let id = ids::uuid_v4();
    {
        let mut st = env.lock();
        if !st.registration_open {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.RegistrationClosed",
                "Extension registration closed already",
            );
        }
        // Lambda (and the RIE) takes an extension whose name is not the file name of one of the
        // executables it started for an internal extension, and those get no SHUTDOWN.
        if shutdown && !st.external_names.iter().any(|n| n == name) {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.InvalidEventType",
                format!(
                    "ShutdownEventNotSupportedForInternalExtension: {name} is not the file name of an external extension"
                ),
            );
        }
        if st.extensions.iter().any(|e| e.name == name) {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.InvalidExtensionName",
                format!("Extension {name} is already registered"),
            );
        }
        if st.extensions.len() >= MAX_EXTENSIONS {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.TooManyExtensions",
                format!("at most {MAX_EXTENSIONS} extensions may register"),
            );
        }
        st.extensions.push(ExtensionEntry {
            id: id.clone(),
            name: name.to_owned(),
            invoke,
            shutdown,
            waiter: None,
            queued: VecDeque::new(),
            ready: false,
            when_ready: None,
            init_error: None,
            exit_error: None,
        });
    }
    env.notify();
    let f = &env.info.function;
    let mut body = json!({
        "functionName": f.name,
        "functionVersion": f.version,
        "handler": f.handler.join(" "),
    });
    if header(&headers, HEADER_ACCEPT_FEATURE).is_some_and(|v| v.contains("accountId")) {
        body["accountId"] = json!(f.account_id);
    }
    let mut out = (StatusCode::OK, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        out.headers_mut().insert(HEADER_IDENTIFIER, v);
    }
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Checks the `Lambda-Extension-Identifier` header: present, a UUID, registered.
pub fn identify(env: &EnvShared, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(id) = header(headers, HEADER_IDENTIFIER) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Extension.MissingExtensionIdentifier",
            format!("Missing {HEADER_IDENTIFIER} header"),
        ));
    };
    if !ids::is_uuid(id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Extension.InvalidExtensionIdentifier",
            format!("Invalid {HEADER_IDENTIFIER}"),
        ));
    }
    let id = id.to_ascii_lowercase();
    if env.lock().extensions.iter().any(|e| e.id == id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Extension.UnknownExtensionIdentifier",
            format!("Unknown extension {id}"),
        ))
    }
}

async fn next(State(env): State<Arc<EnvShared>>, headers: HeaderMap) -> Response {
    let id = match identify(&env, &headers) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let (rx, first_ready) = {
        let mut st = env.lock();
        let Some(ext) = st.extension_mut(&id) else {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.UnknownExtensionIdentifier",
                format!("Unknown extension {id}"),
            );
        };
        // After `/exit/error` no further call succeeds (RIE: ExitError → Ready is refused).
        if ext.exit_error.is_some() {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.InvalidExtensionState",
                format!("State transition from ExitError to Ready failed for extension {id}"),
            );
        }
        let first_ready = ext.when_ready.is_none();
        ext.ready = true;
        ext.when_ready = Some(Instant::now());
        if let Some(ev) = ext.queued.pop_front() {
            ext.ready = false;
            drop(st);
            env.notify();
            return event_response(ev);
        }
        let (tx, rx) = oneshot::channel();
        ext.waiter = Some(tx);
        let info = first_ready.then(|| {
            let mut evs = Vec::new();
            if ext.invoke {
                evs.push("INVOKE");
            }
            if ext.shutdown {
                evs.push("SHUTDOWN");
            }
            (ext.name.clone(), evs)
        });
        (rx, info)
    };
    if let Some((name, evs)) = first_ready {
        env.emit(events::extension(&name, "Ready", &evs, None));
    }
    env.notify();
    match rx.await {
        Ok(ev) => event_response(ev),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Extension.EnvironmentShuttingDown",
            "the execution environment is shutting down",
        ),
    }
}

/// An event for `/event/next`. Only INVOKE carries `Lambda-Extension-Event-Identifier` (the RIE
/// sends none with SHUTDOWN).
fn event_response(ev: Value) -> Response {
    let invoke = ev["eventType"] == "INVOKE";
    let mut out = (StatusCode::OK, Json(ev)).into_response();
    if invoke && let Ok(v) = HeaderValue::from_str(&ids::uuid_v4()) {
        out.headers_mut().insert(HEADER_EVENT_IDENTIFIER, v);
    }
    out
}

async fn init_error(
    State(env): State<Arc<EnvShared>>,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    report_error(&env, &headers, true)
}

async fn exit_error(
    State(env): State<Arc<EnvShared>>,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    report_error(&env, &headers, false)
}

fn report_error(env: &EnvShared, headers: &HeaderMap, init: bool) -> Response {
    let id = match identify(env, headers) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let Some(error_type) = header(headers, HEADER_ERROR_TYPE).map(str::to_owned) else {
        return api_error(
            StatusCode::FORBIDDEN,
            "Extension.MissingHeader",
            format!("Missing {HEADER_ERROR_TYPE} header"),
        );
    };
    let name = {
        let mut st = env.lock();
        if init && st.initialised {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.InvalidExtensionState",
                "init/error is only allowed during INIT",
            );
        }
        let Some(ext) = st.extension_mut(&id) else {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.UnknownExtensionIdentifier",
                format!("Unknown extension {id}"),
            );
        };
        if ext.exit_error.is_some() {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.InvalidExtensionState",
                format!("extension {id} already reported an exit error"),
            );
        }
        if init {
            ext.init_error = Some(error_type.clone());
        } else {
            ext.exit_error = Some(error_type.clone());
        }
        ext.name.clone()
    };
    if init {
        env.emit(events::extension(&name, "Failed", &[], Some(&error_type)));
    }
    env.notify();
    accepted()
}
