//! Ordering tests: correlation by requestId whatever the arrival order.

use super::*;
use crate::buffer::Batch;
use crate::events::parse_batch;
use lambdawatch_semconv::otlp::{get_bool, get_f64, get_i64, get_str};

const T0: &str = "2024-05-01T10:00:00.000Z";

fn t(ms: u64) -> String {
    let base = crate::events::parse_time(T0).unwrap();
    let ns = base + ms * 1_000_000;
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let s = secs % 60;
    let m = (secs / 60) % 60;
    let h = (secs / 3600) % 24;
    format!("2024-05-01T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

fn ns(ms: u64) -> u64 {
    crate::events::parse_time(T0).unwrap() + ms * 1_000_000
}

fn xray(root: &str, parent: &str) -> String {
    format!(
        "Root=1-{}-{};Parent={parent};Sampled=1",
        &root[..8],
        &root[8..]
    )
}

fn start(rid: &str, at: u64, trace: Option<(&str, &str)>) -> String {
    let tracing = trace.map_or(String::new(), |(root, parent)| {
        format!(
            r#","tracing":{{"type":"X-Amzn-Trace-Id","value":"{}"}}"#,
            xray(root, parent)
        )
    });
    format!(
        r#"{{"time":"{}","type":"platform.start","record":{{"requestId":"{rid}","version":"$LATEST"{tracing}}}}}"#,
        t(at)
    )
}

fn runtime_done(rid: &str, at: u64, status: &str, dur: f64) -> String {
    format!(
        r#"{{"time":"{}","type":"platform.runtimeDone","record":{{"requestId":"{rid}","status":"{status}","metrics":{{"durationMs":{dur},"producedBytes":7}},"spans":[{{"name":"responseLatency","start":"{}","durationMs":1.5}}]}}}}"#,
        t(at),
        t(at.saturating_sub(dur as u64))
    )
}

fn report(rid: &str, at: u64, status: Option<&str>, dur: f64, init: Option<f64>) -> String {
    let status = status.map_or(String::new(), |s| format!(r#""status":"{s}","#));
    let init = init.map_or(String::new(), |d| format!(r#","initDurationMs":{d}"#));
    format!(
        r#"{{"time":"{}","type":"platform.report","record":{{"requestId":"{rid}",{status}"metrics":{{"durationMs":{dur},"billedDurationMs":{},"memorySizeMB":128,"maxMemoryUsedMB":64{init}}},"spans":[{{"name":"extensionOverhead","start":"{}","durationMs":0.5}}]}}}}"#,
        t(at),
        dur.ceil(),
        t(at)
    )
}

fn log(rid_json: Option<&str>, at: u64, msg: &str) -> String {
    match rid_json {
        Some(rid) => format!(
            r#"{{"time":"{}","type":"function","record":{{"level":"ERROR","requestId":"{rid}","message":"{msg}"}}}}"#,
            t(at)
        ),
        None => format!(
            r#"{{"time":"{}","type":"function","record":"{msg}"}}"#,
            t(at)
        ),
    }
}

struct Harness {
    tr: Translator,
    buf: Buffer,
}

impl Harness {
    fn new() -> Self {
        Self::with(Options::default())
    }

    fn with(opts: Options) -> Self {
        Self {
            tr: Translator::with_ids(
                opts,
                ResourceInfo {
                    function_name: Some("checkout".into()),
                    ..Default::default()
                },
                IdGen::seeded(7),
            ),
            buf: Buffer::new(100_000, 64 << 20),
        }
    }

    fn feed(&mut self, events: &[String]) {
        let body = format!("[{}]", events.join(","));
        let (evs, stats) = parse_batch(body.as_bytes());
        assert_eq!(stats.malformed + stats.unknown_types, 0, "{body}");
        self.tr.ingest_all(evs, &mut self.buf, ns(999_999));
        self.tr.after_batch(ns(999_999), &mut self.buf);
    }

    fn take(&mut self) -> Batch {
        self.buf.drain()
    }
}

/// The batch's log records, decoded (they travel as protobuf bytes).
fn logs_of(b: &Batch) -> Vec<LogRecord> {
    b.logs.iter().map(|l| l.decode().unwrap()).collect()
}

fn invocation_spans(b: &Batch) -> Vec<&Span> {
    b.spans
        .iter()
        .filter(|s| {
            get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INVOCATION)
        })
        .collect()
}

fn by_id<'a>(spans: &[&'a Span], rid: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| get_str(&s.attributes, attr::FAAS_INVOCATION_ID) == Some(rid))
        .unwrap_or_else(|| panic!("no span for {rid}"))
}

fn metric_total(b: &Batch, name: &str) -> i64 {
    b.metrics
        .iter()
        .filter(|m| m.name == name)
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(i)) => i,
                    _ => 0,
                })
                .sum::<i64>(),
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count as i64).sum(),
            _ => 0,
        })
        .sum()
}

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const C: &str = "cccccccc-0000-4000-8000-000000000003";
const ROOT_A: &str = "6630f1a0aaaaaaaaaaaaaaaaaaaaaaaa";
const ROOT_B: &str = "6630f1a0bbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn late_report_arrives_during_the_next_invocation() {
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, Some((ROOT_A, "1111111111111111"))),
        log(None, 5, "[INFO] in A"),
        runtime_done(A, 100, "success", 100.0),
    ]);
    assert_eq!(
        invocation_spans(&h.take()).len(),
        0,
        "no report yet, nothing emitted"
    );
    h.feed(&[
        start(B, 1000, Some((ROOT_B, "2222222222222222"))),
        report(A, 1001, Some("success"), 100.5, None),
        log(None, 1005, "[ERROR] in B"),
        runtime_done(B, 1200, "error", 200.0),
    ]);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(spans.len(), 1);
    let a = by_id(&spans, A);
    assert_eq!(xray::to_hex(&a.trace_id), ROOT_A);
    assert_eq!(xray::to_hex(&a.parent_span_id), "1111111111111111");
    assert_eq!(a.start_time_unix_nano, ns(0));
    assert_eq!(a.end_time_unix_nano, ns(0) + 100_500_000);
    assert_eq!(
        get_f64(&a.attributes, attr::AWS_LAMBDA_DURATION_MS),
        Some(100.5)
    );
    assert_eq!(
        get_i64(&a.attributes, attr::AWS_LAMBDA_BILLED_DURATION_MS),
        Some(101)
    );
    // The log written during B belongs to B (the only active invocation), not to A.
    let b_logs = logs_of(&b);
    let lb = b_logs
        .iter()
        .find(|l| l.severity_number == Severity::Error as i32)
        .unwrap();
    assert_eq!(get_str(&lb.attributes, attr::FAAS_INVOCATION_ID), Some(B));
    assert_eq!(xray::to_hex(&lb.trace_id), ROOT_B);
    h.feed(&[report(B, 2000, Some("error"), 200.0, None)]);
    let b2 = h.take();
    let sb = by_id(&invocation_spans(&b2), B);
    assert_eq!(
        get_str(&sb.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some(outcome::ERROR)
    );
    assert_eq!(sb.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert_eq!(lb.span_id, sb.span_id, "log joins the invocation span");
    assert_eq!(metric_total(&b2, metric::FAAS_ERRORS), 1);
}

#[test]
fn interleaved_reports_on_managed_instances() {
    // Managed Instances: no runtimeDone, reports carry only durationMs, several requests at once.
    let mi_report = |rid: &str, at: u64, dur: f64| {
        format!(
            r#"{{"time":"{}","type":"platform.report","record":{{"requestId":"{rid}","status":"success","metrics":{{"durationMs":{dur}}},"spans":[{{"name":"responseLatency","start":"{}","durationMs":2.0}},{{"name":"responseDuration","start":"{}","durationMs":0.25}}]}}}}"#,
            t(at),
            t(at - 3),
            t(at - 1)
        )
    };
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, Some((ROOT_A, "1111111111111111"))),
        start(B, 10, Some((ROOT_B, "2222222222222222"))),
        start(C, 20, None),
        log(Some(B), 30, "b says"),
        log(None, 31, "nobody knows whose"),
        mi_report(B, 60, 50.0),
        log(Some(A), 70, "a says"),
        mi_report(C, 80, 60.0),
        mi_report(A, 90, 90.0),
    ]);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(spans.len(), 3);
    for (rid, start_ms, dur) in [(A, 0, 90.0), (B, 10, 50.0), (C, 20, 60.0)] {
        let s = by_id(&spans, rid);
        assert_eq!(s.start_time_unix_nano, ns(start_ms), "{rid}");
        assert_eq!(
            get_f64(&s.attributes, attr::AWS_LAMBDA_DURATION_MS),
            Some(dur)
        );
        let children: Vec<_> = b
            .spans
            .iter()
            .filter(|c| c.parent_span_id == s.span_id)
            .collect();
        assert_eq!(children.len(), 2, "{rid} phases");
        assert!(children.iter().all(|c| c.trace_id == s.trace_id));
    }
    assert_eq!(xray::to_hex(&by_id(&spans, B).trace_id), ROOT_B);
    let c = by_id(&spans, C);
    assert_eq!(c.parent_span_id, Vec::<u8>::new(), "fresh trace, no parent");
    assert_eq!(c.trace_id.len(), 16);
    assert_ne!(c.trace_id, by_id(&spans, A).trace_id);
    let b_logs = logs_of(&b);
    let log_of = |body: &str| {
        b_logs
            .iter()
            .find(|l| matches!(l.body.as_ref().and_then(|v| v.value.as_ref()), Some(AV::StringValue(s)) if s == body))
            .unwrap()
    };
    assert_eq!(log_of("b says").span_id, by_id(&spans, B).span_id);
    assert_eq!(log_of("a says").span_id, by_id(&spans, A).span_id);
    let orphan = log_of("nobody knows whose");
    assert!(orphan.trace_id.is_empty(), "three active: no guessing");
    assert_eq!(get_str(&orphan.attributes, attr::FAAS_INVOCATION_ID), None);
    assert_eq!(metric_total(&b, metric::FAAS_INVOCATIONS), 3);
}

#[test]
fn report_at_shutdown_and_missing_report_both_exported() {
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, None),
        runtime_done(A, 40, "success", 40.0),
        start(B, 100, None),
        runtime_done(B, 130, "error", 30.0),
    ]);
    // SHUTDOWN: A's report arrives during the drain, B's never does.
    h.feed(&[report(A, 5000, Some("success"), 40.0, None)]);
    assert_eq!(h.tr.pending_reports(), 1);
    h.tr.finish(Some("spindown"), ns(6000), &mut h.buf);
    assert_eq!(h.tr.pending_reports(), 0);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(spans.len(), 2);
    let a = by_id(&spans, A);
    assert_eq!(get_bool(&a.attributes, attr::LAMBDAWATCH_INCOMPLETE), None);
    let sb = by_id(&spans, B);
    assert_eq!(
        get_bool(&sb.attributes, attr::LAMBDAWATCH_INCOMPLETE),
        Some(true)
    );
    assert_eq!(
        get_str(&sb.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some(outcome::ERROR)
    );
    assert_eq!(
        get_f64(&sb.attributes, attr::AWS_LAMBDA_DURATION_MS),
        Some(30.0)
    );
    assert_eq!(sb.end_time_unix_nano, ns(100) + 30_000_000);
    assert_eq!(h.tr.stats().incomplete, 1);
    assert_eq!(metric_total(&b, metric::FAAS_INVOCATIONS), 2);
}

#[test]
fn timed_out_invocations() {
    let mut h = Harness::new();
    h.tr.observe_invoke(
        A,
        Some(ns(0) / 1_000_000 + 3000),
        Some("arn:aws:lambda:eu-west-1:123456789012:function:checkout"),
        None,
        ns(0),
    );
    h.feed(&[
        start(A, 0, None),
        format!(
            r#"{{"time":"{}","type":"platform.runtimeDone","record":{{"requestId":"{A}","status":"timeout","errorType":"Sandbox.Timedout","metrics":{{"durationMs":3000.0}}}}}}"#,
            t(3000)
        ),
        report(A, 3001, Some("timeout"), 3000.0, None),
    ]);
    let b = h.take();
    let a = by_id(&invocation_spans(&b), A);
    assert_eq!(
        get_str(&a.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some(outcome::TIMEOUT)
    );
    assert_eq!(
        get_str(&a.attributes, attr::AWS_LAMBDA_ERROR_TYPE),
        Some("Sandbox.Timedout")
    );
    assert_eq!(
        get_i64(&a.attributes, attr::AWS_LAMBDA_TIMEOUT_MS),
        Some(3000)
    );
    assert_eq!(a.status.as_ref().unwrap().message, "Sandbox.Timedout");
    assert_eq!(metric_total(&b, metric::FAAS_TIMEOUTS), 1);
    assert_eq!(metric_total(&b, metric::FAAS_ERRORS), 0);
    assert_eq!(h.tr.resource.account_id.as_deref(), Some("123456789012"));
    // Killed before runtimeDone; SHUTDOWN says timeout.
    h.feed(&[start(B, 5000, None)]);
    h.tr.finish(Some("timeout"), ns(9000), &mut h.buf);
    let b = h.take();
    let sb = by_id(&invocation_spans(&b), B);
    assert_eq!(
        get_str(&sb.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some(outcome::TIMEOUT)
    );
    assert_eq!(metric_total(&b, metric::FAAS_TIMEOUTS), 1);
}

#[test]
fn cold_starts_counted_by_init_type() {
    let init = |itype: &str, at: u64, dur: f64| {
        vec![
            format!(
                r#"{{"time":"{}","type":"platform.initStart","record":{{"initializationType":"{itype}","phase":"init","functionName":"checkout","instanceMaxMemory":"512"}}}}"#,
                t(at)
            ),
            format!(
                r#"{{"time":"{}","type":"platform.initReport","record":{{"initializationType":"{itype}","phase":"init","status":"success","metrics":{{"durationMs":{dur}}}}}}}"#,
                t(at + dur as u64)
            ),
        ]
    };
    let mut h = Harness::new();
    h.feed(&init("on-demand", 0, 250.0));
    h.feed(&[
        start(A, 300, None),
        report(A, 400, Some("success"), 50.0, Some(250.0)),
    ]);
    h.feed(&[
        start(B, 1000, None),
        report(B, 1100, Some("success"), 50.0, None),
    ]);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(
        get_bool(&by_id(&spans, A).attributes, attr::FAAS_COLDSTART),
        Some(true)
    );
    assert_eq!(
        get_f64(
            &by_id(&spans, A).attributes,
            attr::AWS_LAMBDA_INIT_DURATION_MS
        ),
        Some(250.0)
    );
    assert_eq!(
        get_bool(&by_id(&spans, B).attributes, attr::FAAS_COLDSTART),
        Some(false)
    );
    assert_eq!(metric_total(&b, metric::FAAS_COLDSTARTS), 1);
    let init_span = b
        .spans
        .iter()
        .find(|s| get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INIT))
        .unwrap();
    assert_eq!(init_span.start_time_unix_nano, ns(0));
    assert_eq!(init_span.end_time_unix_nano, ns(250));
    assert_eq!(h.tr.resource.max_memory_mb, Some(512));

    // Provisioned concurrency: counted by attribute, the first invocation is not cold.
    let mut h = Harness::new();
    h.feed(&init("provisioned-concurrency", 0, 900.0));
    h.feed(&[
        start(C, 60_000, None),
        report(C, 60_100, Some("success"), 50.0, None),
    ]);
    let b = h.take();
    assert_eq!(
        get_bool(
            &by_id(&invocation_spans(&b), C).attributes,
            attr::FAAS_COLDSTART
        ),
        Some(false)
    );
    let cs = b
        .metrics
        .iter()
        .find(|m| m.name == metric::FAAS_COLDSTARTS)
        .unwrap();
    let Some(Data::Sum(s)) = &cs.data else {
        panic!()
    };
    assert_eq!(
        get_str(&s.data_points[0].attributes, attr::AWS_LAMBDA_INIT_TYPE),
        Some(init_type::PROVISIONED)
    );
}

#[test]
fn tracker_is_bounded_and_evicts_oldest_as_incomplete() {
    let mut h = Harness::with(Options {
        max_pending: 2,
        ..Options::default()
    });
    h.feed(&[start(A, 0, None), start(B, 10, None), start(C, 20, None)]);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(spans.len(), 1);
    by_id(&spans, A);
    assert_eq!(h.tr.stats().evicted, 1);
    assert_eq!(h.tr.pending_reports(), 2);
}

#[test]
fn logs_are_redacted_and_capture_can_be_off() {
    let mut h = Harness::new();
    h.feed(&[
        log(None, 0, "[ERROR] Authorization: Bearer abcdefghijklmnop"),
        format!(
            r#"{{"time":"{}","type":"function","record":{{"level":"INFO","message":"db postgres://u:hunter2@db/x","extra":{{"url":"https://a:b@c"}}}}}}"#,
            t(1)
        ),
    ]);
    let b = h.take();
    let b_logs = logs_of(&b);
    let bodies: Vec<String> = b_logs
        .iter()
        .map(|l| match l.body.as_ref().and_then(|v| v.value.as_ref()) {
            Some(AV::StringValue(s)) => s.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(bodies[0], "[ERROR] Authorization: Bearer [REDACTED]");
    assert_eq!(bodies[1], "db postgres://u:[REDACTED]@db/x");
    let extra = b_logs[1]
        .attributes
        .iter()
        .find(|k| k.key == "extra")
        .unwrap();
    let Some(AV::KvlistValue(l)) = extra.value.as_ref().unwrap().value.as_ref() else {
        panic!()
    };
    assert_eq!(
        l.values[0].value.as_ref().unwrap().value,
        Some(AV::StringValue("https://a:[REDACTED]@c".into()))
    );
    assert_eq!(h.tr.stats().redacted, 2);

    let mut h = Harness::with(Options {
        capture_logs: false,
        ..Options::default()
    });
    h.feed(&[log(None, 0, "hello")]);
    assert!(h.take().logs.is_empty());
}

#[test]
fn lifecycle_only_mode_emits_at_invoke() {
    let mut h = Harness::new();
    h.tr.observe_invoke(
        A,
        Some(ns(0) / 1_000_000 + 10_000),
        None,
        Some(&xray(ROOT_A, "1111111111111111")),
        ns(0),
    );
    h.tr.emit_lifecycle_only(A, &mut h.buf);
    h.tr.observe_invoke(B, None, None, None, ns(500));
    h.tr.emit_lifecycle_only(B, &mut h.buf);
    let b = h.take();
    let spans = invocation_spans(&b);
    assert_eq!(spans.len(), 2);
    let a = by_id(&spans, A);
    assert_eq!(xray::to_hex(&a.trace_id), ROOT_A);
    assert_eq!(get_bool(&a.attributes, attr::FAAS_COLDSTART), Some(true));
    assert_eq!(
        get_i64(&a.attributes, attr::AWS_LAMBDA_TIMEOUT_MS),
        Some(10_000)
    );
    assert_eq!(
        get_bool(&by_id(&spans, B).attributes, attr::FAAS_COLDSTART),
        Some(false)
    );
    assert_eq!(metric_total(&b, metric::FAAS_INVOCATIONS), 2);
    assert_eq!(h.tr.pending_reports(), 0);
}

/// A JSON record's fields are separate attributes, so the key-name rule masks by key: a JSON
/// function record (nested `extra` like Powertools) and a `{...}` text line.
fn secret_records() -> Vec<String> {
    vec![
        format!(
            r#"{{"time":"{}","type":"function","record":{{"level":"INFO","message":"creds loaded","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","user":"alice","extra":{{"aws_secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","region":"eu-west-1"}}}}}}"#,
            t(0)
        ),
        format!(
            r#"{{"time":"{}","type":"function","record":"{{\"message\":\"login\",\"password\":\"hunter2\",\"Authorization\":\"Basic dXNlcjpwYXNz\",\"path\":\"/login\",\"attempt\":3}}"}}"#,
            t(1)
        ),
    ]
}

fn attr_value<'a>(attrs: &'a [KeyValue], key: &str) -> &'a AV {
    attrs
        .iter()
        .find(|k| k.key == key)
        .and_then(|k| k.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .unwrap_or_else(|| panic!("attribute {key} missing in {attrs:?}"))
}

fn str_of(v: &AV) -> &str {
    match v {
        AV::StringValue(s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

#[test]
fn json_log_fields_with_secret_key_names_are_masked() {
    const KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let mut h = Harness::new();
    h.feed(&secret_records());
    let b = h.take();
    assert_eq!(b.logs.len(), 2);
    let b_logs = logs_of(&b);
    let a = &b_logs[0].attributes;
    assert_eq!(str_of(attr_value(a, "SecretAccessKey")), redact::MASK);
    assert_eq!(str_of(attr_value(a, "user")), "alice");
    let AV::KvlistValue(extra) = attr_value(a, "extra") else {
        panic!("extra is not a map")
    };
    assert_eq!(
        str_of(attr_value(&extra.values, "aws_secret_access_key")),
        redact::MASK
    );
    assert_eq!(str_of(attr_value(&extra.values, "region")), "eu-west-1");
    let a = &b_logs[1].attributes;
    assert_eq!(str_of(attr_value(a, "password")), redact::MASK);
    assert_eq!(str_of(attr_value(a, "Authorization")), redact::MASK);
    assert_eq!(str_of(attr_value(a, "path")), "/login");
    assert_eq!(attr_value(a, "attempt"), &AV::IntValue(3));
    assert_eq!(h.tr.stats().redacted, 2);
    let dump = format!("{:?}", b.logs);
    assert!(!dump.contains(KEY) && !dump.contains("hunter2") && !dump.contains("dXNlcjpwYXNz"));

    // LAMBDAWATCH_REDACT=none: untouched.
    let mut h = Harness::with(Options {
        redactor: Redactor::none(),
        ..Options::default()
    });
    h.feed(&secret_records());
    let b_logs = logs_of(&h.take());
    let a = &b_logs[0].attributes;
    assert_eq!(str_of(attr_value(a, "SecretAccessKey")), KEY);
    let a = &b_logs[1].attributes;
    assert_eq!(str_of(attr_value(a, "password")), "hunter2");
    assert_eq!(str_of(attr_value(a, "Authorization")), "Basic dXNlcjpwYXNz");
    assert_eq!(h.tr.stats().redacted, 0);
}

/// Powertools for Python prints `timestamp` as Python `logging` does (`,` before the millis,
/// `+HHMM` offset): the record keeps that time, not the envelope's, and the key is not lost.
#[test]
fn powertools_comma_timestamp_sets_the_record_time() {
    let mut h = Harness::new();
    h.feed(&[format!(
        r#"{{"time":"{}","type":"function","record":{{"level":"INFO","location":"handler:7","message":"hi","timestamp":"2024-05-01 12:00:01,250+0200","service":"payments"}}}}"#,
        t(5000)
    )]);
    let logs = logs_of(&h.take());
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].time_unix_nano, ns(1250));
    assert_eq!(logs[0].severity_text, "INFO");
    assert_eq!(get_str(&logs[0].attributes, "location"), Some("handler:7"));
}

/// `platform.{init,restore}Start` + `…Report` for one phase.
fn phase_pair(kind: &str, itype: &str, phase: &str, at: u64, dur: f64) -> Vec<String> {
    let fields = if kind == "init" {
        format!(r#""initializationType":"{itype}","phase":"{phase}","#)
    } else {
        String::new()
    };
    vec![
        format!(
            r#"{{"time":"{}","type":"platform.{kind}Start","record":{{{fields}"functionName":"checkout"}}}}"#,
            t(at)
        ),
        format!(
            r#"{{"time":"{}","type":"platform.{kind}Report","record":{{{fields}"status":"success","metrics":{{"durationMs":{dur}}}}}}}"#,
            t(at + dur as u64)
        ),
    ]
}

fn coldstarts_by_type(b: &Batch) -> Vec<String> {
    b.metrics
        .iter()
        .filter(|m| m.name == metric::FAAS_COLDSTARTS)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => {
                get_str(&s.data_points[0].attributes, attr::AWS_LAMBDA_INIT_TYPE).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

fn typed_span<'a>(b: &'a Batch, ty: &str) -> &'a Span {
    b.spans
        .iter()
        .find(|s| get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(ty))
        .unwrap_or_else(|| panic!("no {ty} span"))
}

/// SnapStart: the init runs at publish time (an init span, no cold start); each restore is the
/// cold start, and the first invocation after it carries `faas.coldstart` with the restore
/// duration. A report's `restoreDurationMs` alone (restore events missed) says the same.
#[test]
fn snap_start_restore_makes_the_next_invocation_cold() {
    let mut h = Harness::new();
    h.feed(&phase_pair("init", "snap-start", "init", 0, 800.0));
    let b = h.take();
    assert_eq!(
        get_str(
            &typed_span(&b, span_type::INIT).attributes,
            attr::AWS_LAMBDA_INIT_TYPE
        ),
        Some(init_type::SNAP_START)
    );
    assert!(coldstarts_by_type(&b).is_empty(), "publish-time init");

    h.feed(&phase_pair("restore", "", "", 10_000, 120.0));
    h.feed(&[
        start(A, 10_200, None),
        report(A, 10_300, Some("success"), 50.0, None),
        start(B, 11_000, None),
        report(B, 11_100, Some("success"), 50.0, None),
    ]);
    let b = h.take();
    let restore = typed_span(&b, span_type::RESTORE);
    assert_eq!(restore.start_time_unix_nano, ns(10_000));
    assert_eq!(coldstarts_by_type(&b), [init_type::SNAP_START]);
    let spans = invocation_spans(&b);
    let a = &by_id(&spans, A).attributes;
    assert_eq!(get_bool(a, attr::FAAS_COLDSTART), Some(true));
    assert_eq!(
        get_str(a, attr::AWS_LAMBDA_INIT_TYPE),
        Some(init_type::SNAP_START)
    );
    assert_eq!(
        get_f64(a, attr::AWS_LAMBDA_RESTORE_DURATION_MS),
        Some(120.0)
    );
    assert_eq!(get_f64(a, attr::AWS_LAMBDA_INIT_DURATION_MS), None);
    assert_eq!(
        get_bool(&by_id(&spans, B).attributes, attr::FAAS_COLDSTART),
        Some(false)
    );

    // Only the report tells: `restoreDurationMs`.
    let mut h = Harness::new();
    h.feed(&[
        start(C, 0, None),
        format!(
            r#"{{"time":"{}","type":"platform.report","record":{{"requestId":"{C}","status":"success","metrics":{{"durationMs":10,"restoreDurationMs":95.5}}}}}}"#,
            t(20)
        ),
    ]);
    let b = h.take();
    let c = &by_id(&invocation_spans(&b), C).attributes;
    assert_eq!(get_bool(c, attr::FAAS_COLDSTART), Some(true));
    assert_eq!(
        get_str(c, attr::AWS_LAMBDA_INIT_TYPE),
        Some(init_type::SNAP_START)
    );
    assert_eq!(get_f64(c, attr::AWS_LAMBDA_RESTORE_DURATION_MS), Some(95.5));
}

/// Managed Instances: the environment initialises ahead of traffic, so the init is counted (by
/// init type) but no invocation is cold.
#[test]
fn managed_instances_init_is_counted_but_no_invocation_is_cold() {
    let mut h = Harness::new();
    h.feed(&phase_pair(
        "init",
        init_type::MANAGED_INSTANCES,
        "init",
        0,
        300.0,
    ));
    h.feed(&[
        start(A, 5_000, None),
        report(A, 5_050, Some("success"), 40.0, None),
    ]);
    let b = h.take();
    assert_eq!(coldstarts_by_type(&b), [init_type::MANAGED_INSTANCES]);
    let init = typed_span(&b, span_type::INIT);
    assert_eq!(
        get_str(&init.attributes, attr::AWS_LAMBDA_INIT_TYPE),
        Some(init_type::MANAGED_INSTANCES)
    );
    assert_eq!(
        get_bool(
            &by_id(&invocation_spans(&b), A).attributes,
            attr::FAAS_COLDSTART
        ),
        Some(false)
    );
}

/// A suppressed init (phase `invoke`: the init timed out or failed and was re-run inside the
/// first invocation) makes *that* running invocation cold, not the next one.
#[test]
fn suppressed_init_in_the_invoke_phase_marks_the_running_invocation_cold() {
    let mut h = Harness::new();
    h.feed(&[start(A, 0, None)]);
    h.feed(&phase_pair(
        "init",
        init_type::ON_DEMAND,
        "invoke",
        1,
        400.0,
    ));
    h.feed(&[
        report(A, 900, Some("success"), 880.0, None),
        start(B, 2_000, None),
        report(B, 2_100, Some("success"), 50.0, None),
    ]);
    let b = h.take();
    let init = typed_span(&b, span_type::INIT);
    assert_eq!(
        get_str(&init.attributes, attr::AWS_LAMBDA_INIT_PHASE),
        Some("invoke")
    );
    let spans = invocation_spans(&b);
    let a = &by_id(&spans, A).attributes;
    assert_eq!(get_bool(a, attr::FAAS_COLDSTART), Some(true));
    assert_eq!(get_f64(a, attr::AWS_LAMBDA_INIT_DURATION_MS), Some(400.0));
    assert_eq!(
        get_bool(&by_id(&spans, B).attributes, attr::FAAS_COLDSTART),
        Some(false)
    );
    assert_eq!(coldstarts_by_type(&b), [init_type::ON_DEMAND]);
}

/// The `function` stream is batched apart from `platform`: a record may arrive after its
/// invocation's report (always so on Managed Instances). It still joins that invocation's trace;
/// past [`RECENT_EMITTED`] later invocations it only keeps its `faas.invocation_id`.
#[test]
fn log_after_its_report_still_joins_the_trace() {
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, Some((ROOT_A, "1111111111111111"))),
        report(A, 100, Some("success"), 90.0, None),
    ]);
    h.feed(&[log(Some(A), 150, "late line")]);
    let b = h.take();
    let span = by_id(&invocation_spans(&b), A).clone();
    let logs = logs_of(&b);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].trace_id, span.trace_id);
    assert_eq!(logs[0].span_id, span.span_id);
    assert_eq!(xray::to_hex(&logs[0].trace_id), ROOT_A);

    // Bounded: after RECENT_EMITTED more invocations, A is forgotten.
    for i in 0..RECENT_EMITTED {
        let rid = format!("{i:08x}-0000-4000-8000-000000000000");
        h.feed(&[
            start(&rid, 200 + i as u64, None),
            report(&rid, 201 + i as u64, Some("success"), 1.0, None),
        ]);
    }
    h.take();
    h.feed(&[log(Some(A), 9_000, "very late line")]);
    let logs = logs_of(&h.take());
    assert!(logs[0].trace_id.is_empty());
    assert_eq!(
        get_str(&logs[0].attributes, attr::FAAS_INVOCATION_ID),
        Some(A)
    );
    assert_eq!(h.tr.recent.len(), RECENT_EMITTED);
}

/// A plain line carries no request id. When it arrives after its invocation's report (nothing
/// active any more), its time decides, and only when exactly one emitted invocation's
/// `[start, end]` holds it.
#[test]
fn plain_line_after_the_report_joins_by_time_only_when_unambiguous() {
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, Some((ROOT_A, "1111111111111111"))),
        report(A, 100, Some("success"), 100.0, None),
        start(B, 1000, None),
        report(B, 1100, Some("success"), 100.0, None),
    ]);
    h.feed(&[
        log(None, 50, "printed during A"),
        log(None, 1050, "printed during B"),
        log(None, 105, "read just after A ended"),
        log(None, 500, "printed between"),
    ]);
    let b = h.take();
    let spans = invocation_spans(&b);
    let logs = logs_of(&b);
    let of = |body: &str| {
        logs.iter()
            .find(|l| matches!(l.body.as_ref().and_then(|v| v.value.as_ref()), Some(AV::StringValue(s)) if s == body))
            .unwrap()
    };
    let a = of("printed during A");
    assert_eq!(get_str(&a.attributes, attr::FAAS_INVOCATION_ID), Some(A));
    assert_eq!(a.span_id, by_id(&spans, A).span_id);
    assert_eq!(xray::to_hex(&a.trace_id), ROOT_A);
    let bl = of("printed during B");
    assert_eq!(get_str(&bl.attributes, attr::FAAS_INVOCATION_ID), Some(B));
    assert_eq!(bl.span_id, by_id(&spans, B).span_id);
    let late = of("read just after A ended");
    assert_eq!(get_str(&late.attributes, attr::FAAS_INVOCATION_ID), Some(A));
    let between = of("printed between");
    assert_eq!(get_str(&between.attributes, attr::FAAS_INVOCATION_ID), None);
    assert!(between.trace_id.is_empty());

    // Overlapping windows (Managed Instances run several at once): no guessing.
    let mut h = Harness::new();
    h.feed(&[
        start(A, 0, None),
        start(B, 10, None),
        report(A, 100, Some("success"), 100.0, None),
        report(B, 110, Some("success"), 100.0, None),
    ]);
    h.feed(&[log(None, 50, "whose?")]);
    let logs = logs_of(&h.take());
    assert_eq!(get_str(&logs[0].attributes, attr::FAAS_INVOCATION_ID), None);
    assert!(logs[0].trace_id.is_empty());
}

/// Schema `2025-01-29` `platform.start` carries `functionArn` (the RIE sends it in Managed
/// Instances mode, where no INVOKE tells us the ARN): a known field, giving the invoked ARN and
/// the account.
#[test]
fn start_function_arn_gives_the_arn_and_the_account() {
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:checkout";
    let body = format!(
        r#"[{{"time":"{}","type":"platform.start","record":{{"requestId":"{A}","version":"$LATEST","functionArn":"{arn}"}}}}]"#,
        t(0)
    );
    let (evs, stats) = parse_batch(body.as_bytes());
    assert_eq!(stats.unknown_fields, 0);
    let mut h = Harness::new();
    h.tr.ingest_all(evs, &mut h.buf, ns(1));
    h.feed(&[report(A, 50, Some("success"), 40.0, None)]);
    let b = h.take();
    let a = &by_id(&invocation_spans(&b), A).attributes;
    assert_eq!(get_str(a, attr::AWS_LAMBDA_INVOKED_ARN), Some(arn));
    assert_eq!(h.tr.resource.account_id.as_deref(), Some("123456789012"));
}
