//! Ingest: OTLP/gRPC (`grpc`, tonic) and OTLP/HTTP (`http`, axum; protobuf and JSON), both gzip.
//!
//! - **Consumes** OTLP export requests for traces, metrics and logs from our extension, from the
//!   sandbox / CloudWatch Metric Streams (Summary points) and from any OpenTelemetry SDK.
//! - **Checks**, in this order: shutting down (503 / UNAVAILABLE), bearer token when configured
//!   (401 / UNAUTHENTICATED), body size (413; gRPC: RESOURCE_EXHAUSTED from tonic's own limit),
//!   decompressed size (413: gzip is stream-decompressed into a buffer capped at
//!   `max_decompressed_bytes`, so a bomb is refused after at most that many bytes), decoding
//!   (400 / INVALID_ARGUMENT with the decoder's reason; only that request is affected).
//! - **Produces** one [`Batch`] per request (`decode`), sent with `try_send` into the bounded
//!   ingest queue owned by `aggregate`. **When full**: 429 with `Retry-After: 1` /
//!   RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` of 1 s; the request is not half-applied.
//! - **Partial success**: a record that claims to be ours but cannot be aggregated (an
//!   invocation span without `faas.name`, a NaN duration, a negative count; [`ItemReject`]) is
//!   left out, the rest of the request is kept, and the response's `partial_success` names how
//!   many were rejected and why (the first reason), on both protocols.
//! - **gRPC decoding failures** happen inside tonic, before the handler: [`grpc`] classifies them
//!   (malformed → INVALID_ARGUMENT, oversize → RESOURCE_EXHAUSTED without RetryInfo) and counts
//!   them under the same reasons as OTLP/HTTP.
//! - **Observes itself** through [`IngestStats`]: requests by protocol, signal and result; items
//!   accepted by signal; rejections by reason; records left out by signal and reason.

pub mod body;
pub mod decode;
pub mod grpc;
pub mod http;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aggregate::Batch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc = 0,
    Http = 1,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Self::Grpc, Self::Http];
    pub fn label(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces = 0,
    Metrics = 1,
    Logs = 2,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Self::Traces, Self::Metrics, Self::Logs];
    pub fn label(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Metrics => "metrics",
            Self::Logs => "logs",
        }
    }
}

/// Why a request was refused (`reason` label; `result` label of the request counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Unauthenticated = 0,
    TooLarge = 1,
    Malformed = 2,
    QueueFull = 3,
    UnsupportedMediaType = 4,
    ShuttingDown = 5,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Self::Unauthenticated,
        Self::TooLarge,
        Self::Malformed,
        Self::QueueFull,
        Self::UnsupportedMediaType,
        Self::ShuttingDown,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::QueueFull => "queue_full",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// Why one record of an accepted request was left out (OTLP partial success; `reason` label of
/// `lambdawatch_ingest_rejected_items_total`). Only records that claim to be ours (a Contract 1
/// span type, a Metric Streams platform count, the extension's self-metrics) can be rejected;
/// anything else is accepted and counted as foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemReject {
    /// An invocation/init span whose resource has no `faas.name`.
    NoFunction = 0,
    /// A duration, count or outcome that is not a valid value (negative, NaN, unknown outcome).
    InvalidValue = 1,
}

impl ItemReject {
    pub const ALL: [ItemReject; 2] = [Self::NoFunction, Self::InvalidValue];
    pub fn label(self) -> &'static str {
        match self {
            Self::NoFunction => "no_function",
            Self::InvalidValue => "invalid_value",
        }
    }
}

/// Results of the request counter: `ok` then every reject reason.
pub const RESULTS: usize = 1 + Reject::ALL.len();

/// Ingest self-observation (fixed label sets, lock-free).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// `[protocol][signal][result]`, result 0 = `ok`, `1 + Reject as usize` otherwise.
    requests: [[[AtomicU64; RESULTS]; 3]; 2],
    items: [AtomicU64; 3],
    rejected: [AtomicU64; 6],
    /// `[signal][ItemReject]`: records left out of accepted requests.
    rejected_items: [[AtomicU64; 2]; 3],
    /// Spans / points that carried data but were not ours to aggregate (counted, accepted).
    pub foreign_items: AtomicU64,
}

impl IngestStats {
    pub fn accepted(&self, p: Protocol, s: Signal, items: u64) {
        self.requests[p as usize][s as usize][0].fetch_add(1, Ordering::Relaxed);
        self.items[s as usize].fetch_add(items, Ordering::Relaxed);
    }

    pub fn rejected(&self, p: Protocol, s: Signal, r: Reject) {
        self.requests[p as usize][s as usize][1 + r as usize].fetch_add(1, Ordering::Relaxed);
        self.rejected[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records of an accepted request that were left out (partial success).
    pub fn rejected_items(&self, s: Signal, counts: &decode::Rejected) {
        for r in ItemReject::ALL {
            let n = counts.count(r);
            if n > 0 {
                self.rejected_items[s as usize][r as usize].fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn items_rejected(&self, s: Signal, r: ItemReject) -> u64 {
        self.rejected_items[s as usize][r as usize].load(Ordering::Relaxed)
    }

    pub fn requests(&self, p: Protocol, s: Signal, result: Option<Reject>) -> u64 {
        let i = result.map_or(0, |r| 1 + r as usize);
        self.requests[p as usize][s as usize][i].load(Ordering::Relaxed)
    }

    pub fn items(&self, s: Signal) -> u64 {
        self.items[s as usize].load(Ordering::Relaxed)
    }

    pub fn rejections(&self, r: Reject) -> u64 {
        self.rejected[r as usize].load(Ordering::Relaxed)
    }
}

/// Settings and shared handles both receivers use.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub auth_token: Option<Arc<str>>,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub queue: mpsc::Sender<Batch>,
    pub stats: Arc<IngestStats>,
    pub decoder: Arc<decode::Decoder>,
    /// Fired when shutdown begins: refuse new requests with 503 / UNAVAILABLE.
    pub stopping: CancellationToken,
}

impl Ingest {
    /// True when no token is configured or `header` is `Bearer <token>`.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = &self.auth_token else {
            return true;
        };
        let Some(h) = header else {
            return false;
        };
        let Some(given) = h.strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, token.as_bytes())
    }

    /// The tail both receivers share once a request is decoded: offers its batch to the queue
    /// and, when accepted, counts its items (accepted, foreign, left out). `Err` is the reason the
    /// whole request is refused (the caller counts and answers it); `Ok` carries the partial
    /// success to answer with, if any record was left out.
    pub fn submit(
        &self,
        protocol: Protocol,
        signal: Signal,
        decoded: decode::Decoded,
    ) -> Result<Option<Partial>, Reject> {
        self.enqueue(decoded.batch)?;
        let rejected = decoded.rejected.total();
        self.stats
            .accepted(protocol, signal, decoded.items.saturating_sub(rejected));
        self.stats
            .foreign_items
            .fetch_add(decoded.foreign, Ordering::Relaxed);
        self.stats.rejected_items(signal, &decoded.rejected);
        Ok(decoded.rejected.partial(decoded.items, signal))
    }

    /// Offers `batch` to the aggregator without waiting.
    pub fn enqueue(&self, batch: Batch) -> Result<(), Reject> {
        if batch.is_empty() {
            return Ok(());
        }
        self.queue.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Reject::QueueFull,
            mpsc::error::TrySendError::Closed(_) => Reject::ShuttingDown,
        })
    }
}

/// The `partial_success` of an export response: records left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub rejected: u64,
    pub message: String,
}

/// The three OTLP export responses, built the same way by both receivers.
pub trait ExportResponse: Default {
    /// A response with `partial_success` set.
    fn partial(p: Partial) -> Self;

    /// The response for an accepted request.
    fn accepted(partial: Option<Partial>) -> Self {
        partial.map_or_else(Self::default, Self::partial)
    }
}

fn rejected_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ExportResponse for ExportTraceServiceResponse {
    fn partial(p: Partial) -> Self {
        Self {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected_count(p.rejected),
                error_message: p.message,
            }),
        }
    }
}

impl ExportResponse for ExportMetricsServiceResponse {
    fn partial(p: Partial) -> Self {
        Self {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected_count(p.rejected),
                error_message: p.message,
            }),
        }
    }
}

impl ExportResponse for ExportLogsServiceResponse {
    fn partial(p: Partial) -> Self {
        Self {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected_count(p.rejected),
                error_message: p.message,
            }),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the epoch, for stamping batches.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
