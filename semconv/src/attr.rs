//! Attribute keys. OpenTelemetry semantic conventions first; `aws.lambda.*` where the conventions
//! have no key (documented in `docs/ARCHITECTURE.md`, "What the extension emits").

// Resource (OTel semconv: service, faas, cloud).
pub const SERVICE_NAME: &str = "service.name";
pub const FAAS_NAME: &str = "faas.name";
pub const FAAS_VERSION: &str = "faas.version";
pub const FAAS_INSTANCE: &str = "faas.instance";
pub const FAAS_MAX_MEMORY: &str = "faas.max_memory";
pub const CLOUD_PROVIDER: &str = "cloud.provider";
pub const CLOUD_PLATFORM: &str = "cloud.platform";
pub const CLOUD_REGION: &str = "cloud.region";
pub const CLOUD_ACCOUNT_ID: &str = "cloud.account.id";
pub const CLOUD_RESOURCE_ID: &str = "cloud.resource_id";
pub const HOST_ARCH: &str = "host.arch";

// Span and log attributes (OTel semconv).
pub const FAAS_INVOCATION_ID: &str = "faas.invocation_id";
pub const FAAS_COLDSTART: &str = "faas.coldstart";
pub const FAAS_TRIGGER: &str = "faas.trigger";
pub const AWS_LAMBDA_INVOKED_ARN: &str = "aws.lambda.invoked_arn";
pub const ERROR_TYPE: &str = "error.type";

// Our own, documented extensions of the conventions.
/// Which of our span shapes this is; values in [`crate::span_type`].
pub const LAMBDAWATCH_SPAN_TYPE: &str = "lambdawatch.span.type";
/// `success` | `error` | `timeout` | `failure` (Telemetry API `status`).
pub const AWS_LAMBDA_OUTCOME: &str = "aws.lambda.outcome";
/// Telemetry API `errorType` on a failed invocation or init.
pub const AWS_LAMBDA_ERROR_TYPE: &str = "aws.lambda.error_type";
/// `platform.report.metrics.durationMs` (float milliseconds).
pub const AWS_LAMBDA_DURATION_MS: &str = "aws.lambda.duration_ms";
/// `platform.report.metrics.billedDurationMs` (integer milliseconds).
pub const AWS_LAMBDA_BILLED_DURATION_MS: &str = "aws.lambda.billed_duration_ms";
/// `platform.report.metrics.memorySizeMB`.
pub const AWS_LAMBDA_MEMORY_SIZE_MB: &str = "aws.lambda.memory_size_mb";
/// `platform.report.metrics.maxMemoryUsedMB`.
pub const AWS_LAMBDA_MAX_MEMORY_USED_MB: &str = "aws.lambda.max_memory_used_mb";
/// `platform.report.metrics.initDurationMs` (on the invocation that followed a cold start).
pub const AWS_LAMBDA_INIT_DURATION_MS: &str = "aws.lambda.init_duration_ms";
/// `platform.report.metrics.restoreDurationMs` (SnapStart).
pub const AWS_LAMBDA_RESTORE_DURATION_MS: &str = "aws.lambda.restore_duration_ms";
/// The invocation's time budget in ms: INVOKE `deadlineMs` minus the invocation start.
pub const AWS_LAMBDA_TIMEOUT_MS: &str = "aws.lambda.timeout_ms";
/// `on-demand` | `provisioned-concurrency` | `snap-start` | `lambda-managed-instances`.
pub const AWS_LAMBDA_INIT_TYPE: &str = "aws.lambda.init_type";
/// `init` | `invoke` (an init suppressed and re-run inside the first invoke).
pub const AWS_LAMBDA_INIT_PHASE: &str = "aws.lambda.init_phase";
/// `x86_64` | `arm64`, when the extension knows it (cost depends on it).
pub const AWS_LAMBDA_ARCHITECTURE: &str = "aws.lambda.architecture";
/// Configured ephemeral storage (`/tmp`) in MB, as a resource attribute: Lambda does not tell
/// the extension, so users set it through `OTEL_RESOURCE_ATTRIBUTES` (cost only; default 512).
pub const AWS_LAMBDA_EPHEMERAL_STORAGE_MB: &str = "aws.lambda.ephemeral_storage_mb";
/// The platform phase name of a `phase` span (`responseLatency`, …).
pub const AWS_LAMBDA_PHASE: &str = "aws.lambda.phase";
/// Produced bytes of the response (`platform.runtimeDone.metrics.producedBytes`).
pub const AWS_LAMBDA_PRODUCED_BYTES: &str = "aws.lambda.produced_bytes";
/// `platform.logsDropped.droppedRecords` / `droppedBytes` and reason.
pub const AWS_LAMBDA_DROPPED_RECORDS: &str = "aws.lambda.dropped_records";
pub const AWS_LAMBDA_DROPPED_BYTES: &str = "aws.lambda.dropped_bytes";
pub const AWS_LAMBDA_DROP_REASON: &str = "aws.lambda.drop_reason";
/// Log source: `function` | `extension` | `platform`.
pub const AWS_LAMBDA_LOG_SOURCE: &str = "aws.lambda.log_source";
/// `platform.initStart.runtimeVersion` on init spans (e.g. `python:3.12.v30`).
pub const AWS_LAMBDA_RUNTIME_VERSION: &str = "aws.lambda.runtime_version";
/// `true` on an invocation span emitted without its `platform.report` (shutdown came first).
pub const LAMBDAWATCH_INCOMPLETE: &str = "lambdawatch.incomplete";
/// Signal label on the extension's own exported counter (`traces`, `metrics`, `logs`).
pub const LAMBDAWATCH_SIGNAL: &str = "signal";
/// Reason label on the extension's own drop counter.
pub const LAMBDAWATCH_REASON: &str = "reason";

// Client spans of function code (OTel semantic conventions), read by the collector's
// timeout-cascade advisor to name the downstream a function calls.
pub const PEER_SERVICE: &str = "peer.service";
pub const SERVER_ADDRESS: &str = "server.address";
pub const RPC_SERVICE: &str = "rpc.service";
pub const DB_SYSTEM: &str = "db.system";
