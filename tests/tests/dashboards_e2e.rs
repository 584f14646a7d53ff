//! Issue 6, end to end: every PromQL target of every dashboard returns real data from a real
//! Prometheus that scraped the collector while real traffic went through the whole pipeline.
//!
//! The run: `moto_server` (the peers venv) holding CloudWatch data points for the function
//! (`AWS/Lambda` `Throttles`) and its DLQ (`AWS/SQS` `NumberOfMessagesSent`);
//! `lambdawatch-collector serve` on ephemeral loopback ports (1 s evaluation, 2 s `for`, the
//! function's SQS DLQ mapped to it, a webhook sink pointing at a capture server in this test, the
//! CloudWatch poller polling moto every second, at most two tracked functions); a real Prometheus
//! (Debian package, [`lambdawatch_tests::prometheus`]) scraping the collector's `/metrics` every
//! second and evaluating the generated rules (`alerts/lambdawatch-rules.yml` with `for: 2s`, the
//! collector's `LAMBDAWATCH_ALERT_FOR`), whose recorded series and `ALERTS` the fleet SLO panels
//! read; `lambdawatch-sandbox run` with `lambdawatch-extension` in the function's extensions
//! directory, the rust `sample-function` as the handler and `--cloudwatch-endpoint` at the
//! collector, so the platform counts (throttles, async events, DLQ sends) also arrive as
//! CloudWatch Metric Streams would send them. The seeded workload gives the function cold starts,
//! errors, one timeout, throttles past its reserved concurrency, async events that fail, retry and
//! are dead-lettered (into a DLQ small enough to overflow: DeadLetterErrors), and a log flood that
//! overflows the extension's deliberately small export buffer (extension drops). Then one request
//! per pipeline drop stage: a malformed OTLP request (ingest), a span whose resource has no
//! `faas.name` (ingest_items, `no_function`), an init span 40 days old (aggregate, `too_old`) and a
//! span of a third function beyond `LAMBDAWATCH_MAX_FUNCTIONS=2` (aggregate,
//! `too_many_functions`). The poller's counts are checked to have arrived on top of the sandbox's.
//!
//! The advice panels: before the sandbox starts, the test posts OTLP/JSON history of a second
//! function, [`ADVISED`] ([`post_advised_history`]: invocation, init and CLIENT spans shaped as the
//! extension and instrumented code send them, [`lambdawatch_tests::otlp_json`]): cold starts in
//! minutes that ended over 2 minutes ago (the provisioned-concurrency sampler folds them at once),
//! and recent timeouts while its `orders-db` calls slowed down (a timeout cascade). The
//! collector's `/api/v1/cost` must recommend provisioned concurrency and name `orders-db` for it,
//! and `$function` offers it.
//!
//! Then, after Prometheus has scraped the final state at least twice, every dashboard target (with
//! `$function` set to the driven function, or to [`ADVISED`] for the drill-down's
//! [`ADVISED_PANELS`], as a user picks a function in Grafana; `$__rate_interval` → the whole run,
//! so every increment
//! of the run is inside the window) runs as an instant query and is judged against its declaration
//! in [`EXPECTATIONS`]: [`Expect::NonZero`] (the run moves the metric: at least one finite
//! sample ≠ 0) or [`Expect::Finite`] (at least one finite sample; zero is what this run must show,
//! and the reason says why). A target without a declaration, or a declaration without a target,
//! fails the test, so a new panel cannot slip through unjudged. Before the dashboards, the same
//! judge must reject a misspelt metric, an expression that is 0 and one that is NaN on this very
//! Prometheus, so the check is shown able to fail. The collector's `/metrics` also passes
//! `promtool check metrics`, whose output must be exactly the lint listed in
//! [`EXPECTED_PROMTOOL_LINT`] (never a parse error).
//!
//! DLQ ratio ([`dlq_ratio_panels_equal_the_slo_for_a_function_with_drops_but_no_dlq`]): for a
//! function with async drops and no DLQ, both dashboards' DLQ ratio panels equal the collector's
//! `dlq_ratio` SLO (`/api/v1/slos`) within float tolerance. Several collectors
//! ([`fleet_slo_panels_add_up_two_collectors`]): two collectors sharing a function's traffic with
//! different bad shares, one Prometheus: the fleet's and the drill-down's SLO panels show the sum
//! of both, not either.
//!
//! Cost: the list-price counter Prometheus scraped (`lambdawatch_cost_usd_total`) must equal what
//! the price table says for the requests and billed GB-seconds the collector counted through its
//! own, separate series (`lambdawatch_invocations_total`, `lambdawatch_billed_gigabyte_seconds_total`),
//! and `/api/v1/cost` must report the same function with the architecture the extension sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambdawatch_tests::dashboards::{self, Query};
use lambdawatch_tests::moto::{self, boto3};
use lambdawatch_tests::prometheus::{self, Prometheus, Sample};
use lambdawatch_tests::{Child, http, peers, wait_until, workspace_bin};
use serde_json::{Value, json};

/// The function the scenario drives; `$function` in every dashboard.
const FUNCTION: &str = "dash-e2e";
const VERSION: &str = "3";
const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";
/// The function's SQS dead-letter queue (`dlq: true` in the sandbox names it `<function>-dlq`).
const DLQ_QUEUE: &str = "dash-e2e-dlq";
/// `AWS/Lambda` `Throttles` of the function put into moto, for the CloudWatch poller to find.
const POLLED_THROTTLES: f64 = 7.0;
/// `AWS/SQS` `NumberOfMessagesSent` of the DLQ put into moto.
const POLLED_DLQ_SENT: f64 = 4.0;

/// The function whose history the test posts as OTLP (invocation, init and client spans, as the
/// extension and instrumented function code send them) right after the collector starts: cold
/// starts in minutes already old enough to fold, and a timeout cascade. `$function` of the
/// drill-down's [`ADVISED_PANELS`]; see [`post_advised_history`].
const ADVISED: &str = "dash-e2e-advised";
/// The drill-down panels judged with `$function` = [`ADVISED`]: what they show needs minutes
/// that ended over 2 minutes ago (provisioned concurrency) and client spans (timeout cascade),
/// which the sandbox's short run of [`FUNCTION`] cannot give.
const ADVISED_PANELS: &[&str] = &[
    "Provisioned concurrency advice",
    "Provisioned concurrency: monthly cost change",
    "Provisioned concurrency: cold starts avoided",
    "Timeout cascade: downstream P99 latency",
    "Timeout cascade suspects",
    "Timeout cascade: timeout ratio",
];
/// [`ADVISED`]'s baseline: minutes now−12 … now−5 (whole minutes before the post).
const ADVISED_BASELINE_MINUTES: u64 = 8;
/// Environments busy in each baseline minute (each runs [`ADVISED_PER_ENV`] invocations).
const ADVISED_ENVS: u64 = 3;
const ADVISED_PER_ENV: u64 = 2;
/// [`ADVISED`]'s recent invocations (in the 45 s before the post), the first
/// [`ADVISED_RECENT_TIMEOUTS`] of which time out.
const ADVISED_RECENT: u64 = 16;
const ADVISED_RECENT_TIMEOUTS: u64 = 6;

/// What a dashboard target must return after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// At least one finite sample that is not 0: the run moves this metric.
    NonZero,
    /// At least one finite sample; 0 is the right answer for this run (the reason says why).
    Finite,
}
use Expect::{Finite, NonZero};

/// Every dashboard target (dashboard file stem, panel title, refId) with what the run must make it
/// return, and why. The test fails on a target missing here and on an entry matching no target.
#[rustfmt::skip]
const EXPECTATIONS: &[(&str, &str, &str, Expect, &str)] = &[
    ("fleet-slo-overview", "SLO status (30 d)", "A", NonZero, "the rules' 30 d SLI: most invocations succeed, every SLI with events is above 0"),
    ("fleet-slo-overview", "SLO status (30 d)", "B", NonZero, "the rules' objectives of the default spec"),
    ("fleet-slo-overview", "SLO status (30 d)", "C", NonZero, "the rules' budgets: SLOs the run barely touches keep (nearly) all of theirs; the error SLO's is overspent (< 0)"),
    ("fleet-slo-overview", "SLO status (30 d)", "D", NonZero, "Prometheus evaluating the generated rules (for: 2s, as the collector) fires the error-rate page: ALERTS = 1"),
    ("fleet-slo-overview", "Error budget remaining (30 d)", "A", NonZero, "as SLO status C"),
    ("fleet-slo-overview", "Burn rate (1 h and 6 h windows)", "A", NonZero, "the incident's errors burn the error budget (rules' 1 h burn rate)"),
    ("fleet-slo-overview", "Burn rate (1 h and 6 h windows)", "B", NonZero, "the incident's errors burn the error budget (rules' 6 h burn rate)"),
    ("fleet-slo-overview", "P99 cold start", "A", NonZero, "on-demand cold starts with INIT_SLEEP_MS=100"),
    ("fleet-slo-overview", "Error rate", "A", NonZero, "20 % errors in the incident phase, one timeout"),
    ("fleet-slo-overview", "Throttles", "A", NonZero, "the burst past reserved concurrency, and the polled Throttles"),
    ("fleet-slo-overview", "DLQ ratio", "A", NonZero, "the rules' dlq_ratio bad / valid: async events dead-lettered (sandbox) and the polled DLQ NumberOfMessagesSent"),
    ("fleet-slo-overview", "Cost per day", "A", NonZero, "every invocation has a list price"),
    ("fleet-slo-overview", "30-day cost projection", "A", NonZero, "the run's ~5 invocations/s over 30 days (~13 M requests) is past the monthly free tier"),
    ("fleet-slo-overview", "Invocations", "A", NonZero, "the workload"),
    ("fleet-slo-overview", "Retry storms and cost surprises", "A", Finite, "a few async retries are no retry storm: 0"),
    ("fleet-slo-overview", "Retry storms and cost surprises", "B", Finite, "no budget set and no weeks of baseline: no cost surprise, 0"),
    ("function-drilldown", "Invocations", "A", NonZero, "the workload"),
    ("function-drilldown", "Error rate", "A", NonZero, "errors and a timeout"),
    ("function-drilldown", "Cold-start rate", "A", NonZero, "cold starts"),
    ("function-drilldown", "Configured timeout", "A", NonZero, "timeout_ms: 1000"),
    ("function-drilldown", "Configured memory", "A", NonZero, "memory_mb: 256"),
    ("function-drilldown", "30-day cost projection", "A", NonZero, "as the fleet's: past the free tier"),
    ("function-drilldown", "Cold starts by init type", "A", NonZero, "cold starts"),
    ("function-drilldown", "Init duration P50 / P90 / P99 by init type", "A", NonZero, "inits of at least 100 ms"),
    ("function-drilldown", "Init duration P50 / P90 / P99 by init type", "B", NonZero, "inits of at least 100 ms"),
    ("function-drilldown", "Init duration P50 / P90 / P99 by init type", "C", NonZero, "inits of at least 100 ms"),
    ("function-drilldown", "Duration against the timeout", "A", NonZero, "handlers sleep 20 ms"),
    ("function-drilldown", "Duration against the timeout", "B", NonZero, "handlers sleep 20 ms, one times out"),
    ("function-drilldown", "Duration against the timeout", "C", NonZero, "0.8 × the 1 s timeout"),
    ("function-drilldown", "Duration against the timeout", "D", NonZero, "the 1 s timeout"),
    ("function-drilldown", "Invocations beyond the timeout budget", "A", NonZero, "the invocation that times out is past 80 % of the timeout"),
    ("function-drilldown", "Memory used against configured", "A", NonZero, "REPORT lines carry max memory used"),
    ("function-drilldown", "Memory used against configured", "B", NonZero, "memory_mb: 256"),
    ("function-drilldown", "Errors and timeouts", "A", NonZero, "errors and a timeout"),
    ("function-drilldown", "Throttles", "A", NonZero, "the burst past reserved concurrency, and the polled Throttles"),
    ("function-drilldown", "Async events and dead letters", "A", NonZero, "half the incident's invocations are async"),
    ("function-drilldown", "Async events and dead letters", "B", NonZero, "dead-lettered async events, and the polled DLQ sends"),
    ("function-drilldown", "Async events and dead letters", "C", NonZero, "an event that fails its retries is dropped after its DLQ send (AWS counts both), and so is one the full DLQ refuses"),
    ("function-drilldown", "Async events and dead letters", "D", NonZero, "the 2-message DLQ overflows"),
    ("function-drilldown", "DLQ ratio", "A", NonZero, "as the fleet's: the rules' dlq_ratio bad / valid"),
    ("function-drilldown", "Billed GB-seconds per day", "A", NonZero, "billed duration × 256 MB"),
    ("function-drilldown", "Cost per day", "A", NonZero, "every invocation has a list price"),
    ("function-drilldown", "Cost per day", "B", NonZero, "the 30-day projection / 30, past the free tier"),
    ("function-drilldown", "SLO burn rates", "A", NonZero, "as the fleet's: the incident's errors burn the error budget (rules' 1 h burn rate)"),
    ("function-drilldown", "SLO burn rates", "B", NonZero, "as the fleet's: the incident's errors burn the error budget (rules' 6 h burn rate)"),
    ("function-drilldown", "Error budget remaining (30 d)", "A", NonZero, "as the fleet's: the rules' budgets, the error SLO's overspent (< 0)"),
    ("function-drilldown", "Retry fraction", "A", NonZero, "failed async events are retried with the same request id"),
    ("function-drilldown", "Retry storm and cost surprises", "A", Finite, "a few async retries are no retry storm: 0"),
    ("function-drilldown", "Retry storm and cost surprises", "B", Finite, "no budget, no baseline: 0"),
    ("function-drilldown", "Memory advice", "A", NonZero, "at least the 128 MiB floor"),
    ("function-drilldown", "Memory advice", "B", NonZero, "at least 128 MiB"),
    ("function-drilldown", "Memory advice", "C", NonZero, "REPORT lines carry max memory used"),
    ("function-drilldown", "Timeout budget and cold starts", "A", NonZero, "P99 duration / timeout"),
    ("function-drilldown", "Timeout budget and cold starts", "B", NonZero, "on-demand cold starts / invocations"),
    ("function-drilldown", "Provisioned concurrency advice", "A", NonZero, "$function = dash-e2e-advised: 3 environments busy in each of its 8 folded baseline minutes: P99 of the per-minute samples is 3 units"),
    ("function-drilldown", "Provisioned concurrency advice", "B", NonZero, "dash-e2e-advised: a 1.2 s on-demand cold start per baseline minute (8 of 48 invocations, P99 init ≥ 500 ms): recommended = 1"),
    ("function-drilldown", "Provisioned concurrency: monthly cost change", "A", NonZero, "dash-e2e-advised: 3 units × 512 MB all month against ~50 short invocations per 10 min: PC costs more (> 0)"),
    ("function-drilldown", "Provisioned concurrency: cold starts avoided", "A", NonZero, "dash-e2e-advised: every folded cold start is covered by the 3 units, scaled to 30 days"),
    ("function-drilldown", "Timeout cascade: downstream P99 latency", "A", NonZero, "dash-e2e-advised's client spans to orders-db: ~20 ms in the baseline, ~400 ms recently"),
    ("function-drilldown", "Timeout cascade suspects", "A", NonZero, "dash-e2e-advised: timeouts and orders-db's P99 rose together: orders-db flagged (1)"),
    ("function-drilldown", "Timeout cascade suspects", "B", NonZero, "dash-e2e-advised: orders-db's recent P99 / baseline P99 (~430 ms / ~25 ms, about 17)"),
    ("function-drilldown", "Timeout cascade: timeout ratio", "A", NonZero, "dash-e2e-advised: no timeout in the baseline (0), 6 of 16 recent invocations time out"),
    ("pipeline-health", "Extension drops by reason", "A", NonZero, "the log flood overflows the 300-item export buffer"),
    ("pipeline-health", "Extension export retries by function", "A", Finite, "the collector accepts every export: the extension never retries, 0"),
    ("pipeline-health", "Ingest requests by protocol and result", "A", NonZero, "the extension exports over OTLP/HTTP"),
    ("pipeline-health", "Ingested items by signal", "A", NonZero, "spans, logs and the extension's metrics"),
    ("pipeline-health", "Ingest rejections by reason", "A", NonZero, "the malformed OTLP request (400)"),
    ("pipeline-health", "Ingest rejection ratio", "A", NonZero, "the malformed OTLP request among the accepted ones"),
    ("pipeline-health", "Alerts firing", "A", NonZero, "as SLO status D"),
    ("pipeline-health", "Alert deliveries by sink and result", "A", NonZero, "the webhook got the incident's alert"),
    ("pipeline-health", "CloudWatch poller requests by result", "A", NonZero, "the poller calls GetMetricData on moto every second"),
    ("pipeline-health", "CloudWatch poller spend (monthly)", "A", NonZero, "six metrics (five AWS/Lambda, one DLQ) polled every second"),
    ("pipeline-health", "Ingest item rejections by signal and reason", "A", NonZero, "the span whose resource has no faas.name (no_function)"),
    ("pipeline-health", "Aggregation drops by reason", "A", NonZero, "the 40-day-old init span (too_old) and the second function (too_many_functions)"),
];

/// Why the samples of a target do not meet `expect`; `Ok` when they do.
fn judge(samples: &[Sample], expect: Expect) -> Result<(), String> {
    let shown = || {
        samples
            .iter()
            .map(|s| format!("{{{}}} {}", s.labels, s.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if samples.is_empty() {
        return Err("no data (no series)".to_owned());
    }
    let finite: Vec<f64> = samples
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(format!("no finite sample: {}", shown()));
    }
    if expect == NonZero && finite.iter().all(|v| *v == 0.0) {
        return Err(format!(
            "every sample is 0, but the run must move it: {}",
            shown()
        ));
    }
    Ok(())
}

/// Runs `expr` on `prom` and judges it; the samples are returned either way for the report.
fn check(prom: &Prometheus, expr: &str, expect: Expect) -> Result<Vec<Sample>, String> {
    let samples = prom
        .samples(expr)
        .map_err(|e| format!("query failed: {e}"))?;
    judge(&samples, expect)?;
    Ok(samples)
}

/// The function `$function` is set to for a target: [`ADVISED`] for the drill-down's advice panels
/// ([`ADVISED_PANELS`]), [`FUNCTION`] for every other target.
fn drilled_function(dashboard: &str, panel_title: &str) -> &'static str {
    if dashboard == "function-drilldown" && ADVISED_PANELS.contains(&panel_title) {
        ADVISED
    } else {
        FUNCTION
    }
}

/// Every dashboard target with `$function` → [`drilled_function`] and `$__rate_interval` →
/// `rate_interval` (the other variables as [`dashboards::substitution_values`] sets them).
fn dashboard_queries(rate_interval: &str) -> Vec<Query> {
    let mut out = Vec::new();
    for d in dashboards::load_all() {
        for t in dashboards::targets(&d.json) {
            let mut values =
                dashboards::substitution_values(&d.json, drilled_function(&d.name, &t.panel_title));
            values.insert("__rate_interval".to_owned(), rate_interval.to_owned());
            let expr = dashboards::substitute(&t.expr, &values).unwrap_or_else(|e| {
                panic!(
                    "{}: panel {:?} target {}: {e}",
                    d.name, t.panel_title, t.ref_id
                )
            });
            out.push(Query {
                dashboard: d.name.clone(),
                panel_title: t.panel_title,
                ref_id: t.ref_id,
                expr,
            });
        }
    }
    out
}

/// Each query with its declaration; the problems when a query has none, a declaration matches no
/// query, or one is declared twice.
fn declarations(queries: &[Query]) -> (Vec<(&Query, Expect)>, Vec<String>) {
    let mut declared: BTreeMap<(&str, &str, &str), Expect> = BTreeMap::new();
    let mut problems = Vec::new();
    for (d, p, r, e, _) in EXPECTATIONS {
        if declared.insert((d, p, r), *e).is_some() {
            problems.push(format!("{d} › {p:?} target {r} is declared twice"));
        }
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for q in queries {
        let key = (
            q.dashboard.as_str(),
            q.panel_title.as_str(),
            q.ref_id.as_str(),
        );
        match declared.get_key_value(&key) {
            Some((k, e)) => {
                used.insert(*k);
                out.push((q, *e));
            }
            None => problems.push(format!(
                "{} › {:?} target {} has no declaration in EXPECTATIONS (NonZero or Finite, with \
                 the reason derived from the run): {}",
                q.dashboard, q.panel_title, q.ref_id, q.expr
            )),
        }
    }
    for k in declared.keys().filter(|k| !used.contains(*k)) {
        problems.push(format!(
            "EXPECTATIONS declares {} › {:?} target {}, which no dashboard has",
            k.0, k.1, k.2
        ));
    }
    (out, problems)
}

/// The seeded workload (sandbox/README.md, "Workload YAML"). About 15 s of traffic.
const WORKLOAD: &str = r#"seed: 61
phases:
  - name: steady
    rate_per_sec: 10
    duration_ms: 6000
    sleep_ms: 20
    log_lines: 1
    log_json: true
  - name: log flood (overflows the extension's export buffer; concurrency is low here, so it is not throttled)
    rate_per_sec: 1
    duration_ms: 1000
    log_lines: 3000
  - name: incident (errors; async events that fail are retried, then dead-lettered)
    rate_per_sec: 10
    duration_ms: 7000
    sleep_ms: 20
    log_lines: 1
    error_fraction: 0.2
    async_fraction: 0.5
  - name: one timeout
    rate_per_sec: 1
    duration_ms: 1500
    timeout_fraction: 1.0
  - name: burst past reserved concurrency (throttles, scale-out cold starts)
    rate_per_sec: 4
    burst: 8
    duration_ms: 2000
    sleep_ms: 300
  - name: recovery
    rate_per_sec: 10
    duration_ms: 4000
    sleep_ms: 20
    log_lines: 1
"#;

fn function_yaml(handler: &str, extensions_dir: &str, otlp_http: &str) -> String {
    format!(
        r#"name: {FUNCTION}
version: "{VERSION}"
region: eu-west-1
account_id: "123456789012"
memory_mb: 256
timeout_ms: 1000
handler: ["{handler}"]
extensions_dir: "{extensions_dir}"
reserved_concurrency: 3
idle_timeout_ms: 60000
dlq: true
dlq_capacity: 2
max_retries: 2
async_retry_delay_ms: 50
cloudwatch_period_ms: 1000
environment:
  INIT_SLEEP_MS: "100"
  OTEL_EXPORTER_OTLP_ENDPOINT: "http://{otlp_http}"
  LAMBDAWATCH_BUFFER_MAX_ITEMS: "50"
"#
    )
}

/// A webhook receiver answering 200 to every request; counts the requests.
fn capture_server() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let addr = lambdawatch_tests::webhook::serve(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    (addr, count)
}

/// Metric families with at least one sample in a Prometheus text exposition.
fn exposed_series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// What `promtool check metrics` may say about the collector's `/metrics`, line by line: nothing
/// (no parse error, no best-practice lint).
const EXPECTED_PROMTOOL_LINT: &[&str] = &[];

/// `promtool check metrics` over `text` (stdin): exit code and its output.
fn promtool_check_metrics(text: &str) -> (Option<i32>, String) {
    let promtool = peers::bin("promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn kv(k: &str, v: Value) -> Value {
    json!({"key": k, "value": v})
}

fn s(v: &str) -> Value {
    json!({"stringValue": v})
}

/// An OTLP/JSON traces request: one resource with `resource` attributes, one span of `span_type`
/// ending `age` ago and lasting 100 ms, with `extra` span attributes.
fn otlp_span(resource: Vec<Value>, span_type: &str, age: Duration, extra: Vec<Value>) -> Value {
    let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - age;
    let end_ns = end.as_nanos() as u64;
    let mut attributes = vec![kv("lambdawatch.span.type", s(span_type))];
    attributes.extend(extra);
    json!({"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "dash-e2e-drop", "kind": 2,
        "startTimeUnixNano": (end_ns - 100_000_000).to_string(),
        "endTimeUnixNano": end_ns.to_string(),
        "attributes": attributes,
    }]}]}]})
}

/// The resource attributes of `function` in the scenario's version, region and account.
fn function_resource(function: &str, instance: &str) -> Vec<Value> {
    vec![
        kv("faas.name", s(function)),
        kv("faas.version", s(VERSION)),
        kv("cloud.region", s(REGION)),
        kv("cloud.account.id", s(ACCOUNT)),
        kv("faas.instance", s(instance)),
    ]
}

/// The checked-in rules (`lambdawatch-collector rules` for the embedded default spec, kept exact by
/// `rules::tests::checked_in_rules_match_the_embedded_default`) with every `for:` set to the
/// collector's `LAMBDAWATCH_ALERT_FOR` of these tests, as `rules --for 2s` writes them.
fn generated_rules_for_2s() -> String {
    let text = std::fs::read_to_string(
        lambdawatch_tests::repo_root().join("alerts/lambdawatch-rules.yml"),
    )
    .unwrap();
    let alerts = text.matches("\n      - alert: ").count();
    assert!(alerts >= 6, "only {alerts} alerts in the rules");
    assert_eq!(
        text.matches("\n        for: 1m\n").count(),
        alerts,
        "every alert of the checked-in rules pends for the default 1m"
    );
    text.replace("\n        for: 1m\n", "\n        for: 2s\n")
}

/// Prometheus scraping the collector's admin listener every second, evaluating
/// [`generated_rules_for_2s`] (written into `dir`) every second.
fn start_prometheus_with_rules(admins: &[&str], dir: &std::path::Path) -> Prometheus {
    let rules = dir.join("lambdawatch-rules.yml");
    std::fs::write(&rules, generated_rules_for_2s()).unwrap();
    let mut config = prometheus::Config::job("1s", "lambdawatch", admins);
    config.rule_files.push(rules);
    prometheus::start("prometheus", &config)
}

#[test]
fn judge_rejects_missing_nan_and_zero_results() {
    let sample = |v: f64| Sample {
        labels: "reason=x".to_owned(),
        value: v,
    };
    assert!(judge(&[], Finite).unwrap_err().contains("no data"));
    assert!(
        judge(&[sample(f64::NAN), sample(f64::INFINITY)], Finite)
            .unwrap_err()
            .contains("no finite sample")
    );
    assert!(
        judge(&[sample(0.0), sample(f64::NAN)], NonZero)
            .unwrap_err()
            .contains("every sample is 0")
    );
    assert_eq!(judge(&[sample(0.0), sample(f64::NAN)], Finite), Ok(()));
    assert_eq!(judge(&[sample(0.0), sample(-0.5)], NonZero), Ok(()));
}

#[test]
fn every_dashboard_target_is_declared_exactly_once() {
    let (_, problems) = declarations(&dashboard_queries("1m"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A target nobody declared is reported.
    let extra = Query {
        dashboard: "pipeline-health".into(),
        panel_title: "A panel added without a declaration".into(),
        ref_id: "A".into(),
        expr: "up".into(),
    };
    let (_, problems) = declarations(std::slice::from_ref(&extra));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("A panel added without a declaration")
                && p.contains("no declaration")),
        "{problems:?}"
    );
    // ... and so is a declaration left behind when its panel goes.
    assert!(
        problems
            .iter()
            .any(|p| p.contains("SLO status (30 d)") && p.contains("which no dashboard has")),
        "{problems:?}"
    );
}

#[test]
fn every_dashboard_query_returns_data_after_an_end_to_end_run() {
    let started = Instant::now();
    peers::bin("promtool");
    let collector_bin = workspace_bin("lambdawatch-collector");
    let sandbox_bin = workspace_bin("lambdawatch-sandbox");
    let extension_bin = workspace_bin("lambdawatch-extension");
    let function_bin = workspace_bin("sample-function");
    let (_, undeclared) = declarations(&dashboard_queries("1m"));
    assert!(undeclared.is_empty(), "{}", undeclared.join("\n"));

    // moto with the CloudWatch data points the poller must find.
    let moto_server = moto::start();
    boto3(
        &moto_server.url,
        &format!(
            "cw=boto3.client('cloudwatch', region_name='{REGION}', **kw)\n\
             cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{{'MetricName':'Throttles','Dimensions':[{{'Name':'FunctionName','Value':'{FUNCTION}'}}],'Value':{POLLED_THROTTLES},'Unit':'Count'}}])\n\
             cw.put_metric_data(Namespace='AWS/SQS', MetricData=[{{'MetricName':'NumberOfMessagesSent','Dimensions':[{{'Name':'QueueName','Value':'{DLQ_QUEUE}'}}],'Value':{POLLED_DLQ_SENT},'Unit':'Count'}}])"
        ),
    );

    // The collector, alerts going to the capture server, polling moto's CloudWatch.
    let (hook, deliveries) = capture_server();
    let mut cmd = Command::new(&collector_bin);
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "2s")
        .env("LAMBDAWATCH_MAX_FUNCTIONS", "2")
        .env("LAMBDAWATCH_DLQ_QUEUES", format!("{DLQ_QUEUE}={FUNCTION}"))
        .env("LAMBDAWATCH_WEBHOOK_URL", format!("http://{hook}/hook"))
        .env("LAMBDAWATCH_AWS_REGION", REGION)
        .env("LAMBDAWATCH_AWS_ACCOUNT_ID", ACCOUNT)
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", &moto_server.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s");
    let collector = Child::spawn("collector", &mut cmd);
    let line = collector.wait_for_text("lambdawatch-collector listening", Duration::from_secs(30));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_owned()
    };
    let (otlp_http, admin) = (field("otlp_http"), field("admin"));
    field("otlp_grpc");
    // ADVISED's history first, so it is one of the two tracked functions and its old minutes
    // arrive before any evaluation could fold past them.
    post_advised_history(&otlp_http);

    // Prometheus scraping the collector every second and evaluating the generated rules.
    let rules_dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus_with_rules(&[&admin], rules_dir.path());
    let prom_started = Instant::now();

    // The function: our extension in /opt/extensions, the rust sample function as the handler.
    let dir = tempfile::tempdir().unwrap();
    let extensions = dir.path().join("extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    std::os::unix::fs::symlink(&extension_bin, extensions.join("lambdawatch")).unwrap();
    let function = dir.path().join("function.yaml");
    let workload = dir.path().join("workload.yaml");
    let report = dir.path().join("report.json");
    std::fs::write(
        &function,
        function_yaml(
            &function_bin.display().to_string(),
            &extensions.display().to_string(),
            &otlp_http,
        ),
    )
    .unwrap();
    std::fs::write(&workload, WORKLOAD).unwrap();
    let mut sandbox = Child::spawn(
        "sandbox",
        Command::new(&sandbox_bin)
            .arg("run")
            .arg("--function")
            .arg(&function)
            .arg("--workload")
            .arg(&workload)
            .arg("--invoke-addr")
            .arg("127.0.0.1:0")
            .arg("--report")
            .arg(&report)
            .arg("--cloudwatch-endpoint")
            .arg(format!("http://{otlp_http}")),
    );
    let status = sandbox.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "the sandbox failed: {status}");

    // The scenario happened as described (else the dashboards would be checked against less).
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let n = |p: &str| r.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    for (what, pointer, at_least) in [
        ("successes", "/invocations/success", 100),
        ("errors", "/invocations/error", 5),
        ("timeouts", "/invocations/timeout", 1),
        ("cold starts", "/cold_starts", 2),
        ("throttles", "/throttles", 1),
        ("async events", "/async/received", 10),
        ("dead-lettered async events", "/async/dead_lettered", 1),
        (
            "DLQ sends that failed (DeadLetterErrors)",
            "/async/dead_letter_errors",
            1,
        ),
        ("CloudWatch publishes", "/cloudwatch/published", 2),
    ] {
        assert!(
            n(pointer) >= at_least,
            "the scenario produced {} {what} (wanted at least {at_least}); report: {}",
            n(pointer),
            serde_json::to_string(&r["invocations"]).unwrap()
                + &serde_json::to_string(&r["async"]).unwrap()
        );
    }
    assert_eq!(n("/cloudwatch/failures"), 0, "CloudWatch publishes failed");

    // One request per pipeline drop stage. Ingest: a malformed OTLP request.
    let traces = format!("http://{otlp_http}/v1/traces");
    let bad = http::request(
        "POST",
        &traces,
        &[("content-type", "application/x-protobuf")],
        b"\xff\xff\xff\xff not protobuf",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(bad.status, 400, "malformed OTLP: {}", bad.text());
    let invocation_attrs = || {
        vec![
            kv("aws.lambda.outcome", s("success")),
            kv("aws.lambda.duration_ms", json!({"doubleValue": 100.0})),
        ]
    };
    let post = |what: &str, body: Value| {
        let r = http::post_json(&traces, &body, Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        r.json()
    };
    // Ingest items: an invocation span whose resource names no function (OTLP partial success).
    let partial = post(
        "span without faas.name",
        otlp_span(
            vec![kv("cloud.region", s(REGION))],
            "invocation",
            Duration::ZERO,
            invocation_attrs(),
        ),
    );
    let rejected = partial
        .pointer("/partialSuccess/rejectedSpans")
        .map(|v| v.to_string().trim_matches('"').to_owned());
    assert_eq!(
        rejected.as_deref(),
        Some("1"),
        "partial success for the span without a function: {partial}"
    );
    // Aggregate, too_old: an init span of the function 40 days ago (an init, not an invocation,
    // so the cost stage, which prices invocations, is untouched).
    post(
        "40-day-old init span",
        otlp_span(
            function_resource(FUNCTION, "dash-e2e-stale-instance"),
            "init",
            Duration::from_secs(40 * 86_400),
            vec![kv("aws.lambda.init_type", s("on-demand"))],
        ),
    );
    // Aggregate, too_many_functions: a third function, beyond LAMBDAWATCH_MAX_FUNCTIONS=2
    // (ADVISED and FUNCTION are tracked).
    post(
        "span of a third function",
        otlp_span(
            function_resource("dash-e2e-overflow", "overflow-instance"),
            "invocation",
            Duration::ZERO,
            invocation_attrs(),
        ),
    );

    // The alerts the incident causes reach the webhook.
    wait_until(
        "an alert delivered to the webhook",
        Duration::from_secs(30),
        || (deliveries.load(Ordering::SeqCst) > 0).then_some(()),
    );

    // The poller's counts arrive on top of what the sandbox published: they are in the counters
    // Prometheus scraped.
    let sel = format!("{{function=\"{FUNCTION}\", version=\"{VERSION}\"}}");
    let throttles_expr = format!("sum(lambdawatch_throttles_total{{function=\"{FUNCTION}\"}})");
    let dlq_expr = format!(
        "sum(lambdawatch_dlq_messages_sent_total{{function=\"{FUNCTION}\", queue=\"{DLQ_QUEUE}\"}})"
    );
    let sandbox_throttles = n("/throttles") as f64;
    let sandbox_dlq = n("/async/dead_lettered") as f64;
    wait_until(
        "the polled Throttles and DLQ sends in Prometheus",
        Duration::from_secs(30),
        || {
            let t = prom.value(&throttles_expr)?;
            let d = prom.value(&dlq_expr)?;
            (t >= sandbox_throttles + POLLED_THROTTLES && d >= sandbox_dlq + POLLED_DLQ_SENT)
                .then_some(())
        },
    );

    // Prometheus scrapes the final state at least twice, with the scrape healthy.
    let settled = unix_now();
    wait_until(
        "two Prometheus scrapes after the traffic ended",
        Duration::from_secs(30),
        || {
            let last = prom.value("timestamp(up{job=\"lambdawatch\"} == 1)")?;
            (last >= settled + 2.0).then_some(())
        },
    );
    // Exactly the sandbox's counts plus moto's, each data point emitted once by the poller.
    assert_eq!(
        prom.value(&throttles_expr),
        Some(sandbox_throttles + POLLED_THROTTLES),
        "throttles: sandbox {sandbox_throttles} + polled {POLLED_THROTTLES}"
    );
    assert_eq!(
        prom.value(&dlq_expr),
        Some(sandbox_dlq + POLLED_DLQ_SENT),
        "DLQ sends: sandbox {sandbox_dlq} + polled {POLLED_DLQ_SENT}"
    );
    let polls = prom
        .value("sum(lambdawatch_cloudwatch_requests_total{result=\"success\"})")
        .unwrap();
    assert!(polls >= 2.0, "{polls} successful GetMetricData polls");
    // Exactly the drops sent above, and nothing else dropped.
    for (expr, want) in [
        (
            "sum(lambdawatch_aggregate_dropped_total{reason=\"too_old\"})",
            1.0,
        ),
        (
            "sum(lambdawatch_aggregate_dropped_total{reason=\"too_many_functions\"})",
            1.0,
        ),
        (
            "sum(lambdawatch_ingest_rejected_items_total{reason=\"no_function\"})",
            1.0,
        ),
        (
            "sum(lambdawatch_ingest_rejected_items_total{reason=\"invalid_value\"})",
            0.0,
        ),
        ("sum(lambdawatch_ingest_rejected_total)", 1.0),
    ] {
        assert_eq!(prom.value(expr), Some(want), "{expr}");
    }
    let delivered =
        prom.value("sum(lambdawatch_alert_deliveries_total{sink=\"webhook\", result=\"success\"})");
    assert!(
        delivered.is_some_and(|d| d >= 1.0),
        "Prometheus has {delivered:?} successful webhook deliveries, the webhook got {}",
        deliveries.load(Ordering::SeqCst)
    );
    // The $function variable offers the function.
    let functions = http::get(
        &format!(
            "{}/api/v1/label/function/values?match[]=lambdawatch_invocations_total",
            prom.base
        ),
        Duration::from_secs(5),
    )
    .unwrap()
    .json();
    for f in [FUNCTION, ADVISED] {
        assert!(
            functions["data"]
                .as_array()
                .is_some_and(|fs| fs.iter().any(|v| v == f)),
            "label_values(lambdawatch_invocations_total, function) lacks {f}: {functions}"
        );
    }

    // Cost: the counter Prometheus has equals the price table's list price of the requests and
    // billed GB-seconds counted by the aggregator's own series (eu-west-1, the extension's
    // architecture), and /api/v1/cost agrees.
    let cost_doc = http::get(
        &format!("http://{admin}/api/v1/cost"),
        Duration::from_secs(5),
    )
    .unwrap()
    .json();
    let row = cost_doc["functions"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|r| r["function"] == FUNCTION && r["version"] == VERSION)
        })
        .unwrap_or_else(|| panic!("/api/v1/cost lacks {FUNCTION}: {cost_doc}"))
        .clone();
    assert_eq!(row["region"], "eu-west-1", "{row}");
    assert_eq!(row["memory_mb"], 256, "{row}");
    let arch = row["arch"].as_str().unwrap_or_default().to_owned();
    let expected_arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "x86_64"
    };
    assert_eq!(arch, expected_arch, "the extension's architecture: {row}");
    for reason in ["too_many_functions", "unknown_region", "no_memory_size"] {
        assert_eq!(cost_doc["dropped"][reason], 0, "{cost_doc}");
    }
    // eu-west-1 first-tier duration prices and the request price (collector/prices).
    let gb_second = if arch == "arm64" {
        0.000_013_333_4
    } else {
        0.000_016_666_7
    };
    let requests = prom
        .value(&format!("sum(lambdawatch_invocations_total{sel})"))
        .unwrap();
    let gbs = prom
        .value(&format!(
            "sum(lambdawatch_billed_gigabyte_seconds_total{sel})"
        ))
        .unwrap();
    let cost = prom
        .value(&format!("sum(lambdawatch_cost_usd_total{sel})"))
        .unwrap();
    let want = requests * 0.20 / 1e6 + gbs * gb_second;
    assert!(
        requests >= 100.0 && (cost - want).abs() <= want * 1e-9,
        "lambdawatch_cost_usd_total {cost} ≠ {requests} requests × $0.20/M + {gbs} GB-s × ${gb_second} = {want}"
    );
    let api_cost = row["cost_usd_total"].as_f64().unwrap();
    assert!(
        (api_cost - cost).abs() <= cost * 1e-9,
        "/api/v1/cost says {api_cost}, Prometheus scraped {cost}"
    );
    let projected = row["projected_30d_usd"].as_f64().unwrap();
    assert!(
        projected.is_finite() && projected >= 0.0,
        "projection {projected}: {row}"
    );
    // The retry tracker saw the async retries (each retried event repeats its request id).
    let retried = n("/async/retried");
    let tracked = row["retry"]["retries"].as_f64().unwrap_or(-1.0);
    assert!(
        retried == 0 || tracked > 0.0,
        "the sandbox retried {retried} async events, the retry tracker saw {tracked}: {row}"
    );
    // The advisors ran on the evaluation tick: every strategy's scraped memory recommendation is
    // at least the observed max memory used plus the 20 % headroom (the floor), and
    // /api/v1/cost's advice says the same; the timeout budget ratio is P99 / the 1 s timeout.
    // Lambda's MB are MiB; the gauges are in bytes.
    const MIB: f64 = 1_048_576.0;
    let observed = prom
        .value(&format!(
            "max(lambdawatch_memory_observed_max_used_bytes{sel})"
        ))
        .expect("lambdawatch_memory_observed_max_used_bytes scraped")
        / MIB;
    assert!(
        observed > 0.0 && observed <= 256.0,
        "observed max {observed} MB"
    );
    // The advisor's per-size maximum and the aggregator's last-hour maximum come from the same
    // reports through separate state: in a run shorter than an hour they agree.
    let last_hour = prom
        .value(&format!("max(lambdawatch_max_memory_used_bytes{sel})"))
        .unwrap()
        / MIB;
    assert_eq!(
        observed, last_hour,
        "advisor's max used vs lambdawatch_max_memory_used_bytes"
    );
    let floor = prom
        .value(&format!("max(lambdawatch_memory_floor_bytes{sel})"))
        .unwrap()
        / MIB;
    assert!(
        floor >= (observed * 1.2).ceil() && floor >= 128.0,
        "floor {floor} MB, observed {observed} MB"
    );
    assert_eq!(
        row["advice"]["memory"]["floor_mb"].as_f64(),
        Some(floor),
        "{row}"
    );
    for strategy in ["cost", "speed", "balanced"] {
        let rec = prom.value(&format!(
                "max(lambdawatch_memory_recommendation_bytes{{function=\"{FUNCTION}\", version=\"{VERSION}\", strategy=\"{strategy}\"}})"
            ),
        )
        .unwrap_or_else(|| panic!("no {strategy} memory recommendation scraped"))
            / MIB;
        assert!(
            rec >= observed * 1.2 && rec >= floor,
            "{strategy} recommends {rec} MB < observed max {observed} MB + 20 % (floor {floor} MB)"
        );
    }
    let ratio = prom
        .value(&format!("max(lambdawatch_timeout_budget_ratio{sel})"))
        .expect("lambdawatch_timeout_budget_ratio scraped");
    assert!(
        ratio > 0.0 && ratio.is_finite(),
        "timeout budget ratio {ratio}"
    );
    assert_eq!(row["advice"]["cascade"]["status"], "unknown", "{row}");
    check_advised_advice(&admin);

    // The judge can fail, on this Prometheus with this run's data: a misspelt metric has no
    // data, a counter the run never moves (no auth token, so no `unauthenticated` rejection)
    // is 0, and 0/0 is NaN.
    let window = format!("{}s", prom_started.elapsed().as_secs() + 15);
    let unauthenticated = format!(
        "sum(rate(lambdawatch_ingest_rejected_total{{reason=\"unauthenticated\"}}[{window}]))"
    );
    for (what, expr, expect, error) in [
        (
            "a misspelt metric",
            format!("sum(rate(lambdawatch_throttle_total{{function=\"{FUNCTION}\"}}[{window}]))"),
            NonZero,
            "no data",
        ),
        (
            "a zero-only expression",
            unauthenticated.clone(),
            NonZero,
            "every sample is 0",
        ),
        (
            "a NaN-only expression",
            format!("{unauthenticated} / {unauthenticated}"),
            Finite,
            "no finite sample",
        ),
    ] {
        match check(&prom, &expr, expect) {
            Err(e) if e.contains(error) => eprintln!("self-check: {what} is reported: {e}"),
            other => {
                panic!("self-check: {what} ({expr}) must be reported as {error:?}, got {other:?}")
            }
        }
    }

    // Every dashboard target against its declaration; `$__rate_interval` covers the whole run.
    let metrics = http::get(&format!("http://{admin}/metrics"), Duration::from_secs(5))
        .unwrap()
        .text();
    let exposed = exposed_series_names(&metrics);
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("lambdawatch_extension_"))
    {
        eprintln!("/metrics: {l}");
    }
    eprintln!("sandbox telemetry: {}", r["telemetry"]);
    let queries = dashboard_queries(&window);
    assert!(
        queries.len() > 40,
        "only {} dashboard queries",
        queries.len()
    );
    let (declared, mut failures) = declarations(&queries);
    let mut table = Vec::new();
    for (q, expect) in &declared {
        let what = format!(
            "{} › {:?} target {} ({expect:?})",
            q.dashboard, q.panel_title, q.ref_id
        );
        match check(&prom, &q.expr, *expect) {
            Ok(samples) => table.push(format!(
                "ok   {what}: {}",
                samples
                    .iter()
                    .map(|s| format!("{{{}}} {}", s.labels, s.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => {
                let missing: Vec<String> = dashboards::selectors(&q.expr)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.metric)
                    .filter(|m| !exposed.contains(m))
                    .collect();
                table.push(format!("FAIL {what}: {e}"));
                failures.push(format!(
                    "{what}: {e}\n    expr: {}\n    not in the collector's /metrics: {missing:?}",
                    q.expr
                ));
            }
        }
    }
    eprintln!("{}", table.join("\n"));

    // The exposition passes Prometheus's own checker.
    let (code, lint) = promtool_check_metrics(&metrics);
    let lint_lines: Vec<&str> = lint.lines().filter(|l| !l.trim().is_empty()).collect();
    let expected_code = if EXPECTED_PROMTOOL_LINT.is_empty() {
        0
    } else {
        3
    };
    if code != Some(expected_code) || lint_lines != EXPECTED_PROMTOOL_LINT {
        failures.push(format!(
            "promtool check metrics on the collector's /metrics: exit {code:?} (expected \
             {expected_code}), output differs from the expected lint {EXPECTED_PROMTOOL_LINT:?}:\n{lint}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "{} dashboard targets judged over [{window}] in {:?}",
        queries.len(),
        started.elapsed()
    );
    drop(collector);
}

/// Posts [`ADVISED`]'s history in one OTLP/JSON request (so no evaluation tick falls between
/// its minutes), as the extension and instrumented function code would have sent it:
///
/// - baseline, minutes now−12 … now−5 (ended over 2 minutes ago, so the provisioned-concurrency
///   sampler folds them at the next evaluation): per minute one 1.2 s on-demand init in a fresh
///   environment, and [`ADVISED_ENVS`] environments running [`ADVISED_PER_ENV`] invocations of
///   200 ms each, every one with a CLIENT span to `orders-db` of ~20 ms;
/// - recent, in the 45 s before now: [`ADVISED_RECENT`] invocations, the first
///   [`ADVISED_RECENT_TIMEOUTS`] timing out (1 s, no client span: Lambda stopped the runtime),
///   the others finishing with a ~400 ms `orders-db` call.
///
/// The cascade's recent window is the last 5 minutes of the evaluation's `now`, so the recent
/// invocations stay in it for at least 3 minutes after the post (the run takes less; the test
/// checks the cascade before judging).
fn post_advised_history(otlp_http: &str) {
    use lambdawatch_tests::otlp_json::{self, Invocation};
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let now_min = now_ms / 60_000;
    let resource = |instance: &str| otlp_json::resource(ADVISED, VERSION, REGION, instance);
    let orders_db = [otlp_json::kv("peer.service", otlp_json::s("orders-db"))];
    let mut trace: u128 = 0xad71_5ed0_0000_0000_0000_0000_0000_0000;
    let mut call = |end_ms: u64, ms: f64, outcome: &str, db_ms: Option<f64>| {
        trace += 1;
        let mut spans = vec![otlp_json::invocation(Invocation {
            function: ADVISED,
            trace,
            end_ms,
            duration_ms: ms,
            outcome,
            memory_mb: 512.0,
            timeout_ms: 1000.0,
        })];
        if let Some(db_ms) = db_ms {
            spans.push(otlp_json::client(
                trace,
                0,
                "SELECT orders",
                end_ms - 10,
                db_ms,
                &orders_db,
            ));
        }
        spans
    };
    let mut groups = Vec::new();
    for minute in now_min - 4 - ADVISED_BASELINE_MINUTES..now_min - 4 {
        let t_ms = minute * 60_000;
        groups.push((
            resource(&format!("cold-{minute}")),
            vec![otlp_json::init_span(t_ms + 5_000, 1200.0)],
        ));
        for env in 0..ADVISED_ENVS {
            let spans = (0..ADVISED_PER_ENV)
                .flat_map(|k| {
                    let end = t_ms + 20_000 + k * 20_000 + env * 1_000;
                    call(end, 200.0, "success", Some(20.0 + (k + env) as f64))
                })
                .collect();
            groups.push((resource(&format!("env-{env}")), spans));
        }
    }
    let recent = (0..ADVISED_RECENT)
        .flat_map(|j| {
            let end = now_ms - 45_000 + j * 2_500;
            if j < ADVISED_RECENT_TIMEOUTS {
                call(end, 1000.0, "timeout", None)
            } else {
                call(end, 450.0, "success", Some(400.0 + j as f64))
            }
        })
        .collect();
    groups.push((resource("env-0"), recent));
    otlp_json::send(otlp_http, groups);
}

/// The collector's own advice for [`ADVISED`] (`/api/v1/cost`) is what the drill-down's advice
/// panels are declared to show: provisioned concurrency recommended over the folded baseline
/// minutes, and a timeout cascade naming `orders-db`.
fn check_advised_advice(admin: &str) {
    let advice = wait_until(
        "the collector's provisioned-concurrency and cascade advice for the advised function",
        Duration::from_secs(30),
        || {
            let doc = http::get(
                &format!("http://{admin}/api/v1/cost"),
                Duration::from_secs(5),
            )
            .ok()?
            .json();
            let row = doc["functions"]
                .as_array()?
                .iter()
                .find(|r| r["function"] == ADVISED)?;
            let a = row["advice"].clone();
            (a["provisioned_concurrency"]["status"] != "unknown"
                && a["cascade"]["status"] != "unknown")
                .then_some(a)
        },
    );
    let pc = &advice["provisioned_concurrency"];
    assert_eq!(pc["status"], "recommended", "{pc:#}");
    assert_eq!(pc["units"], ADVISED_ENVS, "{pc:#}");
    assert_eq!(
        pc["on_demand_cold_starts"], ADVISED_BASELINE_MINUTES,
        "{pc:#}"
    );
    // The recent invocations join the window only once their minute is folded too.
    let baseline = ADVISED_BASELINE_MINUTES * ADVISED_ENVS * ADVISED_PER_ENV;
    let invocations = pc["invocations"].as_u64().unwrap_or(0);
    assert!(
        (baseline..=baseline + ADVISED_RECENT).contains(&invocations),
        "{pc:#}"
    );
    let cascade = &advice["cascade"];
    assert_eq!(cascade["status"], "cascade", "{cascade:#}");
    assert_eq!(cascade["suspect"], "orders-db", "{cascade:#}");
    assert_eq!(
        cascade["recent"]["timeouts"], ADVISED_RECENT_TIMEOUTS,
        "{cascade:#}"
    );
    assert_eq!(cascade["baseline"]["timeouts"], 0, "{cascade:#}");
}

/// The function of the DLQ-ratio check: async events dropped, no dead-letter queue at all.
const DROPS_ONLY: &str = "dash-e2e-drops-only";

/// One Metric-Streams-shaped OTLP/HTTP request (as CloudWatch would stream it) of `AWS/Lambda`
/// `AsyncEventsReceived` and `AsyncEventsDropped` for [`DROPS_ONLY`] over the second before now.
fn post_async_counts(otlp_http: &str, received: f64, dropped: f64) {
    post_async_counts_of(otlp_http, DROPS_ONLY, received, dropped);
}

/// [`post_async_counts`] for `function`.
fn post_async_counts_of(otlp_http: &str, function: &str, received: f64, dropped: f64) {
    use lambdawatch_semconv::cloudwatch::{self as cw, PlatformCount, StreamOrigin};
    use prost::Message;
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let start = end - 1_000_000_000;
    let origin = StreamOrigin {
        account_id: ACCOUNT.to_owned(),
        region: REGION.to_owned(),
    };
    let body = cw::build_request(
        &origin,
        &[
            PlatformCount::lambda(cw::ASYNC_EVENTS_RECEIVED, function, start, end, received),
            PlatformCount::lambda(cw::ASYNC_EVENTS_DROPPED, function, start, end, dropped),
        ],
    )
    .encode_to_vec();
    let r = http::request(
        "POST",
        &format!("http://{otlp_http}/v1/metrics"),
        &[("content-type", "application/x-protobuf")],
        &body,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200, "CloudWatch-shaped metrics: {}", r.text());
}

/// Issue 6's DLQ ratio is the `dlq_ratio` SLO's: dead-lettered = max(AsyncEventsDropped, DLQ
/// sends), valid = max(AsyncEventsReceived, dead-lettered). A function whose async events are
/// dropped but which has no DLQ (so no `NumberOfMessagesSent`) must show the SLO's ratio on both
/// dashboards' DLQ ratio panels — a DLQ-sends / received panel shows nothing for it. Each panel's
/// value (the generated rules evaluated by a real Prometheus scraping a real collector) must
/// equal `1 − good / valid` of the `dlq_ratio` SLO in the collector's `/api/v1/slos` within float
/// tolerance. Both batches drop the same share (1 in 10), so `increase()`'s extrapolation scales
/// received and dropped alike and the ratio is exact.
#[test]
fn dlq_ratio_panels_equal_the_slo_for_a_function_with_drops_but_no_dlq() {
    let (collector, otlp_http, admin) = plain_collector("collector");
    let rules_dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus_with_rules(&[&admin], rules_dir.path());

    let scraped = |metric: &str| prom.value(&format!("sum({metric}{{function=\"{DROPS_ONLY}\"}})"));
    post_async_counts(&otlp_http, 10.0, 1.0);
    wait_until("the first batch scraped", Duration::from_secs(30), || {
        (scraped("lambdawatch_async_events_received_total")? == 10.0
            && scraped("lambdawatch_async_events_dropped_total")? == 1.0)
            .then_some(())
    });
    post_async_counts(&otlp_http, 30.0, 3.0);
    wait_until("the second batch scraped", Duration::from_secs(30), || {
        (scraped("lambdawatch_async_events_received_total")? == 40.0
            && scraped("lambdawatch_async_events_dropped_total")? == 4.0)
            .then_some(())
    });
    assert_eq!(
        prom.samples(&format!(
            "lambdawatch_dlq_messages_sent_total{{function=\"{DROPS_ONLY}\"}}"
        )),
        Ok(Vec::new()),
        "{DROPS_ONLY} must have no DLQ sends"
    );

    // The SLO as the collector evaluates it.
    let slo_ratio = wait_until(
        "the collector's dlq_ratio SLO over all 40 events",
        Duration::from_secs(30),
        || {
            let doc = http::get(
                &format!("http://{admin}/api/v1/slos"),
                Duration::from_secs(5),
            )
            .ok()?
            .json();
            let (mut good, mut valid) = (0.0, 0.0);
            for f in doc["functions"].as_array()? {
                if f["function"] != DROPS_ONLY {
                    continue;
                }
                for s in f["slos"].as_array()? {
                    if s["slo"] == "dlq_ratio" {
                        good += s["budget"]["good"].as_f64()?;
                        valid += s["budget"]["valid"].as_f64()?;
                    }
                }
            }
            (valid == 40.0).then(|| 1.0 - good / valid)
        },
    );
    assert!(
        (slo_ratio - 0.1).abs() < 1e-12,
        "the SLO counts 4 dropped of 40 received: {slo_ratio}"
    );

    // Both dashboards' DLQ ratio panels, as Grafana would send them.
    let panels: Vec<Query> = dashboard_queries("1m")
        .into_iter()
        .filter(|q| q.panel_title == "DLQ ratio")
        .map(|q| Query {
            expr: q.expr.replace(FUNCTION, DROPS_ONLY),
            ..q
        })
        .collect();
    assert_eq!(
        panels
            .iter()
            .map(|q| q.dashboard.as_str())
            .collect::<Vec<_>>(),
        ["fleet-slo-overview", "function-drilldown"],
        "{panels:?}"
    );
    for q in &panels {
        assert!(q.expr.contains(DROPS_ONLY), "{q:?}");
        // The rules evaluate once a second: wait until they have seen the second batch.
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = prom.samples(&q.expr);
            if let Ok(v) = &got
                && v.first()
                    .is_some_and(|s| (s.value - slo_ratio).abs() <= 1e-9 * slo_ratio)
            {
                break v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} › DLQ ratio shows {got:?}, the dlq_ratio SLO is {slo_ratio}: {}",
                q.dashboard,
                q.expr
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            got.len(),
            1,
            "{}: one series for the function: {got:?}",
            q.dashboard
        );
        eprintln!(
            "{} › DLQ ratio = {} (SLO {slo_ratio}): {}",
            q.dashboard, got[0].value, q.expr
        );
    }
    drop(collector);
}

/// A collector on ephemeral loopback ports (1 s evaluation, 2 s `for`, no AWS): the process and
/// its OTLP/HTTP and admin addresses.
fn plain_collector(name: &str) -> (Child, String, String) {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "2s");
    let collector = Child::spawn(name, &mut cmd);
    let line = collector.wait_for_text("lambdawatch-collector listening", Duration::from_secs(30));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_owned()
    };
    let (otlp_http, admin) = (field("otlp_http"), field("admin"));
    (collector, otlp_http, admin)
}

/// The function the two collectors share.
const SHARED: &str = "dash-e2e-shared";

/// Several collectors: the fleet and drill-down SLO panels show the fleet's SLO, not one
/// collector's. Two real collectors each receive part of one function's async events
/// (CloudWatch-shaped): A drops 1 in 10, B 1 in 2, so the fleet drops 24 of 80 (0.3) while each
/// task alone sees 0.1 or 0.5. One real Prometheus scrapes both and evaluates the generated rules.
/// The fleet dashboard's SLO status (SLI and budget), error budget, 1 h and 6 h burn rates and DLQ
/// ratio, and the function drill-down's SLO burn rates (1 h and 6 h), error budget and DLQ ratio
/// (`$function` = the shared function, `$version` = All), for `dlq_ratio` must each imply the
/// bad-event ratio of both collectors' `/api/v1/slos` counts added up, within 10 % (`increase()`
/// extrapolates each target by up to one scrape interval, scraped at different phases); a
/// `min`/`max` across the tasks' own gauges gives 0.1 or 0.5.
#[test]
fn fleet_slo_panels_add_up_two_collectors() {
    let (a, otlp_a, admin_a) = plain_collector("collector-a");
    let (b, otlp_b, admin_b) = plain_collector("collector-b");
    let rules_dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus_with_rules(&[&admin_a, &admin_b], rules_dir.path());
    let scraped = |metric: &str| prom.value(&format!("sum({metric}{{function=\"{SHARED}\"}})"));
    // Each batch keeps its collector's drop share, so extrapolation scales a collector's
    // received and dropped alike.
    post_async_counts_of(&otlp_a, SHARED, 10.0, 1.0);
    post_async_counts_of(&otlp_b, SHARED, 10.0, 5.0);
    wait_until("the first batches scraped", Duration::from_secs(30), || {
        (scraped("lambdawatch_async_events_received_total")? == 20.0
            && scraped("lambdawatch_async_events_dropped_total")? == 6.0)
            .then_some(())
    });
    post_async_counts_of(&otlp_a, SHARED, 30.0, 3.0);
    post_async_counts_of(&otlp_b, SHARED, 30.0, 15.0);
    wait_until(
        "the second batches scraped",
        Duration::from_secs(30),
        || {
            (scraped("lambdawatch_async_events_received_total")? == 80.0
                && scraped("lambdawatch_async_events_dropped_total")? == 24.0)
                .then_some(())
        },
    );

    // The truth: both collectors' dlq_ratio counts added up.
    let counts = |admin: &str| -> Option<(f64, f64, f64)> {
        let doc = http::get(
            &format!("http://{admin}/api/v1/slos"),
            Duration::from_secs(5),
        )
        .ok()?
        .json();
        let f = doc["functions"]
            .as_array()?
            .iter()
            .find(|f| f["function"] == SHARED)?
            .clone();
        let s = f["slos"]
            .as_array()?
            .iter()
            .find(|s| s["slo"] == "dlq_ratio")?
            .clone();
        Some((
            s["budget"]["good"].as_f64()?,
            s["budget"]["valid"].as_f64()?,
            s["objective"].as_f64()?,
        ))
    };
    let (good, valid, objective) = wait_until(
        "both collectors' dlq_ratio SLO over their 40 events",
        Duration::from_secs(30),
        || {
            let (ga, va, oa) = counts(&admin_a)?;
            let (gb, vb, _) = counts(&admin_b)?;
            (va == 40.0 && vb == 40.0).then_some((ga + gb, va + vb, oa))
        },
    );
    let truth = 1.0 - good / valid;
    assert!(
        (truth - 0.3).abs() < 1e-12,
        "the fleet drops 24 of 80: {truth}"
    );
    let budget = 1.0 - objective;

    // Each panel's dlq_ratio value, turned back into the bad-event ratio it implies.
    type Implied = fn(f64, f64) -> f64;
    const FLEET: &str = "fleet-slo-overview";
    const DRILL: &str = "function-drilldown";
    let checks: &[(&str, &str, &str, Implied)] = &[
        (FLEET, "SLO status (30 d)", "A", |v, _| 1.0 - v),
        (FLEET, "SLO status (30 d)", "C", |v, b| (1.0 - v) * b),
        (FLEET, "Error budget remaining (30 d)", "A", |v, b| {
            (1.0 - v) * b
        }),
        (FLEET, "Burn rate (1 h and 6 h windows)", "A", |v, b| v * b),
        (FLEET, "Burn rate (1 h and 6 h windows)", "B", |v, b| v * b),
        (FLEET, "DLQ ratio", "A", |v, _| v),
        (DRILL, "SLO burn rates", "A", |v, b| v * b),
        (DRILL, "SLO burn rates", "B", |v, b| v * b),
        (DRILL, "Error budget remaining (30 d)", "A", |v, b| {
            (1.0 - v) * b
        }),
        (DRILL, "DLQ ratio", "A", |v, _| v),
    ];
    let queries: Vec<Query> = dashboard_queries("1m")
        .into_iter()
        .filter(|q| q.dashboard == FLEET || q.dashboard == DRILL)
        .map(|q| Query {
            expr: q.expr.replace(FUNCTION, SHARED),
            ..q
        })
        .collect();
    // Let the rules evaluate over the last scrapes before judging.
    let settled = unix_now();
    wait_until(
        "two rule evaluations after the traffic",
        Duration::from_secs(30),
        || {
            let t = prom.value(&format!(
            "timestamp(lambdawatch:slo_valid_events:increase5m{{slo=\"dlq_ratio\", function=\"{SHARED}\"}})"
        ))?;
            (t >= settled + 2.0).then_some(())
        },
    );
    let mut problems = Vec::new();
    for (dashboard, title, ref_id, implied) in checks {
        let q = queries
            .iter()
            .find(|q| q.dashboard == *dashboard && q.panel_title == *title && q.ref_id == *ref_id)
            .unwrap_or_else(|| panic!("no {dashboard} panel {title:?} target {ref_id}"));
        assert!(q.expr.contains(SHARED), "{dashboard} › {title}: {}", q.expr);
        let samples = prom
            .samples(&q.expr)
            .unwrap_or_else(|e| panic!("{dashboard} › {title}: {e}"));
        let dlq: Vec<&Sample> = samples
            .iter()
            .filter(|s| title == &"DLQ ratio" || s.labels.contains("slo=dlq_ratio"))
            .collect();
        let [one] = dlq.as_slice() else {
            problems.push(format!(
                "{dashboard} › {title} {ref_id}: not one dlq_ratio series: {samples:?}"
            ));
            continue;
        };
        let r = implied(one.value, budget);
        let ok = (r - truth).abs() <= 0.1 * truth;
        eprintln!(
            "{} {dashboard} › {title:?} {ref_id} = {} (implies {r}, both collectors {truth})",
            if ok { "ok  " } else { "FAIL" },
            one.value
        );
        if !ok {
            problems.push(format!(
                "{dashboard} › {title} {ref_id} = {} implies a bad-event ratio of {r}, the \
                 fleet's is {truth} (one collector alone: 0.1 or 0.5): {}",
                one.value, q.expr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop((a, b));
}
