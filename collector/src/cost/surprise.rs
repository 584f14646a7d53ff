//! Cost surprises: the projection passes the budget, or invocations run far above the usual
//! rate for this hour of the week.
//!
//! Consumes, per function, invocation counts ([`SurpriseDetector::observe`]) and, at each
//! evaluation, the current 30-day cost projection ([`SurpriseDetector::evaluate`]), always with
//! an injected `now` (unix seconds). Produces a [`SurpriseStatus`] (for `/api/v1`, alerting and
//! [`SurpriseStatus::samples`]).
//!
//! **Budget warm-up.** The projection extrapolates the observed window; the budget may alert
//! only once the function has been observed `budget_warmup_secs` (default 1 h) — before, the
//! status reports `budget_warming_up` and the projection, but no alert. The caller passes what
//! the budget is compared with ([`BudgetInput`]); rows without one (a function name's other
//! versions) never judge the budget.
//!
//! **Baseline.** 168 hour-of-week slots (UTC, slot 0 = Monday 00:00), each keeping the invocation
//! count of that hour in the last `baseline_weeks` weeks (default 4); the baseline is their
//! **median**, so one earlier spike (or outage) in the same slot does not move it, which an EWMA
//! would. A slot needs `min_baseline_weeks` (default 1) complete hours before it can judge.
//! Hours with no observation at all are recorded as zero traffic. Invocations dated before the
//! current hour arrive too late for the baseline and are counted in `late_dropped`.
//!
//! **Restarts.** [`SurpriseDetector::save`] / [`SurpriseDetector::restore`] carry the baseline,
//! the current hour's count, the per-minute buckets and the firing flags through a checkpoint
//! (`cost::stage::SavedFunctionCost`), so a restarted collector neither re-learns (no week
//! without rate alerts) nor re-fires. The saved form lists only the known counts of each slot,
//! oldest first, so it loads under another `baseline_weeks` (the newest weeks are kept). Size:
//! at most 168 × `baseline_weeks` counts + 60 minute buckets: ≤ ~4 KB of JSON per function at
//! the defaults (≤ ~22 KB at `MAX_BASELINE_WEEKS`), nothing for slots never observed.
//!
//! **Rate test.** The last `window_minutes` (default 5) of per-minute counts, against
//! `rate_multiple` (default 3) × the slot's baseline scaled to the window, and never below
//! `min_window_invocations` (default 30) so that low-traffic functions do not page on noise.
//! Fires above the threshold, resolves below `resolve_fraction` (default 0.75) of it.
//!
//! **Memory bound** per function: 168 × `baseline_weeks` u32 counts plus 60 per-minute buckets:
//! about 3.4 KB at the defaults, independent of traffic. Nothing grows; old weeks are overwritten.

use super::MetricSample;
use super::names;

/// Configuration (per function or fleet-wide).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurpriseConfig {
    /// Monthly budget, USD; `None` = no budget alert.
    pub budget_usd: Option<f64>,
    pub rate_multiple: f64,
    pub window_minutes: u32,
    pub min_window_invocations: u64,
    pub baseline_weeks: usize,
    pub min_baseline_weeks: usize,
    pub resolve_fraction: f64,
    /// Seconds a function must have been observed before its budget projection may alert
    /// (default 3,600): before that the projection extrapolates minutes to 30 days (a burst in
    /// the first minute is multiplied by 43,200) and is reported as warming up.
    pub budget_warmup_secs: u64,
}

impl Default for SurpriseConfig {
    fn default() -> Self {
        SurpriseConfig {
            budget_usd: None,
            rate_multiple: 3.0,
            window_minutes: 5,
            min_window_invocations: 30,
            baseline_weeks: 4,
            min_baseline_weeks: 1,
            resolve_fraction: 0.75,
            budget_warmup_secs: 3600,
        }
    }
}

/// Maximum weeks kept per slot (bounds `baseline_weeks`).
pub const MAX_BASELINE_WEEKS: usize = 12;
const SLOTS: usize = 168;
const MINUTES: usize = 60;
const NO_DATA: u32 = u32::MAX;

/// Hour-of-week slot of a unix time: 0 = Monday 00:00–01:00 UTC (1970-01-01 was a Thursday).
pub fn hour_of_week(unix_secs: u64) -> usize {
    ((unix_secs / 3600 + 72) % SLOTS as u64) as usize
}

/// Per-function detector state.
#[derive(Debug, Clone)]
pub struct SurpriseDetector {
    cfg: SurpriseConfig,
    /// `weeks[slot * weeks_len + i]`: counts of that hour in recent weeks (ring per slot).
    weeks: Vec<u32>,
    weeks_len: usize,
    next: Vec<u8>,
    minute_count: [u32; MINUTES],
    minute_stamp: [u64; MINUTES],
    /// Absolute hour being counted, and its count so far.
    hour: Option<u64>,
    hour_count: u64,
    rate_firing: bool,
    budget_firing: bool,
    /// Invocations dated before the current hour (already folded into the baseline): ignored.
    pub late_dropped: u64,
}

/// The state a checkpoint keeps of one detector (every field defaulted, so a checkpoint
/// written before it existed loads as "nothing learnt yet").
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SavedSurprise {
    /// `(slot, known hourly counts oldest first)` for every slot with at least one known week.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<(u8, Vec<u32>)>,
    /// Absolute hour (unix s / 3600) being counted, and its count so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub hour_count: u64,
    /// `(absolute minute, count)` of the per-minute buckets the rate window can still read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub minutes: Vec<(u64, u32)>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rate_firing: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub budget_firing: bool,
}

impl SavedSurprise {
    pub fn is_empty(&self) -> bool {
        *self == SavedSurprise::default()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a function's budget is compared with at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetInput {
    /// The function name's 30-day projection (summed over its versions), USD: reported.
    pub projected_30d_usd: f64,
    /// What the budget is compared with, USD: the same sum, but a version still inside the
    /// warm-up contributes only its standing charge (its extrapolation is not yet trusted).
    pub judged_30d_usd: f64,
    /// Seconds since the function was first seen (its oldest version): the span the
    /// projection extrapolates from, at most.
    pub observed_secs: u64,
}

/// What one evaluation found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SurpriseStatus {
    pub hour_of_week: usize,
    pub window_minutes: u32,
    pub window_invocations: u64,
    /// Window count scaled to an hour.
    pub invocations_per_hour: f64,
    /// Median of this slot's recent weeks; `None` until `min_baseline_weeks` are known.
    pub baseline_per_hour: Option<f64>,
    /// `invocations_per_hour / baseline_per_hour` (None without baseline or with a zero one).
    pub rate_ratio: Option<f64>,
    pub rate_threshold_window: Option<f64>,
    pub rate_alert: bool,
    /// The function name's budget, on the row that carries its budget check (one row per
    /// function name, see `cost::stage`); `None` on the name's other rows.
    pub budget_usd: Option<f64>,
    /// This row's own 30-day projection.
    pub projected_30d_usd: Option<f64>,
    /// What the budget is compared with: the function name's projection (summed over its
    /// versions), on the row that carries the budget check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_projected_30d_usd: Option<f64>,
    /// The function has been observed for less than `budget_warmup_secs`: its projection is
    /// reported but may not alert yet.
    pub budget_warming_up: bool,
    pub budget_alert: bool,
    /// Alerts that started firing at this evaluation (`"rate"`, `"budget"`).
    pub started: Vec<&'static str>,
}

impl SurpriseDetector {
    pub fn new(mut cfg: SurpriseConfig) -> Self {
        cfg.baseline_weeks = cfg.baseline_weeks.clamp(1, MAX_BASELINE_WEEKS);
        cfg.min_baseline_weeks = cfg.min_baseline_weeks.clamp(1, cfg.baseline_weeks);
        cfg.window_minutes = cfg.window_minutes.clamp(1, MINUTES as u32);
        let weeks_len = cfg.baseline_weeks;
        SurpriseDetector {
            cfg,
            weeks: vec![NO_DATA; SLOTS * weeks_len],
            weeks_len,
            next: vec![0; SLOTS],
            minute_count: [0; MINUTES],
            minute_stamp: [u64::MAX; MINUTES],
            hour: None,
            hour_count: 0,
            rate_firing: false,
            budget_firing: false,
            late_dropped: 0,
        }
    }

    /// Sets (or clears) this function's monthly budget.
    pub fn set_budget(&mut self, budget_usd: Option<f64>) {
        self.cfg.budget_usd = budget_usd;
    }

    pub fn config(&self) -> &SurpriseConfig {
        &self.cfg
    }

    /// The state a checkpoint keeps (see the module doc for its size).
    pub fn save(&self) -> SavedSurprise {
        let slots = (0..SLOTS)
            .filter_map(|slot| {
                let start = slot * self.weeks_len;
                let next = usize::from(self.next[slot]);
                let known: Vec<u32> = (0..self.weeks_len)
                    .map(|i| self.weeks[start + (next + i) % self.weeks_len])
                    .filter(|c| *c != NO_DATA)
                    .collect();
                (!known.is_empty()).then_some((slot as u8, known))
            })
            .collect();
        // Only the buckets the rate window can still read.
        let newest = self
            .minute_stamp
            .iter()
            .filter(|m| **m != u64::MAX)
            .max()
            .copied()
            .unwrap_or(0);
        let oldest = newest.saturating_sub(u64::from(self.cfg.window_minutes));
        let mut minutes: Vec<(u64, u32)> = self
            .minute_stamp
            .iter()
            .zip(self.minute_count.iter())
            .filter(|(stamp, count)| **stamp != u64::MAX && **stamp > oldest && **count > 0)
            .map(|(stamp, count)| (*stamp, *count))
            .collect();
        minutes.sort_unstable();
        SavedSurprise {
            slots,
            hour: self.hour,
            hour_count: self.hour_count,
            minutes,
            rate_firing: self.rate_firing,
            budget_firing: self.budget_firing,
        }
    }

    /// Loads a saved state into this detector (its configuration stays). Slots beyond 167 are
    /// ignored; a slot with more known weeks than `baseline_weeks` keeps the newest.
    pub fn restore(&mut self, saved: SavedSurprise) {
        for (slot, counts) in saved.slots {
            let slot = usize::from(slot);
            if slot >= SLOTS {
                continue;
            }
            for c in counts.into_iter().filter(|c| *c != NO_DATA) {
                let pos = usize::from(self.next[slot]);
                self.weeks[slot * self.weeks_len + pos] = c;
                self.next[slot] = ((pos + 1) % self.weeks_len) as u8;
            }
        }
        self.hour = saved.hour;
        self.hour_count = saved.hour_count;
        for (minute, count) in saved.minutes {
            let i = (minute % MINUTES as u64) as usize;
            if self.minute_stamp[i] == u64::MAX || self.minute_stamp[i] < minute {
                self.minute_stamp[i] = minute;
                self.minute_count[i] = count;
            }
        }
        self.rate_firing = saved.rate_firing;
        self.budget_firing = saved.budget_firing;
    }

    /// Counts `invocations` at `now`. Observations older than the current hour are ignored
    /// (the hour they belong to is already folded into the baseline).
    pub fn observe(&mut self, now: u64, invocations: u64) {
        self.advance(now);
        if self.hour != Some(now / 3600) {
            self.late_dropped = self.late_dropped.saturating_add(invocations);
            return;
        }
        let minute = now / 60;
        let i = (minute % MINUTES as u64) as usize;
        if self.minute_stamp[i] != minute {
            self.minute_stamp[i] = minute;
            self.minute_count[i] = 0;
        }
        let add = u32::try_from(invocations).unwrap_or(u32::MAX);
        self.minute_count[i] = self.minute_count[i].saturating_add(add);
        self.hour_count = self.hour_count.saturating_add(invocations);
    }

    /// Folds finished hours into the baseline (zero traffic for hours never observed, at most
    /// one week's worth).
    fn advance(&mut self, now: u64) {
        let hour = now / 3600;
        match self.hour {
            None => {
                self.hour = Some(hour);
                self.hour_count = 0;
            }
            Some(h) if hour > h => {
                self.record_hour(h, self.hour_count);
                let gap = (hour - h - 1).min(SLOTS as u64);
                for k in 0..gap {
                    self.record_hour(hour - gap + k, 0);
                }
                self.hour = Some(hour);
                self.hour_count = 0;
            }
            Some(_) => {}
        }
    }

    fn record_hour(&mut self, hour: u64, count: u64) {
        let slot = hour_of_week(hour * 3600);
        let pos = usize::from(self.next[slot]);
        self.weeks[slot * self.weeks_len + pos] = u32::try_from(count).unwrap_or(NO_DATA - 1);
        self.next[slot] = ((pos + 1) % self.weeks_len) as u8;
    }

    /// Median count of this slot over the weeks known, if enough are.
    pub fn baseline_per_hour(&self, slot: usize) -> Option<f64> {
        let start = slot * self.weeks_len;
        let mut known: Vec<u32> = self.weeks[start..start + self.weeks_len]
            .iter()
            .copied()
            .filter(|c| *c != NO_DATA)
            .collect();
        if known.len() < self.cfg.min_baseline_weeks {
            return None;
        }
        known.sort_unstable();
        let n = known.len();
        Some(if n % 2 == 1 {
            f64::from(known[n / 2])
        } else {
            (f64::from(known[n / 2 - 1]) + f64::from(known[n / 2])) / 2.0
        })
    }

    /// Invocations in the last `window_minutes` minutes up to and including `now`'s minute.
    fn window_count(&self, now: u64) -> u64 {
        let minute = now / 60;
        (0..u64::from(self.cfg.window_minutes))
            .filter_map(|back| minute.checked_sub(back))
            .map(|m| {
                let i = (m % MINUTES as u64) as usize;
                if self.minute_stamp[i] == m {
                    u64::from(self.minute_count[i])
                } else {
                    0
                }
            })
            .sum()
    }

    /// Evaluates both tests at `now`; `projected_30d_usd` is this row's current 30-day
    /// projection (from [`super::model::project_30d`]), if known; `budget` what the budget is
    /// compared with (`None`: no budget check on this row).
    pub fn evaluate(
        &mut self,
        now: u64,
        projected_30d_usd: Option<f64>,
        budget: Option<BudgetInput>,
    ) -> SurpriseStatus {
        self.advance(now);
        let slot = hour_of_week(now);
        let window = self.window_count(now);
        let window_minutes = self.cfg.window_minutes;
        let per_hour = window as f64 * 60.0 / f64::from(window_minutes);
        let baseline = self.baseline_per_hour(slot);
        let threshold = baseline.map(|b| {
            (self.cfg.rate_multiple * b * f64::from(window_minutes) / 60.0)
                .max(self.cfg.min_window_invocations as f64)
        });
        let mut started = Vec::new();
        let was = self.rate_firing;
        self.rate_firing = match threshold {
            None => false,
            Some(t) if was => window as f64 > t * self.cfg.resolve_fraction,
            Some(t) => window as f64 > t,
        };
        if self.rate_firing && !was {
            started.push("rate");
        }
        let was = self.budget_firing;
        let name_warming = budget.is_some_and(|b| b.observed_secs < self.cfg.budget_warmup_secs);
        // Reported as warming up while any version's extrapolation is left out of the judged sum.
        let warming_up =
            name_warming || budget.is_some_and(|b| b.judged_30d_usd < b.projected_30d_usd);
        self.budget_firing = match (self.cfg.budget_usd, budget) {
            (Some(limit), Some(b)) if !name_warming => b.judged_30d_usd > limit,
            _ => false,
        };
        if self.budget_firing && !was {
            started.push("budget");
        }
        SurpriseStatus {
            hour_of_week: slot,
            window_minutes,
            window_invocations: window,
            invocations_per_hour: per_hour,
            baseline_per_hour: baseline,
            rate_ratio: baseline.filter(|b| *b > 0.0).map(|b| per_hour / b),
            rate_threshold_window: threshold,
            rate_alert: self.rate_firing,
            budget_usd: self.cfg.budget_usd.filter(|_| budget.is_some()),
            projected_30d_usd,
            budget_projected_30d_usd: budget.map(|b| b.projected_30d_usd),
            budget_warming_up: warming_up,
            budget_alert: self.budget_firing,
            started,
        }
    }
}

impl SurpriseStatus {
    /// Prometheus samples (per-function labels added by the exporter).
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = vec![
            MetricSample::new(names::INVOCATION_RATE_PER_HOUR, self.invocations_per_hour),
            MetricSample::new(names::COST_SURPRISE, f64::from(u8::from(self.rate_alert)))
                .label("reason", "rate"),
            MetricSample::new(names::COST_SURPRISE, f64::from(u8::from(self.budget_alert)))
                .label("reason", "budget"),
        ];
        if let Some(b) = self.baseline_per_hour {
            out.push(MetricSample::new(
                names::INVOCATION_RATE_BASELINE_PER_HOUR,
                b,
            ));
        }
        if let Some(b) = self.budget_usd {
            out.push(MetricSample::new(names::COST_BUDGET_USD, b));
        }
        if let Some(p) = self.projected_30d_usd {
            out.push(MetricSample::new(names::COST_PROJECTED_30D_USD, p));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-11-30 00:00:00 UTC.
    const MONDAY: u64 = 1_795_996_800;
    const WEEK: u64 = 7 * 86_400;

    #[test]
    fn hour_of_week_starts_on_monday_utc() {
        assert_eq!(hour_of_week(MONDAY), 0);
        assert_eq!(hour_of_week(MONDAY + 3599), 0);
        assert_eq!(hour_of_week(MONDAY + 3600), 1);
        assert_eq!(hour_of_week(MONDAY - 1), 167);
        assert_eq!(hour_of_week(0), 72); // Thursday 00:00
    }

    fn feed_hour(d: &mut SurpriseDetector, hour_start: u64, per_minute: u64) {
        for m in 0..60 {
            d.observe(hour_start + m * 60, per_minute);
        }
    }

    #[test]
    fn baseline_is_the_median_of_recent_weeks() {
        let mut d = SurpriseDetector::new(SurpriseConfig::default());
        // Same slot in 4 consecutive weeks: 600, 60000 (a spike), 660, 720 per hour.
        for (w, per_min) in [10u64, 1000, 11, 12].into_iter().enumerate() {
            feed_hour(&mut d, MONDAY + w as u64 * WEEK, per_min);
        }
        d.evaluate(MONDAY + 4 * WEEK, None, None);
        assert_eq!(d.baseline_per_hour(0), Some((660.0 + 720.0) / 2.0));
        // A fifth week replaces the oldest (600): {60000, 660, 720, 780} → median 750.
        feed_hour(&mut d, MONDAY + 4 * WEEK, 13);
        d.evaluate(MONDAY + 5 * WEEK, None, None);
        assert_eq!(d.baseline_per_hour(0), Some(750.0));
    }

    #[test]
    fn table_of_evaluations() {
        // (baseline per minute in week 0, per-minute count in the evaluated window, budget,
        //  projection, expect rate alert, expect budget alert)
        let cases = [
            (10, 10, None, None, false, false),
            (10, 29, None, None, false, false), // 2.9× baseline
            (10, 31, None, None, true, false),  // 3.1× baseline
            (0, 5, None, None, false, false),   // zero baseline: 25 < min 30 in window
            (0, 7, None, None, true, false),    // zero baseline: 35 > min 30
            (1, 5, None, None, false, false),   // 5× a low baseline, but only 25 in the window
            (10, 10, Some(100.0), Some(99.0), false, false),
            (10, 10, Some(100.0), Some(101.0), false, true),
            (10, 10, None, Some(1e9), false, false),
        ];
        for (base, now_rate, budget, projection, want_rate, want_budget) in cases {
            let mut d = SurpriseDetector::new(SurpriseConfig {
                budget_usd: budget,
                ..SurpriseConfig::default()
            });
            feed_hour(&mut d, MONDAY, base);
            for m in 0..5 {
                d.observe(MONDAY + WEEK + m * 60, now_rate);
            }
            let s = d.evaluate(
                MONDAY + WEEK + 4 * 60 + 59,
                projection,
                projection.map(|p| BudgetInput {
                    projected_30d_usd: p,
                    judged_30d_usd: p,
                    observed_secs: WEEK,
                }),
            );
            assert_eq!(s.rate_alert, want_rate, "{base} {now_rate}: {s:?}");
            assert_eq!(
                s.budget_alert, want_budget,
                "{budget:?} {projection:?}: {s:?}"
            );
            assert_eq!(s.started.contains(&"rate"), want_rate);
        }
    }

    #[test]
    fn the_budget_waits_for_the_warm_up_and_only_judges_the_row_carrying_it() {
        let mut d = SurpriseDetector::new(SurpriseConfig {
            budget_usd: Some(100.0),
            ..SurpriseConfig::default()
        });
        let over = |observed_secs| {
            Some(BudgetInput {
                projected_30d_usd: 5000.0,
                judged_30d_usd: 5000.0,
                observed_secs,
            })
        };
        let s = d.evaluate(MONDAY + 120, Some(5000.0), over(120));
        assert!(!s.budget_alert && s.budget_warming_up, "{s:?}");
        assert_eq!(s.budget_projected_30d_usd, Some(5000.0));
        let s = d.evaluate(MONDAY + 3599, Some(5000.0), over(3599));
        assert!(!s.budget_alert && s.budget_warming_up);
        let s = d.evaluate(MONDAY + 3600, Some(5000.0), over(3600));
        assert!(s.budget_alert && !s.budget_warming_up && s.started == vec!["budget"]);
        // A row without the budget check (another version of the function) never alerts on
        // the budget and reports no budget gauge.
        let mut other = SurpriseDetector::new(d.config().clone());
        let s = other.evaluate(MONDAY + 7200, Some(5000.0), None);
        assert!(!s.budget_alert && s.budget_usd.is_none() && !s.budget_warming_up);
        assert!(!s.samples().iter().any(|m| m.name == names::COST_BUDGET_USD));
    }

    #[test]
    fn late_invocations_are_counted_not_lost_silently() {
        let mut d = SurpriseDetector::new(SurpriseConfig::default());
        d.observe(MONDAY + 3600, 5);
        d.observe(MONDAY + 3599, 3);
        assert_eq!(d.late_dropped, 3);
    }

    #[test]
    fn no_baseline_no_rate_alert() {
        let mut d = SurpriseDetector::new(SurpriseConfig::default());
        d.observe(MONDAY, 1_000_000);
        let s = d.evaluate(MONDAY + 30, None, None);
        assert_eq!(s.baseline_per_hour, None);
        assert!(!s.rate_alert);
    }

    #[test]
    fn hysteresis_keeps_one_alert_through_a_wobbling_spike() {
        let mut d = SurpriseDetector::new(SurpriseConfig::default());
        feed_hour(&mut d, MONDAY, 10);
        let t0 = MONDAY + WEEK;
        let mut starts = 0;
        // Threshold is 150 per 5 minutes; the spike wobbles between 32 and 28 per minute.
        for m in 0..60 {
            d.observe(t0 + m * 60, if m % 2 == 0 { 32 } else { 28 });
            starts += d.evaluate(t0 + m * 60 + 59, None, None).started.len();
        }
        assert_eq!(starts, 1);
    }

    #[test]
    fn samples_follow_contract_names() {
        let mut d = SurpriseDetector::new(SurpriseConfig {
            budget_usd: Some(10.0),
            ..SurpriseConfig::default()
        });
        let s = d.evaluate(
            MONDAY,
            Some(12.5),
            Some(BudgetInput {
                projected_30d_usd: 12.5,
                judged_30d_usd: 12.5,
                observed_secs: 7200,
            }),
        );
        assert!(s.budget_alert && !s.budget_warming_up);
        let names: Vec<_> = s.samples().iter().map(|m| m.name).collect();
        assert!(names.contains(&"lambdawatch_cost_projected_30d_usd"));
        assert!(names.contains(&"lambdawatch_cost_budget_usd"));
        assert!(names.contains(&"lambdawatch_cost_surprise"));
    }
}
