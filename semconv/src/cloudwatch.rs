//! Platform counts in the shape CloudWatch Metric Streams gives them (OpenTelemetry 1.0.0 output
//! format): one Summary data point per metric and period, attributes `Namespace`, `MetricName` and
//! `Dimensions` (a nested key/value list), `sum` = Sum, `count` = SampleCount, quantiles 0.0 (Min)
//! and 1.0 (Max), metric name `amazonaws.com/{Namespace}/{MetricName}`.
//!
//! The sandbox builds these (it stands in for CloudWatch); the collector parses them whether they
//! come from the sandbox, an OTLP relay or the Firehose receiver.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, KeyValueList, any_value::Value},
    metrics::v1::{
        Metric, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint, metric,
        summary_data_point::ValueAtQuantile,
    },
    resource::v1::Resource,
};

use crate::{attr, otlp};

pub const NAMESPACE_LAMBDA: &str = "AWS/Lambda";
pub const NAMESPACE_SQS: &str = "AWS/SQS";
pub const THROTTLES: &str = "Throttles";
pub const DEAD_LETTER_ERRORS: &str = "DeadLetterErrors";
pub const ASYNC_EVENTS_RECEIVED: &str = "AsyncEventsReceived";
pub const ASYNC_EVENTS_DROPPED: &str = "AsyncEventsDropped";
pub const DESTINATION_DELIVERY_FAILURES: &str = "DestinationDeliveryFailures";
pub const SQS_NUMBER_OF_MESSAGES_SENT: &str = "NumberOfMessagesSent";
pub const DIM_FUNCTION_NAME: &str = "FunctionName";
pub const DIM_QUEUE_NAME: &str = "QueueName";

const KEY_NAMESPACE: &str = "Namespace";
const KEY_METRIC_NAME: &str = "MetricName";
const KEY_DIMENSIONS: &str = "Dimensions";

/// Where the stream says the data came from (resource attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOrigin {
    pub account_id: String,
    pub region: String,
}

/// One CloudWatch statistic set for one metric over one period.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformCount {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl PlatformCount {
    /// A count metric (Throttles, DeadLetterErrors, …) for one function over one period.
    pub fn lambda(metric_name: &str, function: &str, start: u64, end: u64, sum: f64) -> Self {
        Self {
            namespace: NAMESPACE_LAMBDA.to_owned(),
            metric_name: metric_name.to_owned(),
            dimensions: vec![(DIM_FUNCTION_NAME.to_owned(), function.to_owned())],
            start_unix_nano: start,
            end_unix_nano: end,
            sum,
            count: 1,
            min: sum,
            max: sum,
        }
    }

    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Builds one request in the Metric Streams shape.
pub fn build_request(
    origin: &StreamOrigin,
    points: &[PlatformCount],
) -> ExportMetricsServiceRequest {
    let metrics = points
        .iter()
        .map(|p| {
            let dims = KeyValueList {
                values: p
                    .dimensions
                    .iter()
                    .map(|(k, v)| otlp::kv_str(k, v.clone()))
                    .collect(),
            };
            Metric {
                name: format!("amazonaws.com/{}/{}", p.namespace, p.metric_name),
                unit: "{Count}".to_owned(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: vec![
                            otlp::kv_str(KEY_NAMESPACE, p.namespace.clone()),
                            otlp::kv_str(KEY_METRIC_NAME, p.metric_name.clone()),
                            otlp::kv(KEY_DIMENSIONS, Value::KvlistValue(dims)),
                        ],
                        start_time_unix_nano: p.start_unix_nano,
                        time_unix_nano: p.end_unix_nano,
                        count: p.count,
                        sum: p.sum,
                        quantile_values: vec![
                            ValueAtQuantile {
                                quantile: 0.0,
                                value: p.min,
                            },
                            ValueAtQuantile {
                                quantile: 1.0,
                                value: p.max,
                            },
                        ],
                        flags: 0,
                    }],
                })),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    otlp::kv_str(attr::CLOUD_PROVIDER, "aws"),
                    otlp::kv_str(attr::CLOUD_ACCOUNT_ID, origin.account_id.clone()),
                    otlp::kv_str(attr::CLOUD_REGION, origin.region.clone()),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Every Metric-Streams-shaped Summary point in `req`, with its origin. Points that do not carry
/// `Namespace` and `MetricName` are not ours to read and are skipped (the caller counts them).
pub fn parse_request(req: &ExportMetricsServiceRequest) -> Vec<(StreamOrigin, PlatformCount)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let rattrs = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let origin = StreamOrigin {
            account_id: otlp::get_str(rattrs, attr::CLOUD_ACCOUNT_ID)
                .unwrap_or("")
                .to_owned(),
            region: otlp::get_str(rattrs, attr::CLOUD_REGION)
                .unwrap_or("")
                .to_owned(),
        };
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(metric::Data::Summary(summary)) = &m.data else {
                    continue;
                };
                for dp in &summary.data_points {
                    if let Some(p) = parse_point(dp) {
                        out.push((origin.clone(), p));
                    }
                }
            }
        }
    }
    out
}

fn parse_point(dp: &SummaryDataPoint) -> Option<PlatformCount> {
    let namespace = otlp::get_str(&dp.attributes, KEY_NAMESPACE)?.to_owned();
    let metric_name = otlp::get_str(&dp.attributes, KEY_METRIC_NAME)?.to_owned();
    let dimensions = match otlp::get(&dp.attributes, KEY_DIMENSIONS) {
        Some(Value::KvlistValue(list)) => list
            .values
            .iter()
            .filter_map(
                |kv| match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                },
            )
            .collect(),
        _ => Vec::new(),
    };
    let quantile = |q: f64| {
        dp.quantile_values
            .iter()
            .find(|v| (v.quantile - q).abs() < f64::EPSILON)
            .map(|v| v.value)
    };
    Some(PlatformCount {
        namespace,
        metric_name,
        dimensions,
        start_unix_nano: dp.start_time_unix_nano,
        end_unix_nano: dp.time_unix_nano,
        sum: dp.sum,
        count: dp.count,
        min: quantile(0.0).unwrap_or(0.0),
        max: quantile(1.0).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let origin = StreamOrigin {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
        };
        let points = vec![
            PlatformCount::lambda(THROTTLES, "checkout", 1, 2, 3.0),
            PlatformCount::lambda(DEAD_LETTER_ERRORS, "checkout", 1, 2, 1.0),
        ];
        let req = build_request(&origin, &points);
        assert_eq!(
            req.resource_metrics[0].scope_metrics[0].metrics[0].name,
            "amazonaws.com/AWS/Lambda/Throttles"
        );
        let back = parse_request(&req);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, origin);
        assert_eq!(back[0].1, points[0]);
        assert_eq!(back[1].1.dimension(DIM_FUNCTION_NAME), Some("checkout"));
    }
}
