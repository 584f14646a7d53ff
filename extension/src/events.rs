//! Telemetry API wire types and their tolerant parser.
//!
//! Consumes: the body of one Telemetry API POST (a JSON array of `{time, type, record}` events;
//! a single bare event object is accepted too). Produces: a `Vec<Event>` plus [`ParseStats`]
//! saying what was odd. Never fails as a whole: each array element is parsed on its own, so a
//! broken element, an unknown `type`, an unknown field or an odd value is counted and skipped and
//! the rest of the batch survives.
//!
//! Quirks accepted on purpose (see `../shared/fixtures/telemetry-api/README.md`):
//! - times like `2022-08-02T12:01:23:521Z` (colon before the milliseconds);
//! - `instanceMaxMemory` as an integer or a string (`"256"`, `"256 MB"`);
//! - numbers as `2`, `2.0` or `"2"`;
//! - a `function`/`extension` `record` that is a string or an object (JSON log format);
//! - the two documented examples that are not valid JSON (a missing `,` between members, a
//!   trailing `,`) are repaired per element when strict parsing fails, and counted as `repaired`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One parsed Telemetry API event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The envelope `time`, as Unix nanoseconds, when it parsed.
    pub time_ns: Option<u64>,
    pub body: EventBody,
}

/// The platform variants are boxed: an [`Event`] stays small (a log record and a few words), so
/// a batch of a thousand log lines is a small vector that moves cheaply; platform events are a
/// handful per invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    InitStart(Box<InitStart>),
    InitRuntimeDone(Box<PhaseDone>),
    InitReport(Box<PhaseDone>),
    RestoreStart(Box<InitStart>),
    RestoreRuntimeDone(Box<PhaseDone>),
    RestoreReport(Box<PhaseDone>),
    Start(Box<Start>),
    RuntimeDone(Box<InvocationDone>),
    Report(Box<InvocationDone>),
    Extension(Box<ExtensionState>),
    TelemetrySubscription(Box<ExtensionState>),
    LogsDropped(Box<LogsDropped>),
    /// A `function` log record.
    Function(LogRecord),
    /// An `extension` log record.
    ExtensionLog(LogRecord),
}

/// `platform.initStart` and `platform.restoreStart`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitStart {
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub runtime_version: Option<String>,
    pub runtime_version_arn: Option<String>,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub instance_id: Option<String>,
    /// MB.
    pub instance_max_memory: Option<u64>,
    pub tracing: Option<Tracing>,
}

/// `platform.init{RuntimeDone,Report}` and `platform.restore{RuntimeDone,Report}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseDone {
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
    /// `metrics.durationMs` (reports only).
    pub duration_ms: Option<f64>,
    pub spans: Vec<PlatformSpan>,
    pub tracing: Option<Tracing>,
}

/// `platform.start`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Start {
    pub request_id: String,
    pub version: Option<String>,
    pub tracing: Option<Tracing>,
    /// Schema `2025-01-29` (seen from the RIE in Managed Instances mode).
    pub function_arn: Option<String>,
}

/// `platform.runtimeDone` and `platform.report`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationDone {
    pub request_id: String,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub metrics: InvocationMetrics,
    pub spans: Vec<PlatformSpan>,
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationMetrics {
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<f64>,
    pub memory_size_mb: Option<u64>,
    pub max_memory_used_mb: Option<u64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
    pub produced_bytes: Option<u64>,
}

/// `{name, start, durationMs}` inside `spans`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformSpan {
    pub name: String,
    pub start_ns: u64,
    pub duration_ms: f64,
}

/// `{type, value, spanId}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracing {
    pub kind: Option<String>,
    pub value: Option<String>,
    pub span_id: Option<String>,
}

/// `platform.extension` and `platform.telemetrySubscription`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtensionState {
    pub name: Option<String>,
    pub state: Option<String>,
    pub error_type: Option<String>,
    /// `events` (extension) or `types` (subscription).
    pub items: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsDropped {
    pub dropped_bytes: u64,
    pub dropped_records: u64,
    pub reason: Option<String>,
}

/// A `function` or `extension` record: a plain line or a JSON object (JSON log format).
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    Text(String),
    Json(Map<String, Value>),
}

/// What the parser met besides well-formed events. Every field is a count of skipped or
/// tolerated things; none of them loses the rest of the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Events produced.
    pub events: u64,
    /// Elements skipped: unknown `type`.
    pub unknown_types: u64,
    /// Record members we do not know (kept nowhere, counted).
    pub unknown_fields: u64,
    /// Values of an unexpected shape (ignored, or coerced when the meaning is clear).
    pub odd_values: u64,
    /// Elements skipped: not JSON even after repair, or not an object, or a required field missing.
    pub malformed: u64,
    /// Elements that parsed only after repairing a missing or trailing comma.
    pub repaired: u64,
}

impl ParseStats {
    pub fn add(&mut self, o: &ParseStats) {
        self.events += o.events;
        self.unknown_types += o.unknown_types;
        self.unknown_fields += o.unknown_fields;
        self.odd_values += o.odd_values;
        self.malformed += o.malformed;
        self.repaired += o.repaired;
    }

    /// Elements dropped (not turned into an event).
    pub fn skipped(&self) -> u64 {
        self.unknown_types + self.malformed
    }
}

/// One element, borrowing `time` and `type` from the body when it can (no allocation).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    time: Field<'a>,
    #[serde(rename = "type", borrow, default)]
    kind: Field<'a>,
    #[serde(default)]
    record: Value,
}

/// A member expected to be a string: the string, absent/null, or anything else (counted).
#[derive(Debug, Default)]
enum Field<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Odd,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Missing)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Odd)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::Odd)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::Odd)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Odd)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Odd)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Odd)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses one POST body. Never fails: what cannot be used is counted in the stats.
pub fn parse_batch(body: &[u8]) -> (Vec<Event>, ParseStats) {
    let mut stats = ParseStats::default();
    let mut out = Vec::new();
    // Fast path: a well-formed array.
    if let Ok(envs) = serde_json::from_slice::<Vec<Envelope>>(body) {
        out.reserve(envs.len());
        let mut tc = TimeCache::default();
        for env in envs {
            push_event(env, &mut out, &mut stats, &mut tc);
        }
        return (out, stats);
    }
    // Slow path: element by element, so one broken element costs only itself.
    match split_top_level(body) {
        Some(elements) => {
            let mut tc = TimeCache::default();
            for el in elements {
                parse_element(el, &mut out, &mut stats, &mut tc);
            }
        }
        None => stats.malformed += 1,
    }
    (out, stats)
}

fn parse_element(el: &[u8], out: &mut Vec<Event>, stats: &mut ParseStats, tc: &mut TimeCache) {
    match serde_json::from_slice::<Envelope>(el) {
        Ok(env) => push_event(env, out, stats, tc),
        Err(_) => {
            let fixed = repair_commas(el);
            match serde_json::from_slice::<Envelope>(&fixed) {
                Ok(env) => {
                    stats.repaired += 1;
                    push_event(env, out, stats, tc);
                }
                Err(_) => stats.malformed += 1,
            }
        }
    }
}

/// Splits a JSON array (or a single object) into its top-level elements without parsing them.
/// `None` when the body is neither.
fn split_top_level(body: &[u8]) -> Option<Vec<&[u8]>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    match body[start] {
        b'{' => return Some(vec![&body[start..]]),
        b'[' => {}
        _ => return None,
    }
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut el_start = start + 1;
    for (i, &b) in body.iter().enumerate().skip(start + 1) {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                push_nonblank(&mut elements, &body[el_start..i]);
                return Some(elements);
            }
            b',' if depth == 0 => {
                push_nonblank(&mut elements, &body[el_start..i]);
                el_start = i + 1;
            }
            _ => {}
        }
    }
    // Truncated array: keep what is there.
    push_nonblank(&mut elements, &body[el_start..]);
    Some(elements)
}

fn push_nonblank<'a>(v: &mut Vec<&'a [u8]>, s: &'a [u8]) {
    if s.iter().any(|b| !b.is_ascii_whitespace()) {
        v.push(s);
    }
}

/// Removes trailing commas (`,}` / `,]`) and inserts a missing comma between a value and the next
/// member (`"a" "b"`, `1 "b"`, `} "b"`). Both are invalid JSON, so valid input is never changed.
fn repair_commas(el: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(el.len() + 8);
    let mut in_str = false;
    let mut escaped = false;
    // Last significant byte outside strings, and whether it ended a value.
    let mut last_ends_value = false;
    let mut i = 0;
    while i < el.len() {
        let b = el[i];
        if in_str {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_str = false;
                    last_ends_value = true;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b',' => {
                let next = el[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if !matches!(next, Some(b'}') | Some(b']')) {
                    out.push(b);
                }
                last_ends_value = false;
            }
            b'"' => {
                if last_ends_value {
                    out.push(b',');
                }
                out.push(b);
                in_str = true;
            }
            b'}' | b']' => {
                out.push(b);
                last_ends_value = true;
            }
            b'{' | b'[' | b':' => {
                out.push(b);
                last_ends_value = false;
            }
            c if c.is_ascii_whitespace() => out.push(c),
            c => {
                out.push(c);
                // Digits and literal letters end (or continue) a value.
                last_ends_value = c.is_ascii_alphanumeric() || c == b'.';
            }
        }
        i += 1;
    }
    out
}

fn push_event(env: Envelope, out: &mut Vec<Event>, stats: &mut ParseStats, tc: &mut TimeCache) {
    let time_ns = match &env.time {
        Field::Str(s) => {
            let t = parse_time_with(s, tc);
            if t.is_none() {
                stats.odd_values += 1;
            }
            t
        }
        Field::Missing => None,
        Field::Odd => {
            stats.odd_values += 1;
            None
        }
    };
    let Field::Str(kind) = env.kind else {
        stats.malformed += 1;
        return;
    };
    let kind: &str = &kind;
    let body = match kind {
        "function" | "extension" => {
            let rec = match env.record {
                Value::String(s) => LogRecord::Text(s),
                Value::Object(m) => LogRecord::Json(m),
                Value::Null => {
                    stats.malformed += 1;
                    return;
                }
                other => {
                    stats.odd_values += 1;
                    LogRecord::Text(other.to_string())
                }
            };
            if kind == "function" {
                EventBody::Function(rec)
            } else {
                EventBody::ExtensionLog(rec)
            }
        }
        _ => {
            let Value::Object(map) = env.record else {
                if known_platform(kind) {
                    stats.malformed += 1;
                } else {
                    stats.unknown_types += 1;
                }
                return;
            };
            let mut r = Rec { m: &map, stats };
            match kind {
                "platform.initStart" => {
                    EventBody::InitStart(Box::new(r.init_start(INIT_START_FIELDS)))
                }
                "platform.restoreStart" => {
                    EventBody::RestoreStart(Box::new(r.init_start(INIT_START_FIELDS)))
                }
                "platform.initRuntimeDone" => EventBody::InitRuntimeDone(Box::new(r.phase_done())),
                "platform.initReport" => EventBody::InitReport(Box::new(r.phase_done())),
                "platform.restoreRuntimeDone" => {
                    EventBody::RestoreRuntimeDone(Box::new(r.phase_done()))
                }
                "platform.restoreReport" => EventBody::RestoreReport(Box::new(r.phase_done())),
                "platform.start" => match r.start() {
                    Some(s) => EventBody::Start(Box::new(s)),
                    None => {
                        stats.malformed += 1;
                        return;
                    }
                },
                "platform.runtimeDone" | "platform.report" => match r.invocation_done() {
                    Some(d) if kind == "platform.report" => EventBody::Report(Box::new(d)),
                    Some(d) => EventBody::RuntimeDone(Box::new(d)),
                    None => {
                        stats.malformed += 1;
                        return;
                    }
                },
                "platform.extension" => EventBody::Extension(Box::new(r.extension_state("events"))),
                "platform.telemetrySubscription" => {
                    EventBody::TelemetrySubscription(Box::new(r.extension_state("types")))
                }
                "platform.logsDropped" => EventBody::LogsDropped(Box::new(r.logs_dropped())),
                _ => {
                    stats.unknown_types += 1;
                    return;
                }
            }
        }
    };
    stats.events += 1;
    out.push(Event { time_ns, body });
}

fn known_platform(kind: &str) -> bool {
    matches!(
        kind,
        "platform.initStart"
            | "platform.initRuntimeDone"
            | "platform.initReport"
            | "platform.restoreStart"
            | "platform.restoreRuntimeDone"
            | "platform.restoreReport"
            | "platform.start"
            | "platform.runtimeDone"
            | "platform.report"
            | "platform.extension"
            | "platform.telemetrySubscription"
            | "platform.logsDropped"
    )
}

const INIT_START_FIELDS: &[&str] = &[
    "initializationType",
    "phase",
    "runtimeVersion",
    "runtimeVersionArn",
    "functionName",
    "functionVersion",
    "instanceId",
    "instanceMaxMemory",
    "tracing",
];
const PHASE_DONE_FIELDS: &[&str] = &[
    "initializationType",
    "phase",
    "status",
    "errorType",
    "metrics",
    "spans",
    "tracing",
];
const START_FIELDS: &[&str] = &["requestId", "version", "tracing", "functionArn"];
const DONE_FIELDS: &[&str] = &[
    "requestId",
    "status",
    "errorType",
    "metrics",
    "spans",
    "tracing",
];
const DONE_METRIC_FIELDS: &[&str] = &[
    "durationMs",
    "billedDurationMs",
    "memorySizeMB",
    "maxMemoryUsedMB",
    "initDurationMs",
    "restoreDurationMs",
    "producedBytes",
];

/// A record object being read, counting what is odd.
struct Rec<'a, 's> {
    m: &'a Map<String, Value>,
    stats: &'s mut ParseStats,
}

impl<'a> Rec<'a, '_> {
    fn count_unknown(&mut self, known: &[&str]) {
        let unknown = self
            .m
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .count();
        self.stats.unknown_fields += unknown as u64;
    }

    fn string(&mut self, k: &str) -> Option<String> {
        match self.m.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Number(n) => {
                self.stats.odd_values += 1;
                Some(n.to_string())
            }
            _ => {
                self.stats.odd_values += 1;
                None
            }
        }
    }

    fn f64(&mut self, k: &str) -> Option<f64> {
        let v = self.m.get(k)?;
        let r = value_f64(v);
        if r.is_none() && !v.is_null() {
            self.stats.odd_values += 1;
        }
        r
    }

    fn u64(&mut self, k: &str) -> Option<u64> {
        let v = self.m.get(k)?;
        let r = value_u64(v);
        if r.is_none() && !v.is_null() {
            self.stats.odd_values += 1;
        }
        r
    }

    fn sub(&mut self, k: &str) -> Option<&'a Map<String, Value>> {
        let m: &'a Map<String, Value> = self.m;
        match m.get(k)? {
            Value::Object(o) => Some(o),
            Value::Null => None,
            _ => {
                self.stats.odd_values += 1;
                None
            }
        }
    }

    fn tracing(&mut self) -> Option<Tracing> {
        let m = self.m;
        let t = match m.get("tracing")? {
            Value::Object(o) => o,
            Value::Null => return None,
            _ => {
                self.stats.odd_values += 1;
                return None;
            }
        };
        let mut r = Rec {
            m: t,
            stats: self.stats,
        };
        r.count_unknown(&["type", "value", "spanId"]);
        Some(Tracing {
            kind: r.string("type"),
            value: r.string("value"),
            span_id: r.string("spanId"),
        })
    }

    fn spans(&mut self) -> Vec<PlatformSpan> {
        let Some(v) = self.m.get("spans") else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            if !v.is_null() {
                self.stats.odd_values += 1;
            }
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Object(o) = item else {
                self.stats.odd_values += 1;
                continue;
            };
            let mut r = Rec {
                m: o,
                stats: self.stats,
            };
            r.count_unknown(&["name", "start", "durationMs"]);
            let name = r.string("name");
            let start = r.string("start").and_then(|s| parse_time(&s));
            let dur = r.f64("durationMs");
            match (name, start, dur) {
                (Some(name), Some(start_ns), Some(duration_ms)) if duration_ms >= 0.0 => {
                    out.push(PlatformSpan {
                        name,
                        start_ns,
                        duration_ms,
                    })
                }
                _ => self.stats.odd_values += 1,
            }
        }
        out
    }

    fn init_start(&mut self, known: &[&str]) -> InitStart {
        self.count_unknown(known);
        InitStart {
            initialization_type: self.string("initializationType"),
            phase: self.string("phase"),
            runtime_version: self.string("runtimeVersion"),
            runtime_version_arn: self.string("runtimeVersionArn"),
            function_name: self.string("functionName"),
            function_version: self.string("functionVersion"),
            instance_id: self.string("instanceId"),
            instance_max_memory: self.u64("instanceMaxMemory"),
            tracing: self.tracing(),
        }
    }

    fn phase_done(&mut self) -> PhaseDone {
        self.count_unknown(PHASE_DONE_FIELDS);
        let duration_ms = self
            .sub("metrics")
            .and_then(|m| m.get("durationMs").cloned());
        let duration_ms = match duration_ms {
            Some(v) => {
                let f = value_f64(&v);
                if f.is_none() {
                    self.stats.odd_values += 1;
                }
                f
            }
            None => None,
        };
        PhaseDone {
            initialization_type: self.string("initializationType"),
            phase: self.string("phase"),
            status: self.string("status"),
            error_type: self.string("errorType"),
            duration_ms,
            spans: self.spans(),
            tracing: self.tracing(),
        }
    }

    fn start(&mut self) -> Option<Start> {
        self.count_unknown(START_FIELDS);
        Some(Start {
            request_id: self.string("requestId")?,
            version: self.string("version"),
            tracing: self.tracing(),
            function_arn: self.string("functionArn"),
        })
    }

    fn invocation_done(&mut self) -> Option<InvocationDone> {
        self.count_unknown(DONE_FIELDS);
        let request_id = self.string("requestId")?;
        let metrics = match self.sub("metrics") {
            Some(m) => {
                let mut r = Rec {
                    m,
                    stats: self.stats,
                };
                r.count_unknown(DONE_METRIC_FIELDS);
                InvocationMetrics {
                    duration_ms: r.f64("durationMs"),
                    billed_duration_ms: r.f64("billedDurationMs"),
                    memory_size_mb: r.u64("memorySizeMB"),
                    max_memory_used_mb: r.u64("maxMemoryUsedMB"),
                    init_duration_ms: r.f64("initDurationMs"),
                    restore_duration_ms: r.f64("restoreDurationMs"),
                    produced_bytes: r.u64("producedBytes"),
                }
            }
            None => InvocationMetrics::default(),
        };
        Some(InvocationDone {
            request_id,
            status: self.string("status"),
            error_type: self.string("errorType"),
            metrics,
            spans: self.spans(),
            tracing: self.tracing(),
        })
    }

    fn extension_state(&mut self, list_key: &str) -> ExtensionState {
        self.count_unknown(&["name", "state", "errorType", list_key]);
        let items = match self.m.get(list_key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                self.stats.odd_values += 1;
                Vec::new()
            }
        };
        ExtensionState {
            name: self.string("name"),
            state: self.string("state"),
            error_type: self.string("errorType"),
            items,
        }
    }

    fn logs_dropped(&mut self) -> LogsDropped {
        self.count_unknown(&["droppedBytes", "droppedRecords", "reason"]);
        LogsDropped {
            dropped_bytes: self.u64("droppedBytes").unwrap_or(0),
            dropped_records: self.u64("droppedRecords").unwrap_or(0),
            reason: self.string("reason"),
        }
    }
}

/// A number as `f64`: JSON numbers, or strings holding one (`"2.0"`, `"125 ms"`).
pub fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => leading_number(s),
        _ => None,
    }
}

/// A non-negative whole number: `256`, `256.0`, `"256"`, `"256 MB"`.
pub fn value_u64(v: &Value) -> Option<u64> {
    let f = value_f64(v)?;
    if f < 0.0 || f > u64::MAX as f64 {
        return None;
    }
    Some(f.round() as u64)
}

fn leading_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(s.len(), |(i, _)| i);
    s[..end].parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses an RFC 3339 time, plus the documented `HH:MM:SS:mmm` quirk, a space separator and a comma
/// before the fraction (Python `logging`), into Unix nanoseconds. `None` for anything else (the
/// caller counts it).
pub fn parse_time(s: &str) -> Option<u64> {
    parse_time_with(s, &mut TimeCache::default())
}

/// The last `YYYY-MM-DDTHH:MM:SS` seen and its Unix seconds: the records of one batch mostly
/// share their second, so [`parse_time_with`] then only reads the fraction and the offset.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimeCache {
    key: [u8; 19],
    secs: Option<i64>,
}

/// [`parse_time`] with a [`TimeCache`] (same results).
pub fn parse_time_with(s: &str, cache: &mut TimeCache) -> Option<u64> {
    let b = s.trim().as_bytes();
    let head = b.get(..19)?;
    let base = match cache.secs {
        Some(v) if cache.key == head => v,
        _ => {
            let v = civil_seconds(head)?;
            cache.key.copy_from_slice(head);
            cache.secs = Some(v);
            v
        }
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let mut i = 19;
    let mut nanos: i64 = 0;
    // `.` (RFC 3339), `:` (the documented Telemetry API quirk), `,` (Python `logging`'s
    // default `asctime`, printed by Powertools for Python: `2024-01-01 12:00:00,123`).
    if i < b.len() && matches!(b[i], b'.' | b':' | b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &b[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut n: i64 = 0;
        for (k, d) in digits.iter().take(9).enumerate() {
            n += i64::from(d - b'0') * 10i64.pow(8 - k as u32);
        }
        nanos = n;
    }
    let offset_s: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = if b.get(i + 3) == Some(&b':') {
                num(i + 4..i + 6)?
            } else {
                num(i + 3..i + 5)?
            };
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = base - offset_s;
    if secs < 0 {
        return None;
    }
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// `YYYY-MM-DD?HH:MM:SS` (separator `T`, `t` or space) as Unix seconds, no offset applied.
fn civil_seconds(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 19 {
        return None;
    }
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let hour = num(11..13)?;
    let min = num(14..16)?;
    let sec = num(17..19)?;
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_including_the_colon_millis_quirk() {
        let base = parse_time("2022-08-02T12:01:23Z").unwrap();
        assert_eq!(base, 1_659_441_683_000_000_000);
        // Input → offset from `base`, ms.
        for (input, ms) in [
            ("2022-08-02T12:01:23:521Z", 521),
            ("2022-08-02T12:01:23.521Z", 521),
            ("2022-08-02T14:01:23.5+02:00", 500),
            ("2022-08-02 12:01:23", 0),
            // Python `logging` / Powertools for Python: comma before the milliseconds.
            ("2022-08-02 12:01:23,521", 521),
            ("2022-08-02 14:01:23,521+0200", 521),
        ] {
            assert_eq!(parse_time(input), Some(base + ms * 1_000_000), "{input}");
        }
        // The cache changes nothing: same results in any order, bad input never cached.
        let inputs = [
            "2022-08-02T12:01:23.521Z",
            "2022-08-02T12:01:23.9Z",
            "2022-08-02T14:01:23.5+02:00",
            "2022-08-02T12:01:24Z",
            "2022-13-02T12:01:23Z",
            "2022-08-02T12:01:24Z",
            "2022-08-02T12:01:24Q",
        ];
        let mut tc = TimeCache::default();
        for s in inputs.iter().chain(inputs.iter().rev()) {
            assert_eq!(parse_time_with(s, &mut tc), parse_time(s), "{s}");
        }
        for bad in [
            "",
            "2022-08-02 12:01:23,",
            "2022-08-02 12:01:23;521",
            "yesterday",
            "2022-13-02T12:01:23Z",
            "2022-08-02T12:01:23.Z",
            "2022-08-02T12:01:23Q",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_accept_int_float_and_string() {
        use serde_json::json;
        assert_eq!(value_u64(&json!(256)), Some(256));
        assert_eq!(value_u64(&json!(2.0)), Some(2));
        assert_eq!(value_u64(&json!("256")), Some(256));
        assert_eq!(value_u64(&json!("256 MB")), Some(256));
        assert_eq!(value_u64(&json!(-1)), None);
        assert_eq!(value_u64(&json!("lots")), None);
        assert_eq!(value_f64(&json!("693.92")), Some(693.92));
        assert_eq!(value_f64(&json!(true)), None);
    }

    #[test]
    fn one_broken_element_loses_only_itself() {
        let body = br#"[
            {"time":"2022-10-12T00:03:50.000Z","type":"function","record":"a"},
            {"time":"2022-10-12T00:03:50.000Z","type":"function","record": nope},
            {"time":"2022-10-12T00:03:50.000Z","type":"platform.futureThing","record":{}},
            {"time":"2022-10-12T00:03:50.000Z","type":"platform.start","record":{"requestId":"r","extra":1}},
            {"time":"bad","type":"function","record":"b"}
        ]"#;
        let (events, stats) = parse_batch(body);
        assert_eq!(events.len(), 3);
        assert_eq!(stats.events, 3);
        assert_eq!(stats.malformed, 1);
        assert_eq!(stats.unknown_types, 1);
        assert_eq!(stats.unknown_fields, 1);
        assert_eq!(stats.odd_values, 1);
        assert_eq!(events[2].time_ns, None);
        assert_eq!(
            events[2].body,
            EventBody::Function(LogRecord::Text("b".into()))
        );
    }

    #[test]
    fn repairs_missing_and_trailing_commas_only_when_needed() {
        let broken = br#"{"a": "x"
            "b": [1, 2,],
            "c": {"d": 1,},
        }"#;
        let fixed = repair_commas(broken);
        let v: Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(v["a"], "x");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
        let valid = br#"{"a": "x, }", "b": [1, "q\"" ], "c": true}"#;
        assert_eq!(repair_commas(valid), valid.to_vec());
    }

    #[test]
    fn garbage_bodies_are_one_malformed_count() {
        for body in [&b""[..], b"null", b"42", b"\"x\"", b"[", b"[1, 2]"] {
            let (events, stats) = parse_batch(body);
            assert!(events.is_empty());
            assert!(stats.malformed >= 1 || body == b"[", "{:?}", body);
        }
        let (_, stats) = parse_batch(b"[1, 2]");
        assert_eq!(stats.malformed, 2);
    }
}
