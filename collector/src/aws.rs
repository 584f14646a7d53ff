//! The AWS edges of the collector, wired to its stages (the AWS calls themselves, and every API
//! limit, live in the `lambdawatch-aws` crate).
//!
//! ```text
//! sources: CloudWatch GetMetricData poller ─┐
//!          POST /firehose (Metric Streams) ─┴─► Decoder::platform_batch ─► ingest queue ─► aggregate
//! sinks:   ingest ─► Tap (bounded; drop newest, counted) ─► CloudWatch Logs (PutLogEvents)
//!                                                      └─► X-Ray (PutTraceSegments)
//!          alerting::Dispatcher ─► SnsSink (Publish with message attributes)
//!          evaluator ─► Emf (bounded; drop newest, counted) ─► CloudWatch Logs (EMF lines)
//! lease:   run_lease (every ttl / 3: read + conditional write of `lease/leader`) ─► LeaseCell
//!          ─► gates run_poller and SnsSink: only the holder polls and publishes
//! ```
//!
//! **Several tasks** (`LAMBDAWATCH_LEASE_TTL`, see `lambdawatch_aws::lease` for the protocol):
//! only the lease holder polls CloudWatch (so throttles and DLQ counts enter the fleet once) and
//! publishes to SNS (so a page goes out once). A new holder continues the poller's cursor from the
//! previous holder's last checkpoint (written together with the counts it covers; the cursor in
//! the lease record is the fallback), and publishes the resolves of alerts the previous holder
//! paged that are not active here ([`publish_takeover_resolves`]). Every task keeps ingesting OTLP and
//! evaluating its own share of it; SNS pages come from the holder's evaluation. Without a lease
//! every task polls and pages (right for one task).
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
    checkpoint::Store,
    client::{AwsCounters, AwsSettings},
    cloudwatch::{self, Ledger, Period, Poller, Target},
    firehose,
    lease::{self, LeasePolicy, Record, Step},
    logs, sns, xray,
};
use lambdawatch_semconv::cloudwatch::{PlatformCount, StreamOrigin};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::aggregate;
use crate::alerting::{
    alert::Alert,
    sinks::{DeliveryError, Sink},
};
use crate::config::AwsConfig;
use crate::export::prometheus::PipelineSample;
use crate::ingest::Ingest;
use crate::slo::{eval::Evaluation, spec::SloSpec};

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
    /// Orphan checkpoints of other tasks adopted (at start or merged while running).
    pub checkpoint_adopted: AtomicU64,
    /// `GetMetricData` calls (one per ≤ 500 queries and page).
    pub poll_calls: AtomicU64,
    /// EMF lines delivered / not delivered (refused, failed or dropped from a full queue).
    pub emf_sent: AtomicU64,
    pub emf_lost: AtomicU64,
    /// Lease acquisitions (creations and takeovers) and failed lease calls.
    pub lease_acquired: AtomicU64,
    pub lease_errors: AtomicU64,
    /// Alerts not published to SNS because this task does not hold the lease.
    pub sns_suppressed: AtomicU64,
    /// Polls skipped because this task does not hold the lease.
    pub poll_skipped: AtomicU64,
    /// Resolves published (or not) for alerts a previous lease holder paged.
    pub takeover_resolves_sent: AtomicU64,
    pub takeover_resolves_failed: AtomicU64,
    /// This task's view of the lease (always the holder when no lease is configured).
    pub lease: LeaseCell,
}

/// This task's view of the lease, shared by the lease task (writer), the poller and the SNS sink.
#[derive(Debug)]
pub struct LeaseCell {
    state: watch::Sender<LeaseState>,
    /// The poller's ledger and the token it was built under (written to the lease record).
    ledger: watch::Sender<Option<(u64, Arc<Ledger>)>>,
    /// The SNS topic (and SDK settings) when SNS is a sink: registered by [`SnsSink::new`] so
    /// the lease task can publish the resolves a takeover owes ([`publish_takeover_resolves`]).
    sns: std::sync::OnceLock<(AwsSettings, String)>,
}

/// What the lease task last decided.
#[derive(Debug, Clone, Default)]
pub enum LeaseState {
    /// No lease configured: this task acts alone.
    #[default]
    Alone,
    /// A lease is configured; `until`: holding it (fencing `token`) until then.
    Lease {
        until: Option<tokio::time::Instant>,
        token: u64,
        /// The ledger the previous holder left in the record, handed to our poller once.
        handover: Option<Arc<Ledger>>,
    },
}

impl Default for LeaseCell {
    fn default() -> Self {
        Self {
            state: watch::channel(LeaseState::Alone).0,
            ledger: watch::channel(None).0,
            sns: std::sync::OnceLock::new(),
        }
    }
}

impl LeaseCell {
    /// The fencing token while this task may poll and page (0 without a lease), else `None`.
    pub fn holding(&self) -> Option<u64> {
        match &*self.state.borrow() {
            LeaseState::Alone => Some(0),
            LeaseState::Lease { until, token, .. } => until
                .filter(|u| tokio::time::Instant::now() < *u)
                .map(|_| *token),
        }
    }

    pub fn configured(&self) -> bool {
        matches!(&*self.state.borrow(), LeaseState::Lease { .. })
    }

    fn set(&self, s: LeaseState) {
        self.state.send_replace(s);
    }

    /// A lease is configured and not (yet) held: nothing polls or publishes until
    /// [`run_lease`] acquires it. Called before the poller starts.
    pub fn contend(&self) {
        self.set(LeaseState::Lease {
            until: None,
            token: 0,
            handover: None,
        });
    }

    /// The previous holder's ledger, when we hold the lease under `token`.
    fn handover(&self, token: u64) -> Option<Arc<Ledger>> {
        match &*self.state.borrow() {
            LeaseState::Lease {
                token: t, handover, ..
            } if *t == token => handover.clone(),
            _ => None,
        }
    }

    fn publish_ledger(&self, token: u64, ledger: &Ledger) {
        self.ledger
            .send_replace(Some((token, Arc::new(ledger.clone()))));
    }

    /// The poller's ledger if it was built under `token`.
    fn ledger_for(&self, token: u64) -> Option<Ledger> {
        match &*self.ledger.borrow() {
            Some((t, l)) if *t == token => Some((**l).clone()),
            _ => None,
        }
    }
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
        const TAKEOVER: &str = "Resolves published by a new lease holder for alerts the previous holder paged, by result.";
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
                "lambdawatch_checkpoint_adoptions_total",
                "Orphan checkpoints of other tasks adopted (restored at start or merged while running).",
                "counter",
                &[],
                g(&self.checkpoint_adopted),
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
            s(
                "lambdawatch_sns_suppressed_total",
                "Alerts not published to SNS because another task holds the lease.",
                "counter",
                &[],
                g(&self.sns_suppressed),
            ),
            s(
                "lambdawatch_sns_takeover_resolves_total",
                TAKEOVER,
                "counter",
                &[("result", "success")],
                g(&self.takeover_resolves_sent),
            ),
            s(
                "lambdawatch_sns_takeover_resolves_total",
                TAKEOVER,
                "counter",
                &[("result", "failure")],
                g(&self.takeover_resolves_failed),
            ),
            s(
                "lambdawatch_cloudwatch_calls_total",
                "GetMetricData calls (at most 500 queries each, pages followed).",
                "counter",
                &[],
                g(&self.poll_calls),
            ),
            s(
                "lambdawatch_cloudwatch_polls_skipped_total",
                "CloudWatch polls skipped because another task holds the lease.",
                "counter",
                &[],
                g(&self.poll_skipped),
            ),
            s(
                "lambdawatch_emf_lines_total",
                "SLO metric lines (Embedded Metric Format) written to CloudWatch Logs, by result.",
                "counter",
                &[("result", "success")],
                g(&self.emf_sent),
            ),
            s(
                "lambdawatch_emf_lines_total",
                "SLO metric lines (Embedded Metric Format) written to CloudWatch Logs, by result.",
                "counter",
                &[("result", "lost")],
                g(&self.emf_lost),
            ),
            s(
                "lambdawatch_lease_held",
                "1 while this task holds the lease (polls CloudWatch, publishes to SNS).",
                "gauge",
                &[],
                if self.lease.holding().is_some() {
                    1.0
                } else {
                    0.0
                },
            ),
            s(
                "lambdawatch_lease_acquired_total",
                "Times this task acquired the lease (created or took it over).",
                "counter",
                &[],
                g(&self.lease_acquired),
            ),
            s(
                "lambdawatch_lease_errors_total",
                "Lease reads or writes that failed (the holder stops acting when its lease runs out).",
                "counter",
                &[],
                g(&self.lease_errors),
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
        max_attempts: cfg.max_attempts,
        initial_backoff: cfg.retry_initial_backoff,
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

/// EMF lines waiting for the CloudWatch Logs exporter (one evaluation per item).
pub const EMF_CAPACITY: usize = 4;
/// The CloudWatch namespace of the SLO metrics.
pub const EMF_NAMESPACE: &str = "Lambdawatch/SLO";
/// Burn-rate windows written as EMF metrics: the fast pair of the default page rule.
const EMF_BURN_WINDOWS: [(&str, &str); 2] = [("5m", "BurnRate5m"), ("1h", "BurnRate1h")];

/// The SLO metrics of one evaluation as Embedded Metric Format lines: one line per function and
/// SLO, dimensions `FunctionName` × `SLO` in [`EMF_NAMESPACE`], metrics `Good` and `Valid`
/// (events over the SLO window; for a count budget such as `throttles`, `Valid` is the count),
/// `SLI` (good / valid; ratio SLOs only), `ErrorBudgetRemaining` (1 = untouched) and the burn
/// rates over 5 m and 1 h. `Version`, `Region`, `Account` and `TaskId` are plain properties.
///
/// Several tasks each write their own share's values under the same dimensions (CloudWatch keeps
/// them as separate samples of one metric); the fleet-wide SLI comes from the Prometheus rules.
pub fn emf_events(spec: &SloSpec, ev: &Evaluation, task_id: &str) -> Vec<logs::LogEvent> {
    let ts = i64::try_from(ev.now_s)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let mut out = Vec::new();
    for f in &ev.functions {
        for st in &f.slos {
            let count_budget = spec
                .slos
                .get(st.slo_index)
                .is_some_and(|d| d.sli.is_count_budget());
            let mut metrics = vec![
                ("Good", st.budget.good as f64, "Count"),
                ("Valid", st.budget.valid as f64, "Count"),
                ("ErrorBudgetRemaining", st.budget_remaining, "None"),
            ];
            if !count_budget && st.budget.valid > 0 {
                metrics.push((
                    "SLI",
                    st.budget.good as f64 / st.budget.valid as f64,
                    "None",
                ));
            }
            for (window, name) in EMF_BURN_WINDOWS {
                if let Some(b) = st
                    .windows
                    .iter()
                    .find(|w| w.window == window)
                    .and_then(|w| w.burn_rate)
                {
                    metrics.push((name, b, "None"));
                }
            }
            out.push(logs::LogEvent {
                timestamp_ms: ts,
                message: logs::emf_line(
                    ts,
                    EMF_NAMESPACE,
                    &[("FunctionName", &f.key.function), ("SLO", &st.name)],
                    &metrics,
                    &[
                        ("Version", &f.key.version),
                        ("Region", &f.key.region),
                        ("Account", &f.key.account),
                        ("TaskId", task_id),
                    ],
                ),
            });
        }
    }
    out
}

/// One evaluation's EMF lines and where they go.
pub type EmfBatch = (logs::Destination, Vec<logs::LogEvent>);

/// The evaluator's side of the EMF path: never blocks (a full queue drops the evaluation's lines,
/// counted as lost).
#[derive(Debug)]
pub struct Emf {
    tx: mpsc::Sender<EmfBatch>,
    dest: logs::Destination,
    task_id: String,
    stats: Arc<AwsStats>,
}

impl Emf {
    /// The EMF path when `cfg` exports logs (stream: this task's id).
    pub fn new(
        cfg: &AwsConfig,
        task_id: &str,
        stats: &Arc<AwsStats>,
    ) -> Option<(Self, mpsc::Receiver<EmfBatch>)> {
        let group = cfg.emf_log_group()?;
        let (tx, rx) = mpsc::channel(EMF_CAPACITY);
        Some((
            Self {
                tx,
                dest: logs::Destination {
                    group,
                    stream: task_id.to_owned(),
                },
                task_id: task_id.to_owned(),
                stats: stats.clone(),
            },
            rx,
        ))
    }

    pub fn publish(&self, spec: &SloSpec, ev: &Evaluation) {
        let events = emf_events(spec, ev, &self.task_id);
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        if self.tx.try_send((self.dest.clone(), events)).is_err() {
            AwsStats::add(&self.stats.emf_lost, n);
        }
    }
}

/// Ships one destination's events and counts the outcome (`emf`: into the EMF counters).
async fn ship_counted(
    sink: &mut logs::LogsSink,
    stats: &AwsStats,
    dest: &logs::Destination,
    events: Vec<logs::LogEvent>,
    emf: bool,
) {
    let shipped = sink.ship(dest, events, now_secs() * 1000).await;
    let lost = shipped.refused.dropped() + shipped.failed as u64;
    if emf {
        AwsStats::add(&stats.emf_sent, shipped.sent as u64);
        AwsStats::add(&stats.emf_lost, lost);
    } else {
        AwsStats::add(&stats.logs_exported, shipped.sent as u64);
        AwsStats::add(&stats.logs_refused, shipped.refused.dropped());
        AwsStats::add(&stats.logs_failed, shipped.failed as u64);
    }
    if let Some(e) = shipped.error {
        tracing::warn!(error = %e, group = %dest.group, "CloudWatch Logs export failed");
    }
}

/// Runs the CloudWatch Logs and X-Ray exporters until their queues close (ingest stopped, the
/// evaluator's EMF sender dropped) — draining what is queued — or `cancel` fires.
pub async fn run_exporters(
    cfg: AwsConfig,
    rx: TapReceivers,
    emf: Option<mpsc::Receiver<EmfBatch>>,
    stats: Arc<AwsStats>,
    cancel: CancellationToken,
) {
    let s = settings(&cfg);
    let logs_task = rx.logs.map(|mut rx| {
        let (s, stats, cancel, prefix) = (s.clone(), stats.clone(), cancel.clone(), cfg.logs_group_prefix.clone().unwrap_or_default());
        let mut emf = emf;
        async move {
            let mut sink = logs::LogsSink::new(&s, &stats.calls).await;
            let mut logs_open = true;
            loop {
                if !logs_open && emf.is_none() {
                    break;
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    r = rx.recv(), if logs_open => match r {
                        Some(req) => {
                            for (dest, events) in logs::from_otlp(&req, &prefix) {
                                ship_counted(&mut sink, &stats, &dest, events, false).await;
                            }
                        }
                        None => logs_open = false,
                    },
                    e = async { emf.as_mut()?.recv().await }, if emf.is_some() => match e {
                        Some((dest, events)) => ship_counted(&mut sink, &stats, &dest, events, true).await,
                        None => emf = None,
                    },
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

/// Feeds Firehose platform counts into the same path as Metric Streams over OTLP.
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
    let ledger = Arc::new(ledger);
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
    // The lease token whose handed-over ledger the poller has adopted.
    let mut adopted: Option<u64> = None;
    // DLQ queues the cost stage could not keep (logged when it grows).
    let mut dlq_queues_dropped = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Only the lease holder polls (always true without a lease).
        let Some(token) = stats.lease.holding() else {
            AwsStats::add(&stats.poll_skipped, 1);
            adopted = None;
            continue;
        };
        if adopted != Some(token) {
            // A new holder continues the previous holder's cursor (none: keep our own).
            let handed = stats.lease.handover(token);
            if let Some(l) = &handed {
                poller.ledger = (**l).clone();
            }
            tracing::info!(
                token,
                from = if handed.is_some() { "handover" } else { "own" },
                points = poller.ledger.len(),
                "CloudWatch poller continues its cursor"
            );
            tracing::debug!(ledger = ?poller.ledger, "poller cursor");
            adopted = Some(token);
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
        // What had been emitted before this poll: restored if the aggregator is gone, so the
        // next poll re-emits exactly those and nothing already counted.
        let before = poller.ledger.clone();
        let result = poller.poll(&target, SystemTime::now()).await;
        AwsStats::add(&stats.poll_calls, poller.last_calls as u64);
        match result {
            Ok(counts) => {
                AwsStats::add(&stats.poll_ok, 1);
                let n = deliver_dlq_backlog(&aggregates, &target, &poller.dlq_backlog).await;
                if n > dlq_queues_dropped {
                    dlq_queues_dropped = n;
                    tracing::warn!(
                        queues_dropped = n,
                        "more DLQ queues than the cost stage keeps; their backlog is not reported"
                    );
                }
                let points: Vec<_> = counts.into_iter().map(|c| (origin.clone(), c)).collect();
                let (batch, _) = ingest
                    .decoder
                    .platform_batch(&points, crate::ingest::now_s());
                // Counts and cursor in one step of the aggregator owner, where the checkpoint
                // reads both: a checkpoint never holds one without the other.
                let (tx, next) = (ledger.clone(), poller.ledger.clone());
                let applied = aggregates
                    .query(move |a| {
                        a.apply(batch);
                        tx.send_replace(next);
                    })
                    .await;
                if applied.is_err() {
                    tracing::warn!("CloudWatch counts not applied (aggregator gone)");
                    poller.ledger = before;
                }
            }
            Err(e) => {
                AwsStats::add(&stats.poll_failed, 1);
                tracing::warn!(error = %e, "CloudWatch poll failed");
            }
        }
        stats.lease.publish_ledger(token, &poller.ledger);
    }
}

/// Hands the poll's DLQ backlog readings (queue → newest `ApproximateNumberOfMessagesVisible`)
/// to the cost stage in the aggregator (one query; the stage keeps the newest per queue, bounded
/// by `cost::stage::MAX_DLQ_QUEUES`). Returns the queues it could not keep so far.
async fn deliver_dlq_backlog(
    aggregates: &aggregate::Handle,
    target: &Target,
    backlog: &std::collections::BTreeMap<String, cloudwatch::QueueBacklog>,
) -> u64 {
    let readings: Vec<(String, String, f64, u64)> = backlog
        .iter()
        .filter_map(|(queue, b)| {
            let function = target.dlq_queues.get(queue)?;
            let at = u64::try_from(b.period_start_unix).ok()?;
            Some((queue.clone(), function.clone(), b.messages, at))
        })
        .collect();
    if readings.is_empty() {
        return 0;
    }
    aggregates
        .query(move |a| {
            let cost = a.cost.as_mut()?;
            let mut dropped = 0;
            for (queue, function, messages, at) in &readings {
                dropped = cost
                    .stage_mut()
                    .record_dlq_backlog(queue, function, *messages, *at);
            }
            Some(dropped)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// This instance's lease identity: the task id plus a per-process nonce, so a restarted process
/// with the same task id is a new contender (it waits out the dead one's ttl) and two live
/// processes sharing a task id never both hold the lease.
pub fn lease_identity(task_id: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{task_id}/{}-{nanos:x}", std::process::id())
}

/// Holds (or waits for) the lease in `store` until `cancel`, publishing this task's view into
/// `stats.lease`; a holder releases the record on the way out so another task takes over at
/// once. The policy is `lambdawatch_aws::lease::LeasePolicy` (pure, tested with injected time);
/// this loop only does the I/O and reads the monotonic clock.
pub async fn run_lease(
    store: Store,
    me: String,
    ttl: std::time::Duration,
    stats: Arc<AwsStats>,
    cancel: CancellationToken,
) {
    let base = tokio::time::Instant::now();
    let now_ms = || u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut policy = LeasePolicy::new(
        me.clone(),
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    );
    let every = std::time::Duration::from_millis(policy.renew_every_ms());
    let mut version: Option<String> = None;
    let mut handover: Option<Arc<Ledger>> = None;
    let mut failing = false;
    let publish = |policy: &LeasePolicy, handover: &Option<Arc<Ledger>>, token: u64| {
        stats.lease.set(LeaseState::Lease {
            until: policy
                .held_until()
                .map(|ms| base + std::time::Duration::from_millis(ms)),
            token,
            handover: handover.clone(),
        });
    };
    publish(&policy, &None, 0);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut token = 0;
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let start = now_ms();
        let current = match lease::read(&store).await {
            Ok(c) => c,
            Err(e) => {
                AwsStats::add(&stats.lease_errors, 1);
                if !failing {
                    tracing::warn!(error = %e, "lease unreadable; a holder stops acting when its lease runs out");
                }
                failing = true;
                publish(&policy, &handover, token);
                continue;
            }
        };
        let step = policy.step(start, current.as_ref().map(|(r, v)| (r, v.as_str())));
        let previous = current.as_ref().map(|(r, _)| r.holder.clone());
        let carried = current.and_then(|(r, _)| r.ledger).map(Arc::new);
        let (next, expected, takeover) = match step {
            Step::Wait => {
                publish(&policy, &handover, token);
                continue;
            }
            Step::Create { token } => (token, None, true),
            Step::Write {
                expected,
                token,
                takeover,
            } => (token, Some(expected), takeover),
        };
        // The record carries the poller's ledger once it was built under this token; until
        // then (just after a takeover) the ledger the previous holder left.
        let ledger = stats
            .lease
            .ledger_for(next)
            .or_else(|| carried.as_deref().cloned());
        let record = Record {
            holder: me.clone(),
            token: next,
            released: false,
            ledger,
            seq,
        };
        match lease::write(&store, &record, expected.as_deref()).await {
            Ok(Some(v)) => {
                policy.written(start, next, Ok(true));
                version = Some(v);
                failing = false;
                if takeover {
                    AwsStats::add(&stats.lease_acquired, 1);
                    // Continue from the previous holder's last checkpoint: its counts and
                    // that ledger were written together, so the polls it made after it (lost
                    // with it, or never saved) are counted again exactly once. The lease
                    // record's ledger only when that checkpoint is unusable.
                    let mine = crate::checkpoint::task_of_identity(&me);
                    let taken = match previous.as_deref().map(crate::checkpoint::task_of_identity) {
                        None => None,
                        Some(prev) => Some(crate::checkpoint::takeover(&store, mine, prev).await),
                    };
                    handover = match taken.as_ref().map(|t| &t.handover) {
                        None | Some(crate::checkpoint::Handover::Own) => None,
                        Some(crate::checkpoint::Handover::Checkpoint(l)) => {
                            Some(Arc::new(l.clone()))
                        }
                        Some(crate::checkpoint::Handover::Record) => carried,
                    };
                    if let Some(t) = taken
                        && !t.firing.is_empty()
                    {
                        publish_takeover_resolves(&store, mine, t.firing, next, &stats).await;
                    }
                    tracing::info!(token = next, holder = %me, "lease acquired: this task polls CloudWatch and publishes to SNS");
                }
                token = next;
            }
            Ok(None) => {
                if policy.held_until().is_some() {
                    tracing::warn!(holder = %me, "lease lost to another task");
                }
                policy.written(start, next, Ok(false));
            }
            Err(e) => {
                policy.written(start, next, Err(()));
                AwsStats::add(&stats.lease_errors, 1);
                if !failing {
                    tracing::warn!(error = %e, "lease write failed; a holder stops acting when its lease runs out");
                }
                failing = true;
            }
        }
        publish(&policy, &handover, token);
    }
    // Let go so another task takes over without waiting for the ttl.
    if policy.holding(now_ms()).is_some()
        && let Some(v) = version
    {
        policy.released();
        publish(&policy, &None, token);
        let record = Record {
            holder: me.clone(),
            token,
            released: true,
            ledger: stats.lease.ledger_for(token),
            seq: seq + 1,
        };
        match lease::write(&store, &record, Some(&v)).await {
            Ok(Some(_)) => tracing::info!(token, "lease released"),
            Ok(None) => tracing::warn!("lease already taken over at release"),
            Err(e) => {
                tracing::warn!(error = %e, "lease release failed; another task takes over after the ttl")
            }
        }
    }
}

/// Publishes to SNS the resolves a new lease holder owes (`crate::checkpoint::takeover_resolves`):
/// alerts the previous holder paged that are neither firing nor pending here, so a resolve that
/// happened during the takeover gap is not lost. Compared against this task's own last
/// checkpoint (written at every alert transition, before its notifications). Counted in
/// `lambdawatch_sns_takeover_resolves_total{result}`; a failed publish is logged (the SDK has
/// already retried it).
async fn publish_takeover_resolves(
    store: &Store,
    my_task: &str,
    previous_firing: Vec<crate::checkpoint::SavedAlert>,
    token: u64,
    stats: &AwsStats,
) {
    let Some((settings, topic)) = stats.lease.sns.get() else {
        return;
    };
    let Some(own) = crate::checkpoint::own_active(store, my_task).await else {
        tracing::warn!("own checkpoint unreadable: takeover resolves not published");
        return;
    };
    let resolves = crate::checkpoint::takeover_resolves(previous_firing, &own, SystemTime::now());
    if resolves.is_empty() {
        return;
    }
    let p = sns::SnsPublisher::new(settings, &stats.calls, topic.clone()).await;
    for a in &resolves {
        match p.publish(&sns_alert(a, Some(token))).await {
            Ok(_) => {
                AwsStats::add(&stats.takeover_resolves_sent, 1);
                tracing::info!(fingerprint = %a.fingerprint.as_str(), token, "published the resolve of an alert the previous lease holder paged");
            }
            Err(e) => {
                AwsStats::add(&stats.takeover_resolves_failed, 1);
                tracing::warn!(error = %e, "takeover resolve not published");
            }
        }
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
/// `function`, `status`, `alertname` (and `lease_token`) for subscription filters. With a lease,
/// only the holder publishes; the others count the alert as suppressed.
pub struct SnsSink {
    topic_arn: String,
    settings: AwsSettings,
    stats: Arc<AwsStats>,
    publisher: tokio::sync::OnceCell<sns::SnsPublisher>,
}

impl SnsSink {
    pub fn new(cfg: &AwsConfig, topic_arn: String, stats: Arc<AwsStats>) -> Self {
        let _ = stats.lease.sns.set((settings(cfg), topic_arn.clone()));
        Self {
            topic_arn,
            settings: settings(cfg),
            stats,
            publisher: tokio::sync::OnceCell::new(),
        }
    }
}

/// The SNS form of an alert; `lease_token` (with a lease) becomes the `lease_token` attribute, so
/// a subscriber can discard a message from a holder older than one it has already seen.
pub fn sns_alert(a: &Alert, lease_token: Option<u64>) -> sns::SnsAlert {
    let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
    let mut attributes = std::collections::BTreeMap::new();
    for k in ["severity", "slo", "function", "alertname"] {
        attributes.insert(k.to_owned(), label(k));
    }
    if let Some(t) = lease_token {
        attributes.insert("lease_token".to_owned(), t.to_string());
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
        // Checked at delivery, not at dispatch: a task that lost the lease while the alert
        // waited in the queue does not publish it.
        let Some(token) = self.stats.lease.holding() else {
            AwsStats::add(&self.stats.sns_suppressed, alerts.len() as u64);
            return Ok(());
        };
        let token = self.stats.lease.configured().then_some(token);
        let p = self
            .publisher
            .get_or_init(|| {
                sns::SnsPublisher::new(&self.settings, &self.stats.calls, self.topic_arn.clone())
            })
            .await;
        for a in alerts {
            let (_, truncated) = p
                .publish(&sns_alert(a, token))
                .await
                .map_err(|e| DeliveryError::retryable(e.to_string()))?;
            if truncated {
                AwsStats::add(&self.stats.sns_truncated, 1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{inv, key};
    use crate::aggregate::{Aggregates, Batch, Event, Group, Outcome, PlatformCounter, Target};
    use crate::slo::eval;

    const T0: u64 = 1_800_000_000;

    /// `orders`: 30 invocations in the last minute, 6 of them errors, and 3 throttles.
    fn evaluation(spec: &SloSpec) -> Evaluation {
        let mut agg = Aggregates::new(eval::layout_for(spec), 10);
        let events = (0..30u64)
            .map(|i| {
                let outcome = if i < 6 {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                inv(T0 - 30 + i, outcome, 40.0)
            })
            .collect();
        agg.apply(Batch {
            received_s: T0,
            groups: vec![
                Group {
                    target: Target::Function {
                        key: key("orders"),
                        tags: Vec::new(),
                        instance: "i-1".into(),
                    },
                    events,
                },
                Group {
                    target: Target::Platform {
                        function: "orders".into(),
                        region: "eu-west-1".into(),
                        account: "123456789012".into(),
                        qualifier: None,
                    },
                    events: vec![Event::Platform {
                        t_s: T0 - 10,
                        counter: PlatformCounter::Throttles,
                        value: 3,
                        queue: None,
                    }],
                },
            ],
        });
        eval::evaluate(spec, &agg, T0)
    }

    #[test]
    fn emf_lines_carry_each_slo_of_each_function() {
        let spec = SloSpec::embedded_default();
        let ev = evaluation(&spec);
        let lines: Vec<serde_json::Value> = emf_events(&spec, &ev, "task-1")
            .iter()
            .map(|e| {
                assert_eq!(e.timestamp_ms, T0 as i64 * 1000);
                serde_json::from_str(&e.message).unwrap()
            })
            .collect();
        assert_eq!(lines.len(), spec.slos.len(), "one line per SLO");
        let line = |slo: &str| {
            lines
                .iter()
                .find(|l| l["SLO"] == slo)
                .unwrap_or_else(|| panic!("no {slo} line"))
        };
        let err = line("error_rate");
        let cwm = &err["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cwm["Namespace"], EMF_NAMESPACE);
        assert_eq!(
            cwm["Dimensions"],
            serde_json::json!([["FunctionName", "SLO"]])
        );
        assert_eq!(err["FunctionName"], "orders");
        assert_eq!(
            (err["Good"].as_f64(), err["Valid"].as_f64()),
            (Some(24.0), Some(30.0))
        );
        assert!((err["SLI"].as_f64().unwrap() - 0.8).abs() < 1e-12, "{err}");
        // 20 % errors against a 0.1 % budget: burning 200× over 5 minutes and over the hour.
        assert!(
            (err["BurnRate5m"].as_f64().unwrap() - 200.0).abs() < 1e-6,
            "{err}"
        );
        assert!(
            (err["BurnRate1h"].as_f64().unwrap() - 200.0).abs() < 1e-6,
            "{err}"
        );
        assert_eq!(err["Version"], "$LATEST");
        assert_eq!(err["TaskId"], "task-1");
        let thr = line("throttles");
        assert_eq!(thr["Valid"].as_f64(), Some(3.0));
        assert!(thr.get("SLI").is_none(), "a count budget has no ratio");
        assert!(
            (thr["ErrorBudgetRemaining"].as_f64().unwrap() - 0.4).abs() < 1e-12,
            "3 of 5 allowed: {thr}"
        );
        // Every metric named in the directive has a value on the line.
        for l in &lines {
            for m in l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
            {
                let name = m["Name"].as_str().unwrap();
                assert!(l[name].is_number(), "{name} missing in {l}");
            }
        }
    }

    #[test]
    fn no_functions_no_lines_and_a_full_queue_counts_them_lost() {
        let spec = SloSpec::embedded_default();
        assert!(emf_events(&spec, &Evaluation::default(), "t").is_empty());
        let stats = Arc::new(AwsStats::default());
        let cfg = AwsConfig {
            logs_group_prefix: Some("/fn/".into()),
            ..AwsConfig::default()
        };
        let (emf, _rx) = Emf::new(&cfg, "t", &stats).unwrap();
        let ev = evaluation(&spec);
        for _ in 0..EMF_CAPACITY + 2 {
            emf.publish(&spec, &ev);
        }
        assert_eq!(
            stats.emf_lost.load(Ordering::Relaxed),
            2 * spec.slos.len() as u64,
            "the two evaluations beyond the queue's capacity"
        );
    }
}
