//! Time-bucketed exact event counts: four rings of buckets of growing width, so that any window
//! from 1 minute to 30 days is a sum over at most 72 buckets, in bounded memory.
//!
//! | ring | bucket width | buckets | span | answers windows |
//! |---|---|---|---|---|
//! | 0 | 1 min | 60 | 1 h | ≤ 1 h (`5m`, `30m`, `1h`) |
//! | 1 | 10 min | 36 | 6 h | ≤ 6 h (`6h`) |
//! | 2 | 1 h | 72 | 3 d | ≤ 3 d (`3d`) |
//! | 3 | 12 h | 61 | 30.5 d | ≤ 30.5 d (`30d`) |
//!
//! Every event is added to all four rings (four increments), so every ring is exact at its own
//! granularity. A window of length `W` is answered by the finest ring that spans it, as the
//! `ceil(W / width)` most recent buckets including the current, partially elapsed one: it covers
//! between `W − width` and `W` of history ([`Window::covered_secs`] says exactly how much). Events
//! older than a ring's span are not added to that ring (the caller counts them as late).
//!
//! Memory: 229 buckets × `stride` counters × 4 bytes, allocated on first use of a ring.

/// `(bucket width in seconds, number of buckets)` per ring, finest first.
pub const RINGS: [(u64, usize); 4] = [(60, 60), (600, 36), (3600, 72), (43_200, 61)];

/// Total buckets over all rings.
pub const BUCKETS: usize = 60 + 36 + 72 + 61;

/// The longest window a [`Series`] can answer, in seconds.
pub const MAX_WINDOW_SECS: u64 = 43_200 * 61;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Ring {
    width: u64,
    len: usize,
    /// Bucket index (`t / width`) of the newest bucket, once anything was recorded.
    head: Option<u64>,
    #[serde(with = "crate::checkpoint::zero_runs")]
    data: Vec<u32>,
}

impl Ring {
    fn live(&self, idx: u64) -> bool {
        match self.head {
            Some(h) => idx <= h && idx + self.len as u64 > h,
            None => false,
        }
    }
}

/// A fixed-stride vector of counters per bucket, in four rings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Series {
    stride: usize,
    rings: [Ring; 4],
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
        let ring = |i: usize| Ring {
            width: RINGS[i].0,
            len: RINGS[i].1,
            head: None,
            data: Vec::new(),
        };
        Self {
            stride,
            rings: [ring(0), ring(1), ring(2), ring(3)],
        }
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Adds `n` to counter `slot` at time `t_s`. Returns `false` when `t_s` is older than the
    /// coarsest ring keeps (nothing recorded) or `slot` is out of range.
    pub fn add(&mut self, t_s: u64, slot: usize, n: u32) -> bool {
        if slot >= self.stride {
            return false;
        }
        let mut recorded = false;
        for ring in &mut self.rings {
            let idx = t_s / ring.width;
            if ring.data.is_empty() {
                ring.data = vec![0; ring.len * self.stride];
            }
            match ring.head {
                None => ring.head = Some(idx),
                Some(h) if idx > h => {
                    let steps = (idx - h).min(ring.len as u64);
                    for i in 1..=steps {
                        let b = ((h + i) % ring.len as u64) as usize * self.stride;
                        ring.data[b..b + self.stride].fill(0);
                    }
                    ring.head = Some(idx);
                }
                Some(_) => {}
            }
            if ring.live(idx) {
                let b = (idx % ring.len as u64) as usize * self.stride + slot;
                ring.data[b] = ring.data[b].saturating_add(n);
                recorded = true;
            }
        }
        recorded
    }

    /// Adds the counters of `window` ending at `now_s` into `out` (`out.len()` ≥ stride).
    pub fn sum_into(&self, window: Window, now_s: u64, out: &mut [u64]) {
        let ring = &self.rings[window.ring];
        let Some(head) = ring.head else {
            return;
        };
        if ring.data.is_empty() {
            return;
        }
        let len = ring.len as u64;
        let last = (now_s / ring.width).min(head);
        // Live buckets are (head − len, head]; the window's are (now − buckets, now].
        let first = (now_s / ring.width + 1)
            .saturating_sub(window.buckets)
            .max((head + 1).saturating_sub(len));
        if first > last {
            return;
        }
        let stride = self.stride;
        let out = &mut out[..stride];
        let mut slot = (first % len) as usize;
        for _ in first..=last {
            let b = slot * stride;
            for (o, v) in out.iter_mut().zip(&ring.data[b..b + stride]) {
                *o += u64::from(*v);
            }
            slot += 1;
            if slot == ring.len {
                slot = 0;
            }
        }
    }

    /// Several windows of one ring in one walk: for each `buckets[j]` (ascending), the counters of
    /// the window of that many buckets ending at `now_s` are written to
    /// `out[j * out_stride .. j * out_stride + stride]` (overwritten, zero when nothing is live).
    /// Each result equals what [`Series::sum_into`] adds for the same window; the walk visits
    /// each live bucket of the longest window once, newest first, keeping a running total.
    pub fn sum_windows_into(
        &self,
        ring: usize,
        buckets: &[u64],
        now_s: u64,
        out: &mut [u64],
        out_stride: usize,
    ) {
        let stride = self.stride;
        for j in 0..buckets.len() {
            out[j * out_stride..j * out_stride + stride].fill(0);
        }
        let Some(ring) = self.rings.get(ring) else {
            return;
        };
        let Some(head) = ring.head else {
            return;
        };
        if ring.data.is_empty() || buckets.is_empty() {
            return;
        }
        let len = ring.len as u64;
        let now_idx = now_s / ring.width;
        let last = now_idx.min(head);
        let live_first = (head + 1).saturating_sub(len);
        // Buckets `next_excl − 1, next_excl − 2, …` are still to be added to the running total,
        // which is kept in the first output block and copied on to the longer windows.
        let mut next_excl = last + 1;
        for (j, &k) in buckets.iter().enumerate() {
            let first = (now_idx + 1).saturating_sub(k).max(live_first);
            if j > 0 {
                let (done, rest) = out.split_at_mut(j * out_stride);
                rest[..stride].copy_from_slice(&done[(j - 1) * out_stride..][..stride]);
            }
            let acc = &mut out[j * out_stride..j * out_stride + stride];
            while next_excl > first {
                next_excl -= 1;
                let b = (next_excl % len) as usize * stride;
                for (o, v) in acc.iter_mut().zip(&ring.data[b..b + stride]) {
                    *o += u64::from(*v);
                }
            }
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
        self.rings[0].head.map(|h| h * self.rings[0].width)
    }

    /// Whether a restored series has the shape [`Series::new`]`(stride)` builds: the rings of
    /// [`RINGS`], each empty or `len × stride` counters (so no index can go out of bounds).
    pub fn is_well_formed(&self, stride: usize) -> bool {
        self.stride == stride
            && self.rings.iter().zip(RINGS).all(|(r, (width, len))| {
                r.width == width
                    && r.len == len
                    && (r.data.is_empty() || r.data.len() == len * stride)
            })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.rings
            .iter()
            .map(|r| r.data.capacity() * std::mem::size_of::<u32>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_resolve_to_the_finest_ring() {
        let now = 1_000_000 * 60 + 30;
        assert_eq!(Window::resolve(300, now).unwrap().ring, 0);
        assert_eq!(Window::resolve(300, now).unwrap().buckets, 5);
        assert_eq!(Window::resolve(300, now).unwrap().covered_secs, 4 * 60 + 30);
        assert_eq!(Window::resolve(3600, now).unwrap().ring, 0);
        assert_eq!(Window::resolve(6 * 3600, now).unwrap().ring, 1);
        assert_eq!(Window::resolve(3 * 86400, now).unwrap().ring, 2);
        let w30 = Window::resolve(30 * 86400, now).unwrap();
        assert_eq!((w30.ring, w30.buckets), (3, 60));
        assert!(Window::resolve(31 * 86400, now).is_none());
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
        // After new data two hours later, ring 0 forgot it but the 6 h ring did not.
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

    proptest! {
        /// One walk over several windows gives exactly the per-window sums.
        #[test]
        fn multi_window_walk_matches_sum_into(
            offsets in proptest::collection::vec((0u64..(40 * 86400), 0usize..3, 1u32..5), 1..200),
            back in 0u64..(2 * 86400),
        ) {
            let base = 20_000 * 86400;
            let mut s = Series::new(3);
            let mut newest = 0;
            for (o, slot, n) in &offsets {
                s.add(base + o, *slot, *n);
                newest = newest.max(base + o);
            }
            let now = newest + back;
            let wins = [60u64, 300, 1800, 3600, 21600, 259_200, 2_592_000, 2_635_200];
            for ring in 0..RINGS.len() {
                let mut ks: Vec<u64> = wins
                    .iter()
                    .filter_map(|w| Window::resolve(*w, now))
                    .filter(|w| w.ring == ring)
                    .map(|w| w.buckets)
                    .collect();
                ks.push(1);
                ks.sort_unstable();
                ks.dedup();
                let mut out = vec![7u64; ks.len() * 4];
                s.sum_windows_into(ring, &ks, now, &mut out, 4);
                for (j, k) in ks.iter().enumerate() {
                    let w = Window { ring, buckets: *k, covered_secs: 0 };
                    let mut expect = vec![0u64; 3];
                    s.sum_into(w, now, &mut expect);
                    prop_assert_eq!(&out[j * 4..j * 4 + 3], &expect[..]);
                }
            }
        }

        /// For events inside a ring's span, a window sum equals the brute-force count of events
        /// whose bucket lies among the window's buckets.
        #[test]
        fn window_sums_match_brute_force(
            offsets in proptest::collection::vec(0u64..(40 * 86400), 1..300),
            win in prop::sample::select(vec![300u64, 1800, 3600, 21600, 259_200, 2_592_000]),
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
}
