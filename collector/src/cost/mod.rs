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

pub mod cli;
pub mod model;
pub mod prices;

pub use cli::{CostArgs, run_cost_cli};

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
}
