//! Telemetry API event shapes: builders for every `platform.*` event the sandbox emits, the
//! `function`/`extension` records, and how one event is rendered for a subscriber's schema version.
//!
//! Events are built once in the newest shape (`2025-01-29`, identical to `2022-12-13` for
//! non-Managed-Instances functions) and rendered per subscriber: `2022-07-01` has no
//! `functionName`/`functionVersion`/`instanceId`/`instanceMaxMemory` in `platform.initStart`, no
//! `status` in `platform.initReport`, and its `function`/`extension` records are always strings.
//! From `2022-12-13` a record is a JSON object when the line is one (the JSON log format).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Schema versions the Telemetry API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Schema {
    V20220701,
    V20221213,
    V20250129,
}

impl Schema {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "2022-07-01" => Some(Schema::V20220701),
            "2022-12-13" => Some(Schema::V20221213),
            "2025-01-29" => Some(Schema::V20250129),
            _ => None,
        }
    }
}

/// The three telemetry streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Platform,
    Function,
    Extension,
}

impl Stream {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(Stream::Platform),
            "function" => Some(Stream::Function),
            "extension" => Some(Stream::Extension),
            _ => None,
        }
    }
}

/// One event as emitted, before rendering for a schema.
#[derive(Debug, Clone)]
pub struct Event {
    pub stream: Stream,
    pub value: Value,
}

impl Event {
    fn platform(kind: &str, record: Value) -> Self {
        Event {
            stream: Stream::Platform,
            value: json!({"time": now_rfc3339(), "type": kind, "record": record}),
        }
    }

    /// `platform.*` type name, or `function`/`extension`.
    pub fn kind(&self) -> &str {
        self.value.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The event as a subscriber with `schema` receives it.
    pub fn render(&self, schema: Schema) -> Value {
        let mut v = self.value.clone();
        match self.stream {
            Stream::Function | Stream::Extension => {
                if schema >= Schema::V20221213
                    && let Some(Value::String(line)) = v.get("record")
                    && line.trim_start().starts_with('{')
                    && let Ok(obj @ Value::Object(_)) = serde_json::from_str::<Value>(line)
                {
                    v["record"] = obj;
                }
            }
            Stream::Platform if schema == Schema::V20220701 => {
                let kind = self.kind().to_owned();
                if let Some(Value::Object(rec)) = v.get_mut("record") {
                    match kind.as_str() {
                        "platform.initStart" => {
                            for k in [
                                "functionName",
                                "functionVersion",
                                "instanceId",
                                "instanceMaxMemory",
                            ] {
                                rec.remove(k);
                            }
                        }
                        "platform.initReport" => {
                            rec.remove("status");
                        }
                        _ => {}
                    }
                }
            }
            Stream::Platform => {}
        }
        // `platform.start.functionArn` is new in 2025-01-29.
        if schema < Schema::V20250129
            && self.kind() == "platform.start"
            && let Some(Value::Object(rec)) = v.get_mut("record")
        {
            rec.remove("functionArn");
        }
        v
    }
}

/// A measured span (`name`, `start`, `durationMs`).
#[derive(Debug, Clone)]
pub struct Span {
    pub name: &'static str,
    pub start_unix_ms: f64,
    pub duration_ms: f64,
}

fn spans_json(spans: &[Span]) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "start": rfc3339(s.start_unix_ms as u64),
                    "durationMs": round2(s.duration_ms),
                })
            })
            .collect(),
    )
}

/// X-Ray tracing object of `platform.start`/`runtimeDone`/`report`.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub span_id: String,
    pub value: String,
}

impl Tracing {
    fn json(&self) -> Value {
        json!({"spanId": self.span_id, "type": "X-Amzn-Trace-Id", "value": self.value})
    }
}

/// Facts of the function every initStart repeats.
#[derive(Debug, Clone)]
pub struct InitFacts<'a> {
    pub initialization_type: &'a str,
    pub phase: &'a str,
    pub function_name: &'a str,
    pub function_version: &'a str,
    pub instance_id: &'a str,
    pub memory_mb: u32,
}

pub fn init_start(f: &InitFacts<'_>) -> Event {
    Event::platform(
        "platform.initStart",
        json!({
            "initializationType": f.initialization_type,
            "phase": f.phase,
            "runtimeVersion": "provided:al2023",
            "runtimeVersionArn": "arn:aws:lambda:::runtime:lambdawatch-sandbox",
            "functionName": f.function_name,
            "functionVersion": f.function_version,
            "instanceId": f.instance_id,
            "instanceMaxMemory": f.memory_mb,
        }),
    )
}

pub fn init_runtime_done(init_type: &str, phase: &str, status: &str, spans: &[Span]) -> Event {
    let mut rec = json!({
        "initializationType": init_type,
        "phase": phase,
        "status": status,
        "spans": spans_json(spans),
    });
    if status != "success" {
        rec["errorType"] = json!(format!("Runtime.{}", capitalise(status)));
    }
    Event::platform("platform.initRuntimeDone", rec)
}

pub fn init_report(
    init_type: &str,
    phase: &str,
    status: &str,
    duration_ms: f64,
    spans: &[Span],
) -> Event {
    let mut rec = json!({
        "initializationType": init_type,
        "status": status,
        "phase": phase,
        "metrics": {"durationMs": round2(duration_ms)},
        "spans": spans_json(spans),
    });
    if status != "success" {
        rec["errorType"] = json!(format!("Runtime.{}", capitalise(status)));
    }
    Event::platform("platform.initReport", rec)
}

/// `platform.start`; `functionArn` is only rendered for schema `2025-01-29` (see [`Event::render`]).
pub fn start(request_id: &str, version: &str, function_arn: &str, tracing: &Tracing) -> Event {
    Event::platform(
        "platform.start",
        json!({
            "requestId": request_id,
            "version": version,
            "functionArn": function_arn,
            "tracing": tracing.json(),
        }),
    )
}

pub fn runtime_done(
    request_id: &str,
    status: &str,
    error_type: Option<&str>,
    tracing: &Tracing,
    spans: &[Span],
    duration_ms: f64,
    produced_bytes: u64,
) -> Event {
    let mut rec = json!({
        "requestId": request_id,
        "status": status,
        "tracing": tracing.json(),
        "spans": spans_json(spans),
        "metrics": {"durationMs": round2(duration_ms), "producedBytes": produced_bytes},
    });
    if let Some(e) = error_type {
        rec["errorType"] = json!(e);
    }
    Event::platform("platform.runtimeDone", rec)
}

/// Metrics of `platform.report`.
#[derive(Debug, Clone)]
pub struct ReportMetrics {
    pub duration_ms: f64,
    pub billed_duration_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    pub init_duration_ms: Option<f64>,
}

pub fn report(
    request_id: &str,
    status: &str,
    error_type: Option<&str>,
    tracing: &Tracing,
    m: &ReportMetrics,
    spans: &[Span],
) -> Event {
    let mut metrics = Map::new();
    metrics.insert("durationMs".into(), json!(round2(m.duration_ms)));
    metrics.insert("billedDurationMs".into(), json!(m.billed_duration_ms));
    metrics.insert("memorySizeMB".into(), json!(m.memory_size_mb));
    metrics.insert("maxMemoryUsedMB".into(), json!(m.max_memory_used_mb));
    if let Some(i) = m.init_duration_ms {
        metrics.insert("initDurationMs".into(), json!(round2(i)));
    }
    let mut rec = json!({
        "requestId": request_id,
        "status": status,
        "metrics": Value::Object(metrics),
        "tracing": tracing.json(),
        "spans": spans_json(spans),
    });
    if let Some(e) = error_type {
        rec["errorType"] = json!(e);
    }
    Event::platform("platform.report", rec)
}

pub fn extension(name: &str, state: &str, events: &[&str], error_type: Option<&str>) -> Event {
    let mut rec = json!({"name": name, "state": state, "events": events});
    if let Some(e) = error_type {
        rec["errorType"] = json!(e);
    }
    Event::platform("platform.extension", rec)
}

pub fn telemetry_subscription(name: &str, types: &[&str]) -> Event {
    Event::platform(
        "platform.telemetrySubscription",
        json!({"name": name, "state": "Subscribed", "types": types}),
    )
}

pub fn logs_dropped(records: u64, bytes: u64) -> Event {
    Event::platform(
        "platform.logsDropped",
        json!({
            "droppedBytes": bytes,
            "droppedRecords": records,
            "reason": "Some logs were dropped because the downstream consumer is slower than the logs production rate",
        }),
    )
}

/// A line the function or an extension wrote (without its newline).
pub fn log_line(stream: Stream, line: &str) -> Event {
    let kind = match stream {
        Stream::Extension => "extension",
        _ => "function",
    };
    Event {
        stream,
        value: json!({"time": now_rfc3339(), "type": kind, "record": line}),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Rounded to 2 decimals, as Lambda reports durations.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

pub fn now_rfc3339() -> String {
    rfc3339(unix_ms_now() as u64)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../shared/fixtures/telemetry-api/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap();
        v[0].clone()
    }

    /// Every key of the documented example is present in ours with the same JSON type.
    fn assert_same_shape(doc: &Value, ours: &Value, path: &str) {
        match (doc, ours) {
            (Value::Object(d), Value::Object(o)) => {
                for (k, dv) in d {
                    let ov = o
                        .get(k)
                        .unwrap_or_else(|| panic!("{path}.{k} missing in {ours}"));
                    assert_same_shape(dv, ov, &format!("{path}.{k}"));
                }
            }
            (Value::Array(d), Value::Array(o)) => {
                if let (Some(d0), Some(o0)) = (d.first(), o.first()) {
                    assert_same_shape(d0, o0, &format!("{path}[0]"));
                }
            }
            (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_)) => {}
            _ => panic!("{path}: documented {doc} vs ours {ours}"),
        }
    }

    #[test]
    fn shapes_match_documented_examples() {
        let tracing = Tracing {
            span_id: "54565fb41ac79632".into(),
            value: "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"
                .into(),
        };
        let span = [Span {
            name: "responseLatency",
            start_unix_ms: 1_660_000_000_000.0,
            duration_ms: 1.5,
        }];
        let facts = InitFacts {
            initialization_type: "on-demand",
            phase: "init",
            function_name: "f",
            function_version: "$LATEST",
            instance_id: "i",
            memory_mb: 128,
        };
        let metrics = ReportMetrics {
            duration_ms: 1.0,
            billed_duration_ms: 1,
            memory_size_mb: 128,
            max_memory_used_mb: 10,
            init_duration_ms: Some(3.0),
        };
        let cases = [
            ("platform.initStart", init_start(&facts)),
            (
                "platform.initRuntimeDone",
                init_runtime_done("on-demand", "init", "success", &span),
            ),
            (
                "platform.initReport",
                init_report("on-demand", "init", "success", 2.0, &span),
            ),
            (
                "platform.start",
                start(
                    "r",
                    "$LATEST",
                    "arn:aws:lambda:us-east-1:123456789012:function:f",
                    &tracing,
                ),
            ),
            (
                "platform.runtimeDone",
                runtime_done("r", "success", None, &tracing, &span, 1.0, 3),
            ),
            (
                "platform.report",
                report("r", "success", None, &tracing, &metrics, &span),
            ),
            (
                "platform.extension",
                extension("x", "Ready", &["INVOKE", "SHUTDOWN"], None),
            ),
            (
                "platform.telemetrySubscription",
                telemetry_subscription("x", &["platform", "function"]),
            ),
            ("platform.logsDropped", logs_dropped(1, 2)),
            (
                "function-plaintext",
                log_line(Stream::Function, "[INFO] hi"),
            ),
            (
                "function-jsonformat",
                log_line(
                    Stream::Function,
                    r#"{"timestamp":"t","level":"INFO","requestId":"r","message":"m"}"#,
                ),
            ),
            (
                "extension-jsonformat",
                log_line(
                    Stream::Extension,
                    r#"{"timestamp":"t","level":"INFO","requestId":"r","message":"m"}"#,
                ),
            ),
        ];
        for (name, ev) in cases {
            let doc = fixture(name);
            let ours = ev.render(Schema::V20250129);
            assert_eq!(ours["type"], doc["type"], "{name}");
            assert_same_shape(&doc, &ours, name);
        }
    }

    #[test]
    fn schema_2022_07_01_rendering() {
        let line = log_line(Stream::Function, r#"{"level":"INFO","message":"m"}"#);
        assert!(line.render(Schema::V20220701)["record"].is_string());
        assert!(line.render(Schema::V20221213)["record"].is_object());
        let plain = log_line(Stream::Function, "{not json");
        assert!(plain.render(Schema::V20250129)["record"].is_string());
        let facts = InitFacts {
            initialization_type: "on-demand",
            phase: "init",
            function_name: "f",
            function_version: "$LATEST",
            instance_id: "i",
            memory_mb: 128,
        };
        let old = init_start(&facts).render(Schema::V20220701);
        assert!(old["record"].get("instanceId").is_none());
        assert_eq!(old["record"]["phase"], "init");
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_665_532_950_123), "2022-10-12T00:02:30.123Z");
    }
}
