//! Log lines → severity, request id and body: the runtime layouts Lambda functions actually print.
//!
//! Consumes a `function`/`extension` record (plain line or JSON object); produces the pieces of an
//! OTLP `LogRecord`. Pure functions, no state.
//!
//! Plain layouts recognised (level word matched case-sensitively, as runtimes print it):
//! - `[ERROR] message` (bracketed level first);
//! - `ERROR message`, `ERROR: message`, `ERROR:root:message` (Python `logging` default);
//! - Python runtime: `[ERROR]\t2024-01-01T00:00:00.000Z\t<request id>\tmessage`;
//! - Node runtime: `2024-01-01T00:00:00.000Z\t<request id>\tERROR\tmessage`;
//! - Java log4j2 (Lambda layout): `2024-01-01 12:00:00 <request id> ERROR Class - message`, and
//!   `2024-01-01 12:00:00.123 [main] ERROR com.example.Foo - message`.
//!
//! JSON records (Lambda JSON log format, Powertools): severity from `level` (or `levelname`,
//! `severity`), body from `message` (or `msg`), request id from `requestId`/`function_request_id`,
//! time from `timestamp`; every other key becomes an attribute.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value as AV,
};
use serde_json::{Map, Value};

/// OTLP severity numbers (the first of each range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Trace = 1,
    Debug = 5,
    Info = 9,
    Warn = 13,
    Error = 17,
    Fatal = 21,
}

impl Severity {
    pub fn text(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    /// A level word as runtimes print it. `exact` = only the usual uppercase spellings (plain
    /// lines, where a lowercase `error` is more likely prose); otherwise case-insensitive (JSON).
    pub fn from_word(w: &str, exact: bool) -> Option<Severity> {
        let s = if exact {
            std::borrow::Cow::Borrowed(w)
        } else {
            std::borrow::Cow::Owned(w.to_ascii_uppercase())
        };
        Some(match s.as_ref() {
            "TRACE" | "FINEST" | "FINER" => Severity::Trace,
            "DEBUG" | "FINE" => Severity::Debug,
            "INFO" | "NOTICE" => Severity::Info,
            "WARN" | "WARNING" => Severity::Warn,
            "ERROR" | "ERR" | "SEVERE" => Severity::Error,
            "FATAL" | "CRITICAL" | "CRIT" | "ALERT" | "EMERGENCY" => Severity::Fatal,
            _ => return None,
        })
    }
}

/// What a plain line says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlainInfo<'a> {
    pub severity: Option<Severity>,
    pub request_id: Option<&'a str>,
}

/// How many leading tokens may precede the level word (time, date, request id, thread).
const MAX_LEVEL_TOKEN: usize = 5;

/// Detects the level and request id of a plain log line.
pub fn detect_plain(line: &str) -> PlainInfo<'_> {
    let mut info = PlainInfo::default();
    // Only the head of the line can hold a layout prefix.
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let head = &line[..end];
    for (idx, raw) in head
        .split([' ', '\t'])
        .filter(|t| !t.is_empty())
        .take(MAX_LEVEL_TOKEN + 1)
        .enumerate()
    {
        if info.request_id.is_none() && is_uuid(raw) {
            info.request_id = Some(raw);
            continue;
        }
        if info.severity.is_none() {
            let t = raw.trim_start_matches('[');
            // `[ERROR]`, `ERROR:`, `ERROR:root:msg`, `ERROR]`.
            let word = t.split([']', ':']).next().unwrap_or_default();
            if let Some(s) = Severity::from_word(word, true) {
                info.severity = Some(s);
                continue;
            }
        }
        // Past the prefix: stop at the first token that is not time, date, thread or id.
        if idx >= 1 && info.severity.is_some() && info.request_id.is_some() {
            break;
        }
        if !looks_like_prefix(raw) {
            break;
        }
    }
    info
}

/// A token that may appear before the level word in a layout: a date, time, `[thread]`.
fn looks_like_prefix(t: &str) -> bool {
    // `[main]`-style thread names are bracketed.
    if t.len() >= 2 && t.starts_with('[') && t.ends_with(']') {
        return true;
    }
    let t = t.trim_matches(|c| c == '[' || c == ']');
    if t.is_empty() {
        return true;
    }
    // Dates and times start with a digit; ids mix letters and digits.
    t.as_bytes()[0].is_ascii_digit()
        || (t.len() < 40
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && t.chars().any(|c| c.is_ascii_digit()))
}

/// `8-4-4-4-12` hex.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Keys of a JSON record that carry meaning rather than becoming attributes.
const LEVEL_KEYS: &[&str] = &["level", "levelname", "severity", "log.level"];
const MESSAGE_KEYS: &[&str] = &["message", "msg"];
const REQUEST_ID_KEYS: &[&str] = &["requestId", "function_request_id", "AWSRequestId"];
const TIME_KEYS: &[&str] = &["timestamp", "time"];

/// A JSON log record split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonParts {
    pub severity: Option<Severity>,
    pub severity_text: Option<String>,
    /// The message, as JSON (a string, usually); written as an OTLP value by
    /// `crate::log_proto::LogWriter::body_json` (the mapping of [`any_value`]).
    pub body: Option<Value>,
    pub request_id: Option<String>,
    pub time_ns: Option<u64>,
    /// Every other key, each one attribute (nested objects and arrays become OTLP maps and
    /// lists, see [`any_value`]).
    pub attributes: Map<String, Value>,
}

/// Splits a JSON log object: level, message, request id and time are taken out; every other key
/// becomes an attribute.
pub fn split_json(mut m: Map<String, Value>) -> JsonParts {
    let take = |m: &mut Map<String, Value>, keys: &[&str]| -> Option<Value> {
        keys.iter().find_map(|k| m.remove(*k))
    };
    let level = take(&mut m, LEVEL_KEYS);
    let (severity, severity_text) = match level {
        Some(Value::String(s)) => (Severity::from_word(&s, false), Some(s)),
        Some(Value::Number(n)) => (severity_from_number(n.as_f64()), Some(n.to_string())),
        _ => (None, None),
    };
    let body = take(&mut m, MESSAGE_KEYS);
    let request_id = match take(&mut m, REQUEST_ID_KEYS) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let time_ns = match take(&mut m, TIME_KEYS) {
        Some(Value::String(s)) => crate::events::parse_time(&s),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(i) if i > 100_000_000_000 => i.checked_mul(1_000_000),
            Some(i) if i > 0 => i.checked_mul(1_000_000_000),
            _ => n.as_f64().and_then(epoch_number_to_ns),
        },
        _ => None,
    };
    JsonParts {
        severity,
        severity_text,
        body,
        request_id,
        time_ns,
        attributes: m,
    }
}

/// Numeric levels (pino/bunyan: 10 trace … 60 fatal).
fn severity_from_number(n: Option<f64>) -> Option<Severity> {
    let n = n?;
    Some(match n as i64 {
        ..=10 => Severity::Trace,
        11..=20 => Severity::Debug,
        21..=30 => Severity::Info,
        31..=40 => Severity::Warn,
        41..=50 => Severity::Error,
        _ => Severity::Fatal,
    })
}

/// Epoch seconds or milliseconds (Powertools for Java/TS may print either).
fn epoch_number_to_ns(n: f64) -> Option<u64> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let ns = if n > 1e11 { n * 1e6 } else { n * 1e9 };
    Some(ns as u64)
}

/// A JSON value as an OTLP `AnyValue`: null → no value, bool, integer (`i64`) or double,
/// string, array → list, object → map. The log path writes the same mapping straight to bytes
/// (`crate::log_proto`); this builder is the reference its tests compare against.
pub fn any_value(v: Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(AV::BoolValue(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => AV::IntValue(i),
            None => AV::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => Some(AV::StringValue(s)),
        Value::Array(a) => Some(AV::ArrayValue(ArrayValue {
            values: a.into_iter().map(any_value).collect(),
        })),
        Value::Object(o) => Some(AV::KvlistValue(KeyValueList {
            values: o
                .into_iter()
                .map(|(k, v)| KeyValue {
                    key: k,
                    value: Some(any_value(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_detection_table() {
        let rid = "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa";
        let cases: Vec<(String, Option<Severity>, Option<&str>)> = vec![
            ("[ERROR] boom".into(), Some(Severity::Error), None),
            (
                "[INFO] Hello world, I am a function!".into(),
                Some(Severity::Info),
                None,
            ),
            ("[WARNING] disk".into(), Some(Severity::Warn), None),
            ("ERROR something failed".into(), Some(Severity::Error), None),
            (
                "ERROR: something failed".into(),
                Some(Severity::Error),
                None,
            ),
            (
                "ERROR:root:something failed".into(),
                Some(Severity::Error),
                None,
            ),
            ("CRITICAL:app:down".into(), Some(Severity::Fatal), None),
            (
                format!("[ERROR]\t2024-01-01T00:00:00.123Z\t{rid}\tboom"),
                Some(Severity::Error),
                Some(rid),
            ),
            (
                format!("[DEBUG]\t2024-01-01T00:00:00.123Z\t{rid}\tdetail"),
                Some(Severity::Debug),
                Some(rid),
            ),
            (
                format!("2024-01-01T00:00:00.123Z\t{rid}\tERROR\tboom"),
                Some(Severity::Error),
                Some(rid),
            ),
            (
                format!("2024-01-01T00:00:00.123Z\t{rid}\tINFO\thi"),
                Some(Severity::Info),
                Some(rid),
            ),
            (
                format!("2024-01-01 12:00:00 {rid} ERROR Handler - boom"),
                Some(Severity::Error),
                Some(rid),
            ),
            (
                format!("2024-01-01 12:00:00 {rid} WARN  Handler - meh"),
                Some(Severity::Warn),
                Some(rid),
            ),
            (
                "2024-01-01 12:00:00.123 [main] ERROR com.example.Foo - boom".into(),
                Some(Severity::Error),
                None,
            ),
            ("Hello World".into(), None, None),
            ("the ERROR happened later in prose".into(), None, None),
            ("error lowercase is prose".into(), None, None),
            ("".into(), None, None),
            (
                format!("START RequestId: {rid} Version: $LATEST"),
                None,
                None,
            ),
        ];
        for (line, sev, id) in &cases {
            let info = detect_plain(line);
            assert_eq!(info.severity, *sev, "severity of {line:?}");
            if id.is_some() {
                assert_eq!(info.request_id, *id, "request id of {line:?}");
            }
        }
    }

    #[test]
    fn json_record_split() {
        let v: Value = serde_json::json!({
            "timestamp": "2022-10-12T00:03:50.000Z",
            "level": "warning",
            "requestId": "79b4f56e-95b1-4643-9700-2807f4e68189",
            "message": "Hello",
            "service": "payments",
            "cold_start": true,
            "nested": {"a": [1, 2.5]}
        });
        let Value::Object(m) = v else { unreachable!() };
        let p = split_json(m);
        assert_eq!(p.severity, Some(Severity::Warn));
        assert_eq!(p.severity_text.as_deref(), Some("warning"));
        assert_eq!(p.body, Some(Value::String("Hello".into())));
        assert_eq!(
            p.request_id.as_deref(),
            Some("79b4f56e-95b1-4643-9700-2807f4e68189")
        );
        assert_eq!(p.time_ns, Some(1_665_533_030_000_000_000));
        let keys: Vec<_> = p.attributes.keys().map(String::as_str).collect();
        assert_eq!(keys, ["cold_start", "nested", "service"]);
        let Some(AV::KvlistValue(l)) = any_value(p.attributes["nested"].clone()).value else {
            panic!("nested map")
        };
        assert_eq!(l.values[0].key, "a");
        assert_eq!(
            l.values[0].value.as_ref().unwrap().value,
            Some(AV::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(AV::IntValue(1))
                    },
                    AnyValue {
                        value: Some(AV::DoubleValue(2.5))
                    }
                ]
            }))
        );
    }

    #[test]
    fn numeric_levels_and_epoch_times() {
        let v = serde_json::json!({"level": 50, "msg": "x", "time": 1_700_000_000_123u64});
        let Value::Object(m) = v else { unreachable!() };
        let p = split_json(m);
        assert_eq!(p.severity, Some(Severity::Error));
        assert_eq!(p.time_ns, Some(1_700_000_000_123_000_000));
    }
}
