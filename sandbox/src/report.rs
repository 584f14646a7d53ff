//! The run report: what happened to every invocation, written as JSON at the end of a run.
//!
//! Consumes records from the environments (one per finished invocation), from the function
//! (throttles, environment shutdowns) and from the async queue (retries, dead letters). The
//! recorder is a sink: appends under a lock, never held across an `.await`. At most
//! [`MAX_RECORDS`] per-invocation records are kept; beyond that they are counted, not stored.

use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

pub const MAX_RECORDS: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub request_id: String,
    pub status: String,
    pub invocation_type: String,
    pub attempt: u32,
    pub environment: u64,
    pub cold_start: bool,
    pub init_type: Option<String>,
    pub init_duration_ms: Option<f64>,
    pub duration_ms: f64,
    pub billed_duration_ms: u64,
    pub max_memory_used_mb: u64,
    pub error_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownRecord {
    pub environment: u64,
    pub reason: String,
    pub duration_ms: f64,
    /// Extensions still running at the deadline, SIGKILLed.
    pub killed_extensions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub request_id: String,
    pub queue: String,
    pub attempts: u32,
    pub last_status: String,
    pub payload: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct OutcomeCounts {
    pub success: u64,
    pub error: u64,
    pub timeout: u64,
    pub failure: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct AsyncCounts {
    pub received: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dead_letter_errors: u64,
    pub dropped: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CloudwatchCounts {
    pub published: u64,
    pub failures: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TelemetryCounts {
    pub batches_sent: u64,
    pub events_sent: u64,
    pub retries: u64,
    pub batches_dropped: u64,
    pub events_dropped_queue_full: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RunReport {
    pub function: String,
    pub invocations: OutcomeCounts,
    pub cold_starts: u64,
    pub throttles: u64,
    #[serde(rename = "async")]
    pub async_: AsyncCounts,
    pub cloudwatch: CloudwatchCounts,
    pub telemetry: TelemetryCounts,
    pub records_not_kept: u64,
    pub records: Vec<InvocationRecord>,
    pub dead_letters: Vec<DeadLetter>,
    pub shutdowns: Vec<ShutdownRecord>,
}

#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<RunReport>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, RunReport> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn invocation(&self, rec: InvocationRecord) {
        let mut r = self.lock();
        match rec.status.as_str() {
            "success" => r.invocations.success += 1,
            "error" => r.invocations.error += 1,
            "timeout" => r.invocations.timeout += 1,
            _ => r.invocations.failure += 1,
        }
        if rec.cold_start {
            r.cold_starts += 1;
        }
        if r.records.len() < MAX_RECORDS {
            r.records.push(rec);
        } else {
            r.records_not_kept += 1;
        }
    }

    /// An initialisation that did not belong to an invocation (provisioned concurrency).
    pub fn cold_start(&self) {
        self.lock().cold_starts += 1;
    }

    pub fn throttle(&self) {
        self.lock().throttles += 1;
    }

    pub fn shutdown(&self, rec: ShutdownRecord) {
        self.lock().shutdowns.push(rec);
    }

    pub fn async_received(&self) {
        self.lock().async_.received += 1;
    }

    pub fn async_retried(&self) {
        self.lock().async_.retried += 1;
    }

    pub fn async_dropped(&self) {
        self.lock().async_.dropped += 1;
    }

    pub fn dead_letter_error(&self) {
        self.lock().async_.dead_letter_errors += 1;
    }

    pub fn dead_lettered(&self, dl: DeadLetter) {
        let mut r = self.lock();
        r.async_.dead_lettered += 1;
        r.dead_letters.push(dl);
    }

    pub fn cloudwatch(&self, ok: bool) {
        let mut r = self.lock();
        if ok {
            r.cloudwatch.published += 1;
        } else {
            r.cloudwatch.failures += 1;
        }
    }

    pub fn telemetry(&self, stats: &crate::telemetry_api::delivery::DeliveryStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut r = self.lock();
        r.telemetry.batches_sent += stats.batches_sent.load(Relaxed);
        r.telemetry.events_sent += stats.events_sent.load(Relaxed);
        r.telemetry.retries += stats.retries.load(Relaxed);
        r.telemetry.batches_dropped += stats.batches_dropped.load(Relaxed);
        r.telemetry.events_dropped_queue_full += stats.events_dropped_queue_full.load(Relaxed);
    }

    pub fn snapshot(&self, function: &str) -> RunReport {
        let mut r = self.lock().clone();
        r.function = function.to_owned();
        r
    }
}
