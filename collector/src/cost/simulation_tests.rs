//! 30 simulated days of seeded noisy traffic through the surprise and retry-storm detectors
//! and, for the budget, through the whole cost stage (ledger → 30-day projection → budget):
//! every synthetic spike is caught at the first evaluation after it starts, and at most one
//! alert fires outside the spikes. Deterministic (`StdRng::seed_from_u64`), no sleeping.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::prices::{Arch, PriceTable};
use super::retry::{RetryConfig, RetryTracker};
use super::stage::{CostConfig, CostInvocation, CostStage};
use super::surprise::{SurpriseConfig, SurpriseDetector};

/// Monday 2026-11-30 00:00:00 UTC.
const START: u64 = 1_795_996_800;
const DAYS: u64 = 30;
const MINUTES: u64 = DAYS * 24 * 60;
/// Evaluations every 5 minutes, at the last second of every fifth minute.
const EVAL_EVERY_MIN: u64 = 5;

/// Poisson sample: Knuth for small means, rounded normal (Box–Muller) above 30.
fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let mut k = 0u64;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (lambda + z * lambda.sqrt()).round().max(0.0) as u64
}

/// Per-minute mean: diurnal curve (quiet nights), quieter weekends, ±15 % day-to-day jitter.
fn normal_rate(base: f64, minute: u64, day_jitter: &[f64]) -> f64 {
    let hour = (minute / 60) % 24;
    let day = minute / (24 * 60);
    let weekday = day % 7; // START is a Monday
    let diurnal = match hour {
        0..=5 => 0.2,
        6..=8 => 0.6,
        9..=17 => 1.0,
        18..=21 => 0.7,
        _ => 0.35,
    };
    let weekend = if weekday >= 5 { 0.6 } else { 1.0 };
    base * diurnal * weekend * day_jitter[day as usize]
}

fn jitter(rng: &mut StdRng) -> Vec<f64> {
    (0..DAYS).map(|_| rng.random_range(0.85..1.15)).collect()
}

/// (start minute, length in minutes), starts on evaluation boundaries, spread over
/// hour-of-week slots (different days and hours, nights and weekends included).
const SPIKES: [(u64, u64); 5] = [
    ((8 * 24 + 14) * 60, 30),       // Tue week 2, 14:00
    ((12 * 24 + 3) * 60 + 20, 20),  // Sat week 2, 03:20 (night, weekend)
    ((16 * 24 + 10) * 60 + 5, 45),  // Wed week 3, 10:05
    ((22 * 24 + 20) * 60 + 40, 15), // Tue week 4, 20:40
    ((27 * 24 + 1) * 60, 30),       // Sun week 4, 01:00
];

fn in_spike(minute: u64, grace: u64) -> Option<usize> {
    SPIKES
        .iter()
        .position(|(s, len)| minute >= *s && minute < s + len + grace)
}

fn is_eval_minute(m: u64) -> bool {
    (m + 1).is_multiple_of(EVAL_EVERY_MIN)
}

#[test]
fn surprise_detector_catches_spikes_within_one_evaluation_over_30_noisy_days() {
    for (seed, base) in [(7u64, 40.0), (8, 40.0), (9, 12.0)] {
        let mut rng = StdRng::seed_from_u64(seed);
        let jit = jitter(&mut rng);
        let mut d = SurpriseDetector::new(SurpriseConfig::default());
        let mut caught_at: Vec<Option<u64>> = vec![None; SPIKES.len()];
        let mut false_alerts = Vec::new();
        for m in 0..MINUTES {
            let mut lambda = normal_rate(base, m, &jit);
            if in_spike(m, 0).is_some() {
                lambda *= 5.0;
            }
            let now = START + m * 60;
            d.observe(now, poisson(&mut rng, lambda));
            if !is_eval_minute(m) {
                continue;
            }
            let s = d.evaluate(now + 59, None, None);
            if !s.started.contains(&"rate") {
                continue;
            }
            // The window may still hold spike minutes for one evaluation after a spike ends.
            match in_spike(m, EVAL_EVERY_MIN) {
                Some(i) => {
                    caught_at[i].get_or_insert(m);
                }
                None => false_alerts.push((m / 1440, (m / 60) % 24, s.clone())),
            }
        }
        for (i, (start, _)) in SPIKES.iter().enumerate() {
            // First evaluation after the spike starts: the end of its first 5 minutes.
            assert_eq!(
                caught_at[i],
                Some(start + EVAL_EVERY_MIN - 1),
                "seed {seed}: spike {i} at day {} not caught at its first evaluation",
                start / 1440
            );
        }
        assert!(
            false_alerts.len() <= 1,
            "seed {seed}: {} false alerts: {false_alerts:#?}",
            false_alerts.len()
        );
    }
}

/// A pending async retry: (due second, request id, attempt number).
type Pending = Reverse<(u64, u64, u8)>;

#[test]
fn retry_storms_caught_within_one_evaluation_over_30_noisy_days() {
    // Lambda retries a failed async event twice: after about 1 minute, then 2 more minutes.
    const RETRY_DELAYS: [u64; 2] = [60, 120];
    // (start minute, minutes) of storms where 60 % of attempts fail.
    const STORMS: [(u64, u64); 4] = [
        ((3 * 24 + 11) * 60, 30),
        ((9 * 24 + 9) * 60 + 10, 20),
        ((17 * 24 + 16) * 60 + 30, 40),
        ((25 * 24 + 22) * 60, 25),
    ];
    let cfg = RetryConfig::default();
    let in_storm = |m: u64, grace: u64| {
        STORMS
            .iter()
            .position(|(s, len)| m >= *s && m < s + len + grace)
    };
    for seed in [11u64, 12] {
        let mut rng = StdRng::seed_from_u64(seed);
        let jit = jitter(&mut rng);
        let mut t = RetryTracker::new(cfg.clone());
        let mut pending: BinaryHeap<Pending> = BinaryHeap::new();
        let mut next_id = 0u64;
        let mut caught_at: Vec<Option<u64>> = vec![None; STORMS.len()];
        let mut false_alerts = Vec::new();
        let mut max_normal_fraction: f64 = 0.0;
        for m in 0..MINUTES {
            let fail_p = if in_storm(m, 0).is_some() { 0.6 } else { 0.01 };
            // This minute's attempts: new events at random seconds, then due retries.
            let mut attempts: Vec<(u64, u64, u8)> =
                (0..poisson(&mut rng, normal_rate(20.0, m, &jit)))
                    .map(|_| {
                        next_id += 1;
                        (START + m * 60 + rng.random_range(0..60), next_id, 0u8)
                    })
                    .collect();
            while let Some(Reverse((due, _, _))) = pending.peek() {
                if *due >= START + (m + 1) * 60 {
                    break;
                }
                if let Some(Reverse(p)) = pending.pop() {
                    attempts.push(p);
                }
            }
            attempts.sort_unstable();
            for (at, id, attempt) in attempts {
                t.observe(at, &format!("{id:08x}-6c2b-4e1d-9a53-request"), None);
                if usize::from(attempt) < RETRY_DELAYS.len() && rng.random::<f64>() < fail_p {
                    pending.push(Reverse((
                        at + RETRY_DELAYS[usize::from(attempt)],
                        id,
                        attempt + 1,
                    )));
                }
            }
            if !is_eval_minute(m) {
                continue;
            }
            let s = t.evaluate(START + m * 60 + 59);
            // Storm retries keep arriving for up to 3 minutes after the storm and stay in the
            // window for its length.
            let grace = 3 + cfg.window_secs / 60;
            // Noise level where the window holds enough invocations to mean something (at
            // night a handful of retries among 30 invocations is noise the min_retries guard
            // absorbs).
            if in_storm(m, grace).is_none() && s.invocations >= 200.0 {
                max_normal_fraction = max_normal_fraction.max(s.retry_fraction);
            }
            if s.started {
                match in_storm(m, grace) {
                    Some(i) => {
                        caught_at[i].get_or_insert(m);
                    }
                    None => false_alerts.push((m / 1440, s.clone())),
                }
            }
        }
        for (i, (start, _)) in STORMS.iter().enumerate() {
            assert_eq!(
                caught_at[i],
                Some(start + EVAL_EVERY_MIN - 1),
                "seed {seed}: storm {i} not caught at its first evaluation"
            );
        }
        assert!(
            false_alerts.len() <= 1,
            "seed {seed}: false alerts {false_alerts:#?}"
        );
        assert!(
            max_normal_fraction < cfg.threshold,
            "seed {seed}: normal traffic reached {max_normal_fraction}"
        );
    }
}

/// The budget surprise through the real projection: 30 noisy days (diurnal, weekly, ±15 %
/// day-to-day, billed duration 800–1,200 ms) of a 2 GB function whose steady 30-day projection
/// is about $26 (free tier applied), a $52 budget, and two cost incidents of the kinds a budget
/// exists for: a runaway loop (60,000 invocations a minute for 10 minutes, day 8) and a memory
/// misconfiguration (10,240 MB for 6 hours, day 20: the ledger re-prices its history at the
/// new size). Each is caught at the first 5-minute evaluation after it starts; at most one
/// budget alert starts anywhere else.
#[test]
fn budget_surprise_caught_within_one_evaluation_over_30_noisy_days() {
    const BUDGET_USD: f64 = 52.0;
    let runaway = ((8 * 24 + 14) * 60, 10u64);
    let misconfig = ((20 * 24 + 14) * 60 + 5, 6 * 60u64);
    let incidents = [runaway, misconfig];
    let prices = PriceTable::embedded().unwrap();
    for seed in [21u64, 22] {
        let mut rng = StdRng::seed_from_u64(seed);
        let jit = jitter(&mut rng);
        let cfg = CostConfig {
            surprise: SurpriseConfig {
                budget_usd: Some(BUDGET_USD),
                ..SurpriseConfig::default()
            },
            ..CostConfig::default()
        };
        let mut stage: CostStage<&str> = CostStage::new(prices.clone(), cfg);
        let mut caught_at: Vec<Option<u64>> = vec![None; incidents.len()];
        let mut false_alerts = Vec::new();
        let mut steady_max: f64 = 0.0;
        for m in 0..MINUTES {
            let in_incident = |m: u64, i: usize| {
                let (s, len) = incidents[i];
                m >= s && m < s + len
            };
            let memory_mb = if in_incident(m, 1) { 10_240 } else { 2048 };
            let n = if in_incident(m, 0) {
                60_000
            } else {
                poisson(&mut rng, normal_rate(40.0, m, &jit))
            };
            for _ in 0..n {
                let inv = CostInvocation {
                    t_s: START + m * 60 + rng.random_range(0..60),
                    region: "us-east-1",
                    arch: Arch::X86_64,
                    memory_mb,
                    ephemeral_storage_mb: 512,
                    billed_ms: rng.random_range(800..1200),
                    on_provisioned: false,
                    request_id: None,
                    span: None,
                };
                assert!(stage.record(&"orders", &inv));
            }
            if !is_eval_minute(m) {
                continue;
            }
            let out = stage.evaluate(START + m * 60 + 59);
            let sp = &out[0].1.surprise;
            // Outside both incidents and the week the runaway stays in the 7-day lookback.
            let runaway_in_lookback = m >= runaway.0 && m < (runaway.0 / 1440 + 7) * 1440;
            if !runaway_in_lookback && !in_incident(m, 1) {
                steady_max = steady_max.max(sp.projected_30d_usd.unwrap_or(0.0));
            }
            if !sp.started.contains(&"budget") {
                continue;
            }
            match (0..incidents.len()).find(|i| in_incident(m, *i)) {
                Some(i) => {
                    caught_at[i].get_or_insert(m);
                }
                None => false_alerts.push((m / 1440, (m / 60) % 24, sp.clone())),
            }
        }
        for (i, (start, _)) in incidents.iter().enumerate() {
            assert_eq!(
                caught_at[i],
                Some(start + EVAL_EVERY_MIN - 1),
                "seed {seed}: incident {i} at day {} not caught at its first evaluation",
                start / 1440
            );
        }
        assert!(
            false_alerts.len() <= 1,
            "seed {seed}: {} false budget alerts: {false_alerts:#?}",
            false_alerts.len()
        );
        // The budget is a real bound of the noise, not far above it: steady projections
        // reach at least a third of it.
        assert!(
            steady_max < BUDGET_USD && steady_max > BUDGET_USD / 3.0,
            "seed {seed}: steady projection peaked at {steady_max}"
        );
    }
}
