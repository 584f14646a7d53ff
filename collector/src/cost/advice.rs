//! The advisors in the running collector: each function's advice, built on the evaluation tick.
//!
//! ```text
//! aggregate owner ── CostFeed::observe ──► AdviceInputs of the function          [bounded]
//!                                           ├─ SizeTable (per memory size: invocations, billed
//!                                           │  ms, duration histogram, max memory used)
//!                                           ├─ provisioned::ConcurrencySampler (per-minute
//!                                           │  concurrency, cold starts, billed ms)
//!                                           └─ timeout::CascadeWindow (per-minute timeouts,
//!                                              downstream latencies joined by trace id)
//! evaluator tick ── same query, same now ──► advise_function(inputs, FunctionState, prices, now)
//!                       ├─ memory::advise × {cost, speed, balanced}     (SizeTable)
//!                       ├─ timeout::timeout_budget                      (aggregator P99, timeout)
//!                       ├─ cold starts                                  (aggregator counts, P99 init)
//!                       ├─ timeout::evaluate (cascade)                  (CascadeWindow)
//!                       └─ provisioned::advise                          (sampler window, P99 init)
//!                  ──► FunctionAdvice { samples() → /metrics, serde → /api/v1/cost `advice` }
//! ```
//!
//! **Consumes** the cost feed's per-function [`AdviceInputs`] (fed with every priced
//! invocation, init and trace event) and the aggregator's own [`FunctionState`] of the same
//! function: the cached P99 duration (the percentile cache refreshed in the same query), the
//! configured timeout the invocation spans carry, the on-demand cold-start count and P99 init
//! duration. **Produces** one [`FunctionAdvice`] per function.
//!
//! **Bounded**: at most [`MAX_SIZES`] memory sizes per function (a further size is counted in
//! `sizes_dropped`), each with a sparse [`LogHist`] of durations (≤ 256 buckets × 8 B, typically
//! a few dozen); the sampler's and the cascade window's bounds are in `cost::provisioned` and
//! `cost::timeout`. Cost per tick: O(sizes + window minutes × downstreams) per function.
//!
//! **What is not measured is said, never invented**:
//! - memory: the floor uses the **maximum** `maxMemoryUsedMB` observed at each size, an upper
//!   bound of its P99, so the floor is never below P99 + headroom (it can be above it); with
//!   fewer than `min_invocations` at every size the recommendation is `insufficient_data`;
//! - timeout cascade: `unknown` until a client span is joined to one of the function's
//!   invocations (the function code is not instrumented, or its spans carry no downstream);
//! - provisioned concurrency: `unknown` until the sampler has folded a minute;
//!   `not_applicable` for Lambda Managed Instances.

use std::sync::Arc;

use super::MetricSample;
use super::memory::{
    self, BYTES_PER_MB, MemoryAdvice, MemoryAdviceConfig, MemoryObservation, Strategy,
};
use super::names;
use super::prices::{Arch, RegionPrices};
use super::provisioned::{self, ConcurrencySampler, PcAdvice, PcAdviceConfig, SamplerStats};
use super::timeout::{self, CascadeConfig, CascadeStatus, CascadeWindow, TimeoutBudget};
use crate::aggregate::InitKind;
use crate::aggregate::function::FunctionState;

/// Memory sizes tracked per function (versions and aliases rarely use more than a few).
pub const MAX_SIZES: usize = 8;

/// Sparse log-bucketed histogram of milliseconds: bucket 0 holds values ≤ 1 ms, bucket `i ≥ 1`
/// the values in (2^((i−1)/8), 2^(i/8)] ms. A quantile is reported as its bucket's upper bound:
/// at most 9.05 % above the true value, never below it. Mergeable (per-minute windows), ≤ 256
/// buckets of 8 B; a steady latency fills a handful.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogHist {
    /// `(bucket, count)`, ascending by bucket.
    buckets: Vec<(u8, u32)>,
}

impl LogHist {
    fn index(ms: f64) -> u8 {
        if ms.is_nan() || ms <= 1.0 {
            0
        } else {
            (ms.log2() * 8.0).ceil().clamp(1.0, 255.0) as u8
        }
    }

    fn upper(i: u8) -> f64 {
        2f64.powf(f64::from(i) / 8.0)
    }

    fn add(&mut self, i: u8, n: u32) {
        match self.buckets.binary_search_by_key(&i, |(b, _)| *b) {
            Ok(k) => self.buckets[k].1 = self.buckets[k].1.saturating_add(n),
            Err(k) => self.buckets.insert(k, (i, n)),
        }
    }

    pub fn record(&mut self, ms: f64) {
        self.add(Self::index(ms), 1);
    }

    pub fn merge(&mut self, other: &LogHist) {
        for (i, n) in &other.buckets {
            self.add(*i, *n);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// Nearest-rank quantile (`q` in (0, 1]) as its bucket's upper bound; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, n) in &self.buckets {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(Self::upper(*i));
            }
        }
        None
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u8, u32)>()
    }
}

/// What a function did at one memory size, since the collector started (kept across restarts
/// in the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SizeStats {
    pub memory_mb: u32,
    pub invocations: u64,
    pub billed_ms_total: u64,
    /// Invocations that reported `maxMemoryUsedMB`.
    pub memory_reports: u64,
    /// Largest `maxMemoryUsedMB` seen at this size (≥ its P99).
    pub max_memory_used_mb: f64,
    /// Invocation durations at this size (absent from checkpoints written before it existed).
    #[serde(default)]
    pub durations: LogHist,
}

/// One function's per-size statistics (bounded by [`MAX_SIZES`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SizeTable {
    pub sizes: Vec<SizeStats>,
    pub sizes_dropped: u64,
}

impl SizeTable {
    /// Records one invocation at `memory_mb`.
    pub fn record(
        &mut self,
        memory_mb: u32,
        billed_ms: u64,
        duration_ms: f64,
        max_memory_used_mb: Option<f64>,
    ) {
        let i = match self.sizes.iter().position(|s| s.memory_mb == memory_mb) {
            Some(i) => i,
            None if self.sizes.len() < MAX_SIZES => {
                self.sizes.push(SizeStats {
                    memory_mb,
                    ..SizeStats::default()
                });
                self.sizes.len() - 1
            }
            None => {
                self.sizes_dropped += 1;
                return;
            }
        };
        let s = &mut self.sizes[i];
        s.invocations += 1;
        s.billed_ms_total = s.billed_ms_total.saturating_add(billed_ms);
        s.durations.record(duration_ms);
        if let Some(m) = max_memory_used_mb.filter(|m| m.is_finite() && *m >= 0.0) {
            s.memory_reports += 1;
            s.max_memory_used_mb = s.max_memory_used_mb.max(m);
        }
    }

    fn observations(&self) -> Vec<MemoryObservation> {
        self.sizes
            .iter()
            .map(|s| MemoryObservation {
                memory_mb: s.memory_mb,
                invocations: s.invocations,
                mean_billed_duration_ms: if s.invocations == 0 {
                    f64::NAN
                } else {
                    s.billed_ms_total as f64 / s.invocations as f64
                },
                // Sizes restored from an old checkpoint have no durations until new traffic.
                p99_duration_ms: s.durations.quantile(0.99).unwrap_or(f64::NAN),
                p99_max_memory_used_mb: s.max_memory_used_mb,
            })
            .collect()
    }
}

/// The advisors' settings (YAML `cost.advice`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdviceConfig {
    pub memory: MemoryAdviceConfig,
    pub cascade: CascadeConfig,
    pub provisioned: PcAdviceConfig,
}

impl AdviceConfig {
    pub fn check(&self) -> Result<(), String> {
        self.cascade.check()?;
        let m = &self.memory;
        if !(m.headroom.is_finite()
            && m.headroom >= 0.0
            && (0.0..=1.0).contains(&m.balanced_weight))
        {
            return Err(
                "cost.advice.memory: headroom must be ≥ 0 and balanced_weight in [0, 1]".into(),
            );
        }
        let p = &self.provisioned;
        if !(p.percentile > 0.0 && p.percentile <= 1.0) {
            return Err("cost.advice.provisioned.percentile must be in (0, 1]".into());
        }
        Ok(())
    }
}

/// Everything the advisors keep for one function (owned by the cost feed).
#[derive(Debug, Clone)]
pub struct AdviceInputs<K> {
    /// The function's key, shared with the trace join's entries.
    pub key: Arc<K>,
    pub sizes: SizeTable,
    pub concurrency: ConcurrencySampler,
    pub cascade: CascadeWindow,
}

impl<K> AdviceInputs<K> {
    pub fn new(key: K) -> Self {
        AdviceInputs {
            key: Arc::new(key),
            sizes: SizeTable::default(),
            concurrency: ConcurrencySampler::default(),
            cascade: CascadeWindow::default(),
        }
    }
}

/// One memory size in the advice document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SizeDoc {
    pub memory_mb: u32,
    pub invocations: u64,
    pub billed_ms_total: u64,
    /// `None` until an invocation at this size was recorded since the collector started.
    pub p99_duration_ms: Option<f64>,
    pub memory_reports: u64,
    pub max_memory_used_mb: f64,
}

/// Memory advice for the three strategies (the floor and candidates are shared).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryAdviceDoc {
    pub current_mb: u32,
    /// Max memory used observed over every size, MB (`None`: no invocation reported it).
    pub observed_max_memory_used_mb: Option<f64>,
    pub headroom: f64,
    pub floor_mb: u32,
    pub undersized: bool,
    /// Invocations a size needs before it is trusted.
    pub min_invocations: u64,
    /// `strategy → {recommendation_mb, basis}`.
    pub recommendations: Vec<MemoryRecommendation>,
    pub reason: String,
    pub sizes: Vec<SizeDoc>,
    pub sizes_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryRecommendation {
    pub strategy: Strategy,
    /// `None` when `basis` is `insufficient_data`.
    pub recommendation_mb: Option<u32>,
    pub basis: &'static str,
}

/// Timeout budget, or why it is unknown.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TimeoutDoc {
    Within(TimeoutBudget),
    Exceeded(TimeoutBudget),
    Unknown { reason: &'static str },
}

/// Cold starts measured by the aggregator (the measured half of provisioned-concurrency advice).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColdStartDoc {
    pub invocations: u64,
    pub on_demand_cold_starts: u64,
    pub cold_start_ratio: f64,
    /// P99 on-demand init duration over the aggregator's percentile period (`None`: no sample).
    pub p99_init_ms: Option<f64>,
}

/// Timeout-cascade verdict (`status`: `cascade`, `no_cascade`, `unknown`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CascadeDoc {
    Cascade(CascadeStatus),
    NoCascade(CascadeStatus),
    Unknown { reason: &'static str },
}

pub const CASCADE_UNKNOWN: &str = "no client span of the function code has been joined to this \
     function's invocations by trace id (instrument the code with an OpenTelemetry SDK whose \
     CLIENT spans carry peer.service, server.address, rpc.service or db.system)";

/// The provisioned-concurrency advice with the window it was computed over.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PcDocBody {
    #[serde(flatten)]
    pub advice: PcAdvice,
    /// Percentile of the per-minute concurrency the units cover.
    pub percentile: f64,
    pub memory_mb: u32,
    /// The sampler's folded window: minutes × 60.
    pub window_secs: u64,
    pub invocations: u64,
    pub on_demand_cold_starts: u64,
    pub billed_duration_ms: u64,
    /// Largest per-minute concurrency in the window.
    pub peak_concurrency: u32,
    /// `(concurrency, minutes)`, ascending.
    pub concurrency_minutes: Vec<(u32, u64)>,
    pub sampler: SamplerStats,
}

/// Provisioned-concurrency advice (`status`: `recommended`, `not_recommended`, `unknown`,
/// `not_applicable`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PcDoc {
    Recommended(PcDocBody),
    NotRecommended(PcDocBody),
    Unknown { reason: &'static str },
    NotApplicable { reason: &'static str },
}

pub const PC_UNKNOWN: &str = "no minute of concurrency samples is complete yet (a minute is \
     folded 2 minutes after it ends)";
pub const PC_MANAGED: &str = "the function runs on Lambda Managed Instances (several invocations \
     per environment, no provisioned concurrency)";

/// One function's advice (`/api/v1/cost` rows' `advice`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionAdvice {
    pub memory: MemoryAdviceDoc,
    pub timeout: TimeoutDoc,
    pub cascade: CascadeDoc,
    pub cold_starts: ColdStartDoc,
    pub provisioned_concurrency: PcDoc,
}

impl FunctionAdvice {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out: Vec<MetricSample> = self
            .memory
            .recommendations
            .iter()
            .filter_map(|r| {
                Some(
                    MetricSample::new(
                        names::MEMORY_RECOMMENDATION_BYTES,
                        f64::from(r.recommendation_mb?) * BYTES_PER_MB,
                    )
                    .label("strategy", r.strategy.as_str()),
                )
            })
            .collect();
        out.push(MetricSample::new(
            names::MEMORY_FLOOR_BYTES,
            f64::from(self.memory.floor_mb) * BYTES_PER_MB,
        ));
        if let Some(m) = self.memory.observed_max_memory_used_mb {
            out.push(MetricSample::new(
                names::MEMORY_OBSERVED_MAX_BYTES,
                m * BYTES_PER_MB,
            ));
        }
        if let TimeoutDoc::Within(b) | TimeoutDoc::Exceeded(b) = &self.timeout
            && b.ratio.is_finite()
        {
            out.extend(b.samples());
        }
        out.push(MetricSample::new(
            names::COLD_START_RATIO,
            self.cold_starts.cold_start_ratio,
        ));
        if let CascadeDoc::Cascade(c) | CascadeDoc::NoCascade(c) = &self.cascade {
            out.extend(c.samples());
        }
        if let PcDoc::Recommended(p) | PcDoc::NotRecommended(p) = &self.provisioned_concurrency {
            out.extend(
                p.advice
                    .samples()
                    .into_iter()
                    .filter(|m| m.value.is_finite()),
            );
        }
        out
    }
}

fn memory_doc(
    sizes: &SizeTable,
    current_mb: u32,
    prices: &RegionPrices,
    arch: Arch,
    cfg: &MemoryAdviceConfig,
) -> MemoryAdviceDoc {
    let obs = sizes.observations();
    let advice: Vec<MemoryAdvice> = Strategy::ALL
        .iter()
        .map(|s| memory::advise(&obs, current_mb, prices, arch, *s, cfg))
        .collect();
    let observed = sizes
        .sizes
        .iter()
        .filter(|s| s.memory_reports > 0)
        .map(|s| s.max_memory_used_mb)
        .reduce(f64::max);
    let floor_mb = advice.first().map_or(memory::MIN_MEMORY_MB, |a| a.floor_mb);
    let undersized = current_mb < floor_mb;
    let eligible = advice
        .first()
        .map_or(0, |a| a.candidates.iter().filter(|c| c.eligible).count());
    let most = advice.first().map_or(0, |a| a.most_invocations);
    let headroom = cfg.headroom * 100.0;
    let reason = match observed {
        _ if most < cfg.min_invocations => format!(
            "insufficient data: {most} invocations at the most observed size, {} needed \
             before a size is trusted",
            cfg.min_invocations
        ),
        None => "no invocation reported max memory used: the floor is Lambda's minimum".to_owned(),
        Some(m) if eligible == 0 => format!(
            "no size with ≥ {} invocations at or above the floor {floor_mb} MB \
             (max used {m} MB + {headroom:.0} % headroom): the advice is the floor",
            cfg.min_invocations,
        ),
        Some(m) => format!(
            "{eligible} eligible size(s) of {} observed; floor {floor_mb} MB \
             (max used {m} MB + {headroom:.0} % headroom){}",
            sizes.sizes.len(),
            if undersized {
                "; the current size is below the floor"
            } else {
                ""
            }
        ),
    };
    MemoryAdviceDoc {
        current_mb,
        observed_max_memory_used_mb: observed,
        headroom: cfg.headroom,
        floor_mb,
        undersized,
        min_invocations: cfg.min_invocations,
        recommendations: advice
            .iter()
            .map(|a| MemoryRecommendation {
                strategy: a.strategy,
                recommendation_mb: a.recommendation_mb,
                basis: a.basis,
            })
            .collect(),
        reason,
        sizes: sizes
            .sizes
            .iter()
            .map(|s| SizeDoc {
                memory_mb: s.memory_mb,
                invocations: s.invocations,
                billed_ms_total: s.billed_ms_total,
                p99_duration_ms: s.durations.quantile(0.99),
                memory_reports: s.memory_reports,
                max_memory_used_mb: s.max_memory_used_mb,
            })
            .collect(),
        sizes_dropped: sizes.sizes_dropped,
    }
}

fn timeout_doc(state: &FunctionState, budget_fraction: f64) -> TimeoutDoc {
    let Some(timeout_ms) = state.timeout_ms.filter(|t| *t > 0.0) else {
        return TimeoutDoc::Unknown {
            reason: "no invocation span carried the configured timeout",
        };
    };
    let Some(q) = state
        .percentiles
        .invocation
        .as_ref()
        .filter(|q| q.count > 0)
    else {
        return TimeoutDoc::Unknown {
            reason: "no duration in the aggregator's percentile period",
        };
    };
    let b = timeout::timeout_budget(q.p99, timeout_ms, budget_fraction);
    if b.within {
        TimeoutDoc::Within(b)
    } else {
        TimeoutDoc::Exceeded(b)
    }
}

fn cold_doc(state: &FunctionState) -> ColdStartDoc {
    let invocations: u64 = state.outcome_totals.iter().sum();
    let cold = state.cold_starts(InitKind::OnDemand).map_or(0, |c| c.total);
    let p99_init_ms = state
        .percentiles
        .cold
        .iter()
        .find(|(k, _)| *k == InitKind::OnDemand)
        .filter(|(_, q)| q.count > 0)
        .map(|(_, q)| q.p99);
    ColdStartDoc {
        invocations,
        on_demand_cold_starts: cold,
        cold_start_ratio: if invocations == 0 {
            0.0
        } else {
            cold as f64 / invocations as f64
        },
        p99_init_ms,
    }
}

fn cascade_doc(w: &CascadeWindow, now: u64, cfg: &CascadeConfig) -> CascadeDoc {
    if w.client_spans == 0 {
        return CascadeDoc::Unknown {
            reason: CASCADE_UNKNOWN,
        };
    }
    let s = timeout::evaluate(w, now, cfg);
    if s.cascade {
        CascadeDoc::Cascade(s)
    } else {
        CascadeDoc::NoCascade(s)
    }
}

fn pc_doc(
    sampler: &ConcurrencySampler,
    p99_init_ms: Option<f64>,
    memory_mb: u32,
    prices: &RegionPrices,
    arch: Arch,
    cfg: &PcAdviceConfig,
) -> PcDoc {
    if sampler.managed_instances {
        return PcDoc::NotApplicable { reason: PC_MANAGED };
    }
    let Some(w) = sampler.window() else {
        return PcDoc::Unknown { reason: PC_UNKNOWN };
    };
    let obs = provisioned::PcObservation {
        arch,
        memory_mb,
        window_secs: w.window_secs,
        invocations: w.invocations,
        cold_starts: w.cold_starts,
        p99_init_ms: p99_init_ms.unwrap_or(0.0),
        billed_duration_ms: w.billed_duration_ms,
        concurrency_samples: w.concurrency.clone(),
    };
    let advice = provisioned::advise(prices, &obs, cfg);
    let body = PcDocBody {
        percentile: cfg.percentile,
        memory_mb,
        window_secs: w.window_secs,
        invocations: w.invocations,
        on_demand_cold_starts: w.cold_starts,
        billed_duration_ms: w.billed_duration_ms,
        peak_concurrency: w.concurrency.max(),
        concurrency_minutes: w.concurrency.counts,
        sampler: sampler.stats,
        advice,
    };
    if body.advice.recommended {
        PcDoc::Recommended(body)
    } else {
        PcDoc::NotRecommended(body)
    }
}

/// The advice for one function at `now`: `inputs` from the cost feed, `state` the aggregator's
/// state of the same function (its percentile cache refreshed at this tick), `current_mb` the
/// latest size.
pub fn advise_function<K>(
    inputs: &AdviceInputs<K>,
    state: &FunctionState,
    current_mb: u32,
    prices: &RegionPrices,
    arch: Arch,
    cfg: &AdviceConfig,
    now: u64,
) -> FunctionAdvice {
    let cold_starts = cold_doc(state);
    FunctionAdvice {
        memory: memory_doc(&inputs.sizes, current_mb, prices, arch, &cfg.memory),
        timeout: timeout_doc(state, timeout::DEFAULT_BUDGET_FRACTION),
        cascade: cascade_doc(&inputs.cascade, now, &cfg.cascade),
        provisioned_concurrency: pc_doc(
            &inputs.concurrency,
            cold_starts.p99_init_ms,
            current_mb,
            prices,
            arch,
            &cfg.provisioned,
        ),
        cold_starts,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::aggregate::{
        Aggregates, Batch, Event, FunctionKey, Group, Invocation, Layout, Outcome, Target,
    };
    use crate::cost::{CostConfig, CostFeed, prices::PriceTable};

    const T0: u64 = 1_795_996_800;

    fn key(function: &str) -> FunctionKey {
        FunctionKey {
            function: function.into(),
            version: "1".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
        }
    }

    fn inv(t_s: u64, memory: f64, ms: f64, used: Option<f64>, timeout: Option<f64>) -> Event {
        Event::Invocation(Invocation {
            t_s,
            outcome: Outcome::Success,
            duration_ms: ms,
            billed_ms: Some(ms.ceil()),
            memory_mb: Some(memory),
            max_memory_mb: used,
            timeout_ms: timeout,
            span_fingerprint: None,
            request_id: Some(format!("r-{t_s}-{ms}-{memory}")),
        })
    }

    fn apply(a: &mut Aggregates, function: &str, t: u64, events: Vec<Event>) {
        a.apply(Batch {
            received_s: t,
            groups: vec![Group {
                target: Target::Function {
                    key: key(function),
                    tags: vec![],
                    instance: "i-1".into(),
                },
                events,
            }],
        });
    }

    fn aggregates() -> Aggregates {
        let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
        a.cost = Some(CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig::default(),
            BTreeMap::new(),
        ));
        a
    }

    /// What serve's evaluation query does: refresh the percentiles, evaluate with advice.
    fn evaluate(a: &mut Aggregates, now: u64) -> crate::cost::CostReport {
        a.refresh_percentiles(now);
        let functions = &a.functions;
        a.cost
            .as_mut()
            .unwrap()
            .evaluate_with_advice(now, functions)
    }

    fn sample(samples: &[MetricSample], name: &str, strategy: Option<&str>) -> Option<f64> {
        samples
            .iter()
            .find(|m| {
                m.name == name && strategy.is_none_or(|s| m.labels.iter().any(|(_, v)| v == s))
            })
            .map(|m| m.value)
    }

    /// Two memory sizes of a CPU-bound function: 1024 MB is twice as fast as 512 MB (same
    /// cost), 256 MB would be cheaper but is below the floor (max used 300 MB + 20 % = 360).
    #[test]
    fn memory_and_timeout_advice_from_the_aggregated_traffic() {
        let mut a = aggregates();
        let mut events = Vec::new();
        for i in 0..150u64 {
            events.push(inv(
                T0 + i,
                512.0,
                800.0,
                Some(250.0 + (i % 50) as f64),
                Some(3000.0),
            ));
            events.push(inv(T0 + i, 1024.0, 400.0, Some(280.0), Some(3000.0)));
            events.push(inv(T0 + i, 256.0, 1500.0, Some(300.0), Some(3000.0)));
        }
        events.push(Event::Init {
            t_s: T0,
            kind: InitKind::OnDemand,
            duration_ms: 900.0,
        });
        apply(&mut a, "f", T0, events);
        let report = evaluate(&mut a, T0 + 200);
        let row = &report.functions[0];
        let adv = row.advice.as_ref().unwrap();
        let m = &adv.memory;
        assert_eq!(m.observed_max_memory_used_mb, Some(300.0));
        assert_eq!(m.floor_mb, 360);
        assert_eq!(m.sizes.len(), 3);
        let rec = |s: Strategy| {
            m.recommendations
                .iter()
                .find(|r| r.strategy == s)
                .unwrap()
                .recommendation_mb
        };
        // Same GB-s at 512 and 1024: cost ties go to the faster; speed picks 1024.
        assert_eq!(rec(Strategy::Cost), Some(1024));
        assert_eq!(rec(Strategy::Speed), Some(1024));
        assert_eq!(rec(Strategy::Balanced), Some(1024));
        // Each size's P99 duration is kept (log buckets: ≤ 9 % above the true 400 ms).
        let s1024 = m.sizes.iter().find(|s| s.memory_mb == 1024).unwrap();
        let p99 = s1024.p99_duration_ms.unwrap();
        assert!((400.0..=436.2).contains(&p99), "{p99}");
        for r in &m.recommendations {
            assert!(r.recommendation_mb.unwrap() >= m.floor_mb, "{r:?}");
            assert_eq!(r.basis, "observed");
        }
        // The last size the stage saw is the current one; 256 < floor.
        assert_eq!(m.current_mb, 256);
        assert!(m.undersized);
        // Timeout: P99 of the mixed durations is ~1500 ms of a 3000 ms timeout.
        let TimeoutDoc::Within(b) = &adv.timeout else {
            panic!("{:?}", adv.timeout)
        };
        assert!((b.ratio - 0.5).abs() < 0.01, "{b:?}");
        assert_eq!(adv.cold_starts.on_demand_cold_starts, 1);
        assert_eq!(adv.cold_starts.invocations, 450);
        assert!((adv.cold_starts.p99_init_ms.unwrap() - 900.0).abs() < 5.0);
        assert!(matches!(adv.cascade, CascadeDoc::Unknown { .. }));
        // Minutes fold 120 s after they end: at T0 + 200 the minute before T0 (the 1.5 s
        // invocations at T0 started in it) and the first minute (3 × 60 invocations) are the
        // provisioned-concurrency window.
        let PcDoc::NotRecommended(pc) = &adv.provisioned_concurrency else {
            panic!("{:?}", adv.provisioned_concurrency)
        };
        assert_eq!((pc.invocations, pc.window_secs), (180, 120));

        let samples = row.samples();
        for s in ["cost", "speed", "balanced"] {
            assert_eq!(
                sample(&samples, names::MEMORY_RECOMMENDATION_BYTES, Some(s)),
                Some(1024.0 * BYTES_PER_MB)
            );
        }
        assert_eq!(
            sample(&samples, names::MEMORY_FLOOR_BYTES, None),
            Some(360.0 * BYTES_PER_MB)
        );
        assert_eq!(
            sample(&samples, names::MEMORY_OBSERVED_MAX_BYTES, None),
            Some(300.0 * BYTES_PER_MB)
        );
        assert!((sample(&samples, names::TIMEOUT_BUDGET_RATIO, None).unwrap() - 0.5).abs() < 0.01);
        assert!(
            (sample(&samples, names::COLD_START_RATIO, None).unwrap() - 1.0 / 450.0).abs() < 1e-12
        );
        // The document carries the advice under `advice`.
        let doc = serde_json::to_value(&report).unwrap();
        let a0 = &doc["functions"][0]["advice"];
        assert_eq!(a0["memory"]["floor_mb"], 360);
        assert_eq!(a0["timeout"]["status"], "within");
        assert_eq!(a0["cascade"]["status"], "unknown");
        assert_eq!(a0["memory"]["recommendations"][0]["strategy"], "cost");
    }

    /// A single undersized size with few invocations: no recommendation (insufficient data,
    /// with the count) but the floor, the timeout is exceeded, and without a timeout or a
    /// memory report nothing is invented.
    #[test]
    fn floor_exceeded_budget_and_unknown_inputs() {
        let mut a = aggregates();
        let events = (0..20u64)
            .map(|i| inv(T0 + i, 128.0, 950.0, Some(120.0), Some(1000.0)))
            .collect();
        apply(&mut a, "small", T0, events);
        apply(&mut a, "bare", T0, vec![inv(T0, 512.0, 10.0, None, None)]);
        let report = evaluate(&mut a, T0 + 60);
        let small = report
            .functions
            .iter()
            .find(|r| r.key.function == "small")
            .unwrap();
        let adv = small.advice.as_ref().unwrap();
        assert_eq!(adv.memory.floor_mb, 144);
        assert!(adv.memory.undersized);
        assert!(
            adv.memory
                .recommendations
                .iter()
                .all(|r| r.recommendation_mb.is_none() && r.basis == "insufficient_data")
        );
        assert!(
            adv.memory.reason.contains("20 invocations") && adv.memory.reason.contains("100"),
            "{}",
            adv.memory.reason
        );
        let samples = small.samples();
        assert_eq!(
            sample(&samples, names::MEMORY_RECOMMENDATION_BYTES, None),
            None
        );
        assert_eq!(
            sample(&samples, names::MEMORY_FLOOR_BYTES, None),
            Some(144.0 * BYTES_PER_MB)
        );
        assert!(matches!(&adv.timeout, TimeoutDoc::Exceeded(b) if b.ratio > 0.9));

        let bare = report
            .functions
            .iter()
            .find(|r| r.key.function == "bare")
            .unwrap();
        let adv = bare.advice.as_ref().unwrap();
        assert_eq!(adv.memory.observed_max_memory_used_mb, None);
        assert!(matches!(adv.timeout, TimeoutDoc::Unknown { .. }));
        let samples = bare.samples();
        assert_eq!(sample(&samples, names::TIMEOUT_BUDGET_RATIO, None), None);
        assert_eq!(
            sample(&samples, names::MEMORY_OBSERVED_MAX_BYTES, None),
            None
        );
        // Without the aggregator's state there is no advice at all.
        let plain = a.cost.as_mut().unwrap().evaluate(T0 + 60);
        assert!(plain.functions.iter().all(|r| r.advice.is_none()));
    }

    fn apply_on(a: &mut Aggregates, function: &str, instance: &str, t: u64, events: Vec<Event>) {
        a.apply(Batch {
            received_s: t,
            groups: vec![Group {
                target: Target::Function {
                    key: key(function),
                    tags: vec![],
                    instance: instance.into(),
                },
                events,
            }],
        });
    }

    /// A function with a cold start every minute (5 % of invocations, 1.2 s inits) and a steady
    /// concurrency of 4 for an hour: provisioned concurrency is recommended with 4 units, priced
    /// here by hand from the price table.
    #[test]
    fn provisioned_concurrency_for_frequent_slow_cold_starts() {
        let mut a = aggregates();
        for m in 0..60u64 {
            let t = T0 + m * 60;
            apply_on(
                &mut a,
                "pc",
                &format!("new-{m}"),
                t,
                vec![Event::Init {
                    t_s: t + 5,
                    kind: InitKind::OnDemand,
                    duration_ms: 1200.0,
                }],
            );
            for env in 0..4 {
                let events = (1..=5u64)
                    .map(|k| inv(t + k * 10, 512.0, 1000.0, Some(100.0), Some(3000.0)))
                    .collect();
                apply_on(&mut a, "pc", &format!("env-{env}"), t, events);
            }
        }
        let report = evaluate(&mut a, T0 + 3600 + 120);
        let row = &report.functions[0];
        let adv = row.advice.as_ref().unwrap();
        let PcDoc::Recommended(pc) = &adv.provisioned_concurrency else {
            panic!("{:#?}", adv.provisioned_concurrency)
        };
        assert_eq!(pc.window_secs, 3600);
        assert_eq!((pc.invocations, pc.on_demand_cold_starts), (1200, 60));
        assert_eq!(pc.billed_duration_ms, 1_200_000);
        assert_eq!(pc.concurrency_minutes, vec![(4, 60)]);
        assert_eq!((pc.advice.units, pc.peak_concurrency), (4, 4));
        assert!((pc.advice.cold_start_ratio - 0.05).abs() < 1e-12);
        assert!((pc.advice.p99_init_ms - 1200.0).abs() < 12.0);
        // By hand, 30 days = 720 × the hour, no free tier: without PC, 864,000 requests and
        // 0.5 GB × 1,200 s × 720 = 432,000 GB-s on demand; with PC, 4 units × 0.5 GB ×
        // 2,592,000 s enabled plus the same GB-s at the PC duration price.
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let x = r.arch(Arch::X86_64);
        let requests = 864_000.0 * r.request_per_million.usd() / 1e6;
        let without = requests + 432_000.0 * x.duration_tiers[0].gb_second.usd();
        let with = requests
            + 4.0 * 0.5 * 2_592_000.0 * x.provisioned_concurrency_gb_second.usd()
            + 432_000.0 * x.provisioned_duration_gb_second.usd();
        assert!((without - 7.3728144).abs() < 1e-6, "{without}");
        assert!(
            (pc.advice.monthly_cost_without_usd - without).abs() < 0.006,
            "{pc:#?}"
        );
        assert!(
            (pc.advice.monthly_cost_with_usd - with).abs() < 0.006,
            "{pc:#?}"
        );
        assert!((pc.advice.net_monthly_usd - (with - without)).abs() < 0.011);
        assert_eq!(pc.advice.cold_starts_avoided_30d, 43_200.0);
        let samples = row.samples();
        assert_eq!(sample(&samples, names::PC_RECOMMENDED, None), Some(1.0));
        assert_eq!(
            sample(&samples, names::PC_RECOMMENDED_UNITS, None),
            Some(4.0)
        );
        assert_eq!(
            sample(&samples, names::PC_COLD_STARTS_AVOIDED_30D, None),
            Some(43_200.0)
        );
        let net = sample(&samples, names::PC_NET_MONTHLY_USD, None).unwrap();
        assert!((net - (with - without)).abs() < 0.011, "{net}");
        // One cold-start ratio sample (the provisioned advice does not repeat it).
        assert_eq!(
            samples
                .iter()
                .filter(|m| m.name == names::COLD_START_RATIO)
                .count(),
            1
        );
        let doc = serde_json::to_value(&report).unwrap();
        let p = &doc["functions"][0]["advice"]["provisioned_concurrency"];
        assert_eq!(p["status"], "recommended");
        assert_eq!(p["units"], 4);
        // A Managed Instances function gets no advice.
        apply_on(
            &mut a,
            "mi",
            "host-1",
            T0,
            vec![
                Event::Init {
                    t_s: T0,
                    kind: InitKind::ManagedInstances,
                    duration_ms: 900.0,
                },
                inv(T0 + 1, 2048.0, 10.0, None, None),
            ],
        );
        let report = evaluate(&mut a, T0 + 3600 + 120);
        let mi = report
            .functions
            .iter()
            .find(|r| r.key.function == "mi")
            .unwrap();
        assert!(matches!(
            mi.advice.as_ref().unwrap().provisioned_concurrency,
            PcDoc::NotApplicable { .. }
        ));
    }

    /// Client spans joined by trace id, arriving before and after their invocations: when the
    /// recent timeouts rise with `db`'s P99, the cascade names `db` with its before/after.
    #[test]
    fn timeout_cascade_from_joined_client_spans() {
        let mut a = aggregates();
        let mut trace = 0u128;
        for m in 0..35u64 {
            let t = T0 + m * 60 + 10;
            let recent = m >= 30;
            let mut events = Vec::new();
            let mut clients = Vec::new();
            for i in 0..50u64 {
                trace += 1;
                let timed_out = recent && i < 10;
                let mut e = inv(t, 512.0, 100.0, Some(80.0), Some(3000.0));
                if let Event::Invocation(x) = &mut e {
                    x.outcome = if timed_out {
                        Outcome::Timeout
                    } else {
                        Outcome::Success
                    };
                }
                events.push(e);
                events.push(Event::InvocationTrace {
                    t_s: t,
                    trace_id: trace,
                    timed_out,
                });
                for (d, ms) in [("db", if recent { 800.0 } else { 20.0 }), ("cache", 2.0)] {
                    clients.push(Event::Client {
                        t_s: t,
                        trace_id: trace,
                        downstream: d.into(),
                        latency_ms: ms,
                    });
                }
            }
            // Even minutes: client spans first; odd minutes: invocations first.
            let clients = Group {
                target: Target::Traces,
                events: clients,
            };
            let fn_group = Group {
                target: Target::Function {
                    key: key("api"),
                    tags: vec![],
                    instance: "i-1".into(),
                },
                events,
            };
            let groups = if m % 2 == 0 {
                vec![clients, fn_group]
            } else {
                vec![fn_group, clients]
            };
            a.apply(Batch {
                received_s: t,
                groups,
            });
        }
        // A client span of an unknown trace waits; it creates no function.
        a.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Traces,
                events: vec![Event::Client {
                    t_s: T0,
                    trace_id: u128::MAX,
                    downstream: "db".into(),
                    latency_ms: 1.0,
                }],
            }],
        });
        assert_eq!(a.functions.len(), 1);
        let report = evaluate(&mut a, T0 + 34 * 60 + 59);
        assert_eq!(report.trace_join.client_spans_joined, 35 * 50 * 2);
        assert_eq!(report.trace_join.traces, 35 * 50 + 1);
        let adv = report.functions[0].advice.as_ref().unwrap();
        let CascadeDoc::Cascade(c) = &adv.cascade else {
            panic!("{:#?}", adv.cascade)
        };
        assert_eq!(c.suspect.as_deref(), Some("db"));
        assert_eq!((c.baseline.invocations, c.baseline.timeouts), (1500, 0));
        assert_eq!((c.recent.invocations, c.recent.timeouts), (250, 50));
        let db = &c.downstreams[0];
        assert_eq!(db.name, "db");
        assert!(db.baseline.p99_ms.unwrap() >= 20.0 && db.baseline.p99_ms.unwrap() < 22.0);
        assert!(db.recent.p99_ms.unwrap() >= 800.0 && db.recent.p99_ms.unwrap() < 873.0);
        let doc = serde_json::to_value(&report).unwrap();
        let cj = &doc["functions"][0]["advice"]["cascade"];
        assert_eq!(cj["status"], "cascade");
        assert_eq!(cj["suspect"], "db");
        let samples = report.functions[0].samples();
        let db_flag = samples
            .iter()
            .find(|m| m.name == names::TIMEOUT_CASCADE && m.labels[0].1 == "db")
            .unwrap();
        assert_eq!(db_flag.value, 1.0);
        // Ten minutes later the recent window has no traffic: no cascade.
        let report = evaluate(&mut a, T0 + 45 * 60);
        let adv = report.functions[0].advice.as_ref().unwrap();
        assert!(
            matches!(adv.cascade, CascadeDoc::NoCascade(_)),
            "{:#?}",
            adv.cascade
        );
    }

    /// The advisors' inputs of a busy function stay within the documented bounds: a day at
    /// concurrency 50 over 3 memory sizes with 8 downstreams of spread latencies.
    #[test]
    fn advice_inputs_per_function_are_bounded() {
        let cfg = AdviceConfig::default();
        let mut inputs = AdviceInputs::new(key("busy"));
        for minute in 0..1440u64 {
            let t = T0 + minute * 60;
            for i in 0..100u64 {
                let ms = 10.0 + ((minute * 7 + i * 13) % 5000) as f64;
                let mb = [256, 512, 1024][(i % 3) as usize];
                inputs.sizes.record(mb, ms.ceil() as u64, ms, Some(100.0));
                inputs.concurrency.record_invocation(
                    &format!("env-{}", i % 50),
                    (t + i % 60) * 1000,
                    ms,
                    ms as u64,
                );
                inputs.cascade.record_invocation(t, i == 0, &cfg.cascade);
                for d in 0..8 {
                    inputs
                        .cascade
                        .record_client(t, &format!("ds-{d}"), ms / 10.0, &cfg.cascade);
                }
            }
        }
        inputs.concurrency.advance(T0 + 1441 * 60 + 120);
        let sizes: usize = inputs
            .sizes
            .sizes
            .iter()
            .map(|s| 64 + s.durations.heap_bytes())
            .sum();
        let sampler = inputs.concurrency.heap_bytes();
        let cascade = inputs.cascade.heap_bytes();
        eprintln!("advice inputs: sizes {sizes} B, sampler {sampler} B, cascade {cascade} B");
        // docs/cost.md: size table < 8 × 2 KB, sampler ~1 KB at low concurrency (8 B per
        // environment per open minute, ≤ 16 minutes), cascade window a few KB.
        assert!(sizes <= 3 * (64 + 256 * 8), "{sizes}");
        assert!(sampler <= 16 * (50 * 8 + 64) + 12_000, "{sampler}");
        assert!(
            cascade <= 35 * 80 + 35 * 8 * (32 + 256 * 8) + 8 * 40,
            "{cascade}"
        );
        let w = inputs.concurrency.window().unwrap();
        assert_eq!(w.concurrency.max(), 50);
    }

    #[test]
    fn size_table_is_bounded() {
        let mut t = SizeTable::default();
        for mb in 0..(MAX_SIZES as u32 + 3) {
            t.record(128 + 64 * mb, 10, 9.5, Some(50.0));
        }
        t.record(128, 10, 9.5, Some(f64::NAN));
        assert_eq!(t.sizes.len(), MAX_SIZES);
        assert_eq!(t.sizes_dropped, 3);
        assert_eq!(t.sizes[0].invocations, 2);
        assert_eq!(t.sizes[0].memory_reports, 1);
        assert_eq!(t.sizes[0].durations.count(), 2);
    }

    #[test]
    fn log_hist_quantiles_are_upper_bounds_within_9_percent() {
        let mut h = LogHist::default();
        assert_eq!(h.quantile(0.99), None);
        for ms in 1..=1000 {
            h.record(f64::from(ms));
        }
        h.record(f64::NAN);
        h.record(-3.0);
        assert_eq!(h.count(), 1002);
        for (q, exact) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let v = h.quantile(q).unwrap();
            assert!(v >= exact * 0.99 && v <= exact * 1.0905, "{q}: {v}");
        }
        // Merging equals recording everything in one.
        let (mut a, mut b, mut all) = (LogHist::default(), LogHist::default(), LogHist::default());
        for ms in [3.0, 40.0, 40.5, 900.0, 12_000.0] {
            a.record(ms);
            all.record(ms);
        }
        for ms in [0.2, 41.0, 5_000_000.0] {
            b.record(ms);
            all.record(ms);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert!(a.buckets.len() <= 256);
    }
}
