//! The AWS edges of the collector, wired to its stages (the AWS calls themselves, and every API
//! limit, live in the `lambdawatch-aws` crate).
//!
//! ```text
//! sources: CloudWatch GetMetricData poller ─┐
//!          POST /firehose (Metric Streams) ─┴─► Decoder::platform_batch ─► ingest queue ─► aggregate
//! sinks:   ingest ─► Tap (bounded; drop newest, counted) ─► CloudWatch Logs (PutLogEvents)
//!                                                      └─► X-Ray (PutTraceSegments)
//!          alerting::Dispatcher ─► SnsSink (Publish with message attributes)
//! ```
//!
//! Everything here is off unless configured (`config::AwsConfig`); the embedded default needs no
//! AWS account. A dead AWS endpoint never blocks ingest: the tap's queues are bounded and a full
//! queue drops the request (counted by reason), each exporter retries through the SDK's standard
//! strategy and counts what it could not deliver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use lambdawatch_aws::{
    client::{AwsCounters, AwsSettings},
    cloudwatch::{self, Period, Poller, Target},
    firehose, logs, sns, xray,
};
use lambdawatch_semconv::cloudwatch::{PlatformCount, StreamOrigin};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aggregate;
use crate::alerting::{
    alert::Alert,
    sinks::{DeliveryError, Sink},
};
use crate::config::AwsConfig;
use crate::export::prometheus::PipelineSample;
use crate::ingest::Ingest;

/// Requests waiting for each exporter; beyond it a request is dropped (`reason="queue_full"`).
pub const TAP_CAPACITY: usize = 256;

/// What the AWS stages did, for `/metrics`.
#[derive(Debug, Default)]
pub struct AwsStats {
    pub calls: AwsCounters,
    pub poll_ok: AtomicU64,
    pub poll_failed: AtomicU64,
    /// Milli-dollars, so it fits an atomic.
    pub projected_cost_millis: AtomicU64,
    pub firehose_ok: AtomicU64,
    pub firehose_rejected: AtomicU64,
    pub firehose_bad_records: AtomicU64,
    pub logs_exported: AtomicU64,
    pub logs_refused: AtomicU64,
    pub logs_failed: AtomicU64,
    pub segments_exported: AtomicU64,
    pub segments_skipped: AtomicU64,
    pub segments_failed: AtomicU64,
    pub tap_dropped: AtomicU64,
    pub sns_truncated: AtomicU64,
    /// Checkpoint writes (`crate::checkpoint`) by result, and the last one's size.
    pub checkpoint_saved: AtomicU64,
    pub checkpoint_conflicts: AtomicU64,
    pub checkpoint_failed: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
}

impl AwsStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// This stage's samples for `/metrics`.
    pub fn samples(&self) -> Vec<PipelineSample> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let calls = self.calls.snapshot();
        let s = |name, help, kind, labels: &[(&'static str, &'static str)], value| PipelineSample {
            name,
            help,
            kind,
            labels: labels.to_vec(),
            value,
        };
        const REQ: &str = "CloudWatch GetMetricData polls, by result.";
        const FH: &str = "Kinesis Data Firehose deliveries to /firehose, by result.";
        const EXP: &str =
            "Items exported to AWS (log events, segment documents), by exporter and result.";
        const CKPT: &str = "Checkpoint writes (conditional), by result.";
        vec![
            s(
                "lambdawatch_checkpoint_writes_total",
                CKPT,
                "counter",
                &[("result", "success")],
                g(&self.checkpoint_saved),
            ),
            s(
                "lambdawatch_checkpoint_writes_total",
                CKPT,
                "counter",
                &[("result", "conflict")],
                g(&self.checkpoint_conflicts),
            ),
            s(
                "lambdawatch_checkpoint_writes_total",
                CKPT,
                "counter",
                &[("result", "failure")],
                g(&self.checkpoint_failed),
            ),
            s(
                "lambdawatch_checkpoint_bytes",
                "Size of the last checkpoint written (compressed).",
                "gauge",
                &[],
                g(&self.checkpoint_bytes),
            ),
            s(
                "lambdawatch_cloudwatch_requests_total",
                REQ,
                "counter",
                &[("result", "success")],
                g(&self.poll_ok),
            ),
            s(
                "lambdawatch_cloudwatch_requests_total",
                REQ,
                "counter",
                &[("result", "failure")],
                g(&self.poll_failed),
            ),
            s(
                "lambdawatch_cloudwatch_projected_cost_usd",
                "The CloudWatch poller's projected monthly GetMetricData spend, USD.",
                "gauge",
                &[],
                self.projected_cost_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
            s(
                "lambdawatch_firehose_requests_total",
                FH,
                "counter",
                &[("result", "success")],
                g(&self.firehose_ok),
            ),
            s(
                "lambdawatch_firehose_requests_total",
                FH,
                "counter",
                &[("result", "rejected")],
                g(&self.firehose_rejected),
            ),
            s(
                "lambdawatch_firehose_bad_records_total",
                "Firehose records that did not decode (the rest of the delivery is used).",
                "counter",
                &[],
                g(&self.firehose_bad_records),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "cloudwatch_logs"), ("result", "success")],
                g(&self.logs_exported),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "cloudwatch_logs"), ("result", "refused")],
                g(&self.logs_refused),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "cloudwatch_logs"), ("result", "failed")],
                g(&self.logs_failed),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "xray"), ("result", "success")],
                g(&self.segments_exported),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "xray"), ("result", "refused")],
                g(&self.segments_skipped),
            ),
            s(
                "lambdawatch_export_items_total",
                EXP,
                "counter",
                &[("exporter", "xray"), ("result", "failed")],
                g(&self.segments_failed),
            ),
            s(
                "lambdawatch_export_dropped_total",
                "Requests not copied to the AWS exporters because their queue was full.",
                "counter",
                &[("reason", "queue_full")],
                g(&self.tap_dropped),
            ),
            s(
                "lambdawatch_aws_calls_total",
                "AWS API operations (retries not included).",
                "counter",
                &[],
                calls.operations as f64,
            ),
            s(
                "lambdawatch_aws_retries_total",
                "AWS API attempts retried after throttling or 5xx.",
                "counter",
                &[],
                calls.retries as f64,
            ),
            s(
                "lambdawatch_aws_failures_total",
                "AWS API operations that failed after retries.",
                "counter",
                &[],
                calls.failures as f64,
            ),
            s(
                "lambdawatch_sns_truncated_total",
                "Alerts shortened to fit SNS's 256 KiB limit.",
                "counter",
                &[],
                g(&self.sns_truncated),
            ),
        ]
    }
}

/// Copies of ingested logs and traces for the AWS exporters. Never blocks ingest.
#[derive(Debug, Clone)]
pub struct Tap {
    logs: Option<mpsc::Sender<ExportLogsServiceRequest>>,
    traces: Option<mpsc::Sender<ExportTraceServiceRequest>>,
    stats: Arc<AwsStats>,
}

impl Tap {
    pub fn logs(&self, req: &ExportLogsServiceRequest) {
        if let Some(tx) = &self.logs
            && tx.try_send(req.clone()).is_err()
        {
            AwsStats::add(&self.stats.tap_dropped, 1);
        }
    }

    pub fn traces(&self, req: &ExportTraceServiceRequest) {
        if let Some(tx) = &self.traces
            && tx.try_send(req.clone()).is_err()
        {
            AwsStats::add(&self.stats.tap_dropped, 1);
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn settings(cfg: &AwsConfig) -> AwsSettings {
    AwsSettings {
        region: cfg.region.clone(),
        endpoint_url: cfg.endpoint_url.clone(),
        max_attempts: 0,
    }
}

/// Receivers of the tap, handed to [`run_exporters`].
#[derive(Debug)]
pub struct TapReceivers {
    logs: Option<mpsc::Receiver<ExportLogsServiceRequest>>,
    traces: Option<mpsc::Receiver<ExportTraceServiceRequest>>,
}

/// The tap for what `cfg` exports (`None` when it exports nothing).
pub fn tap(cfg: &AwsConfig, stats: &Arc<AwsStats>) -> Option<(Tap, TapReceivers)> {
    let (ltx, lrx) = if cfg.logs_group_prefix.is_some() {
        let (t, r) = mpsc::channel(TAP_CAPACITY);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let (ttx, trx) = if cfg.xray {
        let (t, r) = mpsc::channel(TAP_CAPACITY);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    if ltx.is_none() && ttx.is_none() {
        return None;
    }
    Some((
        Tap {
            logs: ltx,
            traces: ttx,
            stats: stats.clone(),
        },
        TapReceivers {
            logs: lrx,
            traces: trx,
        },
    ))
}

/// Runs the CloudWatch Logs and X-Ray exporters until their queues close (ingest stopped) —
/// draining what is queued — or `cancel` fires.
pub async fn run_exporters(
    cfg: AwsConfig,
    rx: TapReceivers,
    stats: Arc<AwsStats>,
    cancel: CancellationToken,
) {
    let s = settings(&cfg);
    let logs_task = rx.logs.map(|mut rx| {
        let (s, stats, cancel, prefix) = (s.clone(), stats.clone(), cancel.clone(), cfg.logs_group_prefix.clone().unwrap_or_default());
        async move {
            let mut sink = logs::LogsSink::new(&s, &stats.calls).await;
            loop {
                let req = tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => break },
                    () = cancel.cancelled() => break,
                };
                let now_ms = now_secs() * 1000;
                for (dest, events) in logs::from_otlp(&req, &prefix) {
                    let n = events.len() as u64;
                    match sink.ship(&dest, events, now_ms).await {
                        Ok((sent, refused)) => {
                            AwsStats::add(&stats.logs_exported, sent as u64);
                            AwsStats::add(&stats.logs_refused, refused.too_old + refused.too_new);
                        }
                        Err(e) => {
                            AwsStats::add(&stats.logs_failed, n);
                            tracing::warn!(error = %e, group = %dest.group, "CloudWatch Logs export failed");
                        }
                    }
                }
            }
        }
    });
    let xray_task = rx.traces.map(|mut rx| {
        let (s, stats, cancel) = (s.clone(), stats.clone(), cancel.clone());
        async move {
            let sink = xray::XraySink::new(&s, &stats.calls).await;
            loop {
                let req = tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => break },
                    () = cancel.cancelled() => break,
                };
                let converted = xray::segments(&req, now_secs());
                AwsStats::add(&stats.segments_skipped, converted.skipped_trace_id as u64);
                let n = converted.documents.len() as u64;
                if n == 0 {
                    continue;
                }
                match sink.put(converted.documents).await {
                    Ok(unprocessed) => {
                        AwsStats::add(&stats.segments_exported, n - unprocessed as u64);
                        AwsStats::add(&stats.segments_failed, unprocessed as u64);
                    }
                    Err(e) => {
                        AwsStats::add(&stats.segments_failed, n);
                        tracing::warn!(error = %e, "X-Ray export failed");
                    }
                }
            }
        }
    });
    match (logs_task, xray_task) {
        (Some(l), Some(x)) => {
            tokio::join!(l, x);
        }
        (Some(l), None) => l.await,
        (None, Some(x)) => x.await,
        (None, None) => {}
    }
}

/// Feeds platform counts (poller, Firehose) into the same path as Metric Streams over OTLP.
/// Returns how many were used, or why the ingest queue refused them.
fn ingest_counts(
    ingest: &Ingest,
    points: &[(StreamOrigin, PlatformCount)],
) -> Result<u64, crate::ingest::Reject> {
    let (batch, used) = ingest
        .decoder
        .platform_batch(points, crate::ingest::now_s());
    ingest.enqueue(batch)?;
    Ok(used)
}

/// Polls CloudWatch every `interval` for the functions the extensions reported plus the explicit
/// list, until `cancel`.
/// `ledger` carries the poller's cursor both ways: its value at start seeds the poller (a
/// restored checkpoint), and every poll publishes the new one (for the next checkpoint).
pub async fn run_poller(
    cfg: AwsConfig,
    ingest: Ingest,
    aggregates: aggregate::Handle,
    stats: Arc<AwsStats>,
    cancel: CancellationToken,
    ledger: tokio::sync::watch::Sender<cloudwatch::Ledger>,
) {
    let Some(interval) = cfg.cloudwatch_poll_interval else {
        return;
    };
    let period = Period::from_secs(cfg.cloudwatch_period.as_secs()).unwrap_or(Period::OneMinute);
    let mut poller = Poller::new(&settings(&cfg), &stats.calls, period).await;
    poller.ledger = ledger.borrow().clone();
    let origin = StreamOrigin {
        account_id: cfg.account_id.clone().unwrap_or_default(),
        region: cfg.region.clone().unwrap_or_default(),
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut target = Target {
            functions: cfg.cloudwatch_functions.iter().cloned().collect(),
            dlq_queues: ingest.decoder.dlq_queues.clone(),
        };
        if let Ok(seen) = aggregates
            .query(|a| {
                a.functions
                    .keys()
                    .map(|k| k.function.clone())
                    .collect::<Vec<_>>()
            })
            .await
        {
            target.functions.extend(seen);
        }
        let cost =
            cloudwatch::projected_monthly_cost_usd(cloudwatch::plan(&target).len(), interval);
        stats
            .projected_cost_millis
            .store((cost * 1000.0).round() as u64, Ordering::Relaxed);
        // What had been emitted before this poll: restored if the ingest queue refuses the
        // poll's counts, so the next poll re-emits exactly those and nothing already counted.
        let before = poller.ledger.clone();
        match poller.poll(&target, SystemTime::now()).await {
            Ok(counts) => {
                AwsStats::add(&stats.poll_ok, 1);
                let points: Vec<_> = counts.into_iter().map(|c| (origin.clone(), c)).collect();
                if let Err(r) = ingest_counts(&ingest, &points) {
                    tracing::warn!(
                        reason = r.label(),
                        "CloudWatch counts refused by the ingest queue; re-read next poll"
                    );
                    poller.ledger = before;
                }
            }
            Err(e) => {
                AwsStats::add(&stats.poll_failed, 1);
                tracing::warn!(error = %e, "CloudWatch poll failed");
            }
        }
        ledger.send_replace(poller.ledger.clone());
    }
}

/// The largest Firehose delivery accepted: a 64 MiB buffer, base64 in JSON, plus framing.
pub const FIREHOSE_MAX_BODY_BYTES: usize = 64 * 1024 * 1024 / 3 * 4 + 64 * 1024;

#[derive(Clone)]
struct FirehoseState {
    ingest: Ingest,
    access_key: Option<Arc<str>>,
    stats: Arc<AwsStats>,
}

/// `POST /firehose`: the Kinesis Data Firehose HTTP endpoint for CloudWatch Metric Streams
/// (OpenTelemetry 1.0.0 output format). Mounted on the OTLP/HTTP listener.
pub fn firehose_router(ingest: Ingest, access_key: Option<String>, stats: Arc<AwsStats>) -> Router {
    Router::new()
        .route("/firehose", post(firehose))
        // Firehose HTTP-endpoint buffers go up to 64 MiB, base64-encoded in JSON (× 4/3).
        .layer(axum::extract::DefaultBodyLimit::max(
            FIREHOSE_MAX_BODY_BYTES,
        ))
        .with_state(FirehoseState {
            ingest,
            access_key: access_key.map(Arc::from),
            stats,
        })
}

async fn firehose(State(s): State<FirehoseState>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let now_ms = now_secs() * 1000;
    let (mut status, mut resp, delivery) = firehose::handle(
        h(firehose::HEADER_ACCESS_KEY),
        h(firehose::HEADER_REQUEST_ID),
        s.access_key.as_deref(),
        &body,
        now_ms,
    );
    AwsStats::add(&s.stats.firehose_bad_records, delivery.bad_records as u64);
    // Firehose retries a failed delivery: when the ingest queue refuses it, answer 503 so
    // nothing is lost.
    if status == 200
        && let Err(r) = ingest_counts(&s.ingest, &delivery.counts)
    {
        status = 503;
        resp.error_message = Some(format!(
            "ingest queue refused the delivery ({}); retry",
            r.label()
        ));
    }
    if status == 200 {
        AwsStats::add(&s.stats.firehose_ok, 1);
    } else {
        AwsStats::add(&s.stats.firehose_rejected, 1);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, axum::Json(resp)).into_response()
}

/// SNS as an alert sink: one `Publish` per alert, message attributes `severity`, `slo`,
/// `function`, `status`, `alertname` for subscription filters.
pub struct SnsSink {
    topic_arn: String,
    settings: AwsSettings,
    stats: Arc<AwsStats>,
    publisher: tokio::sync::OnceCell<sns::SnsPublisher>,
}

impl SnsSink {
    pub fn new(cfg: &AwsConfig, topic_arn: String, stats: Arc<AwsStats>) -> Self {
        Self {
            topic_arn,
            settings: settings(cfg),
            stats,
            publisher: tokio::sync::OnceCell::new(),
        }
    }
}

/// The SNS form of an alert.
pub fn sns_alert(a: &Alert) -> sns::SnsAlert {
    let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
    let mut attributes = std::collections::BTreeMap::new();
    for k in ["severity", "slo", "function", "alertname"] {
        attributes.insert(k.to_owned(), label(k));
    }
    attributes.insert("status".to_owned(), a.status.as_str().to_owned());
    sns::SnsAlert {
        subject: format!(
            "[{}] {} {}",
            a.status.as_str().to_uppercase(),
            label("alertname"),
            label("function")
        ),
        message: serde_json::to_value(a).unwrap_or_default(),
        attributes,
    }
}

impl Sink for SnsSink {
    fn name(&self) -> &str {
        "sns"
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        let p = self
            .publisher
            .get_or_init(|| {
                sns::SnsPublisher::new(&self.settings, &self.stats.calls, self.topic_arn.clone())
            })
            .await;
        for a in alerts {
            let (_, truncated) = p
                .publish(&sns_alert(a))
                .await
                .map_err(|e| DeliveryError::retryable(e.to_string()))?;
            if truncated {
                AwsStats::add(&self.stats.sns_truncated, 1);
            }
        }
        Ok(())
    }
}
