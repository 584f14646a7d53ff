//! Alert sinks and the dispatcher that feeds them.
//!
//! Consumes: [`Alert`]s from the alert state machine, through [`Dispatcher::dispatch`], which
//! never blocks and never fails. Produces: deliveries to each configured [`Sink`]
//! (Alertmanager API v2, JSON webhook, the log; SNS later), and [`DeliveryCounters`] that the
//! `/metrics` exporter renders as `lambdawatch_alert_deliveries_total{sink, result}`.
//!
//! One task per sink, each with its own bounded queue ([`DispatcherConfig::queue_capacity`]):
//! a slow or dead sink only ever delays itself. **When a queue is full the oldest queued alert is
//! dropped** and counted (`result="dropped"`): the newest state of an incident matters more than
//! an old one, and the state machine re-sends firing alerts anyway. A failed delivery is retried
//! with exponential backoff and jitter ([`RetryPolicy`], a pure function of the attempt number)
//! up to a cap, then given up (`result="failed"`); errors a retry cannot fix (HTTP 4xx other
//! than 408/429) are not retried.
//!
//! Shutdown ([`Dispatcher::shutdown`]): the queues close, each task delivers what is queued, and
//! whatever is still pending when the deadline passes is abandoned and counted as failed.

mod alertmanager;
mod http;
mod log;
mod webhook;

pub use alertmanager::{AlertmanagerConfig, AlertmanagerSink, alertmanager_payload};
pub use http::SinkConfigError;
pub use log::LogSink;
pub use webhook::{SIGNATURE_HEADER, WebhookConfig, WebhookSink, sign, webhook_payload};

use super::alert::Alert;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a delivery failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    pub retryable: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.retryable {
            "retryable"
        } else {
            "permanent"
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// A destination for alerts. Implementations render and send; queueing, retries, counting and
/// isolation are the dispatcher's. `deliver` gets a batch (oldest first) so sinks whose API takes
/// arrays (Alertmanager) send one request; others (SNS publish) loop. A sink must bound its own
/// request time (each HTTP sink has a timeout), since the dispatcher retries only after it returns.
pub trait Sink: Send + Sync + 'static {
    /// The `sink` label: `alertmanager`, `webhook`, `log`, `sns`.
    fn name(&self) -> &str;

    /// Delivers the whole batch or fails; a failed batch is retried whole.
    fn deliver(&self, alerts: &[Alert]) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

// ───────────────────────────── retry policy ─────────────────────────────

/// Exponential backoff with jitter, capped. Pure: the caller supplies the random sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 0.5 s, ×2, at most 30 s apart, 6 attempts (about a minute of trying).
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1 = the first try failed), or `None`
    /// when no attempt is left. "Equal jitter": half the backoff is fixed, half is
    /// `jitter` ∈ [0, 1) of it, so retries of many sinks spread out but never collapse to zero.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt == 0 || attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(attempt - 1).unwrap_or(i32::MAX));
        let base = (self.initial.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let seconds = base / 2.0 + base / 2.0 * jitter;
        Some(Duration::try_from_secs_f64(seconds).unwrap_or(self.max_delay))
    }
}

// ───────────────────────────── counters ─────────────────────────────

/// Outcome of one alert's delivery to one sink (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryResult {
    /// Delivered.
    Success,
    /// An attempt failed and will be retried.
    Retry,
    /// Given up: permanent error, attempts exhausted, or abandoned at shutdown.
    Failed,
    /// Dropped from a full queue before any attempt.
    Dropped,
}

impl DeliveryResult {
    pub const ALL: [DeliveryResult; 4] = [
        DeliveryResult::Success,
        DeliveryResult::Retry,
        DeliveryResult::Failed,
        DeliveryResult::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Success => "success",
            DeliveryResult::Retry => "retry",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Dropped => "dropped",
        }
    }
}

type NamedCounters = (String, Arc<SinkCounters>);

#[derive(Debug, Default)]
struct SinkCounters {
    by_result: [AtomicU64; 4],
}

impl SinkCounters {
    fn add(&self, result: DeliveryResult, n: usize) {
        let i = DeliveryResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.by_result[i].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One row of `lambdawatch_alert_deliveries_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryCount {
    pub sink: String,
    pub result: DeliveryResult,
    pub count: u64,
}

/// Per-sink, per-result alert counts (each alert of a batch counts once per outcome). Cheap to
/// clone; every row exists from the moment a sink is added, at 0.
#[derive(Clone, Debug, Default)]
pub struct DeliveryCounters {
    sinks: Arc<Mutex<Vec<NamedCounters>>>,
}

impl DeliveryCounters {
    fn register(&self, sink: &str) -> Arc<SinkCounters> {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = sinks.iter().find(|(name, _)| name == sink) {
            return c.clone();
        }
        let counters = Arc::new(SinkCounters::default());
        sinks.push((sink.to_owned(), counters.clone()));
        counters
    }

    /// Every (sink, result) row, in sink registration order.
    pub fn snapshot(&self) -> Vec<DeliveryCount> {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(sinks.len() * 4);
        for (sink, counters) in sinks.iter() {
            for (i, result) in DeliveryResult::ALL.iter().enumerate() {
                out.push(DeliveryCount {
                    sink: sink.clone(),
                    result: *result,
                    count: counters.by_result[i].load(Ordering::Relaxed),
                });
            }
        }
        out
    }

    /// One count (0 for an unknown sink).
    pub fn get(&self, sink: &str, result: DeliveryResult) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|c| c.sink == sink && c.result == result)
            .map_or(0, |c| c.count)
    }
}

// ───────────────────────────── the per-sink queue ─────────────────────────────

/// A bounded FIFO that drops its oldest entry when full (tokio's mpsc can only refuse the
/// newest). The lock is held for a push or a drain, never across an await.
#[derive(Debug)]
struct DropOldestQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Alert>,
    closed: bool,
}

impl DropOldestQueue {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Pushes; returns how many old entries were dropped to make room (0 or 1), or None when
    /// the queue is closed (the alert is then not queued).
    fn push(&self, alert: Alert) -> Option<usize> {
        let dropped = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.closed {
                return None;
            }
            let mut dropped = 0;
            while state.items.len() >= self.capacity {
                state.items.pop_front();
                dropped += 1;
            }
            state.items.push_back(alert);
            dropped
        };
        self.notify.notify_one();
        Some(dropped)
    }

    fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.notify.notify_one();
    }

    /// Waits for at least one alert and takes up to `max`; `None` once closed and empty.
    async fn next_batch(&self, max: usize) -> Option<Vec<Alert>> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if !state.items.is_empty() {
                    let n = state.items.len().min(max.max(1));
                    return Some(state.items.drain(..n).collect());
                }
                if state.closed {
                    return None;
                }
            }
            // `Notify` stores one permit, so a push between the check and here is not lost.
            self.notify.notified().await;
        }
    }
}

// ───────────────────────────── dispatcher ─────────────────────────────

/// Dispatcher settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DispatcherConfig {
    /// Alerts queued per sink before the oldest is dropped.
    pub queue_capacity: usize,
    /// Alerts per `deliver` call at most.
    pub max_batch: usize,
    pub retry: RetryPolicy,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_batch: 64,
            retry: RetryPolicy::default(),
        }
    }
}

/// Fans alerts out to every sink, each on its own task and queue. Needs a tokio runtime.
#[derive(Debug)]
pub struct Dispatcher {
    config: DispatcherConfig,
    queues: Vec<(String, Arc<DropOldestQueue>, Arc<SinkCounters>)>,
    counters: DeliveryCounters,
    tracker: TaskTracker,
    abandon: CancellationToken,
}

impl Dispatcher {
    pub fn new(config: DispatcherConfig) -> Self {
        Self {
            config,
            queues: Vec::new(),
            counters: DeliveryCounters::default(),
            tracker: TaskTracker::new(),
            abandon: CancellationToken::new(),
        }
    }

    /// Adds a sink and starts its task (must be called inside a tokio runtime). Sinks with the
    /// same name share one row of counters: give each instance its own name (`named(…)`).
    pub fn add_sink<S: Sink>(&mut self, sink: S) {
        let name = sink.name().to_owned();
        let queue = Arc::new(DropOldestQueue::new(self.config.queue_capacity));
        let counters = self.counters.register(&name);
        let task = SinkTask {
            sink,
            queue: queue.clone(),
            counters: counters.clone(),
            config: self.config,
            abandon: self.abandon.clone(),
            seed: seed_for(&name),
        };
        self.tracker.spawn(task.run());
        self.queues.push((name, queue, counters));
    }

    /// Names of the sinks, in the order added.
    pub fn sink_names(&self) -> Vec<String> {
        self.queues.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Queues `alert` for every sink. Never blocks; a full queue drops its oldest alert.
    pub fn dispatch(&self, alert: Alert) {
        for (_, queue, counters) in &self.queues {
            match queue.push(alert.clone()) {
                Some(0) => {}
                Some(dropped) => counters.add(DeliveryResult::Dropped, dropped),
                // Closed: shutdown has begun; the alert cannot be delivered any more.
                None => counters.add(DeliveryResult::Dropped, 1),
            }
        }
    }

    /// The counters (shared; keep a clone for `/metrics`).
    pub fn counters(&self) -> DeliveryCounters {
        self.counters.clone()
    }

    /// Closes every queue, lets each sink deliver what is queued, and abandons (counting as
    /// failed) whatever is still pending at `deadline`. Returns true when everything drained.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        for (_, queue, _) in &self.queues {
            queue.close();
        }
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            self.abandon.cancel();
            self.tracker.wait().await;
        }
        drained
    }
}

fn seed_for(name: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    name.bytes().fold(nanos ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct SinkTask<S> {
    sink: S,
    queue: Arc<DropOldestQueue>,
    counters: Arc<SinkCounters>,
    config: DispatcherConfig,
    abandon: CancellationToken,
    seed: u64,
}

impl<S: Sink> SinkTask<S> {
    async fn run(self) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        while let Some(batch) = self.queue.next_batch(self.config.max_batch).await {
            let n = batch.len();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let result = tokio::select! {
                    biased;
                    () = self.abandon.cancelled() => Err(DeliveryError::permanent("abandoned at shutdown")),
                    r = self.sink.deliver(&batch) => r,
                };
                let error = match result {
                    Ok(()) => {
                        self.counters.add(DeliveryResult::Success, n);
                        break;
                    }
                    Err(e) => e,
                };
                let delay = if error.retryable {
                    self.config.retry.delay(attempt, rng.random::<f64>())
                } else {
                    None
                };
                let Some(delay) = delay else {
                    self.counters.add(DeliveryResult::Failed, n);
                    tracing::warn!(sink = self.sink.name(), alerts = n, attempt, %error, "alert delivery failed; giving up on this batch");
                    break;
                };
                self.counters.add(DeliveryResult::Retry, n);
                tracing::debug!(sink = self.sink.name(), alerts = n, attempt, %error, ?delay, "alert delivery failed; will retry");
                tokio::select! {
                    biased;
                    () = self.abandon.cancelled() => {
                        self.counters.add(DeliveryResult::Failed, n);
                        break;
                    }
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Golden files in `sinks/golden/`: compared byte for byte; `LAMBDAWATCH_UPDATE_GOLDEN=1`
/// rewrites them (review the diff).
#[cfg(test)]
pub(crate) mod golden {
    pub(crate) fn check(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/alerting/sinks/golden")
            .join(name);
        let actual = format!("{}\n", actual.trim_end());
        if std::env::var_os("LAMBDAWATCH_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with LAMBDAWATCH_UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert_eq!(
            actual,
            expected,
            "{} differs from the output",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let p = RetryPolicy {
            initial: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            max_attempts: 8,
        };
        let ms = |a: u32, j: f64| p.delay(a, j).map(|d| d.as_millis());
        // No jitter: half the backoff; full jitter sample: the whole backoff.
        assert_eq!(ms(1, 0.0), Some(250));
        assert_eq!(ms(1, 1.0), Some(500));
        assert_eq!(ms(2, 0.0), Some(500));
        assert_eq!(ms(3, 0.5), Some(1500));
        assert_eq!(ms(6, 1.0), Some(16_000));
        // Capped at max_delay.
        assert_eq!(ms(7, 1.0), Some(30_000));
        assert_eq!(ms(7, 0.0), Some(15_000));
        // Attempts exhausted, and attempt 0 is not a failure.
        assert_eq!(ms(8, 0.5), None);
        assert_eq!(ms(0, 0.5), None);
        // Bad jitter samples are clamped, never negative or past the cap.
        assert_eq!(ms(1, -3.0), Some(250));
        assert_eq!(ms(1, f64::NAN), Some(250));
        assert_eq!(ms(7, 9.0), Some(30_000));
        // A policy of one attempt never retries.
        assert_eq!(
            RetryPolicy {
                max_attempts: 1,
                ..p
            }
            .delay(1, 0.5),
            None
        );
    }

    #[test]
    fn backoff_never_exceeds_the_cap_and_grows_monotonically() {
        let p = RetryPolicy::default();
        let mut last = Duration::ZERO;
        for attempt in 1..p.max_attempts {
            let d = p.delay(attempt, 0.0).unwrap_or(Duration::MAX);
            assert!(d >= last, "attempt {attempt}");
            assert!(p.delay(attempt, 0.999).unwrap_or(Duration::MAX) <= p.max_delay);
            last = d;
        }
    }

    fn alert(n: u32) -> Alert {
        super::super::alert::tests_support::sample_alert(&format!("fn-{n}"))
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest() {
        let q = DropOldestQueue::new(2);
        assert_eq!(q.push(alert(1)), Some(0));
        assert_eq!(q.push(alert(2)), Some(0));
        assert_eq!(q.push(alert(3)), Some(1));
        let batch = q.next_batch(10).await.unwrap_or_default();
        let names: Vec<&str> = batch
            .iter()
            .map(|a| a.labels["function"].as_str())
            .collect();
        assert_eq!(names, ["fn-2", "fn-3"]);
        q.close();
        assert_eq!(q.push(alert(4)), None);
        assert!(q.next_batch(10).await.is_none());
    }

    #[test]
    fn counters_have_every_row_from_registration() {
        let c = DeliveryCounters::default();
        let s = c.register("webhook");
        s.add(DeliveryResult::Success, 3);
        s.add(DeliveryResult::Dropped, 1);
        let rows = c.snapshot();
        assert_eq!(rows.len(), 4);
        assert_eq!(c.get("webhook", DeliveryResult::Success), 3);
        assert_eq!(c.get("webhook", DeliveryResult::Retry), 0);
        assert_eq!(c.get("webhook", DeliveryResult::Dropped), 1);
        assert_eq!(c.get("nope", DeliveryResult::Success), 0);
        assert!(Arc::ptr_eq(&s, &c.register("webhook")));
    }
}
