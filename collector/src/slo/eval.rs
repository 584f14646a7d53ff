//! SLO evaluation: a pure function of (aggregated counts, spec, now).
//!
//! For every function and every SLO whose selector matches it: good/valid event counts and the
//! SLI over each reported window (`5m 30m 1h 6h 3d 30d`) and each burn-rule window, the error
//! budget over the SLO window, burn rates, and one [`Condition`] per burn rule (or, for the
//! `throttles` count budget, one per budget exhaustion), plus a no-data condition per function.
//!
//! The maths, all from raw event counts (never from averaged ratios):
//! - SLI(w) = good(w) / valid(w); undefined when valid(w) = 0.
//! - burn(w) = (bad(w) / valid(w)) / (1 − objective).
//! - budget consumed = bad(window) / ((1 − objective) × valid(window)); remaining = 1 − consumed.
//!   For `throttles`: consumed = throttles(window) / objective (the count budget).
//! - A burn rule fires when burn(long) ≥ factor and burn(short) ≥ factor and valid(long) ≥
//!   `min_events_per_hour × long-window hours` (the low-traffic guard, [`Defaults::min_events_for`]),
//!   valid(long) summed over the function's versions (same name, region, account; the burn rates
//!   stay per version key): see [`judge_across_versions`].
//! - `throttles` fires (severity ticket) once the window's count reaches the budget
//!   (consumed ≥ 1), never on a burn rate.
//! - No data: a function that averaged at least one invocation per `no_data_after` over the
//!   last 3 days and has been silent for `no_data_after` (and less than 3 days: after that it is
//!   considered retired) raises a ticket. Judged per function across versions: the average
//!   counts every version, and only the latest version key raises it ([`judge_across_versions`]).
//! - `dlq_ratio`: valid = AsyncEventsReceived, bad = max(AsyncEventsDropped, SQS DLQ
//!   NumberOfMessagesSent): AWS counts an event sent to a DLQ as dropped too, and the SQS figure
//!   covers streams that only carry the queue's metrics.
//!
//! Windows are answered at bucket granularity (`aggregate::series`): a window `W` covers between
//! `W − bucket width` and `W` of history.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    aggregate::{
        Aggregates, FunctionKey, FunctionState, InitKind, Layout, PlatformCounter,
        function::{COLD_TOTAL, INV_TB_GOOD, INV_TB_TOTAL},
        hist::Quantiles,
        series::{RINGS, Window},
    },
    alerting::alert::{Evidence, time_to_exhaustion},
    slo::{
        cold_start_ms::ColdStartMs,
        conditions::Conditions,
        name::SloName,
        spec::{Defaults, InitType, Severity, Sli, SloDef, SloSpec},
    },
};

/// The windows every SLO reports (Contract 2 `window` label values).
pub const REPORT_WINDOWS: [Duration; 6] = [
    Duration::from_secs(300),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(3 * 86_400),
    Duration::from_secs(30 * 86_400),
];

/// The `window` label of each of [`REPORT_WINDOWS`].
pub const REPORT_WINDOW_LABELS: [&str; 6] = ["5m", "30m", "1h", "6h", "3d", "30d"];

/// How far back the no-data rule looks for "was reporting".
pub const NO_DATA_LOOKBACK: Duration = Duration::from_secs(3 * 86_400);

/// The [`Layout`] a spec needs counted at ingest.
pub fn layout_for(spec: &SloSpec) -> Layout {
    let cold: Vec<f64> = spec
        .cold_start_thresholds()
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let fractions: Vec<f64> = spec
        .slos
        .iter()
        .filter_map(|s| match s.sli {
            Sli::TimeoutBudget { fraction } => Some(fraction),
            _ => None,
        })
        .chain(std::iter::once(spec.timeout_budget_fraction()))
        .collect();
    Layout::new(&cold, &fractions)
}

/// The series `/metrics` exposes at 0 for every known function: the init types the cold-start
/// SLOs select and the configured DLQ queues (`queue → function`).
pub fn zero_series(
    spec: &SloSpec,
    dlq_queues: &BTreeMap<String, String>,
) -> crate::aggregate::ZeroSeries {
    let kinds = spec.slos.iter().flat_map(|s| match &s.sli {
        Sli::ColdStart { init_types, .. } => init_types.iter().map(|t| init_kind(*t)).collect(),
        _ => Vec::new(),
    });
    crate::aggregate::ZeroSeries::new(kinds, dlq_queues)
}

fn init_kind(t: InitType) -> InitKind {
    match t {
        InitType::OnDemand => InitKind::OnDemand,
        InitType::ProvisionedConcurrency => InitKind::Provisioned,
        InitType::SnapStart => InitKind::SnapStart,
        InitType::LambdaManagedInstances => InitKind::ManagedInstances,
    }
}

/// Good and valid events (for `throttles`: `valid` is the throttle count, `good` 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub good: u64,
    pub valid: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.valid.saturating_sub(self.good)
    }
    pub fn ratio(&self) -> Option<f64> {
        (self.valid > 0).then(|| self.good as f64 / self.valid as f64)
    }
}

/// The windows one evaluation reads (the report windows, every SLO window, every burn-rule
/// window, the no-data lookback), resolved once per evaluation and grouped by ring. Each
/// function's windows are then read from its series' running totals
/// ([`Series::sum_windows_into`]: O(buckets since its last report) per window, not O(window)).
///
/// [`Series::sum_windows_into`]: crate::aggregate::series::Series::sum_windows_into
#[derive(Debug, Clone)]
pub struct WindowPlan {
    /// Distinct window lengths (s), in the order of their sum blocks.
    secs: Vec<u64>,
    /// Per ring: the bucket counts of its windows, ascending (one block per entry, blocks of
    /// ring 0 first, then ring 1, …).
    rings: Vec<Vec<u64>>,
    /// Block of each entry of `secs` (`None`: beyond the longest window the series keep).
    block: Vec<Option<usize>>,
}

impl WindowPlan {
    /// The plan for `windows` at `now_s`.
    pub fn new(windows: impl IntoIterator<Item = Duration>, now_s: u64) -> Self {
        let mut secs: Vec<u64> = windows.into_iter().map(|w| w.as_secs()).collect();
        secs.sort_unstable();
        secs.dedup();
        let resolved: Vec<Option<Window>> =
            secs.iter().map(|s| Window::resolve(*s, now_s)).collect();
        let mut rings: Vec<Vec<u64>> = vec![Vec::new(); RINGS.len()];
        for w in resolved.iter().flatten() {
            rings[w.ring].push(w.buckets);
        }
        for r in &mut rings {
            r.sort_unstable();
            r.dedup();
        }
        let block = resolved
            .iter()
            .map(|w| {
                let w = (*w)?;
                let before: usize = rings[..w.ring].iter().map(Vec::len).sum();
                Some(before + rings[w.ring].iter().position(|b| *b == w.buckets)?)
            })
            .collect();
        Self { secs, rings, block }
    }

    /// Every window `spec` evaluates.
    pub fn for_spec(spec: &SloSpec, now_s: u64) -> Self {
        let rules = spec
            .defaults
            .burn_rules
            .iter()
            .flat_map(|r| [r.long, r.short]);
        let windows = REPORT_WINDOWS
            .iter()
            .copied()
            .chain(spec.slos.iter().map(|s| s.window))
            .chain(rules)
            .chain([NO_DATA_LOOKBACK]);
        Self::new(windows, now_s)
    }

    /// The sum block of `window` (`None`: not in the plan, or longer than the series keep).
    fn block_of(&self, window: Duration) -> Option<usize> {
        let secs = window.as_secs();
        let i = self.secs.iter().position(|s| *s == secs)?;
        self.block.get(i).copied().flatten()
    }

    fn blocks(&self) -> usize {
        self.rings.iter().map(Vec::len).sum()
    }
}

/// Per-window sums of one function at one `now`: every series (invocations, each cold-start
/// series, platform) summed over every window of a [`WindowPlan`], computed up front into a
/// buffer reused from function to function.
#[derive(Debug)]
pub struct Sums<'a> {
    layout: &'a Layout,
    plan: &'a WindowPlan,
    state: &'a FunctionState,
    now_s: u64,
    /// Counters of one window: invocation stride, then `cold_stride` per entry of
    /// `state.cold`, then the platform counters.
    width: usize,
    buf: &'a mut Vec<u64>,
}

impl<'a> Sums<'a> {
    /// Fills `buf` with every window of `plan` for `state` (its capacity is kept across calls).
    pub fn new(
        layout: &'a Layout,
        plan: &'a WindowPlan,
        state: &'a FunctionState,
        now_s: u64,
        buf: &'a mut Vec<u64>,
    ) -> Self {
        let inv = state.invocations.stride();
        let cold = layout.cold_stride();
        let plat_at = inv + cold * state.cold.len();
        let width = plat_at + PlatformCounter::COUNT;
        buf.clear();
        buf.resize(width * plan.blocks(), 0);
        let mut base = 0;
        for (ring, ks) in plan.rings.iter().enumerate() {
            if ks.is_empty() {
                continue;
            }
            let out = &mut buf[base * width..];
            state
                .invocations
                .sum_windows_into(ring, ks, now_s, out, width);
            for (i, (_, cs)) in state.cold.iter().enumerate() {
                cs.series
                    .sum_windows_into(ring, ks, now_s, &mut out[inv + i * cold..], width);
            }
            if let Some(p) = &state.platform {
                p.sum_windows_into(ring, ks, now_s, &mut out[plat_at..], width);
            }
            base += ks.len();
        }
        Self {
            layout,
            plan,
            state,
            now_s,
            width,
            buf,
        }
    }

    /// The counters of block `b` (`None`: the plan does not hold the window or the series keep
    /// no such window: all zero).
    fn block(&self, b: Option<usize>) -> Option<&[u64]> {
        let b = b?;
        self.buf.get(b * self.width..(b + 1) * self.width)
    }

    /// The counts of `sli` over `window`.
    pub fn counts(&self, sli: &Sli, window: Duration) -> Counts {
        self.counts_at(SliIndex::new(sli, self.layout), self.plan.block_of(window))
    }

    /// The counts of a resolved SLI over the window of block `b` (see [`WindowPlan::block_of`]).
    fn counts_at(&self, sli: SliIndex<'_>, b: Option<usize>) -> Counts {
        let state = self.state;
        let stride = state.invocations.stride();
        let Some(counters) = self.block(b) else {
            return Counts::default();
        };
        let plat_at = self.width - PlatformCounter::COUNT;
        let platform = &counters[plat_at..];
        let inv = |i: usize| {
            if i < stride {
                counters.get(i).copied().unwrap_or(0)
            } else {
                0
            }
        };
        match sli.sli {
            Sli::ColdStart { init_types, .. } => {
                let Some(idx) = sli.slot else {
                    return Counts::default();
                };
                let mut c = Counts::default();
                let cold = self.layout.cold_stride();
                for (i, (kind, _)) in state.cold.iter().enumerate() {
                    if init_types.iter().any(|t| init_kind(*t) == *kind) {
                        let base = stride + i * cold;
                        c.valid += counters.get(base + COLD_TOTAL).copied().unwrap_or(0);
                        c.good += counters.get(base + 1 + idx).copied().unwrap_or(0);
                    }
                }
                c
            }
            Sli::ErrorRate => Counts {
                good: inv(0),
                valid: (0..4).map(inv).sum(),
            },
            Sli::TimeoutBudget { .. } => match sli.slot {
                Some(idx) => Counts {
                    good: inv(INV_TB_GOOD + idx),
                    valid: inv(INV_TB_TOTAL),
                },
                None => Counts::default(),
            },
            Sli::DlqRatio => {
                let at = |c: PlatformCounter| platform.get(c as usize).copied().unwrap_or(0);
                let valid = at(PlatformCounter::AsyncEventsReceived);
                let bad = at(PlatformCounter::AsyncEventsDropped)
                    .max(at(PlatformCounter::DlqMessagesSent));
                Counts {
                    good: valid.saturating_sub(bad),
                    valid: valid.max(bad),
                }
            }
            Sli::Throttles => Counts {
                good: 0,
                valid: v_throttles(platform),
            },
        }
    }
}

/// An SLI with its [`Layout`] slot resolved once per evaluation (the cold-start threshold's or
/// the timeout-budget fraction's index; `None` for the others, or when the layout lacks it).
#[derive(Debug, Clone, Copy)]
struct SliIndex<'s> {
    sli: &'s Sli,
    slot: Option<usize>,
}

impl<'s> SliIndex<'s> {
    fn new(sli: &'s Sli, layout: &Layout) -> Self {
        let slot = match sli {
            Sli::ColdStart { threshold, .. } => layout.cold_index(threshold.as_secs_f64() * 1000.0),
            Sli::TimeoutBudget { fraction } => layout.fraction_index(*fraction),
            _ => None,
        };
        Self { sli, slot }
    }
}

/// One SLO's windows resolved to [`WindowPlan`] blocks, once per evaluation, with its shared
/// name and whether its selector matches every function (no glob work for those).
#[derive(Debug, Clone)]
struct SloPlan<'s> {
    name: SloName,
    selects_all: bool,
    sli: SliIndex<'s>,
    report: [Option<usize>; REPORT_WINDOWS.len()],
    budget: Option<usize>,
    /// `(long, short, low-traffic guard)` per burn rule.
    rules: Vec<(Option<usize>, Option<usize>, u64)>,
}

impl<'s> SloPlan<'s> {
    fn new(slo: &'s SloDef, defaults: &Defaults, layout: &Layout, plan: &WindowPlan) -> Self {
        Self {
            name: SloName::new(&slo.name),
            selects_all: selects_all(slo),
            sli: SliIndex::new(&slo.sli, layout),
            report: REPORT_WINDOWS.map(|w| plan.block_of(w)),
            budget: plan.block_of(slo.window),
            rules: defaults
                .burn_rules
                .iter()
                .map(|r| {
                    (
                        plan.block_of(r.long),
                        plan.block_of(r.short),
                        defaults.min_events_for(r.long),
                    )
                })
                .collect(),
        }
    }
}

fn v_throttles(platform: &[u64]) -> u64 {
    platform
        .get(PlatformCounter::Throttles as usize)
        .copied()
        .unwrap_or(0)
}

/// The counts of `sli` for one function over `window` ending at `now_s`.
pub fn counts(
    sli: &Sli,
    layout: &Layout,
    state: &FunctionState,
    window: Duration,
    now_s: u64,
) -> Counts {
    let plan = WindowPlan::new([window], now_s);
    let mut buf = Vec::new();
    Sums::new(layout, &plan, state, now_s, &mut buf).counts(sli, window)
}

/// One window of one SLO.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowStatus {
    pub window: &'static str,
    pub good: u64,
    pub valid: u64,
    /// good / valid (`throttles`: the count).
    pub sli: Option<f64>,
    pub burn_rate: Option<f64>,
}

/// A burn rule (or budget rule) evaluated for one function and SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub severity: Severity,
    pub active: bool,
    /// False when the low-traffic guard held the rule back.
    pub guard_passed: bool,
    pub evidence: Evidence,
}

/// One SLO for one function.
#[derive(Debug, Clone, PartialEq)]
pub struct SloStatus {
    /// Index into `spec.slos`.
    pub slo_index: usize,
    /// Shared by every function's status of this SLO (one allocation per evaluation).
    pub name: SloName,
    pub objective: f64,
    pub window: Duration,
    /// One per [`REPORT_WINDOWS`], in that order.
    pub windows: [WindowStatus; REPORT_WINDOWS.len()],
    /// Over the SLO window.
    pub budget: Counts,
    pub budget_consumed: f64,
    pub budget_remaining: f64,
    /// One per burn rule, in the spec's order (a count budget: one), held inline.
    pub conditions: Conditions,
}

/// Everything evaluated for one function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionStatus {
    pub key: FunctionKey,
    pub slos: Vec<SloStatus>,
    /// Init duration percentiles (ms) per init type seen (inline, by label like a map).
    pub cold_start_ms: ColdStartMs,
    pub invocation_ms: Option<Quantiles>,
    pub last_seen_s: u64,
    /// Active when a reporting function went silent (see module doc).
    pub no_data: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    pub now_s: u64,
    pub functions: Vec<FunctionStatus>,
}

fn burn(slo: &SloDef, c: Counts) -> Option<f64> {
    slo.burn_rate(c.bad(), c.valid)
}

fn evaluate_slo(
    slo_index: usize,
    slo: &SloDef,
    defaults: &Defaults,
    plan: &SloPlan<'_>,
    sums: &Sums<'_>,
) -> SloStatus {
    let count_budget = slo.sli.is_count_budget();
    let windows = std::array::from_fn(|i| {
        let c = sums.counts_at(plan.sli, plan.report[i]);
        WindowStatus {
            window: REPORT_WINDOW_LABELS[i],
            good: c.good,
            valid: c.valid,
            sli: if count_budget {
                Some(c.valid as f64)
            } else {
                c.ratio()
            },
            burn_rate: burn(slo, c),
        }
    });
    let budget = sums.counts_at(plan.sli, plan.budget);
    let consumed = if count_budget {
        if slo.objective > 0.0 {
            budget.valid as f64 / slo.objective
        } else {
            f64::from(u8::from(budget.valid > 0))
        }
    } else if budget.valid == 0 {
        0.0
    } else {
        budget.bad() as f64 / (slo.error_budget() * budget.valid as f64)
    };
    let mut conditions = Conditions::new();
    if count_budget {
        conditions.push(Condition {
            severity: Severity::Ticket,
            active: consumed >= 1.0,
            guard_passed: true,
            evidence: Evidence {
                sli: budget.valid as f64,
                objective: slo.objective,
                burn_rate_long: None,
                burn_rate_short: None,
                long_window: slo.window,
                short_window: slo.window,
                factor: 1.0,
                budget_consumed: consumed,
                time_to_exhaustion: None,
                good: 0,
                total: budget.valid,
            },
        });
    } else {
        for (rule, (long_b, short_b, min_events)) in defaults.burn_rules.iter().zip(&plan.rules) {
            let long = sums.counts_at(plan.sli, *long_b);
            let short = sums.counts_at(plan.sli, *short_b);
            let (bl, bs) = (burn(slo, long), burn(slo, short));
            let guard_passed = long.valid >= *min_events;
            let active = guard_passed
                && bl.is_some_and(|b| b >= rule.factor)
                && bs.is_some_and(|b| b >= rule.factor);
            conditions.push(Condition {
                severity: rule.severity,
                active,
                guard_passed,
                evidence: Evidence {
                    sli: long.ratio().unwrap_or(1.0),
                    objective: slo.objective,
                    burn_rate_long: bl,
                    burn_rate_short: bs,
                    long_window: rule.long,
                    short_window: rule.short,
                    factor: rule.factor,
                    budget_consumed: consumed,
                    time_to_exhaustion: bl
                        .and_then(|b| time_to_exhaustion(consumed, b, slo.window)),
                    good: long.good,
                    total: long.valid,
                },
            });
        }
    }
    SloStatus {
        slo_index,
        name: plan.name.clone(),
        objective: slo.objective,
        window: slo.window,
        windows,
        budget,
        budget_consumed: consumed,
        budget_remaining: 1.0 - consumed,
        conditions,
    }
}

/// The no-data condition for one function key, from its own traffic (`None` when the spec
/// turns it off). [`evaluate`] then judges it per function across versions
/// ([`judge_across_versions`]).
pub fn no_data(defaults: &Defaults, sums: &Sums<'_>) -> Option<Condition> {
    let recent = sums
        .counts_at(
            SliIndex {
                sli: &Sli::ErrorRate,
                slot: None,
            },
            sums.plan.block_of(NO_DATA_LOOKBACK),
        )
        .valid;
    no_data_condition(defaults, sums.state.last_seen_s, sums.now_s, recent)
}

/// True for a count-budget SLO (no burn rule, no guard), or an index the spec lacks.
fn count_budget(spec: &SloSpec, slo_index: usize) -> bool {
    spec.slos
        .get(slo_index)
        .is_none_or(|d| d.sli.is_count_budget())
}

/// No data for something last seen at `last_seen_s` with `recent` invocations over
/// [`NO_DATA_LOOKBACK`].
fn no_data_condition(
    defaults: &Defaults,
    last_seen_s: u64,
    now_s: u64,
    recent: u64,
) -> Option<Condition> {
    let after = defaults.no_data_after?;
    let silent = now_s.saturating_sub(last_seen_s);
    let lookback = NO_DATA_LOOKBACK.as_secs();
    let expected = lookback / after.as_secs().max(1);
    let was_reporting = recent >= expected.max(1);
    let active = last_seen_s > 0 && silent >= after.as_secs() && silent < lookback && was_reporting;
    Some(Condition {
        severity: Severity::Ticket,
        active,
        guard_passed: was_reporting,
        evidence: Evidence {
            sli: 0.0,
            objective: 0.0,
            burn_rate_long: None,
            burn_rate_short: None,
            long_window: Duration::from_secs(silent),
            short_window: after,
            factor: 1.0,
            budget_consumed: 0.0,
            time_to_exhaustion: None,
            good: 0,
            total: recent,
        },
    })
}

/// Judges what belongs to a function rather than to one of its versions, over the statuses of
/// every version key of each function (same name, region and account):
/// - the low-traffic guard of every burn rule counts the SLO's valid events over the rule's
///   long window summed across the function's versions (the burn rates stay per version key),
///   so a new version that fails every call pages as fast as the function's traffic allows;
/// - no data: only the function's latest version key (greatest `last_seen_s`, then greatest
///   key) may raise it, judged on the function's invocations across versions; the others are
///   inactive, so a deploy does not leave the old version raising a ticket.
///
/// Consumes the per-key statuses [`Evaluator::function`] produced; no count is read again.
pub fn judge_across_versions(spec: &SloSpec, now_s: u64, functions: &mut [FunctionStatus]) {
    let mut groups: std::collections::HashMap<(&str, &str, &str), Vec<usize>> =
        std::collections::HashMap::with_capacity(functions.len());
    for (i, f) in functions.iter().enumerate() {
        groups
            .entry((&f.key.function, &f.key.region, &f.key.account))
            .or_default()
            .push(i);
    }
    let groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    let defaults = &spec.defaults;
    let min_events: Vec<u64> = defaults
        .burn_rules
        .iter()
        .map(|r| defaults.min_events_for(r.long))
        .collect();
    for group in groups {
        // Guard: per SLO and burn rule, the long window's valid events across versions.
        let mut totals: BTreeMap<(usize, usize), u64> = BTreeMap::new();
        for &i in &group {
            for s in &functions[i].slos {
                if count_budget(spec, s.slo_index) {
                    continue;
                }
                for (j, c) in s.conditions.iter().enumerate() {
                    *totals.entry((s.slo_index, j)).or_default() += c.evidence.total;
                }
            }
        }
        for &i in &group {
            for s in &mut functions[i].slos {
                if count_budget(spec, s.slo_index) {
                    continue;
                }
                for (j, c) in s.conditions.as_mut_slice().iter_mut().enumerate() {
                    let (Some(total), Some(min)) =
                        (totals.get(&(s.slo_index, j)), min_events.get(j))
                    else {
                        continue;
                    };
                    let e = &c.evidence;
                    c.guard_passed = *total >= *min;
                    c.active = c.guard_passed
                        && e.burn_rate_long.is_some_and(|b| b >= e.factor)
                        && e.burn_rate_short.is_some_and(|b| b >= e.factor);
                }
            }
        }
        // No data: the latest version key speaks for the function.
        let Some(&latest) = group.iter().max_by(|a, b| {
            let (fa, fb) = (&functions[**a], &functions[**b]);
            fa.last_seen_s
                .cmp(&fb.last_seen_s)
                .then_with(|| fa.key.cmp(&fb.key))
        }) else {
            continue;
        };
        let recent: u64 = group
            .iter()
            .filter_map(|&i| functions[i].no_data.as_ref())
            .map(|c| c.evidence.total)
            .sum();
        for &i in &group {
            let f = &mut functions[i];
            if i == latest {
                f.no_data = no_data_condition(defaults, f.last_seen_s, now_s, recent);
            } else if let Some(c) = &mut f.no_data {
                c.active = false;
            }
        }
    }
}

/// True for a selector that matches every function (the embedded default's): no need to run
/// the glob matcher per function.
fn selects_all(slo: &SloDef) -> bool {
    let sel = &slo.selector;
    sel.function.matches_everything()
        && sel.version.as_ref().is_none_or(|g| g.matches_everything())
        && sel.region.as_ref().is_none_or(|g| g.matches_everything())
        && sel.account.as_ref().is_none_or(|g| g.matches_everything())
        && sel.tags.is_empty()
}

/// Per-evaluation context shared by every function: the window plan and, per SLO, its shared
/// name, window blocks and whether it selects every function (no glob work for those).
#[derive(Debug)]
pub struct Evaluator<'a> {
    spec: &'a SloSpec,
    layout: &'a Layout,
    plan: WindowPlan,
    /// Per SLO of the spec: its name, windows' blocks and resolved SLI.
    slo_plans: Vec<SloPlan<'a>>,
    now_s: u64,
    buf: Vec<u64>,
}

impl<'a> Evaluator<'a> {
    pub fn new(spec: &'a SloSpec, layout: &'a Layout, now_s: u64) -> Self {
        let plan = WindowPlan::for_spec(spec, now_s);
        Self {
            spec,
            layout,
            slo_plans: spec
                .slos
                .iter()
                .map(|s| SloPlan::new(s, &spec.defaults, layout, &plan))
                .collect(),
            plan,
            now_s,
            buf: Vec::new(),
        }
    }

    /// Evaluates one function against every SLO that selects it.
    pub fn function(&mut self, key: &FunctionKey, state: &FunctionState) -> FunctionStatus {
        let (spec, now_s) = (self.spec, self.now_s);
        let sums = Sums::new(self.layout, &self.plan, state, now_s, &mut self.buf);
        let mut slos = Vec::with_capacity(spec.slos.len());
        for (i, (s, plan)) in spec.slos.iter().zip(&self.slo_plans).enumerate() {
            let selected = plan.selects_all
                || s.selector.matches(
                    &key.function,
                    &key.version,
                    &key.region,
                    &key.account,
                    &state.tags,
                );
            if selected {
                slos.push(evaluate_slo(i, s, &spec.defaults, plan, &sums));
            }
        }
        // Percentiles come from the cache the owner refreshes (`Aggregates::refresh_percentiles`)
        // before it evaluates: walking every histogram on every round would dominate evaluation.
        let cold_start_ms = state.percentiles.cold.iter().copied().collect();
        FunctionStatus {
            key: key.clone(),
            slos,
            cold_start_ms,
            invocation_ms: state.percentiles.invocation,
            last_seen_s: state.last_seen_s,
            no_data: no_data(&spec.defaults, &sums),
        }
    }
}

/// Evaluates one function against every SLO that selects it.
pub fn evaluate_function(
    spec: &SloSpec,
    layout: &Layout,
    key: &FunctionKey,
    state: &FunctionState,
    now_s: u64,
) -> FunctionStatus {
    Evaluator::new(spec, layout, now_s).function(key, state)
}

/// Evaluates every function, sorted by key.
pub fn evaluate(spec: &SloSpec, agg: &Aggregates, now_s: u64) -> Evaluation {
    let mut ev = Evaluator::new(spec, &agg.layout, now_s);
    // Sort the (small) key references first, not the (large) statuses; keys are distinct, so an
    // unstable sort gives the same order. Most comparisons are settled by the name's first
    // bytes as an integer (no string comparison through two pointers).
    let mut order: Vec<(u64, &FunctionKey, &FunctionState)> = agg
        .functions
        .iter()
        .map(|(k, s)| (sort_prefix(&k.function), k, s))
        .collect();
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let mut functions: Vec<FunctionStatus> = order
        .into_iter()
        .map(|(_, k, s)| ev.function(k, s))
        .collect();
    judge_across_versions(spec, now_s, &mut functions);
    Evaluation { now_s, functions }
}

/// The first 8 bytes of `s`, zero-padded, as a big-endian integer: `sort_prefix(a) <
/// sort_prefix(b)` implies `a < b`, and equal prefixes leave the order to the strings.
fn sort_prefix(s: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Batch, Event, Group, Invocation, Outcome, Target};

    const T0: u64 = 1_799_996_400; // a whole hour

    fn key() -> FunctionKey {
        FunctionKey {
            function: "checkout".into(),
            version: "1".into(),
            region: "eu-west-1".into(),
            account: "1".into(),
        }
    }

    fn inv(t_s: u64, outcome: Outcome) -> Event {
        Event::Invocation(Invocation {
            t_s,
            outcome,
            duration_ms: 100.0,
            billed_ms: Some(100.0),
            memory_mb: Some(128.0),
            max_memory_mb: None,
            timeout_ms: Some(1000.0),
            request_id: None,
            span_fingerprint: None,
        })
    }

    fn feed(a: &mut Aggregates, events: Vec<Event>) {
        a.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Function {
                    key: key(),
                    tags: vec![],
                    instance: "i".into(),
                },
                events,
            }],
        });
    }

    fn error_rate(ev: &Evaluation) -> &SloStatus {
        ev.functions[0]
            .slos
            .iter()
            .find(|s| s.name == "error_rate")
            .unwrap()
    }

    fn pages(ev: &Evaluation) -> bool {
        error_rate(ev)
            .conditions
            .iter()
            .any(|c| c.severity == Severity::Page && c.active)
    }

    /// Issue case 1: six invocations an hour, one of them failing, for a whole day: nobody is
    /// paged (nor ticketed), although the burn rate is 167×.
    #[test]
    fn one_failure_in_six_an_hour_pages_nobody() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        for h in 0..24 {
            let events = (0..6)
                .map(|i| {
                    let o = if i == 0 {
                        Outcome::Error
                    } else {
                        Outcome::Success
                    };
                    inv(T0 + h * 3600 + i * 600, o)
                })
                .collect();
            feed(&mut a, events);
        }
        for minute in 0..(24 * 60) {
            let ev = evaluate(&spec, &a, T0 + minute * 60);
            let s = error_rate(&ev);
            assert!(
                s.conditions.iter().all(|c| !c.active),
                "fired at minute {minute}"
            );
        }
        let ev = evaluate(&spec, &a, T0 + 24 * 3600 - 1);
        let s = error_rate(&ev);
        let b1h = s.windows.iter().find(|w| w.window == "1h").unwrap();
        assert!((b1h.burn_rate.unwrap() - (1.0 / 6.0) / 0.001).abs() < 1e-6);
        assert!(s.conditions.iter().all(|c| !c.guard_passed || !c.active));
    }

    /// Issue case 2: a function at 100 invocations an hour goes fully down; the page fires within
    /// 10 minutes (evaluated every 30 s with injected time).
    #[test]
    fn full_outage_at_100_an_hour_pages_within_10_minutes() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        // Six healthy hours at 100/h (one every 36 s), then the outage at T0 + 6 h.
        let outage = T0 + 6 * 3600;
        let healthy = (0..600)
            .map(|i| inv(T0 + i * 36, Outcome::Success))
            .collect();
        feed(&mut a, healthy);
        let mut fired_at = None;
        let mut t = outage;
        let mut next_inv = outage;
        while t <= outage + 600 {
            let due: Vec<Event> = std::iter::from_fn(|| {
                (next_inv <= t).then(|| {
                    let e = inv(next_inv, Outcome::Error);
                    next_inv += 36;
                    e
                })
            })
            .collect();
            feed(&mut a, due);
            if pages(&evaluate(&spec, &a, t)) {
                fired_at = Some(t - outage);
                break;
            }
            t += 30;
        }
        let after = fired_at.expect("no page within 10 minutes of a full outage");
        assert!(after <= 600, "paged after {after} s");
    }

    /// Hand-computed: 10,000 invocations over the last 30 days of which 5 failed, and 2 of 100 in
    /// the last hour failed. objective 0.999 → budget 10 bad; consumed 0.5 + …
    #[test]
    fn budget_and_burn_rates_from_counts() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        let now = T0 + 20 * 86_400;
        // 9,900 successes spread over days 1..19 (bucketed in the 12 h ring), 3 errors on day 2.
        let mut events: Vec<Event> = (0..9_900)
            .map(|i| inv(T0 + 86_400 + (i * 150) % (18 * 86_400), Outcome::Success))
            .collect();
        events.extend((0..3).map(|i| inv(T0 + 2 * 86_400 + i, Outcome::Error)));
        // The last hour: 98 successes and 2 errors.
        events.extend((0..98).map(|i| inv(now - 3000 + i * 10, Outcome::Success)));
        events.extend((0..2).map(|i| inv(now - 100 + i, Outcome::Error)));
        feed(&mut a, events);
        let ev = evaluate(&spec, &a, now);
        let s = error_rate(&ev);
        // 30 d: 10,003 valid, 5 bad → consumed = 5 / (0.001 × 10,003) = 0.49985…
        assert_eq!((s.budget.valid, s.budget.bad()), (10_003, 5));
        assert!((s.budget_consumed - 5.0 / (0.001 * 10_003.0)).abs() < 1e-9);
        assert!((s.budget_remaining - (1.0 - 5.0 / 10.003)).abs() < 1e-9);
        // 1 h: 2 of 100 bad → burn = 0.02 / 0.001 = 20 (≥ 14.4); 5 m: 2 of ≤ 32 → > 14.4.
        let w1h = s.windows.iter().find(|w| w.window == "1h").unwrap();
        assert_eq!((w1h.good, w1h.valid), (98, 100));
        assert!((w1h.burn_rate.unwrap() - 20.0).abs() < 1e-9);
        // Guard: 100 ≥ 60 → the 1 h / 5 m page rule is active.
        let page1 = &s.conditions[0];
        assert!(page1.guard_passed && page1.active);
        // 6 h: 100 valid < 360 required → held back by the guard.
        assert!(!s.conditions[1].guard_passed && !s.conditions[1].active);
        let tte = page1.evidence.time_to_exhaustion.unwrap().as_secs_f64();
        let expect = (1.0 - s.budget_consumed) * 30.0 * 86_400.0 / 20.0;
        assert!((tte - expect).abs() < 1.0);
    }

    #[test]
    fn throttles_alert_on_budget_consumed_not_burn_rate() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        feed(&mut a, vec![inv(T0, Outcome::Success)]);
        let throttles = |n: u64| Event::Platform {
            t_s: T0 + 60,
            counter: PlatformCounter::Throttles,
            value: n,
            queue: None,
        };
        feed(&mut a, vec![throttles(4)]);
        let th = |ev: &Evaluation| {
            ev.functions[0]
                .slos
                .iter()
                .find(|s| s.name == "throttles")
                .cloned()
                .unwrap()
        };
        let s = th(&evaluate(&spec, &a, T0 + 120));
        assert!((s.budget_consumed - 0.8).abs() < 1e-12);
        assert!(!s.conditions[0].active);
        assert!(s.windows.iter().all(|w| w.burn_rate.is_none()));
        feed(&mut a, vec![throttles(1)]);
        let s = th(&evaluate(&spec, &a, T0 + 120));
        assert!(s.conditions[0].active, "5 of a budget of 5");
        assert_eq!(s.conditions[0].severity, Severity::Ticket);
    }

    #[test]
    fn no_data_when_a_steady_function_goes_silent() {
        let spec = SloSpec::embedded_default();
        let after = spec.defaults.no_data_after.unwrap().as_secs();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        // One invocation a minute for 6 hours.
        feed(
            &mut a,
            (0..360)
                .map(|i| inv(T0 + i * 60, Outcome::Success))
                .collect(),
        );
        let last = T0 + 359 * 60;
        let nd = |now| {
            evaluate(&spec, &a, now).functions[0]
                .no_data
                .clone()
                .unwrap()
        };
        assert!(!nd(last + after - 60).active);
        assert!(nd(last + after).active);
        assert!(!nd(last + 4 * 86_400).active, "retired after 3 days");
    }

    /// Every report window is kept as a running total by the series (`series::TRACKED`), so
    /// the default spec's evaluation never walks more than the buckets since a function's last
    /// report.
    #[test]
    fn report_windows_are_tracked_by_the_series() {
        use crate::aggregate::series::TRACKED;
        for w in REPORT_WINDOWS {
            let r = Window::resolve(w.as_secs(), T0).unwrap();
            assert!(TRACKED[r.ring].contains(&r.buckets), "{w:?} is not tracked");
        }
        let spec = SloSpec::embedded_default();
        let plan = WindowPlan::for_spec(&spec, T0);
        let tracked: usize = TRACKED.iter().map(|t| t.len()).sum();
        assert_eq!(
            plan.blocks(),
            tracked,
            "the default spec reads only tracked windows"
        );
    }

    /// A spec with windows the series do not track (a 2 h / 10 m page rule, a 28-day budget)
    /// evaluates them exactly (from the nearest tracked total or by walking).
    #[test]
    fn untracked_windows_are_exact() {
        let mut spec = SloSpec::embedded_default();
        spec.defaults.burn_rules[0].long = Duration::from_secs(7200);
        spec.defaults.burn_rules[0].short = Duration::from_secs(600);
        for s in &mut spec.slos {
            s.window = Duration::from_secs(28 * 86_400);
        }
        let mut a = Aggregates::new(layout_for(&spec), 10);
        // One error every 7 minutes for 35 days, one success every minute.
        let start = T0 - 35 * 86_400;
        let events: Vec<Event> = (0..35 * 1440u64)
            .map(|m| inv(start + m * 60, Outcome::Success))
            .chain((0..35 * 1440u64 / 7).map(|k| inv(start + k * 420 + 5, Outcome::Error)))
            .collect();
        feed(&mut a, events);
        for now in [T0 - 1, T0 + 59, T0 + 3 * 60 + 7, T0 + 4000] {
            let ev = evaluate(&spec, &a, now);
            let s = error_rate(&ev);
            let count = |secs: u64, width: u64| {
                // Whole buckets of `width`, the current one included (series semantics).
                let last = now / width;
                let first = (last + 1).saturating_sub(secs / width);
                let in_w = |t: u64| (first..=last).contains(&(t / width)) && t <= now;
                let ok = (0..35 * 1440u64).filter(|m| in_w(start + m * 60)).count() as u64;
                let bad = (0..35 * 1440u64 / 7)
                    .filter(|k| in_w(start + k * 420 + 5))
                    .count() as u64;
                (ok, ok + bad)
            };
            let (good, valid) = count(7200, 60);
            let long = &s.conditions[0].evidence;
            assert_eq!((long.good, long.total), (good, valid), "2 h at {now}");
            let (good, valid) = count(28 * 86_400, 43_200);
            assert_eq!(
                (s.budget.good, s.budget.valid),
                (good, valid),
                "28 d at {now}"
            );
        }
    }

    proptest::proptest! {
        /// Ordering by (name prefix, key) is ordering by key: short names, shared prefixes,
        /// NUL bytes and multi-byte characters included.
        #[test]
        fn sort_prefix_keeps_key_order(
            names in proptest::collection::vec("(fn-|\\x00|ab|é){0,6}[a-c\\x00]{0,3}", 1..40),
            versions in proptest::collection::vec("[12]", 1..40),
        ) {
            let keys: Vec<FunctionKey> = names
                .iter()
                .zip(versions.iter().cycle())
                .map(|(f, v)| FunctionKey {
                    function: f.clone(),
                    version: v.clone(),
                    region: "r".into(),
                    account: "a".into(),
                })
                .collect();
            let mut by_key: Vec<&FunctionKey> = keys.iter().collect();
            by_key.sort();
            let mut by_prefix: Vec<(u64, &FunctionKey)> =
                keys.iter().map(|k| (sort_prefix(&k.function), k)).collect();
            by_prefix.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            let by_prefix: Vec<&FunctionKey> = by_prefix.into_iter().map(|(_, k)| k).collect();
            proptest::prop_assert_eq!(by_key, by_prefix);
        }
    }

    #[test]
    fn evaluation_is_sorted_by_key() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 100);
        for f in [
            "fn-0000010",
            "fn-0000002",
            "fn-00000",
            "b",
            "fn-0000002x",
            "a\u{0}",
        ] {
            a.apply(Batch {
                received_s: T0,
                groups: vec![Group {
                    target: Target::Function {
                        key: FunctionKey {
                            function: f.into(),
                            ..key()
                        },
                        tags: vec![],
                        instance: "i".into(),
                    },
                    events: vec![inv(T0, Outcome::Success)],
                }],
            });
        }
        let ev = evaluate(&spec, &a, T0);
        let names: Vec<&str> = ev
            .functions
            .iter()
            .map(|f| f.key.function.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "a\u{0}",
                "b",
                "fn-00000",
                "fn-0000002",
                "fn-0000002x",
                "fn-0000010"
            ]
        );
    }

    #[test]
    fn cold_start_counts_by_threshold_and_init_type() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        let init = |ms: f64, kind| Event::Init {
            t_s: T0,
            kind,
            duration_ms: ms,
        };
        feed(
            &mut a,
            vec![
                init(499.0, InitKind::OnDemand),
                init(500.0, InitKind::OnDemand),
                init(501.0, InitKind::OnDemand),
                init(9000.0, InitKind::Provisioned),
            ],
        );
        a.refresh_percentiles(T0 + 10);
        let ev = evaluate(&spec, &a, T0 + 10);
        let cs = ev.functions[0]
            .slos
            .iter()
            .find(|s| s.name == "cold_start")
            .unwrap();
        let w = cs.windows.iter().find(|w| w.window == "5m").unwrap();
        assert_eq!(
            (w.good, w.valid),
            (2, 3),
            "≤ 500 ms is good; provisioned not selected"
        );
        assert_eq!(
            ev.functions[0]
                .cold_start_ms
                .get("on-demand")
                .map(|q| q.count),
            Some(3)
        );
    }

    fn feed_version(a: &mut Aggregates, version: &str, events: Vec<Event>) {
        a.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Function {
                    key: FunctionKey {
                        version: version.into(),
                        ..key()
                    },
                    tags: vec![],
                    instance: "i".into(),
                },
                events,
            }],
        });
    }

    fn pages_version(ev: &Evaluation, version: &str) -> bool {
        ev.functions
            .iter()
            .filter(|f| f.key.version == version)
            .flat_map(|f| &f.slos)
            .filter(|s| s.name == "error_rate")
            .flat_map(|s| &s.conditions)
            .any(|c| c.severity == Severity::Page && c.active)
    }

    /// A deploy moves traffic from v1 to v2: the silent v1 key raises no no-data ticket; when
    /// the whole function goes silent, exactly one ticket, on the latest version key (v2).
    #[test]
    fn deploy_raises_no_data_only_when_the_function_goes_silent() {
        let spec = SloSpec::embedded_default();
        let after = spec.defaults.no_data_after.unwrap().as_secs();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        // v1: one a minute for 6 h; then v2: one a minute for 30 min (too little on its own).
        feed_version(
            &mut a,
            "1",
            (0..360)
                .map(|i| inv(T0 + i * 60, Outcome::Success))
                .collect(),
        );
        let switch = T0 + 360 * 60;
        feed_version(
            &mut a,
            "2",
            (0..30)
                .map(|i| inv(switch + i * 60, Outcome::Success))
                .collect(),
        );
        let last = switch + 29 * 60;
        let active = |now| -> Vec<String> {
            evaluate(&spec, &a, now)
                .functions
                .iter()
                .filter(|f| f.no_data.as_ref().is_some_and(|c| c.active))
                .map(|f| f.key.version.clone())
                .collect()
        };
        // While v2 reports, v1 has been silent for over `after`: nothing.
        for now in (switch..=last).step_by(60) {
            assert!(active(now).is_empty(), "no data at {now}");
        }
        assert!(active(last + after - 60).is_empty());
        for now in [last + after, last + 2 * after, last + 24 * 3600] {
            assert_eq!(active(now), vec!["2".to_string()], "at {now}");
        }
    }

    fn failing_hour(start: u64, minutes: u64) -> Vec<Event> {
        // 100 an hour: one every 36 s.
        (0..minutes * 60 / 36)
            .map(|i| inv(start + i * 36, Outcome::Error))
            .collect()
    }

    /// v1 healthy at 100/h for 6 h, then v2 deployed failing every call at 100/h (v1 gets
    /// none): the guard counts the function's traffic across versions, so v2 pages within
    /// 10 minutes (burn rates stay per version: v1 never pages).
    #[test]
    fn broken_new_version_pages_within_10_minutes() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        feed_version(
            &mut a,
            "1",
            (0..600)
                .map(|i| inv(T0 + i * 36, Outcome::Success))
                .collect(),
        );
        let deploy = T0 + 6 * 3600;
        feed_version(&mut a, "2", failing_hour(deploy, 60));
        let mut paged = None;
        for t in (deploy..deploy + 3600).step_by(30) {
            let ev = evaluate(&spec, &a, t);
            assert!(!pages_version(&ev, "1"));
            if pages_version(&ev, "2") {
                paged = Some(t - deploy);
                break;
            }
        }
        let paged = paged.expect("v2 never paged");
        assert!(paged <= 600, "paged after {paged} s");
    }

    /// A brand-new function (no history) failing every call at 100/h: the guard needs 60 events
    /// in the last hour, so the page waits for the 60th call (≈ 36 min), not 10 minutes
    /// (docs/slo-spec.md).
    #[test]
    fn brand_new_function_failing_pages_once_the_guard_holds() {
        let spec = SloSpec::embedded_default();
        let mut a = Aggregates::new(layout_for(&spec), 10);
        feed_version(&mut a, "1", failing_hour(T0, 60));
        let mut paged = None;
        for t in (T0..T0 + 3600).step_by(30) {
            if pages_version(&evaluate(&spec, &a, t), "1") {
                paged = Some(t - T0);
                break;
            }
        }
        let paged = paged.expect("never paged");
        // The 60th call lands at 59 × 36 s = 2124 s, in the minute bucket [2100, 2160) that a
        // window counts whole.
        assert!((2100..2160).contains(&paged), "paged after {paged} s");
    }
}
