//! The contract between `lambdawatch-extension` and `lambdawatch-collector`.
//!
//! ```text
//! extension ──OTLP (these keys, these span shapes)──► collector::ingest ──► aggregate
//! sandbox / CloudWatch Metric Streams ──OTLP Summary (cloudwatch::*)──► collector::ingest
//! ```
//!
//! Everything both binaries must spell the same way lives here and nowhere else: attribute keys
//! (OpenTelemetry semantic conventions where they exist, documented `aws.lambda.*` extensions where
//! they do not), metric names, how an invocation and an initialisation are shaped as spans, the
//! X-Ray ⇄ W3C trace id mapping, and the CloudWatch Metric Streams (OpenTelemetry 1.0.0) shape of
//! the platform counts that no extension can see. The Telemetry API wire types stay in the
//! extension; the collector never sees them.

pub mod attr;
pub mod cloudwatch;
pub mod metric;
pub mod otlp;
pub mod xray;

/// `lambdawatch.span.type` values: how the collector tells our spans apart without guessing.
pub mod span_type {
    /// One SERVER span per invocation (`faas.invocation_id` set).
    pub const INVOCATION: &str = "invocation";
    /// One span per initialisation (`platform.initStart` … `platform.initReport`).
    pub const INIT: &str = "init";
    /// One span per SnapStart restore (`platform.restoreStart` … `platform.restoreReport`).
    pub const RESTORE: &str = "restore";
    /// A platform phase inside an invocation (`responseLatency`, `runtimeOverhead`, …).
    pub const PHASE: &str = "phase";
}

/// Outcome of an invocation or initialisation, as `platform.report.status` spells it.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const ERROR: &str = "error";
    pub const TIMEOUT: &str = "timeout";
    pub const FAILURE: &str = "failure";
}

/// `aws.lambda.init_type` values (Telemetry API `initializationType`).
pub mod init_type {
    pub const ON_DEMAND: &str = "on-demand";
    pub const PROVISIONED: &str = "provisioned-concurrency";
    pub const SNAP_START: &str = "snap-start";
    pub const MANAGED_INSTANCES: &str = "lambda-managed-instances";
}
