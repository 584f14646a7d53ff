//! Delivery of Telemetry API events to one subscriber: batching and HTTP POST with retries.
//!
//! Consumes events from the subscriber's bounded queue (the emitter `try_send`s and counts a drop
//! when it is full, then tells the subscriber with `platform.logsDropped`); produces HTTP POSTs of
//! JSON arrays to the subscriber's URI. A batch is sent when it holds `maxItems` events, would pass
//! `maxBytes`, or its oldest event is `timeoutMs` old ([`BatchPolicy`], a pure function of time).
//! While the environment is frozen the gate is closed and nothing is sent: what was produced
//! before the freeze (the late `platform.report`) goes out at the next thaw. A failed POST is
//! retried with exponential backoff; after [`MAX_ATTEMPTS`] the batch is dropped and counted.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::events::Schema;

/// Attempts per batch before it is dropped.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubled per attempt, capped at [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_millis(1_000);
/// Time allowed for one POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// Documented buffering limits.
pub const MAX_ITEMS_RANGE: (u64, u64) = (1_000, 10_000);
pub const MAX_BYTES_RANGE: (u64, u64) = (262_144, 1_048_576);
pub const TIMEOUT_MS_RANGE: (u64, u64) = (25, 30_000);
pub const DEFAULT_MAX_ITEMS: u64 = 10_000;
pub const DEFAULT_MAX_BYTES: u64 = 262_144;
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;

/// When a batch is due. Pure: the caller passes `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_items: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BatchPolicy {
    /// Whether a batch of `items` events / `bytes` bytes whose oldest event arrived at `oldest`
    /// must be sent at `now`.
    pub fn due(&self, items: usize, bytes: usize, oldest: Option<Instant>, now: Instant) -> bool {
        if items == 0 {
            return false;
        }
        items >= self.max_items
            || bytes >= self.max_bytes
            || oldest.is_some_and(|o| now.saturating_duration_since(o) >= self.timeout)
    }

    /// Whether adding an event of `next_bytes` would pass `maxBytes` (send what we have first).
    pub fn would_overflow(&self, items: usize, bytes: usize, next_bytes: usize) -> bool {
        items > 0 && bytes + next_bytes > self.max_bytes
    }
}

/// Backoff before attempt `attempt` (1-based retries).
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(10);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// Counters of one environment's deliveries (all subscribers).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub batches_sent: AtomicU64,
    pub events_sent: AtomicU64,
    pub retries: AtomicU64,
    pub batches_dropped: AtomicU64,
    pub events_dropped_queue_full: AtomicU64,
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct Destination {
    pub addr: SocketAddr,
    /// Path and query of the subscriber URI.
    pub path: String,
    /// The original URI, for logs.
    pub uri: String,
}

/// What a delivery task shares with its environment.
#[derive(Debug)]
pub struct EnvLink {
    /// Open while the environment is thawed.
    pub gate_open: watch::Receiver<bool>,
    /// Set at SHUTDOWN.
    pub draining: watch::Receiver<bool>,
    pub stats: Arc<DeliveryStats>,
    pub dropped: Arc<DropCounter>,
    pub schema: Schema,
}

/// Runs until the queue closes, then sends what is left (still honouring the gate). While
/// `draining` (SHUTDOWN) every event is sent as soon as it is queued.
pub async fn run(
    mut rx: mpsc::Receiver<Value>,
    dest: Destination,
    policy: BatchPolicy,
    env: EnvLink,
) {
    let EnvLink {
        mut gate_open,
        mut draining,
        stats,
        dropped,
        schema,
    } = env;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut batch: Vec<Value> = Vec::new();
    let mut bytes = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut closed = false;
    loop {
        let now = Instant::now();
        let drain = *draining.borrow_and_update();
        if drain && !closed {
            // Take what is already queued (up to one batch) so SHUTDOWN does not send one by one.
            while batch.len() < policy.max_items && bytes < policy.max_bytes {
                match rx.try_recv() {
                    Ok(ev) => {
                        bytes += serde_json::to_vec(&ev).map(|v| v.len()).unwrap_or(0) + 1;
                        batch.push(ev);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if closed || drain || policy.due(batch.len(), bytes, oldest, now) {
            if !batch.is_empty() {
                let mut out = std::mem::take(&mut batch);
                bytes = 0;
                oldest = None;
                note_drops(&mut out, &dropped, schema);
                // `send` waits for the thaw; if the environment is gone the gate sender is
                // dropped and it sends anyway (SHUTDOWN delivery).
                send(&client, &dest, out, &stats, &mut gate_open).await;
            }
            if closed {
                return;
            }
        }
        let deadline = oldest.map(|o| o + policy.timeout);
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    let size = serde_json::to_vec(&ev).map(|v| v.len()).unwrap_or(0) + 1;
                    if policy.would_overflow(batch.len(), bytes, size) {
                        let mut out = std::mem::take(&mut batch);
                        bytes = 0;
                        oldest = None;
                        note_drops(&mut out, &dropped, schema);
                        send(&client, &dest, out, &stats, &mut gate_open).await;
                    }
                    if batch.is_empty() {
                        oldest = Some(Instant::now());
                    }
                    bytes += size;
                    batch.push(ev);
                }
                None => closed = true,
            },
            () = sleep_until_opt(deadline) => {}
            Ok(()) = draining.changed() => {}
        }
    }
}

/// Appends `platform.logsDropped` when events were dropped since the last batch.
fn note_drops(batch: &mut Vec<Value>, dropped: &DropCounter, schema: Schema) {
    let (records, bytes) = dropped.take();
    if records > 0 {
        batch.push(super::events::logs_dropped(records, bytes).render(schema));
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    dest: &Destination,
    batch: Vec<Value>,
    stats: &DeliveryStats,
    gate_open: &mut watch::Receiver<bool>,
) {
    let n = batch.len() as u64;
    let body = match serde_json::to_vec(&Value::Array(batch)) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialise a telemetry batch; dropped");
            stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let uri = format!("http://{}{}", dest.addr, dest.path);
    for attempt in 1..=MAX_ATTEMPTS {
        // Never POST into a frozen environment: retries wait for the thaw too.
        let _ = gate_open.wait_for(|open| *open).await;
        let req = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::HOST, "sandbox.localdomain")
            .body(Full::new(body.clone()));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(uri = %dest.uri, error = %e, "invalid telemetry destination; batch dropped");
                stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let result = tokio::time::timeout(POST_TIMEOUT, client.request(req)).await;
        match result {
            Ok(Ok(resp)) if resp.status().is_success() => {
                let _ = resp.into_body().collect().await;
                stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                stats.events_sent.fetch_add(n, Ordering::Relaxed);
                return;
            }
            Ok(Ok(resp)) => {
                tracing::debug!(uri = %dest.uri, status = %resp.status(), attempt, "telemetry POST refused");
            }
            Ok(Err(e)) => {
                tracing::debug!(uri = %dest.uri, error = %e, attempt, "telemetry POST failed")
            }
            Err(_) => tracing::debug!(uri = %dest.uri, attempt, "telemetry POST timed out"),
        }
        if attempt < MAX_ATTEMPTS {
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    tracing::warn!(uri = %dest.uri, events = n, "telemetry batch dropped after {MAX_ATTEMPTS} attempts");
    stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
}

/// A live subscription as the environment's hub sees it.
#[derive(Debug)]
pub struct Subscriber {
    pub extension_id: String,
    pub name: String,
    pub schema: Schema,
    pub platform: bool,
    pub function: bool,
    pub extension: bool,
    pub tx: mpsc::Sender<Value>,
    /// Events dropped because `tx` was full, not yet reported with `platform.logsDropped`.
    pub dropped: Arc<DropCounter>,
}

/// Drops of one subscriber, shared by the emitter (adds) and its delivery task (takes).
#[derive(Debug, Default)]
pub struct DropCounter {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl DropCounter {
    pub fn add(&self, bytes: u64) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `(records, bytes)` dropped since the last call.
    pub fn take(&self) -> (u64, u64) {
        (
            self.records.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_items_bytes_timeout() {
        let p = BatchPolicy {
            max_items: 3,
            max_bytes: 100,
            timeout: Duration::from_millis(50),
        };
        let t0 = Instant::now();
        assert!(!p.due(0, 0, None, t0));
        assert!(!p.due(2, 10, Some(t0), t0 + Duration::from_millis(49)));
        assert!(p.due(2, 10, Some(t0), t0 + Duration::from_millis(50)));
        assert!(p.due(3, 10, Some(t0), t0));
        assert!(p.due(1, 100, Some(t0), t0));
        assert!(p.would_overflow(1, 90, 20));
        assert!(!p.would_overflow(0, 0, 200));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(9), MAX_BACKOFF);
    }
}
