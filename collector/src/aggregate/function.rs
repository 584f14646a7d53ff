//! Everything kept for one function: exact windowed counts for the SLIs ([`Series`]), cumulative
//! counters and fixed-bound histograms for Prometheus, HdrHistograms for percentiles, gauges.
//!
//! The SLI counters are exact event counts decided at ingest against every distinct threshold
//! of the SLO spec ([`Layout`]): a cold start is good for threshold `x` when its init duration is
//! ≤ `x`; an invocation is within timeout-budget fraction `f` when its duration is ≤ `f × timeout`.

use std::collections::BTreeMap;

use super::{
    InitKind, Outcome, PlatformCounter,
    hist::{Buckets, Percentiles, bounds_with},
    series::{Series, Window},
};

/// Which thresholds are counted at ingest; derived once from the SLO spec.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// Distinct cold-start thresholds (ms), ascending.
    pub cold_thresholds_ms: Vec<f64>,
    /// Distinct timeout-budget fractions, ascending.
    pub timeout_fractions: Vec<f64>,
    /// Prometheus bounds (s) for init duration: defaults + every cold-start threshold.
    pub init_bounds: Vec<f64>,
    /// Prometheus bounds (s) for invocation duration.
    pub invocation_bounds: Vec<f64>,
}

impl Layout {
    pub fn new(cold_thresholds_ms: &[f64], timeout_fractions: &[f64]) -> Self {
        let dedup = |v: &[f64]| {
            let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
            v
        };
        let cold = dedup(cold_thresholds_ms);
        Self {
            init_bounds: bounds_with(cold.iter().map(|ms| ms / 1000.0)),
            invocation_bounds: bounds_with(cold.iter().map(|ms| ms / 1000.0)),
            cold_thresholds_ms: cold,
            timeout_fractions: dedup(timeout_fractions),
        }
    }

    pub fn cold_index(&self, threshold_ms: f64) -> Option<usize> {
        self.cold_thresholds_ms
            .iter()
            .position(|t| (t - threshold_ms).abs() < 1e-9)
    }

    pub fn fraction_index(&self, fraction: f64) -> Option<usize> {
        self.timeout_fractions
            .iter()
            .position(|f| (f - fraction).abs() < 1e-9)
    }

    /// Invocation series slots: 4 outcomes, timeout-budget total, one per fraction.
    pub fn invocation_stride(&self) -> usize {
        INV_TB_GOOD + self.timeout_fractions.len()
    }

    /// Cold-start series slots: total, one good count per threshold.
    pub fn cold_stride(&self) -> usize {
        1 + self.cold_thresholds_ms.len()
    }
}

/// Invocation series: outcomes occupy slots 0..4 in [`Outcome::ALL`] order.
pub const INV_TB_TOTAL: usize = 4;
pub const INV_TB_GOOD: usize = 5;
/// Cold-start series: slot 0 is the total, then good per threshold.
pub const COLD_TOTAL: usize = 0;

/// Bounded side maps (labels that arrive from the wire).
pub const MAX_LABEL_VALUES: usize = 32;
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_LEN: usize = 256;

/// Checkpoints (`crate::checkpoint`) keep everything but the HdrHistograms, which are rebuilt
/// from new samples after a restart (`#[serde(skip)]`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ColdStarts {
    pub series: Series,
    pub total: u64,
    pub buckets: Buckets,
    #[serde(skip)]
    pub percentiles: Percentiles,
}

/// Percentiles as of the last [`FunctionState::refresh_percentiles`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PercentileCache {
    /// `samples` when computed (`None`: never).
    pub version: Option<u64>,
    pub period: u64,
    pub cold: Vec<(InitKind, super::hist::Quantiles)>,
    pub invocation: Option<super::hist::Quantiles>,
}

/// Serialisable for checkpoints (`crate::checkpoint`), without the HdrHistograms and their
/// percentile cache (`#[serde(skip)]`: rebuilt from new samples after a restart).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FunctionState {
    /// Resource attributes from the latest report (for SLO selectors), bounded.
    pub tags: BTreeMap<String, String>,
    pub invocations: Series,
    /// Per init type seen, sorted by kind (a `Vec`: at most five entries, and a `BTreeMap` node
    /// would reserve room for eleven).
    pub cold: Vec<(InitKind, ColdStarts)>,
    pub platform: Option<Series>,
    pub outcome_totals: [u64; 4],
    pub timeout_budget_totals: [u64; 2],
    pub billed_gb_seconds: f64,
    #[serde(deserialize_with = "platform_totals")]
    pub platform_totals: [u64; PlatformCounter::COUNT],
    pub dlq_by_queue: BTreeMap<String, u64>,
    pub duration_buckets: Buckets,
    #[serde(skip)]
    pub duration_percentiles: Percentiles,
    pub timeout_ms: Option<f64>,
    pub memory_mb: Option<f64>,
    /// `(hour index, max MB)` for the current and previous hour.
    pub max_memory: [(u64, f64); 2],
    pub first_seen_s: u64,
    pub last_seen_s: u64,
    pub extension_dropped: BTreeMap<String, f64>,
    pub extension_retries: f64,
    /// Last cumulative value per `(instance, reason)` for cumulative self-metric counters.
    #[serde(with = "crate::checkpoint::pairs")]
    pub cumulative_seen: BTreeMap<(String, String), f64>,
    /// Durations recorded so far (invalidates [`PercentileCache`]).
    pub samples: u64,
    #[serde(skip)]
    pub percentiles: PercentileCache,
}

/// What one invocation span says.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub t_s: u64,
    pub outcome: Outcome,
    pub duration_ms: f64,
    pub billed_ms: Option<f64>,
    pub memory_mb: Option<f64>,
    pub max_memory_mb: Option<f64>,
    pub timeout_ms: Option<f64>,
    /// `faas.invocation_id` (the Lambda request id): repeated ids are retries (`crate::cost`).
    pub request_id: Option<String>,
    /// Fingerprint of the span's trace id + span id (`cost::retry::span_fingerprint`): a span
    /// delivered twice is a duplicate, not a retry.
    pub span_fingerprint: Option<u64>,
}

impl FunctionState {
    pub fn new(layout: &Layout, now_s: u64) -> Self {
        Self {
            tags: BTreeMap::new(),
            invocations: Series::new(layout.invocation_stride()),
            cold: Vec::new(),
            platform: None,
            outcome_totals: [0; 4],
            timeout_budget_totals: [0; 2],
            billed_gb_seconds: 0.0,
            platform_totals: [0; PlatformCounter::COUNT],
            dlq_by_queue: BTreeMap::new(),
            duration_buckets: Buckets::new(&layout.invocation_bounds),
            duration_percentiles: Percentiles::default(),
            timeout_ms: None,
            memory_mb: None,
            max_memory: [(0, 0.0); 2],
            first_seen_s: now_s,
            last_seen_s: 0,
            extension_dropped: BTreeMap::new(),
            extension_retries: 0.0,
            cumulative_seen: BTreeMap::new(),
            samples: 0,
            percentiles: PercentileCache::default(),
        }
    }

    /// Recomputes [`Self::percentiles`] if samples arrived or the period rolled over since.
    /// Walking HdrHistograms costs ~40 µs per function, so it is done only when needed.
    pub fn refresh_percentiles(&mut self, now_s: u64) -> bool {
        let period = now_s / super::hist::PERCENTILE_PERIOD_SECS;
        if self.percentiles.version == Some(self.samples) && self.percentiles.period == period {
            return false;
        }
        self.percentiles = PercentileCache {
            version: Some(self.samples),
            period,
            cold: self
                .cold
                .iter()
                .filter_map(|(k, c)| c.percentiles.quantiles(now_s).map(|q| (*k, q)))
                .collect(),
            invocation: self.duration_percentiles.quantiles(now_s),
        };
        true
    }

    /// Replaces the tags with `tags` (bounded in count and length).
    pub fn set_tags<'a>(&mut self, tags: impl Iterator<Item = (&'a str, &'a str)>) {
        self.tags.clear();
        for (k, v) in tags.take(MAX_TAGS) {
            if k.len() <= MAX_TAG_LEN && v.len() <= MAX_TAG_LEN {
                self.tags.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    fn seen(&mut self, t_s: u64) {
        self.last_seen_s = self.last_seen_s.max(t_s);
    }

    /// Records one invocation. Returns `false` if it was too old for the windows (still counted
    /// in the cumulative totals).
    pub fn record_invocation(&mut self, layout: &Layout, inv: &Invocation) -> bool {
        self.seen(inv.t_s);
        let o = inv.outcome.index();
        self.outcome_totals[o] += 1;
        let mut in_window = self.invocations.add(inv.t_s, o, 1);
        if let Some(timeout) = inv.timeout_ms.filter(|t| *t > 0.0) {
            self.timeout_ms = Some(timeout);
            in_window &= self.invocations.add(inv.t_s, INV_TB_TOTAL, 1);
            for (i, f) in layout.timeout_fractions.iter().enumerate() {
                if inv.duration_ms <= f * timeout {
                    self.invocations.add(inv.t_s, INV_TB_GOOD + i, 1);
                }
            }
            // The Prometheus counter uses the first (default 0.8) fraction.
            let f = layout.timeout_fractions.first().copied().unwrap_or(0.8);
            let within = usize::from(inv.duration_ms > f * timeout);
            self.timeout_budget_totals[within] += 1;
        }
        self.duration_buckets
            .observe(&layout.invocation_bounds, inv.duration_ms / 1000.0);
        self.duration_percentiles.record(inv.t_s, inv.duration_ms);
        self.samples += 1;
        if let Some(m) = inv.memory_mb.filter(|m| *m > 0.0) {
            self.memory_mb = Some(m);
            if let Some(b) = inv.billed_ms.filter(|b| *b >= 0.0) {
                self.billed_gb_seconds += (m / 1024.0) * (b / 1000.0);
            }
        }
        if let Some(mm) = inv.max_memory_mb.filter(|m| m.is_finite()) {
            let hour = inv.t_s / 3600;
            if hour > self.max_memory[0].0 {
                self.max_memory[1] = if hour == self.max_memory[0].0 + 1 {
                    self.max_memory[0]
                } else {
                    (0, 0.0)
                };
                self.max_memory[0] = (hour, 0.0);
            }
            if hour == self.max_memory[0].0 {
                self.max_memory[0].1 = self.max_memory[0].1.max(mm);
            } else if hour == self.max_memory[1].0 {
                self.max_memory[1].1 = self.max_memory[1].1.max(mm);
            }
        }
        in_window
    }

    /// Records one initialisation (a cold start).
    pub fn record_init(
        &mut self,
        layout: &Layout,
        t_s: u64,
        kind: InitKind,
        duration_ms: f64,
    ) -> bool {
        self.seen(t_s);
        let i = match self.cold.binary_search_by(|(k, _)| k.cmp(&kind)) {
            Ok(i) => i,
            Err(i) => {
                let fresh = ColdStarts {
                    series: Series::new(layout.cold_stride()),
                    total: 0,
                    buckets: Buckets::new(&layout.init_bounds),
                    percentiles: Percentiles::default(),
                };
                self.cold.insert(i, (kind, fresh));
                i
            }
        };
        let cs = &mut self.cold[i].1;
        cs.total += 1;
        let in_window = cs.series.add(t_s, COLD_TOTAL, 1);
        for (i, th) in layout.cold_thresholds_ms.iter().enumerate() {
            if duration_ms <= *th {
                cs.series.add(t_s, 1 + i, 1);
            }
        }
        cs.buckets
            .observe(&layout.init_bounds, duration_ms / 1000.0);
        cs.percentiles.record(t_s, duration_ms);
        self.samples += 1;
        in_window
    }

    /// Records a platform count (`value` events over a period ending at `t_s`).
    pub fn record_platform(
        &mut self,
        t_s: u64,
        counter: PlatformCounter,
        value: u64,
        queue: Option<&str>,
    ) -> bool {
        self.platform_totals[counter as usize] += value;
        if let Some(q) = queue
            && (self.dlq_by_queue.contains_key(q) || self.dlq_by_queue.len() < MAX_LABEL_VALUES)
        {
            *self.dlq_by_queue.entry(q.to_owned()).or_default() += value;
        }
        let series = self
            .platform
            .get_or_insert_with(|| Series::new(PlatformCounter::COUNT));
        let n = u32::try_from(value).unwrap_or(u32::MAX);
        series.add(t_s, counter as usize, n)
    }

    /// Records an extension self-metric point (delta or cumulative).
    pub fn record_extension(
        &mut self,
        retries: bool,
        reason: &str,
        instance: &str,
        value: f64,
        cumulative: bool,
    ) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let delta = if cumulative {
            let key = (instance.to_owned(), reason.to_owned());
            let last = self.cumulative_seen.get(&key).copied();
            if last.is_none() && self.cumulative_seen.len() >= MAX_LABEL_VALUES * 8 {
                // Bounded: forget the oldest-sorted instance rather than grow.
                if let Some(k) = self.cumulative_seen.keys().next().cloned() {
                    self.cumulative_seen.remove(&k);
                }
            }
            self.cumulative_seen.insert(key, value);
            match last {
                Some(l) if value >= l => value - l,
                _ => value,
            }
        } else {
            value
        };
        if retries {
            self.extension_retries += delta;
        } else if self.extension_dropped.contains_key(reason)
            || self.extension_dropped.len() < MAX_LABEL_VALUES
        {
            *self.extension_dropped.entry(reason.to_owned()).or_default() += delta;
        }
    }

    /// Merges `other` — the same function's state counted by another task (an adopted orphan
    /// checkpoint, `crate::checkpoint`) against the same layout — into this one. Pure. Counts
    /// add: every series bucket by bucket at its time ([`Series::merge`]), the Prometheus
    /// buckets, the totals, billed GB-seconds, DLQ and extension counters; HdrHistograms add
    /// slot by period; max memory is the max per hour. Gauges and tags (timeout, memory size,
    /// resource tags) are this state's, `other`'s only where this one has none. Afterwards
    /// every window equals the window of one state that recorded both sides' events.
    pub fn merge(&mut self, other: FunctionState) {
        self.invocations.merge(&other.invocations);
        for (kind, theirs) in other.cold {
            match self.cold.binary_search_by(|(k, _)| k.cmp(&kind)) {
                Ok(i) => {
                    let cs = &mut self.cold[i].1;
                    cs.series.merge(&theirs.series);
                    cs.total += theirs.total;
                    cs.buckets.merge(&theirs.buckets);
                    cs.percentiles.merge(&theirs.percentiles);
                }
                Err(i) => self.cold.insert(i, (kind, theirs)),
            }
        }
        match (&mut self.platform, other.platform) {
            (Some(mine), Some(theirs)) => {
                mine.merge(&theirs);
            }
            (None, theirs) => self.platform = theirs,
            (Some(_), None) => {}
        }
        for (a, b) in self.outcome_totals.iter_mut().zip(other.outcome_totals) {
            *a += b;
        }
        for (a, b) in self
            .timeout_budget_totals
            .iter_mut()
            .zip(other.timeout_budget_totals)
        {
            *a += b;
        }
        self.billed_gb_seconds += other.billed_gb_seconds;
        for (a, b) in self.platform_totals.iter_mut().zip(other.platform_totals) {
            *a += b;
        }
        for (q, n) in other.dlq_by_queue {
            if self.dlq_by_queue.contains_key(&q) || self.dlq_by_queue.len() < MAX_LABEL_VALUES {
                *self.dlq_by_queue.entry(q).or_default() += n;
            }
        }
        self.duration_buckets.merge(&other.duration_buckets);
        self.duration_percentiles.merge(&other.duration_percentiles);
        if self.tags.is_empty() {
            self.tags = other.tags;
        }
        self.timeout_ms = self.timeout_ms.or(other.timeout_ms);
        self.memory_mb = self.memory_mb.or(other.memory_mb);
        // The two newest hours of both sides, max per hour.
        let mut hours: Vec<(u64, f64)> = Vec::with_capacity(4);
        for (h, mb) in self.max_memory.into_iter().chain(other.max_memory) {
            if h == 0 && mb == 0.0 {
                continue;
            }
            match hours.iter_mut().find(|(x, _)| *x == h) {
                Some((_, m)) => *m = m.max(mb),
                None => hours.push((h, mb)),
            }
        }
        hours.sort_by_key(|(h, _)| std::cmp::Reverse(*h));
        let newest = hours.first().copied().unwrap_or((0, 0.0));
        let previous = hours
            .get(1)
            .copied()
            .filter(|(h, _)| *h + 1 == newest.0)
            .unwrap_or((0, 0.0));
        self.max_memory = [newest, previous];
        self.first_seen_s = self.first_seen_s.min(other.first_seen_s);
        self.last_seen_s = self.last_seen_s.max(other.last_seen_s);
        for (reason, v) in other.extension_dropped {
            if self.extension_dropped.contains_key(&reason)
                || self.extension_dropped.len() < MAX_LABEL_VALUES
            {
                *self.extension_dropped.entry(reason).or_default() += v;
            }
        }
        self.extension_retries += other.extension_retries;
        for (k, v) in other.cumulative_seen {
            if self.cumulative_seen.len() < MAX_LABEL_VALUES * 8 {
                self.cumulative_seen.entry(k).or_insert(v);
            }
        }
        self.samples += other.samples;
        self.percentiles = PercentileCache::default();
    }

    /// Brings a state restored from an older checkpoint up to today's counters: the platform
    /// series gains the counters appended since (at zero). Called before [`Self::is_well_formed`].
    pub fn upgrade(&mut self) {
        if let Some(p) = &mut self.platform {
            p.widen(PlatformCounter::COUNT);
        }
    }

    /// Whether a restored state has the shapes `layout` gives a fresh one (series strides,
    /// bucket counts), so nothing indexes out of bounds after a restore.
    pub fn is_well_formed(&self, layout: &Layout) -> bool {
        self.invocations.is_well_formed(layout.invocation_stride())
            && self
                .platform
                .as_ref()
                .is_none_or(|p| p.is_well_formed(PlatformCounter::COUNT))
            && self
                .duration_buckets
                .is_well_formed(&layout.invocation_bounds)
            && self.cold.iter().all(|(_, c)| {
                c.series.is_well_formed(layout.cold_stride())
                    && c.buckets.is_well_formed(&layout.init_bounds)
            })
            && self.cold.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Whether any of this state's series was converted from checkpoint format 1 when read
    /// ([`Series::converted`]).
    pub fn converted_rings(&self) -> bool {
        self.invocations.converted()
            || self.platform.as_ref().is_some_and(Series::converted)
            || self.cold.iter().any(|(_, c)| c.series.converted())
    }

    /// The cold starts of one init type, if any were seen.
    pub fn cold_starts(&self, kind: InitKind) -> Option<&ColdStarts> {
        self.cold.iter().find(|(k, _)| *k == kind).map(|(_, c)| c)
    }

    /// Max memory used (MB) over the last hour (current and previous hour slots).
    pub fn max_memory_last_hour(&self, now_s: u64) -> Option<f64> {
        let hour = now_s / 3600;
        self.max_memory
            .iter()
            .filter(|(h, v)| *v > 0.0 && (*h == hour || *h + 1 == hour))
            .map(|(_, v)| *v)
            .reduce(f64::max)
    }

    /// Invocation series summed over `window` (stride = [`Layout::invocation_stride`]).
    pub fn invocation_counts(&self, window: Window, now_s: u64) -> Vec<u64> {
        let mut out = vec![0; self.invocations.stride()];
        self.invocations.sum_into(window, now_s, &mut out);
        out
    }

    /// Heap bytes held by this function's state beyond its inline size (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        let pct = self.percentiles.cold.capacity()
            * std::mem::size_of::<(InitKind, super::hist::Quantiles)>();
        let tags: usize = pct
            + self
                .tags
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity() + 48)
                .sum::<usize>();
        let cold: usize = self.cold.capacity() * std::mem::size_of::<(InitKind, ColdStarts)>()
            + self
                .cold
                .iter()
                .map(|(_, c)| {
                    c.series.heap_bytes() + c.buckets.heap_bytes() + c.percentiles.heap_bytes()
                })
                .sum::<usize>();
        tags + cold
            + self.invocations.heap_bytes()
            + self.platform.as_ref().map_or(0, Series::heap_bytes)
            + self.duration_buckets.heap_bytes()
            + self.duration_percentiles.heap_bytes()
            + self
                .dlq_by_queue
                .keys()
                .map(|k| k.capacity() + 40)
                .sum::<usize>()
            + self
                .extension_dropped
                .keys()
                .map(|k| k.capacity() + 40)
                .sum::<usize>()
            + std::mem::size_of::<Self>()
    }
}

/// Reads `platform_totals` written with fewer counters (before some were appended), the missing
/// ones at zero; more counters than known is an error.
fn platform_totals<'de, D>(d: D) -> Result<[u64; PlatformCounter::COUNT], D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let v = Vec::<u64>::deserialize(d)?;
    if v.len() > PlatformCounter::COUNT {
        return Err(serde::de::Error::invalid_length(
            v.len(),
            &"at most PlatformCounter::COUNT platform totals",
        ));
    }
    let mut out = [0; PlatformCounter::COUNT];
    out[..v.len()].copy_from_slice(&v);
    Ok(out)
}
