//! Metric names the extension emits (OTel FaaS conventions, then ours).

pub const FAAS_INVOCATIONS: &str = "faas.invocations";
pub const FAAS_ERRORS: &str = "faas.errors";
pub const FAAS_TIMEOUTS: &str = "faas.timeouts";
pub const FAAS_COLDSTARTS: &str = "faas.coldstarts";
/// Histogram, seconds.
pub const FAAS_INVOKE_DURATION: &str = "faas.invoke_duration";
/// Histogram, seconds.
pub const FAAS_INIT_DURATION: &str = "faas.init_duration";
/// Histogram, bytes (max memory used per invocation).
pub const FAAS_MEM_USAGE: &str = "faas.mem_usage";
/// Histogram, seconds.
pub const AWS_LAMBDA_BILLED_DURATION: &str = "aws.lambda.billed_duration";
/// Counter of records Lambda dropped before they reached us (`platform.logsDropped`).
pub const AWS_LAMBDA_LOGS_DROPPED: &str = "aws.lambda.logs_dropped";

// The extension observing itself.
pub const EXT_RECEIVED: &str = "lambdawatch.extension.received";
pub const EXT_EXPORTED: &str = "lambdawatch.extension.exported";
pub const EXT_DROPPED: &str = "lambdawatch.extension.dropped";
pub const EXT_RETRIES: &str = "lambdawatch.extension.retries";
/// Parts of events kept out of the output, by `reason` (`unknown_field`, `odd_value`): the event
/// itself was used, so these are not drops.
pub const EXT_IGNORED: &str = "lambdawatch.extension.ignored";
