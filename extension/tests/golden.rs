//! Golden tests over every file in `../shared/fixtures/telemetry-api/` (the documented AWS
//! examples, quirks included): parse → translate → encode as OTLP protobuf → decode, then assert
//! field by field. A fixture file without an expectation here fails `every_fixture_is_covered`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use lambdawatch_extension::buffer::Buffer;
use lambdawatch_extension::events::{EventBody, LogRecord as WireLog, ParseStats, parse_batch};
use lambdawatch_extension::export::encode;
use lambdawatch_extension::translate::ids::IdGen;
use lambdawatch_extension::translate::{Options, ResourceInfo, Translator};
use lambdawatch_semconv::otlp::{get_bool, get_f64, get_i64, get_str};
use lambdawatch_semconv::{attr, metric, span_type, xray};
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

fn fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/telemetry-api");
    assert!(
        p.is_dir(),
        "fixture directory {} is missing (expected the shared fixtures next to the repo)",
        p.display()
    );
    p
}

fn read(rel: &str) -> Vec<u8> {
    let p = fixtures().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What came out, decoded back from the protobuf we would send.
struct Out {
    stats: ParseStats,
    resource: Resource,
    spans: Vec<Span>,
    metrics: Vec<Metric>,
    logs: Vec<LogRecord>,
}

const NOW: u64 = 1_700_000_000_000_000_000;

/// Runs fixture files (in order) through one translator; `finish` = SHUTDOWN afterwards.
fn run(files: &[&str], finish: bool) -> Out {
    let mut tr = Translator::with_ids(
        Options::default(),
        ResourceInfo {
            region: Some("eu-west-1".into()),
            ..Default::default()
        },
        IdGen::seeded(1),
    );
    let mut buf = Buffer::new(10_000, 1 << 24);
    let mut stats = ParseStats::default();
    for f in files {
        let (events, s) = parse_batch(&read(f));
        stats.add(&s);
        tr.ingest_all(events, &mut buf, NOW);
    }
    if finish {
        tr.finish(Some("spindown"), NOW, &mut buf);
    }
    let resource = tr.resource.to_resource();
    let enc = encode(&resource, buf.drain());
    let spans = enc.traces.map_or_else(Vec::new, |(b, n)| {
        let r = ExportTraceServiceRequest::decode(b.as_slice()).unwrap();
        let s = r.resource_spans[0].scope_spans[0].spans.clone();
        assert_eq!(s.len() as u64, n);
        s
    });
    let metrics = enc.metrics.map_or_else(Vec::new, |(b, _)| {
        let r = ExportMetricsServiceRequest::decode(b.as_slice()).unwrap();
        r.resource_metrics[0].scope_metrics[0].metrics.clone()
    });
    let logs = enc.logs.map_or_else(Vec::new, |(b, _)| {
        let r = ExportLogsServiceRequest::decode(b.as_slice()).unwrap();
        assert_eq!(
            r.resource_logs[0].scope_logs[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            "lambdawatch-extension"
        );
        r.resource_logs[0].scope_logs[0].log_records.clone()
    });
    Out {
        stats,
        resource,
        spans,
        metrics,
        logs,
    }
}

fn ts(s: &str) -> u64 {
    lambdawatch_extension::events::parse_time(s).unwrap()
}

fn typed<'a>(spans: &'a [Span], t: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(t))
        .collect()
}

fn int_sum(m: &[Metric], name: &str) -> Vec<(i64, Vec<(String, String)>)> {
    m.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(Data::Sum(s)) => {
                assert_eq!(s.aggregation_temporality, 1, "delta");
                assert!(s.is_monotonic);
                s.data_points
                    .iter()
                    .map(|p| {
                        let v = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => i,
                            _ => panic!("int"),
                        };
                        let a = p
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(AV::StringValue(s)) => s.clone(),
                                    other => format!("{other:?}"),
                                };
                                (kv.key.clone(), v)
                            })
                            .collect();
                        (v, a)
                    })
                    .collect::<Vec<_>>()
            }
            _ => panic!("{name} is not a sum"),
        })
        .collect()
}

fn hist(m: &[Metric], name: &str) -> (u64, f64, &'static str) {
    let m = m
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name}"));
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("{name} is not a histogram")
    };
    let p = &h.data_points[0];
    // The one observation lands in the first bucket whose bound holds it.
    let idx = p.bucket_counts.iter().position(|c| *c == 1).unwrap();
    let v = p.sum.unwrap();
    assert!(idx == p.explicit_bounds.len() || v <= p.explicit_bounds[idx]);
    assert!(idx == 0 || v > p.explicit_bounds[idx - 1]);
    let unit = match m.unit.as_str() {
        "s" => "s",
        "By" => "By",
        other => panic!("unit {other}"),
    };
    (p.count, v, unit)
}

fn body(l: &LogRecord) -> &str {
    match l.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(AV::StringValue(s)) => s,
        other => panic!("body {other:?}"),
    }
}

fn clean(o: &Out) {
    assert_eq!(o.stats.malformed, 0);
    assert_eq!(o.stats.unknown_types, 0);
    assert_eq!(o.stats.odd_values, 0);
}

/// The single event of a fixture, parsed.
fn one(rel: &str) -> (EventBody, ParseStats) {
    let (mut e, s) = parse_batch(&read(rel));
    assert_eq!(e.len(), 1, "{rel}");
    (e.remove(0).body, s)
}

// ---------------------------------------------------------------- platform lifecycle

fn check_init_start_resource(o: &Out) {
    let r = &o.resource.attributes;
    assert_eq!(get_str(r, attr::SERVICE_NAME), Some("myFunction"));
    assert_eq!(get_str(r, attr::FAAS_NAME), Some("myFunction"));
    assert_eq!(get_str(r, attr::FAAS_VERSION), Some("$LATEST"));
    assert_eq!(get_i64(r, attr::FAAS_MAX_MEMORY), Some(256 * 1_048_576));
    assert_eq!(get_str(r, attr::CLOUD_PROVIDER), Some("aws"));
    assert_eq!(get_str(r, attr::CLOUD_PLATFORM), Some("aws_lambda"));
    assert_eq!(get_str(r, attr::CLOUD_REGION), Some("eu-west-1"));
}

#[test]
fn init_start_alone_then_shutdown() {
    let o = run(&["platform.initStart.json"], false);
    clean(&o);
    assert!(o.spans.is_empty(), "init is open until its report");
    check_init_start_resource(&o);
    let o = run(&["platform.initStart.json"], true);
    let init = typed(&o.spans, span_type::INIT);
    assert_eq!(init.len(), 1, "SHUTDOWN emits the unfinished init");
    assert_eq!(init[0].start_time_unix_nano, ts("2022-10-12T00:00:15.064Z"));
    assert_eq!(
        get_str(&init[0].attributes, attr::AWS_LAMBDA_RUNTIME_VERSION),
        Some("nodejs-14.v3")
    );
}

#[test]
fn full_init_sequence() {
    let o = run(
        &[
            "platform.initStart.json",
            "platform.initRuntimeDone.json",
            "platform.initReport.json",
        ],
        false,
    );
    clean(&o);
    let init = typed(&o.spans, span_type::INIT);
    assert_eq!(init.len(), 1);
    let s = init[0];
    assert_eq!(s.name, "init");
    assert_eq!(s.kind, 1, "INTERNAL");
    assert_eq!(s.start_time_unix_nano, ts("2022-10-12T00:00:15.064Z"));
    assert_eq!(
        s.end_time_unix_nano,
        ts("2022-10-12T00:00:15.064Z") + 125_330_000
    );
    assert_eq!(
        get_str(&s.attributes, attr::AWS_LAMBDA_INIT_TYPE),
        Some("on-demand")
    );
    assert_eq!(
        get_str(&s.attributes, attr::AWS_LAMBDA_INIT_PHASE),
        Some("init")
    );
    assert_eq!(
        get_str(&s.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("success")
    );
    assert_eq!(
        get_f64(&s.attributes, attr::AWS_LAMBDA_DURATION_MS),
        Some(125.33)
    );
    assert!(s.status.is_none());
    // The platform's own sub-span (the report's version wins over runtimeDone's).
    let phases = typed(&o.spans, span_type::PHASE);
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].name, "someTimeSpan");
    assert_eq!(phases[0].parent_span_id, s.span_id);
    assert_eq!(phases[0].trace_id, s.trace_id);
    assert_eq!(
        phases[0].start_time_unix_nano,
        ts("2022-06-02T12:02:33.913Z")
    );
    assert_eq!(
        phases[0].end_time_unix_nano - phases[0].start_time_unix_nano,
        90_100_000
    );
    let cold = int_sum(&o.metrics, metric::FAAS_COLDSTARTS);
    assert_eq!(cold.len(), 1);
    assert_eq!(cold[0].0, 1);
    assert_eq!(
        cold[0].1,
        vec![(
            attr::AWS_LAMBDA_INIT_TYPE.to_owned(),
            "on-demand".to_owned()
        )]
    );
    let (n, v, unit) = hist(&o.metrics, metric::FAAS_INIT_DURATION);
    assert_eq!((n, unit), (1, "s"));
    assert!((v - 0.12533).abs() < 1e-9);
}

#[test]
fn init_runtime_done_documented_json_is_repaired() {
    // The documented text misses a comma; the parser repairs it and says so.
    let (b, s) = one("verbatim/platform.initRuntimeDone.txt");
    assert_eq!(s.repaired, 1);
    let EventBody::InitRuntimeDone(d) = &b else {
        panic!("{b:?}")
    };
    assert_eq!(d.initialization_type.as_deref(), Some("on-demand"));
    assert_eq!(d.status.as_deref(), Some("success"));
    assert_eq!(d.spans[0].duration_ms, 70.5);
    let (b2, s2) = one("platform.initRuntimeDone.json");
    assert_eq!(s2.repaired, 0);
    assert_eq!(b, b2, "repair gives exactly the fixed twin");
}

#[test]
fn init_report_2022_text_without_status_is_success() {
    let o = run(
        &["verbatim/awsdocs-github-2022/platform.initReport.txt"],
        false,
    );
    clean(&o);
    let init = typed(&o.spans, span_type::INIT);
    assert_eq!(
        get_str(&init[0].attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("success")
    );
    // No initStart: the span ends at the report and lasts durationMs.
    assert_eq!(
        init[0].end_time_unix_nano - init[0].start_time_unix_nano,
        125_330_000
    );
}

#[test]
fn init_start_2022_text_without_function_fields() {
    let o = run(
        &["verbatim/awsdocs-github-2022/platform.initStart.txt"],
        false,
    );
    clean(&o);
    assert_eq!(get_str(&o.resource.attributes, attr::FAAS_NAME), None);
    assert_eq!(
        get_str(&o.resource.attributes, attr::SERVICE_NAME),
        Some("unknown_service")
    );
}

#[test]
fn start_2022_text_with_the_wrong_type_is_tolerated() {
    // The 2022 page labels a platform.start record as platform.initStart: an initStart with two
    // fields we do not know, counted, nothing lost.
    let (b, s) = one("verbatim/awsdocs-github-2022/platform.start.txt");
    assert!(matches!(b, EventBody::InitStart(_)));
    assert_eq!(s.unknown_fields, 2);
    assert_eq!(s.malformed, 0);
}

#[test]
fn full_invocation_start_runtime_done_report() {
    let o = run(
        &[
            "platform.start.json",
            "platform.runtimeDone.json",
            "platform.report.json",
        ],
        false,
    );
    clean(&o);
    let inv = typed(&o.spans, span_type::INVOCATION);
    assert_eq!(inv.len(), 1);
    let s = inv[0];
    assert_eq!(s.kind, 2, "SERVER");
    assert_eq!(
        xray::to_hex(&s.trace_id),
        "62e900b2710d76f009d6e7785905449a"
    );
    assert_eq!(xray::to_hex(&s.parent_span_id), "0efbd19962d95b05");
    assert_eq!(xray::to_hex(&s.span_id), "54565fb41ac79632");
    assert_eq!(s.start_time_unix_nano, ts("2022-10-12T00:00:15.064Z"));
    assert_eq!(s.end_time_unix_nano, s.start_time_unix_nano + 693_920_000);
    let a = &s.attributes;
    assert_eq!(
        get_str(a, attr::FAAS_INVOCATION_ID),
        Some("6d68ca91-49c9-448d-89b8-7ca3e6dc66aa")
    );
    assert_eq!(
        get_bool(a, attr::FAAS_COLDSTART),
        Some(true),
        "initDurationMs present"
    );
    assert_eq!(get_str(a, attr::AWS_LAMBDA_OUTCOME), Some("success"));
    assert_eq!(get_f64(a, attr::AWS_LAMBDA_DURATION_MS), Some(693.92));
    assert_eq!(get_i64(a, attr::AWS_LAMBDA_BILLED_DURATION_MS), Some(694));
    assert_eq!(get_i64(a, attr::AWS_LAMBDA_MEMORY_SIZE_MB), Some(128));
    assert_eq!(get_i64(a, attr::AWS_LAMBDA_MAX_MEMORY_USED_MB), Some(84));
    assert_eq!(get_f64(a, attr::AWS_LAMBDA_INIT_DURATION_MS), Some(397.68));
    assert_eq!(get_i64(a, attr::AWS_LAMBDA_PRODUCED_BYTES), Some(16));
    assert_eq!(get_str(a, attr::AWS_LAMBDA_ERROR_TYPE), None);
    assert!(s.status.is_none());
    let phases = typed(&o.spans, span_type::PHASE);
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].name, "someTimeSpan");
    assert_eq!(
        get_str(&phases[0].attributes, attr::AWS_LAMBDA_PHASE),
        Some("someTimeSpan")
    );
    // The `2022-08-02T12:01:23:521Z` quirk.
    assert_eq!(
        phases[0].start_time_unix_nano,
        ts("2022-08-02T12:01:23.521Z")
    );
    assert_eq!(phases[0].parent_span_id, s.span_id);

    let report_t = ts("2022-10-12T00:01:15.000Z");
    let inv_count = int_sum(&o.metrics, metric::FAAS_INVOCATIONS);
    assert_eq!(inv_count.len(), 1);
    assert_eq!(inv_count[0].0, 1);
    assert_eq!(
        inv_count[0].1,
        vec![(attr::AWS_LAMBDA_OUTCOME.to_owned(), "success".to_owned())]
    );
    let point_time = o
        .metrics
        .iter()
        .find(|m| m.name == metric::FAAS_INVOCATIONS)
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points[0].time_unix_nano,
            _ => 0,
        })
        .unwrap();
    assert_eq!(point_time, report_t, "event time, not flush time");
    assert!(int_sum(&o.metrics, metric::FAAS_ERRORS).is_empty());
    assert!(int_sum(&o.metrics, metric::FAAS_TIMEOUTS).is_empty());
    let (n, v, u) = hist(&o.metrics, metric::FAAS_INVOKE_DURATION);
    assert_eq!((n, u), (1, "s"));
    assert!((v - 0.69392).abs() < 1e-9);
    let (_, v, _) = hist(&o.metrics, metric::AWS_LAMBDA_BILLED_DURATION);
    assert!((v - 0.694).abs() < 1e-9);
    let (_, v, u) = hist(&o.metrics, metric::FAAS_MEM_USAGE);
    assert_eq!((v, u), (84.0 * 1_048_576.0, "By"));
}

#[test]
fn start_alone_emitted_at_shutdown() {
    let o = run(&["platform.start.json"], true);
    let inv = typed(&o.spans, span_type::INVOCATION);
    assert_eq!(inv.len(), 1);
    assert_eq!(
        get_bool(&inv[0].attributes, attr::LAMBDAWATCH_INCOMPLETE),
        Some(true)
    );
    assert_eq!(
        get_str(&inv[0].attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("failure")
    );
    assert_eq!(
        xray::to_hex(&inv[0].trace_id),
        "62e900b2710d76f009d6e7785905449a"
    );
}

#[test]
fn runtime_done_alone_emitted_at_shutdown_with_its_status() {
    let o = run(&["platform.runtimeDone.json"], true);
    let inv = typed(&o.spans, span_type::INVOCATION);
    assert_eq!(inv.len(), 1);
    assert_eq!(
        get_str(&inv[0].attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("success")
    );
    assert_eq!(
        get_f64(&inv[0].attributes, attr::AWS_LAMBDA_DURATION_MS),
        Some(140.0)
    );
    assert_eq!(
        xray::to_hex(&inv[0].trace_id),
        "62e900b2710d76f009d6e7785905449a"
    );
    let v = run(&["verbatim/platform.runtimeDone.txt"], true);
    assert_eq!(v.spans.len(), o.spans.len());
}

#[test]
fn report_alone_is_still_an_invocation() {
    // The report of an invocation that started before we subscribed.
    let o = run(&["platform.report.json"], false);
    clean(&o);
    let inv = typed(&o.spans, span_type::INVOCATION);
    assert_eq!(inv.len(), 1);
    let s = inv[0];
    assert_eq!(s.end_time_unix_nano, ts("2022-10-12T00:01:15.000Z"));
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 693_920_000);
    assert_eq!(s.trace_id.len(), 16);
    assert_ne!(s.trace_id, vec![0; 16], "fresh trace id");
    assert!(s.parent_span_id.is_empty());
    // The documented text has a trailing comma: repaired, same result.
    let (_, st) = one("verbatim/platform.report.txt");
    assert_eq!(st.repaired, 1);
    let v = run(&["verbatim/platform.report.txt"], false);
    assert_eq!(typed(&v.spans, span_type::INVOCATION).len(), 1);
}

#[test]
fn restore_sequence() {
    let o = run(
        &[
            "platform.restoreStart.json",
            "platform.restoreRuntimeDone.json",
            "platform.restoreReport.json",
        ],
        false,
    );
    clean(&o);
    let r = typed(&o.spans, span_type::RESTORE);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].name, "restore");
    assert_eq!(r[0].start_time_unix_nano, ts("2022-10-12T00:00:15.064Z"));
    assert_eq!(
        r[0].end_time_unix_nano - r[0].start_time_unix_nano,
        15_190_000
    );
    assert_eq!(
        get_str(&r[0].attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("success")
    );
    let phases = typed(&o.spans, span_type::PHASE);
    assert_eq!(
        phases[0].start_time_unix_nano,
        ts("2022-08-02T12:01:23.521Z")
    );
    assert_eq!(
        phases[0].end_time_unix_nano - phases[0].start_time_unix_nano,
        30_000_000
    );
    let cold = int_sum(&o.metrics, metric::FAAS_COLDSTARTS);
    assert_eq!(
        cold[0].1,
        vec![(
            attr::AWS_LAMBDA_INIT_TYPE.to_owned(),
            "snap-start".to_owned()
        )]
    );
    check_init_start_resource(&o);
}

#[test]
fn logs_dropped_is_a_counter_and_a_warn_record() {
    for f in [
        "platform.logsDropped.json",
        "verbatim/platform.logsDropped.txt",
        "verbatim/awsdocs-github-2022/platform.logsDropped.txt",
    ] {
        let o = run(&[f], false);
        clean(&o);
        let c = int_sum(&o.metrics, metric::AWS_LAMBDA_LOGS_DROPPED);
        assert_eq!(c[0].0, 123, "{f}");
        assert_eq!(o.logs.len(), 1);
        let l = &o.logs[0];
        assert_eq!(l.severity_number, 13);
        assert_eq!(l.severity_text, "WARN");
        assert_eq!(l.time_unix_nano, ts("2022-10-12T00:02:35.000Z"));
        assert_eq!(
            get_i64(&l.attributes, attr::AWS_LAMBDA_DROPPED_RECORDS),
            Some(123)
        );
        assert_eq!(
            get_i64(&l.attributes, attr::AWS_LAMBDA_DROPPED_BYTES),
            Some(12345)
        );
        assert!(body(l).starts_with("Lambda dropped 123 log records (12345 bytes)"));
        assert_eq!(
            get_str(&l.attributes, attr::AWS_LAMBDA_LOG_SOURCE),
            Some("platform")
        );
    }
}

#[test]
fn extension_and_subscription_states_parse_and_emit_nothing() {
    for f in [
        "platform.extension.json",
        "verbatim/platform.extension.txt",
        "platform.telemetrySubscription.json",
        "verbatim/platform.telemetrySubscription.txt",
    ] {
        let (b, s) = one(f);
        assert_eq!(s.unknown_fields + s.odd_values, 0, "{f}");
        match b {
            EventBody::Extension(e) => {
                assert_eq!(e.name.as_deref(), Some("my-telemetry-extension"));
                assert_eq!(e.state.as_deref(), Some("Ready"));
                assert_eq!(e.items, ["INVOKE", "SHUTDOWN"]);
            }
            EventBody::TelemetrySubscription(e) => {
                assert_eq!(e.state.as_deref(), Some("Subscribed"));
                assert_eq!(e.items, ["platform", "function"]);
            }
            other => panic!("{f}: {other:?}"),
        }
        let o = run(&[f], false);
        assert!(o.spans.is_empty() && o.metrics.is_empty() && o.logs.is_empty());
    }
}

// ---------------------------------------------------------------- logs

#[test]
fn plain_function_and_extension_records() {
    for (f, source, text) in [
        (
            "function-plaintext.json",
            "function",
            "[INFO] Hello world, I am a function!",
        ),
        (
            "verbatim/function-plaintext.txt",
            "function",
            "[INFO] Hello world, I am a function!",
        ),
        (
            "extension-plaintext.json",
            "extension",
            "[INFO] Hello world, I am an extension!",
        ),
        (
            "verbatim/extension-plaintext.txt",
            "extension",
            "[INFO] Hello world, I am an extension!",
        ),
    ] {
        let o = run(&[f], false);
        clean(&o);
        assert_eq!(o.logs.len(), 1, "{f}");
        let l = &o.logs[0];
        assert_eq!(body(l), text);
        assert_eq!(l.severity_number, 9, "INFO from the [INFO] prefix");
        assert_eq!(l.severity_text, "INFO");
        assert_eq!(l.time_unix_nano, ts("2022-10-12T00:03:50.000Z"));
        assert_eq!(
            get_str(&l.attributes, attr::AWS_LAMBDA_LOG_SOURCE),
            Some(source)
        );
        assert!(l.trace_id.is_empty(), "no invocation to join");
    }
}

#[test]
fn json_function_and_extension_records() {
    for (f, source, text) in [
        (
            "function-jsonformat.json",
            "function",
            "Hello world, I am a function!",
        ),
        (
            "verbatim/function-jsonformat.txt",
            "function",
            "Hello world, I am a function!",
        ),
        (
            "extension-jsonformat.json",
            "extension",
            "Hello world, I am an extension!",
        ),
        (
            "verbatim/extension-jsonformat.txt",
            "extension",
            "Hello world, I am an extension!",
        ),
    ] {
        let (b, _) = one(f);
        let (EventBody::Function(WireLog::Json(_)) | EventBody::ExtensionLog(WireLog::Json(_))) = b
        else {
            panic!("{f}: record object expected, got {b:?}")
        };
        let o = run(&[f], false);
        clean(&o);
        let l = &o.logs[0];
        assert_eq!(body(l), text);
        assert_eq!(l.severity_number, 9);
        assert_eq!(l.time_unix_nano, ts("2022-10-12T00:03:50.000Z"));
        assert_eq!(
            get_str(&l.attributes, attr::FAAS_INVOCATION_ID),
            Some("79b4f56e-95b1-4643-9700-2807f4e68189")
        );
        assert_eq!(
            get_str(&l.attributes, attr::AWS_LAMBDA_LOG_SOURCE),
            Some(source)
        );
        assert_eq!(
            l.attributes.len(),
            2,
            "level/message/time/requestId are not attributes"
        );
    }
}

#[test]
fn json_log_joins_its_invocation_trace() {
    // A start for the JSON record's request id, then the record: trace and span ids join.
    let dir = std::env::temp_dir().join(format!("lw-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = String::from_utf8(read("platform.start.json"))
        .unwrap()
        .replace(
            "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa",
            "79b4f56e-95b1-4643-9700-2807f4e68189",
        );
    let p = dir.join("start.json");
    std::fs::write(&p, start).unwrap();
    let rel = p.to_str().unwrap().to_owned();
    let o = run(&[&rel, "function-jsonformat.json"], true);
    let inv = typed(&o.spans, span_type::INVOCATION);
    assert_eq!(o.logs[0].trace_id, inv[0].trace_id);
    assert_eq!(o.logs[0].span_id, inv[0].span_id);
    assert_eq!(
        xray::to_hex(&o.logs[0].trace_id),
        "62e900b2710d76f009d6e7785905449a"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn buffering_example_record_without_level() {
    for f in [
        "function-buffering-metadata-example.json",
        "verbatim/function-buffering-metadata-example.txt",
    ] {
        let o = run(&[f], false);
        clean(&o);
        let l = &o.logs[0];
        assert_eq!(body(l), "Hello World");
        assert_eq!(l.severity_number, 0, "no level in the line: unspecified");
        assert_eq!(l.time_unix_nano, ts("2022-08-20T12:31:32.123Z"));
    }
}

// ---------------------------------------------------------------- the whole directory

#[test]
fn every_verbatim_file_matches_its_json_twin() {
    let dir = fixtures();
    for e in std::fs::read_dir(dir.join("verbatim")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("txt") {
            continue;
        }
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let (ev_txt, st) = parse_batch(&std::fs::read(&p).unwrap());
        assert_eq!(ev_txt.len(), 1, "{stem}");
        assert_eq!(st.malformed, 0, "{stem}");
        let (ev_json, _) = parse_batch(&read(&format!("{stem}.json")));
        assert_eq!(
            ev_txt, ev_json,
            "{stem}: verbatim and fixed twin parse the same"
        );
    }
}

#[test]
fn every_fixture_is_covered() {
    // The files the tests above name; a new fixture must get an expectation.
    let covered = [
        "extension-jsonformat.json",
        "extension-plaintext.json",
        "function-buffering-metadata-example.json",
        "function-jsonformat.json",
        "function-plaintext.json",
        "platform.extension.json",
        "platform.initReport.json",
        "platform.initRuntimeDone.json",
        "platform.initStart.json",
        "platform.logsDropped.json",
        "platform.report.json",
        "platform.restoreReport.json",
        "platform.restoreRuntimeDone.json",
        "platform.restoreStart.json",
        "platform.runtimeDone.json",
        "platform.start.json",
        "platform.telemetrySubscription.json",
        "README.md",
        "verbatim",
    ];
    let covered_2022 = [
        "platform.initReport.txt",
        "platform.initStart.txt",
        "platform.logsDropped.txt",
        "platform.start.txt",
    ];
    let dir = fixtures();
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            covered.contains(&name.as_str()),
            "fixture {name} has no golden test"
        );
    }
    for e in std::fs::read_dir(dir.join("verbatim/awsdocs-github-2022")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            covered_2022.contains(&name.as_str()),
            "fixture 2022/{name} has no golden test"
        );
    }
    // And one batch holding every documented example at once loses nothing.
    let mut all = Vec::new();
    for name in covered.iter().filter(|n| n.ends_with(".json")) {
        let v: serde_json::Value = serde_json::from_slice(&read(name)).unwrap();
        all.extend(v.as_array().unwrap().iter().cloned());
    }
    let body = serde_json::to_vec(&all).unwrap();
    let (events, stats) = parse_batch(&body);
    assert_eq!(events.len(), 17);
    assert_eq!(stats.skipped(), 0);
}
