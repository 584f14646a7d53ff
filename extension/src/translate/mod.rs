//! Telemetry API events → OTLP spans, metrics and log records (Contract 1 in
//! `docs/ARCHITECTURE.md`).
//!
//! Consumes [`crate::events::Event`]s (and the Extensions API INVOKE events, which carry the
//! deadline and the X-Ray header); produces items into the bounded [`Buffer`] (which drops the
//! oldest when full). Owns the invocation tracker; the single `lifecycle` loop owns the
//! translator, so there is no shared mutable state.
//!
//! **Correlation is by `requestId`, never by arrival order.** An invocation is assembled from
//! INVOKE, `platform.start`, `platform.runtimeDone` and `platform.report`; the report usually
//! arrives an invocation later, at SHUTDOWN, or interleaved with others (Managed Instances), and
//! the invocation is emitted when its report arrives. [`Translator::finish`] emits whatever is
//! still open at shutdown, with the outcome it can prove, so no invocation is lost. The tracker is
//! bounded ([`Options::max_pending`]): past it the oldest open invocation is emitted incomplete.
//!
//! Metrics carry the event time (the report's time), not the flush time: one delta data point per
//! event. Histograms use the fixed bounds below.

pub mod ids;
pub mod logs;
pub mod redact;

use std::collections::{HashMap, VecDeque};

use lambdawatch_semconv::{attr, init_type, metric, otlp, outcome, span_type, xray};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value as AV},
    logs::v1::LogRecord,
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
        metric::Data, number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use crate::buffer::Buffer;
use crate::events::{
    Event, EventBody, InitStart, InvocationDone, LogRecord as WireLog, LogsDropped, PhaseDone,
    Start, Tracing,
};
use crate::log_proto::LogWriter;
use ids::IdGen;
use logs::Severity;
use redact::Redactor;

/// Seconds. Covers sub-millisecond handlers to the 15-minute maximum.
pub const DURATION_BOUNDS_S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
/// Seconds. Includes every cold-start SLO threshold we ship (0.25 … 3 s).
pub const INIT_BOUNDS_S: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0,
];
/// Bytes: 64 MB … 10 GB.
pub const MEMORY_BOUNDS_B: &[f64] = &[
    67_108_864.0,
    134_217_728.0,
    268_435_456.0,
    536_870_912.0,
    1_073_741_824.0,
    2_147_483_648.0,
    4_294_967_296.0,
    10_737_418_240.0,
];

const MB: u64 = 1_048_576;

#[derive(Debug, Clone)]
pub struct Options {
    /// Turn `function`/`extension` records into LogRecords.
    pub capture_logs: bool,
    pub redactor: Redactor,
    /// Open invocations tracked at most (Managed Instances run many at once).
    pub max_pending: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            capture_logs: true,
            redactor: Redactor::defaults(),
            max_pending: 1024,
        }
    }
}

/// What we know about the function and its environment (the OTLP resource).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceInfo {
    pub service_name: Option<String>,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub instance: Option<String>,
    pub max_memory_mb: Option<u64>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub architecture: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, applied last (they win).
    pub extra: Vec<(String, String)>,
}

impl ResourceInfo {
    pub fn to_resource(&self) -> Resource {
        let mut a = Vec::with_capacity(12 + self.extra.len());
        let service = self
            .service_name
            .clone()
            .or_else(|| self.function_name.clone())
            .unwrap_or_else(|| "unknown_service".to_owned());
        a.push(otlp::kv_str(attr::SERVICE_NAME, service));
        if let Some(v) = &self.function_name {
            a.push(otlp::kv_str(attr::FAAS_NAME, v.clone()));
        }
        if let Some(v) = &self.function_version {
            a.push(otlp::kv_str(attr::FAAS_VERSION, v.clone()));
        }
        if let Some(v) = &self.instance {
            a.push(otlp::kv_str(attr::FAAS_INSTANCE, v.clone()));
        }
        if let Some(v) = self.max_memory_mb {
            a.push(otlp::kv_i64(
                attr::FAAS_MAX_MEMORY,
                v.saturating_mul(MB) as i64,
            ));
        }
        a.push(otlp::kv_str(attr::CLOUD_PROVIDER, "aws"));
        a.push(otlp::kv_str(attr::CLOUD_PLATFORM, "aws_lambda"));
        if let Some(v) = &self.region {
            a.push(otlp::kv_str(attr::CLOUD_REGION, v.clone()));
        }
        if let Some(v) = &self.account_id {
            a.push(otlp::kv_str(attr::CLOUD_ACCOUNT_ID, v.clone()));
        }
        if let Some(v) = &self.architecture {
            a.push(otlp::kv_str(attr::AWS_LAMBDA_ARCHITECTURE, v.clone()));
        }
        for (k, v) in &self.extra {
            a.retain(|kv| &kv.key != k);
            a.push(otlp::kv_str(k, v.clone()));
        }
        Resource {
            attributes: a,
            ..Default::default()
        }
    }
}

/// Trace context of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
}

#[derive(Debug)]
struct Invocation {
    ctx: TraceCtx,
    /// Trace id taken from an X-Ray header (INVOKE or `platform.start`).
    traced: bool,
    /// A log record or child already carries `ctx.span_id`: keep it stable.
    ids_used: bool,
    seq: u64,
    start_ns: Option<u64>,
    invoke_seen_ns: Option<u64>,
    deadline_ms: Option<u64>,
    invoked_arn: Option<String>,
    cold: Option<ColdInfo>,
    runtime_done: Option<InvocationDone>,
    runtime_done_ns: Option<u64>,
}

/// The initialisation an invocation paid for.
#[derive(Debug, Clone, PartialEq)]
struct ColdInfo {
    init_type: String,
    duration_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct OpenPhase {
    start_ns: Option<u64>,
    start: InitStart,
    runtime_done: Option<PhaseDone>,
}

/// Counts the translator keeps about itself (read by `lifecycle` for the self metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslateStats {
    pub invocations: u64,
    /// Invocations emitted without their `platform.report`.
    pub incomplete: u64,
    /// Invocations emitted early because the tracker was full.
    pub evicted: u64,
    pub logs: u64,
    pub redacted: u64,
    /// Records Lambda reported as dropped (`platform.logsDropped`).
    pub lambda_dropped_records: u64,
}

#[derive(Debug)]
pub struct Translator {
    opts: Options,
    pub resource: ResourceInfo,
    ids: IdGen,
    invocations: HashMap<String, Invocation>,
    /// Started and not yet runtime-done, in start order: logs without a request id belong to the
    /// single active one, when there is exactly one.
    active: Vec<String>,
    seq: u64,
    init: Option<OpenPhase>,
    restore: Option<OpenPhase>,
    /// The next invocation to start is a cold start.
    cold_next: Option<ColdInfo>,
    /// Lifecycle-only mode has seen an invocation (the first one is the cold start).
    lifecycle_seen: bool,
    stats: TranslateStats,
    /// Trace contexts of invocations already emitted, so a log record that arrives after its
    /// invocation's `platform.report` (the Telemetry API batches the `function` stream apart from
    /// the `platform` one; Managed Instances do this all the time) still joins its trace.
    /// Bounded by [`RECENT_EMITTED`], oldest forgotten first.
    recent: HashMap<String, TraceCtx>,
    /// The same invocations, oldest first, with their `[start, end]` in Unix ns.
    recent_order: VecDeque<(String, u64, u64)>,
}

/// How many of the latest emitted invocations a log record without a request id is matched
/// against by time (see `Translator::finish_log`).
pub const RECENT_TIME_SCAN: usize = 32;
/// Lambda stamps a line when it reads it from the function's stdout, which can be a little after
/// the handler returned: a line this close after an invocation's end still matches it (when no
/// invocation's own window holds the line).
pub const LATE_LINE_SLACK_NS: u64 = 10_000_000;

/// Emitted invocations whose trace context is kept for late log records.
pub const RECENT_EMITTED: usize = 256;

impl Translator {
    pub fn new(opts: Options, resource: ResourceInfo) -> Self {
        Self::with_ids(opts, resource, IdGen::new())
    }

    pub fn with_ids(opts: Options, resource: ResourceInfo, ids: IdGen) -> Self {
        Self {
            opts,
            resource,
            ids,
            invocations: HashMap::new(),
            active: Vec::new(),
            seq: 0,
            init: None,
            restore: None,
            cold_next: None,
            lifecycle_seen: false,
            stats: TranslateStats::default(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    pub fn stats(&self) -> TranslateStats {
        self.stats
    }

    /// Invocations still waiting for their `platform.report`.
    pub fn pending_reports(&self) -> usize {
        self.invocations.len()
    }

    /// Whether `platform.runtimeDone` (or the report) for `request_id` has been seen.
    pub fn runtime_done_seen(&self, request_id: &str) -> bool {
        match self.invocations.get(request_id) {
            Some(inv) => inv.runtime_done.is_some(),
            // Already emitted (report seen) or never known: nothing to wait for.
            None => true,
        }
    }

    /// An INVOKE event from the Extensions API: deadline, ARN and the X-Ray header.
    pub fn observe_invoke(
        &mut self,
        request_id: &str,
        deadline_ms: Option<u64>,
        invoked_arn: Option<&str>,
        xray_header: Option<&str>,
        now_ns: u64,
    ) {
        let inv = self.entry(request_id, now_ns);
        inv.deadline_ms = deadline_ms.or(inv.deadline_ms);
        inv.invoke_seen_ns = inv.invoke_seen_ns.or(Some(now_ns));
        if let Some(arn) = invoked_arn {
            inv.invoked_arn = Some(arn.to_owned());
        }
        if let Some(h) = xray_header {
            apply_xray(inv, h, None);
        }
        if let Some(arn) = invoked_arn {
            self.account_from_arn(arn);
        }
    }

    /// `cloud.account.id` from a function ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`),
    /// when not known yet.
    fn account_from_arn(&mut self, arn: &str) {
        if self.resource.account_id.is_none()
            && let Some(acct) = arn.split(':').nth(4)
            && !acct.is_empty()
        {
            self.resource.account_id = Some(acct.to_owned());
        }
    }

    /// The trace context of an open invocation (marks its ids as used).
    pub fn trace_ctx(&mut self, request_id: &str) -> Option<TraceCtx> {
        let inv = self.invocations.get_mut(request_id)?;
        inv.ids_used = true;
        Some(inv.ctx)
    }

    pub fn ingest_all(&mut self, events: Vec<Event>, out: &mut Buffer, now_ns: u64) {
        for e in events {
            self.ingest(e, out, now_ns);
        }
    }

    pub fn ingest(&mut self, ev: Event, out: &mut Buffer, now_ns: u64) {
        let t = ev.time_ns.unwrap_or(now_ns);
        match ev.body {
            EventBody::InitStart(s) => self.init_start(*s, t, false),
            EventBody::RestoreStart(s) => self.init_start(*s, t, true),
            EventBody::InitRuntimeDone(d) => {
                self.init
                    .get_or_insert_with(OpenPhase::default)
                    .runtime_done = Some(*d)
            }
            EventBody::RestoreRuntimeDone(d) => {
                self.restore
                    .get_or_insert_with(OpenPhase::default)
                    .runtime_done = Some(*d)
            }
            EventBody::InitReport(d) => {
                let open = self.init.take().unwrap_or_default();
                self.emit_init(open, Some(*d), t, false, out);
            }
            EventBody::RestoreReport(d) => {
                let open = self.restore.take().unwrap_or_default();
                self.emit_init(open, Some(*d), t, true, out);
            }
            EventBody::Start(s) => self.start(*s, t),
            EventBody::RuntimeDone(d) => self.runtime_done(*d, t),
            EventBody::Report(r) => self.report(*r, t, out),
            EventBody::LogsDropped(d) => self.logs_dropped(*d, t, now_ns, out),
            EventBody::Function(rec) => self.log(rec, attr_source::FUNCTION, t, now_ns, out),
            EventBody::ExtensionLog(rec) => self.log(rec, attr_source::EXTENSION, t, now_ns, out),
            EventBody::Extension(_) | EventBody::TelemetrySubscription(_) => {}
        }
    }

    fn entry(&mut self, request_id: &str, now_ns: u64) -> &mut Invocation {
        let ids = &mut self.ids;
        let seq = &mut self.seq;
        self.invocations
            .entry(request_id.to_owned())
            .or_insert_with(|| {
                *seq += 1;
                Invocation {
                    ctx: TraceCtx {
                        trace_id: ids.trace_id(now_ns),
                        span_id: ids.span_id(),
                        parent: None,
                    },
                    traced: false,
                    ids_used: false,
                    seq: *seq,
                    start_ns: None,
                    invoke_seen_ns: None,
                    deadline_ms: None,
                    invoked_arn: None,
                    cold: None,
                    runtime_done: None,
                    runtime_done_ns: None,
                }
            })
    }

    fn init_start(&mut self, s: InitStart, t: u64, restore: bool) {
        if let Some(n) = &s.function_name {
            self.resource.function_name.get_or_insert_with(|| n.clone());
        }
        if let Some(v) = &s.function_version {
            self.resource
                .function_version
                .get_or_insert_with(|| v.clone());
        }
        if let Some(m) = s.instance_max_memory {
            self.resource.max_memory_mb.get_or_insert(m);
        }
        if let Some(i) = &s.instance_id {
            self.resource.instance.get_or_insert_with(|| i.clone());
        }
        let open = OpenPhase {
            start_ns: Some(t),
            start: s,
            runtime_done: None,
        };
        if restore {
            self.restore = Some(open);
        } else {
            self.init = Some(open);
        }
    }

    fn emit_init(
        &mut self,
        open: OpenPhase,
        report: Option<PhaseDone>,
        t: u64,
        restore: bool,
        out: &mut Buffer,
    ) {
        let done = report.as_ref().or(open.runtime_done.as_ref());
        let itype = if restore {
            init_type::SNAP_START.to_owned()
        } else {
            done.and_then(|d| d.initialization_type.clone())
                .or_else(|| open.start.initialization_type.clone())
                .unwrap_or_else(|| init_type::ON_DEMAND.to_owned())
        };
        let phase = done
            .and_then(|d| d.phase.clone())
            .or_else(|| open.start.phase.clone())
            .unwrap_or_else(|| "init".to_owned());
        let status = done.and_then(|d| d.status.clone());
        let error_type = done.and_then(|d| d.error_type.clone());
        let duration_ms = report.as_ref().and_then(|r| r.duration_ms).or_else(|| {
            open.start_ns
                .map(|s| t.saturating_sub(s) as f64 / 1e6)
                .filter(|_| report.is_none())
        });
        let start_ns = open
            .start_ns
            .or_else(|| duration_ms.map(|d| t.saturating_sub(ms_to_ns(d))))
            .unwrap_or(t);
        let end_ns = duration_ms.map_or(t, |d| start_ns + ms_to_ns(d));
        let outcome_v = outcome_of(status.as_deref(), error_type.as_deref());

        let trace_id = self.ids.trace_id(start_ns);
        let span_id = self.ids.span_id();
        let mut attrs = vec![
            otlp::kv_str(
                attr::LAMBDAWATCH_SPAN_TYPE,
                if restore {
                    span_type::RESTORE
                } else {
                    span_type::INIT
                },
            ),
            otlp::kv_str(attr::AWS_LAMBDA_OUTCOME, outcome_v),
        ];
        if !restore {
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_INIT_TYPE, itype.clone()));
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_INIT_PHASE, phase.clone()));
        }
        if let Some(d) = duration_ms {
            attrs.push(otlp::kv_f64(attr::AWS_LAMBDA_DURATION_MS, d));
        }
        if let Some(e) = &error_type {
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_ERROR_TYPE, e.clone()));
        }
        if let Some(v) = &open.start.runtime_version {
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_RUNTIME_VERSION, v.clone()));
        }
        let name = if restore {
            span_type::RESTORE
        } else {
            span_type::INIT
        };
        out.span(span(
            trace_id,
            span_id,
            None,
            name,
            SpanKind::Internal,
            start_ns,
            end_ns,
            attrs,
            status_of(outcome_v, error_type.as_deref()),
        ));
        // Platform sub-spans of the phase (the report's win over runtime done's; by name, once).
        let mut seen: Vec<String> = Vec::new();
        for d in [report.as_ref(), open.runtime_done.as_ref()]
            .into_iter()
            .flatten()
        {
            for s in &d.spans {
                if seen.contains(&s.name) {
                    continue;
                }
                seen.push(s.name.clone());
                out.span(phase_span(trace_id, span_id, s, &mut self.ids));
            }
        }

        // A snap-start *init* runs at publish time; its cold start is counted at each restore.
        let counts_as_cold = restore || itype != init_type::SNAP_START;
        if counts_as_cold {
            let a = vec![otlp::kv_str(attr::AWS_LAMBDA_INIT_TYPE, itype.clone())];
            out.metric(counter(
                metric::FAAS_COLDSTARTS,
                "{coldstart}",
                1,
                a.clone(),
                start_ns,
                end_ns,
            ));
            if let Some(d) = duration_ms {
                out.metric(histogram(
                    metric::FAAS_INIT_DURATION,
                    "s",
                    d / 1000.0,
                    INIT_BOUNDS_S,
                    a,
                    start_ns,
                    end_ns,
                ));
            }
        }
        // The next invocation pays for this init when users wait for it.
        let user_facing = restore
            || itype == init_type::ON_DEMAND
            || (phase == "invoke" && itype != init_type::PROVISIONED);
        if user_facing {
            let cold = ColdInfo {
                init_type: itype,
                duration_ms,
            };
            // A suppressed init (phase invoke) happens inside an invocation already started.
            let target = if phase == "invoke" {
                self.active.last().cloned()
            } else {
                None
            };
            match target.and_then(|rid| self.invocations.get_mut(&rid)) {
                Some(inv) if inv.cold.is_none() => inv.cold = Some(cold),
                _ => self.cold_next = Some(cold),
            }
        }
    }

    fn start(&mut self, s: Start, t: u64) {
        let cold = self.cold_next.take();
        if let Some(v) = &s.version {
            self.resource
                .function_version
                .get_or_insert_with(|| v.clone());
        }
        if let Some(arn) = &s.function_arn {
            self.account_from_arn(arn);
        }
        let inv = self.entry(&s.request_id, t);
        inv.start_ns = Some(t);
        if inv.invoked_arn.is_none() {
            inv.invoked_arn = s.function_arn.clone();
        }
        if inv.cold.is_none() {
            inv.cold = cold;
        }
        if let Some(tr) = &s.tracing {
            apply_tracing(inv, tr);
        }
        if !self.active.contains(&s.request_id) {
            self.active.push(s.request_id);
        }
    }

    fn runtime_done(&mut self, d: InvocationDone, t: u64) {
        self.active.retain(|r| r != &d.request_id);
        let inv = self.entry(&d.request_id, t);
        if let Some(tr) = &d.tracing {
            apply_tracing(inv, tr);
        }
        inv.runtime_done_ns = Some(t);
        inv.runtime_done = Some(d);
    }

    fn report(&mut self, r: InvocationDone, t: u64, out: &mut Buffer) {
        self.active.retain(|x| x != &r.request_id);
        // A report for an invocation we never saw start (we started late) is still emitted.
        self.entry(&r.request_id, t);
        let Some(inv) = self.invocations.remove(&r.request_id) else {
            return;
        };
        let rid = r.request_id.clone();
        self.emit_invocation(&rid, inv, Some(r), t, None, out);
    }

    /// Emits every invocation still open (at SHUTDOWN, after waiting for reports) and any
    /// unfinished init/restore. `shutdown_reason` (`timeout`, `failure`, `spindown`) decides the
    /// outcome of an invocation that never reported a status.
    pub fn finish(&mut self, shutdown_reason: Option<&str>, now_ns: u64, out: &mut Buffer) {
        if let Some(open) = self.init.take() {
            self.emit_init(open, None, now_ns, false, out);
        }
        if let Some(open) = self.restore.take() {
            self.emit_init(open, None, now_ns, true, out);
        }
        let mut open: Vec<(String, Invocation)> = self.invocations.drain().collect();
        open.sort_by_key(|(_, inv)| inv.seq);
        self.active.clear();
        for (rid, inv) in open {
            self.emit_invocation(&rid, inv, None, now_ns, shutdown_reason, out);
        }
    }

    /// Emits the oldest open invocations beyond `max_pending`.
    fn enforce_bound(&mut self, now_ns: u64, out: &mut Buffer) {
        while self.invocations.len() > self.opts.max_pending {
            let Some(oldest) = self
                .invocations
                .iter()
                .min_by_key(|(_, inv)| inv.seq)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(inv) = self.invocations.remove(&oldest) {
                self.active.retain(|r| r != &oldest);
                self.stats.evicted += 1;
                self.emit_invocation(&oldest, inv, None, now_ns, None, out);
            }
        }
    }

    fn emit_invocation(
        &mut self,
        request_id: &str,
        inv: Invocation,
        report: Option<InvocationDone>,
        t: u64,
        shutdown_reason: Option<&str>,
        out: &mut Buffer,
    ) {
        self.stats.invocations += 1;
        if report.is_none() {
            self.stats.incomplete += 1;
        }
        let rd = inv.runtime_done.as_ref();
        let rep = report.as_ref();
        let status = rep
            .and_then(|r| r.status.clone())
            .or_else(|| rd.and_then(|d| d.status.clone()));
        let error_type = rep
            .and_then(|r| r.error_type.clone())
            .or_else(|| rd.and_then(|d| d.error_type.clone()));
        let outcome_v = match (status.as_deref(), rep, rd) {
            (Some(_), _, _) => outcome_of(status.as_deref(), error_type.as_deref()),
            // A report without a status (the documented example) is a success unless it names
            // an error.
            (None, Some(_), _) => outcome_of(None, error_type.as_deref()),
            // Neither report nor status: only shutdown can tell.
            (None, None, _) => match shutdown_reason {
                Some("timeout") => outcome::TIMEOUT,
                _ => outcome::FAILURE,
            },
        };
        let metrics = rep.map(|r| r.metrics.clone()).unwrap_or_default();
        let rd_metrics = rd.map(|d| d.metrics.clone()).unwrap_or_default();
        let duration_ms = metrics.duration_ms.or(rd_metrics.duration_ms).or_else(|| {
            let s = inv.start_ns.or(inv.invoke_seen_ns)?;
            let e = inv.runtime_done_ns?;
            Some(e.saturating_sub(s) as f64 / 1e6)
        });
        let start_ns = inv
            .start_ns
            .or(inv.invoke_seen_ns)
            .or_else(|| duration_ms.map(|d| t.saturating_sub(ms_to_ns(d))))
            .unwrap_or(t);
        let end_ns = duration_ms
            .map_or(inv.runtime_done_ns.unwrap_or(start_ns).max(start_ns), |d| {
                start_ns + ms_to_ns(d)
            });
        self.remember(request_id, inv.ctx, start_ns, end_ns);
        let cold = inv.cold.clone().or_else(|| {
            metrics.init_duration_ms.map(|d| ColdInfo {
                init_type: init_type::ON_DEMAND.to_owned(),
                duration_ms: Some(d),
            })
        });
        let cold = cold.or_else(|| {
            metrics.restore_duration_ms.map(|d| ColdInfo {
                init_type: init_type::SNAP_START.to_owned(),
                duration_ms: Some(d),
            })
        });

        let mut attrs = vec![otlp::kv_str(attr::AWS_LAMBDA_OUTCOME, outcome_v)];
        if let Some(d) = duration_ms {
            attrs.push(otlp::kv_f64(attr::AWS_LAMBDA_DURATION_MS, d));
        }
        if let Some(b) = metrics.billed_duration_ms {
            attrs.push(otlp::kv_i64(
                attr::AWS_LAMBDA_BILLED_DURATION_MS,
                b.round() as i64,
            ));
        }
        let memory_mb = metrics.memory_size_mb.or(self.resource.max_memory_mb);
        if let Some(m) = memory_mb {
            attrs.push(otlp::kv_i64(attr::AWS_LAMBDA_MEMORY_SIZE_MB, m as i64));
        }
        if let Some(m) = metrics.max_memory_used_mb {
            attrs.push(otlp::kv_i64(attr::AWS_LAMBDA_MAX_MEMORY_USED_MB, m as i64));
        }
        if let Some(c) = &cold {
            if let Some(d) = c.duration_ms {
                let key = if c.init_type == init_type::SNAP_START {
                    attr::AWS_LAMBDA_RESTORE_DURATION_MS
                } else {
                    attr::AWS_LAMBDA_INIT_DURATION_MS
                };
                attrs.push(otlp::kv_f64(key, d));
            }
            attrs.push(otlp::kv_str(
                attr::AWS_LAMBDA_INIT_TYPE,
                c.init_type.clone(),
            ));
        }
        if let Some(e) = &error_type {
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_ERROR_TYPE, e.clone()));
        }
        if let Some(b) = rd_metrics.produced_bytes.or(metrics.produced_bytes) {
            attrs.push(otlp::kv_i64(attr::AWS_LAMBDA_PRODUCED_BYTES, b as i64));
        }
        out.span(self.invocation_span(
            request_id,
            &inv,
            (start_ns, end_ns),
            cold.is_some(),
            report.is_some(),
            attrs,
            status_of(outcome_v, error_type.as_deref()),
        ));
        let mut seen: Vec<&str> = Vec::new();
        for d in [rd, rep].into_iter().flatten() {
            for s in &d.spans {
                if seen.contains(&s.name.as_str()) {
                    continue;
                }
                seen.push(&s.name);
                out.span(phase_span(
                    inv.ctx.trace_id,
                    inv.ctx.span_id,
                    s,
                    &mut self.ids,
                ));
            }
        }

        // Metrics, stamped with the event time.
        let mt = t.max(start_ns);
        let oa = vec![otlp::kv_str(attr::AWS_LAMBDA_OUTCOME, outcome_v)];
        out.metric(counter(
            metric::FAAS_INVOCATIONS,
            "{invocation}",
            1,
            oa,
            start_ns,
            mt,
        ));
        if matches!(outcome_v, outcome::ERROR | outcome::FAILURE) {
            out.metric(counter(
                metric::FAAS_ERRORS,
                "{error}",
                1,
                vec![],
                start_ns,
                mt,
            ));
        }
        if outcome_v == outcome::TIMEOUT {
            out.metric(counter(
                metric::FAAS_TIMEOUTS,
                "{timeout}",
                1,
                vec![],
                start_ns,
                mt,
            ));
        }
        if let Some(d) = duration_ms {
            out.metric(histogram(
                metric::FAAS_INVOKE_DURATION,
                "s",
                d / 1000.0,
                DURATION_BOUNDS_S,
                vec![],
                start_ns,
                mt,
            ));
        }
        if let Some(b) = metrics.billed_duration_ms {
            out.metric(histogram(
                metric::AWS_LAMBDA_BILLED_DURATION,
                "s",
                b / 1000.0,
                DURATION_BOUNDS_S,
                vec![],
                start_ns,
                mt,
            ));
        }
        if let Some(m) = metrics.max_memory_used_mb {
            out.metric(histogram(
                metric::FAAS_MEM_USAGE,
                "By",
                (m * MB) as f64,
                MEMORY_BOUNDS_B,
                vec![],
                start_ns,
                mt,
            ));
        }
    }

    fn logs_dropped(&mut self, d: LogsDropped, t: u64, now_ns: u64, out: &mut Buffer) {
        self.stats.lambda_dropped_records += d.dropped_records;
        let a = vec![];
        out.metric(counter(
            metric::AWS_LAMBDA_LOGS_DROPPED,
            "{record}",
            d.dropped_records as i64,
            a,
            t,
            t,
        ));
        let reason = d.reason.unwrap_or_default();
        out.log(LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: now_ns,
            severity_number: Severity::Warn as i32,
            severity_text: Severity::Warn.text().to_owned(),
            body: Some(AnyValue {
                value: Some(AV::StringValue(format!(
                    "Lambda dropped {} log records ({} bytes): {}",
                    d.dropped_records, d.dropped_bytes, reason
                ))),
            }),
            attributes: vec![
                otlp::kv_str(attr::AWS_LAMBDA_LOG_SOURCE, attr_source::PLATFORM),
                otlp::kv_i64(attr::AWS_LAMBDA_DROPPED_RECORDS, d.dropped_records as i64),
                otlp::kv_i64(attr::AWS_LAMBDA_DROPPED_BYTES, d.dropped_bytes as i64),
                otlp::kv_str(attr::AWS_LAMBDA_DROP_REASON, reason),
            ],
            ..Default::default()
        });
    }

    /// A `function`/`extension` record → one LogRecord, written straight to protobuf bytes
    /// ([`crate::log_proto`]): a plain line costs one allocation here.
    fn log(&mut self, rec: WireLog, source: &str, t: u64, now_ns: u64, out: &mut Buffer) {
        if !self.opts.capture_logs {
            return;
        }
        self.stats.logs += 1;
        let mut line = match rec {
            WireLog::Json(m) => return self.log_json(m, source, t, now_ns, out),
            WireLog::Text(line) => line,
        };
        // A JSON object printed as a plain line (Powertools in text mode).
        if line.trim_start().starts_with('{')
            && let Ok(serde_json::Value::Object(m)) =
                serde_json::from_str::<serde_json::Value>(&line)
        {
            return self.log_json(m, source, t, now_ns, out);
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        let info = logs::detect_plain(&line);
        let severity = info.severity;
        // A request id is a 36-byte UUID: copied to the stack, so the line can be redacted in
        // place without allocating a copy of it.
        let rid_buf: Option<[u8; 36]> = info
            .request_id
            .and_then(|r| <[u8; 36]>::try_from(r.as_bytes()).ok());
        if self.opts.redactor.apply(&mut line) {
            self.stats.redacted += 1;
        }
        let mut w = LogWriter::with_capacity(line.len() + 192);
        w.time(t);
        if let Some(s) = severity {
            w.severity(s as i32, s.text());
        }
        w.body_str(&line);
        w.attr_str(attr::AWS_LAMBDA_LOG_SOURCE, source);
        let rid = rid_buf.as_ref().and_then(|b| std::str::from_utf8(b).ok());
        self.finish_log(w, rid, t, now_ns, out);
    }

    /// A JSON log object (Lambda JSON log format, Powertools).
    fn log_json(
        &mut self,
        m: serde_json::Map<String, serde_json::Value>,
        source: &str,
        t: u64,
        now_ns: u64,
        out: &mut Buffer,
    ) {
        let mut p = logs::split_json(m);
        let r = &self.opts.redactor;
        let mut redacted = false;
        if !r.is_empty() {
            if let Some(body) = p.body.as_mut() {
                redacted |= redact_json(r, None, body);
            }
            for (k, v) in p.attributes.iter_mut() {
                redacted |= redact_json(r, Some(k), v);
            }
        }
        if redacted {
            self.stats.redacted += 1;
        }
        let mut w = LogWriter::with_capacity(320);
        let t = p.time_ns.unwrap_or(t);
        w.time(t);
        let text = match (p.severity, p.severity_text.as_deref()) {
            (Some(s), _) => s.text(),
            (None, Some(raw)) => raw,
            (None, None) => "",
        };
        w.severity(p.severity.map_or(0, |s| s as i32), text);
        if let Some(body) = &p.body {
            w.body_json(body);
        }
        w.attr_str(attr::AWS_LAMBDA_LOG_SOURCE, source);
        for (k, v) in &p.attributes {
            w.attr_json(k, v);
        }
        self.finish_log(w, p.request_id.as_deref(), t, now_ns, out);
    }

    /// The invocation part of a log record: `faas.invocation_id` and the trace context of the
    /// record's invocation, then the observed time. The invocation is the record's own request
    /// id; else the single active invocation, if exactly one; else, when none is active, the one
    /// emitted invocation among the last [`RECENT_TIME_SCAN`] whose `[start, end]` holds the
    /// record's time `t`, if exactly one, else whose `[start, end + LATE_LINE_SLACK_NS]` does,
    /// if exactly one (a plain line printed during an invocation whose report came first: the
    /// `function` and `platform` streams are batched apart). The trace
    /// context comes from the open invocation, or from the last [`RECENT_EMITTED`] emitted.
    fn finish_log(
        &mut self,
        mut w: LogWriter,
        rid: Option<&str>,
        t: u64,
        now_ns: u64,
        out: &mut Buffer,
    ) {
        let only_active = match self.active.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        };
        let by_time = || {
            let unique = |slack: u64| {
                let mut hits = self
                    .recent_order
                    .iter()
                    .rev()
                    .take(RECENT_TIME_SCAN)
                    .filter(|(_, s, e)| (*s..=e.saturating_add(slack)).contains(&t));
                match (hits.next(), hits.next()) {
                    (Some((r, _, _)), None) => Some(r.as_str()),
                    _ => None,
                }
            };
            unique(0).or_else(|| unique(LATE_LINE_SLACK_NS))
        };
        let rid = rid
            .or(only_active)
            .or_else(|| self.active.is_empty().then(by_time).flatten());
        if let Some(rid) = rid {
            w.attr_str(attr::FAAS_INVOCATION_ID, rid);
            let ctx = match self.invocations.get_mut(rid) {
                Some(inv) => {
                    inv.ids_used = true;
                    Some(inv.ctx)
                }
                // Already emitted: the record arrived after the report.
                None => self.recent.get(rid).copied(),
            };
            if let Some(ctx) = ctx {
                w.trace(&ctx.trace_id, &ctx.span_id);
            }
        }
        w.observed_time(now_ns);
        out.log(w.finish());
    }

    /// Keeps `ctx` for late log records of `request_id` (bounded, oldest out first).
    fn remember(&mut self, request_id: &str, ctx: TraceCtx, start_ns: u64, end_ns: u64) {
        if self.recent.insert(request_id.to_owned(), ctx).is_none() {
            self.recent_order
                .push_back((request_id.to_owned(), start_ns, end_ns));
        }
        while self.recent_order.len() > RECENT_EMITTED {
            if let Some((old, _, _)) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// The invocation SERVER span (one builder for the report path and lifecycle-only mode):
    /// span type, `faas.invocation_id`, `faas.coldstart`, the timeout from INVOKE's deadline,
    /// the invoked ARN and, without a report, `lambdawatch.incomplete`; then `extra`.
    #[allow(clippy::too_many_arguments)]
    fn invocation_span(
        &self,
        request_id: &str,
        inv: &Invocation,
        (start_ns, end_ns): (u64, u64),
        cold: bool,
        reported: bool,
        extra: Vec<KeyValue>,
        status: Option<Status>,
    ) -> Span {
        let mut attrs = Vec::with_capacity(6 + extra.len());
        attrs.push(otlp::kv_str(
            attr::LAMBDAWATCH_SPAN_TYPE,
            span_type::INVOCATION,
        ));
        attrs.push(otlp::kv_str(attr::FAAS_INVOCATION_ID, request_id));
        attrs.push(otlp::kv_bool(attr::FAAS_COLDSTART, cold));
        attrs.extend(extra);
        if let (Some(deadline), Some(s)) = (inv.deadline_ms, inv.start_ns.or(inv.invoke_seen_ns)) {
            let start_ms = s / 1_000_000;
            if deadline > start_ms {
                attrs.push(otlp::kv_i64(
                    attr::AWS_LAMBDA_TIMEOUT_MS,
                    (deadline - start_ms) as i64,
                ));
            }
        }
        if let Some(arn) = &inv.invoked_arn {
            attrs.push(otlp::kv_str(attr::AWS_LAMBDA_INVOKED_ARN, arn.clone()));
        }
        if !reported {
            attrs.push(otlp::kv_bool(attr::LAMBDAWATCH_INCOMPLETE, true));
        }
        let name = self
            .resource
            .function_name
            .as_deref()
            .unwrap_or(span_type::INVOCATION);
        span(
            inv.ctx.trace_id,
            inv.ctx.span_id,
            inv.ctx.parent,
            name,
            SpanKind::Server,
            start_ns,
            end_ns,
            attrs,
            status,
        )
    }

    /// Lifecycle-only mode (no Telemetry API): emits the invocation at its INVOKE, with what the
    /// Extensions API told us (start, deadline, trace context); marked incomplete.
    pub fn emit_lifecycle_only(&mut self, request_id: &str, out: &mut Buffer) {
        let Some(inv) = self.invocations.remove(request_id) else {
            return;
        };
        self.active.retain(|r| r != request_id);
        self.stats.invocations += 1;
        self.stats.incomplete += 1;
        let cold = !self.lifecycle_seen;
        self.lifecycle_seen = true;
        let start_ns = inv.invoke_seen_ns.unwrap_or_default();
        self.remember(request_id, inv.ctx, start_ns, start_ns);
        out.span(self.invocation_span(
            request_id,
            &inv,
            (start_ns, start_ns),
            cold,
            false,
            Vec::new(),
            None,
        ));
        out.metric(counter(
            metric::FAAS_INVOCATIONS,
            "{invocation}",
            1,
            vec![],
            start_ns,
            start_ns,
        ));
    }

    /// Call after each batch: keeps the tracker bounded.
    pub fn after_batch(&mut self, now_ns: u64, out: &mut Buffer) {
        self.enforce_bound(now_ns, out);
    }
}

/// Masks secrets in a JSON log value. A field (`key` given) whose key names a secret has its
/// whole value masked, unless it is null (the key and the value are separate strings here, so a
/// value rule cannot see both); otherwise the value rules apply to every string inside.
fn redact_json(r: &Redactor, key: Option<&str>, v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    if !v.is_null() && key.is_some_and(|k| r.masks_key(k)) {
        if matches!(v, Value::String(s) if s == redact::MASK) {
            return false;
        }
        *v = Value::String(redact::MASK.to_owned());
        return true;
    }
    match v {
        Value::String(s) => r.apply(s),
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, x| redact_json(r, None, x) | acc),
        Value::Object(o) => o
            .iter_mut()
            .fold(false, |acc, (k, x)| redact_json(r, Some(k), x) | acc),
        _ => false,
    }
}

/// `aws.lambda.log_source` values.
pub mod attr_source {
    pub const FUNCTION: &str = "function";
    pub const EXTENSION: &str = "extension";
    pub const PLATFORM: &str = "platform";
}

fn apply_tracing(inv: &mut Invocation, tr: &Tracing) {
    let is_xray = tr
        .kind
        .as_deref()
        .is_none_or(|k| k.eq_ignore_ascii_case("X-Amzn-Trace-Id"));
    if let (true, Some(v)) = (is_xray, tr.value.as_deref()) {
        apply_xray(inv, v, tr.span_id.as_deref());
    }
}

fn apply_xray(inv: &mut Invocation, header: &str, span_id: Option<&str>) {
    let Some(ctx) = xray::parse_header(header) else {
        return;
    };
    if inv.ids_used && inv.traced {
        return;
    }
    if !inv.ids_used {
        inv.ctx.trace_id = ctx.trace_id;
        inv.ctx.parent = ctx.parent_id;
        inv.traced = true;
        if let Some(sid) = span_id.and_then(xray::hex_array::<8>)
            && Some(sid) != ctx.parent_id
            && sid != [0; 8]
        {
            inv.ctx.span_id = sid;
        }
    }
}

fn outcome_of(status: Option<&str>, error_type: Option<&str>) -> &'static str {
    match status {
        Some(s) if s.eq_ignore_ascii_case("success") => outcome::SUCCESS,
        Some(s) if s.eq_ignore_ascii_case("timeout") => outcome::TIMEOUT,
        Some(s) if s.eq_ignore_ascii_case("error") => outcome::ERROR,
        Some(_) => outcome::FAILURE,
        None if error_type.is_some() => outcome::ERROR,
        None => outcome::SUCCESS,
    }
}

fn status_of(outcome_v: &str, error_type: Option<&str>) -> Option<Status> {
    if outcome_v == outcome::SUCCESS {
        return None;
    }
    Some(Status {
        message: error_type.unwrap_or(outcome_v).to_owned(),
        code: StatusCode::Error as i32,
    })
}

fn ms_to_ns(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1e6) as u64
    } else {
        0
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    kind: SpanKind,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
    status: Option<Status>,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end_ns.max(start_ns),
        attributes,
        status,
        ..Default::default()
    }
}

fn phase_span(
    trace_id: [u8; 16],
    parent: [u8; 8],
    s: &crate::events::PlatformSpan,
    ids: &mut IdGen,
) -> Span {
    span(
        trace_id,
        ids.span_id(),
        Some(parent),
        &s.name,
        SpanKind::Internal,
        s.start_ns,
        s.start_ns + ms_to_ns(s.duration_ms),
        vec![
            otlp::kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::PHASE),
            otlp::kv_str(attr::AWS_LAMBDA_PHASE, s.name.clone()),
            otlp::kv_f64(attr::AWS_LAMBDA_DURATION_MS, s.duration_ms),
        ],
        None,
    )
}

/// A delta, monotonic integer sum with one data point.
pub fn counter(
    name: &str,
    unit: &str,
    value: i64,
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
) -> Metric {
    sum_metric(
        name,
        unit,
        value,
        attributes,
        start_ns,
        time_ns,
        AggregationTemporality::Delta,
    )
}

/// An integer monotonic sum with one data point and the given temporality.
pub fn sum_metric(
    name: &str,
    unit: &str,
    value: i64,
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
    temporality: AggregationTemporality,
) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes,
                start_time_unix_nano: start_ns,
                time_unix_nano: time_ns.max(start_ns),
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// A delta histogram holding one observation.
pub fn histogram(
    name: &str,
    unit: &str,
    value: f64,
    bounds: &[f64],
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
) -> Metric {
    let mut bucket_counts = vec![0u64; bounds.len() + 1];
    let idx = bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len());
    bucket_counts[idx] = 1;
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes,
                start_time_unix_nano: start_ns,
                time_unix_nano: time_ns.max(start_ns),
                count: 1,
                sum: Some(value),
                bucket_counts,
                explicit_bounds: bounds.to_vec(),
                min: Some(value),
                max: Some(value),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
