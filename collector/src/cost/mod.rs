//! Cost: what each function costs, what it will cost, and where the money leaks.
//!
//! ```text
//! aggregate (per-function usage, per-trace records, request ids)
//!    ──► model (exact monthly bill, 30-day projection, per-invocation list price)
//!    ──► surprise (budget, hour-of-week invocation baseline)      ──► alerting / /metrics / /api/v1
//!    ──► retry (repeated requestIds → retry fraction, DLQ backlog)
//!    ──► memory (Power Tuning cost/speed/balanced, never below P99 memory + headroom)
//!    ──► timeout (P99 vs timeout, timeout cascades from per-trace downstream latency)
//!    ──► provisioned (cold starts and P99 init vs the price of provisioned concurrency)
//! prices: the dated table (collector/prices/aws-lambda-prices.yaml, embedded, overridable)
//! cli: `lambdawatch-collector cost …` what-if questions
//! ```
//!
//! Every stage here is a pure policy: it consumes plain values and an injected `now` (unix
//! seconds), owns only bounded state (each module states its bound and what it does when
//! full), and produces a plain status struct that serialises for `/api/v1` and lists its
//! Prometheus samples through [`MetricSample`]. The per-function labels (`function`, `version`,
//! `region`, `account`) are added by the exporter; samples carry only their extra labels.

pub mod advice;
pub mod cli;
pub mod feed;
pub mod ledger;
pub mod memory;
pub mod model;
pub mod prices;
pub mod provisioned;
pub mod retry;
pub mod stage;
pub mod surprise;
pub mod timeout;

#[cfg(test)]
mod simulation_tests;

pub use cli::{CostArgs, run_cost_cli};
pub use feed::{CostFeed, CostReport, FunctionCostRow};
pub use stage::{CostConfig, CostInvocation, CostStage, FunctionCost};

/// One Prometheus sample a cost stage wants on `/metrics` (per-function labels added by the
/// exporter).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricSample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl MetricSample {
    pub fn new(name: &'static str, value: f64) -> Self {
        MetricSample {
            name,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }

    /// Prometheus type: `counter` for `*_total`, `gauge` otherwise (every cost name follows
    /// this).
    pub fn kind(&self) -> &'static str {
        if self.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        }
    }

    /// `# HELP` text for this sample's name.
    pub fn help(&self) -> &'static str {
        names::help(self.name).unwrap_or("")
    }
}

/// Prometheus names of the cost stages (Contract 2 style; per-function labels implied).
pub mod names {
    /// counter: estimated cost at list price (first tier, no free tier), USD.
    pub const COST_USD_TOTAL: &str = "lambdawatch_cost_usd_total";
    /// gauge: 30-day projection with free tier and volume tiers, USD.
    pub const COST_PROJECTED_30D_USD: &str = "lambdawatch_cost_projected_30d_usd";
    /// gauge: configured monthly budget, USD.
    pub const COST_BUDGET_USD: &str = "lambdawatch_cost_budget_usd";
    /// gauge, label `reason` (`rate`, `budget`): 1 while a cost-surprise alert fires.
    pub const COST_SURPRISE: &str = "lambdawatch_cost_surprise";
    /// gauge: invocations in the surprise window, scaled to an hour.
    pub const INVOCATION_RATE_PER_HOUR: &str = "lambdawatch_invocation_rate_per_hour";
    /// gauge: median of the same hour-of-week in recent weeks.
    pub const INVOCATION_RATE_BASELINE_PER_HOUR: &str =
        "lambdawatch_invocation_rate_baseline_per_hour";
    /// gauge: repeated request ids / invocations over the retry window.
    pub const RETRY_FRACTION: &str = "lambdawatch_retry_fraction";
    /// gauge: 1 while a retry-storm alert fires.
    pub const RETRY_STORM: &str = "lambdawatch_retry_storm";
    /// gauge: fraction of request ids tracked (1 until the id cap forces sampling).
    pub const RETRY_SAMPLE_RATE: &str = "lambdawatch_retry_sample_rate";
    /// gauge, label `queue`: messages visible in the function's DLQ (SQS
    /// `ApproximateNumberOfMessagesVisible`, polled from CloudWatch): its redrive backlog.
    pub const DLQ_REDRIVE_BACKLOG: &str = "lambdawatch_dlq_redrive_backlog_messages";
    /// gauge, label `strategy` (`cost`, `speed`, `balanced`): recommended memory, bytes (Lambda MB are MiB).
    pub const MEMORY_RECOMMENDATION_BYTES: &str = "lambdawatch_memory_recommendation_bytes";
    /// gauge: P99 max memory used plus headroom: no recommendation goes below it, bytes.
    pub const MEMORY_FLOOR_BYTES: &str = "lambdawatch_memory_floor_bytes";
    /// gauge: largest max memory used observed over every memory size, bytes.
    pub const MEMORY_OBSERVED_MAX_BYTES: &str = "lambdawatch_memory_observed_max_used_bytes";
    /// gauge: P99 duration / timeout.
    pub const TIMEOUT_BUDGET_RATIO: &str = "lambdawatch_timeout_budget_ratio";
    /// gauge, label `downstream`: 1 while timeouts rise with this downstream's latency.
    pub const TIMEOUT_CASCADE: &str = "lambdawatch_timeout_cascade";
    /// gauge, label `downstream`: its P99 latency in the recent window / baseline P99.
    pub const TIMEOUT_CASCADE_LATENCY_RATIO: &str = "lambdawatch_timeout_cascade_latency_ratio";
    /// gauge, labels `downstream`, `period` (`baseline`, `recent`): P99 latency of its client
    /// spans in the function's traces, seconds.
    pub const CASCADE_DOWNSTREAM_P99_SECONDS: &str =
        "lambdawatch_timeout_cascade_downstream_p99_seconds";
    /// gauge, label `period` (`baseline`, `recent`): timed-out invocations / invocations.
    pub const CASCADE_TIMEOUT_RATIO: &str = "lambdawatch_timeout_cascade_timeout_ratio";
    /// gauge: cold starts / invocations over the advice window.
    pub const COLD_START_RATIO: &str = "lambdawatch_cold_start_ratio";
    /// gauge: 1 when provisioned concurrency is recommended (cold starts frequent and slow).
    pub const PC_RECOMMENDED: &str = "lambdawatch_provisioned_concurrency_recommended";
    /// gauge: provisioned concurrency units covering the chosen concurrency percentile.
    pub const PC_RECOMMENDED_UNITS: &str = "lambdawatch_provisioned_concurrency_recommended_units";
    /// gauge: monthly cost change if those units were provisioned (negative = saving), USD.
    pub const PC_NET_MONTHLY_USD: &str = "lambdawatch_provisioned_concurrency_net_monthly_usd";
    /// gauge: cold starts those units would avoid in 30 days.
    pub const PC_COLD_STARTS_AVOIDED_30D: &str =
        "lambdawatch_provisioned_concurrency_cold_starts_avoided_30d";

    /// Every name above with its `# HELP` text.
    pub const ALL: &[(&str, &str)] = &[
        (
            COST_USD_TOTAL,
            "Estimated cost at list price (first duration tier, no free tier), USD.",
        ),
        (
            COST_PROJECTED_30D_USD,
            "30-day cost projection with the free tier and volume tiers, USD.",
        ),
        (COST_BUDGET_USD, "Configured monthly budget, USD."),
        (
            COST_SURPRISE,
            "1 while a cost-surprise alert fires (reason: rate or budget).",
        ),
        (
            INVOCATION_RATE_PER_HOUR,
            "Invocations in the surprise window, scaled to an hour.",
        ),
        (
            INVOCATION_RATE_BASELINE_PER_HOUR,
            "Median invocations of this hour-of-week in recent weeks.",
        ),
        (
            RETRY_FRACTION,
            "Repeated request ids / invocations over the retry window.",
        ),
        (RETRY_STORM, "1 while a retry-storm alert fires."),
        (
            RETRY_SAMPLE_RATE,
            "Share of request ids tracked by the bounded retry tracker.",
        ),
        (
            DLQ_REDRIVE_BACKLOG,
            "Messages visible in the function's DLQ (SQS ApproximateNumberOfMessagesVisible): its redrive backlog.",
        ),
        (
            MEMORY_RECOMMENDATION_BYTES,
            "Recommended memory for the strategy, bytes.",
        ),
        (
            MEMORY_FLOOR_BYTES,
            "Max memory used plus headroom: no recommendation goes below it, bytes.",
        ),
        (
            MEMORY_OBSERVED_MAX_BYTES,
            "Largest max memory used observed over every memory size, bytes.",
        ),
        (TIMEOUT_BUDGET_RATIO, "P99 duration / configured timeout."),
        (
            TIMEOUT_CASCADE,
            "1 while timeouts rise with this downstream's latency.",
        ),
        (
            TIMEOUT_CASCADE_LATENCY_RATIO,
            "Downstream P99 latency in the recent window / its baseline P99.",
        ),
        (
            CASCADE_DOWNSTREAM_P99_SECONDS,
            "P99 latency of the downstream's client spans in the function's traces, seconds.",
        ),
        (
            CASCADE_TIMEOUT_RATIO,
            "Timed-out invocations / invocations in the cascade's baseline or recent window.",
        ),
        (
            COLD_START_RATIO,
            "Cold starts / invocations over the advice window.",
        ),
        (
            PC_RECOMMENDED,
            "1 when provisioned concurrency is recommended for the function's cold starts.",
        ),
        (
            PC_RECOMMENDED_UNITS,
            "Provisioned concurrency units covering the chosen concurrency percentile.",
        ),
        (
            PC_NET_MONTHLY_USD,
            "Monthly cost change with those units (negative = saving), USD.",
        ),
        (
            PC_COLD_STARTS_AVOIDED_30D,
            "Cold starts those units would avoid in 30 days.",
        ),
    ];

    pub fn help(name: &str) -> Option<&'static str> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn names_are_prefixed_unique_and_documented() {
            let mut seen = std::collections::BTreeSet::new();
            for (name, help) in super::ALL {
                assert!(name.starts_with("lambdawatch_"), "{name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
                assert!(!help.is_empty() && seen.insert(*name), "{name}");
            }
            assert_eq!(seen.len(), 23);
        }
    }
}
