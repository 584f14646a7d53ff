//! Asynchronous invocations (`X-Amz-Invocation-Type: Event`): queue, retries, dead-letter queue.
//!
//! Consumes events accepted with 202 (bounded queue of `async_queue_capacity`; when it is full the
//! event is dropped and counted as AsyncEventsDropped). Produces invocations by
//! `async_workers` workers. A function error or timeout is retried up to `max_retries` times with
//! the same `requestId`, after `async_retry_delay_ms` and twice that (Lambda waits 1 and 2
//! minutes); a throttle is retried without using up an attempt. An event that still fails goes to
//! the DLQ when one is configured (a bounded queue: when full, DeadLetterErrors), else it is
//! dropped (AsyncEventsDropped).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};
use tokio_util::task::TaskTracker;

use crate::{
    cloudwatch::PlatformCounters,
    function::{FunctionHandle, NotInvoked},
    report::{DeadLetter, Recorder},
};

/// Delay before retrying a throttled async event.
pub const THROTTLE_RETRY: Duration = Duration::from_millis(100);
/// Throttle retries before an event is dropped (Lambda keeps trying for up to 6 hours).
pub const MAX_THROTTLE_RETRIES: u32 = 600;

#[derive(Debug)]
pub struct AsyncEvent {
    pub request_id: String,
    pub payload: Bytes,
    /// The caller's `X-Amzn-Trace-Id`, kept for every attempt.
    pub trace: Option<String>,
}

/// Handle to enqueue async events.
#[derive(Debug, Clone)]
pub struct AsyncQueue {
    tx: mpsc::Sender<AsyncEvent>,
    recorder: Arc<Recorder>,
    counters: Arc<PlatformCounters>,
}

impl AsyncQueue {
    /// Accepts an event (the Invoke API answers 202 either way, as Lambda does).
    pub fn enqueue(&self, ev: AsyncEvent) -> bool {
        self.recorder.async_received();
        self.counters.async_received();
        if self.tx.try_send(ev).is_err() {
            tracing::warn!("async queue full: event dropped");
            self.recorder.async_dropped();
            self.counters.async_dropped();
            return false;
        }
        true
    }
}

/// Delay before async retry `retry` (1-based): `base`, then twice `base`.
pub fn retry_delay(base: Duration, retry: u32) -> Duration {
    base * (1u32 << retry.saturating_sub(1).min(8))
}

/// Starts the workers. Dropping every [`AsyncQueue`] lets them drain and stop; wait on `tracker`.
pub fn start(
    function: FunctionHandle,
    recorder: Arc<Recorder>,
    counters: Arc<PlatformCounters>,
    tracker: &TaskTracker,
) -> AsyncQueue {
    let cfg = function.config.clone();
    let (tx, rx) = mpsc::channel(cfg.async_queue_capacity);
    let rx = Arc::new(Mutex::new(rx));
    let dlq_name = cfg.dlq.queue_name(&cfg.name);
    let dlq_len = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..cfg.async_workers {
        let rx = rx.clone();
        let function = function.clone();
        let recorder = recorder.clone();
        let counters = counters.clone();
        let dlq_name = dlq_name.clone();
        let dlq_len = dlq_len.clone();
        tracker.spawn(async move {
            loop {
                let ev = { rx.lock().await.recv().await };
                let Some(ev) = ev else { return };
                process(
                    &function,
                    &recorder,
                    &counters,
                    dlq_name.as_deref(),
                    &dlq_len,
                    ev,
                )
                .await;
            }
        });
    }
    AsyncQueue {
        tx,
        recorder,
        counters,
    }
}

async fn process(
    function: &FunctionHandle,
    recorder: &Recorder,
    counters: &PlatformCounters,
    dlq: Option<&str>,
    dlq_len: &std::sync::atomic::AtomicUsize,
    ev: AsyncEvent,
) {
    let cfg = &function.config;
    let base = Duration::from_millis(cfg.async_retry_delay_ms);
    let mut attempt = 1u32;
    let mut throttled = 0u32;
    let last_status;
    loop {
        match function
            .invoke(
                ev.request_id.clone(),
                ev.payload.clone(),
                ev.trace.clone(),
                "Event",
                attempt,
            )
            .await
        {
            Ok(r) if r.status == "success" => return,
            Ok(r) => {
                if attempt > cfg.max_retries {
                    last_status = r.status.to_owned();
                    break;
                }
                recorder.async_retried();
                tokio::time::sleep(retry_delay(base, attempt)).await;
                attempt += 1;
            }
            Err(NotInvoked::Throttled) => {
                throttled += 1;
                if throttled > MAX_THROTTLE_RETRIES {
                    last_status = "throttled".to_owned();
                    break;
                }
                tokio::time::sleep(THROTTLE_RETRY).await;
            }
            Err(NotInvoked::ShuttingDown) => {
                last_status = "shutdown".to_owned();
                break;
            }
        }
    }
    match dlq {
        Some(queue) => {
            let n = dlq_len.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= cfg.dlq_capacity {
                dlq_len.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(request_id = %ev.request_id, queue, "DLQ full: dead-letter error");
                recorder.dead_letter_error();
                counters.dead_letter_error();
                recorder.async_dropped();
                counters.async_dropped();
                return;
            }
            // Sent to the DLQ, then dropped: AWS counts it in AsyncEventsDropped too, and SQS
            // counts the message in the queue's NumberOfMessagesSent.
            counters.dlq_sent();
            counters.async_dropped();
            recorder.async_dropped();
            recorder.dead_lettered(DeadLetter {
                request_id: ev.request_id,
                queue: queue.to_owned(),
                attempts: attempt,
                last_status,
                payload: String::from_utf8_lossy(&ev.payload).into_owned(),
            });
        }
        None => {
            recorder.async_dropped();
            counters.async_dropped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double() {
        let b = Duration::from_millis(200);
        assert_eq!(retry_delay(b, 1), Duration::from_millis(200));
        assert_eq!(retry_delay(b, 2), Duration::from_millis(400));
    }
}
