//! [`Conditions`]: the alert conditions of one SLO for one function, held inline.
//!
//! An SLO has one condition per burn rule (three in the default spec), or one for a count
//! budget; a `Vec` per SLO per function was 50,000 allocations per evaluation of 10,000
//! functions × 5 SLOs. Up to [`Conditions::INLINE`] conditions live in the status itself; a spec
//! with more burn rules spills to one `Vec` (correct, just not allocation-free). Reads as a slice
//! (`Deref<Target = [Condition]>`), so `iter()`, indexing and `first()` work as before.

use std::{fmt, ops::Deref};

use crate::{
    alerting::alert::Evidence,
    slo::{eval::Condition, spec::Severity},
};

/// The filler of unused inline slots (never visible through the slice).
const EMPTY: Condition = Condition {
    severity: Severity::Ticket,
    active: false,
    guard_passed: false,
    evidence: Evidence {
        sli: 0.0,
        objective: 0.0,
        burn_rate_long: None,
        burn_rate_short: None,
        long_window: std::time::Duration::ZERO,
        short_window: std::time::Duration::ZERO,
        factor: 0.0,
        budget_consumed: 0.0,
        time_to_exhaustion: None,
        good: 0,
        total: 0,
    },
};

/// Up to [`Conditions::INLINE`] conditions inline, more on the heap.
#[derive(Clone)]
pub struct Conditions(Repr);

// The inline variant is large on purpose: it is what saves the allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        items: [Condition; Conditions::INLINE],
    },
    Heap(Vec<Condition>),
}

impl Conditions {
    /// Conditions held without an allocation: the default spec's three burn rules.
    pub const INLINE: usize = 3;

    pub const fn new() -> Self {
        Self(Repr::Inline {
            len: 0,
            items: [EMPTY; Self::INLINE],
        })
    }

    pub fn push(&mut self, c: Condition) {
        match &mut self.0 {
            Repr::Inline { len, items } => {
                let n = usize::from(*len);
                if let Some(slot) = items.get_mut(n) {
                    *slot = c;
                    *len += 1;
                } else {
                    let mut v = Vec::with_capacity(n * 2);
                    v.extend_from_slice(&items[..n]);
                    v.push(c);
                    self.0 = Repr::Heap(v);
                }
            }
            Repr::Heap(v) => v.push(c),
        }
    }

    /// True while no allocation backs the conditions.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    pub fn as_mut_slice(&mut self) -> &mut [Condition] {
        match &mut self.0 {
            Repr::Inline { len, items } => &mut items[..usize::from(*len)],
            Repr::Heap(v) => v,
        }
    }

    pub fn as_slice(&self) -> &[Condition] {
        match &self.0 {
            Repr::Inline { len, items } => &items[..usize::from(*len)],
            Repr::Heap(v) => v,
        }
    }
}

impl Default for Conditions {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Conditions {
    type Target = [Condition];
    fn deref(&self) -> &[Condition] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Conditions {
    type Item = &'a Condition;
    type IntoIter = std::slice::Iter<'a, Condition>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl FromIterator<Condition> for Conditions {
    fn from_iter<I: IntoIterator<Item = Condition>>(iter: I) -> Self {
        let mut c = Self::new();
        for x in iter {
            c.push(x);
        }
        c
    }
}

/// Equal when the visible conditions are (however they are stored).
impl PartialEq for Conditions {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(i: u64) -> Condition {
        Condition {
            severity: if i.is_multiple_of(2) {
                Severity::Page
            } else {
                Severity::Ticket
            },
            active: i.is_multiple_of(3),
            guard_passed: true,
            evidence: Evidence {
                good: i,
                total: i + 1,
                ..EMPTY.evidence
            },
        }
    }

    #[test]
    fn holds_what_was_pushed_in_order_inline_then_on_the_heap() {
        for n in 0..=Conditions::INLINE + 3 {
            let mut c = Conditions::new();
            let want: Vec<Condition> = (0..n as u64).map(cond).collect();
            for x in &want {
                c.push(x.clone());
            }
            assert_eq!(c.len(), n);
            assert_eq!(c.as_slice(), want.as_slice(), "{n} conditions");
            assert_eq!(c.is_inline(), n <= Conditions::INLINE, "{n} conditions");
            assert_eq!((&c).into_iter().count(), n);
            assert_eq!(c.first(), want.first());
            let collected: Conditions = want.iter().cloned().collect();
            assert_eq!(collected, c);
        }
    }

    #[test]
    fn equality_ignores_storage_and_unused_slots() {
        let inline: Conditions = (0..2).map(cond).collect();
        let mut spilled: Conditions = (0..Conditions::INLINE as u64 + 1).map(cond).collect();
        assert!(!spilled.is_inline());
        assert_ne!(inline, spilled);
        // Same visible content, different storage.
        if let Repr::Heap(v) = &mut spilled.0 {
            v.truncate(2);
        }
        assert_eq!(inline, spilled);
        assert_ne!(inline, (0..1).map(cond).collect::<Conditions>());
        assert_eq!(format!("{inline:?}"), format!("{:?}", inline.as_slice()));
    }
}
