//! Configuration: the function YAML and the workload YAML, read here and nowhere else.
//!
//! Consumes files named on the command line; produces typed, validated [`FunctionConfig`] and
//! [`WorkloadConfig`]. Unknown keys are rejected (`deny_unknown_fields`) so a typo never silently
//! falls back to a default.

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Lambda's init phase limit.
pub const INIT_LIMIT_MS: u64 = 10_000;
/// Budget extensions get after SHUTDOWN before SIGKILL.
pub const SHUTDOWN_BUDGET_MS: u64 = 2_000;
/// Default account-level concurrency when no reserved concurrency is set.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The dead-letter queue setting: `dlq: true`, `dlq: false` or `dlq: my-queue-name`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DlqSetting {
    Enabled(bool),
    Named(String),
}

impl DlqSetting {
    /// The queue name when a DLQ is configured.
    pub fn queue_name(&self, function: &str) -> Option<String> {
        match self {
            DlqSetting::Enabled(false) => None,
            DlqSetting::Enabled(true) => Some(format!("{function}-dlq")),
            DlqSetting::Named(n) => Some(n.clone()),
        }
    }
}

/// One Lambda function, as `lambdawatch-sandbox run --function FUNCTION.yaml` reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_account")]
    pub account_id: String,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The runtime's argv (what `bootstrap` is in a custom runtime).
    pub handler: Vec<String>,
    /// `LAMBDA_TASK_ROOT` and the runtime's working directory.
    #[serde(default)]
    pub code_dir: Option<PathBuf>,
    /// What `/opt/extensions` is in Lambda: every executable file here is started at INIT.
    #[serde(default)]
    pub extensions_dir: Option<PathBuf>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Concurrency limit of the function; the excess is throttled (429).
    #[serde(default)]
    pub reserved_concurrency: Option<u32>,
    /// Environments initialised at start with `initializationType: provisioned-concurrency`.
    #[serde(default)]
    pub provisioned_concurrency: u32,
    /// Async invocation retries after the first attempt (Lambda: 0–2, default 2).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Delay before the first async retry; doubled for the second (Lambda uses minutes).
    #[serde(default = "default_retry_delay")]
    pub async_retry_delay_ms: u64,
    /// Events waiting for an async worker; beyond it events are dropped (AsyncEventsDropped).
    #[serde(default = "default_async_queue")]
    pub async_queue_capacity: usize,
    /// Workers draining the async queue.
    #[serde(default = "default_async_workers")]
    pub async_workers: usize,
    #[serde(default = "default_dlq")]
    pub dlq: DlqSetting,
    /// Messages the DLQ holds; a full DLQ fails the send (DeadLetterErrors).
    #[serde(default = "default_dlq_capacity")]
    pub dlq_capacity: usize,
    /// An environment idle this long is spun down (SHUTDOWN reason `spindown`).
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    /// Period of the CloudWatch-shaped platform counts.
    #[serde(default = "default_cw_period")]
    pub cloudwatch_period_ms: u64,
    /// Events one Telemetry API subscriber may have queued before they are dropped (counted).
    #[serde(default = "default_telemetry_queue")]
    pub telemetry_queue_capacity: usize,
}

fn default_version() -> String {
    "$LATEST".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_account() -> String {
    "123456789012".into()
}
fn default_memory() -> u32 {
    128
}
fn default_timeout() -> u64 {
    3_000
}
fn default_retries() -> u32 {
    2
}
fn default_retry_delay() -> u64 {
    200
}
fn default_async_queue() -> usize {
    1_000
}
fn default_async_workers() -> usize {
    2
}
fn default_dlq() -> DlqSetting {
    DlqSetting::Enabled(false)
}
fn default_dlq_capacity() -> usize {
    10_000
}
fn default_idle() -> u64 {
    300_000
}
fn default_cw_period() -> u64 {
    60_000
}
fn default_telemetry_queue() -> usize {
    10_000
}

impl FunctionConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: FunctionConfig = parse_yaml(path)?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg.resolve_relative(path))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if self.handler.is_empty() {
            return Err("handler must name the runtime's argv (at least one element)".into());
        }
        if !(128..=10_240).contains(&self.memory_mb) {
            return Err(format!(
                "memory_mb {} is outside 128..=10240",
                self.memory_mb
            ));
        }
        if !(1..=900_000).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms {} is outside 1..=900000",
                self.timeout_ms
            ));
        }
        if self.max_retries > 2 {
            return Err(format!("max_retries {} is outside 0..=2", self.max_retries));
        }
        if let Some(r) = self.reserved_concurrency
            && self.provisioned_concurrency > r
        {
            return Err(format!(
                "provisioned_concurrency {} exceeds reserved_concurrency {r}",
                self.provisioned_concurrency
            ));
        }
        if self.async_workers == 0 || self.async_queue_capacity == 0 {
            return Err("async_workers and async_queue_capacity must be at least 1".into());
        }
        if self.cloudwatch_period_ms == 0 || self.telemetry_queue_capacity == 0 {
            return Err(
                "cloudwatch_period_ms and telemetry_queue_capacity must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Relative paths in the YAML are relative to the YAML file.
    fn resolve_relative(mut self, path: &Path) -> Self {
        let parent = path.parent().unwrap_or(Path::new("."));
        // Absolute, because the runtime runs with `code_dir` as its working directory.
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned());
        let base = base.as_path();
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(inner) = p
                && inner.is_relative()
            {
                *inner = base.join(&*inner);
            }
        };
        fix(&mut self.code_dir);
        fix(&mut self.extensions_dir);
        if let Some(first) = self.handler.first_mut()
            && (first.starts_with("./") || first.starts_with("../"))
        {
            *first = base.join(&*first).to_string_lossy().into_owned();
        }
        self
    }

    pub fn concurrency_limit(&self) -> u32 {
        self.reserved_concurrency
            .unwrap_or(DEFAULT_CONCURRENCY_LIMIT)
    }

    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account_id, self.name
        )
    }
}

/// A reproducible workload: phases run one after the other with one seeded RNG.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    #[serde(default)]
    pub seed: u64,
    pub phases: Vec<PhaseConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    #[serde(default)]
    pub name: String,
    /// Ticks per second; each tick sends `burst` invocations.
    pub rate_per_sec: f64,
    pub duration_ms: u64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// A JSON object merged under the generated `fail`/`sleep_ms`/`log_lines`/`log_json` keys.
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub log_lines: u64,
    #[serde(default)]
    pub log_json: bool,
    #[serde(default)]
    pub error_fraction: f64,
    #[serde(default)]
    pub timeout_fraction: f64,
    #[serde(default)]
    pub slow_fraction: f64,
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub async_fraction: f64,
}

fn default_burst() -> u32 {
    1
}
fn default_slow_ms() -> u64 {
    500
}

impl WorkloadConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: WorkloadConfig = parse_yaml(path)?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("a workload needs at least one phase".into());
        }
        for (i, p) in self.phases.iter().enumerate() {
            if !(p.rate_per_sec > 0.0 && p.rate_per_sec <= 10_000.0) {
                return Err(format!("phase {i}: rate_per_sec must be in (0, 10000]"));
            }
            if p.burst == 0 {
                return Err(format!("phase {i}: burst must be at least 1"));
            }
            for (n, f) in [
                ("error_fraction", p.error_fraction),
                ("timeout_fraction", p.timeout_fraction),
                ("slow_fraction", p.slow_fraction),
                ("async_fraction", p.async_fraction),
            ] {
                if !(0.0..=1.0).contains(&f) {
                    return Err(format!("phase {i}: {n} must be in [0, 1]"));
                }
            }
            if p.error_fraction + p.timeout_fraction + p.slow_fraction > 1.0 {
                return Err(format!(
                    "phase {i}: error_fraction + timeout_fraction + slow_fraction exceeds 1"
                ));
            }
            if let Some(v) = &p.payload
                && !v.is_object()
            {
                return Err(format!("phase {i}: payload must be a mapping"));
            }
        }
        Ok(())
    }
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_yaml::from_str::<FunctionConfig>("name: f\nhandler: [x]\ntimeout: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn dlq_forms() {
        let c: FunctionConfig = serde_yaml::from_str("name: f\nhandler: [x]\ndlq: q1\n").unwrap();
        assert_eq!(c.dlq.queue_name("f").as_deref(), Some("q1"));
        let c: FunctionConfig = serde_yaml::from_str("name: f\nhandler: [x]\ndlq: true\n").unwrap();
        assert_eq!(c.dlq.queue_name("f").as_deref(), Some("f-dlq"));
        let c: FunctionConfig = serde_yaml::from_str("name: f\nhandler: [x]\n").unwrap();
        assert_eq!(c.dlq.queue_name("f"), None);
    }

    #[test]
    fn validation() {
        let mut c: FunctionConfig = serde_yaml::from_str("name: f\nhandler: [x]\n").unwrap();
        assert!(c.validate().is_ok());
        c.max_retries = 3;
        assert!(c.validate().is_err());
        let w: WorkloadConfig = serde_yaml::from_str(
            "phases:\n  - rate_per_sec: 5\n    duration_ms: 100\n    error_fraction: 0.7\n    timeout_fraction: 0.5\n",
        )
        .unwrap();
        assert!(w.validate().unwrap_err().contains("exceeds 1"));
    }
}
