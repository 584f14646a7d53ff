//! Shared SDK configuration: the standard credential chain, region, endpoint override, the
//! standard retry strategy (exponential backoff with jitter on throttling and 5xx), and counters.
//!
//! **Backoff** (`aws-smithy-runtime`'s standard strategy): before retry *n* (n = 1 after the
//! first attempt) the SDK sleeps `U · min(initial · 2ⁿ⁻¹, 20 s)` with `U` uniform in [0, 1) —
//! "full jitter", so no single gap has a floor above zero; only the sum over many gaps does (its
//! mean is half the sum of the caps). [`AwsSettings::initial_backoff`] sets `initial` (the SDK's
//! default is 1 s; tests lower it to keep runs short). Retries also draw on the SDK's retry
//! token bucket (500 tokens per service; a throttling retry costs 5, another retry 14, a success
//! gives one back), so a long outage stops retrying instead of amplifying the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Attempts per call, the first included (the SDK's standard strategy backs off between them).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region; `None` takes the standard chain (`AWS_REGION`, profile, container metadata).
    pub region: Option<String>,
    /// Endpoint override for every service (tests); `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
    /// 0 means [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The standard retry strategy's initial backoff; `None`: the SDK's (1 s).
    pub initial_backoff: Option<std::time::Duration>,
}

impl AwsSettings {
    pub async fn load(&self) -> SdkConfig {
        let attempts = if self.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            self.max_attempts
        };
        let mut retry = RetryConfig::standard().with_max_attempts(attempts);
        if let Some(b) = self.initial_backoff {
            retry = retry.with_initial_backoff(b);
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry);
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        loader.load().await
    }
}

/// Calls, retries and failures of every AWS operation the collector makes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AwsCounters(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    operations: AtomicU64,
    attempts: AtomicU64,
    failures: AtomicU64,
}

/// A snapshot of [`AwsCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsCounts {
    pub operations: u64,
    pub retries: u64,
    pub failures: u64,
}

impl AwsCounters {
    pub fn snapshot(&self) -> AwsCounts {
        let ops = self.0.operations.load(Ordering::Relaxed);
        let attempts = self.0.attempts.load(Ordering::Relaxed);
        AwsCounts {
            operations: ops,
            retries: attempts.saturating_sub(ops),
            failures: self.0.failures.load(Ordering::Relaxed),
        }
    }

    /// The SDK interceptor that feeds these counters; add it to every service client.
    pub fn interceptor(&self) -> CountingInterceptor {
        CountingInterceptor(self.clone())
    }
}

#[derive(Debug, Clone)]
pub struct CountingInterceptor(AwsCounters);

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "lambdawatch-counting"
    }

    fn modify_before_retry_loop(
        &self,
        _ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.0.operations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_execution(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if ctx.output_or_error().is_some_and(|r| r.is_err()) {
            self.0.0.failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
