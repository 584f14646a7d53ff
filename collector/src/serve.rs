//! Wiring for `lambdawatch-collector serve`: listeners, the aggregator owner, the evaluator loop,
//! and the staged shutdown.
//!
//! ```text
//! OTLP gRPC ─┐                       ┌─ Command (queries) ◄── evaluator · /metrics · /api
//! OTLP HTTP ─┴─► bounded ingest queue ─► aggregate owner
//! evaluator (every eval_interval): evaluate → alert state machine → deliver → Snapshot (watch)
//!            (the same query evaluates the cost stage the aggregator feeds: Snapshot::cost)
//! ```
//!
//! With `LAMBDAWATCH_CHECKPOINT` set, the checkpoint is loaded and restored before any listener
//! is bound, and `checkpoint::Writer` saves every checkpoint interval (see `crate::checkpoint`)
//! and, before the notifications of an evaluation with alert transitions are handed to the
//! sinks, once more (waiting at most [`SAVE_ON_TRANSITION_TIMEOUT`]): a kill right after a page
//! restores the page's state and does not page again. With `LAMBDAWATCH_LEASE_TTL` the lease task
//! (`crate::aws::run_lease`) decides which task polls CloudWatch and publishes to SNS. With
//! CloudWatch Logs export on, every evaluation's SLO metrics go out as EMF lines
//! (`crate::aws::Emf`).
//!
//! Shutdown (SIGTERM/SIGINT or the `shutdown` token), staged under `shutdown_timeout` (25 s):
//! 1. `stopping` fires: `/readyz` turns 503, receivers answer 503 / UNAVAILABLE, listeners stop
//!    accepting and finish in-flight requests (≤ 5 s).
//! 2. The aggregator closes and drains the ingest queue (`recv` until `None`).
//! 3. One last evaluation; its notifications are delivered (≤ the remaining time); one last
//!    checkpoint when configured.
//! 4. Everything else is cancelled; the process exits.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    aggregate::{self, Aggregates, FunctionKey},
    alerting::{
        alert::{self, Alert, AlertStatus, FunctionLabels},
        sinks::{
            AlertmanagerConfig, AlertmanagerSink, DeliveryCounters, Dispatcher, DispatcherConfig,
            LogSink, SinkConfigError, WebhookConfig, WebhookSink,
        },
        state::{AlertStates, Observed, Phase, Policy},
    },
    config::Config,
    cost::{CostFeed, CostReport, prices::PriceTable},
    ingest::{self, Ingest, IngestStats},
    slo::{
        eval::{self, Evaluation},
        spec::{Severity, SloSpec},
    },
};

/// One row of alert state for exposure.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub key: FunctionKey,
    pub slo: String,
    pub severity: Severity,
    pub phase: Option<Phase>,
    pub fingerprint: String,
}

/// The latest evaluation, published to `/metrics`, `/api/v1/slos` and the status page.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub evaluation: Evaluation,
    pub alerts: Vec<AlertRow>,
    /// Every notification ever produced, newest last (bounded to the last 1,000).
    pub notifications: Vec<Alert>,
    /// The cost stage's evaluation at the same `now` (`crate::cost::feed`).
    pub cost: Arc<CostReport>,
}

/// How long an evaluation with alert transitions waits for its checkpoint before delivering
/// anyway (a page late is better than a page lost; a kill in that gap may page twice).
pub const SAVE_ON_TRANSITION_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on the notification history kept for the status page and tests.
pub const NOTIFICATION_HISTORY: usize = 1000;

/// Where notifications go: the dispatcher in production, a collector in tests.
pub trait Deliver: Send + Sync + 'static {
    /// Must not block: queue and return.
    fn deliver(&self, alert: Alert);
    /// Waits (at most `deadline`) until queued notifications were attempted.
    fn flush(&self, deadline: Duration) -> futures_lite_boxed::BoxFuture<'_, ()>;
    /// `(sink, result, count)` for `lambdawatch_alert_deliveries_total`.
    fn deliveries(&self) -> Vec<(String, String, u64)>;
}

/// A tiny boxed-future alias (no extra dependency).
pub mod futures_lite_boxed {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
}

/// The production [`Deliver`]: `alerting::sinks::Dispatcher` (bounded per-sink queues, retries
/// with backoff, a sink that is down never blocks another) with the log sink always on, plus
/// Alertmanager and the webhook when configured.
pub struct Dispatch {
    dispatcher: std::sync::Mutex<Option<Dispatcher>>,
    counters: DeliveryCounters,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatch")
    }
}

/// Per-request timeout of the HTTP sinks.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(5);

impl Dispatch {
    /// Builds the sinks `cfg` asks for (must run inside a tokio runtime).
    pub fn from_config(
        cfg: &Config,
        aws_stats: &Arc<crate::aws::AwsStats>,
    ) -> Result<Self, SinkConfigError> {
        let mut d = Dispatcher::new(DispatcherConfig::default());
        d.add_sink(LogSink);
        if let Some(url) = &cfg.alertmanager_url {
            d.add_sink(AlertmanagerSink::new(AlertmanagerConfig {
                url: url.clone(),
                resend_interval: cfg.alert_resend,
                timeout: SINK_TIMEOUT,
                generator_url: None,
            })?);
        }
        if let Some(url) = &cfg.webhook_url {
            d.add_sink(WebhookSink::new(WebhookConfig {
                url: url.clone(),
                secret: cfg.webhook_secret.clone(),
                timeout: SINK_TIMEOUT,
            })?);
        }
        if let Some(topic) = &cfg.aws.sns_topic_arn {
            d.add_sink(crate::aws::SnsSink::new(
                &cfg.aws,
                topic.clone(),
                aws_stats.clone(),
            ));
        }
        Ok(Self::new(d))
    }

    pub fn new(d: Dispatcher) -> Self {
        Self {
            counters: d.counters(),
            dispatcher: std::sync::Mutex::new(Some(d)),
        }
    }
}

impl Deliver for Dispatch {
    fn deliver(&self, alert: Alert) {
        let guard = self
            .dispatcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(d) => d.dispatch(alert),
            None => {
                tracing::warn!(fingerprint = %alert.fingerprint, "alert after shutdown: dropped")
            }
        }
    }

    fn flush(&self, deadline: Duration) -> futures_lite_boxed::BoxFuture<'_, ()> {
        let d = self
            .dispatcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Box::pin(async move {
            if let Some(d) = d
                && !d.shutdown(deadline).await
            {
                tracing::warn!("some alert deliveries abandoned at the shutdown deadline");
            }
        })
    }

    fn deliveries(&self) -> Vec<(String, String, u64)> {
        self.counters
            .snapshot()
            .into_iter()
            .map(|c| (c.sink, c.result.as_str().to_owned(), c.count))
            .collect()
    }
}

fn labels_of(k: &FunctionKey) -> FunctionLabels {
    FunctionLabels {
        function: k.function.clone(),
        version: k.version.clone(),
        region: k.region.clone(),
        account: k.account.clone(),
    }
}

fn secs_to_time(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

/// Turns an evaluation into one observed alert per (function, SLO, severity) — rules of the same
/// severity share a fingerprint, so they are merged: active if any is, evidence from the first
/// active one (else the first) — plus one per function for no-data.
pub fn observe(spec: &SloSpec, runbook_base: &str, ev: &Evaluation) -> Vec<Observed> {
    let mut out = Vec::new();
    for f in &ev.functions {
        let labels = labels_of(&f.key);
        for s in &f.slos {
            let Some(def) = spec.slos.get(s.slo_index) else {
                continue;
            };
            for severity in [Severity::Page, Severity::Ticket] {
                let conds: Vec<_> = s
                    .conditions
                    .iter()
                    .filter(|c| c.severity == severity)
                    .collect();
                let Some(first) = conds.iter().find(|c| c.active).or(conds.first()) else {
                    continue;
                };
                let e = &first.evidence;
                let summary = if def.sli.is_count_budget() {
                    format!(
                        "{} {}: {} of {} allowed over {} ({} of the budget)",
                        f.key.function,
                        def.name,
                        e.total,
                        def.objective,
                        crate::config::format_duration(def.window),
                        pct(e.budget_consumed)
                    )
                } else {
                    format!(
                        "{} {}: burning the error budget {:.1}× over {} (threshold {}×)",
                        f.key.function,
                        def.name,
                        e.burn_rate_long.unwrap_or(0.0),
                        crate::config::format_duration(e.long_window),
                        e.factor
                    )
                };
                let description = format!(
                    "SLI {:.5} (objective {}) from {} good of {} events over {}; burn rate {:.2} over {} and {:.2} over {}; {} of the {} budget consumed{}.",
                    e.sli,
                    e.objective,
                    e.good,
                    e.total,
                    crate::config::format_duration(e.long_window),
                    e.burn_rate_long.unwrap_or(0.0),
                    crate::config::format_duration(e.long_window),
                    e.burn_rate_short.unwrap_or(0.0),
                    crate::config::format_duration(e.short_window),
                    pct(e.budget_consumed),
                    crate::config::format_duration(def.window),
                    e.time_to_exhaustion
                        .map(|d| format!("; exhausted in {}", crate::config::format_duration(d)))
                        .unwrap_or_default()
                );
                let alert = Alert {
                    fingerprint: alert::Fingerprint::compute(&def.name, &labels, severity),
                    status: AlertStatus::Firing,
                    starts_at: secs_to_time(ev.now_s),
                    ends_at: None,
                    labels: Alert::slo_labels(def, &labels, severity),
                    summary,
                    description,
                    evidence: e.clone(),
                    runbook_url: format!(
                        "{}/{}.md",
                        runbook_base.trim_end_matches('/'),
                        def.sli.runbook_page().as_str()
                    ),
                };
                out.push(Observed {
                    alert,
                    active: conds.iter().any(|c| c.active),
                });
            }
        }
        if let Some(nd) = &f.no_data {
            let mut l = std::collections::BTreeMap::new();
            l.insert("alertname".into(), alert::NO_DATA_ALERT_NAME.into());
            l.insert("slo".into(), alert::NO_DATA_SLO.into());
            l.insert("severity".into(), nd.severity.as_str().into());
            l.insert("function".into(), labels.function.clone());
            l.insert("version".into(), labels.version.clone());
            l.insert("region".into(), labels.region.clone());
            l.insert("account".into(), labels.account.clone());
            out.push(Observed {
                alert: Alert {
                    fingerprint: alert::Fingerprint::compute(
                        alert::NO_DATA_SLO,
                        &labels,
                        nd.severity,
                    ),
                    status: AlertStatus::Firing,
                    starts_at: secs_to_time(ev.now_s),
                    ends_at: None,
                    labels: l,
                    summary: format!(
                        "{} has reported nothing for {}",
                        f.key.function,
                        crate::config::format_duration(nd.evidence.long_window)
                    ),
                    description: format!(
                        "{} invocations in the last 3 days, none in the last {}.",
                        nd.evidence.total,
                        crate::config::format_duration(nd.evidence.long_window)
                    ),
                    evidence: nd.evidence.clone(),
                    runbook_url: format!(
                        "{}/{}.md",
                        runbook_base.trim_end_matches('/'),
                        alert::RunbookPage::NoData.as_str()
                    ),
                },
                active: nd.active,
            });
        }
    }
    out
}

/// `alertname` of the cost stage's cost-surprise notification (`slo` label `cost_surprise`,
/// severity ticket, runbook `cost.md`).
pub const COST_SURPRISE_ALERT_NAME: &str = "LambdawatchCostSurprise";
pub const COST_SURPRISE_SLO: &str = "cost_surprise";
/// `alertname` of the retry-storm notification (`slo` label `retry_storm`, severity ticket,
/// runbook `retry-storm.md`).
pub const RETRY_STORM_ALERT_NAME: &str = "LambdawatchRetryStorm";
pub const RETRY_STORM_SLO: &str = "retry_storm";

/// The cost stage's alerts as observed alerts for the same state machine (`for`, re-send,
/// resolve) as the SLO alerts: per function one cost surprise (active while the budget or the
/// rate surprise fires) and one retry storm, both tickets. They are not SLOs, so their
/// [`alert::Evidence`] carries the observed value and its threshold in the SLO-shaped fields:
/// - retry storm: `sli` = 1 − retry fraction, `objective` = 1 − threshold, `burn_rate_long` and
///   `budget_consumed` = fraction / threshold, `good`/`total` = first attempts / invocations in
///   the retry window (both windows = that window);
/// - cost surprise: `sli` = the 30-day projection (USD), `objective` = the budget (0 without
///   one), `burn_rate_long` = projection / budget, `burn_rate_short` = the invocation rate /
///   its hour-of-week baseline, `total` = invocations in the surprise window.
pub fn observe_cost(runbook_base: &str, report: &CostReport) -> Vec<Observed> {
    let runbook = |page: alert::RunbookPage| {
        format!(
            "{}/{}.md",
            runbook_base.trim_end_matches('/'),
            page.as_str()
        )
    };
    let mut out = Vec::with_capacity(report.functions.len() * 2);
    for row in &report.functions {
        let labels = labels_of(&row.key);
        let label_map = |name: &str, slo: &str| {
            let mut l = std::collections::BTreeMap::new();
            l.insert("alertname".to_owned(), name.to_owned());
            l.insert("slo".to_owned(), slo.to_owned());
            l.insert("severity".to_owned(), Severity::Ticket.as_str().to_owned());
            l.insert("function".to_owned(), labels.function.clone());
            l.insert("version".to_owned(), labels.version.clone());
            l.insert("region".to_owned(), labels.region.clone());
            l.insert("account".to_owned(), labels.account.clone());
            l
        };
        let r = &row.cost.retry;
        let threshold = report.retry_threshold;
        let window = Duration::from_secs(r.window_secs);
        let ratio = if threshold > 0.0 {
            r.retry_fraction / threshold
        } else {
            0.0
        };
        out.push(Observed {
            alert: Alert {
                fingerprint: alert::Fingerprint::compute(RETRY_STORM_SLO, &labels, Severity::Ticket),
                status: AlertStatus::Firing,
                starts_at: secs_to_time(report.evaluated_at_unix),
                ends_at: None,
                labels: label_map(RETRY_STORM_ALERT_NAME, RETRY_STORM_SLO),
                summary: format!(
                    "{} retry storm: {} of invocations are retries over {}",
                    row.key.function,
                    pct(r.retry_fraction),
                    crate::config::format_duration(window)
                ),
                description: format!(
                    "{:.0} repeated request ids in {:.0} invocations over {} (threshold {}, sampled share of ids {}){}.",
                    r.retries,
                    r.invocations,
                    crate::config::format_duration(window),
                    pct(threshold),
                    pct(r.sample_rate),
                    r.dlq
                        .iter()
                        .map(|d| format!("; DLQ {} backlog {:.0} messages", d.queue, d.messages))
                        .collect::<String>()
                ),
                evidence: alert::Evidence {
                    sli: 1.0 - r.retry_fraction,
                    objective: 1.0 - threshold,
                    burn_rate_long: Some(ratio),
                    burn_rate_short: None,
                    long_window: window,
                    short_window: window,
                    factor: 1.0,
                    budget_consumed: ratio,
                    time_to_exhaustion: None,
                    good: (r.invocations - r.retries).max(0.0).round() as u64,
                    total: r.invocations.max(0.0).round() as u64,
                },
                runbook_url: runbook(alert::RunbookPage::RetryStorm),
            },
            active: r.alert,
        });
        let sp = &row.cost.surprise;
        let mut reasons = Vec::new();
        if sp.budget_alert {
            reasons.push(format!(
                "30-day projection ${:.2} over the ${:.2} budget",
                // The function name's projection (all its versions), which the budget judged.
                sp.budget_projected_30d_usd
                    .or(sp.projected_30d_usd)
                    .unwrap_or(0.0),
                sp.budget_usd.unwrap_or(0.0)
            ));
        }
        if sp.rate_alert {
            reasons.push(format!(
                "{:.0} invocations/h, {:.1}× the {:.0}/h of this hour of the week",
                sp.invocations_per_hour,
                sp.rate_ratio.unwrap_or(0.0),
                sp.baseline_per_hour.unwrap_or(0.0)
            ));
        }
        let budget = sp.budget_usd.unwrap_or(0.0);
        let projected = sp
            .budget_projected_30d_usd
            .or(sp.projected_30d_usd)
            .unwrap_or(row.cost.projected_30d_usd);
        out.push(Observed {
            alert: Alert {
                fingerprint: alert::Fingerprint::compute(
                    COST_SURPRISE_SLO,
                    &labels,
                    Severity::Ticket,
                ),
                status: AlertStatus::Firing,
                starts_at: secs_to_time(report.evaluated_at_unix),
                ends_at: None,
                labels: label_map(COST_SURPRISE_ALERT_NAME, COST_SURPRISE_SLO),
                summary: format!(
                    "{} cost surprise: {}",
                    row.key.function,
                    if reasons.is_empty() {
                        "none".to_owned()
                    } else {
                        reasons.join("; ")
                    }
                ),
                description: format!(
                    "30-day projection ${projected:.2}{}; {:.0} invocations in the last {} min ({:.0}/h){}.",
                    sp.budget_usd
                        .map(|b| format!(" against a ${b:.2} budget"))
                        .unwrap_or_default(),
                    sp.window_invocations,
                    sp.window_minutes,
                    sp.invocations_per_hour,
                    sp.baseline_per_hour
                        .map(|b| format!(", baseline {b:.0}/h for this hour of the week"))
                        .unwrap_or_default()
                ),
                evidence: alert::Evidence {
                    sli: projected,
                    objective: budget,
                    burn_rate_long: (budget > 0.0).then(|| projected / budget),
                    burn_rate_short: sp.rate_ratio,
                    long_window: Duration::from_secs(30 * 86_400),
                    short_window: Duration::from_secs(u64::from(sp.window_minutes) * 60),
                    factor: 1.0,
                    budget_consumed: if budget > 0.0 { projected / budget } else { 0.0 },
                    time_to_exhaustion: None,
                    good: 0,
                    total: sp.window_invocations,
                },
                runbook_url: runbook(alert::RunbookPage::Cost),
            },
            active: sp.budget_alert || sp.rate_alert,
        });
    }
    out
}

/// The evaluator: owns the alert states; one [`Evaluator::round`] per interval.
pub struct Evaluator {
    pub spec: Arc<SloSpec>,
    pub runbook_base: String,
    pub policy: Policy,
    pub states: AlertStates,
    pub history: Vec<Alert>,
}

impl Evaluator {
    /// One round on an SLO evaluation alone (no cost stage).
    pub fn round(&mut self, ev: Evaluation, now: SystemTime) -> (Vec<Alert>, Snapshot) {
        self.round_with_cost(ev, CostReport::default(), now)
    }

    /// One round on an evaluation and the cost evaluation of the same `now`: transitions,
    /// notifications (SLO alerts, then cost surprises and retry storms), the published snapshot.
    pub fn round_with_cost(
        &mut self,
        ev: Evaluation,
        cost: CostReport,
        now: SystemTime,
    ) -> (Vec<Alert>, Snapshot) {
        let mut observed = observe(&self.spec, &self.runbook_base, &ev);
        observed.extend(observe_cost(&self.runbook_base, &cost));
        let notes = self.states.step(self.policy, now, observed.iter().cloned());
        let alerts = observed
            .iter()
            .map(|o| {
                let l = &o.alert.labels;
                let get = |k: &str| l.get(k).cloned().unwrap_or_default();
                AlertRow {
                    key: FunctionKey {
                        function: get("function"),
                        version: get("version"),
                        region: get("region"),
                        account: get("account"),
                    },
                    slo: get("slo"),
                    severity: if get("severity") == "page" {
                        Severity::Page
                    } else {
                        Severity::Ticket
                    },
                    phase: self.states.phase(&o.alert.fingerprint),
                    fingerprint: o.alert.fingerprint.to_string(),
                }
            })
            .collect();
        self.history.extend(notes.iter().cloned());
        let excess = self.history.len().saturating_sub(NOTIFICATION_HISTORY);
        self.history.drain(..excess);
        let snap = Snapshot {
            evaluation: ev,
            alerts,
            notifications: self.history.clone(),
            cost: Arc::new(cost),
        };
        (notes, snap)
    }
}

/// Handles the admin server needs.
#[derive(Clone)]
pub struct Shared {
    pub aggregates: aggregate::Handle,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub ingest_stats: Arc<IngestStats>,
    pub deliver: Arc<dyn Deliver>,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    pub spec: Arc<SloSpec>,
    pub aws: Arc<crate::aws::AwsStats>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// The bound addresses.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub admin: SocketAddr,
}

/// What `run` hands to its caller once bound (tests use the aggregator handle).
#[derive(Debug, Clone)]
pub struct Running {
    pub bound: Bound,
    pub aggregates: aggregate::Handle,
}

fn now_s() -> u64 {
    ingest::now_s()
}

/// Runs the collector until `shutdown` fires (the binary wires SIGTERM/SIGINT to it).
/// `on_bound` is called once every listener is bound.
pub async fn run(
    cfg: Config,
    spec: SloSpec,
    deliver: Arc<dyn Deliver>,
    aws_stats: Arc<crate::aws::AwsStats>,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Running),
) -> anyhow::Result<()> {
    let mut spec = spec;
    if let Some(url) = &cfg.runbook_base_url {
        spec.defaults.runbook_base_url = url.clone();
    }
    if let Some(d) = cfg.no_data_after {
        spec.defaults.no_data_after = Some(d);
    }
    let spec = Arc::new(spec);
    let layout = eval::layout_for(&spec);
    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    let finish = CancellationToken::new();
    // Durable state: restored before anything is bound (see `crate::checkpoint`).
    let mut aggregates = Aggregates::new(layout, cfg.max_functions);
    aggregates.cost = Some(cost_feed(&cfg)?);
    let mut alert_states = AlertStates::default();
    let (ledger_tx, ledger_rx) = watch::channel(lambdawatch_aws::cloudwatch::Ledger::default());
    let mut checkpointer = crate::checkpoint::Checkpointer::open(&cfg, &aws_stats).await;
    let checkpoint_interval = cfg.checkpoint_interval.unwrap_or(cfg.eval_interval);
    if let Some(c) = checkpointer.as_mut()
        && let Some(doc) = c
            .load_or_adopt(crate::checkpoint::stale_after(checkpoint_interval))
            .await
    {
        let saved_at_s = doc.saved_at_s;
        if let Some(l) = doc.ledger.clone() {
            ledger_tx.send_replace(l);
        }
        let mut doc = doc;
        let cost_functions = match (doc.cost.take(), aggregates.cost.as_mut()) {
            (Some(saved), Some(feed)) => feed.restore(saved),
            _ => 0,
        };
        let r = crate::checkpoint::restore(doc, &mut aggregates, &mut alert_states);
        tracing::info!(
            key = c.key(),
            saved_at_s,
            functions = r.functions,
            malformed = r.malformed,
            alerts = r.alerts,
            counts_restored = r.counts,
            cost_functions,
            "checkpoint restored"
        );
        if !r.counts {
            tracing::warn!("checkpoint counts ignored: counted against other SLO thresholds");
        }
    }
    aggregates.zero_series = eval::zero_series(&spec, &cfg.dlq_queues);
    // The lease (several tasks): nothing polls or publishes to SNS until it is held.
    let lease_cancel = CancellationToken::new();
    if let Some(ttl) = cfg.lease_ttl
        && let Some(store) = crate::checkpoint::store(&cfg, &aws_stats).await
    {
        aws_stats.lease.contend();
        tracker.spawn(crate::aws::run_lease(
            store,
            crate::aws::lease_identity(&crate::checkpoint::task_id(&cfg)),
            ttl,
            aws_stats.clone(),
            lease_cancel.clone(),
        ));
    }
    let (handle, ingest_tx, owner, drained) = aggregate::owner(
        aggregates,
        cfg.queue_capacity,
        stopping.clone(),
        finish.clone(),
    );
    tracker.spawn(owner);

    let stats = Arc::new(IngestStats::default());
    let tap = crate::aws::tap(&cfg.aws, &aws_stats);
    let ingest = Ingest {
        auth_token: cfg.auth_token.as_deref().map(Arc::from),
        max_body_bytes: cfg.max_body_bytes,
        max_decompressed_bytes: cfg.max_decompressed_bytes,
        queue: ingest_tx,
        stats: stats.clone(),
        decoder: Arc::new(ingest::decode::Decoder {
            dlq_queues: cfg.dlq_queues.clone(),
            tap: tap.as_ref().map(|(t, _)| t.clone()),
        }),
        stopping: stopping.clone(),
    };
    let grpc_l = TcpListener::bind(cfg.otlp_grpc_addr).await?;
    let http_l = TcpListener::bind(cfg.otlp_http_addr).await?;
    let admin_l = TcpListener::bind(cfg.admin_addr).await?;
    let bound = Bound {
        otlp_grpc: grpc_l.local_addr()?,
        otlp_http: http_l.local_addr()?,
        admin: admin_l.local_addr()?,
    };

    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shared = Shared {
        aggregates: handle.clone(),
        snapshot: snap_rx,
        ingest_stats: stats,
        deliver: deliver.clone(),
        ready: ready.clone(),
        spec: spec.clone(),
        aws: aws_stats.clone(),
    };

    // Listeners: ingest stops on `stopping`, admin on `admin_stop` (last).
    let admin_stop = CancellationToken::new();
    let mut http_router = ingest::http::router(ingest.clone());
    if cfg.aws.firehose_access_key.is_some() {
        http_router = http_router.merge(crate::aws::firehose_router(
            ingest.clone(),
            cfg.aws.firehose_access_key.clone(),
            aws_stats.clone(),
        ));
    }
    // AWS sources and exporters (off unless configured). The exporters end when ingest stops
    // (their queues close with the decoder) after draining, or at the final cancel.
    let aws_cancel = CancellationToken::new();
    let (emf, emf_rx) =
        match crate::aws::Emf::new(&cfg.aws, &crate::checkpoint::task_id(&cfg), &aws_stats) {
            Some((e, r)) => (Some(e), Some(r)),
            None => (None, None),
        };
    if let Some((_, rx)) = tap {
        tracker.spawn(crate::aws::run_exporters(
            cfg.aws.clone(),
            rx,
            emf_rx,
            aws_stats.clone(),
            aws_cancel.clone(),
        ));
    }
    if cfg.aws.cloudwatch_poll_interval.is_some() {
        tracker.spawn(crate::aws::run_poller(
            cfg.aws.clone(),
            ingest.clone(),
            handle.clone(),
            aws_stats.clone(),
            stopping.clone(),
            ledger_tx,
        ));
    }
    let grpc_routes = ingest::grpc::routes(ingest.clone());
    drop(ingest);
    let stop = stopping.clone();
    let http_task = tracker.spawn(async move {
        axum::serve(http_l, http_router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    let stop = stopping.clone();
    let grpc_task = tracker.spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(grpc_routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_l),
                async move { stop.cancelled().await },
            )
            .await
    });
    let stop = admin_stop.clone();
    let admin_router = crate::api::router(shared.clone());
    tracker.spawn(async move {
        axum::serve(admin_l, admin_router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    on_bound(Running {
        bound,
        aggregates: handle.clone(),
    });

    // Evaluator loop.
    let mut evaluator = Evaluator {
        spec: spec.clone(),
        runbook_base: spec.defaults.runbook_base_url.clone(),
        policy: Policy {
            for_: cfg.alert_for,
            resend: cfg.alert_resend,
        },
        states: alert_states,
        history: Vec::new(),
    };
    let (alerts_tx, alerts_rx) =
        watch::channel(Arc::new(crate::checkpoint::saved_alerts(&evaluator.states)));
    let checkpoint_stop = CancellationToken::new();
    let (save_now, save_rx) = tokio::sync::mpsc::channel(1);
    // Orphans adopted while running: their alert states, merged by this loop (which owns them).
    let (adopted_tx, mut adopted_rx) = tokio::sync::mpsc::channel(4);
    let writer = checkpointer.map(|checkpointer| {
        let w = crate::checkpoint::Writer {
            checkpointer,
            aggregates: handle.clone(),
            alerts: alerts_rx,
            ledger: cfg.aws.cloudwatch_poll_interval.map(|_| ledger_rx),
            adopt: cfg
                .checkpoint_merge_orphans
                .then(|| crate::checkpoint::Adoption {
                    stale_after: crate::checkpoint::stale_after(checkpoint_interval),
                    alerts: adopted_tx,
                }),
        };
        tracker.spawn(w.run(checkpoint_interval, checkpoint_stop.clone(), save_rx))
    });
    // Saves the alert states of a transition before its notifications go out.
    let save_transition = || async {
        if writer.is_none() {
            return;
        }
        let (reply, saved) = tokio::sync::oneshot::channel();
        if save_now.try_send(reply).is_ok()
            && !matches!(
                tokio::time::timeout(SAVE_ON_TRANSITION_TIMEOUT, saved).await,
                Ok(Ok(true))
            )
        {
            tracing::warn!("alert transition not checkpointed; delivering anyway");
        }
    };
    let emit_emf = |snap: &watch::Sender<Arc<Snapshot>>| {
        if let Some(e) = &emf {
            e.publish(&spec, &snap.borrow().evaluation);
        }
    };
    let publish = |e: &Evaluator| {
        if writer.is_some() {
            alerts_tx.send_replace(Arc::new(crate::checkpoint::saved_alerts(&e.states)));
        }
    };
    // The first evaluation comes one interval after start (nothing to evaluate before).
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.eval_interval,
        cfg.eval_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(orphan) = adopted_rx.recv() => {
                let taken = crate::checkpoint::merge_alerts(orphan, &mut evaluator.states);
                if taken > 0 {
                    tracing::info!(alerts = taken, "adopted orphan's alert states merged");
                }
                publish(&evaluator);
            }
            _ = tick.tick() => {
                let notes = evaluate_once(&handle, &spec, &mut evaluator, &snap_tx).await;
                publish(&evaluator);
                emit_emf(&snap_tx);
                if !notes.is_empty() {
                    save_transition().await;
                }
                for n in notes {
                    deliver.deliver(n);
                }
            }
        }
    }

    // Staged shutdown.
    let started = Instant::now();
    let deadline = cfg.shutdown_timeout;
    let left = |started: Instant| deadline.saturating_sub(started.elapsed());
    tracing::info!("shutting down: stopping ingest");
    ready.store(false, std::sync::atomic::Ordering::SeqCst);
    stopping.cancel();
    let listeners = async {
        let _ = http_task.await;
        let _ = grpc_task.await;
    };
    if tokio::time::timeout(left(started).min(Duration::from_secs(5)), listeners)
        .await
        .is_err()
    {
        tracing::warn!("ingest listeners did not finish in 5 s; continuing");
    }
    match tokio::time::timeout(left(started), drained).await {
        Ok(Ok(d)) => tracing::info!(batches = d.batches, "ingest queue drained"),
        _ => tracing::warn!("ingest queue not drained before the deadline"),
    }
    let final_round = evaluate_once(&handle, &spec, &mut evaluator, &snap_tx);
    match tokio::time::timeout(left(started), final_round).await {
        Ok(notes) => {
            for n in notes {
                deliver.deliver(n);
            }
        }
        Err(_) => tracing::warn!("final evaluation did not finish before the deadline"),
    }
    publish(&evaluator);
    emit_emf(&snap_tx);
    // The EMF queue closes: the logs exporter drains it and ends.
    drop(emf);
    checkpoint_stop.cancel();
    if let Some(w) = writer {
        let last = async {
            if let Ok(mut w) = w.await {
                w.save_once().await;
            }
        };
        if tokio::time::timeout(left(started), last).await.is_err() {
            tracing::warn!("final checkpoint did not finish before the deadline");
        }
    }
    deliver.flush(left(started)).await;
    tracing::info!("final evaluation delivered; exiting");
    admin_stop.cancel();
    aws_cancel.cancel();
    lease_cancel.cancel();
    finish.cancel();
    drop(shared);
    drop(handle);
    tracker.close();
    let _ = tokio::time::timeout(left(started), tracker.wait()).await;
    Ok(())
}

/// One evaluation round; returns its notifications (the caller checkpoints, then delivers).
async fn evaluate_once(
    handle: &aggregate::Handle,
    spec: &Arc<SloSpec>,
    evaluator: &mut Evaluator,
    snap_tx: &watch::Sender<Arc<Snapshot>>,
) -> Vec<Alert> {
    let now = SystemTime::now();
    let now_secs = now_s();
    let spec2 = spec.clone();
    let Ok((ev, cost)) = handle
        .query(move |a| {
            a.refresh_percentiles(now_secs);
            let ev = eval::evaluate(&spec2, a, now_secs);
            // The advisors read the aggregator's state (percentiles refreshed above) with the
            // same `now`; O(memory sizes) per function, so they run on every tick.
            let functions = &a.functions;
            let cost = a
                .cost
                .as_mut()
                .map(|c| c.evaluate_with_advice(now_secs, functions))
                .unwrap_or_default();
            (ev, cost)
        })
        .await
    else {
        tracing::warn!("aggregator gone; evaluation skipped");
        return Vec::new();
    };
    let (notes, snap) = evaluator.round_with_cost(ev, cost, now);
    let _ = snap_tx.send(Arc::new(snap));
    notes
}

/// The cost stage `cfg` asks for: the configured price table (else the embedded one), the
/// stage's bounds and budgets. A price file that does not load stops the start, with its error.
pub fn cost_feed(cfg: &Config) -> anyhow::Result<CostFeed> {
    let prices = match &cfg.cost.prices_file {
        Some(path) => PriceTable::from_file(path)?,
        None => PriceTable::embedded()?,
    };
    Ok(
        CostFeed::new(prices, cfg.cost.stage_config(), cfg.cost.budgets.clone())
            .with_advice(cfg.cost.advice.clone()),
    )
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM"),
                        _ = int.recv() => tracing::info!("SIGINT"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    });
}

/// The notification path configured by `cfg` (must run inside a tokio runtime).
pub fn deliverer(
    cfg: &Config,
    aws_stats: &Arc<crate::aws::AwsStats>,
) -> Result<Arc<dyn Deliver>, SinkConfigError> {
    Ok(Arc::new(Dispatch::from_config(cfg, aws_stats)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::aggregate::{Event, Invocation, Outcome};
    use crate::cost::CostConfig;
    use std::collections::BTreeMap;

    const T0: u64 = 1_795_996_800;

    fn key(function: &str) -> FunctionKey {
        FunctionKey {
            function: function.into(),
            version: "1".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    fn invocation(t_s: u64, id: String) -> Event {
        Event::Invocation(Invocation {
            t_s,
            outcome: Outcome::Error,
            duration_ms: 100.0,
            billed_ms: Some(100.0),
            memory_mb: Some(512.0),
            max_memory_mb: None,
            timeout_ms: None,
            request_id: Some(id),
            span_fingerprint: None,
        })
    }

    /// A retry storm and a budget surprise become ticket notifications through the same state
    /// machine as the SLO alerts, with their runbooks; a quiet function raises nothing; the
    /// storm resolves once its retries leave the window.
    #[test]
    fn cost_alerts_fire_and_resolve_through_the_alert_state_machine() {
        let mut feed = CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig {
                free_tier: false,
                // Minutes of traffic judged against the budget: no warm-up here.
                surprise: crate::cost::surprise::SurpriseConfig {
                    budget_warmup_secs: 0,
                    ..Default::default()
                },
                ..CostConfig::default()
            },
            BTreeMap::from([("spendy".to_owned(), 0.01)]),
        );
        let tags = BTreeMap::new();
        // stormy: 100 events, 30 of them retried twice (async retries keep the request id).
        for i in 0..100 {
            feed.observe(&key("stormy"), "i", &tags, &invocation(T0, format!("s{i}")));
        }
        for i in 0..30 {
            for d in [60, 180] {
                feed.observe(
                    &key("stormy"),
                    "i",
                    &tags,
                    &invocation(T0 + d, format!("s{i}")),
                );
            }
        }
        // spendy: 1,000 invocations in a minute project far above its $0.01 budget.
        for i in 0..1000 {
            feed.observe(
                &key("spendy"),
                "i",
                &tags,
                &invocation(T0 + i % 60, format!("p{i}")),
            );
        }
        // quiet: a few distinct ids.
        for i in 0..5 {
            feed.observe(&key("quiet"), "i", &tags, &invocation(T0, format!("q{i}")));
        }
        let mut ev = Evaluator {
            spec: Arc::new(SloSpec::embedded_default()),
            runbook_base: "https://runbooks.example/".into(),
            policy: Policy {
                for_: Duration::ZERO,
                resend: Duration::from_secs(3600),
            },
            states: AlertStates::default(),
            history: Vec::new(),
        };
        let now = T0 + 240;
        let (notes, snap) =
            ev.round_with_cost(Evaluation::default(), feed.evaluate(now), secs_to_time(now));
        let fired: Vec<(String, String, String)> = notes
            .iter()
            .map(|n| {
                (
                    n.name().to_owned(),
                    n.labels["function"].clone(),
                    n.runbook_url.clone(),
                )
            })
            .collect();
        assert_eq!(
            fired,
            [
                (
                    COST_SURPRISE_ALERT_NAME.to_owned(),
                    "spendy".to_owned(),
                    "https://runbooks.example/cost.md".to_owned()
                ),
                (
                    RETRY_STORM_ALERT_NAME.to_owned(),
                    "stormy".to_owned(),
                    "https://runbooks.example/retry-storm.md".to_owned()
                ),
            ]
            .into_iter()
            .collect::<Vec<_>>(),
            "{notes:#?}"
        );
        let storm = notes
            .iter()
            .find(|n| n.name() == RETRY_STORM_ALERT_NAME)
            .unwrap();
        assert_eq!(storm.labels["severity"], "ticket");
        assert_eq!(storm.labels["slo"], RETRY_STORM_SLO);
        assert_eq!(storm.evidence.total, 160);
        assert_eq!(storm.evidence.good, 100);
        assert!(storm.summary.contains("37.500%"), "{}", storm.summary);
        assert_eq!(snap.cost.functions.len(), 3);
        // Later, the retries have left the 15-minute window: the storm resolves.
        let later = now + 3600;
        let (notes, _) = ev.round_with_cost(
            Evaluation::default(),
            feed.evaluate(later),
            secs_to_time(later),
        );
        let resolved: Vec<_> = notes
            .iter()
            .filter(|n| n.status == AlertStatus::Resolved)
            .map(|n| n.name().to_owned())
            .collect();
        assert_eq!(resolved, [RETRY_STORM_ALERT_NAME.to_owned()], "{notes:#?}");
    }
}
