//! The cost advisors through a real collector process (OTLP/HTTP in, `/api/v1/cost`,
//! `/metrics` and the status page out):
//!
//! - provisioned concurrency: an hour of a function with a cold start every minute (5 % of
//!   invocations, 1.2 s inits) and a steady concurrency of 4 gets a recommendation of 4 units
//!   whose 30-day price the test computes by hand from the published prices; its gauges pass
//!   `promtool check metrics`;
//! - timeout cascade: invocation spans (as the extension sends them) and CLIENT spans sent by
//!   the real Python OpenTelemetry SDK (peers venv; its resource has no `faas.name`: joined by
//!   trace id only) — timeouts and the `orders-db` P99 rise together in `checkout`, so
//!   `/api/v1/cost` names `orders-db`; in `steady` the timeouts rise but `orders-db` does not
//!   slow down, so no cascade (the control).
//!
//! Every peer is required; a missing one fails the test with its name. The collector is the
//! workspace binary, or `LAMBDAWATCH_COLLECTOR_BIN` when set (a target dir shared between
//! worktrees can hold another worktree's build of it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lambdawatch_tests::otlp_json::{self, init_span, send};
use lambdawatch_tests::{Child, http, peers, workspace_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

struct Collector {
    _child: Child,
    otlp: String,
    admin: String,
}

fn start_collector() -> Collector {
    let bin = std::env::var_os("LAMBDAWATCH_COLLECTOR_BIN")
        .map_or_else(|| workspace_bin("lambdawatch-collector"), Into::into);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_LOG", "info");
    let child = Child::spawn("collector", &mut cmd);
    let line = child.wait_for_line("listening line", Duration::from_secs(30), |l| {
        l.contains("listening otlp_grpc=")
    });
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    Collector {
        otlp: field("otlp_http"),
        admin: field("admin"),
        _child: child,
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn resource(function: &str, instance: &str) -> Value {
    otlp_json::resource(function, "1", "us-east-1", instance)
}

/// An invocation span of `function` (3 s timeout) ending at `end_ms`.
fn invocation(
    function: &str,
    trace: u128,
    end_ms: u64,
    ms: f64,
    outcome: &str,
    memory_mb: f64,
) -> Value {
    otlp_json::invocation(otlp_json::Invocation {
        function,
        trace,
        end_ms,
        duration_ms: ms,
        outcome,
        memory_mb,
        timeout_ms: 3000.0,
    })
}

/// Polls `/api/v1/cost` until `function`'s row satisfies `ok`; on timeout, fails with the last
/// row seen.
fn wait_row(admin: &str, function: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let row = cost_row(admin, function);
        if let Some(r) = row.as_ref().filter(|r| ok(r)) {
            return r.clone();
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "timed out waiting for {what}; last row: {:#}",
                row.unwrap_or(Value::Null)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cost_row(admin: &str, function: &str) -> Option<Value> {
    let doc = http::get(&format!("http://{admin}/api/v1/cost"), T)
        .ok()?
        .json();
    doc["functions"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)
        .cloned()
}

/// The value of the sample `name{function="pc-fn",…}` on `/metrics`.
fn gauge(metrics: &str, name: &str, function: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("function=\"{function}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {function} in /metrics"))
}

/// us-east-1 x86_64 list prices as published (docs/cost.md's table, AWS's pricing page of
/// 2026-11-29): requests per 1 M, on-demand duration (first tier), provisioned concurrency and
/// duration under provisioned concurrency, per GB-s.
const REQUEST_PER_MILLION: f64 = 0.20;
const DURATION_GB_S: f64 = 0.0000166667;
const PC_GB_S: f64 = 0.0000041667;
const PC_DURATION_GB_S: f64 = 0.0000097222;

#[test]
fn provisioned_concurrency_advice_through_a_real_collector() {
    let promtool = peers::bin("promtool");
    let c = start_collector();
    // 60 whole minutes ending 4 minutes ago (every one folded at the next evaluation): per
    // minute 4 environments × 5 invocations of 1 s at 512 MB (ending at :10 … :50, so each stays
    // in its minute) and one on-demand cold start of 1.2 s in a new environment. One request:
    // an evaluation between requests would fold every minute up to now − 2 at once, leaving
    // the minutes sent after it late (under load, 60 requests can take more than the 1 s tick).
    let first = now_s() / 60 - 63;
    let mut groups = Vec::new();
    for m in 0..60u64 {
        let t_ms = (first + m) * 60_000;
        groups.push((
            resource("pc-fn", &format!("new-{m}")),
            vec![init_span(t_ms + 5_000, 1200.0)],
        ));
        for env in 0..4u64 {
            let spans = (1..=5u64)
                .map(|k| {
                    let trace = u128::from(m * 100 + env * 10 + k) << 64;
                    invocation("pc-fn", trace, t_ms + k * 10_000, 1000.0, "success", 512.0)
                })
                .collect();
            groups.push((resource("pc-fn", &format!("env-{env}")), spans));
        }
    }
    send(&c.otlp, groups);
    let row = wait_row(
        &c.admin,
        "pc-fn",
        "pc-fn's provisioned-concurrency advice",
        |r| r["advice"]["provisioned_concurrency"]["invocations"].as_u64() == Some(1200),
    );
    let p = &row["advice"]["provisioned_concurrency"];
    assert_eq!(p["status"], "recommended", "{p:#}");
    assert_eq!(p["units"], 4, "{p:#}");
    assert_eq!(p["peak_concurrency"], 4);
    assert_eq!(p["on_demand_cold_starts"], 60);
    assert_eq!(p["billed_duration_ms"], 1_200_000);
    assert_eq!(p["memory_mb"], 512);
    assert!((p["cold_start_ratio"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    let init = p["p99_init_ms"].as_f64().unwrap();
    assert!((1188.0..=1212.0).contains(&init), "{init}");
    // The window is the 60 minutes plus the empty minutes folded since (samples of 0).
    let window = p["window_secs"].as_u64().unwrap();
    assert!((3600..=3600 + 4 * 60).contains(&window), "{window}");
    let minutes: Vec<(u64, u64)> = p["concurrency_minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let zeros = (window - 3600) / 60;
    let want: Vec<(u64, u64)> = if zeros > 0 {
        vec![(0, zeros), (4, 60)]
    } else {
        vec![(4, 60)]
    };
    assert_eq!(minutes, want);

    // By hand: scale the window to 30 days; 0.5 GB × 1 s × 1,200 invocations on demand; with
    // PC, 4 units × 0.5 GB enabled for 30 days and the same GB-s at the PC duration price.
    let scale = 2_592_000.0 / window as f64;
    let requests = 1200.0 * scale * REQUEST_PER_MILLION / 1e6;
    let gb_s = 0.5 * 1200.0 * scale;
    let without = requests + gb_s * DURATION_GB_S;
    let with = requests + 4.0 * 0.5 * 2_592_000.0 * PC_GB_S + gb_s * PC_DURATION_GB_S;
    let net = p["net_monthly_usd"].as_f64().unwrap();
    assert!(
        (p["monthly_cost_without_usd"].as_f64().unwrap() - without).abs() <= 0.006,
        "without: {p:#} vs {without}"
    );
    assert!(
        (p["monthly_cost_with_usd"].as_f64().unwrap() - with).abs() <= 0.006,
        "with: {p:#} vs {with}"
    );
    assert!(
        (net - (with - without)).abs() <= 0.011,
        "{net} vs {}",
        with - without
    );
    let avoided = p["cold_starts_avoided_30d"].as_f64().unwrap();
    assert!((avoided - 60.0 * scale).abs() < 1e-6, "{avoided}");
    let per = p["usd_per_cold_start_avoided"].as_f64().unwrap();
    assert!((per - net / avoided).abs() < 1e-9);

    // /metrics: the gauges in base units, and promtool accepts the exposition.
    let metrics = http::get(&format!("http://{}/metrics", c.admin), T)
        .unwrap()
        .text();
    assert_eq!(
        gauge(
            &metrics,
            "lambdawatch_provisioned_concurrency_recommended",
            "pc-fn"
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &metrics,
            "lambdawatch_provisioned_concurrency_recommended_units",
            "pc-fn"
        ),
        4.0
    );
    let g = gauge(
        &metrics,
        "lambdawatch_provisioned_concurrency_net_monthly_usd",
        "pc-fn",
    );
    assert!((g - net).abs() < 1e-9, "{g} vs {net}");
    let g = gauge(
        &metrics,
        "lambdawatch_provisioned_concurrency_cold_starts_avoided_30d",
        "pc-fn",
    );
    assert!((g - avoided).abs() < 1e-6);
    assert!(metrics.contains("# TYPE lambdawatch_provisioned_concurrency_recommended_units gauge"));
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The status page's cost table shows the advice.
    let page = http::get(&format!("http://{}/", c.admin), T)
        .unwrap()
        .text();
    assert!(page.contains("<th>provisioned concurrency</th>"), "{page}");
    assert!(page.contains("recommended: 4 units"), "{page}");
}

/// The function code's client spans, sent by the Python OpenTelemetry SDK (BatchSpanProcessor,
/// OTLP/HTTP protobuf exporter) as children of the invocation's remote span context, the way
/// the Lambda instrumentation propagates the X-Ray trace header.
const PY_CLIENT: &str = r#"
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

endpoint, path = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": "function-code"}))
provider.add_span_processor(BatchSpanProcessor(
    OTLPSpanExporter(endpoint=endpoint), max_queue_size=16384, max_export_batch_size=512))
tracer = provider.get_tracer("client-spans")
spans = json.load(open(path))
for c in spans:
    parent = SpanContext(trace_id=int(c["trace"], 16), span_id=int(c["parent"], 16),
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    span = tracer.start_span(c["name"], context=ctx, kind=SpanKind.CLIENT,
                             attributes=c["attributes"], start_time=c["start_ns"])
    span.end(end_time=c["end_ns"])
ok = provider.force_flush(30000)
provider.shutdown()
print("exported", len(spans), "client spans", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
"#;

fn python_client_spans(otlp: &str, spans: &[Value]) {
    let py = peers::python_module("opentelemetry.exporter.otlp.proto.http.trace_exporter");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    let data = dir.path().join("spans.json");
    std::fs::write(&script, PY_CLIENT).unwrap();
    std::fs::write(&data, serde_json::to_vec(spans).unwrap()).unwrap();
    let out = Command::new(py)
        .arg(&script)
        .arg(format!("http://{otlp}/v1/traces"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python SDK: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn timeout_cascade_named_from_python_sdk_client_spans() {
    let c = start_collector();
    // Minutes relative to now: baseline now−33 … now−5 (29 minutes), recent now−3 … now−1, so
    // both windows hold them whether the evaluation runs in this minute or the next.
    let now_min = now_s() / 60;
    let mut before = Vec::new(); // client spans sent before their invocations
    let mut after = Vec::new(); // … and after
    let mut invocations: Vec<(Value, Vec<Value>)> = Vec::new();
    let mut trace: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0000;
    let minutes = (now_min - 33..=now_min - 5).chain(now_min - 3..=now_min - 1);
    for minute in minutes {
        let recent = minute + 3 >= now_min;
        for function in ["checkout", "steady"] {
            let mut spans = Vec::new();
            for i in 0..20u64 {
                trace += 1;
                let end_ms = minute * 60_000 + 20_000 + i * 1_000;
                // Recent minutes: 5 of 20 time out in both functions. A timed-out invocation's
                // own client span is never exported (Lambda stops the runtime): none is sent.
                let timed_out = recent && i < 5;
                let (ms, outcome) = if timed_out {
                    (3000.0, "timeout")
                } else {
                    (300.0, "success")
                };
                spans.push(invocation(function, trace, end_ms, ms, outcome, 256.0));
                if timed_out {
                    continue;
                }
                let db_ms = if recent && function == "checkout" {
                    900.0
                } else {
                    20.0
                } + (i % 5) as f64;
                for (name, latency, attributes) in [
                    (
                        "SELECT orders",
                        db_ms,
                        json!({"db.system": "postgresql", "server.address": "db.internal",
                               "peer.service": "orders-db"}),
                    ),
                    ("GET", 2.0, json!({"server.address": "cache.internal"})),
                ] {
                    let end_ns = (end_ms - 50) * 1_000_000;
                    let span = json!({
                        "trace": format!("{trace:032x}"), "parent": otlp_json::invocation_span_id(trace),
                        "name": name, "attributes": attributes,
                        "start_ns": end_ns - (latency * 1e6) as u64, "end_ns": end_ns,
                    });
                    if recent {
                        after.push(span)
                    } else {
                        before.push(span)
                    }
                }
            }
            invocations.push((resource(function, "env-1"), spans));
        }
    }
    // Baseline client spans first (they wait in the join), then every invocation, then the
    // recent client spans (joined at once).
    python_client_spans(&c.otlp, &before);
    for chunk in invocations.chunks(8) {
        send(&c.otlp, chunk.to_vec());
    }
    python_client_spans(&c.otlp, &after);

    let row = wait_row(&c.admin, "checkout", "checkout's cascade", |r| {
        r["advice"]["cascade"]["status"] == "cascade"
    });
    let cascade = &row["advice"]["cascade"];
    assert_eq!(cascade["suspect"], "orders-db", "{cascade:#}");
    assert_eq!(cascade["baseline"]["invocations"], 29 * 20, "{cascade:#}");
    assert_eq!(cascade["baseline"]["timeouts"], 0);
    assert_eq!(cascade["recent"]["invocations"], 3 * 20);
    assert_eq!(cascade["recent"]["timeouts"], 15);
    let db = &cascade["downstreams"][0];
    assert_eq!(db["name"], "orders-db");
    assert_eq!(db["suspect"], true);
    assert_eq!(db["baseline"]["client_spans"], 29 * 20);
    assert_eq!(db["recent"]["client_spans"], 3 * 15);
    // Log buckets: the reported P99 is ≤ 9.05 % above the true one (24 ms, then 904 ms).
    let p99 = |w: &str| db[w]["p99_ms"].as_f64().unwrap();
    assert!((24.0..=24.0 * 1.0905).contains(&p99("baseline")), "{db:#}");
    assert!((904.0..=904.0 * 1.0905).contains(&p99("recent")), "{db:#}");
    let cache = cascade["downstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "cache.internal")
        .unwrap();
    assert_eq!(cache["suspect"], false);

    // The control: the same timeouts in `steady`, orders-db as fast as ever: no cascade.
    let steady = cost_row(&c.admin, "steady").unwrap();
    let sc = &steady["advice"]["cascade"];
    assert_eq!(sc["status"], "no_cascade", "{sc:#}");
    assert_eq!(sc["timeouts_rising"], true, "{sc:#}");
    assert!(sc["suspect"].is_null());

    // Every client span was joined (none waiting or evicted), across both functions.
    let doc = http::get(&format!("http://{}/api/v1/cost", c.admin), T)
        .unwrap()
        .json();
    let join = &doc["trace_join"];
    assert_eq!(
        join["client_spans_joined"],
        2 * 2 * (29 * 20 + 3 * 15),
        "{join:#}"
    );
    assert_eq!(join["evicted_unjoined"], 0);

    // /metrics flags orders-db for checkout with its P99 before and after, in seconds.
    let metrics = http::get(&format!("http://{}/metrics", c.admin), T)
        .unwrap()
        .text();
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains("function=\"checkout\""))
            .unwrap_or_else(|| panic!("no {prefix} for checkout"))
            .to_owned()
    };
    let flag = line("lambdawatch_timeout_cascade{");
    assert!(
        flag.contains("downstream=\"orders-db\"") && flag.ends_with(" 1"),
        "{flag}"
    );
    let recent = metrics
        .lines()
        .find(|l| {
            l.starts_with("lambdawatch_timeout_cascade_downstream_p99_seconds{")
                && l.contains("function=\"checkout\"")
                && l.contains("downstream=\"orders-db\"")
                && l.contains("period=\"recent\"")
        })
        .unwrap();
    let v: f64 = recent.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.904..=0.904 * 1.0905).contains(&v), "{recent}");
    let page = http::get(&format!("http://{}/", c.admin), T)
        .unwrap()
        .text();
    assert!(page.contains("orders-db: P99"), "{page}");
}
