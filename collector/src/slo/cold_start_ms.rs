//! [`ColdStartMs`]: a function's init-duration percentiles per init type, held inline.
//!
//! There are at most [`InitKind::ALL`] init types, so one slot per type replaces the
//! `BTreeMap<&str, Quantiles>` each function status used to carry (an allocation of a node with
//! room for eleven entries, per function and evaluation). It reads like that map did: iteration,
//! [`ColdStartMs::values`] and serialisation (a JSON object) go in ascending label order, and
//! [`ColdStartMs::get`] looks up by label.

use std::fmt;

use serde::ser::SerializeMap;

use crate::aggregate::{InitKind, hist::Quantiles};

const KINDS: usize = InitKind::ALL.len();

/// The labels in ascending order: slot `i` holds the init type labelled `LABELS[i]` (the map's
/// iteration order; checked against [`InitKind::label`] by the tests).
const LABELS: [&str; KINDS] = [
    lambdawatch_semconv::init_type::MANAGED_INSTANCES,
    lambdawatch_semconv::init_type::ON_DEMAND,
    "other",
    lambdawatch_semconv::init_type::PROVISIONED,
    lambdawatch_semconv::init_type::SNAP_START,
];

/// The slot of `kind` (see [`LABELS`]).
fn slot(kind: InitKind) -> usize {
    match kind {
        InitKind::ManagedInstances => 0,
        InitKind::OnDemand => 1,
        InitKind::Other => 2,
        InitKind::Provisioned => 3,
        InitKind::SnapStart => 4,
    }
}

/// Init-duration percentiles (ms) per init type seen.
#[derive(Clone, Copy, Default, PartialEq)]
pub struct ColdStartMs {
    slots: [Option<Quantiles>; KINDS],
}

impl ColdStartMs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the percentiles of `kind` (replacing any).
    pub fn insert(&mut self, kind: InitKind, q: Quantiles) {
        if let Some(s) = self.slots.get_mut(slot(kind)) {
            *s = Some(q);
        }
    }

    pub fn clear(&mut self) {
        self.slots = [None; KINDS];
    }

    /// The percentiles of the init type labelled `label` (`on-demand`, …).
    pub fn get(&self, label: &str) -> Option<&Quantiles> {
        self.iter().find(|(l, _)| *l == label).map(|(_, q)| q)
    }

    /// `(label, percentiles)` of every init type seen, in ascending label order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Quantiles)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, q)| Some((LABELS.get(i).copied()?, q.as_ref()?)))
    }

    /// The percentiles of every init type seen, in ascending label order.
    pub fn values(&self) -> impl Iterator<Item = &Quantiles> + '_ {
        self.slots.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

impl FromIterator<(InitKind, Quantiles)> for ColdStartMs {
    fn from_iter<I: IntoIterator<Item = (InitKind, Quantiles)>>(iter: I) -> Self {
        let mut m = Self::new();
        for (k, q) in iter {
            m.insert(k, q);
        }
        m
    }
}

impl fmt::Debug for ColdStartMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object `{label: {count, p50, p90, p99}}`, as the map it replaces.
impl serde::Serialize for ColdStartMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (label, q) in self.iter() {
            m.serialize_entry(label, q)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn q(count: u64) -> Quantiles {
        Quantiles {
            count,
            p50: count as f64,
            p90: count as f64 + 0.5,
            p99: count as f64 + 0.75,
        }
    }

    #[test]
    fn slots_follow_label_order() {
        let mut sorted = LABELS;
        sorted.sort_unstable();
        assert_eq!(LABELS, sorted, "LABELS ascending");
        for k in InitKind::ALL {
            assert_eq!(LABELS[slot(k)], k.label(), "{k:?}");
        }
        let mut slots: Vec<usize> = InitKind::ALL.iter().map(|k| slot(*k)).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..KINDS).collect::<Vec<_>>(), "one slot per kind");
    }

    /// Reads, iterates and serialises exactly like the `BTreeMap<&str, Quantiles>` it replaces,
    /// for every subset of init types.
    #[test]
    fn behaves_like_the_btreemap_for_every_subset() {
        for mask in 0u32..(1 << KINDS) {
            let kinds: Vec<(InitKind, Quantiles)> = InitKind::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(i, k)| (*k, q(i as u64 + 1)))
                .collect();
            let m: ColdStartMs = kinds.iter().copied().collect();
            let b: BTreeMap<&'static str, Quantiles> =
                kinds.iter().map(|(k, q)| (k.label(), *q)).collect();
            assert_eq!(m.len(), b.len());
            assert_eq!(m.is_empty(), b.is_empty());
            assert_eq!(
                m.iter().map(|(l, q)| (l, *q)).collect::<Vec<_>>(),
                b.iter().map(|(l, q)| (*l, *q)).collect::<Vec<_>>()
            );
            assert_eq!(
                m.values().collect::<Vec<_>>(),
                b.values().collect::<Vec<_>>()
            );
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            assert_eq!(format!("{m:?}"), format!("{b:?}"));
            for k in InitKind::ALL {
                assert_eq!(m.get(k.label()), b.get(k.label()));
            }
            assert_eq!(m.get("nonsense"), None);
        }
    }

    #[test]
    fn insert_replaces_and_clear_empties() {
        let mut m = ColdStartMs::new();
        m.insert(InitKind::SnapStart, q(1));
        m.insert(InitKind::SnapStart, q(2));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("snap-start").map(|q| q.count), Some(2));
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get("snap-start"), None);
    }
}
