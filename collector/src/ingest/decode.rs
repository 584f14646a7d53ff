//! OTLP requests → [`Batch`]: the only place that reads Contract 1 attributes.
//!
//! - Spans with `lambdawatch.span.type` = `invocation` / `init` become events of the function
//!   named by the resource (`faas.name`, `faas.version`, `cloud.region`, `cloud.account.id`);
//!   other spans (ours of other types, or any SDK's) are accepted and counted as foreign.
//! - For the cost advisors (`crate::cost::timeout`), an invocation span with a valid trace id
//!   also yields an [`Event::InvocationTrace`] in its function's group, and a CLIENT span of
//!   function code (any SDK; no `lambdawatch.span.type`) with a valid trace id and a downstream
//!   name (`peer.service`, else `server.address`, `rpc.service`, `db.system`) becomes an
//!   [`Event::Client`] in one [`Target::Traces`] group per request: it is joined to its function
//!   by trace id, not by its resource. Other client spans stay foreign.
//! - Metric-Streams-shaped Summary points (`semconv::cloudwatch::parse_request`) become platform
//!   counts: `AWS/Lambda` Throttles, DeadLetterErrors, AsyncEventsReceived, AsyncEventsDropped
//!   with exactly the `FunctionName` dimension (points with further dimensions such as `Resource`
//!   or `ExecutedVersion` repeat the same events per alias, so they are skipped to avoid double
//!   counting), and `AWS/SQS` NumberOfMessagesSent by `QueueName`, mapped to a function by the
//!   `dlq_queues` setting.
//! - The extension's own `lambdawatch.extension.dropped{reason}` and `.retries` Sum points
//!   (delta or cumulative) feed `lambdawatch_extension_*_total`.
//! - Log records are accepted and counted.
//! - A record that claims to be ours but cannot be aggregated is left out and counted in
//!   [`Decoded::rejected`] with its reason (the rest of the request is kept; the receivers answer
//!   with `partial_success`): an invocation/init span or an extension self-metric whose resource
//!   has no `faas.name`; a duration, memory, timeout or count that is negative or not a number;
//!   an `aws.lambda.outcome` outside Contract 1's four values.

use std::collections::BTreeMap;

use lambdawatch_semconv::{attr, cloudwatch as cw, metric as m, otlp, span_type};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::{AggregationTemporality, metric, number_data_point},
    trace::v1::{Span, status::StatusCode},
};

use super::{ItemReject, Partial, Signal};
use crate::aggregate::{
    Batch, Event, FunctionKey, Group, InitKind, Invocation, Outcome, PlatformCounter, Target,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// Events more than this far in the future (clock skew) are stamped with the receive time.
pub const MAX_FUTURE_SECS: u64 = 300;

/// What a decoded request holds.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub batch: Batch,
    /// Spans, data points or log records in the request.
    pub items: u64,
    /// Of those, how many fed no aggregate because they are not ours (accepted).
    pub foreign: u64,
    /// Of those, how many claimed to be ours but were left out, and why.
    pub rejected: Rejected,
}

/// Records of one request left out, by [`ItemReject`], with the first reason in words.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejected {
    counts: [u64; ItemReject::ALL.len()],
    first: Option<String>,
}

impl Rejected {
    pub fn add(&mut self, reason: ItemReject, why: impl FnOnce() -> String) {
        self.counts[reason as usize] += 1;
        if self.first.is_none() {
            self.first = Some(why());
        }
    }

    pub fn count(&self, reason: ItemReject) -> u64 {
        self.counts[reason as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `partial_success` to answer with, when anything was left out of `items`.
    pub fn partial(&self, items: u64, signal: Signal) -> Option<Partial> {
        let n = self.total();
        let first = self.first.as_deref().filter(|_| n > 0)?;
        let unit = match signal {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        };
        Some(Partial {
            rejected: n,
            message: format!("{n} of {items} {unit} rejected; first: {first}"),
        })
    }
}

/// Decoding settings.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    /// SQS dead-letter queue name → function name.
    pub dlq_queues: BTreeMap<String, String>,
    /// Copies of logs and traces for the AWS exporters, when configured (never blocks).
    pub tap: Option<crate::aws::Tap>,
}

fn time_s(ns: u64, received_s: u64) -> u64 {
    let s = ns / 1_000_000_000;
    if s == 0 || s > received_s + MAX_FUTURE_SECS {
        received_s
    } else {
        s
    }
}

fn resource_target(attrs: &[KeyValue]) -> Option<Target> {
    let function = otlp::get_str(attrs, attr::FAAS_NAME)?.to_owned();
    let s = |k: &str| otlp::get_str(attrs, k).unwrap_or("").to_owned();
    let tags = attrs
        .iter()
        .filter_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(v)) => Some((kv.key.clone(), v.clone())),
                _ => None,
            },
        )
        .collect();
    Some(Target::Function {
        key: FunctionKey {
            function,
            version: s(attr::FAAS_VERSION),
            region: s(attr::CLOUD_REGION),
            account: s(attr::CLOUD_ACCOUNT_ID),
        },
        tags,
        instance: s(attr::FAAS_INSTANCE),
    })
}

/// `v` when it is a valid amount (finite, not negative), else why not.
fn amount(key: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{key} = {v} is not a non-negative number"))
    }
}

/// The optional attribute `key`, checked by [`amount`].
fn opt_amount(a: &[KeyValue], key: &str) -> Result<Option<f64>, String> {
    otlp::get_f64(a, key).map(|v| amount(key, v)).transpose()
}

fn span_duration_ms(span: &Span) -> Result<f64, String> {
    match otlp::get_f64(&span.attributes, attr::AWS_LAMBDA_DURATION_MS) {
        Some(ms) => amount(attr::AWS_LAMBDA_DURATION_MS, ms),
        None => Ok(span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e6),
    }
}

/// One of our spans → an event; `Ok(None)` for spans that feed no aggregate (not ours); `Err`
/// with the reason for one of ours whose values are invalid.
pub fn span_event(span: &Span, received_s: u64) -> Result<Option<Event>, String> {
    span_event_inner(span, received_s).map_err(|why| format!("span `{}`: {why}", span.name))
}

fn span_event_inner(span: &Span, received_s: u64) -> Result<Option<Event>, String> {
    let a = &span.attributes;
    let t_s = time_s(span.end_time_unix_nano, received_s);
    let Some(kind) = otlp::get_str(a, attr::LAMBDAWATCH_SPAN_TYPE) else {
        return Ok(None);
    };
    Ok(match kind {
        span_type::INVOCATION => {
            let outcome = match otlp::get_str(a, attr::AWS_LAMBDA_OUTCOME) {
                Some(s) => Some(Outcome::parse(s).ok_or_else(|| {
                    format!(
                        "{} = `{s}` is not success, error, timeout or failure",
                        attr::AWS_LAMBDA_OUTCOME
                    )
                })?),
                None => None,
            };
            let outcome = outcome.unwrap_or_else(|| {
                let error = span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32);
                if error {
                    Outcome::Error
                } else {
                    Outcome::Success
                }
            });
            Some(Event::Invocation(Invocation {
                t_s,
                outcome,
                duration_ms: span_duration_ms(span)?,
                billed_ms: opt_amount(a, attr::AWS_LAMBDA_BILLED_DURATION_MS)?,
                memory_mb: opt_amount(a, attr::AWS_LAMBDA_MEMORY_SIZE_MB)?,
                max_memory_mb: opt_amount(a, attr::AWS_LAMBDA_MAX_MEMORY_USED_MB)?,
                timeout_ms: opt_amount(a, attr::AWS_LAMBDA_TIMEOUT_MS)?,
                request_id: otlp::get_str(a, attr::FAAS_INVOCATION_ID).map(str::to_owned),
                span_fingerprint: (!span.span_id.is_empty())
                    .then(|| crate::cost::retry::span_fingerprint(&span.trace_id, &span.span_id)),
            }))
        }
        span_type::INIT => Some(Event::Init {
            t_s,
            kind: otlp::get_str(a, attr::AWS_LAMBDA_INIT_TYPE)
                .map_or(InitKind::OnDemand, InitKind::parse),
            duration_ms: span_duration_ms(span)?,
        }),
        _ => None,
    })
}

/// The 16-byte trace id as a number; `None` for a missing or all-zero (invalid) id.
fn trace_id(span: &Span) -> Option<u128> {
    let b: [u8; 16] = span.trace_id.as_slice().try_into().ok()?;
    Some(u128::from_be_bytes(b)).filter(|id| *id != 0)
}

/// The downstream a client span calls, by the first attribute present (OTel semantic
/// conventions: the logical `peer.service`, the host `server.address`, the RPC service, the
/// database system).
fn downstream(span: &Span) -> Option<&str> {
    [
        attr::PEER_SERVICE,
        attr::SERVER_ADDRESS,
        attr::RPC_SERVICE,
        attr::DB_SYSTEM,
    ]
    .iter()
    .find_map(|k| otlp::get_str(&span.attributes, k).filter(|v| !v.is_empty()))
}

/// A CLIENT span of function code with a trace id and a downstream: an [`Event::Client`].
fn client_event(span: &Span, received_s: u64) -> Option<Event> {
    if span.kind != SpanKind::Client as i32
        || otlp::get_str(&span.attributes, attr::LAMBDAWATCH_SPAN_TYPE).is_some()
    {
        return None;
    }
    let latency_ms = span
        .end_time_unix_nano
        .checked_sub(span.start_time_unix_nano)? as f64
        / 1e6;
    Some(Event::Client {
        t_s: time_s(span.end_time_unix_nano, received_s),
        trace_id: trace_id(span)?,
        downstream: downstream(span)?.chars().take(MAX_DOWNSTREAM_LEN).collect(),
        latency_ms,
    })
}

/// Longest downstream name kept (longer names are cut).
pub const MAX_DOWNSTREAM_LEN: usize = 128;

impl Decoder {
    pub fn traces(&self, req: &ExportTraceServiceRequest, received_s: u64) -> Decoded {
        if let Some(tap) = &self.tap {
            tap.traces(req);
        }
        let mut d = Decoded {
            batch: Batch {
                received_s,
                groups: Vec::new(),
            },
            ..Default::default()
        };
        let mut clients = Vec::new();
        for rs in &req.resource_spans {
            let attrs = rs
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            let target = resource_target(attrs);
            let mut events = Vec::new();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    d.items += 1;
                    match (&target, span_event(span, received_s)) {
                        (Some(_), Ok(Some(ev))) => {
                            let trace = match (&ev, trace_id(span)) {
                                (Event::Invocation(inv), Some(trace_id)) => {
                                    Some(Event::InvocationTrace {
                                        t_s: inv.t_s,
                                        trace_id,
                                        timed_out: inv.outcome == Outcome::Timeout,
                                    })
                                }
                                _ => None,
                            };
                            events.push(ev);
                            events.extend(trace);
                        }
                        (None, Ok(Some(_))) => d.rejected.add(ItemReject::NoFunction, || {
                            format!(
                                "span `{}`: its resource has no {}",
                                span.name,
                                attr::FAAS_NAME
                            )
                        }),
                        (_, Ok(None)) => match client_event(span, received_s) {
                            Some(ev) => clients.push(ev),
                            None => d.foreign += 1,
                        },
                        (_, Err(why)) => d.rejected.add(ItemReject::InvalidValue, || why),
                    }
                }
            }
            if let (Some(target), false) = (target, events.is_empty()) {
                d.batch.groups.push(Group { target, events });
            }
        }
        if !clients.is_empty() {
            d.batch.groups.push(Group {
                target: Target::Traces,
                events: clients,
            });
        }
        d
    }

    pub fn metrics(&self, req: &ExportMetricsServiceRequest, received_s: u64) -> Decoded {
        let mut d = Decoded {
            batch: Batch {
                received_s,
                groups: Vec::new(),
            },
            ..Default::default()
        };
        // Platform counts in the Metric Streams shape.
        let mut used = 0u64;
        for (origin, p) in &cw::parse_request(req) {
            match self.platform_group(origin, p, received_s) {
                Some(Ok(group)) => {
                    used += 1;
                    d.batch.groups.push(group);
                }
                Some(Err(why)) => d.rejected.add(ItemReject::InvalidValue, || why),
                None => {}
            }
        }
        // The extension's self-metrics, and the item count of everything.
        for rm in &req.resource_metrics {
            let attrs = rm
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            let target = resource_target(attrs);
            let mut events = Vec::new();
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    d.items += data_points(metric);
                    let retries = match metric.name.as_str() {
                        m::EXT_DROPPED => false,
                        m::EXT_RETRIES => true,
                        _ => continue,
                    };
                    let Some(metric::Data::Sum(sum)) = &metric.data else {
                        continue;
                    };
                    let cumulative =
                        sum.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                    for dp in &sum.data_points {
                        let value = match dp.value {
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            Some(number_data_point::Value::AsDouble(f)) => f,
                            None => f64::NAN,
                        };
                        let value = match amount(&metric.name, value) {
                            Ok(v) => v,
                            Err(why) => {
                                d.rejected.add(ItemReject::InvalidValue, || why);
                                continue;
                            }
                        };
                        if target.is_none() {
                            d.rejected.add(ItemReject::NoFunction, || {
                                format!("{}: its resource has no {}", metric.name, attr::FAAS_NAME)
                            });
                            continue;
                        }
                        used += 1;
                        events.push(Event::Extension {
                            retries,
                            reason: otlp::get_str(&dp.attributes, attr::LAMBDAWATCH_REASON)
                                .unwrap_or("unknown")
                                .to_owned(),
                            value,
                            cumulative,
                        });
                    }
                }
            }
            if let (Some(target), false) = (target, events.is_empty()) {
                d.batch.groups.push(Group { target, events });
            }
        }
        d.foreign = d.items.saturating_sub(used + d.rejected.total());
        d
    }

    /// Platform counts from any source (Metric Streams over OTLP, the CloudWatch poller, the
    /// Firehose receiver) as one batch for the ingest queue. Returns the batch and how many of
    /// `points` it uses (the rest are not ours: other metrics, per-alias points, unmapped queues).
    pub fn platform_batch(
        &self,
        points: &[(cw::StreamOrigin, cw::PlatformCount)],
        received_s: u64,
    ) -> (Batch, u64) {
        let groups: Vec<Group> = points
            .iter()
            .filter_map(|(origin, p)| self.platform_group(origin, p, received_s)?.ok())
            .collect();
        let used = groups.len() as u64;
        (Batch { received_s, groups }, used)
    }

    /// `None` for points that are not ours; `Some(Err)` for ours with an invalid count.
    fn platform_group(
        &self,
        origin: &cw::StreamOrigin,
        p: &cw::PlatformCount,
        received_s: u64,
    ) -> Option<Result<Group, String>> {
        let (function, counter, queue) = match p.namespace.as_str() {
            cw::NAMESPACE_LAMBDA => {
                let counter = PlatformCounter::from_lambda_metric(&p.metric_name)?;
                if p.dimensions.len() != 1 {
                    return None;
                }
                (
                    p.dimension(cw::DIM_FUNCTION_NAME)?.to_owned(),
                    counter,
                    None,
                )
            }
            cw::NAMESPACE_SQS if p.metric_name == cw::SQS_NUMBER_OF_MESSAGES_SENT => {
                let q = p.dimension(cw::DIM_QUEUE_NAME)?;
                let f = self.dlq_queues.get(q)?;
                (
                    f.clone(),
                    PlatformCounter::DlqMessagesSent,
                    Some(q.to_owned()),
                )
            }
            _ => return None,
        };
        if let Err(why) = amount(&format!("{}/{}", p.namespace, p.metric_name), p.sum) {
            return Some(Err(format!("{function}: {why}")));
        }
        let ns = if p.start_unix_nano > 0 {
            p.start_unix_nano
        } else {
            p.end_unix_nano
        };
        Some(Ok(Group {
            target: Target::Platform {
                function,
                region: origin.region.clone(),
                account: origin.account_id.clone(),
                qualifier: None,
            },
            events: vec![Event::Platform {
                t_s: time_s(ns, received_s),
                counter,
                value: p.sum.round() as u64,
                queue,
            }],
        }))
    }

    pub fn logs(&self, req: &ExportLogsServiceRequest, received_s: u64) -> Decoded {
        if let Some(tap) = &self.tap {
            tap.logs(req);
        }
        let items: u64 = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum();
        Decoded {
            batch: Batch {
                received_s,
                groups: Vec::new(),
            },
            items,
            foreign: items,
            rejected: Rejected::default(),
        }
    }
}

fn data_points(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> u64 {
    (match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambdawatch_semconv::otlp::{kv_f64, kv_i64, kv_str};
    use opentelemetry_proto::tonic::{
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans},
    };

    pub(crate) fn invocation_span(end_ns: u64, outcome: &str, ms: f64) -> Span {
        Span {
            name: "checkout".into(),
            start_time_unix_nano: end_ns - (ms * 1e6) as u64,
            end_time_unix_nano: end_ns,
            attributes: vec![
                kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INVOCATION),
                kv_str(attr::AWS_LAMBDA_OUTCOME, outcome),
                kv_f64(attr::AWS_LAMBDA_DURATION_MS, ms),
                kv_i64(attr::AWS_LAMBDA_BILLED_DURATION_MS, ms.ceil() as i64),
                kv_i64(attr::AWS_LAMBDA_MEMORY_SIZE_MB, 128),
                kv_i64(attr::AWS_LAMBDA_TIMEOUT_MS, 3000),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn our_spans_become_events_and_foreign_ones_are_counted() {
        let t = 1_700_000_000u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv_str(attr::FAAS_NAME, "checkout"),
                        kv_str(attr::FAAS_VERSION, "7"),
                        kv_str(attr::CLOUD_REGION, "eu-west-1"),
                        kv_str(attr::CLOUD_ACCOUNT_ID, "1"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        invocation_span(t * 1_000_000_000, "timeout", 3000.0),
                        Span {
                            name: "db.query".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = Decoder::default().traces(&req, t);
        assert_eq!((d.items, d.foreign), (2, 1));
        assert_eq!(d.batch.groups.len(), 1);
        let Event::Invocation(inv) = &d.batch.groups[0].events[0] else {
            panic!("not an invocation")
        };
        assert_eq!(inv.outcome, Outcome::Timeout);
        assert_eq!(inv.timeout_ms, Some(3000.0));
        assert_eq!(inv.t_s, t);
    }

    #[test]
    fn invocation_spans_carry_a_fingerprint_of_trace_and_span_id() {
        let fp = |trace: &[u8], span: &[u8]| {
            let mut sp = invocation_span(1_700_000_000_000_000_000, "success", 10.0);
            sp.trace_id = trace.to_vec();
            sp.span_id = span.to_vec();
            match span_event_inner(&sp, 1_700_000_000) {
                Ok(Some(Event::Invocation(inv))) => inv.span_fingerprint,
                other => panic!("{other:?}"),
            }
        };
        let a = fp(&[1; 16], &[2; 8]);
        assert!(a.is_some());
        // The same span delivered again: the same fingerprint (a duplicate, not a retry).
        assert_eq!(fp(&[1; 16], &[2; 8]), a);
        // A new span of the same request (an async retry), or another trace: another one.
        assert_ne!(fp(&[1; 16], &[3; 8]), a);
        assert_ne!(fp(&[4; 16], &[2; 8]), a);
        // No span id: no fingerprint (every repeat of its request id counts as a retry).
        assert_eq!(fp(&[1; 16], &[]), None);
    }

    /// Client spans of function code become trace-joined events (whatever their resource);
    /// an invocation span with a trace id carries it; client spans without a trace id or a
    /// downstream, and spans of other kinds, stay foreign.
    #[test]
    fn client_spans_and_invocation_trace_ids_feed_the_cascade_join() {
        let t = 1_700_000_000u64;
        let end = t * 1_000_000_000;
        let trace = [7u8; 16];
        let client = |attrs: Vec<KeyValue>, trace_id: &[u8]| Span {
            name: "GET".into(),
            kind: SpanKind::Client as i32,
            trace_id: trace_id.to_vec(),
            start_time_unix_nano: end - 250_000_000,
            end_time_unix_nano: end,
            attributes: attrs,
            ..Default::default()
        };
        let mut inv = invocation_span(end, "timeout", 3000.0);
        inv.trace_id = trace.to_vec();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv_str(attr::FAAS_NAME, "checkout")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![inv],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    // An SDK resource without faas.name: joined by trace id, not rejected.
                    resource: Some(Resource {
                        attributes: vec![kv_str(attr::SERVICE_NAME, "checkout-code")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![
                            client(
                                vec![
                                    kv_str(attr::SERVER_ADDRESS, "db.internal"),
                                    kv_str(attr::PEER_SERVICE, "orders-db"),
                                ],
                                &trace,
                            ),
                            client(vec![kv_str(attr::DB_SYSTEM, "postgresql")], &trace),
                            client(vec![kv_str(attr::RPC_SERVICE, "Pay")], &[0u8; 16]),
                            client(vec![], &trace),
                            Span {
                                kind: SpanKind::Server as i32,
                                ..client(vec![kv_str(attr::PEER_SERVICE, "x")], &trace)
                            },
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let d = Decoder::default().traces(&req, t);
        assert_eq!((d.items, d.foreign, d.rejected.total()), (6, 3, 0));
        let id = u128::from_be_bytes(trace);
        assert_eq!(d.batch.groups.len(), 2);
        assert_eq!(
            d.batch.groups[0].events[1],
            Event::InvocationTrace {
                t_s: t,
                trace_id: id,
                timed_out: true
            }
        );
        assert_eq!(d.batch.groups[1].target, Target::Traces);
        let names: Vec<(&str, f64)> = d.batch.groups[1]
            .events
            .iter()
            .map(|e| match e {
                Event::Client {
                    trace_id,
                    downstream,
                    latency_ms,
                    t_s,
                } => {
                    assert_eq!((*trace_id, *t_s), (id, t));
                    (downstream.as_str(), *latency_ms)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, vec![("orders-db", 250.0), ("postgresql", 250.0)]);
    }

    #[test]
    fn platform_counts_and_sqs_mapping() {
        let origin = cw::StreamOrigin {
            account_id: "1".into(),
            region: "eu-west-1".into(),
        };
        let mut sqs = cw::PlatformCount::lambda(
            cw::SQS_NUMBER_OF_MESSAGES_SENT,
            "",
            1_000_000_000,
            2_000_000_000,
            2.0,
        );
        sqs.namespace = cw::NAMESPACE_SQS.into();
        sqs.dimensions = vec![(cw::DIM_QUEUE_NAME.into(), "orders-dlq".into())];
        let mut per_alias =
            cw::PlatformCount::lambda(cw::THROTTLES, "orders", 1_000_000_000, 2_000_000_000, 9.0);
        per_alias
            .dimensions
            .push(("Resource".into(), "orders:live".into()));
        let req = cw::build_request(
            &origin,
            &[
                cw::PlatformCount::lambda(
                    cw::THROTTLES,
                    "orders",
                    1_000_000_000,
                    2_000_000_000,
                    3.0,
                ),
                sqs,
                per_alias,
            ],
        );
        let dec = Decoder {
            dlq_queues: [("orders-dlq".to_owned(), "orders".to_owned())].into(),
            ..Decoder::default()
        };
        let d = dec.metrics(&req, 5);
        assert_eq!(d.items, 3);
        assert_eq!(d.foreign, 1, "the per-alias point is skipped");
        let evs: Vec<_> = d.batch.groups.iter().flat_map(|g| &g.events).collect();
        assert_eq!(
            evs,
            vec![
                &Event::Platform {
                    t_s: 1,
                    counter: PlatformCounter::Throttles,
                    value: 3,
                    queue: None
                },
                &Event::Platform {
                    t_s: 1,
                    counter: PlatformCounter::DlqMessagesSent,
                    value: 2,
                    queue: Some("orders-dlq".into())
                },
            ]
        );
    }
}
