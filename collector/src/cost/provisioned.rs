//! Provisioned concurrency advice: what would it cost to remove the cold starts we see?
//!
//! Consumes one function's observed window ([`PcObservation`]: invocations, on-demand cold
//! starts, P99 init duration, billed duration, and the distribution of per-minute peak
//! concurrency, [`ConcurrencyHistogram`]) and the region's prices; produces a [`PcAdvice`]. Pure.
//!
//! - **Units**: the `percentile` (default P99, nearest rank) of the per-minute concurrency
//!   samples: provisioned environments that cover the concurrency that often.
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
//!
//! ## The concurrency samples ([`ConcurrencySampler`], one per function, in the running collector)
//!
//! **What is sampled**: per UTC minute, the number of distinct execution environments
//! (`faas.instance`) that ran an invocation during that minute (an invocation counts in every
//! minute from its start, end − duration, to its end). A Lambda sandbox runs one invocation at a
//! time, so this is **at least the peak overlap** of the minute, and equal to it when every
//! environment active in the minute was busy at one instant. It overestimates when traffic
//! spreads over more warm environments than were ever busy at once (e.g. 2 sequential
//! invocations on 2 warm environments in one minute count 2, their peak overlap is 1): the
//! units are then an upper bound, which errs towards covering the cold starts at a higher price.
//! We chose it over a sweep of span start/end times because it is exact under any arrival order
//! of the batches and its memory grows with the concurrency (8 B per environment per open
//! minute), not with the invocation rate. **Lambda Managed Instances** run several invocations per
//! environment (and have no provisioned concurrency): a function that reports a
//! `lambda-managed-instances` init gets `not_applicable` instead of advice.
//!
//! **Order and lateness**: a minute stays open (environments can still be added, in any order)
//! until it ended [`LATENESS_SECS`] before the evaluation's `now`, or until an event arrives
//! [`MAX_OPEN_MINUTES`] minutes after it; then it is folded into the histogram of peaks, and
//! the minutes without any invocation since the first one seen count as samples of 0. An event
//! for a folded minute is `late`: counted, left out of the samples and of the window's
//! invocations (the minutes it also spans that are still open still count it).
//!
//! **Bounds**: open minutes ≤ [`MAX_OPEN_MINUTES`]; environments per open minute ≤
//! [`MAX_INSTANCES_PER_MINUTE`] (beyond, the minute saturates there and is counted in
//! `saturated_minutes`); the folded histogram keeps exact peaks up to 100 and rounds larger ones
//! up to two significant figures (≤ 10 % high), so it holds ≤ ~500 distinct values. An
//! invocation without `faas.instance` cannot be attributed to an environment: counted in
//! `no_instance`. Nothing here is checkpointed: after a restart the window starts again.

use std::collections::BTreeMap;

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
    /// Concurrency samples over the window (per-minute peaks, as a histogram).
    pub concurrency_samples: ConcurrencyHistogram,
}

/// Concurrency samples as `value → how many samples`, ascending (zeros included).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ConcurrencyHistogram {
    /// `(concurrency, samples)`, ascending by concurrency, no zero counts.
    pub counts: Vec<(u32, u64)>,
}

impl ConcurrencyHistogram {
    pub fn from_samples(samples: &[u32]) -> Self {
        let mut m: BTreeMap<u32, u64> = BTreeMap::new();
        for s in samples {
            *m.entry(*s).or_default() += 1;
        }
        ConcurrencyHistogram {
            counts: m.into_iter().collect(),
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    pub fn max(&self) -> u32 {
        self.counts.last().map_or(0, |(v, _)| *v)
    }

    /// Nearest-rank percentile (`p` in (0, 1]); 0 for no samples.
    pub fn percentile(&self, p: f64) -> u32 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (v, n) in &self.counts {
            seen += n;
            if seen >= rank {
                return *v;
            }
        }
        self.max()
    }

    /// Fraction of samples at or below `units` (0 for no samples).
    pub fn covered(&self, units: u32) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let n: u64 = self
            .counts
            .iter()
            .filter(|(v, _)| *v <= units)
            .map(|(_, n)| n)
            .sum();
        n as f64 / total as f64
    }
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
    ConcurrencyHistogram::from_samples(samples).percentile(p)
}

pub fn advise(prices: &RegionPrices, obs: &PcObservation, cfg: &PcAdviceConfig) -> PcAdvice {
    let units = obs.concurrency_samples.percentile(cfg.percentile);
    let covered = obs.concurrency_samples.covered(units);
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
    /// The advice's gauges (the cold-start ratio is published by `cost::advice` once).
    pub fn samples(&self) -> Vec<MetricSample> {
        vec![
            MetricSample::new(names::PC_RECOMMENDED, f64::from(u8::from(self.recommended))),
            MetricSample::new(names::PC_RECOMMENDED_UNITS, f64::from(self.units)),
            MetricSample::new(names::PC_NET_MONTHLY_USD, self.net_monthly_usd),
            MetricSample::new(
                names::PC_COLD_STARTS_AVOIDED_30D,
                self.cold_starts_avoided_30d,
            ),
        ]
    }
}

/// A minute stays open this long after it ended (batches arrive late and out of order).
pub const LATENESS_SECS: u64 = 120;
/// At most this many minutes are open at once; an event this far ahead folds the oldest.
pub const MAX_OPEN_MINUTES: u64 = 16;
/// Distinct environments counted per open minute (the minute saturates beyond).
pub const MAX_INSTANCES_PER_MINUTE: usize = 10_000;

/// Peaks above 100 are rounded up to two significant figures (bounds the histogram).
fn quantize(v: u32) -> u32 {
    if v <= 100 {
        return v;
    }
    let mut step = 1u32;
    while v / step >= 100 {
        step *= 10;
    }
    v.div_ceil(step).saturating_mul(step)
}

fn instance_hash(instance: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    instance.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Default, PartialEq)]
struct OpenMinute {
    /// Hashes of the environments active in the minute, sorted.
    instances: Vec<u64>,
    saturated: bool,
    invocations: u64,
    billed_ms: u64,
    cold_starts: u64,
}

/// What the sampler dropped or bounded (`/api/v1/cost`, `provisioned_concurrency.sampler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SamplerStats {
    /// Invocations or cold starts that arrived after their minute was folded.
    pub late: u64,
    /// Invocations without `faas.instance`.
    pub no_instance: u64,
    /// Minutes that reached [`MAX_INSTANCES_PER_MINUTE`] environments.
    pub saturated_minutes: u64,
}

/// One function's per-minute concurrency samples (see the module doc). Pure: time comes from
/// the events and from the `now` given to [`ConcurrencySampler::advance`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConcurrencySampler {
    open: BTreeMap<u64, OpenMinute>,
    /// The first minute seen (the window starts there).
    first_minute: Option<u64>,
    /// Minutes below this are folded.
    folded_until: Option<u64>,
    /// Folded peaks (quantized) → minutes, zeros excluded.
    peaks: BTreeMap<u32, u64>,
    folded_minutes: u64,
    invocations: u64,
    billed_ms: u64,
    cold_starts: u64,
    /// A `lambda-managed-instances` init was seen.
    pub managed_instances: bool,
    pub stats: SamplerStats,
}

/// What the sampler has folded: the window the advice runs over.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledWindow {
    pub window_secs: u64,
    pub invocations: u64,
    pub billed_duration_ms: u64,
    pub cold_starts: u64,
    pub concurrency: ConcurrencyHistogram,
}

impl ConcurrencySampler {
    fn is_folded(&self, minute: u64) -> bool {
        self.folded_until.is_some_and(|f| minute < f)
    }

    fn open_minute(&mut self, minute: u64) -> &mut OpenMinute {
        self.first_minute = Some(self.first_minute.map_or(minute, |f| f.min(minute)));
        self.open.entry(minute).or_default()
    }

    /// An event at `minute` arrived: fold what is more than [`MAX_OPEN_MINUTES`] behind it.
    fn bound(&mut self, minute: u64) {
        if let Some(oldest) = minute.checked_sub(MAX_OPEN_MINUTES - 1) {
            self.fold_until(oldest);
        }
    }

    /// One invocation of `instance` that ended at `end_ms` (unix ms) after `duration_ms`.
    pub fn record_invocation(
        &mut self,
        instance: &str,
        end_ms: u64,
        duration_ms: f64,
        billed_ms: u64,
    ) {
        let end_minute = end_ms / 60_000;
        if self.is_folded(end_minute) {
            self.stats.late += 1;
            return;
        }
        if instance.is_empty() {
            self.stats.no_instance += 1;
        }
        self.bound(end_minute);
        let duration = if duration_ms.is_finite() {
            duration_ms.max(0.0) as u64
        } else {
            0
        };
        let start_minute = (end_ms.saturating_sub(duration) / 60_000)
            .max(end_minute.saturating_sub(MAX_OPEN_MINUTES - 1))
            .max(self.folded_until.unwrap_or(0));
        let end = self.open_minute(end_minute);
        end.invocations += 1;
        end.billed_ms = end.billed_ms.saturating_add(billed_ms);
        if instance.is_empty() {
            return;
        }
        let h = instance_hash(instance);
        let mut saturated = 0;
        for m in start_minute..=end_minute {
            let om = self.open_minute(m);
            if let Err(i) = om.instances.binary_search(&h) {
                if om.instances.len() < MAX_INSTANCES_PER_MINUTE {
                    om.instances.insert(i, h);
                } else if !om.saturated {
                    om.saturated = true;
                    saturated += 1;
                }
            }
        }
        self.stats.saturated_minutes += saturated;
    }

    /// One on-demand cold start (init span) that ended at `t_s`.
    pub fn record_cold_start(&mut self, t_s: u64) {
        let minute = t_s / 60;
        if self.is_folded(minute) {
            self.stats.late += 1;
            return;
        }
        self.bound(minute);
        self.open_minute(minute).cold_starts += 1;
    }

    /// Folds every minute that ended at least [`LATENESS_SECS`] before `now_s`.
    pub fn advance(&mut self, now_s: u64) {
        self.fold_until(now_s.saturating_sub(LATENESS_SECS) / 60);
    }

    /// Folds every minute below `until` (minutes without invocations are samples of 0).
    fn fold_until(&mut self, until: u64) {
        let Some(first) = self.first_minute else {
            return;
        };
        let from = self.folded_until.unwrap_or(first).max(first);
        if until <= from {
            return;
        }
        let keep = self.open.split_off(&until);
        for (_, m) in std::mem::replace(&mut self.open, keep) {
            let peak = quantize(m.instances.len() as u32);
            if peak > 0 {
                *self.peaks.entry(peak).or_default() += 1;
            }
            self.invocations += m.invocations;
            self.billed_ms = self.billed_ms.saturating_add(m.billed_ms);
            self.cold_starts += m.cold_starts;
        }
        self.folded_minutes += until - from;
        self.folded_until = Some(until);
    }

    /// The folded window (`None` before the first minute is folded).
    pub fn window(&self) -> Option<SampledWindow> {
        if self.folded_minutes == 0 {
            return None;
        }
        let nonzero: u64 = self.peaks.values().sum();
        let zeros = self.folded_minutes.saturating_sub(nonzero);
        let counts = (zeros > 0)
            .then_some((0, zeros))
            .into_iter()
            .chain(self.peaks.iter().map(|(v, n)| (*v, *n)))
            .collect();
        Some(SampledWindow {
            window_secs: self.folded_minutes * 60,
            invocations: self.invocations,
            billed_duration_ms: self.billed_ms,
            cold_starts: self.cold_starts,
            concurrency: ConcurrencyHistogram { counts },
        })
    }

    /// Heap bytes (open minutes' environment sets and the peak histogram).
    pub fn heap_bytes(&self) -> usize {
        self.open
            .values()
            .map(|m| m.instances.capacity() * 8 + 64)
            .sum::<usize>()
            + self.peaks.len() * 24
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
            concurrency_samples: ConcurrencyHistogram::from_samples(&samples),
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

    const M0: u64 = 1_795_996_800_000; // unix ms, a minute boundary

    /// Per-minute peaks of a folded sampler, zeros included, by minute order of the histogram.
    fn hist(s: &ConcurrencySampler) -> Vec<(u32, u64)> {
        s.window().unwrap().concurrency.counts
    }

    #[test]
    fn sampler_counts_environments_per_minute_across_overlaps() {
        let mut s = ConcurrencySampler::default();
        // Minute 0: env a twice (sequential: one environment), env b overlapping: 2.
        s.record_invocation("a", M0 + 10_000, 5_000.0, 5_000);
        s.record_invocation("a", M0 + 20_000, 5_000.0, 5_000);
        s.record_invocation("b", M0 + 12_000, 4_000.0, 4_000);
        // Minute 1: env c runs 61 s from minute 0 into minute 1 (counts in both), plus a, b, d.
        s.record_invocation("c", M0 + 61_000, 61_000.0, 61_000);
        for env in ["a", "b", "d"] {
            s.record_invocation(env, M0 + 90_000, 100.0, 100);
        }
        // Minute 2: nothing. Minute 3: one.
        s.record_invocation("a", M0 + 200_000, 100.0, 100);
        s.record_cold_start((M0 + 1_000) / 1000);
        // Nothing is folded until a minute ended 120 s before `now`.
        s.advance((M0 + 60_000 + 119_000) / 1000);
        assert_eq!(s.window(), None);
        s.advance((M0 + 240_000 + 120_000) / 1000);
        let w = s.window().unwrap();
        assert_eq!(w.window_secs, 4 * 60);
        assert_eq!(w.invocations, 8);
        assert_eq!(
            w.billed_duration_ms,
            5_000 + 5_000 + 4_000 + 61_000 + 300 + 100
        );
        assert_eq!(w.cold_starts, 1);
        // Minute 0: a, b, c = 3; minute 1: a, b, c, d = 4; minute 2: 0; minute 3: 1.
        assert_eq!(hist(&s), vec![(0, 1), (1, 1), (3, 1), (4, 1)]);
        assert_eq!(w.concurrency.percentile(0.99), 4);
        assert_eq!(w.concurrency.percentile(0.5), 1);
        assert!((w.concurrency.covered(3) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn sampler_is_exact_under_any_batch_order_and_counts_late_events() {
        let events: Vec<(String, u64, f64)> = (0..200u64)
            .map(|i| {
                (
                    format!("env-{}", i % 7),
                    M0 + (i * 2_917) % 600_000,
                    f64::from((i % 13) as u32) * 1_500.0,
                )
            })
            .collect();
        let run = |order: &[usize]| {
            let mut s = ConcurrencySampler::default();
            for i in order {
                let (env, end, d) = &events[*i];
                s.record_invocation(env, *end, *d, 1);
            }
            s.advance((M0 + 600_000 + 120_000) / 1000);
            s
        };
        let forward: Vec<usize> = (0..events.len()).collect();
        let mut backward = forward.clone();
        backward.reverse();
        let interleaved: Vec<usize> = (0..events.len()).map(|i| (i * 37) % 200).collect();
        let a = run(&forward);
        assert_eq!(a.window().unwrap().invocations, 200);
        assert_eq!(a, run(&backward));
        assert_eq!(a, run(&interleaved));
        // After the fold, an event for a folded minute is late: counted, not sampled.
        let mut late = a.clone();
        late.record_invocation("env-x", M0 + 1_000, 10.0, 1);
        late.record_cold_start((M0 + 2_000) / 1000);
        assert_eq!(late.stats.late, 2);
        assert_eq!(late.window(), a.window());
    }

    #[test]
    fn sampler_memory_is_bounded() {
        let mut s = ConcurrencySampler::default();
        // Events far ahead fold the oldest minutes: never more than MAX_OPEN_MINUTES open.
        for m in 0..100u64 {
            s.record_invocation("a", M0 + m * 60_000 + 1, 1.0, 1);
            assert!(s.open.len() as u64 <= MAX_OPEN_MINUTES, "{}", s.open.len());
        }
        assert_eq!(
            s.window().unwrap().window_secs,
            (100 - MAX_OPEN_MINUTES) * 60
        );
        // A 15-minute invocation spans at most MAX_OPEN_MINUTES minutes.
        s.record_invocation("b", M0 + 100 * 60_000, 900_000.0, 900_000);
        assert!(s.open.len() as u64 <= MAX_OPEN_MINUTES);
        // Environments per minute saturate at the cap, counted once per minute.
        let mut s = ConcurrencySampler::default();
        for i in 0..MAX_INSTANCES_PER_MINUTE + 50 {
            s.record_invocation(&format!("env-{i}"), M0 + 30_000, 1.0, 1);
        }
        s.record_invocation("", M0 + 30_000, 1.0, 1);
        assert_eq!(s.stats.saturated_minutes, 1);
        assert_eq!(s.stats.no_instance, 1);
        assert!(s.heap_bytes() < 200_000, "{}", s.heap_bytes());
        s.advance((M0 + 60_000 + 120_000) / 1000);
        let w = s.window().unwrap();
        assert_eq!(w.invocations, MAX_INSTANCES_PER_MINUTE as u64 + 51);
        // 10,000 → two significant figures is itself.
        assert_eq!(w.concurrency.max(), MAX_INSTANCES_PER_MINUTE as u32);
        assert_eq!(
            (quantize(100), quantize(101), quantize(1_234)),
            (100, 110, 1_300)
        );
        assert_eq!(quantize(99_999), 100_000);
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
