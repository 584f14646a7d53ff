//! Two kinds of histogram per function:
//!
//! - [`Percentiles`]: HdrHistograms (2 significant figures, i.e. ≤ 1 % relative error, unit 1 ms,
//!   auto-resizing, `u32` counts) for P50/P90/P99 reported beside the SLIs. Two slots of
//!   [`PERCENTILE_PERIOD_SECS`] each (current and previous period), so percentiles describe the last
//!   6 to 12 hours; memory grows only with the largest value seen (≈ 1.5 KiB per slot below 1 s,
//!   ≈ 4 KiB at 15 min).
//! - [`Buckets`]: cumulative fixed-bound counts for the Prometheus `_bucket` series; the bounds
//!   are the defaults plus every SLO threshold, so dashboards can compute good/total at exactly
//!   the objective's threshold.

use hdrhistogram::Histogram;

/// Length of one percentile slot.
pub const PERCENTILE_PERIOD_SECS: u64 = 6 * 3600;

/// HdrHistogram significant figures (relative precision 10^-2).
pub const SIGFIG: u8 = 2;

/// Default Prometheus bucket bounds in seconds (Lambda durations run from 1 ms to 15 min).
pub const DEFAULT_BOUNDS_SECS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

fn new_hdr() -> Option<Histogram<u32>> {
    Histogram::<u32>::new(SIGFIG).ok()
}

/// Records a duration in ms, rounded up to whole ms (a 0.3 ms duration counts as 1 ms).
fn ms_value(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        ms.ceil() as u64
    } else {
        0
    }
}

/// Records with auto-resize (`saturating_record` clamps instead of resizing); saturates only if
/// the resize itself is impossible.
fn record(h: &mut Histogram<u32>, value: u64, n: u32) {
    if h.record_n(value, n).is_err() {
        h.saturating_record_n(value, n);
    }
}

/// P50/P90/P99 (ms) and the number of samples behind them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Two-slot rotating HdrHistogram.
#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    period: u64,
    cur: Option<Histogram<u32>>,
    prev: Option<Histogram<u32>>,
}

impl Percentiles {
    /// Records `ms` observed at `t_s`. Values older than the previous slot are ignored.
    pub fn record(&mut self, t_s: u64, ms: f64) {
        if let Some(h) = self.slot(t_s / PERCENTILE_PERIOD_SECS) {
            record(h, ms_value(ms), 1);
        }
    }

    /// The histogram of period `p` (rotating the slots forward if `p` is newer), created empty
    /// if needed; `None` when `p` is older than the previous slot.
    fn slot(&mut self, p: u64) -> Option<&mut Histogram<u32>> {
        if self.cur.is_none() && self.prev.is_none() {
            self.period = p;
        }
        if p > self.period {
            self.prev = if p == self.period + 1 {
                self.cur.take()
            } else {
                None
            };
            self.cur = None;
            self.period = p;
        }
        let slot = if p == self.period {
            &mut self.cur
        } else if p + 1 == self.period {
            &mut self.prev
        } else {
            return None;
        };
        if slot.is_none() {
            *slot = new_hdr();
        }
        slot.as_mut()
    }

    /// Adds `other`'s histograms into this one, slot by period (older periods first, so the
    /// slots only rotate forward): the result is what one `Percentiles` that recorded both
    /// sides' samples holds.
    pub fn merge(&mut self, other: &Percentiles) {
        let slots = [
            (other.period.checked_sub(1), &other.prev),
            (Some(other.period), &other.cur),
        ];
        for (p, h) in slots {
            let (Some(p), Some(h)) = (p, h) else { continue };
            if h.is_empty() {
                continue;
            }
            if let Some(o) = self.slot(p) {
                // Bucket by bucket (see `merged`: `Histogram::add` loses counts between
                // auto-resized histograms).
                for v in h.iter_recorded() {
                    record(o, v.value_iterated_to(), v.count_at_value());
                }
            }
        }
    }

    /// The merged current+previous slot as of `now_s` (empty once both are stale).
    pub fn merged(&self, now_s: u64) -> Option<Histogram<u32>> {
        let p = now_s / PERCENTILE_PERIOD_SECS;
        let mut out: Option<Histogram<u32>> = None;
        let mut take = |h: &Option<Histogram<u32>>| {
            if let Some(h) = h {
                match &mut out {
                    None => out = Some(h.clone()),
                    // Re-record bucket by bucket: `Histogram::add` between auto-resized histograms
                    // of different ranges loses counts (hdrhistogram 7.5).
                    Some(o) => {
                        for v in h.iter_recorded() {
                            record(o, v.value_iterated_to(), v.count_at_value());
                        }
                    }
                }
            }
        };
        if self.period + 1 >= p {
            take(&self.cur);
        }
        if self.period >= p {
            take(&self.prev);
        }
        out.filter(|h| !h.is_empty())
    }

    /// P50/P90/P99 of current ∪ previous slot in one pass over both, without merging copies.
    pub fn quantiles(&self, now_s: u64) -> Option<Quantiles> {
        let p = now_s / PERCENTILE_PERIOD_SECS;
        let cur = self.cur.as_ref().filter(|_| self.period + 1 >= p);
        let prev = self.prev.as_ref().filter(|_| self.period >= p);
        let total = cur.map_or(0, |h| h.len()) + prev.map_or(0, |h| h.len());
        if total == 0 {
            return None;
        }
        // Rank of each quantile, as HdrHistogram's `value_at_quantile` counts it.
        let rank = |q: f64| ((q * total as f64).ceil() as u64).clamp(1, total);
        let targets = [rank(0.50), rank(0.90), rank(0.99)];
        let mut out = [0u64; 3];
        let mut next = 0;
        let mut seen = 0u64;
        // Both histograms share the bucket layout (same precision, lowest value 1), so their
        // recorded values interleave in one sorted sequence.
        let mut a = cur.into_iter().flat_map(|h| h.iter_recorded()).peekable();
        let mut b = prev.into_iter().flat_map(|h| h.iter_recorded()).peekable();
        while next < 3 {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.value_iterated_to() <= y.value_iterated_to(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let v = if take_a { a.next() } else { b.next() };
            let Some(v) = v else { break };
            seen += u64::from(v.count_at_value());
            while next < 3 && seen >= targets[next] {
                out[next] = v.value_iterated_to();
                next += 1;
            }
        }
        Some(Quantiles {
            count: total,
            p50: out[0] as f64,
            p90: out[1] as f64,
            p99: out[2] as f64,
        })
    }

    pub fn heap_bytes(&self) -> usize {
        let one = |h: &Option<Histogram<u32>>| {
            h.as_ref()
                .map_or(0, |h| h.distinct_values() * std::mem::size_of::<u32>())
        };
        one(&self.cur) + one(&self.prev)
    }
}

pub fn quantiles_of(h: &Histogram<u32>) -> Quantiles {
    let q = |x: f64| h.value_at_quantile(x) as f64;
    Quantiles {
        count: h.len(),
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
    }
}

/// Cumulative Prometheus histogram with fixed bounds (seconds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Buckets {
    /// Non-cumulative count per bound; the last entry is `+Inf`.
    counts: Vec<u64>,
    pub sum_secs: f64,
    pub count: u64,
}

impl Buckets {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1],
            sum_secs: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, bounds: &[f64], secs: f64) {
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        let i = bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_secs += secs;
        self.count += 1;
    }

    /// `(le, cumulative count)` per bound, then `+Inf`.
    pub fn cumulative<'a>(
        &'a self,
        bounds: &'a [f64],
    ) -> impl Iterator<Item = (Option<f64>, u64)> + 'a {
        let mut acc = 0u64;
        self.counts.iter().enumerate().map(move |(i, c)| {
            acc += c;
            (bounds.get(i).copied(), acc)
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * 8
    }

    /// Adds `other`'s counts (same bounds: `false` and nothing merged otherwise).
    pub fn merge(&mut self, other: &Buckets) -> bool {
        if self.counts.len() != other.counts.len() {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_secs += other.sum_secs;
        self.count += other.count;
        true
    }

    /// Whether a restored histogram has one count per bound plus `+Inf`.
    pub fn is_well_formed(&self, bounds: &[f64]) -> bool {
        self.counts.len() == bounds.len() + 1
    }
}

/// The bounds: defaults plus `extra` (seconds), sorted, deduplicated.
pub fn bounds_with(extra: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut b: Vec<f64> = DEFAULT_BOUNDS_SECS
        .iter()
        .copied()
        .chain(extra.into_iter().filter(|x| x.is_finite() && *x > 0.0))
        .collect();
    b.sort_by(f64::total_cmp);
    b.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(values: &mut [u64], q: f64) -> u64 {
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    proptest! {
        /// Merging two slots equals recording everything in one; the P99 is the brute-force P99
        /// within HdrHistogram's stated precision (2 significant figures: 1 % of the value, and
        /// the 1 ms unit).
        #[test]
        fn merge_and_precision(
            a in proptest::collection::vec(1u64..900_000, 1..400),
            b in proptest::collection::vec(1u64..900_000, 0..400),
        ) {
            let mut p = Percentiles::default();
            let t0 = 100 * PERCENTILE_PERIOD_SECS;
            for v in &a { p.record(t0, *v as f64); }
            for v in &b { p.record(t0 + PERCENTILE_PERIOD_SECS, *v as f64); }
            let merged = p.merged(t0 + PERCENTILE_PERIOD_SECS).unwrap();
            let mut one = Histogram::<u32>::new(SIGFIG).unwrap();
            let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
            for v in &all { one.record(*v).unwrap(); }
            prop_assert_eq!(merged.len(), one.len());
            let q = p.quantiles(t0 + PERCENTILE_PERIOD_SECS).unwrap();
            prop_assert_eq!(q, quantiles_of(&one));
            for q in [0.5, 0.9, 0.99] {
                prop_assert_eq!(merged.value_at_quantile(q), one.value_at_quantile(q));
                let exact = brute(&mut all, q) as f64;
                let got = merged.value_at_quantile(q) as f64;
                prop_assert!((got - exact).abs() <= exact * 0.01 + 1.0,
                    "q={} got={} exact={}", q, got, exact);
            }
        }
    }

    #[test]
    fn slots_expire() {
        let mut p = Percentiles::default();
        let t0 = 10 * PERCENTILE_PERIOD_SECS;
        p.record(t0, 120.0);
        assert_eq!(p.quantiles(t0).unwrap().count, 1);
        assert_eq!(p.quantiles(t0 + PERCENTILE_PERIOD_SECS).unwrap().count, 1);
        assert!(p.quantiles(t0 + 2 * PERCENTILE_PERIOD_SECS).is_none());
    }

    #[test]
    fn prometheus_buckets_are_cumulative_and_inclusive() {
        let bounds = bounds_with([0.5, 0.3]);
        assert!(bounds.contains(&0.3));
        let mut b = Buckets::new(&bounds);
        for s in [0.3, 0.3001, 1.0, 2000.0] {
            b.observe(&bounds, s);
        }
        let cum: Vec<_> = b.cumulative(&bounds).collect();
        let at = |le: f64| cum.iter().find(|(b, _)| *b == Some(le)).unwrap().1;
        assert_eq!(at(0.3), 1, "le is inclusive");
        assert_eq!(at(0.5), 2);
        assert_eq!(at(1.0), 3);
        assert_eq!(cum.last().unwrap(), &(None, 4));
        assert_eq!(b.count, 4);
    }
}
