//! Time-bucketed exact event counts: three rings of buckets of growing width, so that any window
//! from 1 minute to 30 days is answered exactly at its ring's granularity, in bounded memory.
//!
//! | ring | bucket width | buckets | span | answers windows |
//! |---|---|---|---|---|
//! | 0 | 1 min | 360 | 6 h | ≤ 6 h (`5m`, `30m`, `1h`, `6h`) |
//! | 1 | 1 h | 72 | 3 d | ≤ 3 d (`3d`) |
//! | 2 | 12 h | 61 | 30.5 d | ≤ 30.5 d (`30d`) |
//!
//! Every event is added to all three rings, so every ring is exact at its own granularity. A
//! window of length `W` is answered by the finest ring that spans it, as the `ceil(W / width)`
//! most recent buckets including the current, partially elapsed one: it covers between
//! `W − width` and `W` of history ([`Window::covered_secs`] says exactly how much). Events older
//! than a ring's span are not added to that ring (the caller counts them as late).
//!
//! Why 1-minute buckets up to 6 h: Prometheus evaluates `increase(…[6h])` over one-minute
//! samples, so the `6h` window (the ticket rule's short window, the second page rule's long
//! window) must move minute by minute for the two evaluators to agree within one evaluation
//! interval (issue 6; `collector/tests/differential.rs`). Until format 2 of the checkpoint the
//! `6h` window came from 10-minute buckets and resolved tickets up to 10 minutes early.
//!
//! ## Running totals
//! Summing 360 buckets per counter per window on every evaluation would cost more than all the
//! rest of the evaluation, so each ring also keeps, per counter, the running total of the
//! windows of [`TRACKED`] (the report windows, which include every window of the default spec):
//! the sum of the `k` most recent buckets up to the ring's head. An add updates the totals whose
//! window holds the bucket; moving the head forward subtracts the buckets that leave each window.
//! A window at `now` is then the total minus the buckets between the head and `now` (a function
//! silent for `g` buckets: `min(g, k − g)` buckets walked), and any other window length is the
//! nearest tracked total plus or minus the buckets between them. Evaluation stays a pure
//! function of `(series, now)`: it reads the totals, never updates them. The totals are not
//! serialised; they are rebuilt from the buckets when a series is deserialised.
//!
//! Memory: `493 buckets × stride × 4 B` for the counters (u32, saturating) plus
//! `6 tracked windows × stride × 8 B` for the totals, allocated on first use of a ring. For the
//! invocation series of the default spec (stride 6) that is 11,832 B + 288 B.

use serde::{Deserialize, Serialize};

/// `(bucket width in seconds, number of buckets)` per ring, finest first.
pub const RINGS: [(u64, usize); 3] = [(60, 360), (3600, 72), (43_200, 61)];

/// Total buckets over all rings.
pub const BUCKETS: usize = 360 + 72 + 61;

/// The longest window a [`Series`] can answer, in seconds.
pub const MAX_WINDOW_SECS: u64 = 43_200 * 61;

/// Per ring, the window lengths (in buckets, ascending) kept as running totals: `5m 30m 1h 6h`
/// on ring 0, `3d` on ring 1, `30d` on ring 2 (`slo::eval::REPORT_WINDOWS`, checked by a test
/// there).
pub const TRACKED: [&[u64]; 3] = [&[5, 30, 60, 360], &[72], &[60]];

/// Number of tracked windows over all rings.
pub const TRACKED_WINDOWS: usize = 6;

/// The rings of checkpoint format 1 (`crate::checkpoint`): the `6h` window came from a ring of
/// 36 10-minute buckets. Read only to convert ([`Series`]'s deserialisation).
pub const RINGS_V1: [(u64, usize); 4] = [(60, 60), (600, 36), (3600, 72), (43_200, 61)];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ring {
    width: u64,
    len: usize,
    /// Bucket index (`t / width`) of the newest bucket, once anything was recorded.
    head: Option<u64>,
    #[serde(with = "crate::checkpoint::zero_runs")]
    data: Vec<u32>,
    /// `TRACKED[ring].len() × stride` totals: block `j` holds the sum of the `TRACKED[ring][j]`
    /// buckets ending at `head`. Derived from `data` (not serialised).
    #[serde(skip)]
    totals: Vec<u64>,
}

impl Ring {
    fn new(width: u64, len: usize) -> Self {
        Self {
            width,
            len,
            head: None,
            data: Vec::new(),
            totals: Vec::new(),
        }
    }

    fn live(&self, idx: u64) -> bool {
        match self.head {
            Some(h) => idx <= h && idx + self.len as u64 > h,
            None => false,
        }
    }

    /// Adds (`sub` false) or subtracts the counters of the live buckets `(lo, hi]` (clipped to
    /// the live range and the head) into `acc` (`stride` counters).
    fn range(&self, lo: u64, hi: u64, stride: usize, sub: bool, acc: &mut [u64]) {
        let Some(head) = self.head else {
            return;
        };
        if self.data.len() != self.len * stride {
            return;
        }
        let lo = lo.max(head.saturating_sub(self.len as u64));
        let hi = hi.min(head);
        if lo >= hi {
            return;
        }
        let len = self.len as u64;
        let mut slot = ((lo + 1) % len) as usize;
        for _ in lo..hi {
            let b = slot * stride;
            for (o, v) in acc.iter_mut().zip(&self.data[b..b + stride]) {
                *o = if sub {
                    o.saturating_sub(u64::from(*v))
                } else {
                    *o + u64::from(*v)
                };
            }
            slot += 1;
            if slot == self.len {
                slot = 0;
            }
        }
    }

    /// Recomputes the running totals from the buckets (after deserialisation or conversion).
    fn rebuild_totals(&mut self, tracked: &[u64], stride: usize) {
        self.totals.clear();
        if self.data.len() != self.len * stride {
            return;
        }
        self.totals.resize(tracked.len() * stride, 0);
        let Some(head) = self.head else {
            return;
        };
        let mut totals = std::mem::take(&mut self.totals);
        for (j, k) in tracked.iter().enumerate() {
            let acc = &mut totals[j * stride..(j + 1) * stride];
            self.range(head.saturating_sub(*k), head, stride, false, acc);
        }
        self.totals = totals;
    }

    /// Adds `n` to counter `slot` of bucket `idx` (advancing the head to it if newer); `false`
    /// when the bucket is older than the ring keeps.
    fn add_at(&mut self, idx: u64, slot: usize, n: u32, tracked: &[u64], stride: usize) -> bool {
        if self.data.len() != self.len * stride {
            // First use of the ring (a restored ring of another size is refused before use:
            // `is_well_formed`).
            self.data = vec![0; self.len * stride];
            self.head = None;
        }
        if self.totals.len() != tracked.len() * stride {
            self.rebuild_totals(tracked, stride);
        }
        self.advance(idx, tracked, stride);
        let Some(head) = self.head else {
            return false;
        };
        if !self.live(idx) {
            return false;
        }
        let b = (idx % self.len as u64) as usize * stride + slot;
        let old = self.data[b];
        let new = old.saturating_add(n);
        self.data[b] = new;
        let d = u64::from(new - old);
        for (j, k) in tracked.iter().enumerate() {
            if idx + k > head
                && let Some(t) = self.totals.get_mut(j * stride + slot)
            {
                *t += d;
            }
        }
        true
    }

    /// Moves the head forward to `idx`, keeping the totals equal to their windows' sums.
    fn advance(&mut self, idx: u64, tracked: &[u64], stride: usize) {
        let Some(h) = self.head else {
            self.head = Some(idx);
            return;
        };
        if idx <= h {
            return;
        }
        let len = self.len as u64;
        if idx - h >= len {
            self.data.fill(0);
            self.totals.fill(0);
            self.head = Some(idx);
            return;
        }
        for nh in h + 1..=idx {
            // Bucket `nh − k` leaves the window of `k` buckets. It is still live (k ≤ len), and
            // for k = len it is the slot `nh` is about to take: subtract before clearing.
            for (j, k) in tracked.iter().enumerate() {
                if let Some(leaving) = nh.checked_sub(*k) {
                    let b = (leaving % len) as usize * stride;
                    let t = &mut self.totals[j * stride..(j + 1) * stride];
                    for (o, v) in t.iter_mut().zip(&self.data[b..b + stride]) {
                        *o = o.saturating_sub(u64::from(*v));
                    }
                }
            }
            let b = (nh % len) as usize * stride;
            self.data[b..b + stride].fill(0);
        }
        self.head = Some(idx);
    }
}

/// A fixed-stride vector of counters per bucket, in the rings of [`RINGS`].
///
/// Deserialisation goes through [`SeriesRepr`]: it rebuilds the running totals and converts the
/// rings of checkpoint format 1 ([`RINGS_V1`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "SeriesRepr")]
pub struct Series {
    stride: usize,
    /// [`RINGS`] in order (a restored series of another shape is kept as read and refused by
    /// [`Series::is_well_formed`]).
    rings: Vec<Ring>,
    /// Set when deserialisation converted format-1 rings.
    #[serde(skip)]
    converted: bool,
}

/// A [`Series`] as stored: the rings as written, of whichever format.
#[derive(Debug, Deserialize)]
pub struct SeriesRepr {
    stride: usize,
    rings: Vec<Ring>,
}

fn shaped(rings: &[Ring], shape: &[(u64, usize)], stride: usize) -> bool {
    rings.len() == shape.len()
        && rings.iter().zip(shape).all(|(r, (width, len))| {
            r.width == *width
                && r.len == *len
                && (r.data.is_empty() || r.data.len() == len * stride)
        })
}

impl From<SeriesRepr> for Series {
    fn from(r: SeriesRepr) -> Self {
        let stride = r.stride;
        let (mut rings, converted) = if shaped(&r.rings, &RINGS_V1, stride) {
            (convert_v1(r.rings, stride), true)
        } else {
            (r.rings, false)
        };
        if shaped(&rings, &RINGS, stride) {
            for (ring, tracked) in rings.iter_mut().zip(TRACKED) {
                ring.rebuild_totals(tracked, stride);
            }
        }
        Self {
            stride,
            rings,
            converted,
        }
    }
}

/// Format-1 rings → [`RINGS`]. The 1-hour and 12-hour rings (the `3d` and `30d` windows, the
/// error budgets) are kept as they are. The new 1-minute ring takes the old one's last hour
/// minute by minute; older minutes exist only inside coarser buckets, so each 10-minute bucket's
/// count, less what its minutes already hold, is spread evenly over its other minutes (the
/// remainder to the earliest), and the few minutes older than the 10-minute ring (up to 9) get
/// the same treatment from their 1-hour bucket. Every window covering whole coarse buckets is
/// therefore exact; a window edge inside one is off by at most that bucket's uneven share, as
/// in format 1, until 6 h after the upgrade.
fn convert_v1(old: Vec<Ring>, stride: usize) -> Vec<Ring> {
    let mut it = old.into_iter();
    let (Some(m1), Some(m10), Some(h1), Some(h12)) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Vec::new();
    };
    let (width, len) = RINGS[0];
    let mut ring = Ring::new(width, len);
    let Some(head) = m1.head.filter(|_| !m1.data.is_empty()) else {
        return vec![ring, h1, h12];
    };
    ring.head = Some(head);
    ring.data = vec![0; len * stride];
    let lo = head.saturating_sub(len as u64); // exclusive: the new ring's minutes are (lo, head]
    let mut known_from = head.saturating_sub(m1.len as u64) + 1;
    for m in known_from..=head {
        let (from, to) = (
            (m % m1.len as u64) as usize * stride,
            (m % len as u64) as usize * stride,
        );
        ring.data[to..to + stride].copy_from_slice(&m1.data[from..from + stride]);
    }
    // Coarser rings, finest first: each bucket's minutes below `known_from` get its remainder.
    for (coarse, minutes) in [(&m10, 10u64), (&h1, 60)] {
        let Some(ch) = coarse.head.filter(|_| !coarse.data.is_empty()) else {
            continue;
        };
        let oldest = ch.saturating_sub(coarse.len as u64) + 1;
        let first_b = ((lo + 1) / minutes).max(oldest);
        let last_b = (known_from.saturating_sub(1) / minutes).min(ch);
        for b in first_b..=last_b {
            let src = (b % coarse.len as u64) as usize * stride;
            spread(
                &mut ring,
                stride,
                &coarse.data[src..src + stride],
                (b * minutes, b * minutes + minutes - 1),
                known_from,
                (lo, head),
            );
        }
        known_from = known_from.min(oldest * minutes);
    }
    vec![ring, h1, h12]
}

/// Spreads the counters `count` of a coarse bucket covering minutes `first..=last` over its
/// minutes below `known_from` (those from `known_from` on are already in `ring` and are
/// subtracted first), writing the minutes inside `(lo, head]`.
fn spread(
    ring: &mut Ring,
    stride: usize,
    count: &[u32],
    (first, last): (u64, u64),
    known_from: u64,
    (lo, head): (u64, u64),
) {
    let Some(last_unknown) = known_from.checked_sub(1).map(|k| k.min(last)) else {
        return;
    };
    if first > last_unknown {
        return;
    }
    let unknown = last_unknown - first + 1;
    let len = ring.len as u64;
    let at = |m: u64, s: usize| (m % len) as usize * stride + s;
    for (s, c) in count.iter().enumerate() {
        let known: u64 = (first.max(known_from)..=last.min(head))
            .filter(|m| *m > lo)
            .map(|m| u64::from(ring.data[at(m, s)]))
            .sum();
        let rest = u64::from(*c).saturating_sub(known);
        let (each, extra) = (rest / unknown, rest % unknown);
        for (i, m) in (first..=last_unknown).enumerate() {
            if m > lo && m <= head {
                let n = each + u64::from((i as u64) < extra);
                ring.data[at(m, s)] = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
    }
}

/// A resolved window: which ring, how many buckets, and how much time they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub ring: usize,
    pub buckets: u64,
    /// Seconds of history the buckets cover at `now`: `(buckets − 1) × width` plus the elapsed
    /// part of the current bucket (at least one second).
    pub covered_secs: u64,
}

impl Window {
    /// The window of `secs` seconds ending at `now_s`; `None` beyond [`MAX_WINDOW_SECS`] or zero.
    pub fn resolve(secs: u64, now_s: u64) -> Option<Self> {
        if secs == 0 || secs > MAX_WINDOW_SECS {
            return None;
        }
        let ring = RINGS.iter().position(|(w, n)| w * (*n as u64) >= secs)?;
        let (width, len) = RINGS[ring];
        let buckets = secs.div_ceil(width).min(len as u64);
        let elapsed = (now_s % width).max(1);
        Some(Self {
            ring,
            buckets,
            covered_secs: (buckets - 1) * width + elapsed,
        })
    }
}

impl Series {
    pub fn new(stride: usize) -> Self {
        Self {
            stride,
            rings: RINGS.iter().map(|(w, n)| Ring::new(*w, *n)).collect(),
            converted: false,
        }
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Whether deserialisation converted this series from checkpoint format 1.
    pub fn converted(&self) -> bool {
        self.converted
    }

    /// Adds `n` to counter `slot` at time `t_s`. Returns `false` when `t_s` is older than the
    /// coarsest ring keeps (nothing recorded) or `slot` is out of range.
    pub fn add(&mut self, t_s: u64, slot: usize, n: u32) -> bool {
        let stride = self.stride;
        if slot >= stride {
            return false;
        }
        let mut recorded = false;
        for (ring, tracked) in self.rings.iter_mut().zip(TRACKED) {
            let idx = t_s / ring.width;
            recorded |= ring.add_at(idx, slot, n, tracked, stride);
        }
        recorded
    }

    /// Adds every counter of `other` (same stride and rings) into this series, bucket by bucket
    /// at the same bucket index (buckets are aligned to `t / width`, so two series of the same
    /// shape share bucket boundaries): afterwards every window equals the window of one series
    /// that saw both series' events. Buckets of `other` older than this series' span after the
    /// merge are dropped, as a late event would be. Returns `false` (nothing merged) when the
    /// shapes differ.
    pub fn merge(&mut self, other: &Series) -> bool {
        let stride = self.stride;
        if other.stride != stride
            || self.rings.len() != other.rings.len()
            || self
                .rings
                .iter()
                .zip(&other.rings)
                .any(|(a, b)| a.width != b.width || a.len != b.len)
        {
            return false;
        }
        for ((ring, theirs), tracked) in self.rings.iter_mut().zip(&other.rings).zip(TRACKED) {
            let Some(their_head) = theirs.head else {
                continue;
            };
            if theirs.data.len() != theirs.len * stride {
                continue;
            }
            let len = theirs.len as u64;
            // Oldest first, so this ring's head only moves forward.
            for idx in their_head.saturating_sub(len - 1)..=their_head {
                let b = (idx % len) as usize * stride;
                for (slot, n) in theirs.data[b..b + stride].iter().enumerate() {
                    if *n > 0 {
                        ring.add_at(idx, slot, *n, tracked, stride);
                    }
                }
            }
        }
        true
    }

    /// Writes the counters of the window of `k` buckets of `ring` ending at `now_s` into `acc`
    /// (`stride` counters, overwritten). From the nearest running total when the ring has them
    /// and `now_s` is not before its head; by walking the window's buckets otherwise.
    fn window_into(&self, ring: usize, k: u64, now_s: u64, acc: &mut [u64]) {
        let stride = self.stride;
        let acc = &mut acc[..stride];
        acc.fill(0);
        let Some(r) = self.rings.get(ring) else {
            return;
        };
        let Some(head) = r.head else {
            return;
        };
        let n = now_s / r.width;
        // The window is the buckets (n − k, n]; with n ≥ head, (lo, head].
        let lo = n.saturating_sub(k);
        let tracked = TRACKED.get(ring).copied().unwrap_or(&[]);
        if n < head || r.totals.len() != tracked.len() * stride {
            r.range(lo, n, stride, false, acc);
            return;
        }
        if lo >= head {
            return;
        }
        // Cheapest start: nothing (walk all of (lo, head]) or a tracked total (head − t, head]
        // corrected by the buckets between head − t and lo.
        let mut best: Option<(usize, u64)> = None;
        let mut cost = head - lo;
        for (j, t) in tracked.iter().enumerate() {
            let c = head.saturating_sub(*t).abs_diff(lo);
            if c < cost {
                cost = c;
                best = Some((j, *t));
            }
        }
        match best {
            None => r.range(lo, head, stride, false, acc),
            Some((j, t)) => {
                acc.copy_from_slice(&r.totals[j * stride..(j + 1) * stride]);
                let from = head.saturating_sub(t);
                if from < lo {
                    r.range(from, lo, stride, true, acc);
                } else {
                    r.range(lo, from, stride, false, acc);
                }
            }
        }
    }

    /// Adds the counters of `window` ending at `now_s` into `out` (`out.len()` ≥ stride).
    pub fn sum_into(&self, window: Window, now_s: u64, out: &mut [u64]) {
        let mut acc = vec![0u64; self.stride];
        self.window_into(window.ring, window.buckets, now_s, &mut acc);
        for (o, a) in out.iter_mut().zip(&acc) {
            *o += a;
        }
    }

    /// Several windows of one ring: for each `buckets[j]`, the counters of the window of that
    /// many buckets ending at `now_s` are written to `out[j * out_stride .. j * out_stride +
    /// stride]` (overwritten, zero when nothing is live). Each result equals what
    /// [`Series::sum_into`] adds for the same window.
    pub fn sum_windows_into(
        &self,
        ring: usize,
        buckets: &[u64],
        now_s: u64,
        out: &mut [u64],
        out_stride: usize,
    ) {
        for (j, k) in buckets.iter().enumerate() {
            self.window_into(ring, *k, now_s, &mut out[j * out_stride..]);
        }
    }

    /// One counter summed over `window`.
    pub fn sum(&self, window: Window, now_s: u64, slot: usize) -> u64 {
        let mut out = vec![0u64; self.stride];
        self.sum_into(window, now_s, &mut out);
        out.get(slot).copied().unwrap_or(0)
    }

    /// Time of the newest recorded bucket (start of the minute), if any.
    pub fn newest_secs(&self) -> Option<u64> {
        let r = self.rings.first()?;
        r.head.map(|h| h * r.width)
    }

    /// Whether a restored series has the shape [`Series::new`]`(stride)` builds: the rings of
    /// [`RINGS`], each empty or `len × stride` counters (so no index can go out of bounds).
    /// Widens a restored series to `stride` counters per bucket, the new counters at zero (a
    /// checkpoint written before counters were appended, e.g. the platform series before
    /// `DestinationDeliveryFailures`). Counters are only ever appended, so the old ones keep
    /// their positions. A series already that wide, or wider, is left alone.
    pub fn widen(&mut self, stride: usize) {
        let old = self.stride;
        if old >= stride {
            return;
        }
        for ring in &mut self.rings {
            if ring.data.len() != ring.len * old {
                continue; // empty, or malformed: `is_well_formed` decides
            }
            let mut data = vec![0; ring.len * stride];
            for (to, from) in data
                .chunks_exact_mut(stride)
                .zip(ring.data.chunks_exact(old))
            {
                to[..old].copy_from_slice(from);
            }
            ring.data = data;
        }
        self.stride = stride;
        if shaped(&self.rings, &RINGS, stride) {
            for (ring, tracked) in self.rings.iter_mut().zip(TRACKED) {
                ring.rebuild_totals(tracked, stride);
            }
        }
    }

    pub fn is_well_formed(&self, stride: usize) -> bool {
        self.stride == stride && shaped(&self.rings, &RINGS, stride)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.rings.capacity() * std::mem::size_of::<Ring>()
            + self
                .rings
                .iter()
                .map(|r| {
                    r.data.capacity() * std::mem::size_of::<u32>()
                        + r.totals.capacity() * std::mem::size_of::<u64>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_resolve_to_the_finest_ring() {
        let now = 1_000_000 * 60 + 30;
        let w5 = Window::resolve(300, now).unwrap();
        assert_eq!((w5.ring, w5.buckets, w5.covered_secs), (0, 5, 4 * 60 + 30));
        assert_eq!(Window::resolve(3600, now).unwrap().ring, 0);
        let w6h = Window::resolve(6 * 3600, now).unwrap();
        assert_eq!((w6h.ring, w6h.buckets), (0, 360), "6 h in minutes");
        assert_eq!(w6h.covered_secs, 359 * 60 + 30);
        assert_eq!(Window::resolve(3 * 86400, now).unwrap().ring, 1);
        let w30 = Window::resolve(30 * 86400, now).unwrap();
        assert_eq!((w30.ring, w30.buckets), (2, 60));
        assert!(Window::resolve(31 * 86400, now).is_none());
        // Every tracked window is one a window length resolves to.
        for (ring, ks) in TRACKED.iter().enumerate() {
            for k in *ks {
                let w = Window::resolve(k * RINGS[ring].0, now).unwrap();
                assert_eq!((w.ring, w.buckets), (ring, *k));
            }
        }
        assert_eq!(
            TRACKED.iter().map(|t| t.len()).sum::<usize>(),
            TRACKED_WINDOWS
        );
        assert_eq!(RINGS.iter().map(|r| r.1).sum::<usize>(), BUCKETS);
    }

    #[test]
    fn old_buckets_roll_off() {
        let mut s = Series::new(2);
        let t0 = 10_000 * 3600;
        s.add(t0, 0, 5);
        s.add(t0 + 10, 1, 1);
        let w5 = Window::resolve(300, t0 + 60).unwrap();
        assert_eq!(s.sum(w5, t0 + 60, 0), 5);
        // 6 minutes later the 5-minute window no longer holds it; the 1-hour one does.
        let now = t0 + 6 * 60;
        assert_eq!(s.sum(Window::resolve(300, now).unwrap(), now, 0), 0);
        assert_eq!(s.sum(Window::resolve(3600, now).unwrap(), now, 0), 5);
        // After new data two hours later, the 1 h window forgot it but the 6 h one did not.
        let later = t0 + 2 * 3600;
        s.add(later, 0, 1);
        assert_eq!(s.sum(Window::resolve(3600, later).unwrap(), later, 0), 1);
        assert_eq!(
            s.sum(Window::resolve(6 * 3600, later).unwrap(), later, 0),
            6
        );
        // Too old for every ring.
        assert!(!s.add(later - 40 * 86400, 0, 1));
    }

    /// The `6h` window moves minute by minute: an event in minute `m` is in it exactly while
    /// `now`'s minute is below `m + 360` (with format 1's 10-minute ring it dropped out up to
    /// 9 minutes earlier).
    #[test]
    fn six_hour_window_is_exact_to_the_minute() {
        let t0 = 5_000_000 * 60; // a whole minute, and a whole 10 minutes
        for offset in [0u64, 9 * 60 + 59, 5 * 60 + 1] {
            let mut s = Series::new(1);
            s.add(t0 + offset, 0, 1);
            let m = (t0 + offset) / 60;
            for now_min in m..m + 370 {
                // Evaluated at second 59, as the differential test does, and at second 0.
                for now in [now_min * 60, now_min * 60 + 59] {
                    let w = Window::resolve(6 * 3600, now).unwrap();
                    let expect = u64::from(now_min < m + 360);
                    assert_eq!(
                        s.sum(w, now, 0),
                        expect,
                        "offset {offset}, minute +{}",
                        now_min - m
                    );
                }
            }
        }
    }

    /// The plain definition: the live buckets of `ring` in `(n − k, n]`.
    fn naive(s: &Series, ring: usize, k: u64, now_s: u64) -> Vec<u64> {
        let r = &s.rings[ring];
        let mut out = vec![0u64; s.stride];
        let n = now_s / r.width;
        for idx in n.saturating_sub(k) + 1..=n {
            if r.live(idx) && !r.data.is_empty() {
                let b = (idx % r.len as u64) as usize * s.stride;
                for (o, v) in out.iter_mut().zip(&r.data[b..b + s.stride]) {
                    *o += u64::from(*v);
                }
            }
        }
        out
    }

    proptest! {
        /// The running totals (and the shortcuts from them) give exactly the walked sums, for
        /// events in any order (late ones included), any `now` (also before the newest bucket),
        /// and any window length, tracked or not.
        #[test]
        fn running_totals_match_the_buckets(
            events in proptest::collection::vec((0u64..(8 * 86400), 0usize..3, 1u32..5), 1..150),
            back in -7200i64..(4 * 86400),
            ks in proptest::collection::vec(1u64..400, 1..6),
        ) {
            let base = 20_000 * 86400;
            let mut s = Series::new(3);
            let mut newest = 0;
            for (o, slot, n) in &events {
                s.add(base + o, *slot, *n);
                newest = newest.max(base + o);
                // Totals stay consistent after every add, not only at the end.
                let mut rebuilt = s.clone();
                for (r, t) in rebuilt.rings.iter_mut().zip(TRACKED) {
                    r.rebuild_totals(t, 3);
                }
                for (a, b) in s.rings.iter().zip(&rebuilt.rings) {
                    prop_assert_eq!(&a.totals, &b.totals);
                }
            }
            let now = newest.saturating_add_signed(back);
            for ring in 0..RINGS.len() {
                let len = RINGS[ring].1 as u64;
                let mut lengths: Vec<u64> = ks.iter().map(|k| k.min(&len).to_owned()).collect();
                lengths.extend(TRACKED[ring]);
                for k in lengths {
                    let mut out = vec![9u64; 3];
                    s.window_into(ring, k, now, &mut out);
                    prop_assert_eq!(&out, &naive(&s, ring, k, now), "ring {} k {}", ring, k);
                }
                let mut out = vec![7u64; TRACKED[ring].len() * 4];
                s.sum_windows_into(ring, TRACKED[ring], now, &mut out, 4);
                for (j, k) in TRACKED[ring].iter().enumerate() {
                    prop_assert_eq!(&out[j * 4..j * 4 + 3], &naive(&s, ring, *k, now)[..]);
                }
            }
        }

        /// For events inside a ring's span, a window sum equals the brute-force count of events
        /// whose bucket lies among the window's buckets.
        #[test]
        fn window_sums_match_brute_force(
            offsets in proptest::collection::vec(0u64..(40 * 86400), 1..300),
            win in prop::sample::select(vec![300u64, 1800, 3600, 7200, 21600, 86_400, 259_200, 2_419_200, 2_592_000]),
            back in 0u64..86400,
        ) {
            let base = 20_000 * 86400;
            let mut times: Vec<u64> = offsets.iter().map(|o| base + o).collect();
            times.sort_unstable();
            let mut s = Series::new(1);
            for t in &times {
                s.add(*t, 0, 1);
            }
            let newest = *times.last().unwrap();
            let now = newest + back;
            let w = Window::resolve(win, now).unwrap();
            let (width, len) = RINGS[w.ring];
            let last = now / width;
            let head = newest / width;
            let expected = times
                .iter()
                .filter(|t| {
                    let idx = *t / width;
                    idx + w.buckets > last && idx <= last && idx + len as u64 > head
                })
                .count() as u64;
            prop_assert_eq!(s.sum(w, now, 0), expected);
        }
    }

    /// Format-1 rings built the way format 1 counted (four rings, 10-minute buckets for 6 h).
    fn v1_json(times: &[(u64, usize)], stride: usize) -> String {
        let rings: Vec<serde_json::Value> = RINGS_V1
            .iter()
            .map(|(width, len)| {
                let head = times.iter().map(|(t, _)| t / width).max().unwrap();
                let mut data = vec![0u32; len * stride];
                for (t, slot) in times {
                    let idx = t / width;
                    if idx + *len as u64 > head {
                        data[(idx % *len as u64) as usize * stride + slot] += 1;
                    }
                }
                serde_json::json!({"width": width, "len": len, "head": head, "data": data})
            })
            .collect();
        serde_json::json!({"stride": stride, "rings": rings}).to_string()
    }

    /// Converting format-1 rings keeps the `1h`, `3d` and `30d` windows exact (the error
    /// budgets), and the `6h` window exact when traffic is even within 10-minute buckets; the
    /// running totals are rebuilt.
    #[test]
    fn format_1_rings_convert() {
        let now = 30_000_000 * 60 + 7 * 60 + 30;
        // One event per minute per slot for 40 days (slot 0), one per 7 minutes (slot 1).
        let times: Vec<(u64, usize)> = (0..40 * 1440u64)
            .map(|i| (now - i * 60, 0))
            .chain((0..40 * 1440u64 / 7).map(|i| (now - i * 420 - 13, 1)))
            .collect();
        let mut fresh = Series::new(2);
        for (t, slot) in times.iter().rev() {
            fresh.add(*t, *slot, 1);
        }
        let s: Series = serde_json::from_str(&v1_json(&times, 2)).unwrap();
        assert!(s.converted() && s.is_well_formed(2));
        assert!(!fresh.converted());
        for secs in [300, 3600, 3 * 86400, 30 * 86400] {
            let w = Window::resolve(secs, now).unwrap();
            for slot in 0..2 {
                assert_eq!(
                    s.sum(w, now, slot),
                    fresh.sum(w, now, slot),
                    "{secs} s, slot {slot}"
                );
            }
        }
        let w6h = Window::resolve(6 * 3600, now).unwrap();
        assert_eq!(
            s.sum(w6h, now, 0),
            fresh.sum(w6h, now, 0),
            "even traffic: exact"
        );
        // Uneven within 10 minutes (one per 7 min): off by at most one 10-minute bucket.
        assert!(s.sum(w6h, now, 1).abs_diff(fresh.sum(w6h, now, 1)) <= 2);
        // The converted series keeps counting with consistent totals.
        let mut s = s;
        for i in 1..500u64 {
            s.add(now + i * 60, 0, 1);
            fresh.add(now + i * 60, 0, 1);
            let t = now + i * 60;
            for secs in [300, 3600, 6 * 3600, 3 * 86400, 30 * 86400] {
                let w = Window::resolve(secs, t).unwrap();
                if secs != 6 * 3600 || i >= 360 {
                    assert_eq!(s.sum(w, t, 0), fresh.sum(w, t, 0), "{secs} s at +{i} min");
                }
            }
        }
        // A series of another shape is kept as read and refused.
        let odd: Series = serde_json::from_str(
            r#"{"stride":1,"rings":[{"width":60,"len":5,"head":3,"data":[1,2]}]}"#,
        )
        .unwrap();
        assert!(!odd.is_well_formed(1) && !odd.converted());
    }

    #[test]
    fn serialised_form_round_trips_and_rebuilds_totals() {
        let mut s = Series::new(2);
        let t0 = 1_800_000_000;
        for i in 0..3000u64 {
            s.add(t0 + i * 37, (i % 2) as usize, 1 + (i % 3) as u32);
        }
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("totals"));
        let back: Series = serde_json::from_str(&json).unwrap();
        assert!(back.is_well_formed(2) && !back.converted());
        for (a, b) in s.rings.iter().zip(&back.rings) {
            assert_eq!((&a.data, &a.totals, a.head), (&b.data, &b.totals, b.head));
        }
    }
}
