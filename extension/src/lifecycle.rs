//! The one event loop: register, subscribe, then react to Extensions API events, Telemetry API
//! batches, finished exports and timers — and ask [`crate::flush::decide`] when to flush.
//!
//! Owns every piece of mutable state (translator, buffer, flush state, self counters); the
//! listener and the exports are separate tasks talking to it through a bounded channel and join
//! handles. At most one export is in flight.
//!
//! Per invocation (INVOKE): the policy says `BeforeNext` (wait for this request's
//! `platform.runtimeDone` — never `/next` before it — then flush within [`BEFORE_NEXT_BUDGET`],
//! then `/next`), `Background` (start an export, `/next` at once) or `Nothing` (`/next` at once).
//!
//! SHUTDOWN (staged, deadline from the event's `deadlineMs`): keep the listener open until every
//! pending `platform.report` arrived or the drain deadline (half the time left) passed; then emit
//! what is still open, let an in-flight export finish, and make the final flush before
//! `deadlineMs` minus a safety margin.
//!
//! Fail open: nothing here panics; `/next` waits for a flush only once the collector has
//! answered (a health probe, an empty OTLP request, goes out in the background at start-up so
//! the first invocation need not guess); an export that outlives its budget or fails an attempt
//! keeps running in the background and marks the collector unhealthy, so the next invocations
//! do not wait for it until a background export succeeds.
//! What an export could not send for a passing reason (collector down, timeout, 429/503) goes
//! back to the buffer and out with the next flush; only the final flush at SHUTDOWN counts it
//! as `export_failed`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::buffer::Buffer;
use crate::config::{Config, DEFAULT_CONTINUOUS_PERIOD_MS};
use crate::export::{ExportConfig, ExportReport, Exporter, reason};
use crate::extensions_api::{self, ApiError, ExtensionsApi, NextEvent};
use crate::flush::{Decision, FlushState, Moment, decide};
use crate::http::HttpClient;
use crate::observe::SelfStats;
use crate::telemetry_api::{self, Received, Subscription};
use crate::translate::{Options, ResourceInfo, Translator};
use crate::{info, warn};

/// The longest `/next` is held back for a flush at the end of an invocation (once
/// `platform.runtimeDone` is in), and only when the collector answered the previous export.
/// Past it the export goes on in the background and the collector counts as unhealthy.
pub const BEFORE_NEXT_BUDGET: Duration = Duration::from_millis(250);
/// After the deadline of an invocation whose `runtimeDone` never came, give up waiting.
pub const RUNTIME_DONE_GRACE: Duration = Duration::from_millis(500);
/// Kept free before the SHUTDOWN deadline.
pub const SHUTDOWN_SAFETY: Duration = Duration::from_millis(100);
/// At SHUTDOWN, let late log batches in for at least this long.
pub const SHUTDOWN_MIN_DRAIN: Duration = Duration::from_millis(50);
/// When SHUTDOWN carries no deadline.
pub const SHUTDOWN_DEFAULT: Duration = Duration::from_millis(1800);
/// Telemetry batches queued between the listener and the loop.
pub const TELEMETRY_CHANNEL: usize = 64;

type NextFut = Pin<Box<dyn Future<Output = Result<NextEvent, ApiError>> + Send>>;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Converts a Unix-ms deadline into an `Instant`.
fn instant_of(deadline_ms: u64, now: Instant) -> Instant {
    let now_ms = now_ns() / 1_000_000;
    now + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// `/next` is outstanding.
    Idle,
    /// Waiting for `platform.runtimeDone` of this request before flushing.
    AwaitRuntimeDone {
        request_id: String,
        give_up: Instant,
    },
    /// A flush is in flight; `/next` follows when it ends or at `give_up`.
    FlushBeforeNext { give_up: Instant },
    /// SHUTDOWN received.
    Draining {
        since: Instant,
        drain_until: Instant,
        deadline: Instant,
        reason: Option<String>,
    },
}

/// Runs the extension until SHUTDOWN. Returns the process exit code.
pub async fn run(cfg: Config, warnings: Vec<String>) -> i32 {
    for w in &warnings {
        eprintln!("[lambdawatch] WARN config: {w}");
    }
    let Some(runtime_api) = cfg.runtime_api.clone() else {
        eprintln!(
            "[lambdawatch] ERROR AWS_LAMBDA_RUNTIME_API is not set: not running inside Lambda"
        );
        return 1;
    };
    let client = HttpClient::with_extra_roots(cfg.extra_roots.clone());
    let name = extension_name();
    let (api, reg) =
        match extensions_api::register(&client, &runtime_api, &name, cfg.managed_instances).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing else can be done without an identifier; Lambda reports the init error.
                eprintln!("[lambdawatch] ERROR register failed: {e}");
                return 1;
            }
        };
    let (tx, rx) = mpsc::channel(TELEMETRY_CHANNEL);
    let telemetry = match telemetry_api::listen(cfg.listener, tx).await {
        Ok(addr) => {
            match telemetry_api::subscribe(
                &client,
                &runtime_api,
                api.id(),
                addr.port(),
                cfg.capture_logs,
            )
            .await
            {
                Subscription::Subscribed { schema } => {
                    info!(
                        "subscribed",
                        "subscribed to the Telemetry API (schema {schema}, port {})",
                        addr.port()
                    );
                    true
                }
                Subscription::NotSupported => {
                    info!(
                        "not-supported",
                        "Telemetry API not supported here: running on lifecycle events only"
                    );
                    false
                }
                Subscription::Failed(e) => {
                    warn!(
                        "subscribe-failed",
                        "Telemetry API subscription failed ({e}): running on lifecycle events only"
                    );
                    false
                }
            }
        }
        Err(e) => {
            warn!(
                "listen-failed",
                "cannot bind the Telemetry listener on {} ({e}): running on lifecycle events only",
                cfg.listener
            );
            false
        }
    };
    let resource = ResourceInfo {
        service_name: cfg.service_name.clone(),
        function_name: cfg.function_name.clone().or(reg.function_name.clone()),
        function_version: cfg
            .function_version
            .clone()
            .or(reg.function_version.clone()),
        instance: cfg.log_stream.clone(),
        max_memory_mb: cfg.memory_mb,
        region: cfg.region.clone(),
        account_id: reg.account_id.clone(),
        architecture: Some(std::env::consts::ARCH.replace("aarch64", "arm64")),
        extra: cfg.resource_attributes.clone(),
    };
    let exporter = Exporter::new(
        client,
        ExportConfig {
            endpoints: cfg.endpoints.clone(),
            headers: cfg.headers.clone(),
            compression: cfg.compression,
            timeout: cfg.timeout,
        },
    );
    let continuous = reg.shutdown_only || !telemetry;
    let lp = Loop::new(&cfg, resource, exporter, rx, continuous, telemetry);
    lp.run(api).await;
    0
}

/// The name Lambda knows us by: our file name in `/opt/extensions`.
fn extension_name() -> String {
    std::env::args()
        .next()
        .as_deref()
        .and_then(|p| {
            std::path::Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lambdawatch-extension".to_owned())
}

pub struct Loop {
    translator: Translator,
    buffer: Buffer,
    flush: FlushState,
    exporter: Exporter,
    rx: mpsc::Receiver<Received>,
    stats: SelfStats,
    telemetry: bool,
    export_task: Option<JoinHandle<ExportReport>>,
    /// Notified when an attempt of the in-flight export fails.
    export_failed: Arc<Notify>,
    /// Items in the in-flight export.
    in_flight_items: u64,
    /// How many of the in-flight export's metrics came from the buffer (the rest are our own
    /// self-metrics, not requeued).
    in_flight_buffer_metrics: usize,
    timeout: Duration,
    started_ns: u64,
}

impl Loop {
    pub fn new(
        cfg: &Config,
        resource: ResourceInfo,
        exporter: Exporter,
        rx: mpsc::Receiver<Received>,
        continuous: bool,
        telemetry: bool,
    ) -> Self {
        let period = Duration::from_millis(DEFAULT_CONTINUOUS_PERIOD_MS);
        Self {
            translator: Translator::new(
                Options {
                    capture_logs: cfg.capture_logs,
                    redactor: cfg.redactor.clone(),
                    ..Options::default()
                },
                resource,
            ),
            buffer: Buffer::new(cfg.buffer_max_items, cfg.buffer_max_bytes),
            flush: FlushState::new(cfg.flush, continuous, period),
            exporter,
            rx,
            stats: SelfStats::default(),
            telemetry,
            export_task: None,
            export_failed: Arc::new(Notify::new()),
            in_flight_items: 0,
            in_flight_buffer_metrics: 0,
            timeout: cfg.timeout,
            started_ns: now_ns(),
        }
    }

    pub async fn run(mut self, api: ExtensionsApi) {
        // Learn the collector's health off the critical path before the first INVOKE needs it.
        if self.flush.probe_wanted() {
            let now = Instant::now();
            self.start_export(now, now + self.timeout);
        }
        let mut next: Option<NextFut> = Some(Box::pin(api.clone().next()));
        let mut phase = Phase::Idle;
        let mut rx_open = true;
        loop {
            let now = Instant::now();
            let wake = self.wakeup(&phase, now);
            tokio::select! {
                biased;
                r = join_opt(&mut self.export_task), if self.export_task.is_some() => {
                    self.export_task = None;
                    let report = r.unwrap_or_else(|e| ExportReport { error: Some(e.to_string()), ..Default::default() });
                    self.on_export_done(report);
                    if matches!(phase, Phase::FlushBeforeNext { .. }) {
                        phase = Phase::Idle;
                        next = Some(Box::pin(api.clone().next()));
                    }
                }
                _ = notified(&self.export_failed), if matches!(phase, Phase::FlushBeforeNext { .. }) => {
                    // The collector is failing: retries go on in the background, /next goes now.
                    self.flush.on_flush_done(false);
                    self.flush.in_flight = self.export_task.is_some();
                    phase = Phase::Idle;
                    next = Some(Box::pin(api.clone().next()));
                }
                b = self.rx.recv(), if rx_open => {
                    match b {
                        Some(batch) => self.on_batch(batch),
                        None => rx_open = false,
                    }
                    if let Phase::AwaitRuntimeDone { request_id, .. } = &phase
                        && self.translator.runtime_done_seen(request_id)
                    {
                        phase = self.flush_before_next(&api, &mut next);
                    }
                }
                ev = next_opt(&mut next), if next.is_some() => {
                    next = None;
                    match ev {
                        Ok(NextEvent::Invoke { request_id, deadline_ms, invoked_arn, xray }) => {
                            phase = self.on_invoke(&api, &mut next, request_id, deadline_ms, invoked_arn, xray);
                        }
                        Ok(NextEvent::Shutdown { reason, deadline_ms }) => {
                            let now = Instant::now();
                            let deadline = deadline_ms.map_or(now + SHUTDOWN_DEFAULT, |d| instant_of(d, now))
                                .checked_sub(SHUTDOWN_SAFETY).unwrap_or(now).max(now);
                            let left = deadline.saturating_duration_since(now);
                            phase = Phase::Draining { since: now, drain_until: now + left / 2, deadline, reason };
                        }
                        Err(e) => {
                            warn!("next-failed", "event/next failed: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            next = Some(Box::pin(api.clone().next()));
                        }
                    }
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    match &phase {
                        Phase::AwaitRuntimeDone { give_up, .. } if now >= *give_up => {
                            phase = self.flush_before_next(&api, &mut next);
                        }
                        Phase::FlushBeforeNext { give_up } if now >= *give_up => {
                            // The collector is too slow: do not hold the function any longer.
                            self.flush.on_flush_done(false);
                            self.flush.in_flight = self.export_task.is_some();
                            warn!("flush-budget", "flush did not finish within {BEFORE_NEXT_BUDGET:?}; continuing without waiting");
                            phase = Phase::Idle;
                            next = Some(Box::pin(api.clone().next()));
                        }
                        _ => self.tick(now),
                    }
                }
            }
            if let Phase::Draining {
                since,
                drain_until,
                deadline,
                reason,
            } = &phase
            {
                let now = Instant::now();
                let settled =
                    self.translator.pending_reports() == 0 && now >= *since + SHUTDOWN_MIN_DRAIN;
                if settled || now >= *drain_until {
                    let (deadline, reason) = (*deadline, reason.clone());
                    self.shutdown(deadline, reason.as_deref()).await;
                    return;
                }
            }
        }
    }

    /// The earliest moment the loop must wake up by itself.
    fn wakeup(&self, phase: &Phase, now: Instant) -> Instant {
        let far = now + Duration::from_secs(3600);
        let phase_t = match phase {
            Phase::Idle => far,
            Phase::AwaitRuntimeDone { give_up, .. } | Phase::FlushBeforeNext { give_up } => {
                *give_up
            }
            Phase::Draining {
                since, drain_until, ..
            } => (*since + SHUTDOWN_MIN_DRAIN).min(*drain_until),
        };
        let flush_t = self.flush.next_wakeup(now).unwrap_or(far);
        phase_t.min(flush_t).max(now + Duration::from_millis(1))
    }

    fn on_batch(&mut self, b: Received) {
        self.stats.on_parse(&b.stats, b.body_lost);
        if b.stats.malformed > 0 || b.stats.unknown_types > 0 || b.body_lost {
            warn!(
                "parse-skips",
                "telemetry batch: {} malformed, {} unknown-type elements skipped (rest kept)",
                b.stats.malformed,
                b.stats.unknown_types
            );
        }
        if b.stats.unknown_fields > 0 || b.stats.odd_values > 0 {
            warn!(
                "parse-ignored",
                "telemetry batch: {} unknown fields and {} odd values ignored inside events that were kept (lambdawatch.extension.ignored)",
                b.stats.unknown_fields,
                b.stats.odd_values
            );
        }
        let now = now_ns();
        self.translator.ingest_all(b.events, &mut self.buffer, now);
        self.translator.after_batch(now, &mut self.buffer);
        self.tick(Instant::now());
    }

    fn tick(&mut self, now: Instant) {
        self.flush.buffer_fill = self.buffer.fill();
        self.flush.in_flight = self.export_task.is_some();
        if decide(&self.flush, now, Moment::Tick) == Decision::Background {
            self.start_export(now, now + self.timeout);
        }
    }

    fn on_invoke(
        &mut self,
        api: &ExtensionsApi,
        next: &mut Option<NextFut>,
        request_id: String,
        deadline_ms: Option<u64>,
        invoked_arn: Option<String>,
        xray: Option<String>,
    ) -> Phase {
        let now = Instant::now();
        let t = now_ns();
        self.translator.observe_invoke(
            &request_id,
            deadline_ms,
            invoked_arn.as_deref(),
            xray.as_deref(),
            t,
        );
        if !self.telemetry {
            self.translator
                .emit_lifecycle_only(&request_id, &mut self.buffer);
        }
        self.flush.on_invoke(now);
        self.flush.buffer_fill = self.buffer.fill();
        self.flush.in_flight = self.export_task.is_some();
        match decide(&self.flush, now, Moment::Invoke) {
            Decision::BeforeNext
                if self.telemetry && !self.translator.runtime_done_seen(&request_id) =>
            {
                let give_up = deadline_ms
                    .map_or(now + Duration::from_secs(900), |d| instant_of(d, now))
                    + RUNTIME_DONE_GRACE;
                Phase::AwaitRuntimeDone {
                    request_id,
                    give_up,
                }
            }
            Decision::BeforeNext => self.flush_before_next(api, next),
            Decision::Background => {
                self.start_export(now, now + self.timeout);
                *next = Some(Box::pin(api.clone().next()));
                Phase::Idle
            }
            Decision::Nothing => {
                *next = Some(Box::pin(api.clone().next()));
                Phase::Idle
            }
        }
    }

    /// Starts a flush and waits for it (bounded) before `/next`.
    fn flush_before_next(&mut self, api: &ExtensionsApi, next: &mut Option<NextFut>) -> Phase {
        let now = Instant::now();
        let budget = BEFORE_NEXT_BUDGET.min(self.timeout);
        if self.export_task.is_none() {
            self.start_export(now, now + budget);
        }
        if self.export_task.is_some() {
            Phase::FlushBeforeNext {
                give_up: now + budget,
            }
        } else {
            *next = Some(Box::pin(api.clone().next()));
            Phase::Idle
        }
    }

    fn start_export(&mut self, now: Instant, deadline: Instant) {
        if self.export_task.is_some() {
            return;
        }
        self.stats.on_buffer(self.buffer.dropped());
        if self.buffer.is_empty() {
            // Nothing to send: learn the collector's health instead, if the policy wants it.
            self.flush.in_flight = false;
            if self.flush.probe_wanted() {
                self.start_probe(now, deadline);
            }
            return;
        }
        let mut batch = self.buffer.drain();
        self.in_flight_buffer_metrics = batch.metrics.len();
        batch
            .metrics
            .extend(self.stats.to_metrics(self.started_ns, now_ns()));
        self.in_flight_items = batch.len() as u64;
        let resource = self.translator.resource.to_resource();
        let exporter = self.exporter.clone();
        self.flush.on_flush_started(now);
        // A fresh notifier per export, so a stale permit never releases the wrong wait.
        self.export_failed = Arc::new(Notify::new());
        let failed = self.export_failed.clone();
        self.export_task = Some(tokio::spawn(async move {
            exporter
                .export_notify(&resource, batch, deadline, Some(failed))
                .await
        }));
    }

    /// An empty request to the collector, off the critical path, in the export slot (so at most
    /// one is in flight and its answer is handled like an export's).
    fn start_probe(&mut self, now: Instant, deadline: Instant) {
        self.in_flight_items = 0;
        self.in_flight_buffer_metrics = 0;
        self.flush.on_flush_started(now);
        self.export_failed = Arc::new(Notify::new());
        let exporter = self.exporter.clone();
        self.export_task = Some(tokio::spawn(async move { exporter.probe(deadline).await }));
    }

    /// Counts the report and returns what failed for a passing reason to the buffer (without
    /// our own self-metrics, which are cumulative and rebuilt at every flush); it goes out at the
    /// next flush, and drop-oldest applies if the buffer overflows meanwhile.
    fn on_export_done(&mut self, mut r: ExportReport) {
        self.stats.on_export(&r);
        self.flush.on_flush_done(r.ok);
        if let Some(e) = &r.error {
            warn!("export-failed", "export failed: {e}");
        }
        let mut unsent = std::mem::take(&mut r.unsent);
        unsent.metrics.truncate(self.in_flight_buffer_metrics);
        self.buffer.requeue(unsent);
        self.stats.on_buffer(self.buffer.dropped());
        self.flush.buffer_fill = self.buffer.fill();
    }

    async fn shutdown(&mut self, deadline: Instant, reason: Option<&str>) {
        // An in-flight export gets at most half the time left; then it is abandoned (its items
        // counted as dropped) so the final flush keeps the other half.
        if let Some(mut h) = self.export_task.take() {
            let half = deadline.saturating_duration_since(Instant::now()) / 2;
            match tokio::time::timeout(half, &mut h).await {
                Ok(Ok(r)) => self.on_export_done(r),
                _ => {
                    h.abort();
                    // A health probe carries no items: nothing lost, nothing to say.
                    if self.in_flight_items > 0 {
                        self.stats.drop(reason::EXPORT_FAILED, self.in_flight_items);
                        warn!(
                            "shutdown-export",
                            "in-flight export did not finish in time at shutdown; {} items dropped",
                            self.in_flight_items
                        );
                    }
                }
            }
        }
        // Batches already queued still count (a bounded drain of the channel, not a spin).
        while let Ok(b) = self.rx.try_recv() {
            self.stats.on_parse(&b.stats, b.body_lost);
            let now = now_ns();
            self.translator.ingest_all(b.events, &mut self.buffer, now);
        }
        self.translator.finish(reason, now_ns(), &mut self.buffer);
        self.stats.on_buffer(self.buffer.dropped());
        let mut batch = self.buffer.drain();
        batch
            .metrics
            .extend(self.stats.to_metrics(self.started_ns, now_ns()));
        let resource = self.translator.resource.to_resource();
        let mut report = self.exporter.export(&resource, batch, deadline).await;
        // The last chance: what is still unsent now is lost.
        let unsent = std::mem::take(&mut report.unsent);
        if !unsent.is_empty() {
            self.stats.drop(reason::EXPORT_FAILED, unsent.len() as u64);
        }
        self.stats.on_export(&report);
        if let Some(e) = &report.error {
            warn!("export-failed", "final export failed: {e}");
        }
    }
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await
}

async fn join_opt(
    h: &mut Option<JoinHandle<ExportReport>>,
) -> Result<ExportReport, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn next_opt(n: &mut Option<NextFut>) -> Result<NextEvent, ApiError> {
    match n {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn notified(n: &Arc<Notify>) {
    n.notified().await
}
