//! Provisioned concurrency advice: what would it cost to remove the cold starts we see?
//!
//! Consumes one function's observed window ([`PcObservation`]: invocations, on-demand cold
//! starts, P99 init duration, billed duration, and concurrency samples, e.g. the peak concurrency
//! of each minute) and the region's prices; produces a [`PcAdvice`]. Pure.
//!
//! - **Units**: the `percentile` (default P99, nearest rank) of the concurrency samples, rounded
//!   up: provisioned environments that cover the concurrency that often.
//! - **Cold starts avoided**: cold starts in the window × the fraction of samples at or below
//!   the units (cold starts above that concurrency would still happen), scaled to 30 days.
//! - **Cost**: the 30-day bill with those units enabled all month and that fraction of the billed
//!   duration served at the provisioned duration price, minus the bill without provisioned
//!   concurrency (both from [`super::model::monthly_bill`], without the free tier, which is an
//!   account-level allowance). Negative = provisioned concurrency would save money (it does for
//!   well-utilised functions: its duration price is lower).
//! - **Recommended** when the cold-start ratio is at least `min_cold_start_ratio` (default 1 %)
//!   and P99 init is at least `init_threshold_ms` (default 500 ms, the cold-start SLO); the
//!   price per avoided cold start is reported either way, for the reader to judge.

use super::MetricSample;
use super::model::{FunctionUsage, THIRTY_DAYS_SECS, mul_div, project_30d};
use super::names;
use super::prices::{Arch, RegionPrices};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PcAdviceConfig {
    pub percentile: f64,
    pub min_cold_start_ratio: f64,
    pub init_threshold_ms: f64,
}

impl Default for PcAdviceConfig {
    fn default() -> Self {
        PcAdviceConfig {
            percentile: 0.99,
            min_cold_start_ratio: 0.01,
            init_threshold_ms: 500.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PcObservation {
    pub arch: Arch,
    pub memory_mb: u32,
    pub window_secs: u64,
    pub invocations: u64,
    /// On-demand cold starts (init type `on-demand`) in the window.
    pub cold_starts: u64,
    pub p99_init_ms: f64,
    /// Total billed duration in the window, ms.
    pub billed_duration_ms: u64,
    /// Concurrency samples over the window (e.g. per-minute peaks).
    pub concurrency_samples: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PcAdvice {
    pub cold_start_ratio: f64,
    pub p99_init_ms: f64,
    pub units: u32,
    /// Fraction of concurrency samples the units cover.
    pub covered: f64,
    pub cold_starts_avoided_30d: f64,
    pub init_seconds_avoided_30d: f64,
    pub monthly_cost_without_usd: f64,
    pub monthly_cost_with_usd: f64,
    /// `with − without` (negative = saving).
    pub net_monthly_usd: f64,
    /// `net / cold starts avoided` when both are positive.
    pub usd_per_cold_start_avoided: Option<f64>,
    pub recommended: bool,
}

/// Nearest-rank percentile of `samples` (`p` in (0, 1]); 0 for no samples.
pub fn percentile(samples: &[u32], p: f64) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = (p.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn advise(prices: &RegionPrices, obs: &PcObservation, cfg: &PcAdviceConfig) -> PcAdvice {
    let units = percentile(&obs.concurrency_samples, cfg.percentile);
    let covered = if obs.concurrency_samples.is_empty() {
        0.0
    } else {
        obs.concurrency_samples
            .iter()
            .filter(|c| **c <= units)
            .count() as f64
            / obs.concurrency_samples.len() as f64
    };
    let window = obs.window_secs.max(1);
    let to_30d = THIRTY_DAYS_SECS as f64 / window as f64;
    let avoided = obs.cold_starts as f64 * covered * to_30d;

    let without = FunctionUsage {
        requests: obs.invocations,
        on_demand_duration_ms: obs.billed_duration_ms,
        ..FunctionUsage::new("without", obs.arch, obs.memory_mb)
    };
    // Covered fraction in parts per million, to stay in integers.
    let covered_ppm = (covered * 1e6).round() as u128;
    let on_pc = u64::try_from(mul_div(
        u128::from(obs.billed_duration_ms),
        covered_ppm,
        1_000_000,
    ))
    .unwrap_or(u64::MAX);
    let with = FunctionUsage {
        on_demand_duration_ms: obs.billed_duration_ms - on_pc.min(obs.billed_duration_ms),
        provisioned_duration_ms: on_pc,
        provisioned_concurrency: units,
        provisioned_seconds: window,
        ..without.clone()
    };
    let cost_without = project_30d(prices, None, &[without], window).account.total;
    let cost_with = project_30d(prices, None, &[with], window).account.total;
    let net = cost_with.usd() - cost_without.usd();
    let ratio = if obs.invocations == 0 {
        0.0
    } else {
        obs.cold_starts as f64 / obs.invocations as f64
    };
    PcAdvice {
        cold_start_ratio: ratio,
        p99_init_ms: obs.p99_init_ms,
        units,
        covered,
        cold_starts_avoided_30d: avoided,
        init_seconds_avoided_30d: avoided * obs.p99_init_ms.max(0.0) / 1000.0,
        monthly_cost_without_usd: cost_without.usd(),
        monthly_cost_with_usd: cost_with.usd(),
        net_monthly_usd: net,
        usd_per_cold_start_avoided: (net > 0.0 && avoided > 0.0).then(|| net / avoided),
        recommended: units > 0
            && ratio >= cfg.min_cold_start_ratio
            && obs.p99_init_ms >= cfg.init_threshold_ms,
    }
}

impl PcAdvice {
    pub fn samples(&self) -> Vec<MetricSample> {
        vec![
            MetricSample::new(names::COLD_START_RATIO, self.cold_start_ratio),
            MetricSample::new(names::PC_RECOMMENDED_UNITS, f64::from(self.units)),
            MetricSample::new(names::PC_NET_MONTHLY_USD, self.net_monthly_usd),
            MetricSample::new(
                names::PC_COLD_STARTS_AVOIDED_30D,
                self.cold_starts_avoided_30d,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::prices::PriceTable;
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.99), 0);
    }

    fn obs(samples: Vec<u32>, cold: u64, p99_init: f64) -> PcObservation {
        PcObservation {
            arch: Arch::X86_64,
            memory_mb: 512,
            window_secs: 86_400,
            invocations: 100_000,
            cold_starts: cold,
            p99_init_ms: p99_init,
            billed_duration_ms: 100_000 * 200,
            concurrency_samples: samples,
        }
    }

    #[test]
    fn pc_price_against_cold_starts() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        // A day at concurrency 1-2 (1,440 per-minute samples, 2 in 10 % of minutes).
        let samples: Vec<u32> = (0..1440).map(|i| if i % 10 == 0 { 2 } else { 1 }).collect();
        let a = advise(r, &obs(samples, 2_000, 1200.0), &PcAdviceConfig::default());
        assert_eq!(a.units, 2);
        assert_eq!(a.covered, 1.0);
        assert!((a.cold_start_ratio - 0.02).abs() < 1e-12);
        assert!(a.recommended);
        assert_eq!(a.cold_starts_avoided_30d, 60_000.0);
        assert_eq!(a.init_seconds_avoided_30d, 72_000.0);
        // PC: 2 × 0.5 GB × 2,592,000 s × 0.0000041667 = $10.80; duration 30 × 100,000 × 0.2 s ×
        // 0.5 GB = 300,000 GB-s at 0.0000097222 instead of 0.0000166667: −$2.08.
        let net =
            2.0 * 0.5 * 2_592_000.0 * 0.0000041667 + 300_000.0 * (0.0000097222 - 0.0000166667);
        assert!((a.net_monthly_usd - net).abs() < 1e-6, "{a:#?}");
        let per = a.usd_per_cold_start_avoided.unwrap();
        assert!((per - net / 60_000.0).abs() < 1e-9);
        let names: Vec<_> = a.samples().iter().map(|s| s.name).collect();
        assert!(names.contains(&"lambdawatch_provisioned_concurrency_recommended_units"));
    }

    #[test]
    fn table_of_recommendations() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let s = || vec![1u32; 100];
        // (cold starts of 100,000, p99 init, recommended)
        for (cold, init, want) in [
            (2_000, 1200.0, true),
            (500, 1200.0, false),  // 0.5 % < 1 %
            (2_000, 300.0, false), // fast init
            (0, 0.0, false),
        ] {
            let a = advise(r, &obs(s(), cold, init), &PcAdviceConfig::default());
            assert_eq!(a.recommended, want, "{cold} {init}");
        }
        // No concurrency samples: no units, nothing to recommend.
        let a = advise(r, &obs(vec![], 2_000, 1200.0), &PcAdviceConfig::default());
        assert_eq!((a.units, a.recommended), (0, false));
    }

    #[test]
    fn spiky_concurrency_leaves_some_cold_starts() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        // P90 of samples 1..=10 is 9: 90 % of minutes covered.
        let cfg = PcAdviceConfig {
            percentile: 0.9,
            ..PcAdviceConfig::default()
        };
        let a = advise(r, &obs((1..=10).collect(), 1000, 800.0), &cfg);
        assert_eq!(a.units, 9);
        assert!((a.covered - 0.9).abs() < 1e-12);
        assert!((a.cold_starts_avoided_30d - 27_000.0).abs() < 1e-6);
    }
}
