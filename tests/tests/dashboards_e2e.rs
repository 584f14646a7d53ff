//! Issue 6, end to end: every PromQL target of every dashboard returns data from a real Prometheus
//! that scraped the collector while real traffic went through the whole pipeline.
//!
//! The run: `lambdawatch-collector serve` on ephemeral loopback ports (1 s evaluation, 2 s `for`,
//! the function's SQS DLQ mapped to it, a webhook sink pointing at a capture server in this test);
//! a real Prometheus (Debian package) scraping the collector's `/metrics` every second;
//! `lambdawatch-sandbox run` with `lambdawatch-extension` in the function's extensions directory,
//! the rust `sample-function` as the handler and `--cloudwatch-endpoint` at the collector, so the
//! platform counts (throttles, async events, DLQ sends) arrive as CloudWatch Metric Streams would
//! send them. The seeded workload gives the function cold starts, errors, one timeout, throttles
//! past its reserved concurrency, async events that fail, retry and are dead-lettered (into a DLQ
//! small enough to overflow: DeadLetterErrors), and a log flood that overflows the extension's
//! deliberately small export buffer (extension drops). One malformed OTLP request gives the ingest
//! rejection panels a non-zero series.
//!
//! Then, after Prometheus has scraped the final state at least twice, every dashboard target (with
//! `$function` set to the driven function, `$__rate_interval` → `1m`) goes through
//! `dashboards::queries_without_data`. Queries that legitimately have no data in this scenario are
//! listed in [`EXPECTED_WITHOUT_DATA`] with the reason; the test asserts that exact set (now empty),
//! so it fails both when another query loses its data and when one of those starts returning data
//! (the list must then shrink). The collector's `/metrics` also passes `promtool check metrics`,
//! whose output must be exactly the lint listed in [`EXPECTED_PROMTOOL_LINT`] (never a parse
//! error).
//!
//! Cost: the list-price counter Prometheus scraped (`lambdawatch_cost_usd_total`) must equal what
//! the price table says for the requests and billed GB-seconds the collector counted through its
//! own, separate series (`lambdawatch_invocations_total`, `lambdawatch_billed_gigabyte_seconds_total`),
//! and `/api/v1/cost` must report the same function with the architecture the extension sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambdawatch_tests::dashboards::{self, Query};
use lambdawatch_tests::{Child, free_port, http, peers, wait_until, workspace_bin};
use serde_json::Value;

/// The function the scenario drives; `$function` in every dashboard.
const FUNCTION: &str = "dash-e2e";
const VERSION: &str = "3";
/// The function's SQS dead-letter queue (`dlq: true` in the sandbox names it `<function>-dlq`).
const DLQ_QUEUE: &str = "dash-e2e-dlq";

/// Dashboard targets (dashboard file stem, panel title, refId) that return no data in this
/// scenario, each with the reason. The test asserts exactly this set: every target has data.
const EXPECTED_WITHOUT_DATA: &[(&str, &str, &str, &str)] = &[];

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
    log_lines: 1500
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
  LAMBDAWATCH_BUFFER_MAX_ITEMS: "300"
"#
    )
}

/// A webhook receiver answering 200 to every request; counts the requests.
fn capture_server() -> (String, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if l.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, count)
}

/// `GET /api/v1/query`; the `data.result` array when Prometheus answered `success`.
fn prom_query(base: &str, expr: &str) -> Option<Vec<Value>> {
    let url = format!("{base}/api/v1/query?query={}", dashboards::url_encode(expr));
    let r = http::get(&url, Duration::from_secs(5)).ok()?;
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    v.pointer("/data/result").and_then(Value::as_array).cloned()
}

/// The first sample value of an instant-vector query.
fn prom_value(base: &str, expr: &str) -> Option<f64> {
    prom_query(base, expr)?
        .first()?
        .pointer("/value/1")?
        .as_str()?
        .parse()
        .ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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

#[test]
fn every_dashboard_query_returns_data_after_an_end_to_end_run() {
    let started = Instant::now();
    let prometheus_bin = peers::bin("prometheus");
    peers::bin("promtool");
    let collector_bin = workspace_bin("lambdawatch-collector");
    let sandbox_bin = workspace_bin("lambdawatch-sandbox");
    let extension_bin = workspace_bin("lambdawatch-extension");
    let function_bin = workspace_bin("sample-function");
    let queries = dashboards::all_promql_queries(FUNCTION);
    assert!(
        queries.len() > 40,
        "only {} dashboard queries",
        queries.len()
    );

    // The collector, alerts going to the capture server.
    let (hook, deliveries) = capture_server();
    let mut cmd = Command::new(&collector_bin);
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "2s")
        .env("LAMBDAWATCH_DLQ_QUEUES", format!("{DLQ_QUEUE}={FUNCTION}"))
        .env("LAMBDAWATCH_WEBHOOK_URL", format!("http://{hook}/hook"));
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

    // Prometheus scraping the collector every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lambdawatch\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prometheus = Child::spawn(
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn"),
    );
    let base = format!("http://127.0.0.1:{prom_port}");
    wait_until("prometheus ready", Duration::from_secs(30), || {
        http::get(&format!("{base}/-/ready"), Duration::from_secs(2))
            .ok()
            .filter(|r| r.status == 200)
    });

    // The function: our extension in /opt/extensions, the rust sample function as the handler.
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

    // One malformed OTLP request: the ingest rejection panels get a non-zero series.
    let bad = http::request(
        "POST",
        &format!("http://{otlp_http}/v1/traces"),
        &[("content-type", "application/x-protobuf")],
        b"\xff\xff\xff\xff not protobuf",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(bad.status, 400, "malformed OTLP: {}", bad.text());

    // The alerts the incident causes reach the webhook.
    wait_until(
        "an alert delivered to the webhook",
        Duration::from_secs(30),
        || (deliveries.load(Ordering::SeqCst) > 0).then_some(()),
    );

    // Prometheus scrapes the final state at least twice (rate() over 1m then has the last
    // increments), with the scrape healthy.
    let settled = unix_now();
    wait_until(
        "two Prometheus scrapes after the traffic ended",
        Duration::from_secs(30),
        || {
            let last = prom_value(&base, "timestamp(up{job=\"lambdawatch\"} == 1)")?;
            (last >= settled + 2.0).then_some(())
        },
    );
    let delivered = prom_value(
        &base,
        "sum(lambdawatch_alert_deliveries_total{sink=\"webhook\", result=\"success\"})",
    );
    assert!(
        delivered.is_some_and(|d| d >= 1.0),
        "Prometheus has {delivered:?} successful webhook deliveries, the webhook got {}",
        deliveries.load(Ordering::SeqCst)
    );

    // The $function variable offers the function.
    let functions = http::get(
        &format!("{base}/api/v1/label/function/values?match[]=lambdawatch_invocations_total"),
        Duration::from_secs(5),
    )
    .unwrap()
    .json();
    assert!(
        functions["data"]
            .as_array()
            .is_some_and(|f| f.iter().any(|v| v == FUNCTION)),
        "label_values(lambdawatch_invocations_total, function) lacks {FUNCTION}: {functions}"
    );

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
    let sel = format!("{{function=\"{FUNCTION}\", version=\"{VERSION}\"}}");
    let requests = prom_value(&base, &format!("sum(lambdawatch_invocations_total{sel})")).unwrap();
    let gbs = prom_value(
        &base,
        &format!("sum(lambdawatch_billed_gigabyte_seconds_total{sel})"),
    )
    .unwrap();
    let cost = prom_value(&base, &format!("sum(lambdawatch_cost_usd_total{sel})")).unwrap();
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
    let observed = prom_value(
        &base,
        &format!("max(lambdawatch_memory_observed_max_used_bytes{sel})"),
    )
    .expect("lambdawatch_memory_observed_max_used_bytes scraped")
        / MIB;
    assert!(
        observed > 0.0 && observed <= 256.0,
        "observed max {observed} MB"
    );
    // The advisor's per-size maximum and the aggregator's last-hour maximum come from the same
    // reports through separate state: in a run shorter than an hour they agree.
    let last_hour = prom_value(
        &base,
        &format!("max(lambdawatch_max_memory_used_bytes{sel})"),
    )
    .unwrap()
        / MIB;
    assert_eq!(
        observed, last_hour,
        "advisor's max used vs lambdawatch_max_memory_used_bytes"
    );
    let floor =
        prom_value(&base, &format!("max(lambdawatch_memory_floor_bytes{sel})")).unwrap() / MIB;
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
        let rec = prom_value(
            &base,
            &format!(
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
    let ratio = prom_value(
        &base,
        &format!("max(lambdawatch_timeout_budget_ratio{sel})"),
    )
    .expect("lambdawatch_timeout_budget_ratio scraped");
    assert!(
        ratio > 0.0 && ratio.is_finite(),
        "timeout budget ratio {ratio}"
    );
    assert_eq!(row["advice"]["cascade"]["status"], "unknown", "{row}");

    // Every dashboard target; for one without data, the metrics it selects that the collector's
    // /metrics does not have.
    let metrics = http::get(&format!("http://{admin}/metrics"), Duration::from_secs(5))
        .unwrap()
        .text();
    for l in metrics.lines().filter(|l| {
        l.starts_with("lambdawatch_extension_") || l.starts_with("lambdawatch_invocations_total")
    }) {
        eprintln!("/metrics: {l}");
    }
    let exposed = exposed_series_names(&metrics);
    let mut without_data: Vec<(&Query, String)> = Vec::new();
    for q in &queries {
        if let Some(problem) = dashboards::queries_without_data(&base, std::slice::from_ref(q))
            .into_iter()
            .next()
        {
            let missing: Vec<String> = dashboards::selectors(&q.expr)
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.metric)
                .filter(|m| !exposed.contains(m))
                .collect();
            without_data.push((
                q,
                format!("{problem}\n    not in the collector's /metrics: {missing:?}"),
            ));
        }
    }
    let got: BTreeSet<(String, String, String)> = without_data
        .iter()
        .map(|(q, _)| (q.dashboard.clone(), q.panel_title.clone(), q.ref_id.clone()))
        .collect();
    let expected: BTreeSet<(String, String, String)> = EXPECTED_WITHOUT_DATA
        .iter()
        .map(|(d, p, r, _)| ((*d).to_owned(), (*p).to_owned(), (*r).to_owned()))
        .collect();
    let mut failures = Vec::new();
    if got != expected {
        let lines: Vec<&str> = without_data.iter().map(|(_, m)| m.as_str()).collect();
        let now_with_data: Vec<_> = EXPECTED_WITHOUT_DATA
            .iter()
            .filter(|(d, p, r, _)| {
                !got.contains(&((*d).to_owned(), (*p).to_owned(), (*r).to_owned()))
            })
            .collect();
        failures.push(format!(
            "the dashboard targets without data differ from the expected set.\n  unexpected: {:?}\n  \
             expected without data (reason) but now with data: {:?}\n{} of {} queries without data:\n{}",
            got.difference(&expected).collect::<Vec<_>>(),
            now_with_data,
            got.len(),
            queries.len(),
            lines.join("\n")
        ));
    }

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
        "{} dashboard queries checked ({} expected without data) in {:?}",
        queries.len(),
        expected.len(),
        started.elapsed()
    );
    drop(collector);
}
