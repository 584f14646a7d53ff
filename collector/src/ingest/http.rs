//! OTLP/HTTP receiver (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`): protobuf
//! (`application/x-protobuf`) and JSON (`application/json`, OTLP/JSON: hex ids, lowerCamelCase),
//! optionally gzip-encoded. Errors carry a `google.rpc.Status` in the request's encoding.

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use prost::Message;

use super::{
    ExportResponse, Ingest, Protocol, Reject, Signal,
    body::{BodyError, decode_content, read_limited},
    decode::Decoded,
    now_s,
};

pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .with_state(ingest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn status_body(format: Format, code: i32, message: &str) -> (HeaderValue, Bytes) {
    match format {
        Format::Json => (
            HeaderValue::from_static(JSON),
            Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string()),
        ),
        Format::Protobuf => (
            HeaderValue::from_static(PROTOBUF),
            Bytes::from(super::grpc::rpc_status(code, message, None)),
        ),
    }
}

fn reject(
    ingest: &Ingest,
    signal: Signal,
    format: Format,
    reason: Reject,
    message: &str,
) -> Response {
    ingest.stats.rejected(Protocol::Http, signal, reason);
    let (status, grpc_code) = match reason {
        Reject::Unauthenticated => (StatusCode::UNAUTHORIZED, 16),
        Reject::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, 8),
        Reject::Malformed => (StatusCode::BAD_REQUEST, 3),
        Reject::QueueFull => (StatusCode::TOO_MANY_REQUESTS, 8),
        Reject::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3),
        Reject::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, 14),
    };
    let (ct, body) = status_body(format, grpc_code, message);
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    match reason {
        Reject::QueueFull | Reject::ShuttingDown => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Reject::Unauthenticated => {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    resp
}

/// The shared path of every signal: checks, body, decode, enqueue.
async fn handle<Req, Resp>(
    ingest: Ingest,
    signal: Signal,
    req: Request,
    decode: impl FnOnce(&Ingest, &Req, u64) -> Decoded,
) -> Response
where
    Req: Message + Default + serde::de::DeserializeOwned,
    Resp: Message + ExportResponse + serde::Serialize,
{
    let headers = req.headers();
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ctype.as_str() {
        JSON => Format::Json,
        _ => Format::Protobuf,
    };
    if ingest.stopping.is_cancelled() {
        return reject(
            &ingest,
            signal,
            format,
            Reject::ShuttingDown,
            "shutting down",
        );
    }
    if !ingest.authorized(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        return reject(
            &ingest,
            signal,
            format,
            Reject::Unauthenticated,
            "missing or wrong bearer token",
        );
    }
    if ctype != PROTOBUF && ctype != JSON {
        return reject(
            &ingest,
            signal,
            format,
            Reject::UnsupportedMediaType,
            &format!("Content-Type `{ctype}`: expected {PROTOBUF} or {JSON}"),
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ingest.max_body_bytes) {
        return reject(
            &ingest,
            signal,
            format,
            Reject::TooLarge,
            &format!("request body exceeds {} bytes", ingest.max_body_bytes),
        );
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw = match read_limited(req.into_body(), ingest.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return body_error(&ingest, signal, format, &e),
    };
    let data = match decode_content(encoding.as_deref(), raw, ingest.max_decompressed_bytes) {
        Ok(b) => b,
        Err(e) => return body_error(&ingest, signal, format, &e),
    };
    let parsed: Result<Req, String> = match format {
        Format::Protobuf => Req::decode(data).map_err(|e| format!("invalid protobuf: {e}")),
        Format::Json => {
            serde_json::from_slice(&data).map_err(|e| format!("invalid OTLP/JSON: {e}"))
        }
    };
    let request = match parsed {
        Ok(r) => r,
        Err(msg) => return reject(&ingest, signal, format, Reject::Malformed, &msg),
    };
    let decoded = decode(&ingest, &request, now_s());
    let resp = match ingest.submit(Protocol::Http, signal, decoded) {
        Ok(partial) => Resp::accepted(partial),
        Err(r) => {
            let msg = match r {
                Reject::QueueFull => "ingest queue full; retry later",
                _ => "shutting down",
            };
            return reject(&ingest, signal, format, r, msg);
        }
    };
    let (ct, body) = match format {
        Format::Protobuf => (
            HeaderValue::from_static(PROTOBUF),
            Body::from(resp.encode_to_vec()),
        ),
        Format::Json => (
            HeaderValue::from_static(JSON),
            Body::from(serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec())),
        ),
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, ct);
    r
}

fn body_error(ingest: &Ingest, signal: Signal, format: Format, e: &BodyError) -> Response {
    let reason = match e {
        BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. } => Reject::TooLarge,
        BodyError::UnsupportedEncoding(_) => Reject::UnsupportedMediaType,
        BodyError::BadGzip(_) | BodyError::Read(_) => Reject::Malformed,
    };
    reject(ingest, signal, format, reason, &e.to_string())
}

async fn traces(State(ingest): State<Ingest>, req: Request) -> Response {
    handle::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
        ingest.clone(),
        Signal::Traces,
        req,
        |i, r, now| i.decoder.traces(r, now),
    )
    .await
}

async fn metrics(State(ingest): State<Ingest>, req: Request) -> Response {
    handle::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
        ingest.clone(),
        Signal::Metrics,
        req,
        |i, r, now| i.decoder.metrics(r, now),
    )
    .await
}

async fn logs(State(ingest): State<Ingest>, req: Request) -> Response {
    handle::<ExportLogsServiceRequest, ExportLogsServiceResponse>(
        ingest.clone(),
        Signal::Logs,
        req,
        |i, r, now| i.decoder.logs(r, now),
    )
    .await
}
