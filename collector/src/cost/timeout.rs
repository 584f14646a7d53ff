//! Timeout budget and timeout cascades.
//!
//! **Budget.** [`timeout_budget`]: P99 duration against the configured timeout; within budget
//! while `p99 ≤ fraction × timeout` (default 80 %, the SLO of issue 4).
//!
//! **Cascade.** A function's timeouts often come from one slow dependency. Function code
//! instrumented with an OpenTelemetry SDK sends CLIENT spans (the downstream named by
//! `peer.service`, else `server.address`, `rpc.service`, `db.system`) in the trace of the
//! invocation. In the running collector:
//!
//! ```text
//! Event::Client (trace id, downstream, latency) ──┐
//! Event::InvocationTrace (trace id, function)  ───┴─► TraceJoin (bounded recent-trace map)
//!        └─ joined ─► CascadeWindow of the function (per minute: invocations, timeouts, and per
//!                     downstream a latency histogram)  ──evaluate(now)──► CascadeStatus
//! ```
//!
//! - [`TraceJoin`] consumes both kinds in any order: a client span that arrives before its
//!   invocation waits in the map (≤ `max_clients_per_trace` per trace, beyond counted); when the
//!   invocation arrives they are recorded in that function's window, as are later client spans
//!   of the same trace. **Bounded** by `trace_capacity` traces; when full the oldest trace is
//!   evicted and counted (`evicted_joined`, or `evicted_unjoined` when its client spans never
//!   met their invocation). A trace is attributed to the first function whose invocation
//!   carries it (a synchronous call to another function shares the trace id; its invocation is
//!   counted in `shared_traces` and joins nothing).
//! - [`CascadeWindow`] (one per function) keeps `recent_minutes + baseline_minutes` one-minute
//!   buckets (a ring): invocations, timeouts, and for each downstream (≤ `max_downstreams` names
//!   per function, further names counted in `downstreams_dropped`) a log histogram of its client
//!   spans' latency ([`super::advice::LogHist`], P99 ≤ 9 % high). An event older than the ring
//!   is counted `late`. Memory: a few KB when latencies are steady; worst case
//!   `minutes × max_downstreams × 256 × 8 B` (≈ 570 KB with the defaults).
//! - [`evaluate`] (pure, injected `now`): the recent window is the last `recent_minutes`
//!   minutes up to `now`, the baseline the `baseline_minutes` before it. A cascade is flagged
//!   when **both** rose:
//!   1. timeouts: at least `min_timeouts` in the recent window, a timeout fraction of at least
//!      `min_timeout_rate`, and at least `rate_rise` × the baseline's fraction; and
//!   2. a downstream's P99 latency in the function's traces: at least `min_latency_samples`
//!      client spans in each window and a recent P99 ≥ `latency_rise` × the baseline P99.
//!
//!   Every downstream that rose is a suspect, ranked by latency ratio.
//!
//! Why the P99 over all of the function's traces and not only the timed-out ones: when Lambda
//! times an invocation out it stops the runtime, so the SDK rarely exports the slow client span
//! of the timed-out invocation itself; the invocations that still finished show the slowdown.
//!
//! Timeouts are counted over every invocation of the function (whether it carries a trace or
//! not); latencies only from client spans joined to the function's invocations.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::MetricSample;
use super::advice::LogHist;
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

/// Cascade thresholds and bounds (YAML `cost.advice.cascade`; defaults documented in
/// `docs/cost.md`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// Recent window, minutes (1–60).
    pub recent_minutes: u64,
    /// Baseline window before it, minutes (1–240).
    pub baseline_minutes: u64,
    pub min_timeouts: u64,
    pub min_timeout_rate: f64,
    pub rate_rise: f64,
    pub latency_rise: f64,
    pub min_latency_samples: u64,
    /// Downstream names tracked per function.
    pub max_downstreams: usize,
    /// Recent traces remembered for the join (all functions together).
    pub trace_capacity: usize,
    /// Client spans waiting for their invocation, per trace.
    pub max_clients_per_trace: usize,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            recent_minutes: 5,
            baseline_minutes: 30,
            min_timeouts: 5,
            min_timeout_rate: 0.01,
            rate_rise: 3.0,
            latency_rise: 2.0,
            min_latency_samples: 10,
            max_downstreams: 8,
            trace_capacity: 16_384,
            max_clients_per_trace: 32,
        }
    }
}

impl CascadeConfig {
    /// Checks the bounds (a configuration error names the field).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.recent_minutes) {
            return Err("cost.advice.cascade.recent_minutes must be 1–60".into());
        }
        if !(1..=240).contains(&self.baseline_minutes) {
            return Err("cost.advice.cascade.baseline_minutes must be 1–240".into());
        }
        if !(1..=64).contains(&self.max_downstreams) {
            return Err("cost.advice.cascade.max_downstreams must be 1–64".into());
        }
        if !(1..=1_000_000).contains(&self.trace_capacity) {
            return Err("cost.advice.cascade.trace_capacity must be 1–1000000".into());
        }
        if self.max_clients_per_trace > 1024 {
            return Err("cost.advice.cascade.max_clients_per_trace must be ≤ 1024".into());
        }
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.min_timeout_rate) && ok(self.rate_rise) && ok(self.latency_rise)) {
            return Err("cost.advice.cascade rates and rises must be non-negative numbers".into());
        }
        Ok(())
    }

    fn minutes(&self) -> u64 {
        self.recent_minutes + self.baseline_minutes
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct MinuteBucket {
    minute: u64,
    invocations: u64,
    timeouts: u64,
    /// `(downstream index, latency histogram)`.
    latency: Vec<(u8, LogHist)>,
}

/// One function's windowed timeouts and downstream latencies (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CascadeWindow {
    ring: Vec<MinuteBucket>,
    names: Vec<String>,
    pub late: u64,
    pub downstreams_dropped: u64,
    /// Client spans recorded (joined to an invocation of this function).
    pub client_spans: u64,
}

impl CascadeWindow {
    fn bucket(&mut self, t_s: u64, cfg: &CascadeConfig) -> Option<&mut MinuteBucket> {
        let n = cfg.minutes() as usize;
        if self.ring.len() != n {
            self.ring = vec![MinuteBucket::default(); n];
        }
        let minute = t_s / 60;
        let b = &mut self.ring[(minute % n as u64) as usize];
        if b.minute > minute {
            self.late += 1;
            return None;
        }
        if b.minute < minute {
            *b = MinuteBucket {
                minute,
                ..MinuteBucket::default()
            };
        }
        Some(b)
    }

    pub fn record_invocation(&mut self, t_s: u64, timed_out: bool, cfg: &CascadeConfig) {
        if let Some(b) = self.bucket(t_s, cfg) {
            b.invocations += 1;
            b.timeouts += u64::from(timed_out);
        }
    }

    pub fn record_client(
        &mut self,
        t_s: u64,
        downstream: &str,
        latency_ms: f64,
        cfg: &CascadeConfig,
    ) {
        let i = match self.names.iter().position(|n| n == downstream) {
            Some(i) => i,
            None if self.names.len() < cfg.max_downstreams.min(usize::from(u8::MAX)) => {
                self.names.push(downstream.to_owned());
                self.names.len() - 1
            }
            None => {
                self.downstreams_dropped += 1;
                return;
            }
        };
        let Some(b) = self.bucket(t_s, cfg) else {
            return;
        };
        let i = i as u8;
        match b.latency.iter_mut().find(|(d, _)| *d == i) {
            Some((_, h)) => h.record(latency_ms),
            None => {
                let mut h = LogHist::default();
                h.record(latency_ms);
                b.latency.push((i, h));
            }
        }
        self.client_spans += 1;
    }

    pub fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<MinuteBucket>()
            + self
                .ring
                .iter()
                .flat_map(|b| &b.latency)
                .map(|(_, h)| 32 + h.heap_bytes())
                .sum::<usize>()
            + self.names.iter().map(|n| n.capacity() + 24).sum::<usize>()
    }
}

/// Timeouts in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TimeoutRate {
    pub invocations: u64,
    pub timeouts: u64,
    pub rate: f64,
}

/// A downstream's latency in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub client_spans: u64,
    /// `None` without client spans.
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Downstream {
    pub name: String,
    pub baseline: Latency,
    pub recent: Latency,
    /// Recent P99 / baseline P99 (when both are known).
    pub latency_ratio: Option<f64>,
    pub latency_rising: bool,
    pub suspect: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CascadeStatus {
    pub recent_minutes: u64,
    pub baseline_minutes: u64,
    pub baseline: TimeoutRate,
    pub recent: TimeoutRate,
    pub timeouts_rising: bool,
    /// Suspects first, by latency ratio.
    pub downstreams: Vec<Downstream>,
    pub cascade: bool,
    /// The top suspect.
    pub suspect: Option<String>,
    pub client_spans: u64,
    pub late: u64,
    pub downstreams_dropped: u64,
}

fn rate(invocations: u64, timeouts: u64) -> TimeoutRate {
    TimeoutRate {
        invocations,
        timeouts,
        rate: if invocations == 0 {
            0.0
        } else {
            timeouts as f64 / invocations as f64
        },
    }
}

/// The cascade verdict of one function's window at `now` (pure).
pub fn evaluate(w: &CascadeWindow, now_s: u64, cfg: &CascadeConfig) -> CascadeStatus {
    let now_min = now_s / 60;
    let recent_from = (now_min + 1).saturating_sub(cfg.recent_minutes);
    let base_from = recent_from.saturating_sub(cfg.baseline_minutes);
    let in_recent = |m: u64| (recent_from..=now_min).contains(&m);
    let in_base = |m: u64| (base_from..recent_from).contains(&m);
    let (mut bi, mut bt, mut ri, mut rt) = (0, 0, 0, 0);
    let mut hists: Vec<(LogHist, LogHist)> = vec![Default::default(); w.names.len()];
    for b in w
        .ring
        .iter()
        .filter(|b| b.invocations > 0 || !b.latency.is_empty())
    {
        let recent = in_recent(b.minute);
        if !recent && !in_base(b.minute) {
            continue;
        }
        if recent {
            (ri, rt) = (ri + b.invocations, rt + b.timeouts);
        } else {
            (bi, bt) = (bi + b.invocations, bt + b.timeouts);
        }
        for (d, h) in &b.latency {
            if let Some((base, rec)) = hists.get_mut(usize::from(*d)) {
                if recent { rec.merge(h) } else { base.merge(h) }
            }
        }
    }
    let (baseline, recent) = (rate(bi, bt), rate(ri, rt));
    let rising = recent.timeouts >= cfg.min_timeouts
        && recent.rate >= cfg.min_timeout_rate
        && recent.rate >= cfg.rate_rise * baseline.rate;
    let lat = |h: &LogHist| Latency {
        client_spans: h.count(),
        p99_ms: h.quantile(0.99),
    };
    let mut downstreams: Vec<Downstream> = w
        .names
        .iter()
        .zip(&hists)
        .filter(|(_, (b, r))| b.count() + r.count() > 0)
        .map(|(name, (b, r))| {
            let (baseline, recent) = (lat(b), lat(r));
            let ratio = match (baseline.p99_ms, recent.p99_ms) {
                (Some(b), Some(r)) if b > 0.0 => Some(r / b),
                _ => None,
            };
            let latency_rising = baseline.client_spans >= cfg.min_latency_samples
                && recent.client_spans >= cfg.min_latency_samples
                && ratio.is_some_and(|x| x >= cfg.latency_rise);
            Downstream {
                name: name.clone(),
                baseline,
                recent,
                latency_ratio: ratio,
                latency_rising,
                suspect: rising && latency_rising,
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
    let suspect = downstreams
        .first()
        .filter(|d| d.suspect)
        .map(|d| d.name.clone());
    CascadeStatus {
        recent_minutes: cfg.recent_minutes,
        baseline_minutes: cfg.baseline_minutes,
        baseline,
        recent,
        timeouts_rising: rising,
        cascade: suspect.is_some(),
        suspect,
        downstreams,
        client_spans: w.client_spans,
        late: w.late,
        downstreams_dropped: w.downstreams_dropped,
    }
}

impl CascadeStatus {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = vec![
            MetricSample::new(names::CASCADE_TIMEOUT_RATIO, self.baseline.rate)
                .label("period", "baseline"),
            MetricSample::new(names::CASCADE_TIMEOUT_RATIO, self.recent.rate)
                .label("period", "recent"),
        ];
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
            for (period, l) in [("baseline", d.baseline), ("recent", d.recent)] {
                if let Some(ms) = l.p99_ms {
                    out.push(
                        MetricSample::new(names::CASCADE_DOWNSTREAM_P99_SECONDS, ms / 1000.0)
                            .label("downstream", d.name.clone())
                            .label("period", period),
                    );
                }
            }
        }
        out
    }
}

enum TraceEntry<K> {
    /// Client spans waiting for their invocation: `(downstream, latency ms, t_s)`.
    Pending(Vec<(String, f64, u64)>),
    /// Joined to the function `K`, whose invocation ended at `t_s`.
    Joined(Arc<K>, u64),
}

/// What the join counted (`/api/v1/cost` `trace_join`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JoinStats {
    pub traces: usize,
    pub capacity: usize,
    pub client_spans_joined: u64,
    pub evicted_joined: u64,
    /// Traces evicted with client spans that never met their invocation.
    pub evicted_unjoined: u64,
    /// Client spans beyond `max_clients_per_trace` while waiting.
    pub clients_dropped: u64,
    /// Invocations of a trace already joined to a function.
    pub shared_traces: u64,
}

/// The bounded recent-trace map joining client spans to invocations (see the module doc).
pub struct TraceJoin<K> {
    map: HashMap<u128, TraceEntry<K>>,
    order: VecDeque<u128>,
    capacity: usize,
    max_clients: usize,
    stats: JoinStats,
}

impl<K> std::fmt::Debug for TraceJoin<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceJoin")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<K> TraceJoin<K> {
    pub fn new(cfg: &CascadeConfig) -> Self {
        TraceJoin {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: cfg.trace_capacity.max(1),
            max_clients: cfg.max_clients_per_trace,
            stats: JoinStats::default(),
        }
    }

    pub fn stats(&self) -> JoinStats {
        JoinStats {
            traces: self.map.len(),
            capacity: self.capacity,
            ..self.stats
        }
    }

    fn insert(&mut self, id: u128, e: TraceEntry<K>) {
        while self.map.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.map.remove(&old) {
                Some(TraceEntry::Joined(..)) => self.stats.evicted_joined += 1,
                Some(TraceEntry::Pending(_)) => self.stats.evicted_unjoined += 1,
                None => {}
            }
        }
        self.map.insert(id, e);
        self.order.push_back(id);
    }

    /// An invocation of `function` carried `trace_id`: returns the client spans that were
    /// waiting for it (`(downstream, latency ms)`), to record at the invocation's `t_s`.
    pub fn invocation(
        &mut self,
        trace_id: u128,
        function: &Arc<K>,
        t_s: u64,
    ) -> Vec<(String, f64)> {
        match self.map.get_mut(&trace_id) {
            Some(TraceEntry::Joined(..)) => {
                self.stats.shared_traces += 1;
                Vec::new()
            }
            Some(e @ TraceEntry::Pending(_)) => {
                let TraceEntry::Pending(waiting) =
                    std::mem::replace(e, TraceEntry::Joined(function.clone(), t_s))
                else {
                    return Vec::new();
                };
                self.stats.client_spans_joined += waiting.len() as u64;
                waiting.into_iter().map(|(d, l, _)| (d, l)).collect()
            }
            None => {
                self.insert(trace_id, TraceEntry::Joined(function.clone(), t_s));
                Vec::new()
            }
        }
    }

    /// A client span of `trace_id`: `Some((function, its invocation's t_s))` when the trace is
    /// joined (the caller records it there), else it waits.
    pub fn client(
        &mut self,
        trace_id: u128,
        downstream: &str,
        latency_ms: f64,
        t_s: u64,
    ) -> Option<(Arc<K>, u64)> {
        match self.map.get_mut(&trace_id) {
            Some(TraceEntry::Joined(k, t)) => {
                self.stats.client_spans_joined += 1;
                Some((k.clone(), *t))
            }
            Some(TraceEntry::Pending(v)) => {
                if v.len() < self.max_clients {
                    v.push((downstream.to_owned(), latency_ms, t_s));
                } else {
                    self.stats.clients_dropped += 1;
                }
                None
            }
            None => {
                if self.max_clients == 0 {
                    self.stats.clients_dropped += 1;
                    return None;
                }
                self.insert(
                    trace_id,
                    TraceEntry::Pending(vec![(downstream.to_owned(), latency_ms, t_s)]),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    const T0: u64 = 1_795_996_800; // a minute boundary

    /// 35 minutes of traffic, 100 invocations a minute, each with a `db` and a `cache` call:
    /// the baseline (first 30 minutes) times out `base_timeouts` per minute with db at 20 ms;
    /// the recent 5 minutes time out `recent_timeouts` per minute with db at `recent_db` ms.
    fn window(base_timeouts: u64, recent_timeouts: u64, recent_db: f64) -> CascadeWindow {
        let cfg = CascadeConfig::default();
        let mut w = CascadeWindow::default();
        for m in 0..35u64 {
            let recent = m >= 30;
            let t = T0 + m * 60 + 30;
            let timeouts = if recent {
                recent_timeouts
            } else {
                base_timeouts
            };
            for i in 0..100u64 {
                w.record_invocation(t, i < timeouts, &cfg);
                let db = if recent { recent_db } else { 20.0 };
                w.record_client(t, "db", db + (i % 5) as f64, &cfg);
                w.record_client(t, "cache", 2.0, &cfg);
            }
        }
        w
    }

    /// The evaluation a minute after the last bucket's start: the recent window is minutes
    /// 30–34, the baseline 0–29.
    fn eval(w: &CascadeWindow) -> CascadeStatus {
        evaluate(w, T0 + 34 * 60 + 59, &CascadeConfig::default())
    }

    #[test]
    fn timeouts_and_latency_rising_together_flag_the_downstream() {
        let s = eval(&window(0, 10, 900.0));
        assert!(s.timeouts_rising && s.cascade, "{s:#?}");
        assert_eq!(s.suspect.as_deref(), Some("db"));
        assert_eq!((s.baseline.invocations, s.baseline.timeouts), (3000, 0));
        assert_eq!((s.recent.invocations, s.recent.timeouts), (500, 50));
        let db = &s.downstreams[0];
        assert_eq!(db.name, "db");
        assert!(db.suspect && db.latency_rising);
        assert_eq!(
            (db.baseline.client_spans, db.recent.client_spans),
            (3000, 500)
        );
        // Log buckets of 2^(1/8): the P99 is the bucket's upper bound, ≤ 9 % above the value.
        let (b, r) = (db.baseline.p99_ms.unwrap(), db.recent.p99_ms.unwrap());
        assert!((24.0..=24.0 * 1.0905).contains(&b), "{b}");
        assert!((904.0..=904.0 * 1.0905).contains(&r), "{r}");
        let cache = s.downstreams.iter().find(|d| d.name == "cache").unwrap();
        assert!(!cache.suspect && !cache.latency_rising);
        let samples = s.samples();
        let find = |name: &str, label: &str| {
            samples
                .iter()
                .find(|m| m.name == name && m.labels.iter().any(|(_, v)| v == label))
                .map(|m| m.value)
        };
        assert_eq!(find(names::TIMEOUT_CASCADE, "db"), Some(1.0));
        assert_eq!(find(names::TIMEOUT_CASCADE, "cache"), Some(0.0));
        assert_eq!(find(names::CASCADE_TIMEOUT_RATIO, "recent"), Some(0.1));
        assert!(find(names::TIMEOUT_CASCADE_LATENCY_RATIO, "db").unwrap() > 30.0);
    }

    #[test]
    fn timeouts_alone_or_latency_alone_are_not_a_cascade() {
        // (baseline timeouts/min, recent timeouts/min, recent db ms, rising, latency rising)
        for (base, recent, db, rising, lat) in [
            (0, 10, 21.0, true, false),   // timeouts rose, db as fast as usual
            (0, 0, 900.0, false, true),   // db slow, no timeouts
            (10, 10, 900.0, false, true), // db slow, timeouts as usual (10 %)
            (0, 0, 21.0, false, false),
        ] {
            let s = eval(&window(base, recent, db));
            assert_eq!(s.timeouts_rising, rising, "{base} {recent} {db}: {s:#?}");
            let d = s.downstreams.iter().find(|d| d.name == "db").unwrap();
            assert_eq!(d.latency_rising, lat, "{base} {recent} {db}");
            assert!(!s.cascade && s.suspect.is_none(), "{s:#?}");
        }
    }

    #[test]
    fn few_timeouts_or_few_samples_are_not_called() {
        // 4 timeouts in the recent window (< 5).
        let mut w = CascadeWindow::default();
        let cfg = CascadeConfig::default();
        for m in 0..35u64 {
            let t = T0 + m * 60;
            for i in 0..20u64 {
                w.record_invocation(t, m >= 30 && i == 0 && m < 34, &cfg);
                w.record_client(t, "db", if m >= 30 { 500.0 } else { 10.0 }, &cfg);
            }
        }
        let s = eval(&w);
        assert_eq!(s.recent.timeouts, 4);
        assert!(!s.timeouts_rising && !s.cascade);
        // The same rise in latency with 9 recent client spans (< 10) is not trusted.
        let mut w = window(0, 10, 20.0);
        for _ in 0..9 {
            w.record_client(T0 + 34 * 60, "queue", 5000.0, &cfg);
        }
        for m in 0..30u64 {
            w.record_client(T0 + m * 60, "queue", 10.0, &cfg);
        }
        let s = eval(&w);
        let q = s.downstreams.iter().find(|d| d.name == "queue").unwrap();
        assert_eq!(q.recent.client_spans, 9);
        assert!(!q.latency_rising && !s.cascade);
    }

    #[test]
    fn the_window_slides_and_late_events_are_counted() {
        let cfg = CascadeConfig::default();
        let mut w = window(0, 10, 900.0);
        // An hour later the rise is out of both windows.
        let s = evaluate(&w, T0 + 95 * 60, &cfg);
        assert_eq!((s.recent.invocations, s.baseline.invocations), (0, 0));
        assert!(!s.cascade);
        // Newer traffic reuses the ring; an event older than the ring is late.
        w.record_invocation(T0 + 100 * 60, true, &cfg);
        w.record_invocation(T0 + 100 * 60 - 35 * 60, true, &cfg);
        assert_eq!(w.late, 1);
    }

    #[test]
    fn downstream_names_are_capped() {
        let cfg = CascadeConfig {
            max_downstreams: 2,
            ..CascadeConfig::default()
        };
        let mut w = CascadeWindow::default();
        for d in ["a", "b", "c", "d", "a"] {
            w.record_client(T0, d, 1.0, &cfg);
        }
        assert_eq!(w.names, vec!["a", "b"]);
        assert_eq!(w.downstreams_dropped, 2);
        assert_eq!(w.client_spans, 3);
    }

    #[test]
    fn the_join_works_in_either_order_and_counts_evictions() {
        let cfg = CascadeConfig {
            trace_capacity: 3,
            max_clients_per_trace: 2,
            ..CascadeConfig::default()
        };
        let f = Arc::new("f");
        let g = Arc::new("g");
        let mut j: TraceJoin<&str> = TraceJoin::new(&cfg);
        // Client first, then its invocation: the waiting spans are handed over.
        assert_eq!(j.client(1, "db", 5.0, T0), None);
        assert_eq!(j.client(1, "db", 6.0, T0), None);
        assert_eq!(j.client(1, "db", 7.0, T0), None); // beyond 2 per trace
        assert_eq!(
            j.invocation(1, &f, T0 + 1),
            vec![("db".to_owned(), 5.0), ("db".to_owned(), 6.0)]
        );
        // Invocation first, then a client span: joined at once, at the invocation's time.
        assert!(j.invocation(2, &g, T0 + 2).is_empty());
        let (k, t) = j.client(2, "cache", 1.0, T0 + 9).unwrap();
        assert_eq!((*k, t), ("g", T0 + 2));
        // Another function's invocation in a trace already joined joins nothing.
        assert!(j.invocation(2, &f, T0 + 3).is_empty());
        // A client span alone, then two more traces: capacity 3 evicts the oldest two.
        assert_eq!(j.client(3, "db", 1.0, T0), None);
        assert!(j.invocation(4, &f, T0).is_empty());
        assert_eq!(j.client(5, "db", 1.0, T0), None);
        let s = j.stats();
        assert_eq!(s.traces, 3);
        assert_eq!((s.evicted_joined, s.evicted_unjoined), (2, 0));
        assert!(j.invocation(6, &f, T0).is_empty());
        assert!(j.invocation(7, &f, T0).is_empty());
        let s = j.stats();
        assert_eq!((s.evicted_joined, s.evicted_unjoined), (3, 1), "{s:?}");
        assert_eq!(s.client_spans_joined, 3);
        assert_eq!(s.clients_dropped, 1);
        assert_eq!(s.shared_traces, 1);
    }
}
