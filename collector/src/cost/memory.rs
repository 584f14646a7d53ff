//! Memory advice from real traffic, with AWS Lambda Power Tuning's three strategies.
//!
//! Consumes one [`MemoryObservation`] per memory size the function actually ran with (versions
//! and aliases with different settings give several), the region's prices and a strategy;
//! produces a [`MemoryAdvice`]. Pure; memory is the caller's slice.
//!
//! Strategies, as Power Tuning's analyzer defines them (alexcasalboni/aws-lambda-power-tuning,
//! `lambda/analyzer.js`), applied to the observed sizes that are eligible:
//! - `cost`: the lowest average cost per invocation; ties go to the faster;
//! - `speed`: the lowest duration; ties go to the cheaper. Power Tuning measures a few
//!   controlled runs per size; with real traffic the mean hides the tail, so the duration
//!   ranked here is each size's **P99 duration** (from the per-size histogram the caller keeps);
//! - `balanced`: the lowest `w × cost / max cost + (1 − w) × duration / max duration`, with
//!   the same P99 duration and `balanced_weight` w in \[0, 1\] (default 0.5; 1 = cost,
//!   0 = speed).
//!
//! Average cost per invocation here is the request price plus mean billed duration × memory ×
//! the first-tier duration price (Power Tuning prices duration the same way).
//!
//! **Floor.** No recommendation is below `P99 max memory used × (1 + headroom)` (default 20 %),
//! rounded up to a whole MB and to Lambda's 128 MB minimum. A size below the floor is not
//! eligible; sizes with fewer than `min_invocations` are not trusted. If no size has
//! `min_invocations` yet there is no recommendation (`basis = "insufficient_data"`, with the
//! largest count observed); if trusted sizes exist but all are below the floor, the advice is
//! the floor itself (`basis = "floor"`: raise the memory to it).

use super::MetricSample;
use super::names;
use super::prices::{Arch, RegionPrices};

/// Lambda's memory limits, MB.
pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
/// Lambda's MB are MiB: the `/metrics` gauges are in bytes (Prometheus base units).
pub const BYTES_PER_MB: f64 = 1_048_576.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Cost,
    Speed,
    Balanced,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Cost, Strategy::Speed, Strategy::Balanced];
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Cost => "cost",
            Strategy::Speed => "speed",
            Strategy::Balanced => "balanced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryAdviceConfig {
    /// Headroom above P99 memory used (0.2 = 20 %).
    pub headroom: f64,
    pub balanced_weight: f64,
    pub min_invocations: u64,
}

impl Default for MemoryAdviceConfig {
    fn default() -> Self {
        MemoryAdviceConfig {
            headroom: 0.2,
            balanced_weight: 0.5,
            min_invocations: 100,
        }
    }
}

/// What the function did at one memory size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryObservation {
    pub memory_mb: u32,
    pub invocations: u64,
    pub mean_billed_duration_ms: f64,
    pub p99_duration_ms: f64,
    /// P99 over invocations of `maxMemoryUsedMB`.
    pub p99_max_memory_used_mb: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub memory_mb: u32,
    pub invocations: u64,
    pub mean_duration_ms: f64,
    pub p99_duration_ms: f64,
    pub cost_per_invocation_usd: f64,
    pub eligible: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryAdvice {
    pub strategy: Strategy,
    pub current_mb: u32,
    pub floor_mb: u32,
    /// `None` with `basis = "insufficient_data"`.
    pub recommendation_mb: Option<u32>,
    /// `"observed"` (chosen among measured sizes), `"floor"` (trusted sizes are all below the
    /// floor) or `"insufficient_data"` (no size has `min_invocations` yet).
    pub basis: &'static str,
    /// Invocations at the most observed size (what `min_invocations` is compared with).
    pub most_invocations: u64,
    /// The current size is below the floor.
    pub undersized: bool,
    pub candidates: Vec<Candidate>,
}

/// Memory floor: P99 memory used plus headroom, whole MB, within Lambda's limits.
pub fn floor_mb(p99_used_mb: f64, headroom: f64) -> u32 {
    let want = (p99_used_mb.max(0.0) * (1.0 + headroom.max(0.0))).ceil();
    if want.is_finite() {
        (want as u32).clamp(MIN_MEMORY_MB, MAX_MEMORY_MB)
    } else {
        MAX_MEMORY_MB
    }
}

fn candidate_cost(prices: &RegionPrices, arch: Arch, o: &MemoryObservation) -> f64 {
    // f64 is enough to rank sizes; bills use the exact integer model.
    let first_tier = prices
        .arch(arch)
        .duration_tiers
        .first()
        .map_or(0.0, |t| t.gb_second.usd());
    prices.request_per_million.usd() / 1e6
        + f64::from(o.memory_mb) / 1024.0 * o.mean_billed_duration_ms.max(0.0) / 1000.0 * first_tier
}

/// Advice for one function currently at `current_mb`.
pub fn advise(
    observations: &[MemoryObservation],
    current_mb: u32,
    prices: &RegionPrices,
    arch: Arch,
    strategy: Strategy,
    cfg: &MemoryAdviceConfig,
) -> MemoryAdvice {
    let p99_used = observations
        .iter()
        .map(|o| o.p99_max_memory_used_mb)
        .fold(0.0, f64::max);
    let floor = floor_mb(p99_used, cfg.headroom);
    let candidates: Vec<Candidate> = observations
        .iter()
        .map(|o| Candidate {
            memory_mb: o.memory_mb,
            invocations: o.invocations,
            mean_duration_ms: o.mean_billed_duration_ms,
            p99_duration_ms: o.p99_duration_ms,
            cost_per_invocation_usd: candidate_cost(prices, arch, o),
            eligible: o.memory_mb >= floor
                && o.invocations >= cfg.min_invocations
                && o.mean_billed_duration_ms.is_finite()
                && o.p99_duration_ms.is_finite(),
        })
        .collect();
    let eligible: Vec<&Candidate> = candidates.iter().filter(|c| c.eligible).collect();
    let w = cfg.balanced_weight.clamp(0.0, 1.0);
    let max_cost = eligible
        .iter()
        .map(|c| c.cost_per_invocation_usd)
        .fold(0.0, f64::max);
    let max_dur = eligible
        .iter()
        .map(|c| c.p99_duration_ms)
        .fold(0.0, f64::max);
    let norm = |x: f64, max: f64| if max > 0.0 { x / max } else { 0.0 };
    let key = |c: &Candidate| -> (f64, f64) {
        match strategy {
            Strategy::Cost => (c.cost_per_invocation_usd, c.p99_duration_ms),
            Strategy::Speed => (c.p99_duration_ms, c.cost_per_invocation_usd),
            Strategy::Balanced => (
                w * norm(c.cost_per_invocation_usd, max_cost)
                    + (1.0 - w) * norm(c.p99_duration_ms, max_dur),
                0.0,
            ),
        }
    };
    let best = eligible.iter().min_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.memory_mb.cmp(&b.memory_mb))
    });
    let most_invocations = observations
        .iter()
        .map(|o| o.invocations)
        .max()
        .unwrap_or(0);
    let (recommendation_mb, basis) = match best {
        Some(c) => (Some(c.memory_mb), "observed"),
        None if most_invocations < cfg.min_invocations => (None, "insufficient_data"),
        None => (Some(floor.max(MIN_MEMORY_MB)), "floor"),
    };
    MemoryAdvice {
        strategy,
        current_mb,
        floor_mb: floor,
        recommendation_mb,
        basis,
        most_invocations,
        undersized: current_mb < floor,
        candidates,
    }
}

impl MemoryAdvice {
    /// The recommendation (when there is one) and the floor.
    pub fn samples(&self) -> Vec<MetricSample> {
        let rec = self.recommendation_mb.map(|mb| {
            MetricSample::new(
                names::MEMORY_RECOMMENDATION_BYTES,
                f64::from(mb) * BYTES_PER_MB,
            )
            .label("strategy", self.strategy.as_str())
        });
        rec.into_iter()
            .chain([MetricSample::new(
                names::MEMORY_FLOOR_BYTES,
                f64::from(self.floor_mb) * BYTES_PER_MB,
            )])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::prices::PriceTable;
    use super::*;

    fn obs(memory_mb: u32, mean_ms: f64, p99_used: f64) -> MemoryObservation {
        MemoryObservation {
            memory_mb,
            invocations: 1000,
            mean_billed_duration_ms: mean_ms,
            p99_duration_ms: mean_ms * 2.0,
            p99_max_memory_used_mb: p99_used,
        }
    }

    #[test]
    fn cost_per_invocation_is_request_plus_duration() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        // 1024 MB × 1000 ms = 1 GB-s: 0.0000166667 + 0.0000002.
        let c = candidate_cost(r, Arch::X86_64, &obs(1024, 1000.0, 0.0));
        assert!((c - 0.0000168667).abs() < 1e-15, "{c}");
        let c = candidate_cost(r, Arch::Arm64, &obs(512, 0.5, 0.0));
        assert!(
            (c - (0.0000133334 / 4000.0 + 0.0000002)).abs() < 1e-15,
            "{c}"
        );
    }

    #[test]
    fn strategies_on_a_cpu_bound_profile() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        // CPU-bound: doubling memory nearly halves duration until 1024 MB, then flat.
        let o = [
            obs(128, 8000.0, 90.0),
            obs(256, 4100.0, 90.0),
            obs(512, 2100.0, 90.0),
            obs(1024, 1100.0, 90.0),
            obs(2048, 1000.0, 90.0),
            obs(3008, 990.0, 90.0),
        ];
        let cfg = MemoryAdviceConfig::default();
        // Floor: 90 × 1.2 = 108 → 128 MB minimum.
        let cases = [
            // 128 MB: 8000 ms × 0.125 GB = 1 GB-s; 256: 1.025; 512: 1.05; 1024: 1.1.
            (Strategy::Cost, 128),
            (Strategy::Speed, 3008),
            // Balanced at w = 0.5: costs (normalised to 3008's 2.9 GB-s) vs durations (to 8000).
            (Strategy::Balanced, 1024),
        ];
        for (strategy, want) in cases {
            let a = advise(&o, 512, r, Arch::X86_64, strategy, &cfg);
            assert_eq!(a.recommendation_mb, Some(want), "{strategy:?}: {a:#?}");
            assert_eq!(a.basis, "observed");
            assert_eq!(a.floor_mb, 128);
        }
    }

    #[test]
    fn never_below_p99_memory_plus_headroom() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        // 128 MB is cheapest but P99 used is 200 MB → floor 240 MB: 128 and 192 ineligible.
        let o = [
            obs(128, 1000.0, 120.0),
            obs(192, 1000.0, 180.0),
            obs(256, 1000.0, 200.0),
        ];
        let cfg = MemoryAdviceConfig::default();
        let a = advise(&o, 192, r, Arch::X86_64, Strategy::Cost, &cfg);
        assert_eq!(a.floor_mb, 240);
        assert_eq!(a.recommendation_mb, Some(256));
        assert!(a.undersized);
        // Headroom 50 %: floor 300 MB, nothing observed above it → the floor itself.
        let cfg = MemoryAdviceConfig {
            headroom: 0.5,
            ..cfg
        };
        let a = advise(&o, 192, r, Arch::X86_64, Strategy::Cost, &cfg);
        assert_eq!((a.recommendation_mb, a.basis), (Some(300), "floor"));
    }

    #[test]
    fn few_invocations_are_not_trusted() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let mut cheap = obs(128, 10.0, 50.0);
        cheap.invocations = 5;
        let o = [cheap.clone(), obs(512, 100.0, 50.0)];
        let a = advise(
            &o,
            512,
            r,
            Arch::X86_64,
            Strategy::Cost,
            &MemoryAdviceConfig::default(),
        );
        assert_eq!(a.recommendation_mb, Some(512));
        // Below the minimum everywhere: no recommendation, not the floor, with the count.
        let mut few = obs(512, 100.0, 50.0);
        few.invocations = 99;
        for strategy in Strategy::ALL {
            let a = advise(
                &[cheap.clone(), few.clone()],
                512,
                r,
                Arch::X86_64,
                strategy,
                &MemoryAdviceConfig::default(),
            );
            assert_eq!((a.recommendation_mb, a.basis), (None, "insufficient_data"));
            assert_eq!(a.most_invocations, 99);
            assert_eq!(a.floor_mb, 128);
            let s = a.samples();
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].name, names::MEMORY_FLOOR_BYTES);
        }
    }

    /// Speed ranks by P99, not by the mean: a size with a lower mean but a long tail loses.
    #[test]
    fn speed_ranks_by_the_p99_duration() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let mut tail = obs(1024, 100.0, 50.0);
        tail.p99_duration_ms = 2000.0;
        let mut steady = obs(2048, 150.0, 50.0);
        steady.p99_duration_ms = 300.0;
        let cfg = MemoryAdviceConfig::default();
        let a = advise(
            &[tail, steady],
            1024,
            r,
            Arch::X86_64,
            Strategy::Speed,
            &cfg,
        );
        assert_eq!(a.recommendation_mb, Some(2048), "{a:#?}");
        // Cost still ranks by the mean bill: 1024 MB × 100 ms < 2048 MB × 150 ms.
        let mut tail = obs(1024, 100.0, 50.0);
        tail.p99_duration_ms = 2000.0;
        let mut steady = obs(2048, 150.0, 50.0);
        steady.p99_duration_ms = 300.0;
        let a = advise(&[tail, steady], 1024, r, Arch::X86_64, Strategy::Cost, &cfg);
        assert_eq!(a.recommendation_mb, Some(1024));
    }

    #[test]
    fn floor_limits() {
        assert_eq!(floor_mb(0.0, 0.2), 128);
        assert_eq!(floor_mb(1000.0, 0.2), 1200);
        assert_eq!(floor_mb(1000.1, 0.2), 1201);
        assert_eq!(floor_mb(9000.0, 0.2), 10_240);
        assert_eq!(floor_mb(f64::INFINITY, 0.2), 10_240);
    }

    #[test]
    fn samples_carry_the_strategy() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let a = advise(
            &[obs(512, 100.0, 50.0)],
            512,
            r,
            Arch::Arm64,
            Strategy::Balanced,
            &MemoryAdviceConfig::default(),
        );
        let s = a.samples();
        assert_eq!(s[0].name, "lambdawatch_memory_recommendation_bytes");
        assert_eq!(s[0].labels, vec![("strategy", "balanced".to_string())]);
        assert_eq!(s[0].value, 512.0 * 1_048_576.0);
    }
}
