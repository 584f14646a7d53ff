//! The platform counts no extension can see, published as CloudWatch Metric Streams would.
//!
//! Consumes increments of Throttles, DeadLetterErrors, AsyncEventsReceived and AsyncEventsDropped
//! (AWS counts an event sent to the DLQ as dropped too), and of messages sent to the function's
//! DLQ, published as `AWS/SQS` `NumberOfMessagesSent` by `QueueName` the way CloudWatch has them
//! for an SQS dead-letter queue (atomic counters: the hot path only adds). Produces, every `cloudwatch_period_ms`, one OTLP/HTTP
//! protobuf request built by `semconv::cloudwatch::build_request` (Summary points, Metric Streams
//! OpenTelemetry 1.0.0 shape) POSTed to `{endpoint}/v1/metrics`. A failed POST is counted and the
//! period's counts are lost, as a stream delivery failure would lose them; invocations never wait
//! for it. A final period is published at shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use lambdawatch_semconv::cloudwatch::{self as cw, PlatformCount, StreamOrigin};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::{config::FunctionConfig, report::Recorder};

pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of the current period.
#[derive(Debug, Default)]
pub struct PlatformCounters {
    throttles: AtomicU64,
    dead_letter_errors: AtomicU64,
    async_received: AtomicU64,
    async_dropped: AtomicU64,
    dlq_sent: AtomicU64,
}

impl PlatformCounters {
    pub fn throttle(&self) {
        self.throttles.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dead_letter_error(&self) {
        self.dead_letter_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn async_received(&self) {
        self.async_received.fetch_add(1, Ordering::Relaxed);
    }
    pub fn async_dropped(&self) {
        self.async_dropped.fetch_add(1, Ordering::Relaxed);
    }
    /// One message delivered to the function's SQS dead-letter queue.
    pub fn dlq_sent(&self) {
        self.dlq_sent.fetch_add(1, Ordering::Relaxed);
    }
    /// Takes the period's DLQ `NumberOfMessagesSent`, resetting it.
    pub fn take_dlq_sent(&self) -> u64 {
        self.dlq_sent.swap(0, Ordering::Relaxed)
    }

    /// Takes the period's counts, resetting them.
    pub fn take(&self) -> [(&'static str, u64); 4] {
        [
            (cw::THROTTLES, self.throttles.swap(0, Ordering::Relaxed)),
            (
                cw::DEAD_LETTER_ERRORS,
                self.dead_letter_errors.swap(0, Ordering::Relaxed),
            ),
            (
                cw::ASYNC_EVENTS_RECEIVED,
                self.async_received.swap(0, Ordering::Relaxed),
            ),
            (
                cw::ASYNC_EVENTS_DROPPED,
                self.async_dropped.swap(0, Ordering::Relaxed),
            ),
        ]
    }
}

/// The points of one period (every metric, zeros included, so a consumer sees the period).
pub fn period_points(
    function: &str,
    counts: &[(&'static str, u64)],
    start_ns: u64,
    end_ns: u64,
) -> Vec<PlatformCount> {
    counts
        .iter()
        .map(|(name, n)| PlatformCount::lambda(name, function, start_ns, end_ns, *n as f64))
        .collect()
}

/// `AWS/SQS` `NumberOfMessagesSent` of the DLQ `queue` over one period.
pub fn dlq_point(queue: &str, sent: u64, start_ns: u64, end_ns: u64) -> PlatformCount {
    let n = sent as f64;
    PlatformCount {
        namespace: cw::NAMESPACE_SQS.to_owned(),
        metric_name: cw::SQS_NUMBER_OF_MESSAGES_SENT.to_owned(),
        dimensions: vec![(cw::DIM_QUEUE_NAME.to_owned(), queue.to_owned())],
        start_unix_nano: start_ns,
        end_unix_nano: end_ns,
        sum: n,
        count: 1,
        min: n,
        max: n,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Publishes every period until `stop`, then once more.
pub async fn run(
    endpoint: String,
    function: Arc<FunctionConfig>,
    counters: Arc<PlatformCounters>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
    let origin = StreamOrigin {
        account_id: function.account_id.clone(),
        region: function.region.clone(),
    };
    let period = Duration::from_millis(function.cloudwatch_period_ms);
    let mut start = now_ns();
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(period) => false,
            () = stop.cancelled() => true,
        };
        let end = now_ns();
        let mut points = period_points(&function.name, &counters.take(), start, end);
        let dlq_sent = counters.take_dlq_sent();
        if let Some(queue) = function.dlq.queue_name(&function.name) {
            points.push(dlq_point(&queue, dlq_sent, start, end));
        }
        start = end;
        let body = cw::build_request(&origin, &points).encode_to_vec();
        let ok = post(&client, &url, body).await;
        if !ok {
            tracing::warn!(%url, "CloudWatch-shaped metrics not delivered");
        }
        recorder.cloudwatch(ok);
        if stopping {
            return;
        }
    }
}

async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Vec<u8>,
) -> bool {
    let Ok(req) = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
    else {
        return false;
    };
    match tokio::time::timeout(PUBLISH_TIMEOUT, client.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            ok
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn dlq_messages_are_sqs_number_of_messages_sent_by_queue() {
        let c = PlatformCounters::default();
        c.dlq_sent();
        c.dlq_sent();
        assert_eq!(c.take_dlq_sent(), 2);
        assert_eq!(c.take_dlq_sent(), 0, "taking resets the period");
        let origin = StreamOrigin {
            account_id: "1".into(),
            region: "eu-west-1".into(),
        };
        let req = cw::build_request(&origin, &[dlq_point("orders-dlq", 2, 1, 2)]);
        let back = cw::parse_request(&req);
        assert_eq!(back[0].1.namespace, cw::NAMESPACE_SQS);
        assert_eq!(back[0].1.metric_name, cw::SQS_NUMBER_OF_MESSAGES_SENT);
        assert_eq!(back[0].1.dimension(cw::DIM_QUEUE_NAME), Some("orders-dlq"));
        assert_eq!(back[0].1.sum, 2.0);
    }

    use super::*;

    #[test]
    fn take_resets_and_points_round_trip() {
        let c = PlatformCounters::default();
        c.throttle();
        c.throttle();
        c.async_received();
        let counts = c.take();
        assert_eq!(counts[0], (cw::THROTTLES, 2));
        assert_eq!(c.take()[0].1, 0);
        let pts = period_points("f", &counts, 1, 2);
        let req = cw::build_request(&StreamOrigin::default(), &pts);
        let back = cw::parse_request(&req);
        assert_eq!(back.len(), 4);
        assert_eq!(back[0].1.metric_name, cw::THROTTLES);
        assert_eq!(back[0].1.sum, 2.0);
        assert_eq!(back[2].1.sum, 1.0);
    }
}
