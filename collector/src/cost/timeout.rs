//! Timeout budget and timeout cascades.
//!
//! **Budget.** [`timeout_budget`]: P99 duration against the configured timeout; within budget
//! while `p99 ≤ fraction × timeout` (default 80 %, the SLO of issue 4).
//!
//! **Cascade.** A function's timeouts often come from one slow dependency. Consumes per-trace
//! records ([`TraceRecord`]: did the invocation time out, and the maximum latency of each
//! downstream client span in that trace, by downstream name) for a baseline window and the
//! current window; produces a [`CascadeStatus`]. A cascade is flagged when
//! 1. timeouts rose: at least `min_timeouts` in the current window, a timeout rate of at least
//!    `min_timeout_rate`, and at least `rate_rise` × the baseline rate; and
//! 2. some downstream rose **in the same traces**: it appears in at least `min_coverage` of the
//!    current timed-out traces, and its median latency there is at least `latency_rise` × its
//!    median latency over the baseline traces.
//!
//! Every such downstream is a suspect, ranked by latency ratio. A downstream never seen in the
//! baseline has no ratio and is listed (`baseline_p50_ms: None`) but cannot be a suspect alone.
//! Pure; at most `max_downstreams` names are considered per call (further names are counted in
//! `downstreams_dropped`), so memory is bounded by the caller's slices.

use std::collections::BTreeMap;

use super::MetricSample;
use super::names;

/// Default timeout-budget fraction (issue 4's SLO: P99 ≤ 80 % of the timeout).
pub const DEFAULT_BUDGET_FRACTION: f64 = 0.8;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimeoutBudget {
    pub p99_duration_ms: f64,
    pub timeout_ms: f64,
    /// `p99 / timeout` (∞ for a zero timeout).
    pub ratio: f64,
    pub budget_fraction: f64,
    pub within: bool,
}

pub fn timeout_budget(
    p99_duration_ms: f64,
    timeout_ms: f64,
    budget_fraction: f64,
) -> TimeoutBudget {
    let ratio = if timeout_ms > 0.0 {
        p99_duration_ms / timeout_ms
    } else {
        f64::INFINITY
    };
    TimeoutBudget {
        p99_duration_ms,
        timeout_ms,
        ratio,
        budget_fraction,
        within: ratio <= budget_fraction,
    }
}

impl TimeoutBudget {
    pub fn samples(&self) -> Vec<MetricSample> {
        vec![MetricSample::new(names::TIMEOUT_BUDGET_RATIO, self.ratio)]
    }
}

/// One trace of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    pub timed_out: bool,
    /// `(downstream name, max latency of its client spans in this trace, ms)`.
    pub downstream: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    pub min_timeouts: u64,
    pub min_timeout_rate: f64,
    pub rate_rise: f64,
    pub latency_rise: f64,
    pub min_coverage: f64,
    pub max_downstreams: usize,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            min_timeouts: 5,
            min_timeout_rate: 0.01,
            rate_rise: 3.0,
            latency_rise: 2.0,
            min_coverage: 0.5,
            max_downstreams: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Downstream {
    pub name: String,
    /// Fraction of the current timed-out traces that called it.
    pub coverage: f64,
    pub timed_out_p50_ms: f64,
    pub baseline_p50_ms: Option<f64>,
    pub latency_ratio: Option<f64>,
    pub suspect: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CascadeStatus {
    pub baseline_timeout_rate: f64,
    pub current_timeout_rate: f64,
    pub current_timeouts: u64,
    pub timeouts_rising: bool,
    /// Downstreams seen in current timed-out traces, suspects first, by latency ratio.
    pub downstreams: Vec<Downstream>,
    pub cascade: bool,
    pub downstreams_dropped: u64,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn rate(records: &[TraceRecord]) -> (u64, f64) {
    let t = records.iter().filter(|r| r.timed_out).count() as u64;
    let r = if records.is_empty() {
        0.0
    } else {
        t as f64 / records.len() as f64
    };
    (t, r)
}

pub fn detect_cascade(
    baseline: &[TraceRecord],
    current: &[TraceRecord],
    cfg: &CascadeConfig,
) -> CascadeStatus {
    let (_, base_rate) = rate(baseline);
    let (timeouts, cur_rate) = rate(current);
    let rising = timeouts >= cfg.min_timeouts
        && cur_rate >= cfg.min_timeout_rate
        && cur_rate >= cfg.rate_rise * base_rate;

    let mut dropped = 0u64;
    let mut in_timeouts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in current.iter().filter(|r| r.timed_out) {
        for (name, ms) in &r.downstream {
            if !ms.is_finite() {
                dropped += 1;
                continue;
            }
            if let Some(v) = in_timeouts.get_mut(name.as_str()) {
                v.push(*ms);
            } else if in_timeouts.len() < cfg.max_downstreams {
                in_timeouts.insert(name.as_str(), vec![*ms]);
            } else {
                dropped += 1;
            }
        }
    }
    let mut in_baseline: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in baseline {
        for (name, ms) in &r.downstream {
            if ms.is_finite() && in_timeouts.contains_key(name.as_str()) {
                in_baseline.entry(name.as_str()).or_default().push(*ms);
            }
        }
    }
    let mut downstreams: Vec<Downstream> = in_timeouts
        .into_iter()
        .map(|(name, mut lat)| {
            let coverage = lat.len() as f64 / timeouts.max(1) as f64;
            let p50 = median(&mut lat).unwrap_or(0.0);
            let base = in_baseline.get_mut(name).and_then(|v| median(v));
            let ratio = base.map(|b| if b > 0.0 { p50 / b } else { f64::INFINITY });
            let suspect = rising
                && coverage >= cfg.min_coverage
                && ratio.is_some_and(|r| r >= cfg.latency_rise);
            Downstream {
                name: name.to_string(),
                coverage,
                timed_out_p50_ms: p50,
                baseline_p50_ms: base,
                latency_ratio: ratio,
                suspect,
            }
        })
        .collect();
    downstreams.sort_by(|a, b| {
        b.suspect.cmp(&a.suspect).then(
            b.latency_ratio
                .unwrap_or(0.0)
                .total_cmp(&a.latency_ratio.unwrap_or(0.0)),
        )
    });
    CascadeStatus {
        baseline_timeout_rate: base_rate,
        current_timeout_rate: cur_rate,
        current_timeouts: timeouts,
        timeouts_rising: rising,
        cascade: downstreams.iter().any(|d| d.suspect),
        downstreams,
        downstreams_dropped: dropped,
    }
}

impl CascadeStatus {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = Vec::new();
        for d in &self.downstreams {
            out.push(
                MetricSample::new(names::TIMEOUT_CASCADE, f64::from(u8::from(d.suspect)))
                    .label("downstream", d.name.clone()),
            );
            if let Some(r) = d.latency_ratio.filter(|r| r.is_finite()) {
                out.push(
                    MetricSample::new(names::TIMEOUT_CASCADE_LATENCY_RATIO, r)
                        .label("downstream", d.name.clone()),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_table() {
        for (p99, timeout, within, ratio) in [
            (800.0, 1000.0, true, 0.8),
            (801.0, 1000.0, false, 0.801),
            (100.0, 3000.0, true, 100.0 / 3000.0),
            (1.0, 0.0, false, f64::INFINITY),
        ] {
            let b = timeout_budget(p99, timeout, DEFAULT_BUDGET_FRACTION);
            assert_eq!(b.within, within, "{p99} {timeout}");
            assert_eq!(b.ratio, ratio);
        }
    }

    fn rec(timed_out: bool, ds: &[(&str, f64)]) -> TraceRecord {
        TraceRecord {
            timed_out,
            downstream: ds.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
        }
    }

    /// 100 traces: `timeouts` of them time out; the timed-out ones see `db` at `db_slow` ms and
    /// `cache` at 2 ms; the others see `db` at 20 ms.
    fn window(timeouts: usize, db_slow: f64) -> Vec<TraceRecord> {
        (0..100)
            .map(|i| {
                if i < timeouts {
                    rec(true, &[("db", db_slow), ("cache", 2.0)])
                } else {
                    rec(false, &[("db", 20.0), ("cache", 2.0)])
                }
            })
            .collect()
    }

    #[test]
    fn cascade_table() {
        let cfg = CascadeConfig::default();
        // (baseline, current, rising, cascade, top suspect)
        type Case = (
            Vec<TraceRecord>,
            Vec<TraceRecord>,
            bool,
            bool,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            // db latency ×50 in the timed-out traces, timeouts 0 → 10 %.
            (window(0, 0.0), window(10, 1000.0), true, true, Some("db")),
            // Timeouts rose but db is as fast as usual in those traces: no suspect.
            (window(0, 0.0), window(10, 25.0), true, false, None),
            // db slow but timeouts did not rise (10 % before and after).
            (window(10, 1000.0), window(10, 1000.0), false, false, None),
            // Too few timeouts (4 < 5) to call it.
            (window(0, 0.0), window(4, 1000.0), false, false, None),
        ];
        for (i, (base, cur, rising, cascade, top)) in cases.into_iter().enumerate() {
            let s = detect_cascade(&base, &cur, &cfg);
            assert_eq!(s.timeouts_rising, rising, "case {i}: {s:#?}");
            assert_eq!(s.cascade, cascade, "case {i}: {s:#?}");
            let first = s
                .downstreams
                .first()
                .filter(|d| d.suspect)
                .map(|d| d.name.as_str());
            assert_eq!(first, top, "case {i}");
        }
    }

    #[test]
    fn coverage_and_new_downstreams() {
        let cfg = CascadeConfig::default();
        let base = window(0, 0.0);
        // 10 timeouts; only 3 of them call `queue` (slow, never seen in the baseline);
        // all call db, slow.
        let mut cur = window(10, 900.0);
        for r in cur.iter_mut().take(3) {
            r.downstream.push(("queue".into(), 5000.0));
        }
        let s = detect_cascade(&base, &cur, &cfg);
        let q = s.downstreams.iter().find(|d| d.name == "queue").unwrap();
        assert_eq!(q.baseline_p50_ms, None);
        assert!(!q.suspect);
        assert!((q.coverage - 0.3).abs() < 1e-12);
        let db = &s.downstreams[0];
        assert_eq!((db.name.as_str(), db.latency_ratio), ("db", Some(45.0)));
        let names: Vec<_> = s.samples().iter().map(|m| m.name).collect();
        assert!(names.contains(&"lambdawatch_timeout_cascade"));
    }

    #[test]
    fn downstream_names_are_capped() {
        let cfg = CascadeConfig {
            max_downstreams: 2,
            min_timeouts: 1,
            ..CascadeConfig::default()
        };
        let cur = vec![rec(
            true,
            &[("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", f64::NAN)],
        )];
        let s = detect_cascade(&[], &cur, &cfg);
        assert_eq!(s.downstreams.len(), 2);
        assert_eq!(s.downstreams_dropped, 2);
    }
}
