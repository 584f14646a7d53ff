//! Lambda Extensions API client: register, then long-poll `/event/next`.
//!
//! Consumes `AWS_LAMBDA_RUNTIME_API`; produces a [`Registration`] and a stream of [`NextEvent`]s
//! (one per `/event/next` call, made only when `lifecycle` asks). Registers for INVOKE and
//! SHUTDOWN; on Lambda Managed Instances (`AWS_LAMBDA_INITIALIZATION_TYPE`, or a 403
//! `Extension.InvalidEventType` answer to INVOKE) registers for SHUTDOWN only.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;

use crate::http::{HttpClient, HttpError};

pub const EXTENSION_API_VERSION: &str = "2020-01-01";
pub const HEADER_NAME: &str = "Lambda-Extension-Name";
pub const HEADER_ID: &str = "Lambda-Extension-Identifier";
pub const HEADER_ACCEPT_FEATURE: &str = "Lambda-Extension-Accept-Feature";
pub const INVALID_EVENT_TYPE: &str = "Extension.InvalidEventType";
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("{0}: missing Lambda-Extension-Identifier header")]
    NoIdentifier(&'static str),
    #[error("bad event: {0}")]
    BadEvent(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub id: String,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub account_id: Option<String>,
    /// Registered for SHUTDOWN only (Managed Instances): no INVOKE events will come.
    pub shutdown_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NextEvent {
    Invoke {
        request_id: String,
        deadline_ms: Option<u64>,
        invoked_arn: Option<String>,
        xray: Option<String>,
    },
    Shutdown {
        reason: Option<String>,
        deadline_ms: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct ExtensionsApi {
    client: HttpClient,
    base: String,
    id: String,
}

/// Registers; falls back to SHUTDOWN only when INVOKE is refused.
pub async fn register(
    client: &HttpClient,
    runtime_api: &str,
    name: &str,
    managed_instances: bool,
) -> Result<(ExtensionsApi, Registration), ApiError> {
    let base = format!("http://{runtime_api}/{EXTENSION_API_VERSION}/extension");
    let attempt = |events: &'static [&'static str]| {
        let body = serde_json::json!({ "events": events }).to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/register"))
            .header(HEADER_NAME, name)
            .header(HEADER_ACCEPT_FEATURE, "accountId")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        async move {
            let req = req.map_err(|e| ApiError::BadEvent(e.to_string()))?;
            client
                .send(req, Some(REGISTER_TIMEOUT))
                .await
                .map_err(ApiError::from)
        }
    };
    let mut shutdown_only = managed_instances;
    let mut resp = if managed_instances {
        attempt(&["SHUTDOWN"]).await?
    } else {
        attempt(&["INVOKE", "SHUTDOWN"]).await?
    };
    if !managed_instances
        && resp.status.as_u16() == 403
        && String::from_utf8_lossy(&resp.body).contains(INVALID_EVENT_TYPE)
    {
        shutdown_only = true;
        resp = attempt(&["SHUTDOWN"]).await?;
    }
    if !resp.status.is_success() {
        return Err(ApiError::Status {
            what: "register",
            status: resp.status.as_u16(),
            body: String::from_utf8_lossy(&resp.body).into_owned(),
        });
    }
    let id = resp
        .headers
        .get(HEADER_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(ApiError::NoIdentifier("register"))?;
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let reg = Registration {
        id: id.clone(),
        function_name: s("functionName"),
        function_version: s("functionVersion"),
        account_id: s("accountId"),
        shutdown_only,
    };
    Ok((
        ExtensionsApi {
            client: client.clone(),
            base,
            id,
        },
        reg,
    ))
}

impl ExtensionsApi {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `GET /event/next`: blocks until Lambda has an event for us.
    pub async fn next(self) -> Result<NextEvent, ApiError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/event/next", self.base))
            .header(HEADER_ID, &self.id)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ApiError::BadEvent(e.to_string()))?;
        let resp = self.client.send(req, None).await?;
        if !resp.status.is_success() {
            return Err(ApiError::Status {
                what: "event/next",
                status: resp.status.as_u16(),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        parse_next(&resp.body)
    }
}

/// Parses an `/event/next` body.
pub fn parse_next(body: &[u8]) -> Result<NextEvent, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadEvent(e.to_string()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let deadline_ms = v.get("deadlineMs").and_then(crate::events::value_u64);
    match v.get("eventType").and_then(Value::as_str) {
        Some("INVOKE") => Ok(NextEvent::Invoke {
            request_id: s("requestId")
                .ok_or_else(|| ApiError::BadEvent("INVOKE without requestId".into()))?,
            deadline_ms,
            invoked_arn: s("invokedFunctionArn"),
            xray: v
                .get("tracing")
                .and_then(|t| t.get("value"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        Some("SHUTDOWN") => Ok(NextEvent::Shutdown {
            reason: s("shutdownReason"),
            deadline_ms,
        }),
        other => Err(ApiError::BadEvent(format!("unknown eventType {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_events() {
        let inv = br#"{"eventType":"INVOKE","deadlineMs":1596036892000,"requestId":"3da1f2dc-3222-475e-9205-e2e6c6318895","invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:ExtensionTest","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"}}"#;
        assert_eq!(
            parse_next(inv).unwrap(),
            NextEvent::Invoke {
                request_id: "3da1f2dc-3222-475e-9205-e2e6c6318895".into(),
                deadline_ms: Some(1_596_036_892_000),
                invoked_arn: Some(
                    "arn:aws:lambda:us-east-1:123456789012:function:ExtensionTest".into()
                ),
                xray: Some(
                    "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"
                        .into()
                ),
            }
        );
        let sd =
            br#"{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":1596036894000}"#;
        assert_eq!(
            parse_next(sd).unwrap(),
            NextEvent::Shutdown {
                reason: Some("spindown".into()),
                deadline_ms: Some(1_596_036_894_000)
            }
        );
        assert!(parse_next(b"{}").is_err());
        assert!(parse_next(b"nope").is_err());
    }
}
