//! End to end: the real `lambdawatch-sandbox` binary runs the rust sample function with this
//! extension in its `extensions_dir`; a capturing OTLP endpoint decodes what the extension sends.
//!
//! Needs `cargo build -p lambdawatch-sandbox -p lambdawatch-sample-function` (the test panics with
//! that hint when a binary is missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Behaviour, Capture, TestPki};
use http_body_util::Full;
use lambdawatch_extension::http::HttpClient;
use lambdawatch_extension::lifecycle::BEFORE_NEXT_BUDGET;
use lambdawatch_semconv::otlp::{get_bool, get_f64, get_i64, get_str};
use lambdawatch_semconv::{attr, metric, span_type, xray};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const EXTENSION: &str = env!("CARGO_BIN_EXE_lambdawatch-extension");

fn target_bin(name: &str) -> PathBuf {
    let ext = Path::new(EXTENSION);
    let p = ext.parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p lambdawatch-sandbox -p lambdawatch-sample-function` first",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sandbox {
    child: Child,
    dir: PathBuf,
    invoke: String,
    client: HttpClient,
    rt: tokio::runtime::Runtime,
}

#[derive(Default)]
struct Setup<'a> {
    extension: bool,
    probe: bool,
    env: Vec<(&'a str, String)>,
    /// `account_id` in the function config (the sandbox's default otherwise).
    account: Option<&'a str>,
}

impl<'a> Setup<'a> {
    /// The extension exporting to `endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`), with the probe
    /// extension beside it (it records what the Telemetry API delivers, reports included).
    fn extension(endpoint: impl Into<String>) -> Setup<'a> {
        Setup {
            extension: true,
            probe: true,
            env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.into())],
            account: None,
        }
    }

    /// No extension of ours; the probe extension only.
    fn probe_only() -> Setup<'a> {
        Setup {
            probe: true,
            ..Setup::default()
        }
    }

    fn env(mut self, key: &'a str, value: impl Into<String>) -> Setup<'a> {
        self.env.push((key, value.into()));
        self
    }

    fn account(mut self, account: &'a str) -> Setup<'a> {
        self.account = Some(account);
        self
    }

    fn without_probe(mut self) -> Setup<'a> {
        self.probe = false;
        self
    }
}

impl Sandbox {
    fn start(name: &str, s: Setup<'_>) -> Sandbox {
        let sandbox = target_bin("lambdawatch-sandbox");
        let function = target_bin("sample-function");
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lw-e2e-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let ext_dir = dir.join("extensions");
        std::fs::create_dir_all(&ext_dir).unwrap();
        if s.extension {
            std::os::unix::fs::symlink(EXTENSION, ext_dir.join("lambdawatch-extension")).unwrap();
        }
        let env = s.env;
        if s.probe {
            // One output file per environment (each runs its own probe): `$$` is unique.
            use std::os::unix::fs::PermissionsExt;
            let p = ext_dir.join("probe");
            std::fs::write(
                &p,
                format!(
                    "#!/bin/bash\nexport PROBE_OUT=\"{}/probe-$$.jsonl\"\nexec -a probe {}\n",
                    dir.display(),
                    target_bin("lambdawatch-probe-extension").display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let account = s
            .account
            .map(|a| format!("account_id: '{a}'\n"))
            .unwrap_or_default();
        let mut yaml = format!(
            "name: checkout\n{account}memory_mb: 256\ntimeout_ms: 2000\nhandler: ['{}']\nextensions_dir: '{}'\nenvironment:\n",
            function.display(),
            ext_dir.display()
        );
        yaml.push_str("  LW_TEST: '1'\n");
        for (k, v) in &env {
            yaml.push_str(&format!("  {k}: '{v}'\n"));
        }
        let f = dir.join("function.yaml");
        std::fs::write(&f, yaml).unwrap();
        let port = free_port();
        let mut child = Command::new(sandbox)
            .args(["run", "--function"])
            .arg(&f)
            .args(["--invoke-addr", &format!("127.0.0.1:{port}"), "--report"])
            .arg(dir.join("report.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("sandbox.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        // Wait for "invoke api listening on …".
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("sandbox did not start; see {}", dir.display()));
        assert!(line.contains("listening"), "{line}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Sandbox {
            child,
            dir,
            invoke: format!("http://127.0.0.1:{port}/2015-03-31/functions/checkout/invocations"),
            client: HttpClient::new(),
            rt,
        }
    }

    /// Invokes synchronously; returns (request id, client-observed latency, body).
    fn invoke(&self, payload: &str) -> (String, Duration, Value) {
        let req = http::Request::builder()
            .method("POST")
            .uri(&self.invoke)
            .body(Full::new(Bytes::from(payload.to_owned())))
            .unwrap();
        let t = Instant::now();
        let resp = self
            .rt
            .block_on(self.client.send(req, Some(Duration::from_secs(30))))
            .unwrap();
        let took = t.elapsed();
        let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let rid = resp
            .headers
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no request id: {} {body}", resp.status));
        (rid, took, body)
    }

    /// SIGTERM, then wait for exit; returns the run report.
    fn stop(mut self) -> (Value, PathBuf) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(_st) = self.child.try_wait().unwrap() {
                break;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("sandbox did not stop in 30 s; see {}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let report: Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("report.json")).unwrap()).unwrap();
        (report, self.dir.clone())
    }
}

/// A test that panics before `stop` must not leave a sandbox (and its extensions) running to
/// load the machine for the next test: SIGTERM, a bounded wait, then SIGKILL.
impl Drop for Sandbox {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn invocation_spans(cap: &Capture) -> Vec<Span> {
    cap.spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| {
            get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INVOCATION)
        })
        .collect()
}

fn sum_of(
    metrics: &[Metric],
    name: &str,
    filter: impl Fn(&[opentelemetry_proto::tonic::common::v1::KeyValue]) -> bool,
) -> i64 {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .filter(|p| filter(&p.attributes))
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(i)) => i,
                    _ => 0,
                })
                .collect::<Vec<_>>(),
            _ => vec![],
        })
        .sum()
}

/// The last value of a cumulative self counter.
fn last_cumulative(metrics: &[Metric], name: &str, reason: Option<&str>) -> i64 {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.first().cloned(),
            _ => None,
        })
        .filter(|p| {
            reason.is_none_or(|r| get_str(&p.attributes, attr::LAMBDAWATCH_REASON) == Some(r))
        })
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The sum of every histogram point of `name` (each invocation or init writes one point with
/// count 1), sorted.
fn hist_sums(metrics: &[Metric], name: &str) -> Vec<f64> {
    let mut v: Vec<f64> = metrics
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(Data::Histogram(h)) => h
                .data_points
                .iter()
                .map(|p| {
                    assert_eq!(p.count, 1, "{name}: one point per event");
                    p.sum.unwrap()
                })
                .collect::<Vec<_>>(),
            _ => vec![],
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Element-wise within `tol` (absolute).
fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{what}: {got:?} vs {want:?}");
    }
}

/// One sandbox at a time: latency comparisons on a shared 2-core machine need quiet.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The function's account in the sandbox config; not the sandbox's default `123456789012`.
const ACCOUNT: &str = "210987654321";

#[test]
fn n_invocations_give_n_spans_metrics_and_logs_with_the_platform_values() {
    let _serial = serial();
    let cap = Capture::start(Behaviour::Accept);
    let sb = Sandbox::start("values", Setup::extension(cap.base()));
    let payloads = [
        r#"{"log_lines": 2}"#,
        r#"{"log_lines": 2, "log_json": true}"#,
        r#"{"fail": true}"#,
        r#"{"sleep_ms": 60}"#,
        r#"{}"#,
        r#"{"log_lines": 1}"#,
    ];
    let mut rids = Vec::new();
    for p in payloads {
        let (rid, _, _) = sb.invoke(p);
        rids.push(rid);
    }
    let (report, dir) = sb.stop();
    let n = payloads.len();
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| invocation_spans(c).len() >= n),
        "expected {n} invocation spans, got {}; logs in {}",
        invocation_spans(&cap).len(),
        dir.display()
    );
    let spans = invocation_spans(&cap);
    assert_eq!(spans.len(), n, "exactly one span per invocation");
    let records: HashMap<String, Value> = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["requestId"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    // The probe saw platform.start with the X-Ray header of each request.
    let mut xray_of: HashMap<String, String> = HashMap::new();
    for v in probe_lines(&dir) {
        for e in v["telemetry"].as_array().into_iter().flatten() {
            if e["type"] == "platform.start" {
                xray_of.insert(
                    e["record"]["requestId"].as_str().unwrap().to_owned(),
                    e["record"]["tracing"]["value"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    let mut span_of: HashMap<String, Span> = HashMap::new();
    for s in spans {
        let rid = get_str(&s.attributes, attr::FAAS_INVOCATION_ID)
            .unwrap()
            .to_owned();
        span_of.insert(rid, s);
    }
    for (i, rid) in rids.iter().enumerate() {
        let s = span_of
            .get(rid)
            .unwrap_or_else(|| panic!("no span for {rid}"));
        let rec = &records[rid];
        let a = &s.attributes;
        assert_eq!(s.kind, 2);
        assert_eq!(s.name, "checkout");
        assert_eq!(
            get_str(a, attr::AWS_LAMBDA_OUTCOME),
            rec["status"].as_str(),
            "{rid}"
        );
        assert_eq!(
            get_bool(a, attr::FAAS_COLDSTART),
            rec["coldStart"].as_bool(),
            "{rid}"
        );
        let d = get_f64(a, attr::AWS_LAMBDA_DURATION_MS).unwrap();
        assert!(
            (d - rec["durationMs"].as_f64().unwrap()).abs() < 0.01,
            "{rid}: {d} vs {rec}"
        );
        assert_eq!(
            get_i64(a, attr::AWS_LAMBDA_BILLED_DURATION_MS),
            rec["billedDurationMs"].as_i64()
        );
        assert_eq!(
            get_i64(a, attr::AWS_LAMBDA_MAX_MEMORY_USED_MB),
            rec["maxMemoryUsedMb"].as_i64()
        );
        assert_eq!(get_i64(a, attr::AWS_LAMBDA_MEMORY_SIZE_MB), Some(256));
        let timeout = get_i64(a, attr::AWS_LAMBDA_TIMEOUT_MS).unwrap();
        assert!((1900..=2000).contains(&timeout), "timeout budget {timeout}");
        assert_eq!(
            get_f64(a, attr::AWS_LAMBDA_INIT_DURATION_MS).is_some(),
            rec["coldStart"] == true,
            "{rid}: init duration only on cold starts"
        );
        if let Some(init) = get_f64(a, attr::AWS_LAMBDA_INIT_DURATION_MS) {
            let want = rec["initDurationMs"].as_f64().unwrap();
            assert!((init - want).abs() < 0.01, "{rid}: init {init} vs {want}");
        }
        let _ = i;
        if rec["status"] == "error" {
            assert_eq!(s.status.as_ref().unwrap().code, 2);
        }
        // Trace joined with the function's X-Ray context.
        let h = xray_of
            .get(rid)
            .unwrap_or_else(|| panic!("probe saw no start for {rid}"));
        let ctx = xray::parse_header(h).unwrap();
        assert_eq!(s.trace_id, ctx.trace_id.to_vec(), "{rid}");
        assert_eq!(s.parent_span_id, ctx.parent_id.unwrap().to_vec());
        assert_eq!(
            s.end_time_unix_nano - s.start_time_unix_nano,
            (d * 1e6) as u64,
            "span length is the reported duration"
        );
    }
    let metrics = cap.metrics();
    assert_eq!(
        sum_of(&metrics, metric::FAAS_INVOCATIONS, |_| true),
        n as i64
    );
    assert_eq!(sum_of(&metrics, metric::FAAS_ERRORS, |_| true), 1);
    assert_eq!(
        sum_of(&metrics, metric::FAAS_COLDSTARTS, |_| true),
        report["cold_starts"].as_i64().unwrap()
    );
    // Back-to-back invocations while an environment is still in its post-runtime phase make the
    // sandbox (like Lambda) start another one: count them from the sandbox's own records.
    let cold_records = records.values().filter(|r| r["coldStart"] == true).count() as i64;
    assert_eq!(report["cold_starts"].as_i64(), Some(cold_records));
    assert_eq!(
        sum_of(&metrics, metric::FAAS_COLDSTARTS, |a| get_str(
            a,
            attr::AWS_LAMBDA_INIT_TYPE
        ) == Some(
            "on-demand"
        )),
        cold_records
    );
    let hist_count: u64 = metrics
        .iter()
        .filter(|m| m.name == metric::FAAS_INVOKE_DURATION)
        .map(|m| match &m.data {
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).sum(),
            _ => 0,
        })
        .sum();
    assert_eq!(hist_count, n as u64);
    // The report's values as metrics (one histogram point per invocation / init; points carry
    // no request id, so the sorted values are compared with the sandbox's records).
    let from_records = |key: &str, scale: f64| -> Vec<f64> {
        let mut v: Vec<f64> = records
            .values()
            .filter_map(|r| r[key].as_f64())
            .map(|x| x * scale)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    assert_close(
        &hist_sums(&metrics, metric::AWS_LAMBDA_BILLED_DURATION),
        &from_records("billedDurationMs", 1e-3),
        1e-9,
        "billed duration (s)",
    );
    assert_close(
        &hist_sums(&metrics, metric::FAAS_MEM_USAGE),
        &from_records("maxMemoryUsedMb", 1_048_576.0),
        0.0,
        "max memory used (bytes)",
    );
    assert_close(
        &hist_sums(&metrics, metric::FAAS_INIT_DURATION),
        &from_records("initDurationMs", 1e-3),
        // The platform event carries milliseconds to two decimals; the record is unrounded.
        0.005e-3 + 1e-12,
        "init duration (s)",
    );
    assert_eq!(
        hist_sums(&metrics, metric::FAAS_INIT_DURATION).len() as i64,
        cold_records
    );
    let init_spans = cap
        .spans()
        .into_iter()
        .filter(|(_, s)| {
            get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INIT)
        })
        .count();
    assert_eq!(
        init_spans as i64, cold_records,
        "one init span per initialisation"
    );
    // Resource.
    let (res, _) = &cap.spans()[0];
    assert_eq!(get_str(&res.attributes, attr::FAAS_NAME), Some("checkout"));
    assert_eq!(
        get_i64(&res.attributes, attr::FAAS_MAX_MEMORY),
        Some(256 * 1_048_576)
    );
    assert_eq!(
        get_str(&res.attributes, attr::CLOUD_PLATFORM),
        Some("aws_lambda")
    );

    // Logs: plain lines, JSON lines, the error line, each on its invocation and trace.
    let logs = cap.logs();
    let body = |l: &opentelemetry_proto::tonic::logs::v1::LogRecord| match l
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
    {
        Some(AV::StringValue(s)) => s.clone(),
        _ => String::new(),
    };
    let on = |rid: &str| -> Vec<_> {
        logs.iter()
            .filter(|l| get_str(&l.attributes, attr::FAAS_INVOCATION_ID) == Some(rid))
            .collect()
    };
    let plain = on(&rids[0]);
    let plain_lines: Vec<_> = plain
        .iter()
        .filter(|l| body(l).contains("log line"))
        .collect();
    assert_eq!(
        plain_lines.len(),
        2,
        "{:?}",
        plain.iter().map(|l| body(l)).collect::<Vec<_>>()
    );
    assert_eq!(body(plain_lines[0]), "[INFO] log line 0 of 2");
    assert_eq!(plain_lines[0].severity_number, 9);
    assert_eq!(plain_lines[0].trace_id, span_of[&rids[0]].trace_id);
    assert_eq!(plain_lines[0].span_id, span_of[&rids[0]].span_id);
    let json = on(&rids[1]);
    let json_lines: Vec<_> = json
        .iter()
        .filter(|l| body(l).starts_with("log line"))
        .collect();
    assert_eq!(json_lines.len(), 2);
    assert_eq!(body(json_lines[1]), "log line 1 of 2");
    assert_eq!(json_lines[1].severity_text, "INFO");
    assert_eq!(json_lines[1].trace_id, span_of[&rids[1]].trace_id);
    let err = on(&rids[2]);
    let e = err
        .iter()
        .find(|l| body(l).contains("failing on purpose"))
        .expect("error line");
    assert_eq!(e.severity_number, 17);
    // Nothing dropped on a healthy path.
    assert_eq!(last_cumulative(&metrics, metric::EXT_DROPPED, None), 0);
}

/// A function that sleeps past its 2 s timeout in the real sandbox: the sandbox answers
/// `Sandbox.Timedout`, resets the environment (SHUTDOWN reason `timeout`) and re-initialises on
/// the next invoke. At the collector: the invocation span has outcome `timeout`, status ERROR
/// with the error type, the timeout budget and the report's duration, billed duration and
/// memory; `faas.timeouts` counts it once and `faas.errors` not at all; the invocation after it
/// is a normal span. The function's account (a non-default `account_id` in the sandbox config)
/// is `cloud.account.id` on every exported resource: traces, metrics and logs.
#[test]
fn timed_out_invocation_exports_a_timeout_span_and_the_report_metrics() {
    let _serial = serial();
    let cap = Capture::start(Behaviour::Accept);
    let sb = Sandbox::start(
        "timeout",
        Setup::extension(cap.base())
            .account(ACCOUNT)
            .without_probe(),
    );
    let (warm, _, _) = sb.invoke(r#"{"log_lines": 1}"#);
    let (slow, took, body) = sb.invoke(r#"{"sleep_ms": 3000}"#);
    assert_eq!(body["errorType"], "Sandbox.Timedout", "{body}");
    assert!(
        took < Duration::from_millis(2900),
        "answered at the timeout: {took:?}"
    );
    let (after, _, _) = sb.invoke("{}");
    let (report, dir) = sb.stop();
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| invocation_spans(c).len() >= 3),
        "expected 3 invocation spans, got {}; logs in {}",
        invocation_spans(&cap).len(),
        dir.display()
    );
    let spans = invocation_spans(&cap);
    assert_eq!(spans.len(), 3, "one span per invocation");
    let records: HashMap<String, Value> = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["requestId"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    let span = |rid: &str| {
        spans
            .iter()
            .find(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID) == Some(rid))
            .unwrap_or_else(|| panic!("no span for {rid}"))
    };
    let rec = &records[&slow];
    assert_eq!(rec["status"], "timeout", "{rec}");
    let s = span(&slow);
    let a = &s.attributes;
    assert_eq!(get_str(a, attr::AWS_LAMBDA_OUTCOME), Some("timeout"));
    assert_eq!(
        get_str(a, attr::AWS_LAMBDA_ERROR_TYPE),
        Some("Sandbox.Timedout")
    );
    let status = s.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "ERROR");
    assert_eq!(status.message, "Sandbox.Timedout");
    let timeout = get_i64(a, attr::AWS_LAMBDA_TIMEOUT_MS).unwrap();
    assert!((1900..=2000).contains(&timeout), "timeout budget {timeout}");
    let d = get_f64(a, attr::AWS_LAMBDA_DURATION_MS).unwrap();
    assert!(
        (d - rec["durationMs"].as_f64().unwrap()).abs() < 0.01,
        "{d} vs {rec}"
    );
    assert!(d >= 1900.0, "ran until the timeout: {d}");
    assert_eq!(
        get_i64(a, attr::AWS_LAMBDA_BILLED_DURATION_MS),
        rec["billedDurationMs"].as_i64()
    );
    assert_eq!(
        get_i64(a, attr::AWS_LAMBDA_MAX_MEMORY_USED_MB),
        rec["maxMemoryUsedMb"].as_i64()
    );
    for rid in [&warm, &after] {
        let s = span(rid);
        assert_eq!(
            get_str(&s.attributes, attr::AWS_LAMBDA_OUTCOME),
            records[rid]["status"].as_str(),
            "{rid}"
        );
        assert_ne!(s.status.as_ref().map_or(0, |st| st.code), 2, "{rid}");
    }
    let metrics = cap.metrics();
    assert_eq!(sum_of(&metrics, metric::FAAS_INVOCATIONS, |_| true), 3);
    assert_eq!(sum_of(&metrics, metric::FAAS_TIMEOUTS, |_| true), 1);
    assert_eq!(sum_of(&metrics, metric::FAAS_ERRORS, |_| true), 0);
    let billed = hist_sums(&metrics, metric::AWS_LAMBDA_BILLED_DURATION);
    assert_eq!(billed.len(), 3);
    assert!(
        billed
            .iter()
            .any(|b| (b * 1000.0 - rec["billedDurationMs"].as_f64().unwrap()).abs() < 1e-6),
        "the timed-out invocation's billed duration: {billed:?} vs {rec}"
    );
    let durations = hist_sums(&metrics, metric::FAAS_INVOKE_DURATION);
    assert_eq!(durations.len(), 3);
    assert!(
        durations.iter().any(|x| (x * 1000.0 - d).abs() < 0.01),
        "the timed-out invocation's duration: {durations:?} vs {d} ms"
    );
    let mem = hist_sums(&metrics, metric::FAAS_MEM_USAGE);
    assert_eq!(mem.len(), 3);
    assert_eq!(last_cumulative(&metrics, metric::EXT_DROPPED, None), 0);
    // The account (not the sandbox's default) reaches every exported resource.
    let resources = cap.resources();
    for signal in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        assert!(resources.iter().any(|(p, _)| p == signal), "{signal}");
    }
    for (path, r) in &resources {
        assert_eq!(
            get_str(&r.attributes, attr::CLOUD_ACCOUNT_ID),
            Some(ACCOUNT),
            "{path}"
        );
    }
}

/// Every `probe-*.jsonl` line the probe extension wrote under `dir`, parsed.
fn probe_lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("probe-")
        {
            for line in std::fs::read_to_string(p).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap_or(Value::Null));
            }
        }
    }
    out
}

/// Per invocation (by request id), how long `/next` was held after the runtime was done: the
/// `extensionOverhead` span of its `platform.report` (from `runtimeDone` until every extension
/// was back in `/event/next`), as the probe extension received it.
fn extension_overheads(dir: &Path) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for v in probe_lines(dir) {
        for e in v["telemetry"].as_array().into_iter().flatten() {
            if e["type"] != "platform.report" {
                continue;
            }
            let rid = e["record"]["requestId"].as_str().unwrap().to_owned();
            let ms = e["record"]["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == "extensionOverhead")
                .and_then(|s| s["durationMs"].as_f64())
                .unwrap_or_else(|| panic!("no extensionOverhead span: {e}"));
            out.insert(rid, ms);
        }
    }
    out
}

const WARMUP: usize = 6;

/// What the latency tests invoke: a handler busy for 20 ms, so an extension that goes back to
/// `/event/next` at once (never held) is back there before the runtime is done, and its
/// `extensionOverhead` is 0 however loaded the machine is, while any hold for a flush costs at
/// least the Telemetry API's buffering ([`TELEMETRY_BUFFERING`]) on top of the runtime.
const LATENCY_PAYLOAD: &str = r#"{"sleep_ms": 20}"#;

/// The extension subscribes with the minimum `timeoutMs` (25 ms): `platform.runtimeDone` comes
/// at the earliest that long after the runtime is done, so a hold for it costs at least that.
const TELEMETRY_BUFFERING: Duration = Duration::from_millis(25);

/// Scheduling on a loaded 2-core machine (several sandboxes' worth of processes per core).
const SCHEDULING_MARGIN: Duration = Duration::from_millis(150);

/// Sequential invocations' client-observed latency, after a warm-up.
fn latencies(sb: &Sandbox, n: usize) -> (Vec<String>, Vec<Duration>) {
    // Warm-up: enough invocations for the adaptive policy to see they are frequent.
    for _ in 0..WARMUP {
        sb.invoke(LATENCY_PAYLOAD);
    }
    let mut rids = Vec::new();
    let mut lat = Vec::new();
    for _ in 0..n {
        let (rid, took, body) = sb.invoke(LATENCY_PAYLOAD);
        assert_eq!(body["ok"], true, "{body}");
        rids.push(rid);
        lat.push(took);
    }
    (rids, lat)
}

fn baseline_median() -> Duration {
    let sb = Sandbox::start("baseline", Setup::probe_only());
    let (_, lat) = latencies(&sb, 20);
    sb.stop();
    median(lat)
}

/// The function's latency with a broken collector stays within a few ms of no extension at all.
fn assert_latency_unchanged(with: Duration, baseline: Duration, what: &str) {
    assert!(
        with <= baseline + Duration::from_millis(15),
        "{what}: median latency {with:?} vs {baseline:?} without the extension"
    );
}

/// Every invocation's `extensionOverhead` (warm-up and first invocations of every environment
/// included), sorted, in ms; asserts there is one per invocation.
fn overheads(dir: &Path, invocations: usize, what: &str) -> Vec<f64> {
    let mut v: Vec<f64> = extension_overheads(dir).into_values().collect();
    assert_eq!(
        v.len(),
        invocations,
        "{what}: one platform.report per invocation at the probe; see {}",
        dir.display()
    );
    v.sort_by(f64::total_cmp);
    v
}

/// The fail-open guarantee for a collector that never answered an export (refusing,
/// black-holed, untrusted certificate): `/next` is never held for a flush, in any environment,
/// first invocation included. With [`LATENCY_PAYLOAD`] an unheld invocation's overhead is 0;
/// one scheduling hiccup past the handler's 20 ms is tolerated, two invocations at or above the
/// Telemetry buffering (what any hold costs at least) are not, nor one at
/// `BEFORE_NEXT_BUDGET`.
fn assert_never_held(dir: &Path, invocations: usize, what: &str) {
    let v = overheads(dir, invocations, what);
    let held = v
        .iter()
        .filter(|ms| **ms >= TELEMETRY_BUFFERING.as_secs_f64() * 1e3)
        .count();
    assert!(
        held <= 1 && v[v.len() - 1] < BEFORE_NEXT_BUDGET.as_secs_f64() * 1e3,
        "{what}: /next held after the runtime was done (extensionOverhead ms, sorted): {v:?}; see {}",
        dir.display()
    );
}

/// The bound for a healthy collector: at most the wait for `platform.runtimeDone` plus the
/// flush budget, whatever the collector does.
fn assert_held_at_most_the_budget(dir: &Path, invocations: usize, what: &str) {
    let v = overheads(dir, invocations, what);
    let bound = TELEMETRY_BUFFERING + BEFORE_NEXT_BUDGET + SCHEDULING_MARGIN;
    assert!(
        v[v.len() - 1] <= bound.as_secs_f64() * 1e3,
        "{what}: /next held longer than {bound:?} (extensionOverhead ms, sorted): {v:?}; see {}",
        dir.display()
    );
}

/// Every environment's extension exited by itself at SHUTDOWN (none SIGKILLed at the deadline).
fn assert_no_extension_killed(report: &Value, what: &str) {
    for s in report["shutdowns"].as_array().unwrap() {
        assert!(
            s["killedExtensions"].as_array().unwrap().is_empty(),
            "{what}: {s}"
        );
    }
}

#[test]
fn collector_down_then_back_function_unharmed_and_outage_data_arrives() {
    let _serial = serial();
    let baseline = baseline_median();
    let port = free_port();
    let sb = Sandbox::start(
        "down",
        Setup::extension(format!("http://127.0.0.1:{port}"))
            // Retries end 200 ms after each export starts: the outage below outlasts them.
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "200"),
    );
    let (rids, lat) = latencies(&sb, 20);
    assert_latency_unchanged(median(lat), baseline, "collector down");
    // The outage lasts past every retry window, then the collector comes back: what failed went
    // back to the buffer (room to spare) and arrives with the later flushes, nothing dropped.
    std::thread::sleep(Duration::from_millis(500));
    let cap = Capture::start_on(port, Behaviour::Accept);
    let (rid, _, _) = sb.invoke("{}");
    let (report, dir) = sb.stop();
    // The outage's invocations (the last one ran with the collector back, whose health the
    // extension did not know yet).
    assert_never_held(&dir, WARMUP + 21, "collector down");
    assert_no_extension_killed(&report, "collector down");
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| !c.metrics().is_empty()),
        "nothing exported after the collector came back; see {}",
        dir.display()
    );
    let metrics = cap.metrics();
    let extension_logs = || {
        cap.logs()
            .iter()
            .filter(|l| get_str(&l.attributes, attr::AWS_LAMBDA_LOG_SOURCE) == Some("extension"))
            .map(|l| format!("{:?}", l.body))
            .collect::<Vec<_>>()
    };
    for why in ["export_failed", "buffer_full"] {
        assert_eq!(
            last_cumulative(&metrics, metric::EXT_DROPPED, Some(why)),
            0,
            "nothing may be dropped ({why}) with room in the buffer: {:?}",
            extension_logs()
        );
    }
    let exported: Vec<String> = invocation_spans(&cap)
        .iter()
        .filter_map(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID).map(str::to_owned))
        .collect();
    for r in rids.iter().chain(std::iter::once(&rid)) {
        assert!(
            exported.contains(r),
            "invocation {r} (during the outage or after) not exported; see {}",
            dir.display()
        );
    }
}

#[test]
fn collector_slow_function_unharmed_and_nothing_lost() {
    let _serial = serial();
    let baseline = baseline_median();
    let cap = Capture::start(Behaviour::HangFirst(2));
    let sb = Sandbox::start(
        "slow",
        Setup::extension(cap.base()).env("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
    );
    let (rids, lat) = latencies(&sb, 20);
    assert_latency_unchanged(median(lat), baseline, "collector slow");
    let (report, dir) = sb.stop();
    assert_held_at_most_the_budget(&dir, WARMUP + 20, "collector slow");
    assert_no_extension_killed(&report, "collector slow");
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| !c.metrics().is_empty()),
        "see {}",
        dir.display()
    );
    let metrics = cap.metrics();
    // The hung requests were cut at the timeout and their items sent again later.
    assert_eq!(
        last_cumulative(&metrics, metric::EXT_DROPPED, Some("export_failed")),
        0
    );
    let exported: Vec<String> = invocation_spans(&cap)
        .iter()
        .filter_map(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID).map(str::to_owned))
        .collect();
    for r in &rids {
        assert!(exported.contains(r), "invocation {r} not exported");
    }
}

/// A black-holed collector (accepts the connection and the request, never answers): no
/// environment ever holds `/next` for it (not even its first invocation, when the extension
/// cannot know yet), so no cascade of cold starts; the client-observed latency is that of no
/// extension; every extension still exits by itself at SHUTDOWN.
#[test]
fn collector_black_holed_never_holds_next_in_any_environment() {
    let _serial = serial();
    let baseline = baseline_median();
    let cap = Capture::start(Behaviour::Hang);
    let sb = Sandbox::start("blackhole", Setup::extension(cap.base()));
    let (_, lat) = latencies(&sb, 20);
    assert_latency_unchanged(median(lat), baseline, "collector black-holed");
    let (report, dir) = sb.stop();
    assert_never_held(&dir, WARMUP + 20, "collector black-holed");
    assert_no_extension_killed(&report, "collector black-holed");
    assert!(cap.requests().is_empty(), "nothing was ever answered");
}

/// Every setting garbage except good per-signal endpoints: each bad value falls back to its
/// default, every invocation arrives, no environment holds `/next` past the flush bound.
#[test]
fn garbage_config_function_unharmed_data_still_flows() {
    let _serial = serial();
    let cap = Capture::start(Behaviour::Accept);
    let sb = Sandbox::start(
        "garbage",
        Setup::extension("::not a url::")
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{}/v1/traces", cap.base()),
            )
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("{}/v1/metrics", cap.base()),
            )
            .env(
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("{}/v1/logs", cap.base()),
            )
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
            .env("OTEL_EXPORTER_OTLP_HEADERS", "novalue,=x")
            .env("LAMBDAWATCH_FLUSH", "sometimes")
            .env("LAMBDAWATCH_CAPTURE_LOGS", "maybe")
            .env("LAMBDAWATCH_REDACT", "(unclosed")
            .env("LAMBDAWATCH_BUFFER_MAX_ITEMS", "-1")
            .env("LAMBDAWATCH_BUFFER_MAX_BYTES", "lots")
            .env("LAMBDAWATCH_TELEMETRY_LISTENER", "nowhere"),
    );
    let (rids, _) = latencies(&sb, 20);
    let (report, dir) = sb.stop();
    // The per-signal endpoints are good: a healthy collector, so each environment's first few
    // invocations (too few yet for the adaptive policy to call them frequent) are flushed
    // before `/next`, each within the bound. The client-observed median is not compared with
    // no extension here: those holds make the sandbox start more environments during a
    // back-to-back burst, which is the price of flushing before a possible freeze, not a
    // failure to fail open (the broken-collector tests compare it).
    assert_held_at_most_the_budget(&dir, WARMUP + 20, "garbage config");
    assert_no_extension_killed(&report, "garbage config");
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| invocation_spans(c).len()
            >= WARMUP + 20)
    );
    let spans = invocation_spans(&cap);
    assert_eq!(spans.len(), WARMUP + 20, "warm-up + 20");
    assert!(rids.iter().all(|r| {
        spans
            .iter()
            .any(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID) == Some(r.as_str()))
    }));
}

/// The real binary exporting over TLS: with the collector's CA named by
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` every invocation arrives; without it (an untrusted
/// certificate) nothing is sent, handshakes are refused, and the function's latency is that of
/// no extension at all.
#[test]
fn https_collector_trusted_via_ca_file_and_untrusted_fails_open() {
    let _serial = serial();
    let baseline = baseline_median();
    let pki = TestPki::new();
    let ca = pki.ca_file();

    let cap = Capture::start_tls(Behaviour::Accept, &pki);
    let sb = Sandbox::start(
        "tls",
        Setup::extension(cap.base())
            .env(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                ca.path().display().to_string(),
            )
            .without_probe(),
    );
    let (rids, _) = latencies(&sb, 5);
    let (_, dir) = sb.stop();
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| invocation_spans(c).len()
            >= WARMUP + 5),
        "over TLS: {} invocation spans; TLS failures {:?}; see {}",
        invocation_spans(&cap).len(),
        cap.tls_failures(),
        dir.display()
    );
    let spans = invocation_spans(&cap);
    assert!(rids.iter().all(|r| {
        spans
            .iter()
            .any(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID) == Some(r.as_str()))
    }));
    assert!(cap.tls_failures().is_empty(), "{:?}", cap.tls_failures());

    let untrusted = Capture::start_tls(Behaviour::Accept, &pki);
    let sb = Sandbox::start("tls-untrusted", Setup::extension(untrusted.base()));
    let (_, lat) = latencies(&sb, 20);
    assert_latency_unchanged(median(lat), baseline, "untrusted TLS certificate");
    let (report, dir) = sb.stop();
    assert_never_held(&dir, WARMUP + 20, "untrusted TLS certificate");
    assert_no_extension_killed(&report, "untrusted TLS certificate");
    assert!(untrusted.requests().is_empty());
    assert!(
        !untrusted.tls_failures().is_empty(),
        "the extension tried and was refused"
    );
}
