//! The advisors in the running collector: each function's advice, built on the evaluation tick.
//!
//! ```text
//! aggregate owner ── CostFeed::observe ──► SizeStats (per memory size: invocations, billed ms,
//!                                           max memory used)           [this module, bounded]
//! evaluator tick ── same query, same now ──► advise_function(sizes, FunctionState, prices)
//!                       ├─ memory::advise × {cost, speed, balanced}     (SizeStats)
//!                       ├─ timeout::timeout_budget                      (aggregator P99, timeout)
//!                       ├─ cold starts                                  (aggregator counts, P99 init)
//!                       ├─ cascade: unknown (no per-trace downstream latency is aggregated)
//!                       └─ provisioned concurrency: unknown (no concurrency samples)
//!                  ──► FunctionAdvice { samples() → /metrics, serde → /api/v1/cost `advice` }
//! ```
//!
//! **Consumes** the cost feed's per-memory-size statistics ([`SizeStats`], fed with every priced
//! invocation) and the aggregator's own [`FunctionState`] of the same function: the cached P99
//! duration (the percentile cache refreshed in the same query), the configured timeout the
//! invocation spans carry, the on-demand cold-start count and P99 init duration.
//! **Produces** one [`FunctionAdvice`] per function. **Bounded**: at most [`MAX_SIZES`] memory
//! sizes per function (a further size is not tracked and is counted in `sizes_dropped`);
//! ~40 B per size. Cost per tick: O(sizes) per function, so it runs on every tick.
//!
//! **Inputs that are not measured** are reported as unknown, never invented:
//! - memory: the floor uses the **maximum** `maxMemoryUsedMB` observed at each size, an upper
//!   bound of its P99, so the floor is never below P99 + headroom (it can be above it);
//! - timeout cascade: the aggregator keeps no per-trace downstream client-span latency, so
//!   `cascade.status` is `"unknown"` with the reason; no gauge is published for it;
//! - provisioned concurrency: no concurrency samples are aggregated, so the units and their
//!   price are `"unknown"` (reason given); the measured half (cold-start ratio, P99 init) is
//!   published (`lambdawatch_cold_start_ratio`).

use super::MetricSample;
use super::memory::{
    self, BYTES_PER_MB, MemoryAdvice, MemoryAdviceConfig, MemoryObservation, Strategy,
};
use super::names;
use super::prices::{Arch, RegionPrices};
use super::timeout::{self, TimeoutBudget};
use crate::aggregate::InitKind;
use crate::aggregate::function::FunctionState;

/// Memory sizes tracked per function (versions and aliases rarely use more than a few).
pub const MAX_SIZES: usize = 8;

/// What a function did at one memory size, since the collector started.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SizeStats {
    pub memory_mb: u32,
    pub invocations: u64,
    pub billed_ms_total: u64,
    /// Invocations that reported `maxMemoryUsedMB`.
    pub memory_reports: u64,
    /// Largest `maxMemoryUsedMB` seen at this size (≥ its P99).
    pub max_memory_used_mb: f64,
}

/// One function's per-size statistics (bounded by [`MAX_SIZES`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SizeTable {
    pub sizes: Vec<SizeStats>,
    pub sizes_dropped: u64,
}

impl SizeTable {
    /// Records one invocation at `memory_mb`.
    pub fn record(&mut self, memory_mb: u32, billed_ms: u64, max_memory_used_mb: Option<f64>) {
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
                // Not used by the strategies; the per-size duration percentile is not kept.
                p99_duration_ms: f64::NAN,
                p99_max_memory_used_mb: s.max_memory_used_mb,
            })
            .collect()
    }
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
    /// `strategy → {recommendation_mb, basis}`.
    pub recommendations: Vec<MemoryRecommendation>,
    pub reason: String,
    pub sizes: Vec<SizeStats>,
    pub sizes_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryRecommendation {
    pub strategy: Strategy,
    pub recommendation_mb: u32,
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

/// An advisor whose inputs the collector does not have.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unknown {
    pub status: &'static str,
    pub reason: &'static str,
}

pub const CASCADE_UNKNOWN: &str = "the aggregator keeps no per-trace downstream client-span \
     latency, which timeout-cascade detection needs";
pub const PC_UNKNOWN: &str = "no concurrency samples are aggregated, so the units and their \
     price cannot be computed; cold_starts holds the measured cold-start ratio and P99 init";

/// One function's advice (`/api/v1/cost` rows' `advice`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionAdvice {
    pub memory: MemoryAdviceDoc,
    pub timeout: TimeoutDoc,
    pub cascade: Unknown,
    pub cold_starts: ColdStartDoc,
    pub provisioned_concurrency: Unknown,
}

impl FunctionAdvice {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out: Vec<MetricSample> = self
            .memory
            .recommendations
            .iter()
            .map(|r| {
                MetricSample::new(
                    names::MEMORY_RECOMMENDATION_BYTES,
                    f64::from(r.recommendation_mb) * BYTES_PER_MB,
                )
                .label("strategy", r.strategy.as_str())
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
    let reported: Vec<&SizeStats> = sizes
        .sizes
        .iter()
        .filter(|s| s.memory_reports > 0)
        .collect();
    let observed = reported
        .iter()
        .map(|s| s.max_memory_used_mb)
        .reduce(f64::max);
    let floor_mb = advice.first().map_or(memory::MIN_MEMORY_MB, |a| a.floor_mb);
    let undersized = current_mb < floor_mb;
    let eligible = advice
        .first()
        .map_or(0, |a| a.candidates.iter().filter(|c| c.eligible).count());
    let reason = match observed {
        None => "no invocation reported max memory used: the floor is Lambda's minimum".to_owned(),
        Some(m) if eligible == 0 => format!(
            "no size with ≥ {} invocations at or above the floor {floor_mb} MB \
             (max used {m} MB + {:.0} % headroom): the advice is the floor",
            cfg.min_invocations,
            cfg.headroom * 100.0
        ),
        Some(m) => format!(
            "{eligible} eligible size(s) of {} observed; floor {floor_mb} MB \
             (max used {m} MB + {:.0} % headroom){}",
            sizes.sizes.len(),
            cfg.headroom * 100.0,
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
        recommendations: advice
            .iter()
            .map(|a| MemoryRecommendation {
                strategy: a.strategy,
                recommendation_mb: a.recommendation_mb,
                basis: a.basis,
            })
            .collect(),
        reason,
        sizes: sizes.sizes.clone(),
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

/// The advice for one function: `sizes` from the cost feed, `state` the aggregator's state of the
/// same function (its percentile cache refreshed at this tick), `current_mb` the latest size.
pub fn advise_function(
    sizes: &SizeTable,
    state: &FunctionState,
    current_mb: u32,
    prices: &RegionPrices,
    arch: Arch,
    cfg: &MemoryAdviceConfig,
) -> FunctionAdvice {
    FunctionAdvice {
        memory: memory_doc(sizes, current_mb, prices, arch, cfg),
        timeout: timeout_doc(state, timeout::DEFAULT_BUDGET_FRACTION),
        cascade: Unknown {
            status: "unknown",
            reason: CASCADE_UNKNOWN,
        },
        cold_starts: cold_doc(state),
        provisioned_concurrency: Unknown {
            status: "unknown",
            reason: PC_UNKNOWN,
        },
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
        assert_eq!(rec(Strategy::Cost), 1024);
        assert_eq!(rec(Strategy::Speed), 1024);
        assert_eq!(rec(Strategy::Balanced), 1024);
        for r in &m.recommendations {
            assert!(r.recommendation_mb >= m.floor_mb, "{r:?}");
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
        assert_eq!(adv.cascade.status, "unknown");
        assert_eq!(adv.provisioned_concurrency.status, "unknown");

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

    /// A single undersized size with few invocations: the advice is the floor, the timeout is
    /// exceeded, and without a timeout or a memory report nothing is invented.
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
                .all(|r| r.recommendation_mb == 144 && r.basis == "floor")
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

    #[test]
    fn size_table_is_bounded() {
        let mut t = SizeTable::default();
        for mb in 0..(MAX_SIZES as u32 + 3) {
            t.record(128 + 64 * mb, 10, Some(50.0));
        }
        t.record(128, 10, Some(f64::NAN));
        assert_eq!(t.sizes.len(), MAX_SIZES);
        assert_eq!(t.sizes_dropped, 3);
        assert_eq!(t.sizes[0].invocations, 2);
        assert_eq!(t.sizes[0].memory_reports, 1);
    }
}
