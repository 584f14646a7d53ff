//! CloudWatch Logs export: the function logs the extensions shipped, one log group per function
//! and one stream per execution environment (`faas.instance`), plus SLO metrics as Embedded Metric
//! Format lines.
//!
//! [`batches`] enforces every `PutLogEvents` limit in one pure function: at most 10,000 events and
//! 1,048,576 bytes (UTF-8 message bytes + 26 per event) per call, chronological order, no batch
//! spanning more than 24 hours, events older than 14 days or more than 2 hours in the future
//! refused (counted, never sent), messages longer than an event may be truncated (counted), and
//! empty messages refused (counted): `PutLogEvents` requires at least one character per message
//! and rejects the whole call otherwise, so one empty log line would lose its whole batch. An
//! empty line carries nothing worth a placeholder.
//!
//! What CloudWatch itself rejects inside an accepted call (`rejectedLogEventsInfo`: a prefix of
//! too-old/expired events and a suffix of too-new ones) is counted by [`rejected_count`].

use std::collections::{BTreeMap, HashSet};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use lambdawatch_semconv::{attr, otlp};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::json;

use crate::client::{AwsCounters, AwsSettings};

pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Largest message one event carries (256 KiB minus the per-event overhead).
pub const MAX_EVENT_BYTES: usize = 262_144 - EVENT_OVERHEAD_BYTES;
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3_600_000;
pub const MAX_AGE_MS: i64 = 14 * 24 * 3_600_000;
pub const MAX_FUTURE_MS: i64 = 2 * 3_600_000;
pub const DEFAULT_GROUP_PREFIX: &str = "/lambdawatch/functions/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp_ms: i64,
    pub message: String,
}

/// Events refused or altered by [`batches`], by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    pub too_old: u64,
    pub too_new: u64,
    /// Sent shortened (still delivered; not a drop).
    pub truncated: u64,
    /// Empty messages, never sent.
    pub empty: u64,
    /// Rejected by CloudWatch inside an accepted call ([`rejected_count`]).
    pub rejected: u64,
}

impl Refused {
    /// Events not delivered (truncated ones were delivered, shortened).
    pub fn dropped(&self) -> u64 {
        self.too_old + self.too_new + self.empty + self.rejected
    }
}

/// How many of a call's `n` events CloudWatch rejected, from its `rejectedLogEventsInfo`:
/// events `[0, max(tooOldLogEventEndIndex, expiredLogEventEndIndex))` (exclusive ends) and
/// `[tooNewLogEventStartIndex, n)` (inclusive start). Out-of-range indexes are clamped.
pub fn rejected_count(
    n: usize,
    too_old_end: Option<i32>,
    expired_end: Option<i32>,
    too_new_start: Option<i32>,
) -> usize {
    let idx = |i: Option<i32>| i.map(|i| usize::try_from(i.max(0)).unwrap_or(0).min(n));
    let head = idx(too_old_end)
        .unwrap_or(0)
        .max(idx(expired_end).unwrap_or(0));
    let tail_start = idx(too_new_start).unwrap_or(n);
    n - tail_start.saturating_sub(head)
}

/// Splits `events` into `PutLogEvents`-sized, chronological batches.
pub fn batches(mut events: Vec<LogEvent>, now_ms: i64) -> (Vec<Vec<LogEvent>>, Refused) {
    let mut refused = Refused::default();
    events.retain(|e| {
        if e.message.is_empty() {
            refused.empty += 1;
            false
        } else if e.timestamp_ms < now_ms - MAX_AGE_MS {
            refused.too_old += 1;
            false
        } else if e.timestamp_ms > now_ms + MAX_FUTURE_MS {
            refused.too_new += 1;
            false
        } else {
            true
        }
    });
    events.sort_by_key(|e| e.timestamp_ms);
    let mut out: Vec<Vec<LogEvent>> = Vec::new();
    let mut cur: Vec<LogEvent> = Vec::new();
    let mut cur_bytes = 0usize;
    for mut e in events {
        if e.message.len() > MAX_EVENT_BYTES {
            let mut cut = MAX_EVENT_BYTES;
            while !e.message.is_char_boundary(cut) {
                cut -= 1;
            }
            e.message.truncate(cut);
            refused.truncated += 1;
        }
        let size = e.message.len() + EVENT_OVERHEAD_BYTES;
        let span_exceeded = cur
            .first()
            .is_some_and(|f| e.timestamp_ms - f.timestamp_ms > MAX_BATCH_SPAN_MS);
        if !cur.is_empty()
            && (cur.len() == MAX_EVENTS_PER_BATCH
                || cur_bytes + size > MAX_BATCH_BYTES
                || span_exceeded)
        {
            out.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes += size;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    (out, refused)
}

/// Where a function's logs go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub group: String,
    pub stream: String,
}

/// Groups the log records of an OTLP request by destination. Plain records keep their body as the
/// message; records with attributes (JSON logs) become one JSON object per line.
pub fn from_otlp(
    req: &ExportLogsServiceRequest,
    group_prefix: &str,
) -> BTreeMap<Destination, Vec<LogEvent>> {
    let mut out: BTreeMap<Destination, Vec<LogEvent>> = BTreeMap::new();
    for rl in &req.resource_logs {
        let rattrs = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let function = otlp::function_name(rattrs).unwrap_or("unknown");
        let stream = otlp::get_str(rattrs, attr::FAAS_INSTANCE).unwrap_or("lambdawatch");
        let dest = Destination {
            group: format!("{group_prefix}{function}"),
            stream: stream.to_owned(),
        };
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let nanos = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let body = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(other) => any_to_json(other).to_string(),
                    None => String::new(),
                };
                let extra: Vec<_> = r
                    .attributes
                    .iter()
                    .filter(|kv| kv.key != attr::FAAS_INVOCATION_ID)
                    .collect();
                let message = if extra.is_empty() && r.severity_text.is_empty() {
                    body
                } else {
                    let mut obj = serde_json::Map::new();
                    if !r.severity_text.is_empty() {
                        obj.insert("level".into(), json!(r.severity_text));
                    }
                    obj.insert("message".into(), json!(body));
                    for kv in &r.attributes {
                        if let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            obj.insert(kv.key.clone(), any_to_json(v));
                        }
                    }
                    serde_json::Value::Object(obj).to_string()
                };
                out.entry(dest.clone()).or_default().push(LogEvent {
                    timestamp_ms: (nanos / 1_000_000) as i64,
                    message,
                });
            }
        }
    }
    out
}

fn any_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::StringValue(s) => json!(s),
        Value::BoolValue(b) => json!(b),
        Value::IntValue(i) => json!(i),
        Value::DoubleValue(d) => json!(d),
        Value::ArrayValue(a) => serde_json::Value::Array(
            a.values
                .iter()
                .filter_map(|x| x.value.as_ref())
                .map(any_to_json)
                .collect(),
        ),
        Value::KvlistValue(l) => serde_json::Value::Object(
            l.values
                .iter()
                .filter_map(|kv| {
                    kv.value
                        .as_ref()
                        .and_then(|x| x.value.as_ref())
                        .map(|x| (kv.key.clone(), any_to_json(x)))
                })
                .collect(),
        ),
        Value::BytesValue(b) => json!(lambdawatch_semconv::xray::to_hex(b)),
        _ => serde_json::Value::Null,
    }
}

/// One Embedded Metric Format line: CloudWatch extracts `metrics` as metrics in `namespace`
/// with `dimensions` when the line lands in CloudWatch Logs; `properties` ride along as plain
/// fields (searchable in Logs Insights, not dimensions: no extra metric cost). Non-finite values
/// are left out (JSON has no NaN, and CloudWatch would reject the line).
pub fn emf_line(
    timestamp_ms: i64,
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
    properties: &[(&str, &str)],
) -> String {
    let metrics: Vec<_> = metrics.iter().filter(|(_, v, _)| v.is_finite()).collect();
    let mut obj = serde_json::Map::new();
    obj.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        }),
    );
    for (k, v) in properties.iter().chain(dimensions) {
        obj.insert((*k).to_owned(), json!(v));
    }
    for (n, v, _) in metrics {
        obj.insert((*n).to_owned(), json!(v));
    }
    serde_json::Value::Object(obj).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("CloudWatch Logs {op} failed: {message}")]
    Call { op: &'static str, message: String },
}

/// What one [`LogsSink::ship`] did with its events: `sent + refused.dropped() + failed` is
/// every event handed in.
#[derive(Debug, Default)]
pub struct Shipped {
    pub sent: usize,
    pub refused: Refused,
    /// Not delivered because a call failed (after the SDK's retries).
    pub failed: usize,
    pub error: Option<LogsError>,
}

/// Ships batches with `PutLogEvents`, creating groups and streams on first use.
pub struct LogsSink {
    client: aws_sdk_cloudwatchlogs::Client,
    created: HashSet<Destination>,
}

impl LogsSink {
    pub async fn new(settings: &AwsSettings, counters: &AwsCounters) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            .build();
        Self {
            client: aws_sdk_cloudwatchlogs::Client::from_conf(conf),
            created: HashSet::new(),
        }
    }

    /// Ships `events` to `dest`. Stops at the first failed call: the events of that batch and
    /// of the batches after it are [`Shipped::failed`], the ones before it stay counted as sent.
    pub async fn ship(
        &mut self,
        dest: &Destination,
        events: Vec<LogEvent>,
        now_ms: i64,
    ) -> Shipped {
        let total = events.len();
        if let Err(e) = self.ensure(dest).await {
            return Shipped {
                sent: 0,
                refused: Refused::default(),
                failed: total,
                error: Some(e),
            };
        }
        let (batches, mut refused) = batches(events, now_ms);
        let mut out = Shipped::default();
        let mut left: usize = batches.iter().map(Vec::len).sum();
        for b in batches {
            let n = b.len();
            let input: Vec<InputLogEvent> = b
                .into_iter()
                .filter_map(|e| {
                    InputLogEvent::builder()
                        .timestamp(e.timestamp_ms)
                        .message(e.message)
                        .build()
                        .ok()
                })
                .collect();
            // A builder refusal (never for a timestamp and a non-empty message) is a rejection.
            let unbuilt = n - input.len();
            let resp = match self
                .client
                .put_log_events()
                .log_group_name(&dest.group)
                .log_stream_name(&dest.stream)
                .set_log_events(Some(input))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    out.failed = left;
                    out.error = Some(LogsError::Call {
                        op: "PutLogEvents",
                        message: aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string(),
                    });
                    break;
                }
            };
            let rejected = unbuilt
                + resp.rejected_log_events_info().map_or(0, |r| {
                    rejected_count(
                        n - unbuilt,
                        r.too_old_log_event_end_index(),
                        r.expired_log_event_end_index(),
                        r.too_new_log_event_start_index(),
                    )
                });
            refused.rejected += rejected as u64;
            out.sent += n - rejected;
            left -= n;
        }
        out.refused = refused;
        out
    }

    async fn ensure(&mut self, dest: &Destination) -> Result<(), LogsError> {
        if self.created.contains(dest) {
            return Ok(());
        }
        if let Err(e) = self
            .client
            .create_log_group()
            .log_group_name(&dest.group)
            .send()
            .await
            && !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception())
        {
            return Err(LogsError::Call {
                op: "CreateLogGroup",
                message: aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string(),
            });
        }
        if let Err(e) = self
            .client
            .create_log_stream()
            .log_group_name(&dest.group)
            .log_stream_name(&dest.stream)
            .send()
            .await
            && !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception())
        {
            return Err(LogsError::Call {
                op: "CreateLogStream",
                message: aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string(),
            });
        }
        self.created.insert(dest.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn ev(ts: i64, len: usize) -> LogEvent {
        LogEvent {
            timestamp_ms: ts,
            message: "x".repeat(len),
        }
    }

    #[test]
    fn splits_at_ten_thousand_events() {
        let (b, r) = batches((0..25_000).map(|i| ev(NOW - 25_000 + i, 1)).collect(), NOW);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_000]
        );
        assert_eq!(r, Refused::default());
    }

    #[test]
    fn splits_at_one_mebibyte_counting_the_overhead() {
        // 1,000 bytes + 26 overhead = 1,026 per event; 1,022 fit in 1,048,576.
        let (b, _) = batches(
            (0..2_000).map(|i| ev(NOW - 2_000 + i, 1_000)).collect(),
            NOW,
        );
        assert_eq!(b[0].len(), 1_022);
        for batch in &b {
            let bytes: usize = batch
                .iter()
                .map(|e| e.message.len() + EVENT_OVERHEAD_BYTES)
                .sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 2_000);
    }

    #[test]
    fn sorts_and_never_spans_more_than_a_day() {
        let day = MAX_BATCH_SPAN_MS;
        let (b, _) = batches(
            vec![
                ev(NOW - 1, 1),
                ev(NOW - 2 * day, 1),
                ev(NOW - day - 5, 1),
                ev(NOW - 2 * day + 3, 1),
            ],
            NOW,
        );
        for batch in &b {
            assert!(
                batch
                    .windows(2)
                    .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
            );
            assert!(batch.last().unwrap().timestamp_ms - batch[0].timestamp_ms <= day);
        }
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn refuses_too_old_and_too_new_and_truncates_huge() {
        let (b, r) = batches(
            vec![
                ev(NOW - MAX_AGE_MS - 1, 1),
                ev(NOW + MAX_FUTURE_MS + 1, 1),
                ev(NOW, 300_000),
            ],
            NOW,
        );
        assert_eq!(
            r,
            Refused {
                too_old: 1,
                too_new: 1,
                truncated: 1,
                ..Refused::default()
            }
        );
        assert_eq!(b[0][0].message.len(), MAX_EVENT_BYTES);
    }

    #[test]
    fn empty_messages_are_refused_and_counted_the_rest_kept() {
        let (b, r) = batches(vec![ev(NOW - 2, 0), ev(NOW - 1, 3), ev(NOW, 0)], NOW);
        assert_eq!(r.empty, 2);
        assert_eq!(r.dropped(), 2);
        assert_eq!(b, vec![vec![ev(NOW - 1, 3)]]);
    }

    #[test]
    fn rejected_events_are_counted_from_the_indexes() {
        // Table: (n, tooOldEnd, expiredEnd, tooNewStart) -> rejected.
        for (n, old, expired, new, want) in [
            (10, None, None, None, 0),
            (10, Some(3), None, None, 3),
            (10, None, Some(4), None, 4),
            (10, Some(2), Some(5), None, 5),
            (10, None, None, Some(7), 3),
            (10, Some(2), None, Some(7), 5),
            (10, None, None, Some(0), 10),
            (10, Some(10), None, None, 10),
            (10, Some(50), None, Some(-1), 10),
            (0, None, None, Some(0), 0),
        ] {
            assert_eq!(
                rejected_count(n, old, expired, new),
                want,
                "{n} {old:?} {expired:?} {new:?}"
            );
        }
    }

    #[test]
    fn emf_line_is_what_cloudwatch_extracts() {
        let l = emf_line(
            NOW,
            "Lambdawatch/SLO",
            &[("FunctionName", "orders"), ("SLO", "error_rate")],
            &[("BurnRate1h", 14.4, "None"), ("SLI", f64::NAN, "None")],
            &[("TaskId", "t-1")],
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["FunctionName", "SLO"])
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "BurnRate1h"
        );
        assert_eq!(v["BurnRate1h"], 14.4);
        assert_eq!(v["FunctionName"], "orders");
        assert_eq!(v["TaskId"], "t-1");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "the NaN metric is left out"
        );
        assert!(v.get("SLI").is_none());
    }
}
