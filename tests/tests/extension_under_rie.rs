//! lambdawatch-extension under the AWS RIE, in classic and Managed Instances mode, beside the
//! Python Powertools sample, checked against what the RIE run actually did.
//!
//! The extension exports to a capturing OTLP/HTTP endpoint (a small HTTP/1.1 server in this file)
//! and the test compares what arrived with the run: the request ids the function answered with,
//! the one failed invocation, the X-Ray header sent with the first invoke, the log lines the
//! function printed (plain `print` and Powertools JSON), and the RIE's own log lines about
//! registration.
//!
//! - Classic: the RIE answers the Telemetry API with 202 `Telemetry.NotSupported`; the extension
//!   registers for INVOKE+SHUTDOWN and emits one (incomplete) invocation span and one
//!   `faas.invocations` point per INVOKE, with the INVOKE's trace context; no logs exist.
//! - Managed Instances: SHUTDOWN-only registration, real Telemetry events: complete invocation
//!   spans with their outcome, an init span of type `lambda-managed-instances`, and every log
//!   line of every invocation joined to its invocation.
//!
//! A third run points the extension at a closed port: it fails open (every invoke answers, no
//! crash, exits on SHUTDOWN).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambdawatch_semconv::otlp::{get_bool, get_i64, get_str};
use lambdawatch_semconv::{attr, init_type, metric, outcome, span_type};
use lambdawatch_tests::lambda_env::{Mode, Proc, Rie, Setup, WorkDir};
use lambdawatch_tests::{free_port, workspace_bin};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// `(path, decompressed body)` of every request, in arrival order.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A capturing OTLP/HTTP endpoint: HTTP/1.1 with keep-alive, `Content-Length` bodies, gzip;
/// answers 200 with an empty body and keeps `(path, decompressed body)`.
#[derive(Clone)]
struct Capture {
    port: u16,
    requests: Requests,
}

impl Capture {
    fn start() -> Capture {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests: Requests = Arc::default();
        let r = requests.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || serve(s, &r));
            }
        });
        Capture { port, requests }
    }

    fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn spans(&self) -> Vec<(Resource, Span)> {
        let mut out = Vec::new();
        for b in self.bodies("/v1/traces") {
            for rs in ExportTraceServiceRequest::decode(b.as_slice())
                .unwrap()
                .resource_spans
            {
                let res = rs.resource.unwrap_or_default();
                for ss in rs.scope_spans {
                    out.extend(ss.spans.into_iter().map(|s| (res.clone(), s)));
                }
            }
        }
        out
    }

    fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for b in self.bodies("/v1/metrics") {
            for rm in ExportMetricsServiceRequest::decode(b.as_slice())
                .unwrap()
                .resource_metrics
            {
                for sm in rm.scope_metrics {
                    out.extend(sm.metrics);
                }
            }
        }
        out
    }

    fn logs(&self) -> Vec<LogRecord> {
        let mut out = Vec::new();
        for b in self.bodies("/v1/logs") {
            for rl in ExportLogsServiceRequest::decode(b.as_slice())
                .unwrap()
                .resource_logs
            {
                for sl in rl.scope_logs {
                    out.extend(sl.log_records);
                }
            }
        }
        out
    }
}

fn serve(s: TcpStream, out: &Mutex<Vec<(String, Vec<u8>)>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut len, mut gzip) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "content-encoding" => gzip = v.trim() == "gzip",
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        if gzip {
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut d)
                .unwrap();
            body = d;
        }
        out.lock().unwrap().push((path, body));
        if w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .is_err()
        {
            return;
        }
    }
}

fn body_of(l: &LogRecord) -> String {
    match l.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(AV::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn int_sum(metrics: &[Metric], name: &str, label: Option<(&str, &str)>) -> i64 {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| label.is_none_or(|(k, v)| get_str(&p.attributes, k) == Some(v)))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => 0,
        })
        .sum()
}

/// What the RIE run did: the request ids of the successful invokes (in order), and the RIE's
/// output.
struct Run {
    ok_ids: Vec<String>,
    out: String,
}

/// Invoke 0 (with `TRACE`) … 2 succeed, logging two lines each (Powertools JSON on even
/// invokes, plain `print` on odd ones); invoke 3 fails with `SampleFailure`.
fn run_rie(mode: Mode, endpoint: &str) -> Run {
    let ext = workspace_bin("lambdawatch-extension");
    let setup = Setup::python_sample().extension(
        // The extension registers under its file name, as Lambda requires.
        "lambdawatch-extension",
        Proc::new(&[ext.to_string_lossy().as_ref()])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    );
    let mut rie = Rie::start(&setup, WorkDir::new(), mode);
    let mut ok_ids = Vec::new();
    for i in 0..3 {
        let headers: &[(&str, &str)] = if i == 0 {
            &[("X-Amzn-Trace-Id", TRACE)]
        } else {
            &[]
        };
        // The lines are printed first, then the handler sleeps: a plain line (no request id)
        // whose invocation's report reaches the extension first is placed by its time.
        let r = rie.invoke_with(
            &json!({"log_lines": 2, "log_json": i % 2 == 0, "sleep_ms": 40}),
            headers,
        );
        assert_eq!(r.status, 200, "{mode:?} invoke {i}: {}", r.text());
        assert_eq!(r.json()["ok"], true, "{mode:?} invoke {i}: {}", r.text());
        ok_ids.push(r.json()["requestId"].as_str().unwrap().to_owned());
    }
    let r = rie.invoke(&json!({"fail": true}));
    assert_eq!(
        r.json()["errorType"],
        "SampleFailure",
        "{mode:?}: {}",
        r.text()
    );
    rie.stop(Duration::from_secs(10));
    let out = rie.child.lines().join("\n");
    // The RIE's own log lines (aws-sam-cli pinned in scripts/test.sh) say what registered.
    let registered: &[&str] = match mode {
        Mode::Classic => &[
            "External agent lambdawatch-extension (",
            "registered, subscribed to [INVOKE SHUTDOWN]",
        ],
        Mode::ManagedInstances => &[
            "msg=\"External agent registered\" agentName=lambdawatch-extension",
            "msg=\"Telemetry subscription created\" agentName=lambdawatch-extension",
        ],
    };
    for want in registered {
        assert!(
            out.contains(want),
            "{mode:?}: no `{want}` in the RIE output:\n{out}"
        );
    }
    if mode == Mode::ManagedInstances {
        assert!(
            out.contains("events=[SHUTDOWN]"),
            "{mode:?}: must register for SHUTDOWN only:\n{out}"
        );
    }
    for bad in ["Extension.Crash", "ShutdownEventNotSupported", "panicked"] {
        assert!(
            !out.contains(bad),
            "{mode:?}: `{bad}` in the RIE output:\n{out}"
        );
    }
    Run { ok_ids, out }
}

/// Invocation spans by `faas.invocation_id`; panics on a duplicate.
fn invocations(cap: &Capture) -> BTreeMap<String, (Resource, Span)> {
    let mut m = BTreeMap::new();
    for (res, s) in cap.spans() {
        if get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) != Some(span_type::INVOCATION) {
            continue;
        }
        let id = get_str(&s.attributes, attr::FAAS_INVOCATION_ID)
            .expect("invocation span without faas.invocation_id")
            .to_owned();
        assert!(
            m.insert(id.clone(), (res, s)).is_none(),
            "two invocation spans for {id}"
        );
    }
    m
}

/// What both modes share: four invocation spans, three of them the ids the function answered
/// with, the first joined to the X-Ray header, four `faas.invocations`, the resource.
fn check_common(mode: Mode, cap: &Capture, run: &Run) -> BTreeMap<String, (Resource, Span)> {
    let inv = invocations(cap);
    assert_eq!(
        inv.len(),
        4,
        "{mode:?}: invocation spans {:?}\nRIE output:\n{}",
        inv.keys().collect::<Vec<_>>(),
        run.out
    );
    for id in &run.ok_ids {
        assert!(inv.contains_key(id), "{mode:?}: no span for {id}");
    }
    let (res, first) = &inv[&run.ok_ids[0]];
    assert_eq!(
        hex(&first.trace_id),
        "5759e988bd862e3fe1be46a994272793",
        "{mode:?}: trace id from the invoke's X-Ray header"
    );
    assert_eq!(hex(&first.parent_span_id), "53995c3f42cd8ad8", "{mode:?}");
    assert_eq!(
        get_str(&res.attributes, attr::CLOUD_PROVIDER),
        Some("aws"),
        "{mode:?}"
    );
    assert!(
        get_str(&res.attributes, attr::FAAS_NAME).is_some_and(|n| !n.is_empty()),
        "{mode:?}: faas.name"
    );
    // The invoked ARN (INVOKE in classic, `platform.start.functionArn` on MI) names this
    // function, and the account comes from it (or from the register answer: the same one).
    let faas_name = get_str(&res.attributes, attr::FAAS_NAME).unwrap();
    for (id, (res, s)) in &inv {
        let arn = get_str(&s.attributes, attr::AWS_LAMBDA_INVOKED_ARN)
            .unwrap_or_else(|| panic!("{mode:?} {id}: no invoked ARN"));
        assert!(
            arn.ends_with(&format!(":function:{faas_name}")),
            "{mode:?}: {arn}"
        );
        assert_eq!(
            get_str(&res.attributes, attr::CLOUD_ACCOUNT_ID),
            arn.split(':').nth(4),
            "{mode:?}"
        );
    }
    // Every field of every event the RIE sent is one the extension knows.
    let unknown: Vec<i64> = cap
        .metrics()
        .iter()
        .filter(|m| m.name == metric::EXT_IGNORED)
        .flat_map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.clone(),
            _ => vec![],
        })
        .filter(|p| get_str(&p.attributes, attr::LAMBDAWATCH_REASON) == Some("unknown_field"))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => -1,
        })
        .collect();
    assert!(!unknown.is_empty(), "{mode:?}: no self counter exported");
    assert!(
        unknown.iter().all(|n| *n == 0),
        "{mode:?}: unknown fields counted: {unknown:?}"
    );
    // The other invocations have their own fresh traces.
    for id in &run.ok_ids[1..] {
        assert_ne!(inv[id].1.trace_id, first.trace_id, "{mode:?}: {id}");
    }
    assert_eq!(
        int_sum(&cap.metrics(), metric::FAAS_INVOCATIONS, None),
        4,
        "{mode:?}: faas.invocations"
    );
    inv
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn extension_under_rie_classic_emits_one_span_per_invoke() {
    let cap = Capture::start();
    let run = run_rie(Mode::Classic, &format!("http://127.0.0.1:{}", cap.port));
    let inv = check_common(Mode::Classic, &cap, &run);
    // Lifecycle events alone: every span says it is incomplete, the first invoke is the cold
    // one, and the INVOKE's deadline gives the timeout.
    for (id, (_, s)) in &inv {
        assert_eq!(
            get_bool(&s.attributes, attr::LAMBDAWATCH_INCOMPLETE),
            Some(true),
            "{id}"
        );
        assert!(
            get_i64(&s.attributes, attr::AWS_LAMBDA_TIMEOUT_MS).is_some_and(|t| t > 0),
            "{id}: timeout from deadlineMs"
        );
    }
    let cold: Vec<_> = inv
        .iter()
        .filter(|(_, (_, s))| get_bool(&s.attributes, attr::FAAS_COLDSTART) == Some(true))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        cold,
        [run.ok_ids[0].clone()],
        "only the first invoke is cold"
    );
    assert!(
        cap.logs().is_empty(),
        "no Telemetry API, no log records: {:?}",
        cap.logs()
    );
    // The extension says so once, not once per invocation.
    let said = run
        .out
        .lines()
        .filter(|l| l.contains("Telemetry API not supported here"))
        .count();
    assert_eq!(said, 1, "the NotSupported line, once:\n{}", run.out);
}

#[test]
fn extension_under_rie_managed_instances_emits_what_the_function_did() {
    let cap = Capture::start();
    let mode = Mode::ManagedInstances;
    let run = run_rie(mode, &format!("http://127.0.0.1:{}", cap.port));
    let inv = check_common(mode, &cap, &run);
    let failed: Vec<&String> = inv.keys().filter(|id| !run.ok_ids.contains(id)).collect();
    assert_eq!(failed.len(), 1);
    let failed = failed[0].clone();
    for (id, (_, s)) in &inv {
        assert_eq!(
            get_bool(&s.attributes, attr::LAMBDAWATCH_INCOMPLETE),
            None,
            "{id}: its platform.report arrived"
        );
        let want = if *id == failed {
            outcome::ERROR
        } else {
            outcome::SUCCESS
        };
        assert_eq!(
            get_str(&s.attributes, attr::AWS_LAMBDA_OUTCOME),
            Some(want),
            "{id}"
        );
        assert!(
            s.end_time_unix_nano > s.start_time_unix_nano,
            "{id}: duration from the report"
        );
        // Managed Instances initialise ahead of traffic: no invocation is cold.
        assert_eq!(
            get_bool(&s.attributes, attr::FAAS_COLDSTART),
            Some(false),
            "{id}"
        );
    }
    assert_eq!(
        int_sum(
            &cap.metrics(),
            metric::FAAS_INVOCATIONS,
            Some((attr::AWS_LAMBDA_OUTCOME, outcome::ERROR))
        ),
        1
    );
    let inits: Vec<Span> = cap
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INIT))
        .collect();
    assert_eq!(inits.len(), 1, "one initialisation");
    assert_eq!(
        get_str(&inits[0].attributes, attr::AWS_LAMBDA_INIT_TYPE),
        Some(init_type::MANAGED_INSTANCES)
    );
    assert_eq!(
        int_sum(
            &cap.metrics(),
            metric::FAAS_COLDSTARTS,
            Some((attr::AWS_LAMBDA_INIT_TYPE, init_type::MANAGED_INSTANCES))
        ),
        1
    );

    // Logs: both lines of every successful invoke, joined to it (ids and trace), JSON lines
    // from Powertools with their `line` field as an attribute, plain lines with `[INFO]` read.
    let logs = cap.logs();
    for (i, id) in run.ok_ids.iter().enumerate() {
        let mine: Vec<&LogRecord> = logs
            .iter()
            .filter(|l| get_str(&l.attributes, attr::FAAS_INVOCATION_ID) == Some(id))
            .filter(|l| body_of(l).contains("log line"))
            .collect();
        assert_eq!(
            mine.len(),
            2,
            "invoke {i} ({id}) log lines: {:#?}\ninvocations: {:#?}",
            logs.iter()
                .map(|l| (body_of(l), l.time_unix_nano, l.attributes.clone()))
                .collect::<Vec<_>>(),
            inv.iter()
                .map(|(id, (_, s))| (id, s.start_time_unix_nano, s.end_time_unix_nano))
                .collect::<Vec<_>>()
        );
        for (n, l) in mine.iter().enumerate() {
            let json = i % 2 == 0;
            let want = if json {
                format!("log line {n} of 2")
            } else {
                format!("[INFO] log line {n} of 2")
            };
            assert_eq!(body_of(l), want, "invoke {i}");
            assert_eq!(l.severity_text, "INFO", "invoke {i}: {want}");
            assert_eq!(l.trace_id, inv[id].1.trace_id, "invoke {i}: trace joined");
            assert_eq!(l.span_id, inv[id].1.span_id, "invoke {i}: span joined");
            if json {
                assert_eq!(get_i64(&l.attributes, "line"), Some(n as i64), "invoke {i}");
            }
        }
    }
    let err = logs
        .iter()
        .find(|l| body_of(l) == "failing on purpose")
        .expect("the failing invoke's ERROR line");
    assert_eq!(err.severity_text, "ERROR");
    assert_eq!(
        get_str(&err.attributes, attr::FAAS_INVOCATION_ID),
        Some(failed.as_str())
    );
}

/// A closed endpoint: the function is untouched and the extension exits cleanly.
#[test]
fn extension_under_rie_fails_open_with_a_dead_collector() {
    run_rie(Mode::Classic, &format!("http://127.0.0.1:{}", free_port()));
}
