//! OTLP/HTTP protobuf export: one POST per signal, gzip by default, per-signal endpoints,
//! headers, a timeout per request and retries with backoff bounded by the time available.
//!
//! Consumes a [`Batch`] (drained from the buffer) and a deadline; produces an [`ExportReport`]
//! (items exported, items dropped by reason, retries, and the items still worth sending). Never
//! blocks past the deadline: a dead collector fails fast (connection refused), a slow one is cut
//! at `min(timeout, deadline)`. What failed for a passing reason (connection refused, timeout,
//! HTTP 408/429/502/503/504, no time left) comes back in [`ExportReport::unsent`] for the caller
//! to return to the buffer (where drop-oldest applies) and send at the next flush; what the
//! collector refused for good (other 4xx, unsupported scheme, TLS failure) is counted as dropped.
//!
//! Endpoints may be `http://` or `https://` (see [`crate::http`] for the TLS set-up). A TLS
//! handshake failure (untrusted or wrong certificate) is not retried: the items are counted as
//! `export_failed` at once (a certificate does not fix itself), and the function is not held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceResponse,
        metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
        trace::v1::ExportTraceServiceResponse,
    },
    common::v1::InstrumentationScope,
    metrics::v1::Metric,
    resource::v1::Resource,
    trace::v1::Span,
};
use prost::Message;
use tokio::sync::Notify;

use crate::buffer::Batch;
use crate::config::{Compression, Endpoints};
use crate::http::{HttpClient, HttpError};
use crate::log_proto::EncodedLog;

pub const SCOPE_NAME: &str = "lambdawatch-extension";
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An attempt with less time than this left is not started.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Drop reasons (the `reason` label of `lambdawatch.extension.dropped`).
pub mod reason {
    pub const EXPORT_FAILED: &str = "export_failed";
    pub const REJECTED: &str = "rejected";
    pub const PARTIAL_REJECTED: &str = "partial_rejected";
    pub const UNSUPPORTED_ENDPOINT: &str = "unsupported_endpoint";
    pub const BUFFER_FULL: &str = "buffer_full";
    pub const MALFORMED: &str = "malformed";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// Every reason, in the order `observe` exports them (each from 0).
    pub const ALL: [&str; 8] = [
        EXPORT_FAILED,
        REJECTED,
        PARTIAL_REJECTED,
        UNSUPPORTED_ENDPOINT,
        BUFFER_FULL,
        MALFORMED,
        UNKNOWN_TYPE,
        BODY_TOO_LARGE,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub endpoints: Endpoints,
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
}

/// What one export did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportReport {
    /// Items accepted, per signal (traces, metrics, logs).
    pub exported: [u64; 3],
    pub dropped: Vec<(&'static str, u64)>,
    pub retries: u64,
    /// Every signal got through.
    pub ok: bool,
    /// The last error, for the (rate-limited) log line.
    pub error: Option<String>,
    /// The signals that failed for a passing reason, untouched: not counted as dropped; the
    /// caller returns them to the buffer.
    pub unsent: Batch,
}

#[derive(Debug, Clone)]
pub struct Exporter {
    client: HttpClient,
    cfg: ExportConfig,
}

/// The three encoded requests of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub traces: Option<(Vec<u8>, u64)>,
    pub metrics: Option<(Vec<u8>, u64)>,
    pub logs: Option<(Vec<u8>, u64)>,
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    })
}

/// Builds the three OTLP requests (protobuf, uncompressed) for `batch` under `resource`.
///
/// The bytes are exactly what prost writes for `Export{Trace,Metrics,Logs}ServiceRequest { one
/// Resource{Spans,Metrics,Logs} { resource, one Scope* { scope, items } } }` (a test compares
/// them), but framed by hand: prost's `encode_to_vec` computes every item's length once per
/// enclosing message (four times per log record), here it is computed once.
pub fn encode(resource: &Resource, batch: Batch) -> Encoded {
    encode_ref(resource, &batch)
}

/// [`encode`] without consuming the batch (kept to hand back what could not be sent).
pub fn encode_ref(resource: &Resource, batch: &Batch) -> Encoded {
    let n = |v: usize| v as u64;
    let traces = (!batch.spans.is_empty())
        .then(|| (encode_request(resource, &batch.spans), n(batch.spans.len())));
    let metrics = (!batch.metrics.is_empty()).then(|| {
        (
            encode_request(resource, &batch.metrics),
            n(batch.metrics.len()),
        )
    });
    let logs = (!batch.logs.is_empty())
        .then(|| (encode_request(resource, &batch.logs), n(batch.logs.len())));
    Encoded {
        traces,
        metrics,
        logs,
    }
}

/// An item as the request framing sees it: its encoded length, and its bytes.
trait Framed {
    fn encoded_len(&self) -> usize;
    fn encode_raw(&self, buf: &mut Vec<u8>);
}

impl Framed for Span {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }
    fn encode_raw(&self, buf: &mut Vec<u8>) {
        Message::encode_raw(self, buf)
    }
}

impl Framed for Metric {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }
    fn encode_raw(&self, buf: &mut Vec<u8>) {
        Message::encode_raw(self, buf)
    }
}

/// Log records are already bytes (`log_proto`): copied as they are.
impl Framed for EncodedLog {
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn encode_raw(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.as_bytes())
    }
}

/// One export request of `items` under `resource` and our scope. The three OTLP signals share
/// the shape: request field 1 = `Resource*`; `Resource*` field 1 = resource, field 2 = `Scope*`;
/// `Scope*` field 1 = scope, field 2 = the items (repeated). Empty fields are omitted, as prost
/// does, and fields are written in field-number order, so the output is prost's, byte for byte.
fn encode_request<M: Framed>(resource: &Resource, items: &[M]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let framed = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let sizes: Vec<usize> = items.iter().map(Framed::encoded_len).collect();
    let scope = scope();
    let scope_len = scope.as_ref().map(Message::encoded_len);
    let scope_part = scope_len.map_or(0, framed);
    let scoped_len = scope_part + sizes.iter().map(|s| framed(*s)).sum::<usize>();
    let resource_len = resource.encoded_len();
    let resourced_len = framed(resource_len) + framed(scoped_len);
    let total = framed(resourced_len);
    let mut buf = Vec::with_capacity(total);
    let b = &mut buf;
    let field = |tag: u32, len: usize, b: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, b);
        encode_varint(len as u64, b);
    };
    field(1, resourced_len, b);
    field(1, resource_len, b);
    resource.encode_raw(b);
    field(2, scoped_len, b);
    if let (Some(scope), Some(len)) = (&scope, scope_len) {
        field(1, len, b);
        scope.encode_raw(b);
    }
    for (item, size) in items.iter().zip(&sizes) {
        field(2, *size, b);
        item.encode_raw(b);
    }
    buf
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    if enc.write_all(data).is_err() {
        return Vec::new();
    }
    enc.finish().unwrap_or_default()
}

enum Attempt {
    Ok {
        rejected: u64,
    },
    Retry(String),
    /// The collector refused the data itself (a 4xx other than 408/429): `rejected`.
    Fatal(String),
    /// Could not deliver, and trying again would not help (TLS handshake): `export_failed`.
    GiveUp(String),
}

impl Exporter {
    pub fn new(client: HttpClient, cfg: ExportConfig) -> Self {
        Self { client, cfg }
    }

    /// Encodes and sends `batch`, all signals concurrently, finishing by `deadline`.
    pub async fn export(
        &self,
        resource: &Resource,
        batch: Batch,
        deadline: Instant,
    ) -> ExportReport {
        self.export_notify(resource, batch, deadline, None).await
    }

    /// Like [`Exporter::export`]; `first_failure` is notified as soon as any attempt fails, so a
    /// caller holding `/next` for this export can let go while retries go on in the background.
    pub async fn export_notify(
        &self,
        resource: &Resource,
        batch: Batch,
        deadline: Instant,
        first_failure: Option<Arc<Notify>>,
    ) -> ExportReport {
        let enc = encode_ref(resource, &batch);
        let f = first_failure.as_deref();
        let (t, m, l) = tokio::join!(
            self.send_signal(Signal::Traces, enc.traces, deadline, f),
            self.send_signal(Signal::Metrics, enc.metrics, deadline, f),
            self.send_signal(Signal::Logs, enc.logs, deadline, f),
        );
        let mut report = ExportReport {
            ok: true,
            ..Default::default()
        };
        let Batch {
            spans,
            metrics,
            logs,
        } = batch;
        if t.unsent {
            report.unsent.spans = spans;
        }
        if m.unsent {
            report.unsent.metrics = metrics;
        }
        if l.unsent {
            report.unsent.logs = logs;
        }
        for (i, r) in [t, m, l].into_iter().enumerate() {
            report.exported[i] = r.exported;
            report.retries += r.retries;
            if r.unsent {
                report.ok = false;
            }
            if let Some((reason, n)) = r.dropped {
                report.ok = false;
                match report.dropped.iter_mut().find(|(k, _)| *k == reason) {
                    Some((_, c)) => *c += n,
                    None => report.dropped.push((reason, n)),
                }
            }
            if r.error.is_some() {
                report.ok = false;
                report.error = r.error;
            }
        }
        report
    }

    /// One empty OTLP metrics request (no resource, no data points: valid OTLP, nothing for the
    /// collector to store) to learn whether the collector answers, without retries, finishing by
    /// `deadline`. `lifecycle` sends it when the collector's health is not proven and nothing is
    /// buffered, so the decision to hold `/next` never rests on a guess.
    pub async fn probe(&self, deadline: Instant) -> ExportReport {
        let mut report = ExportReport::default();
        let url = self.cfg.endpoints.metrics.as_str();
        let left = deadline.saturating_duration_since(Instant::now());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            report.error = Some(format!(
                "metrics endpoint {url} is neither http:// nor https://"
            ));
            return report;
        }
        if left < MIN_ATTEMPT {
            report.error = Some("health probe: no time left".to_owned());
            return report;
        }
        let body = ExportMetricsServiceRequest::default().encode_to_vec();
        let body = match self.cfg.compression {
            Compression::Gzip => Bytes::from(gzip(&body)),
            Compression::None => Bytes::from(body),
        };
        match self
            .attempt(Signal::Metrics, url, body, self.cfg.timeout.min(left))
            .await
        {
            Attempt::Ok { .. } => report.ok = true,
            Attempt::Retry(e) | Attempt::Fatal(e) | Attempt::GiveUp(e) => {
                report.error = Some(format!("health probe: {e}"));
            }
        }
        report
    }

    async fn send_signal(
        &self,
        signal: Signal,
        payload: Option<(Vec<u8>, u64)>,
        deadline: Instant,
        first_failure: Option<&Notify>,
    ) -> SignalResult {
        let mut res = SignalResult::default();
        let Some((body, count)) = payload else {
            return res;
        };
        let url = match signal {
            Signal::Traces => &self.cfg.endpoints.traces,
            Signal::Metrics => &self.cfg.endpoints.metrics,
            Signal::Logs => &self.cfg.endpoints.logs,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            if let Some(n) = first_failure {
                n.notify_one();
            }
            res.dropped = Some((reason::UNSUPPORTED_ENDPOINT, count));
            res.error = Some(format!(
                "{} endpoint {url} is neither http:// nor https://; {count} items dropped",
                signal.name()
            ));
            return res;
        }
        let body = match self.cfg.compression {
            Compression::Gzip => Bytes::from(gzip(&body)),
            Compression::None => Bytes::from(body),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                res.unsent = true;
                res.error
                    .get_or_insert_with(|| format!("{} export: no time left", signal.name()));
                return res;
            }
            let timeout = self.cfg.timeout.min(left);
            let outcome = self.attempt(signal, url, body.clone(), timeout).await;
            if !matches!(outcome, Attempt::Ok { .. })
                && let Some(n) = first_failure
            {
                n.notify_one();
            }
            match outcome {
                Attempt::Ok { rejected } => {
                    res.exported = count.saturating_sub(rejected);
                    if rejected > 0 {
                        res.dropped = Some((reason::PARTIAL_REJECTED, rejected));
                    }
                    res.error = None;
                    return res;
                }
                Attempt::Fatal(e) => {
                    res.dropped = Some((reason::REJECTED, count));
                    res.error = Some(e);
                    return res;
                }
                Attempt::GiveUp(e) => {
                    res.dropped = Some((reason::EXPORT_FAILED, count));
                    res.error = Some(e);
                    return res;
                }
                Attempt::Retry(e) => {
                    res.error = Some(e);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left < backoff + MIN_ATTEMPT {
                        res.unsent = true;
                        return res;
                    }
                    res.retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn attempt(&self, signal: Signal, url: &str, body: Bytes, timeout: Duration) -> Attempt {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-protobuf");
        if self.cfg.compression == Compression::Gzip {
            b = b.header(header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.cfg.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = match b.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Attempt::Fatal(format!("{} request: {e}", signal.name())),
        };
        match self.client.send(req, Some(timeout)).await {
            Ok(resp) if resp.status.is_success() => Attempt::Ok {
                rejected: rejected_items(signal, &resp.body),
            },
            Ok(resp) if retryable(resp.status) => {
                Attempt::Retry(format!("{} export: HTTP {}", signal.name(), resp.status))
            }
            Ok(resp) => Attempt::Fatal(format!(
                "{} export rejected: HTTP {} {}",
                signal.name(),
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
            )),
            Err(e @ (HttpError::Timeout(_) | HttpError::Connect(_) | HttpError::Body(_))) => {
                Attempt::Retry(format!("{} export: {e}", signal.name()))
            }
            Err(e @ HttpError::Tls(_)) => {
                Attempt::GiveUp(format!("{} export to {url}: {e}", signal.name()))
            }
            Err(e @ HttpError::Build(_)) => {
                Attempt::Fatal(format!("{} export: {e}", signal.name()))
            }
        }
    }
}

#[derive(Debug, Default)]
struct SignalResult {
    exported: u64,
    dropped: Option<(&'static str, u64)>,
    retries: u64,
    error: Option<String>,
    /// Failed for a passing reason: the items go back to the caller, not into `dropped`.
    unsent: bool,
}

fn retryable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 502 | 503 | 504)
}

/// Items the collector rejected in an OTLP partial-success response.
fn rejected_items(signal: Signal, body: &[u8]) -> u64 {
    if body.is_empty() {
        return 0;
    }
    let n = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_log_records),
    };
    n.unwrap_or(0).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    /// The hand-framed requests are byte for byte what prost writes for the nested messages,
    /// with large items (multi-byte length varints) and an empty resource.
    #[test]
    fn hand_framing_equals_prost() {
        let big = "x".repeat(300);
        let logs: Vec<LogRecord> = (0..50)
            .map(|i| LogRecord {
                time_unix_nano: i,
                severity_number: 9,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!("line {i} {big}"))),
                }),
                attributes: vec![kv("aws.lambda.log.source", "function")],
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            })
            .collect();
        let spans = vec![Span {
            name: "checkout".into(),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![kv("faas.invocation_id", &big)],
            ..Default::default()
        }];
        let metrics = vec![crate::translate::counter(
            "faas.invocations",
            "{invocation}",
            1,
            vec![kv("a", "b")],
            1,
            2,
        )];
        for resource in [
            Resource {
                attributes: vec![kv("service.name", "checkout"), kv("faas.name", &big)],
                ..Default::default()
            },
            Resource::default(),
        ] {
            let enc = encode(
                &resource,
                Batch {
                    spans: spans.clone(),
                    metrics: metrics.clone(),
                    logs: logs.iter().map(EncodedLog::from).collect(),
                },
            );
            let want_logs = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(),
                        log_records: logs.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec();
            let want_traces = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans: spans.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec();
            let want_metrics = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(resource.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(),
                        metrics: metrics.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec();
            assert_eq!(enc.logs, Some((want_logs, 50)));
            assert_eq!(enc.traces, Some((want_traces, 1)));
            assert_eq!(enc.metrics, Some((want_metrics, 1)));
        }
        let empty = encode(&Resource::default(), Batch::default());
        assert_eq!(
            empty,
            Encoded {
                traces: None,
                metrics: None,
                logs: None
            }
        );
    }
}
