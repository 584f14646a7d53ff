//! OTLP/JSON trace requests shaped as the extension and instrumented function code send them,
//! for tests that post spans straight to a collector's OTLP/HTTP listener.
//!
//! - [`invocation`]: an invocation span (`docs/ARCHITECTURE.md`, Contract 1) with its billing,
//!   memory and timeout attributes; its span id is derived from the trace id, so [`client`] spans
//!   can name it as their parent.
//! - [`init_span`]: an on-demand init span (a cold start).
//! - [`client`]: a CLIENT span of the function code (a downstream call) in an invocation's trace.
//! - [`resource`]: a function's resource attributes; [`send`]: one request of several resources,
//!   which must be accepted whole (status 200, no partial-success rejection).

use std::time::Duration;

use serde_json::{Value, json};

use crate::http;

pub fn kv(k: &str, v: Value) -> Value {
    json!({"key": k, "value": v})
}

pub fn s(v: &str) -> Value {
    json!({"stringValue": v})
}

pub fn d(v: f64) -> Value {
    json!({"doubleValue": v})
}

/// The resource attributes of `function` (`faas.version` `version`) running in environment
/// `instance` of `region`, account 123456789012.
pub fn resource(function: &str, version: &str, region: &str, instance: &str) -> Value {
    json!({"attributes": [
        kv("service.name", s(function)), kv("faas.name", s(function)),
        kv("faas.version", s(version)), kv("faas.instance", s(instance)),
        kv("cloud.region", s(region)), kv("cloud.account.id", s("123456789012")),
    ]})
}

/// The span id of the invocation span of `trace` (what [`client`] spans name as their parent).
pub fn invocation_span_id(trace: u128) -> String {
    format!("{:016x}", trace as u64 | 1)
}

/// What an invocation span says about its invocation.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub function: &'a str,
    pub trace: u128,
    /// End of the invocation, ms since the epoch.
    pub end_ms: u64,
    pub duration_ms: f64,
    /// `success`, `error` or `timeout`.
    pub outcome: &'a str,
    pub memory_mb: f64,
    pub timeout_ms: f64,
}

/// An invocation span as the extension sends it (Contract 1).
pub fn invocation(i: Invocation<'_>) -> Value {
    let end = i.end_ms * 1_000_000;
    json!({
        "traceId": format!("{:032x}", i.trace), "spanId": invocation_span_id(i.trace),
        "name": i.function, "kind": 2,
        "startTimeUnixNano": (end - (i.duration_ms * 1e6) as u64).to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": [
            kv("lambdawatch.span.type", s("invocation")),
            kv("faas.invocation_id", s(&format!("req-{:x}", i.trace))),
            kv("aws.lambda.outcome", s(i.outcome)),
            kv("aws.lambda.duration_ms", d(i.duration_ms)),
            kv("aws.lambda.billed_duration_ms", d(i.duration_ms.ceil())),
            kv("aws.lambda.memory_size_mb", d(i.memory_mb)),
            kv("aws.lambda.max_memory_used_mb", d(90.0)),
            kv("aws.lambda.timeout_ms", d(i.timeout_ms)),
        ]
    })
}

/// An on-demand init span (a cold start) of `ms`, ending at `end_ms`.
pub fn init_span(end_ms: u64, ms: f64) -> Value {
    let end = end_ms * 1_000_000;
    json!({
        "traceId": format!("{:032x}", end_ms as u128 + 7), "spanId": "00000000000000aa",
        "name": "init", "kind": 1,
        "startTimeUnixNano": (end - (ms * 1e6) as u64).to_string(), "endTimeUnixNano": end.to_string(),
        "attributes": [
            kv("lambdawatch.span.type", s("init")),
            kv("aws.lambda.init_type", s("on-demand")),
            kv("aws.lambda.init_phase", s("init")),
            kv("aws.lambda.outcome", s("success")),
            kv("aws.lambda.duration_ms", d(ms)),
        ]
    })
}

/// A CLIENT span (kind 3) of the function code in the trace of invocation `trace`, a child of
/// its invocation span: a call named `name` with `attributes` (e.g. `peer.service`) lasting
/// `ms` and ending at `end_ms`. Its span id is `trace`'s low bits with `n` mixed in.
pub fn client(trace: u128, n: u8, name: &str, end_ms: u64, ms: f64, attributes: &[Value]) -> Value {
    let end = end_ms * 1_000_000;
    json!({
        "traceId": format!("{trace:032x}"),
        "spanId": format!("{:016x}", (trace as u64 | 1) ^ (u64::from(n) << 56 | 2)),
        "parentSpanId": invocation_span_id(trace),
        "name": name, "kind": 3,
        "startTimeUnixNano": (end - (ms * 1e6) as u64).to_string(), "endTimeUnixNano": end.to_string(),
        "attributes": attributes,
    })
}

/// Posts one OTLP/JSON traces request to `http://{otlp}/v1/traces`: `(resource, spans)` per
/// resource. Panics unless the collector accepts every span (200, nothing rejected).
pub fn send(otlp: &str, groups: Vec<(Value, Vec<Value>)>) {
    let rs: Vec<Value> = groups
        .into_iter()
        .map(|(r, spans)| json!({"resource": r, "scopeSpans": [{"spans": spans}]}))
        .collect();
    let body = json!({ "resourceSpans": rs });
    let r = http::post_json(
        &format!("http://{otlp}/v1/traces"),
        &body,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("rejected"), "{}", r.text());
}
