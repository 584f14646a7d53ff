//! The collector's one typed configuration, read here and nowhere else.
//!
//! Sources, later wins: built-in defaults → `--config FILE` (YAML, unknown keys rejected with a
//! line and column) → `LAMBDAWATCH_*` environment variables (one named const per setting, beside
//! its default). No file at all runs the defaults and the embedded SLO spec.
//!
//! | env | default | meaning |
//! |---|---|---|
//! | `LAMBDAWATCH_OTLP_GRPC_ADDR` | `0.0.0.0:4317` | OTLP/gRPC listen address (port 0 = any) |
//! | `LAMBDAWATCH_OTLP_HTTP_ADDR` | `0.0.0.0:4318` | OTLP/HTTP listen address |
//! | `LAMBDAWATCH_ADMIN_ADDR` | `0.0.0.0:9464` | `/metrics`, `/api/v1/slos`, `/api/v1/cost`, `/healthz`, `/readyz`, `/` |
//! | `LAMBDAWATCH_AUTH_TOKEN` | unset | bearer token required on OTLP requests when set |
//! | `LAMBDAWATCH_SLO_FILE` | unset | SLO spec file; unset = embedded default |
//! | `LAMBDAWATCH_EVAL_INTERVAL` | `30s` | how often SLOs are evaluated and alerts delivered |
//! | `LAMBDAWATCH_MAX_BODY_BYTES` | `4194304` | largest accepted request body (compressed), else 413 |
//! | `LAMBDAWATCH_MAX_DECOMPRESSED_BYTES` | `16777216` | largest decompressed body, else 413 |
//! | `LAMBDAWATCH_QUEUE_CAPACITY` | `1024` | ingest batches waiting for the aggregator, else 429 |
//! | `LAMBDAWATCH_MAX_FUNCTIONS` | `20000` | tracked functions; events of further ones are dropped and counted |
//! | `LAMBDAWATCH_ALERT_FOR` | `1m` | how long a condition holds (pending) before it fires; generated Prometheus rules must use the same (`rules --for`) |
//! | `LAMBDAWATCH_ALERT_RESEND` | `5m` | re-send interval while firing |
//! | `LAMBDAWATCH_NO_DATA_AFTER` | the spec's (`1h`) | overrides the spec's `defaults.no_data_after` |
//! | `LAMBDAWATCH_ALERTMANAGER_URL` | unset | Alertmanager base URL (`POST /api/v2/alerts`) |
//! | `LAMBDAWATCH_WEBHOOK_URL` | unset | generic JSON webhook |
//! | `LAMBDAWATCH_WEBHOOK_SECRET` | unset | HMAC-SHA256 key for the webhook signature |
//! | `LAMBDAWATCH_RUNBOOK_BASE_URL` | the spec's | overrides the spec's `defaults.runbook_base_url` |
//! | `LAMBDAWATCH_SHUTDOWN_TIMEOUT` | `25s` | hard deadline for the whole shutdown |
//! | `LAMBDAWATCH_DLQ_QUEUES` | empty | `queue=function,…`: SQS DLQ `QueueName` → function |
//! | `LAMBDAWATCH_LOG` | `info` | tracing filter |
//! | `LAMBDAWATCH_AWS_REGION` | standard chain | region of every AWS call (`AWS_REGION` otherwise) |
//! | `LAMBDAWATCH_AWS_ACCOUNT_ID` | unset | account stamped on polled CloudWatch counts |
//! | `LAMBDAWATCH_AWS_ENDPOINT_URL` | unset | endpoint override for every AWS service (tests, VPC endpoints) |
//! | `LAMBDAWATCH_AWS_MAX_ATTEMPTS` | `5` | attempts per AWS call, the first included (throttling and 5xx are retried) |
//! | `LAMBDAWATCH_AWS_RETRY_INITIAL_BACKOFF` | `1s` | the SDK's initial backoff: retry *n* waits a uniformly random time in [0, this × 2ⁿ⁻¹), at most 20 s |
//! | `LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL` | unset (off) | poll `GetMetricData` this often (e.g. `1m`) |
//! | `LAMBDAWATCH_CLOUDWATCH_PERIOD` | `60s` | CloudWatch period, `60s` or `300s` |
//! | `LAMBDAWATCH_CLOUDWATCH_FUNCTIONS` | empty | functions to poll besides those that report (`a,b,…`) |
//! | `LAMBDAWATCH_FIREHOSE_ACCESS_KEY` | unset (off) | mounts `POST /firehose` on the OTLP/HTTP port; the key Firehose must send |
//! | `LAMBDAWATCH_CLOUDWATCH_LOGS_GROUP_PREFIX` | unset (off) | export function logs to CloudWatch Logs, group `<prefix><function>` |
//! | `LAMBDAWATCH_XRAY_EXPORT` | `false` | export invocation and platform spans to X-Ray |
//! | `LAMBDAWATCH_SNS_TOPIC_ARN` | unset | also deliver alerts to this SNS topic |
//! | `LAMBDAWATCH_CHECKPOINT` | unset (in memory) | durable state: `dynamodb://TABLE` or `s3://BUCKET/PREFIX` |
//! | `LAMBDAWATCH_CHECKPOINT_INTERVAL` | the eval interval | how often the checkpoint is written (the most a restart loses) |
//! | `LAMBDAWATCH_CLOUDWATCH_EMF_LOG_GROUP` | `/lambdawatch/slo-metrics` when logs export is on | log group of the SLO metrics as Embedded Metric Format lines; `off` disables |
//! | `LAMBDAWATCH_LEASE_TTL` | unset (off) | with `LAMBDAWATCH_CHECKPOINT`: only the holder of a lease in that store polls CloudWatch and publishes to SNS (several tasks) |
//! | `LAMBDAWATCH_TASK_ID` | ECS task id, else the hostname | this task's checkpoint key; a restarted task must keep it to restore |
//! | `LAMBDAWATCH_COST_PRICES` | embedded table | Lambda price table file (`collector/prices/aws-lambda-prices.yaml` format) |
//! | `LAMBDAWATCH_COST_FREE_TIER` | `true` | apply the monthly free tier to the 30-day projection |
//! | `LAMBDAWATCH_COST_BUDGET_USD` | unset | monthly budget per function; a projection above it fires the budget cost surprise |
//! | `LAMBDAWATCH_COST_BUDGETS` | empty | `function=usd,…`: per-function budgets overriding the default |
//! | `LAMBDAWATCH_COST_MAX_FUNCTIONS` | `10000` | functions priced; invocations of further ones are dropped and counted |
//! | `LAMBDAWATCH_COST_LOOKBACK_DAYS` | `7` | days of history the 30-day projection extrapolates from (1–31) |
//! | `LAMBDAWATCH_COST_PROVISIONED_CONCURRENCY` | empty | `function=units,…`: provisioned concurrency configured per function; its standing charge enters the day cost and the 30-day projection |

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

pub const ENV_OTLP_GRPC_ADDR: &str = "LAMBDAWATCH_OTLP_GRPC_ADDR";
pub const DEFAULT_OTLP_GRPC_ADDR: &str = "0.0.0.0:4317";
pub const ENV_OTLP_HTTP_ADDR: &str = "LAMBDAWATCH_OTLP_HTTP_ADDR";
pub const DEFAULT_OTLP_HTTP_ADDR: &str = "0.0.0.0:4318";
pub const ENV_ADMIN_ADDR: &str = "LAMBDAWATCH_ADMIN_ADDR";
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9464";
pub const ENV_AUTH_TOKEN: &str = "LAMBDAWATCH_AUTH_TOKEN";
pub const ENV_SLO_FILE: &str = "LAMBDAWATCH_SLO_FILE";
pub const ENV_EVAL_INTERVAL: &str = "LAMBDAWATCH_EVAL_INTERVAL";
pub const DEFAULT_EVAL_INTERVAL: Duration = Duration::from_secs(30);
pub const ENV_MAX_BODY_BYTES: &str = "LAMBDAWATCH_MAX_BODY_BYTES";
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
pub const ENV_MAX_DECOMPRESSED_BYTES: &str = "LAMBDAWATCH_MAX_DECOMPRESSED_BYTES";
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;
pub const ENV_QUEUE_CAPACITY: &str = "LAMBDAWATCH_QUEUE_CAPACITY";
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const ENV_MAX_FUNCTIONS: &str = "LAMBDAWATCH_MAX_FUNCTIONS";
pub const DEFAULT_MAX_FUNCTIONS: usize = 20_000;
pub const ENV_ALERT_FOR: &str = "LAMBDAWATCH_ALERT_FOR";
pub const DEFAULT_ALERT_FOR: Duration = Duration::from_secs(60);
pub const ENV_ALERT_RESEND: &str = "LAMBDAWATCH_ALERT_RESEND";
pub const DEFAULT_ALERT_RESEND: Duration = Duration::from_secs(300);
pub const ENV_NO_DATA_AFTER: &str = "LAMBDAWATCH_NO_DATA_AFTER";
pub const ENV_ALERTMANAGER_URL: &str = "LAMBDAWATCH_ALERTMANAGER_URL";
pub const ENV_WEBHOOK_URL: &str = "LAMBDAWATCH_WEBHOOK_URL";
pub const ENV_WEBHOOK_SECRET: &str = "LAMBDAWATCH_WEBHOOK_SECRET";
pub const ENV_RUNBOOK_BASE_URL: &str = "LAMBDAWATCH_RUNBOOK_BASE_URL";
pub const ENV_SHUTDOWN_TIMEOUT: &str = "LAMBDAWATCH_SHUTDOWN_TIMEOUT";
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
pub const ENV_DLQ_QUEUES: &str = "LAMBDAWATCH_DLQ_QUEUES";
pub const ENV_LOG: &str = "LAMBDAWATCH_LOG";
pub const ENV_AWS_REGION: &str = "LAMBDAWATCH_AWS_REGION";
pub const ENV_AWS_ACCOUNT_ID: &str = "LAMBDAWATCH_AWS_ACCOUNT_ID";
pub const ENV_AWS_ENDPOINT_URL: &str = "LAMBDAWATCH_AWS_ENDPOINT_URL";
pub const ENV_AWS_MAX_ATTEMPTS: &str = "LAMBDAWATCH_AWS_MAX_ATTEMPTS";
pub const ENV_AWS_RETRY_INITIAL_BACKOFF: &str = "LAMBDAWATCH_AWS_RETRY_INITIAL_BACKOFF";
pub const ENV_CLOUDWATCH_POLL_INTERVAL: &str = "LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL";
pub const ENV_CLOUDWATCH_PERIOD: &str = "LAMBDAWATCH_CLOUDWATCH_PERIOD";
pub const DEFAULT_CLOUDWATCH_PERIOD: Duration = Duration::from_secs(60);
pub const ENV_CLOUDWATCH_FUNCTIONS: &str = "LAMBDAWATCH_CLOUDWATCH_FUNCTIONS";
pub const ENV_FIREHOSE_ACCESS_KEY: &str = "LAMBDAWATCH_FIREHOSE_ACCESS_KEY";
pub const ENV_CLOUDWATCH_LOGS_GROUP_PREFIX: &str = "LAMBDAWATCH_CLOUDWATCH_LOGS_GROUP_PREFIX";
pub const ENV_XRAY_EXPORT: &str = "LAMBDAWATCH_XRAY_EXPORT";
pub const ENV_SNS_TOPIC_ARN: &str = "LAMBDAWATCH_SNS_TOPIC_ARN";
pub const ENV_CHECKPOINT: &str = "LAMBDAWATCH_CHECKPOINT";
pub const ENV_CHECKPOINT_INTERVAL: &str = "LAMBDAWATCH_CHECKPOINT_INTERVAL";
/// `true`: a running task also adopts orphan checkpoints and merges them into its windows
/// (`crate::checkpoint::Writer::adopt_once`); default `false` (adoption only at start).
pub const ENV_CHECKPOINT_MERGE_ORPHANS: &str = "LAMBDAWATCH_CHECKPOINT_MERGE_ORPHANS";
pub const ENV_TASK_ID: &str = "LAMBDAWATCH_TASK_ID";
pub const ENV_COST_PRICES: &str = "LAMBDAWATCH_COST_PRICES";
pub const ENV_COST_FREE_TIER: &str = "LAMBDAWATCH_COST_FREE_TIER";
pub const ENV_COST_BUDGET_USD: &str = "LAMBDAWATCH_COST_BUDGET_USD";
pub const ENV_COST_BUDGETS: &str = "LAMBDAWATCH_COST_BUDGETS";
pub const ENV_COST_MAX_FUNCTIONS: &str = "LAMBDAWATCH_COST_MAX_FUNCTIONS";
pub const ENV_COST_LOOKBACK_DAYS: &str = "LAMBDAWATCH_COST_LOOKBACK_DAYS";
pub const ENV_COST_BUDGET_WARMUP: &str = "LAMBDAWATCH_COST_BUDGET_WARMUP";
pub const ENV_COST_PROVISIONED_CONCURRENCY: &str = "LAMBDAWATCH_COST_PROVISIONED_CONCURRENCY";
pub const ENV_CLOUDWATCH_EMF_LOG_GROUP: &str = "LAMBDAWATCH_CLOUDWATCH_EMF_LOG_GROUP";
/// The EMF log group when CloudWatch Logs export is on and no group is configured.
pub const DEFAULT_CLOUDWATCH_EMF_LOG_GROUP: &str = "/lambdawatch/slo-metrics";
pub const ENV_LEASE_TTL: &str = "LAMBDAWATCH_LEASE_TTL";
/// Shortest lease ttl accepted (renewals every ttl / 3 must outpace the store's latency).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// Set by ECS (EC2 and Fargate) in every container: `http://169.254.170.2/v4/<task id>-<n>` on
/// Fargate; the task id is read from its last path segment when it has that shape.
pub const ENV_ECS_CONTAINER_METADATA_URI_V4: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// Where checkpoints go (`LAMBDAWATCH_CHECKPOINT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLocation {
    DynamoDb { table: String },
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for CheckpointLocation {
    type Err = String;

    /// `dynamodb://TABLE` or `s3://BUCKET/PREFIX` (`PREFIX` may be empty).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(table) = s.strip_prefix("dynamodb://") {
            if table.is_empty() || table.contains('/') {
                return Err(format!("`{s}`: expected dynamodb://TABLE"));
            }
            return Ok(Self::DynamoDb {
                table: table.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("`{s}`: expected s3://BUCKET/PREFIX"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err(format!(
            "`{s}`: expected dynamodb://TABLE or s3://BUCKET/PREFIX"
        ))
    }
}

/// The ECS task id in an `ECS_CONTAINER_METADATA_URI_V4` value (Fargate: the last path segment
/// is `<32 hex task id>-<n>`); `None` when it has another shape.
pub fn ecs_task_id(uri: &str) -> Option<String> {
    let seg = uri.trim_end_matches('/').rsplit('/').next()?;
    let id = seg.split('-').next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The AWS edges (all off by default: the embedded default needs no AWS account).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub endpoint_url: Option<String>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub cloudwatch_poll_interval: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub cloudwatch_period: Duration,
    pub cloudwatch_functions: Vec<String>,
    pub firehose_access_key: Option<String>,
    pub logs_group_prefix: Option<String>,
    pub xray: bool,
    pub sns_topic_arn: Option<String>,
    /// EMF log group; `None`: [`DEFAULT_CLOUDWATCH_EMF_LOG_GROUP`] when logs export is on;
    /// `off`: no EMF (see [`AwsConfig::emf_log_group`]).
    pub emf_log_group: Option<String>,
    /// Attempts per AWS call; 0: `lambdawatch_aws::client::DEFAULT_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// The SDK's initial retry backoff; `None`: the SDK's (1 s).
    #[serde(deserialize_with = "de_opt_duration")]
    pub retry_initial_backoff: Option<Duration>,
}

impl AwsConfig {
    /// Where the SLO metrics go as EMF lines, if anywhere: only with CloudWatch Logs export on.
    pub fn emf_log_group(&self) -> Option<String> {
        self.logs_group_prefix.as_ref()?;
        match self.emf_log_group.as_deref() {
            Some("off") => None,
            Some(g) => Some(g.to_owned()),
            None => Some(DEFAULT_CLOUDWATCH_EMF_LOG_GROUP.to_owned()),
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            account_id: None,
            endpoint_url: None,
            cloudwatch_poll_interval: None,
            cloudwatch_period: DEFAULT_CLOUDWATCH_PERIOD,
            cloudwatch_functions: Vec::new(),
            firehose_access_key: None,
            logs_group_prefix: None,
            xray: false,
            sns_topic_arn: None,
            emf_log_group: None,
            max_attempts: 0,
            retry_initial_backoff: None,
        }
    }
}

/// The cost stage (`crate::cost::feed`), YAML key `cost`. Defaults are `CostConfig`'s:
/// 10,000 functions, 7-day lookback, free tier on, no budget.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSettings {
    /// Price table file; `None` = the embedded table.
    pub prices_file: Option<PathBuf>,
    /// Function name → monthly budget (USD), overriding `surprise.budget_usd`.
    pub budgets: BTreeMap<String, f64>,
    pub free_tier: bool,
    pub max_functions: usize,
    pub lookback_days: u64,
    /// Budget (`budget_usd`, the default for every function) and invocation-rate surprise.
    pub surprise: crate::cost::surprise::SurpriseConfig,
    pub retry: crate::cost::retry::RetryConfig,
    /// The advisors: `memory`, `cascade` (timeout cascades), `provisioned` (`docs/cost.md`).
    pub advice: crate::cost::advice::AdviceConfig,
    /// Function name → provisioned concurrency units configured on it (its standing charge is
    /// part of the function's day cost and 30-day projection).
    pub provisioned_concurrency: BTreeMap<String, u32>,
}

impl Default for CostSettings {
    fn default() -> Self {
        let c = crate::cost::CostConfig::default();
        Self {
            prices_file: None,
            budgets: BTreeMap::new(),
            free_tier: c.free_tier,
            max_functions: c.max_functions,
            lookback_days: c.lookback_days,
            surprise: c.surprise,
            retry: c.retry,
            advice: crate::cost::advice::AdviceConfig::default(),
            provisioned_concurrency: c.provisioned_concurrency,
        }
    }
}

impl CostSettings {
    /// The stage's configuration.
    pub fn stage_config(&self) -> crate::cost::CostConfig {
        crate::cost::CostConfig {
            max_functions: self.max_functions,
            lookback_days: self.lookback_days,
            free_tier: self.free_tier,
            surprise: self.surprise.clone(),
            retry: self.retry.clone(),
            provisioned_concurrency: self.provisioned_concurrency.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        let usd_ok = |v: f64| v.is_finite() && v >= 0.0;
        if self.max_functions == 0 {
            return Err("cost.max_functions must be at least 1".into());
        }
        self.advice.check()?;
        if !(1..=31).contains(&self.lookback_days) {
            return Err("cost.lookback_days must be between 1 and 31".into());
        }
        if self.surprise.budget_usd.is_some_and(|b| !usd_ok(b)) {
            return Err("cost.surprise.budget_usd must be a non-negative number".into());
        }
        if let Some((f, _)) = self.budgets.iter().find(|(_, b)| !usd_ok(**b)) {
            return Err(format!(
                "cost.budgets: the budget of {f} must be a non-negative number"
            ));
        }
        Ok(())
    }
}

/// `function=value,…` (spaces around items allowed, empty items skipped).
fn function_map<T: std::str::FromStr>(
    var: &'static str,
    v: &str,
    shape: &str,
) -> Result<BTreeMap<String, T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let mut map = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |message: String| ConfigError::Env {
            var,
            value: v.to_owned(),
            message,
        };
        let (f, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("`{pair}` is not {shape}")))?;
        let value: T = value
            .trim()
            .parse()
            .map_err(|e| bad(format!("`{pair}`: {e}")))?;
        map.insert(f.trim().to_owned(), value);
    }
    Ok(map)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}
pub const DEFAULT_LOG: &str = "info";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{var}={value:?}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
}

/// Everything the collector needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub auth_token: Option<String>,
    pub slo_file: Option<PathBuf>,
    pub eval_interval: Duration,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub queue_capacity: usize,
    pub max_functions: usize,
    pub alert_for: Duration,
    pub alert_resend: Duration,
    /// Overrides the SLO spec's `defaults.no_data_after` when set.
    pub no_data_after: Option<Duration>,
    pub alertmanager_url: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    /// Overrides the SLO spec's `defaults.runbook_base_url` when set.
    pub runbook_base_url: Option<String>,
    pub shutdown_timeout: Duration,
    /// SQS dead-letter queue name → the function it serves.
    pub dlq_queues: BTreeMap<String, String>,
    pub log: String,
    pub aws: AwsConfig,
    /// `None`: state lives in memory only (the embedded default).
    pub checkpoint: Option<CheckpointLocation>,
    /// `None`: every `eval_interval`.
    pub checkpoint_interval: Option<Duration>,
    /// [`ENV_CHECKPOINT_MERGE_ORPHANS`].
    pub checkpoint_merge_orphans: bool,
    /// `None`: the ECS task id if `ECS_CONTAINER_METADATA_URI_V4` names one, else the hostname
    /// (resolved by `checkpoint::task_id`).
    pub task_id: Option<String>,
    pub cost: CostSettings,
    /// `None`: no lease, every task polls and pages (one task).
    pub lease_ttl: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            otlp_grpc_addr: parse_addr(DEFAULT_OTLP_GRPC_ADDR),
            otlp_http_addr: parse_addr(DEFAULT_OTLP_HTTP_ADDR),
            admin_addr: parse_addr(DEFAULT_ADMIN_ADDR),
            auth_token: None,
            slo_file: None,
            eval_interval: DEFAULT_EVAL_INTERVAL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_functions: DEFAULT_MAX_FUNCTIONS,
            alert_for: DEFAULT_ALERT_FOR,
            alert_resend: DEFAULT_ALERT_RESEND,
            no_data_after: None,
            alertmanager_url: None,
            webhook_url: None,
            webhook_secret: None,
            runbook_base_url: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            dlq_queues: BTreeMap::new(),
            log: DEFAULT_LOG.to_owned(),
            aws: AwsConfig::default(),
            checkpoint: None,
            checkpoint_interval: None,
            checkpoint_merge_orphans: false,
            task_id: None,
            cost: CostSettings::default(),
            lease_ttl: None,
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    // The defaults are literals that parse; a failure here is a programming error caught by the
    // `defaults_parse` test, so fall back to an unspecified address rather than panic.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The YAML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    otlp_grpc_addr: Option<SocketAddr>,
    otlp_http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    auth_token: Option<String>,
    slo_file: Option<PathBuf>,
    eval_interval: Option<String>,
    max_body_bytes: Option<usize>,
    max_decompressed_bytes: Option<usize>,
    queue_capacity: Option<usize>,
    max_functions: Option<usize>,
    alert_for: Option<String>,
    alert_resend: Option<String>,
    no_data_after: Option<String>,
    alertmanager_url: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    runbook_base_url: Option<String>,
    shutdown_timeout: Option<String>,
    dlq_queues: Option<BTreeMap<String, String>>,
    log: Option<String>,
    aws: Option<AwsConfig>,
    checkpoint: Option<String>,
    checkpoint_interval: Option<String>,
    task_id: Option<String>,
    cost: Option<CostSettings>,
    lease_ttl: Option<String>,
}

/// Parses `5m`, `30s`, `1h`, `3d`, `250ms` (and a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m, 1h, 3d"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way windows are labelled (`5m`, `1h`, `3d`, `30d`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            cfg.apply_file(path, &text)?;
        }
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Applies a YAML document (errors carry `path:line:column`).
    pub fn apply_file(&mut self, path: &std::path::Path, text: &str) -> Result<(), ConfigError> {
        let perr = |message: String, loc: Option<serde_yaml::Location>| ConfigError::Parse {
            path: path.to_owned(),
            line: loc.as_ref().map_or(1, |l| l.line()),
            column: loc.as_ref().map_or(1, |l| l.column()),
            message,
        };
        let f: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| perr(e.to_string(), e.location()))?
        };
        let dur = |v: Option<String>, key: &str| -> Result<Option<Duration>, ConfigError> {
            v.map(|s| parse_duration(&s).map_err(|m| perr(format!("{key}: {m}"), None)))
                .transpose()
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        set!(
            otlp_grpc_addr,
            otlp_http_addr,
            admin_addr,
            max_body_bytes,
            max_decompressed_bytes,
            queue_capacity,
            max_functions,
            dlq_queues,
            log,
            aws,
            cost
        );
        macro_rules! set_opt {
            ($($field:ident),*) => { $( if f.$field.is_some() { self.$field = f.$field; } )* };
        }
        set_opt!(
            auth_token,
            slo_file,
            alertmanager_url,
            webhook_url,
            webhook_secret,
            runbook_base_url
        );
        if let Some(d) = dur(f.eval_interval, "eval_interval")? {
            self.eval_interval = d;
        }
        if let Some(d) = dur(f.alert_for, "alert_for")? {
            self.alert_for = d;
        }
        if let Some(d) = dur(f.alert_resend, "alert_resend")? {
            self.alert_resend = d;
        }
        if let Some(d) = dur(f.no_data_after, "no_data_after")? {
            self.no_data_after = Some(d);
        }
        if let Some(d) = dur(f.shutdown_timeout, "shutdown_timeout")? {
            self.shutdown_timeout = d;
        }
        if let Some(c) = f.checkpoint {
            self.checkpoint = Some(
                c.parse()
                    .map_err(|m| perr(format!("checkpoint: {m}"), None))?,
            );
        }
        if let Some(d) = dur(f.checkpoint_interval, "checkpoint_interval")? {
            self.checkpoint_interval = Some(d);
        }
        if f.task_id.is_some() {
            self.task_id = f.task_id;
        }
        if let Some(d) = dur(f.lease_ttl, "lease_ttl")? {
            self.lease_ttl = Some(d);
        }
        self.check().map_err(|m| perr(m, None))
    }

    /// Applies `LAMBDAWATCH_*` overrides read through `get` (the process env in production).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(var: &'static str, v: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                value: v.clone(),
                message: e.to_string(),
            })
        }
        let dur = |var: &'static str, v: String| {
            parse_duration(&v).map_err(|message| ConfigError::Env {
                var,
                value: v.clone(),
                message,
            })
        };
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = get(ENV_OTLP_GRPC_ADDR) {
            self.otlp_grpc_addr = parsed(ENV_OTLP_GRPC_ADDR, v)?;
        }
        if let Some(v) = get(ENV_OTLP_HTTP_ADDR) {
            self.otlp_http_addr = parsed(ENV_OTLP_HTTP_ADDR, v)?;
        }
        if let Some(v) = get(ENV_ADMIN_ADDR) {
            self.admin_addr = parsed(ENV_ADMIN_ADDR, v)?;
        }
        if let Some(v) = get(ENV_AUTH_TOKEN) {
            self.auth_token = Some(v);
        }
        if let Some(v) = get(ENV_SLO_FILE) {
            self.slo_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_EVAL_INTERVAL) {
            self.eval_interval = dur(ENV_EVAL_INTERVAL, v)?;
        }
        if let Some(v) = get(ENV_MAX_BODY_BYTES) {
            self.max_body_bytes = parsed(ENV_MAX_BODY_BYTES, v)?;
        }
        if let Some(v) = get(ENV_MAX_DECOMPRESSED_BYTES) {
            self.max_decompressed_bytes = parsed(ENV_MAX_DECOMPRESSED_BYTES, v)?;
        }
        if let Some(v) = get(ENV_QUEUE_CAPACITY) {
            self.queue_capacity = parsed(ENV_QUEUE_CAPACITY, v)?;
        }
        if let Some(v) = get(ENV_MAX_FUNCTIONS) {
            self.max_functions = parsed(ENV_MAX_FUNCTIONS, v)?;
        }
        if let Some(v) = get(ENV_ALERT_FOR) {
            self.alert_for = dur(ENV_ALERT_FOR, v)?;
        }
        if let Some(v) = get(ENV_ALERT_RESEND) {
            self.alert_resend = dur(ENV_ALERT_RESEND, v)?;
        }
        if let Some(v) = get(ENV_NO_DATA_AFTER) {
            self.no_data_after = Some(dur(ENV_NO_DATA_AFTER, v)?);
        }
        if let Some(v) = get(ENV_ALERTMANAGER_URL) {
            self.alertmanager_url = Some(v);
        }
        if let Some(v) = get(ENV_WEBHOOK_URL) {
            self.webhook_url = Some(v);
        }
        if let Some(v) = get(ENV_WEBHOOK_SECRET) {
            self.webhook_secret = Some(v);
        }
        if let Some(v) = get(ENV_RUNBOOK_BASE_URL) {
            self.runbook_base_url = Some(v);
        }
        if let Some(v) = get(ENV_SHUTDOWN_TIMEOUT) {
            self.shutdown_timeout = dur(ENV_SHUTDOWN_TIMEOUT, v)?;
        }
        if let Some(v) = get(ENV_DLQ_QUEUES) {
            let mut map = BTreeMap::new();
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((q, f)) = pair.split_once('=') else {
                    return Err(ConfigError::Env {
                        var: ENV_DLQ_QUEUES,
                        value: v.clone(),
                        message: format!("`{pair}` is not queue=function"),
                    });
                };
                map.insert(q.trim().to_owned(), f.trim().to_owned());
            }
            self.dlq_queues = map;
        }
        if let Some(v) = get(ENV_LOG) {
            self.log = v;
        }
        let aws = &mut self.aws;
        for (var, slot) in [
            (ENV_AWS_REGION, &mut aws.region),
            (ENV_AWS_ACCOUNT_ID, &mut aws.account_id),
            (ENV_AWS_ENDPOINT_URL, &mut aws.endpoint_url),
            (ENV_FIREHOSE_ACCESS_KEY, &mut aws.firehose_access_key),
            (ENV_CLOUDWATCH_LOGS_GROUP_PREFIX, &mut aws.logs_group_prefix),
            (ENV_SNS_TOPIC_ARN, &mut aws.sns_topic_arn),
            (ENV_CLOUDWATCH_EMF_LOG_GROUP, &mut aws.emf_log_group),
        ] {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                *slot = Some(v);
            }
        }
        if let Some(v) = get(ENV_CLOUDWATCH_POLL_INTERVAL) {
            aws.cloudwatch_poll_interval = Some(dur(ENV_CLOUDWATCH_POLL_INTERVAL, v)?);
        }
        if let Some(v) = get(ENV_CLOUDWATCH_PERIOD) {
            aws.cloudwatch_period = dur(ENV_CLOUDWATCH_PERIOD, v)?;
        }
        if let Some(v) = get(ENV_AWS_MAX_ATTEMPTS) {
            aws.max_attempts = parsed(ENV_AWS_MAX_ATTEMPTS, v)?;
        }
        if let Some(v) = get(ENV_AWS_RETRY_INITIAL_BACKOFF) {
            aws.retry_initial_backoff = Some(dur(ENV_AWS_RETRY_INITIAL_BACKOFF, v)?);
        }
        if let Some(v) = get(ENV_CLOUDWATCH_FUNCTIONS) {
            aws.cloudwatch_functions = v
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = get(ENV_XRAY_EXPORT) {
            self.aws.xray = parsed(ENV_XRAY_EXPORT, v)?;
        }
        if let Some(v) = get(ENV_CHECKPOINT) {
            self.checkpoint = Some(parsed(ENV_CHECKPOINT, v)?);
        }
        if let Some(v) = get(ENV_CHECKPOINT_INTERVAL) {
            self.checkpoint_interval = Some(dur(ENV_CHECKPOINT_INTERVAL, v)?);
        }
        if let Some(v) = get(ENV_CHECKPOINT_MERGE_ORPHANS) {
            self.checkpoint_merge_orphans = parsed(ENV_CHECKPOINT_MERGE_ORPHANS, v)?;
        }
        let cost = &mut self.cost;
        if let Some(v) = get(ENV_COST_PRICES) {
            cost.prices_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_COST_FREE_TIER) {
            cost.free_tier = parsed(ENV_COST_FREE_TIER, v)?;
        }
        if let Some(v) = get(ENV_COST_BUDGET_USD) {
            cost.surprise.budget_usd = Some(parsed(ENV_COST_BUDGET_USD, v)?);
        }
        if let Some(v) = get(ENV_COST_BUDGETS) {
            cost.budgets = function_map(ENV_COST_BUDGETS, &v, "function=usd")?;
        }
        if let Some(v) = get(ENV_COST_PROVISIONED_CONCURRENCY) {
            cost.provisioned_concurrency =
                function_map(ENV_COST_PROVISIONED_CONCURRENCY, &v, "function=units")?;
        }
        if let Some(v) = get(ENV_COST_MAX_FUNCTIONS) {
            cost.max_functions = parsed(ENV_COST_MAX_FUNCTIONS, v)?;
        }
        if let Some(v) = get(ENV_COST_LOOKBACK_DAYS) {
            cost.lookback_days = parsed(ENV_COST_LOOKBACK_DAYS, v)?;
        }
        if let Some(v) = get(ENV_COST_BUDGET_WARMUP) {
            cost.surprise.budget_warmup_secs = dur(ENV_COST_BUDGET_WARMUP, v)?.as_secs();
        }
        if let Some(v) = get(ENV_LEASE_TTL) {
            self.lease_ttl = Some(dur(ENV_LEASE_TTL, v)?);
        }
        if let Some(v) = get(ENV_TASK_ID) {
            self.task_id = Some(v.trim().to_owned());
        } else if self.task_id.is_none()
            && let Some(id) = get(ENV_ECS_CONTAINER_METADATA_URI_V4).and_then(|u| ecs_task_id(&u))
        {
            self.task_id = Some(id);
        }
        self.check().map_err(|message| ConfigError::Env {
            var: "LAMBDAWATCH_*",
            value: String::new(),
            message,
        })
    }

    fn check(&self) -> Result<(), String> {
        if !matches!(self.aws.cloudwatch_period.as_secs(), 60 | 300) {
            return Err("aws.cloudwatch_period must be 60s or 300s".into());
        }
        if self
            .aws
            .cloudwatch_poll_interval
            .is_some_and(|d| d.is_zero())
        {
            return Err("aws.cloudwatch_poll_interval must be positive".into());
        }
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        if self.max_body_bytes == 0 || self.max_decompressed_bytes == 0 {
            return Err("max_body_bytes and max_decompressed_bytes must be positive".into());
        }
        if self.eval_interval.is_zero() {
            return Err("eval_interval must be positive".into());
        }
        if self.max_functions == 0 {
            return Err("max_functions must be at least 1".into());
        }
        if self.checkpoint_interval.is_some_and(|d| d.is_zero()) {
            return Err("checkpoint_interval must be positive".into());
        }
        if let Some(ttl) = self.lease_ttl {
            if self.checkpoint.is_none() {
                return Err("lease_ttl needs a checkpoint store (the lease lives there)".into());
            }
            if ttl < MIN_LEASE_TTL {
                return Err("lease_ttl must be at least 1s".into());
            }
        }
        if self.task_id.as_deref().is_some_and(str::is_empty) {
            return Err("task_id must not be empty".into());
        }
        self.cost.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::default();
        assert_eq!(c.otlp_grpc_addr.port(), 4317);
        assert_eq!(c.otlp_http_addr.port(), 4318);
        assert_eq!(c.admin_addr.port(), 9464);
    }

    #[test]
    fn file_then_env() {
        let mut c = Config::default();
        c.apply_file(
            std::path::Path::new("c.yaml"),
            "auth_token: abc\neval_interval: 10s\ndlq_queues:\n  orders-dlq: orders\n",
        )
        .unwrap();
        assert_eq!(c.auth_token.as_deref(), Some("abc"));
        assert_eq!(c.eval_interval, Duration::from_secs(10));
        c.apply_env(|k| match k {
            ENV_AUTH_TOKEN => Some("xyz".into()),
            ENV_QUEUE_CAPACITY => Some("7".into()),
            ENV_OTLP_HTTP_ADDR => Some("127.0.0.1:0".into()),
            ENV_DLQ_QUEUES => Some("a=b, c=d".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.auth_token.as_deref(), Some("xyz"));
        assert_eq!(c.queue_capacity, 7);
        assert_eq!(c.otlp_http_addr.port(), 0);
        assert_eq!(c.dlq_queues.get("c").map(String::as_str), Some("d"));
        assert!(!c.dlq_queues.contains_key("orders-dlq"));
    }

    #[test]
    fn unknown_key_has_a_location() {
        let mut c = Config::default();
        let err = c
            .apply_file(
                std::path::Path::new("c.yaml"),
                "auth_token: a\nqueue_capacty: 3\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.yaml:2:"), "{err}");
        assert!(err.contains("queue_capacty"), "{err}");
    }

    #[test]
    fn bad_env_is_named() {
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == ENV_EVAL_INTERVAL).then(|| "soon".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_EVAL_INTERVAL), "{err}");
    }

    #[test]
    fn cost_settings_from_file_and_env() {
        let mut c = Config::default();
        assert!(c.cost.free_tier);
        assert_eq!(c.cost.stage_config(), crate::cost::CostConfig::default());
        c.apply_file(
            std::path::Path::new("c.yaml"),
            "cost:\n  lookback_days: 3\n  budgets:\n    orders: 25\n  surprise:\n    rate_multiple: 4\n  provisioned_concurrency:\n    orders: 10\n",
        )
        .unwrap();
        assert_eq!(c.cost.provisioned_concurrency.get("orders"), Some(&10));
        assert_eq!(c.cost.lookback_days, 3);
        assert_eq!(c.cost.surprise.rate_multiple, 4.0);
        assert_eq!(c.cost.budgets.get("orders"), Some(&25.0));
        c.apply_env(|k| match k {
            ENV_COST_FREE_TIER => Some("false".into()),
            ENV_COST_BUDGET_USD => Some("100".into()),
            ENV_COST_BUDGETS => Some("a=1.5, b=2".into()),
            ENV_COST_MAX_FUNCTIONS => Some("5".into()),
            ENV_COST_PRICES => Some("/etc/prices.yaml".into()),
            ENV_COST_PROVISIONED_CONCURRENCY => Some("a=3, b = 1".into()),
            ENV_COST_BUDGET_WARMUP => Some("10m".into()),
            _ => None,
        })
        .unwrap();
        let s = c.cost.stage_config();
        assert_eq!(s.surprise.budget_warmup_secs, 600);
        assert!(!s.free_tier);
        assert_eq!(s.max_functions, 5);
        assert_eq!(s.lookback_days, 3);
        assert_eq!(s.surprise.budget_usd, Some(100.0));
        assert_eq!(
            s.provisioned_concurrency,
            BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)])
        );
        assert_eq!(
            c.cost.budgets,
            BTreeMap::from([("a".to_owned(), 1.5), ("b".to_owned(), 2.0)])
        );
        assert_eq!(
            c.cost.prices_file.as_deref(),
            Some(std::path::Path::new("/etc/prices.yaml"))
        );
        for (var, value, needle) in [
            (ENV_COST_BUDGETS, "a:1", "a:1"),
            (ENV_COST_BUDGETS, "a=-1", "non-negative"),
            (ENV_COST_PROVISIONED_CONCURRENCY, "a=-1", "a=-1"),
            (ENV_COST_PROVISIONED_CONCURRENCY, "a", "function=units"),
            (ENV_COST_LOOKBACK_DAYS, "40", "lookback_days"),
            (ENV_COST_FREE_TIER, "maybe", ENV_COST_FREE_TIER),
        ] {
            let err = Config::default()
                .apply_env(|k| (k == var).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{var}={value}: {err}");
        }
        let err = Config::default()
            .apply_file(std::path::Path::new("c.yaml"), "cost:\n  budget: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("budget"), "{err}");
    }

    /// The advisors' thresholds (`cost.advice`, YAML only): defaults, a file override, and
    /// refusals that name the key.
    #[test]
    fn cost_advice_settings_from_file() {
        assert_eq!(
            Config::default().cost.advice,
            crate::cost::advice::AdviceConfig::default()
        );
        let mut c = Config::default();
        c.apply_file(
            std::path::Path::new("c.yaml"),
            "cost:\n  advice:\n    cascade:\n      latency_rise: 3\n      recent_minutes: 10\n    \
             memory:\n      min_invocations: 50\n    provisioned:\n      percentile: 0.95\n",
        )
        .unwrap();
        let a = &c.cost.advice;
        assert_eq!(
            (a.cascade.latency_rise, a.cascade.recent_minutes),
            (3.0, 10)
        );
        assert_eq!(a.cascade.baseline_minutes, 30);
        assert_eq!(a.memory.min_invocations, 50);
        assert_eq!(a.provisioned.percentile, 0.95);
        for (yaml, needle) in [
            (
                "cost:\n  advice:\n    cascade:\n      recent_minutes: 0\n",
                "recent_minutes",
            ),
            ("cost:\n  advice:\n    cascade:\n      lag: 1\n", "lag"),
            (
                "cost:\n  advice:\n    provisioned:\n      percentile: 1.5\n",
                "percentile",
            ),
        ] {
            let err = Config::default()
                .apply_file(std::path::Path::new("c.yaml"), yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn lease_needs_a_store_and_emf_needs_logs_export() {
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == ENV_LEASE_TTL).then(|| "30s".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint store"), "{err}");
        let mut c = Config::default();
        c.apply_env(|k| match k {
            ENV_LEASE_TTL => Some("30s".into()),
            ENV_CHECKPOINT => Some("dynamodb://t".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.lease_ttl, Some(Duration::from_secs(30)));
        assert_eq!(c.aws.emf_log_group(), None, "no logs export, no EMF");
        c.aws.logs_group_prefix = Some("/fn/".into());
        assert_eq!(
            c.aws.emf_log_group().as_deref(),
            Some(DEFAULT_CLOUDWATCH_EMF_LOG_GROUP)
        );
        c.apply_env(|k| (k == ENV_CLOUDWATCH_EMF_LOG_GROUP).then(|| "off".to_owned()))
            .unwrap();
        assert_eq!(c.aws.emf_log_group(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(259_200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_secs(2_592_000)), "30d");
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(21600)), "6h");
    }
}
