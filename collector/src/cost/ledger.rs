//! Per-function daily usage: what `cost_usd_total`, the per-day cost and the 30-day projection
//! are computed from.
//!
//! Consumes one call per invocation ([`CostLedger::record`]: billed duration, whether a
//! provisioned environment served it) with an injected `now` (unix seconds); produces per-day
//! [`FunctionUsage`] (priced with [`super::model::monthly_bill`]) and the usage over a lookback
//! window for [`super::model::project_30d`]. For an account-level projection (free tier and tiers
//! are per account), collect [`CostLedger::usage_over`] from every function and price them
//! together.
//!
//! **Bound**: a ring of [`DAYS_KEPT`] (32) UTC days of four counters, ~1 KB per function; a day
//! older than the ring is overwritten, an invocation dated before the oldest kept day is counted
//! in `late_dropped` and otherwise ignored.

use super::model::{Bill, FunctionUsage, monthly_bill};
use super::prices::{Arch, FreeTier, RegionPrices};

/// UTC days kept per function.
pub const DAYS_KEPT: usize = 32;
const DAY: u64 = 86_400;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Day {
    /// Unix day number; `u64::MAX` = empty.
    day: u64,
    requests: u64,
    on_demand_ms: u64,
    provisioned_ms: u64,
}

const EMPTY_DAY: Day = Day {
    day: u64::MAX,
    requests: 0,
    on_demand_ms: 0,
    provisioned_ms: 0,
};

/// The day ring as the list of its used days (a ring of mostly empty days would triple a
/// checkpoint's JSON); read back into their slots, the newer day winning a slot.
mod kept_days {
    use super::{DAYS_KEPT, Day, EMPTY_DAY};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(days: &[Day; DAYS_KEPT], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(days.iter().filter(|d| d.day != u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[Day; DAYS_KEPT], D::Error> {
        let mut out = [EMPTY_DAY; DAYS_KEPT];
        for day in Vec::<Day>::deserialize(d)? {
            if day.day == u64::MAX {
                continue;
            }
            let slot = &mut out[(day.day % DAYS_KEPT as u64) as usize];
            if slot.day == u64::MAX || slot.day < day.day {
                *slot = day;
            }
        }
        Ok(out)
    }
}

/// Serialisable for checkpoints (`crate::checkpoint`, through `cost::feed`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CostLedger {
    function: String,
    arch: Arch,
    memory_mb: u32,
    ephemeral_storage_mb: u32,
    /// Checkpoints list only the days that hold usage.
    #[serde(with = "kept_days")]
    days: [Day; DAYS_KEPT],
    first_seen: Option<u64>,
    pub late_dropped: u64,
}

impl CostLedger {
    pub fn new(
        function: impl Into<String>,
        arch: Arch,
        memory_mb: u32,
        ephemeral_storage_mb: u32,
    ) -> Self {
        CostLedger {
            function: function.into(),
            arch,
            memory_mb,
            ephemeral_storage_mb,
            days: [EMPTY_DAY; DAYS_KEPT],
            first_seen: None,
            late_dropped: 0,
        }
    }

    /// Updates the configuration the usage is priced at (normally constant per function
    /// version; a redeployed `$LATEST` re-prices its kept history at the new setting).
    pub fn set_config(&mut self, arch: Arch, memory_mb: u32, ephemeral_storage_mb: u32) {
        self.arch = arch;
        self.memory_mb = memory_mb;
        self.ephemeral_storage_mb = ephemeral_storage_mb;
    }

    /// Architecture the usage is priced at (the latest invocation's).
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Memory the usage is priced at, MB (the latest invocation's).
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    /// Ephemeral storage the usage is priced at, MB (the latest invocation's).
    pub fn ephemeral_storage_mb(&self) -> u32 {
        self.ephemeral_storage_mb
    }

    /// Counts one invocation at `now`.
    pub fn record(&mut self, now: u64, billed_duration_ms: u64, on_provisioned: bool) {
        let day = now / DAY;
        let slot = &mut self.days[(day % DAYS_KEPT as u64) as usize];
        if slot.day != day {
            if slot.day != u64::MAX && slot.day > day {
                self.late_dropped += 1;
                return;
            }
            *slot = Day {
                day,
                ..Day::default()
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        if on_provisioned {
            slot.provisioned_ms = slot.provisioned_ms.saturating_add(billed_duration_ms);
        } else {
            slot.on_demand_ms = slot.on_demand_ms.saturating_add(billed_duration_ms);
        }
        self.first_seen = Some(self.first_seen.map_or(now, |f| f.min(now)));
    }

    fn usage(&self, days: impl Iterator<Item = u64>) -> FunctionUsage {
        let mut u = FunctionUsage::new(self.function.clone(), self.arch, self.memory_mb);
        u.ephemeral_storage_mb = self.ephemeral_storage_mb;
        for d in days {
            let slot = &self.days[(d % DAYS_KEPT as u64) as usize];
            if slot.day == d {
                u.requests = u.requests.saturating_add(slot.requests);
                u.on_demand_duration_ms = u.on_demand_duration_ms.saturating_add(slot.on_demand_ms);
                u.provisioned_duration_ms = u
                    .provisioned_duration_ms
                    .saturating_add(slot.provisioned_ms);
            }
        }
        u
    }

    /// Usage of the UTC day containing `at`.
    pub fn day_usage(&self, at: u64) -> FunctionUsage {
        self.usage(std::iter::once(at / DAY))
    }

    /// The day's cost at list price (no free tier; tiers counted from zero).
    pub fn day_cost(&self, prices: &RegionPrices, at: u64) -> Bill {
        monthly_bill(prices, None, &[self.day_usage(at)])
    }

    /// Usage over the last `lookback_days` UTC days up to `now` (today partial), and the
    /// window length in seconds it covers (shortened to when the function was first seen).
    pub fn usage_over(&self, now: u64, lookback_days: u64) -> (FunctionUsage, u64) {
        let lookback = lookback_days.clamp(1, DAYS_KEPT as u64 - 1);
        let today = now / DAY;
        let first_day = today.saturating_sub(lookback - 1);
        let start = (first_day * DAY).max(self.first_seen.unwrap_or(now));
        (
            self.usage(first_day..=today),
            now.saturating_sub(start).max(1),
        )
    }

    /// Seconds since the first invocation recorded (0 before any): how much history a
    /// projection at `now` can stand on (the budget warm-up, `cost::surprise`).
    pub fn observed_secs(&self, now: u64) -> u64 {
        self.first_seen.map_or(0, |f| now.saturating_sub(f))
    }

    /// This function alone, projected to 30 days from the last `lookback_days`.
    pub fn projection_30d(
        &self,
        prices: &RegionPrices,
        free_tier: Option<&FreeTier>,
        now: u64,
        lookback_days: u64,
    ) -> Bill {
        let (usage, window) = self.usage_over(now, lookback_days);
        super::model::project_30d(prices, free_tier, &[usage], window)
    }
}

#[cfg(test)]
mod tests {
    use super::super::prices::PriceTable;
    use super::*;

    const T0: u64 = 1_795_996_800; // 2026-11-30 00:00 UTC

    #[test]
    fn days_are_kept_apart_and_the_ring_is_bounded() {
        let mut l = CostLedger::new("f", Arch::X86_64, 512, 512);
        l.record(T0 + 10, 100, false);
        l.record(T0 + 20, 200, true);
        l.record(T0 + DAY + 5, 1000, false);
        let d0 = l.day_usage(T0);
        assert_eq!(
            (
                d0.requests,
                d0.on_demand_duration_ms,
                d0.provisioned_duration_ms
            ),
            (2, 100, 200)
        );
        assert_eq!(l.day_usage(T0 + DAY).requests, 1);
        // 32 days later the slot of day 0 is reused.
        l.record(T0 + 32 * DAY, 1, false);
        assert_eq!(l.day_usage(T0).requests, 0);
        // A record for the overwritten day is late: dropped and counted.
        l.record(T0 + 30, 1, false);
        assert_eq!(l.late_dropped, 1);
        assert!(std::mem::size_of::<CostLedger>() < 1200);
    }

    #[test]
    fn day_cost_and_projection() {
        let t = PriceTable::embedded().unwrap();
        let r = t.region("us-east-1").unwrap();
        let mut l = CostLedger::new("f", Arch::X86_64, 512, 512);
        // Two full days of 100,000 × 1 s: a 30-day projection is the first vector.
        for d in 0..2 {
            for i in 0..100_000u64 {
                l.record(T0 + d * DAY + i * 86_400 / 100_000, 1000, false);
            }
        }
        let day = l.day_cost(r, T0);
        // 50,000 GB-s × 0.0000166667 + 0.1 M × $0.20/M = $0.833335 + $0.02.
        assert_eq!(day.account.total.to_string(), "$0.85");
        let now = T0 + 2 * DAY - 1;
        let (u, window) = l.usage_over(now, 7);
        assert_eq!(u.requests, 200_000);
        assert_eq!(window, 2 * DAY - 1);
        let p = l.projection_30d(r, Some(&t.free_tier), now, 7);
        // 200,000 × 2,592,000 / 172,799 = 3,000,017 requests: $18.73 still.
        assert_eq!(p.account.total.to_string(), "$18.73");
    }
}
