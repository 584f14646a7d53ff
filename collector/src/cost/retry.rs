//! Retry storms: repeated `requestId`s per function, and the DLQ redrive backlog.
//!
//! Lambda's asynchronous retries (and event-source redeliveries) keep the request id, so an id
//! seen more than once within the window is a retry. Consumes `(now, request id)` per
//! invocation ([`RetryTracker::observe`]) with an injected `now` (unix seconds); produces a
//! [`RetryStatus`]: retry fraction = repeats / invocations over the window, and an alert when it
//! passes `threshold` with at least `min_retries` repeats.
//!
//! **Bounded memory, sampled when full.** Ids are hashed to 64 bits (SipHash with fixed keys;
//! two ids collide with probability n²/2⁶⁵, 10⁻¹¹ for 10,000 ids) and kept in one map
//! `hash → (last seen, occurrences)`, at most `max_ids` entries. When the map is full the tracker
//! halves its **hash-based sample**: it keeps only ids whose hash is below a threshold and drops
//! the others, now and from then on. Because the decision depends only on the id, every
//! occurrence of a sampled id is seen, so the retry fraction stays unbiased; its standard error
//! is about `sqrt(f(1−f)/m)` for `m` sampled ids (the status reports `sample_rate` and
//! `sampled_ids`; at the default 1,024 ids and f = 5 % that is ±0.68 percentage points, 95 %:
//! ±1.35). Counts
//! are scaled back by 1/sample_rate. The sample rate rises again (doubles) when the map is below
//! a quarter of the cap after an evaluation (for at most one window afterwards the fraction is
//! slightly underestimated); each halving is counted in `sample_halvings_total`.
//!
//! **Duplicates.** An exporter may deliver the same span twice (a batch re-sent after a timeout);
//! a real retry is a new span with the same request id. Each id keeps 32-bit fingerprints of its
//! last four spans (trace id + span id, [`span_fingerprint`]); a repeat with a known span is
//! [`Observed::Duplicate`], counted in `duplicates_total` and not as a retry. Fingerprints are
//! not checkpointed (a duplicate straddling a restart counts as a retry).
//!
//! **Window.** An id stays while it was seen within `window_secs` (default 15 minutes, longer
//! than Lambda's two async retries 1 and 2 minutes apart); retries arriving later (throttled
//! events can be retried for up to 6 hours) count as new invocations: the fraction is a lower
//! bound for slow retries.
//!
//! **Restarts.** [`RetryTracker::save`] / [`RetryTracker::restore`] carry the ids through a
//! checkpoint (`cost::stage::SavedFunctionCost`), so a retry that straddles a restart is still a
//! retry and a storm that was firing stays one alert. At most `checkpoint_max_ids` ids (default
//! 128) are written per function: above that the saved set is **hash-sampled further** (the
//! same top-bits rule, so the restored fraction stays unbiased; the restored tracker runs at
//! that sample rate and widens it again as usual). Each id is `[hash, last seen, occurrences]`,
//! ≤ 40 B of JSON (hashes do not compress: ≈ 12 B gzipped): ≤ ~5 KB of JSON, ≈ 1.5 KB gzipped
//! per busy function. The hash is the standard library's SipHash with fixed keys: stable for one
//! build; a collector built by another Rust release may hash differently, and then retries that
//! straddle that deploy are not matched (counted as new invocations, as without a checkpoint).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use super::MetricSample;
use super::names;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub window_secs: u64,
    pub max_ids: usize,
    pub threshold: f64,
    pub min_retries: u64,
    /// Resolve when the fraction falls below `threshold × resolve_fraction`.
    pub resolve_fraction: f64,
    /// Ids a checkpoint keeps per function (hash-sampled down to it).
    pub checkpoint_max_ids: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            window_secs: 15 * 60,
            max_ids: 1024,
            threshold: 0.05,
            min_retries: 10,
            resolve_fraction: 0.5,
            checkpoint_max_ids: 128,
        }
    }
}

/// Span fingerprints remembered per request id (Lambda delivers an async event at most three
/// times: the first attempt and two retries; a fourth slot absorbs event-source redeliveries).
const SPANS_KEPT: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_seen: u64,
    occurrences: u32,
    /// Low 32 bits of the fingerprints of the spans seen for this id, a ring of
    /// [`SPANS_KEPT`] (0 = empty slot; a span fingerprint of 0 is stored as 1).
    spans: [u32; SPANS_KEPT],
}

impl Entry {
    fn new(now: u64, span: Option<u32>) -> Self {
        let mut spans = [0; SPANS_KEPT];
        if let Some(s) = span {
            spans[0] = s;
        }
        Entry {
            last_seen: now,
            occurrences: 1,
            spans,
        }
    }

    fn remember(&mut self, span: u32) {
        let slot = self.occurrences as usize % SPANS_KEPT;
        self.spans[slot] = span;
    }
}

/// What [`RetryTracker::observe`] made of one invocation span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First time this request id is seen in the window (or the id is outside the sample).
    New,
    /// The same request id with a different span: an async retry or a redelivery.
    Repeat,
    /// The same request id **and** the same span (trace id + span id): the exporter delivered
    /// the span twice (e.g. a batch re-sent after a timeout). Not a retry; not counted.
    Duplicate,
}

/// The fingerprint the tracker keeps of one span: 32 bits of a hash of its trace id and span
/// id (two different spans of one request id collide with probability 2⁻³², and then the
/// retry is taken for a duplicate).
fn span_bits(fingerprint: u64) -> u32 {
    let b = (fingerprint ^ (fingerprint >> 32)) as u32;
    b.max(1)
}

/// Per-function tracker.
#[derive(Debug, Clone)]
pub struct RetryTracker {
    cfg: RetryConfig,
    ids: HashMap<u64, Entry>,
    /// Ids are kept iff `hash >> shift == 0` in the top bits, i.e. sample rate 2^-shift.
    shift: u32,
    sample_halvings_total: u64,
    firing: bool,
    duplicates_total: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetryStatus {
    pub window_secs: u64,
    /// Estimated invocations in the window (sampled count / sample rate).
    pub invocations: f64,
    /// Estimated repeats (occurrences beyond the first) in the window.
    pub retries: f64,
    pub retry_fraction: f64,
    pub sample_rate: f64,
    pub sampled_ids: usize,
    pub sample_halvings_total: u64,
    /// Duplicate deliveries of a span already seen (same request id, trace id and span id),
    /// ignored since the start (not retries; see [`Observed::Duplicate`]).
    pub duplicates_total: u64,
    pub alert: bool,
    /// The alert started at this evaluation.
    pub started: bool,
    /// The function's DLQ redrive backlog, where known (filled by `cost::stage`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dlq: Vec<DlqQueueBacklog>,
}

/// The state a checkpoint keeps of one tracker (every field defaulted: a checkpoint written
/// before it existed loads as an empty tracker).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SavedRetry {
    /// `(hash, last seen unix s, occurrences)`, sorted by hash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<(u64, u64, u32)>,
    /// Sample rate 2^-shift of the ids kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub shift: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub sample_halvings_total: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub firing: bool,
}

impl SavedRetry {
    pub fn is_empty(&self) -> bool {
        *self == SavedRetry::default()
    }
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

fn hash_id(id: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

/// The fingerprint of a span for [`RetryTracker::observe`]: a hash of its trace id and span id
/// bytes (as OTLP carries them).
pub fn span_fingerprint(trace_id: &[u8], span_id: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one((trace_id, span_id))
}

impl RetryTracker {
    pub fn new(mut cfg: RetryConfig) -> Self {
        cfg.max_ids = cfg.max_ids.max(16);
        RetryTracker {
            ids: HashMap::with_capacity(cfg.max_ids.min(1024)),
            cfg,
            shift: 0,
            sample_halvings_total: 0,
            firing: false,
            duplicates_total: 0,
        }
    }

    fn sampled(&self, hash: u64) -> bool {
        // Top `shift` bits must be zero: rate 2^-shift.
        self.shift == 0 || hash >> (64 - self.shift) == 0
    }

    /// Records one invocation span of `request_id` at `now`. `span` is a fingerprint of the
    /// span's trace id and span id ([`span_fingerprint`]), when known: a span seen before
    /// under the same id is a [`Observed::Duplicate`] delivery and is not counted; without a
    /// fingerprint every repeat of the id counts as a retry.
    pub fn observe(&mut self, now: u64, request_id: &str, span: Option<u64>) -> Observed {
        let hash = hash_id(request_id);
        if !self.sampled(hash) {
            return Observed::New;
        }
        let span = span.map(span_bits);
        let window = self.cfg.window_secs;
        if let Some(e) = self.ids.get_mut(&hash) {
            if e.last_seen.saturating_add(window) < now {
                // Seen before, but outside the window: a new invocation as far as we can tell.
                *e = Entry::new(now, span);
                return Observed::New;
            }
            if let Some(s) = span
                && e.spans.contains(&s)
            {
                self.duplicates_total = self.duplicates_total.saturating_add(1);
                return Observed::Duplicate;
            }
            if let Some(s) = span {
                e.remember(s);
            }
            e.last_seen = e.last_seen.max(now);
            e.occurrences = e.occurrences.saturating_add(1);
            return Observed::Repeat;
        }
        if self.ids.len() >= self.cfg.max_ids {
            self.expire(now);
            while self.ids.len() >= self.cfg.max_ids && self.shift < 63 {
                self.shift += 1;
                self.sample_halvings_total += 1;
                let shift = self.shift;
                self.ids.retain(|h, _| h >> (64 - shift) == 0);
            }
            if !self.sampled(hash) {
                return Observed::New;
            }
        }
        self.ids.insert(hash, Entry::new(now, span));
        Observed::New
    }

    /// The state a checkpoint keeps: at most `checkpoint_max_ids` ids, hash-sampled further
    /// when the tracker holds more (see the module doc).
    pub fn save(&self) -> SavedRetry {
        let cap = self.cfg.checkpoint_max_ids;
        // Ids older than the window before the newest one are expired at the next evaluation.
        let newest = self.ids.values().map(|e| e.last_seen).max().unwrap_or(0);
        let horizon = newest.saturating_sub(self.cfg.window_secs);
        let live = || self.ids.iter().filter(|(_, e)| e.last_seen >= horizon);
        let mut shift = self.shift;
        let kept = |shift: u32, h: u64| shift == 0 || h >> (64 - shift) == 0;
        while shift < 63 && live().filter(|(h, _)| kept(shift, **h)).count() > cap {
            shift += 1;
        }
        let mut ids: Vec<(u64, u64, u32)> = live()
            .filter(|(h, _)| kept(shift, **h))
            .map(|(h, e)| (*h, e.last_seen, e.occurrences))
            .collect();
        ids.sort_unstable();
        SavedRetry {
            ids,
            shift,
            sample_halvings_total: self.sample_halvings_total + u64::from(shift - self.shift),
            firing: self.firing,
        }
    }

    /// Loads a saved state into this (fresh) tracker; ids outside the saved sample and beyond
    /// `max_ids` (the newest kept) are ignored.
    pub fn restore(&mut self, saved: SavedRetry) {
        self.shift = saved.shift.min(63);
        self.sample_halvings_total = saved.sample_halvings_total;
        self.firing = saved.firing;
        let mut ids = saved.ids;
        ids.sort_unstable_by_key(|(_, last_seen, _)| std::cmp::Reverse(*last_seen));
        for (hash, last_seen, occurrences) in ids {
            if self.ids.len() >= self.cfg.max_ids {
                break;
            }
            if self.sampled(hash) && occurrences > 0 {
                // Span fingerprints are not checkpointed: a duplicate delivery straddling a
                // restart counts as a retry.
                self.ids.insert(
                    hash,
                    Entry {
                        last_seen,
                        occurrences,
                        spans: [0; SPANS_KEPT],
                    },
                );
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.cfg.window_secs);
        self.ids.retain(|_, e| e.last_seen >= horizon);
    }

    pub fn evaluate(&mut self, now: u64) -> RetryStatus {
        self.expire(now);
        let rate = 1.0 / (1u64 << self.shift.min(63)) as f64;
        let (inv, reps) = self.ids.values().fold((0u64, 0u64), |(i, r), e| {
            let o = u64::from(e.occurrences);
            (i + o, r + o - 1)
        });
        let fraction = if inv == 0 {
            0.0
        } else {
            reps as f64 / inv as f64
        };
        let retries = reps as f64 / rate;
        let was = self.firing;
        let over = fraction > self.cfg.threshold && retries >= self.cfg.min_retries as f64;
        self.firing = if was {
            fraction >= self.cfg.threshold * self.cfg.resolve_fraction
        } else {
            over
        };
        let sample_halvings_total = self.sample_halvings_total;
        let sampled_ids = self.ids.len();
        if self.shift > 0 && sampled_ids < self.cfg.max_ids / 4 {
            // Room again: admit twice as many ids from now on. Entries kept so far are a subset
            // of the wider sample; ids newly admitted whose first occurrence was not recorded
            // make the fraction a slight underestimate for at most one window.
            self.shift -= 1;
        }
        RetryStatus {
            window_secs: self.cfg.window_secs,
            invocations: inv as f64 / rate,
            retries,
            retry_fraction: fraction,
            sample_rate: rate,
            sampled_ids,
            sample_halvings_total,
            duplicates_total: self.duplicates_total,
            alert: self.firing,
            started: self.firing && !was,
            dlq: Vec::new(),
        }
    }
}

impl RetryStatus {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = vec![
            MetricSample::new(names::RETRY_FRACTION, self.retry_fraction),
            MetricSample::new(names::RETRY_STORM, f64::from(u8::from(self.alert))),
            MetricSample::new(names::RETRY_SAMPLE_RATE, self.sample_rate),
        ];
        out.extend(self.dlq.iter().map(|d| {
            MetricSample::new(names::DLQ_REDRIVE_BACKLOG, d.messages)
                .label("queue", d.queue.clone())
        }));
        out
    }
}

/// Readings older than this (unix s, against the evaluation's `now`) are not reported: the
/// poller stopped seeing data points for the queue.
pub const DLQ_STALE_SECS: u64 = 3600;

/// One DLQ queue's redrive backlog, as the retry status reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DlqQueueBacklog {
    pub queue: String,
    /// SQS `ApproximateNumberOfMessagesVisible` (maximum over the CloudWatch period).
    pub messages: f64,
    /// Start of the CloudWatch period of the reading (unix s).
    pub at_unix: u64,
}

/// The DLQ redrive backlog "where known": the newest `ApproximateNumberOfMessagesVisible` of
/// each configured DLQ queue (`LAMBDAWATCH_DLQ_QUEUES`, queue → function), as the CloudWatch
/// poller reads it. Consumes [`DlqBacklog::record`] per queue per poll; produces each
/// function's queues for its retry status ([`DlqBacklog::for_function`], readings older than
/// [`DLQ_STALE_SECS`] left out). Bounded by `max_queues` (a further queue is counted in
/// `queues_dropped`).
#[derive(Debug, Clone, Default)]
pub struct DlqBacklog {
    /// queue → (function name, messages, period start).
    queues: std::collections::BTreeMap<String, (String, f64, u64)>,
    max_queues: usize,
    pub queues_dropped: u64,
}

impl DlqBacklog {
    pub fn new(max_queues: usize) -> Self {
        DlqBacklog {
            max_queues,
            ..Default::default()
        }
    }

    /// Records the newest reading of `queue` (belonging to `function`); an older or invalid
    /// one is ignored.
    pub fn record(&mut self, queue: &str, function: &str, messages: f64, at_unix: u64) {
        if !messages.is_finite() || messages < 0.0 {
            return;
        }
        let full = self.queues.len() >= self.max_queues;
        match self.queues.get_mut(queue) {
            Some(e) if e.2 > at_unix => {}
            Some(e) => *e = (function.to_owned(), messages, at_unix),
            None if full => self.queues_dropped += 1,
            None => {
                self.queues
                    .insert(queue.to_owned(), (function.to_owned(), messages, at_unix));
            }
        }
    }

    /// The queues of `function` with a reading no older than [`DLQ_STALE_SECS`] at `now`.
    pub fn for_function(&self, function: &str, now: u64) -> Vec<DlqQueueBacklog> {
        self.queues
            .iter()
            .filter(|(_, (f, _, at))| f == function && at.saturating_add(DLQ_STALE_SECS) >= now)
            .map(|(q, (_, messages, at))| DlqQueueBacklog {
                queue: q.clone(),
                messages: *messages,
                at_unix: *at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_windows() {
        // (ids seen in order with their time offset, expected retries, fraction, alert)
        type Case = (&'static [(&'static str, u64)], f64, f64, bool);
        let cases: &[Case] = &[
            (&[("a", 0), ("b", 1), ("c", 2)], 0.0, 0.0, false),
            (&[("a", 0), ("a", 60), ("a", 180)], 2.0, 2.0 / 3.0, false), // below min_retries
            (&[("a", 0), ("b", 0), ("a", 60)], 1.0, 1.0 / 3.0, false),
            // Retry after the window: a new invocation.
            (&[("a", 0), ("a", 16 * 60)], 0.0, 0.0, false),
        ];
        for (seq, retries, fraction, alert) in cases {
            let mut t = RetryTracker::new(RetryConfig::default());
            for (id, at) in *seq {
                t.observe(*at, id, None);
            }
            let last = seq.last().map_or(0, |s| s.1);
            let s = t.evaluate(last);
            assert_eq!(s.retries, *retries, "{seq:?}");
            assert!(
                (s.retry_fraction - fraction).abs() < 1e-12,
                "{seq:?}: {s:?}"
            );
            assert_eq!(s.alert, *alert);
        }
    }

    #[test]
    fn a_duplicate_delivery_is_not_a_retry_but_a_new_span_is() {
        let fp = |span: u8| Some(span_fingerprint(&[7; 16], &[span; 8]));
        let mut t = RetryTracker::new(RetryConfig::default());
        // 100 invocations; the exporter re-sends the batch of the first 20 (same spans).
        for i in 0..100 {
            assert_eq!(t.observe(0, &format!("id-{i}"), fp(i)), Observed::New);
        }
        for i in 0..20 {
            assert_eq!(t.observe(5, &format!("id-{i}"), fp(i)), Observed::Duplicate);
        }
        let s = t.evaluate(10);
        assert_eq!((s.retries, s.invocations), (0.0, 100.0), "{s:?}");
        assert_eq!(s.duplicates_total, 20);
        assert!(!s.alert);
        // Lambda retries 20 of them a minute later: new spans (another span id), same ids.
        for i in 0..20u8 {
            assert_eq!(
                t.observe(60, &format!("id-{i}"), fp(100 + i)),
                Observed::Repeat
            );
        }
        // A duplicate of the first attempt arriving after the retry is still a duplicate.
        assert_eq!(t.observe(61, "id-0", fp(0)), Observed::Duplicate);
        let s = t.evaluate(70);
        assert_eq!((s.retries, s.invocations), (20.0, 120.0), "{s:?}");
        assert_eq!(s.duplicates_total, 21);
        assert!(s.alert);
        // Without fingerprints (spans without ids) a repeat is counted as before.
        let mut t = RetryTracker::new(RetryConfig::default());
        t.observe(0, "a", None);
        assert_eq!(t.observe(1, "a", None), Observed::Repeat);
    }

    #[test]
    fn alert_needs_fraction_and_count_then_resolves_with_hysteresis() {
        let mut t = RetryTracker::new(RetryConfig::default());
        for i in 0..100 {
            t.observe(0, &format!("id-{i}"), None);
        }
        // 10 retries of 100 → 10/110 = 9 % > 5 %, 10 ≥ min 10.
        for i in 0..10 {
            t.observe(60, &format!("id-{i}"), None);
        }
        let s = t.evaluate(60);
        assert!(s.alert && s.started, "{s:?}");
        // Dilute to 10/250 = 4 %: above 2.5 % (resolve), still firing, not restarted.
        for i in 100..240 {
            t.observe(120, &format!("id-{i}"), None);
        }
        let s = t.evaluate(120);
        assert!(s.alert && !s.started, "{s:?}");
        // After the window, everything expires: resolved.
        let s = t.evaluate(120 + 16 * 60);
        assert!(!s.alert);
        assert_eq!(s.invocations, 0.0);
    }

    #[test]
    fn cap_forces_hash_sampling_and_keeps_the_fraction() {
        let cfg = RetryConfig {
            max_ids: 1024,
            ..RetryConfig::default()
        };
        let mut t = RetryTracker::new(cfg);
        // 40,000 ids within one window, 20 % of them retried once.
        for i in 0..40_000u32 {
            t.observe(u64::from(i / 100), &format!("req-{i}"), None);
            if i % 5 == 0 {
                t.observe(u64::from(i / 100) + 60, &format!("req-{i}"), None);
            }
        }
        let s = t.evaluate(460);
        assert!(s.sampled_ids <= 1024);
        assert!(s.sample_rate < 0.05, "{s:?}");
        assert!(s.sample_halvings_total >= 5);
        // True fraction: 8,000 / 48,000 = 1/6. Allow 3 standard errors, 3·sqrt(f(1-f)/m).
        let m = s.sampled_ids as f64;
        let bound = 3.0 * (1.0f64 / 6.0 * 5.0 / 6.0 / m).sqrt();
        assert!(
            (s.retry_fraction - 1.0 / 6.0).abs() < bound,
            "{} vs 1/6 ± {bound}",
            s.retry_fraction
        );
        assert!((s.invocations - 48_000.0).abs() / 48_000.0 < 0.15, "{s:?}");
    }

    #[test]
    fn dlq_backlog_is_the_newest_reading_per_queue_bounded_and_fresh() {
        let mut d = DlqBacklog::new(2);
        d.record("q1", "orders", 10.0, 600);
        d.record("q1", "orders", 12.0, 540); // older: ignored
        d.record("q1", "orders", 3.0, 660);
        d.record("q2", "billing", 0.0, 660);
        d.record("q3", "orders", 1.0, 660); // beyond max_queues
        d.record("q2", "billing", f64::NAN, 720);
        assert_eq!(d.queues_dropped, 1);
        let q = d.for_function("orders", 700);
        assert_eq!(
            q,
            vec![DlqQueueBacklog {
                queue: "q1".into(),
                messages: 3.0,
                at_unix: 660
            }]
        );
        assert_eq!(d.for_function("billing", 700)[0].messages, 0.0);
        // An hour without a new data point: no longer reported.
        assert!(
            d.for_function("orders", 660 + DLQ_STALE_SECS + 1)
                .is_empty()
        );
        let mut st = RetryTracker::new(RetryConfig::default()).evaluate(700);
        st.dlq = q;
        let s = st.samples();
        let b = s
            .iter()
            .find(|m| m.name == names::DLQ_REDRIVE_BACKLOG)
            .unwrap();
        assert_eq!(b.labels, vec![("queue", "q1".to_string())]);
        assert_eq!(b.value, 3.0);
        assert!(!b.help().is_empty());
    }
}
