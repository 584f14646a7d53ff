//! The CloudWatch `GetMetricData` poller: the platform counts no extension can see.
//!
//! Consumes a [`Target`] (functions the extensions reported plus an explicit list, and SQS DLQ
//! queues mapped to their functions); produces [`PlatformCount`]s, the same shape the Metric
//! Streams path and the sandbox produce, so the collector aggregates them one way.
//!
//! CloudWatch revises recent data points as late data arrives, so each poll re-reads a lookback
//! window and the [`Ledger`] (the poller's cursor, checkpointed with the collector's state) emits
//! only the increase over what it already emitted for each (metric, period start). Up to 500
//! queries go in one call ([`MAX_QUERIES_PER_CALL`]); pages are followed with `NextToken`.
//!
//! Per DLQ queue the same calls also read one gauge, `ApproximateNumberOfMessagesVisible`
//! (statistic `Maximum`): the messages waiting in the DLQ, i.e. its redrive backlog. A gauge is
//! not a count, so it bypasses the ledger: [`Poller::dlq_backlog`] holds each queue's newest
//! data point of the last poll (a queue without a data point in the lookback is absent).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use lambdawatch_semconv::cloudwatch::{self as cw, PlatformCount};
use serde::{Deserialize, Serialize};

use crate::client::{AwsCounters, AwsSettings};

pub const MAX_QUERIES_PER_CALL: usize = 500;
/// `GetMetricData` list price: USD per 1,000 metrics requested (us-east-1; most regions).
pub const PRICE_PER_1000_METRICS_USD: f64 = 0.01;
/// The per-function metrics polled from `AWS/Lambda`.
pub const LAMBDA_METRICS: [&str; 5] = [
    cw::THROTTLES,
    cw::DEAD_LETTER_ERRORS,
    cw::ASYNC_EVENTS_RECEIVED,
    cw::ASYNC_EVENTS_DROPPED,
    cw::DESTINATION_DELIVERY_FAILURES,
];

/// SQS gauge polled per DLQ queue (statistic `Maximum`): messages available in the queue, the
/// DLQ's redrive backlog.
pub const SQS_APPROXIMATE_NUMBER_OF_MESSAGES_VISIBLE: &str = "ApproximateNumberOfMessagesVisible";

/// The newest reading of a DLQ queue's backlog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueBacklog {
    /// Start of the CloudWatch period of the data point (unix s).
    pub period_start_unix: i64,
    /// Maximum of `ApproximateNumberOfMessagesVisible` over that period.
    pub messages: f64,
}

fn is_gauge(q: &QuerySpec) -> bool {
    q.namespace == cw::NAMESPACE_SQS && q.metric == SQS_APPROXIMATE_NUMBER_OF_MESSAGES_VISIBLE
}

/// 60 s or 300 s, the periods CloudWatch keeps at full resolution for these metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Period {
    OneMinute,
    FiveMinutes,
}

impl Period {
    pub fn secs(self) -> i64 {
        match self {
            Period::OneMinute => 60,
            Period::FiveMinutes => 300,
        }
    }

    pub fn from_secs(s: u64) -> Option<Self> {
        match s {
            60 => Some(Period::OneMinute),
            300 => Some(Period::FiveMinutes),
            _ => None,
        }
    }
}

/// What to poll.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub functions: BTreeSet<String>,
    /// SQS dead-letter queue name → the function it belongs to.
    pub dlq_queues: BTreeMap<String, String>,
}

/// One `MetricDataQuery` before it gets its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QuerySpec {
    pub namespace: &'static str,
    pub metric: &'static str,
    pub dimension: &'static str,
    pub value: String,
}

/// Every query for `target`, in a stable order.
pub fn plan(target: &Target) -> Vec<QuerySpec> {
    let mut out = Vec::new();
    for f in &target.functions {
        for m in LAMBDA_METRICS {
            out.push(QuerySpec {
                namespace: cw::NAMESPACE_LAMBDA,
                metric: m,
                dimension: cw::DIM_FUNCTION_NAME,
                value: f.clone(),
            });
        }
    }
    for q in target.dlq_queues.keys() {
        for metric in [
            cw::SQS_NUMBER_OF_MESSAGES_SENT,
            SQS_APPROXIMATE_NUMBER_OF_MESSAGES_VISIBLE,
        ] {
            out.push(QuerySpec {
                namespace: cw::NAMESPACE_SQS,
                metric,
                dimension: cw::DIM_QUEUE_NAME,
                value: q.clone(),
            });
        }
    }
    out
}

/// The poller's projected monthly API spend in USD for `queries` metrics polled every `interval`.
pub fn projected_monthly_cost_usd(queries: usize, interval: Duration) -> f64 {
    let polls = (30.0 * 86_400.0) / interval.as_secs_f64().max(1.0);
    queries as f64 * polls / 1000.0 * PRICE_PER_1000_METRICS_USD
}

/// What has been emitted per (metric, period start): the poller's cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    emitted: BTreeMap<String, f64>,
}

impl Ledger {
    fn key(q: &QuerySpec, ts: i64) -> String {
        format!("{}|{}|{}|{ts}", q.namespace, q.metric, q.value)
    }

    /// The increase of `value` over what was emitted for this point, recording the new value.
    pub fn delta(&mut self, q: &QuerySpec, ts: i64, value: f64) -> Option<f64> {
        if !value.is_finite() {
            return None;
        }
        let prev = self.emitted.entry(Self::key(q, ts)).or_insert(0.0);
        let d = value - *prev;
        if d > 0.0 {
            *prev = value;
            Some(d)
        } else {
            None
        }
    }

    /// Forgets points that start before `before` (unix seconds): they will not be re-read.
    pub fn prune(&mut self, before: i64) {
        self.emitted.retain(|k, _| {
            k.rsplit('|')
                .next()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t >= before)
        });
    }

    pub fn len(&self) -> usize {
        self.emitted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.emitted.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("GetMetricData failed: {0}")]
    Call(String),
}

pub struct Poller {
    client: aws_sdk_cloudwatch::Client,
    pub period: Period,
    /// How far back each poll re-reads (late data is revised for a few minutes).
    pub lookback: Duration,
    pub ledger: Ledger,
    /// `GetMetricData` calls the last [`Poller::poll`] made (chunks × pages).
    pub last_calls: usize,
    /// DLQ queue → its newest backlog reading in the last successful poll (bounded by the
    /// target's queues).
    pub dlq_backlog: BTreeMap<String, QueueBacklog>,
}

impl Poller {
    pub async fn new(settings: &AwsSettings, counters: &AwsCounters, period: Period) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_cloudwatch::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            .build();
        Self {
            client: aws_sdk_cloudwatch::Client::from_conf(conf),
            period,
            lookback: Duration::from_secs(15 * 60),
            ledger: Ledger::default(),
            last_calls: 0,
            dlq_backlog: BTreeMap::new(),
        }
    }

    /// One poll at `now`: new platform counts since the last poll.
    pub async fn poll(
        &mut self,
        target: &Target,
        now: SystemTime,
    ) -> Result<Vec<PlatformCount>, PollError> {
        let p = self.period.secs();
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // Include the current, still-filling period: its deltas are emitted as they grow.
        let end = (now_s / p + 1) * p;
        let start = ((now_s - self.lookback.as_secs() as i64) / p) * p;
        let specs = plan(target);
        let mut out = Vec::new();
        let mut backlog: BTreeMap<String, QueueBacklog> = BTreeMap::new();
        self.last_calls = 0;
        for chunk in specs.chunks(MAX_QUERIES_PER_CALL) {
            let queries = chunk
                .iter()
                .enumerate()
                .map(|(i, q)| query(i, q, p))
                .collect::<Vec<_>>();
            let mut token: Option<String> = None;
            loop {
                self.last_calls += 1;
                let resp = self
                    .client
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(DateTime::from_secs(start))
                    .end_time(DateTime::from_secs(end))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        PollError::Call(
                            aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                for r in resp.metric_data_results() {
                    let Some(q) = r
                        .id()
                        .and_then(|id| id.strip_prefix('q'))
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| chunk.get(i))
                    else {
                        continue;
                    };
                    if is_gauge(q) {
                        for (ts, v) in r.timestamps().iter().zip(r.values()) {
                            newest(&mut backlog, &q.value, ts.secs(), *v);
                        }
                        continue;
                    }
                    for (ts, v) in r.timestamps().iter().zip(r.values()) {
                        if let Some(d) = self.ledger.delta(q, ts.secs(), *v) {
                            out.push(count(q, ts.secs(), p, d, target));
                        }
                    }
                }
                token = resp.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        self.ledger.prune(start);
        self.dlq_backlog = backlog;
        Ok(out)
    }
}

/// Keeps the newest finite reading of `queue`.
fn newest(backlog: &mut BTreeMap<String, QueueBacklog>, queue: &str, ts: i64, v: f64) {
    if !v.is_finite() || v < 0.0 {
        return;
    }
    match backlog.get_mut(queue) {
        Some(b) if b.period_start_unix >= ts => {}
        Some(b) => {
            *b = QueueBacklog {
                period_start_unix: ts,
                messages: v,
            }
        }
        None => {
            backlog.insert(
                queue.to_owned(),
                QueueBacklog {
                    period_start_unix: ts,
                    messages: v,
                },
            );
        }
    }
}

fn query(i: usize, q: &QuerySpec, period: i64) -> MetricDataQuery {
    let dim = Dimension::builder()
        .name(q.dimension)
        .value(&q.value)
        .build();
    let metric = Metric::builder()
        .namespace(q.namespace)
        .metric_name(q.metric)
        .dimensions(dim)
        .build();
    let stat = MetricStat::builder()
        .metric(metric)
        .period(period as i32)
        .stat(if is_gauge(q) { "Maximum" } else { "Sum" })
        .build();
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(stat)
        .return_data(true)
        .build()
}

fn count(q: &QuerySpec, ts: i64, period: i64, delta: f64, target: &Target) -> PlatformCount {
    let nanos = |s: i64| (s.max(0) as u64) * 1_000_000_000;
    let mut dimensions = vec![(q.dimension.to_owned(), q.value.clone())];
    // A DLQ count is attributed to the function whose queue it is.
    if q.namespace == cw::NAMESPACE_SQS
        && let Some(f) = target.dlq_queues.get(&q.value)
    {
        dimensions.push((cw::DIM_FUNCTION_NAME.to_owned(), f.clone()));
    }
    PlatformCount {
        namespace: q.namespace.to_owned(),
        metric_name: q.metric.to_owned(),
        dimensions,
        start_unix_nano: nanos(ts),
        end_unix_nano: nanos(ts + period),
        sum: delta,
        count: 1,
        min: delta,
        max: delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(n: usize) -> Target {
        Target {
            functions: (0..n).map(|i| format!("f{i:04}")).collect(),
            dlq_queues: [("orders-dlq".to_owned(), "f0000".to_owned())].into(),
        }
    }

    #[test]
    fn plan_covers_every_metric_and_queue_and_chunks_at_500() {
        let p = plan(&target(101));
        assert_eq!(p.len(), 101 * 5 + 2);
        let chunks: Vec<_> = p.chunks(MAX_QUERIES_PER_CALL).map(<[_]>::len).collect();
        assert_eq!(chunks, vec![500, 7]);
        for metric in [
            cw::SQS_NUMBER_OF_MESSAGES_SENT,
            SQS_APPROXIMATE_NUMBER_OF_MESSAGES_VISIBLE,
        ] {
            assert!(
                p.iter()
                    .any(|q| q.metric == metric && q.value == "orders-dlq"),
                "{metric}"
            );
        }
        let gauges: Vec<_> = p.iter().filter(|q| is_gauge(q)).collect();
        assert_eq!(gauges.len(), 1);
        let stat = query(0, gauges[0], 60)
            .metric_stat()
            .and_then(|m| m.stat())
            .map(str::to_owned);
        assert_eq!(stat.as_deref(), Some("Maximum"));
        let stat = query(0, &p[0], 60)
            .metric_stat()
            .and_then(|m| m.stat())
            .map(str::to_owned);
        assert_eq!(stat.as_deref(), Some("Sum"));
    }

    #[test]
    fn the_backlog_is_the_newest_reading_per_queue() {
        let mut b = BTreeMap::new();
        newest(&mut b, "q", 600, 7.0);
        newest(&mut b, "q", 540, 9.0); // older: ignored
        newest(&mut b, "q", 660, f64::NAN); // not a reading
        assert_eq!(b["q"].messages, 7.0);
        newest(&mut b, "q", 660, 3.0);
        assert_eq!(
            b["q"],
            QueueBacklog {
                period_start_unix: 660,
                messages: 3.0
            }
        );
    }

    #[test]
    fn ledger_emits_only_increases_and_prunes() {
        let q = &plan(&target(1))[0];
        let mut l = Ledger::default();
        assert_eq!(l.delta(q, 600, 3.0), Some(3.0));
        assert_eq!(
            l.delta(q, 600, 3.0),
            None,
            "the same point re-read emits nothing"
        );
        assert_eq!(
            l.delta(q, 600, 5.0),
            Some(2.0),
            "a revised point emits the increase"
        );
        assert_eq!(l.delta(q, 660, 1.0), Some(1.0));
        assert_eq!(l.delta(q, 720, f64::NAN), None);
        l.prune(660);
        assert_eq!(l.len(), 1);
        assert_eq!(l.delta(q, 660, 1.0), None);
    }

    #[test]
    fn projected_cost_matches_the_price_list() {
        // 1,000 metrics every 60 s for 30 days = 43.2 M metrics = $432.
        let c = projected_monthly_cost_usd(1000, Duration::from_secs(60));
        assert!((c - 432.0).abs() < 1e-9, "{c}");
    }

    #[test]
    fn dlq_counts_name_their_function() {
        let t = target(1);
        let q = plan(&t)
            .into_iter()
            .find(|q| q.namespace == cw::NAMESPACE_SQS && !is_gauge(q))
            .unwrap();
        let c = count(&q, 600, 60, 2.0, &t);
        assert_eq!(c.dimension(cw::DIM_FUNCTION_NAME), Some("f0000"));
        assert_eq!(c.dimension(cw::DIM_QUEUE_NAME), Some("orders-dlq"));
        assert_eq!(c.end_unix_nano - c.start_unix_nano, 60_000_000_000);
    }
}
