//! The cost model: usage in, dollars out, exactly.
//!
//! Consumes usage totals ([`FunctionUsage`]: requests, billed duration, memory, architecture,
//! ephemeral storage, provisioned concurrency) and a region's [`RegionPrices`]; produces a
//! [`Bill`] with the account-level [`CostBreakdown`] and each function's share. Pure functions,
//! no clock: callers pass the usage of a month, or of an observed window with
//! [`project_30d`] scaling it to 30 days.
//!
//! Arithmetic is integer and exact. Usage is counted in MB·ms (1 GB-s = 1,024,000 MB·ms) and
//! prices in picodollars, so a duration cost is `MB·ms × price × 9,765,625` in units of 10⁻²⁵ USD
//! ([`Money`]); the only rounding is at the cent, half up, when displayed. This is how the issue's
//! vectors come out exactly: 3 M × 1 s × 512 MB with the free tier = $18.73 (AWS's own page
//! rounds the price to $0.00001667 and gets $18.74), 9 B GB-s of x86 = $145,000.20 of duration,
//! 10 × 512 MB provisioned for 30 days = $54.00.
//!
//! Billing rules (docs/cost.md has the sources):
//! - the free tier (1 M requests, 400,000 GB-s a month) is shared by every function of the account
//!   that has no provisioned concurrency, across both architectures; it is shared among them in
//!   proportion to their usage;
//! - on-demand duration is tiered on the aggregate monthly GB-s of the region and architecture;
//!   each function's share of the tiered cost is in proportion to its billable GB-s;
//! - provisioned concurrency: `units × memory × enabled seconds × PC price`, and invocations served
//!   by provisioned environments pay the (lower) PC duration price, untiered;
//! - ephemeral storage beyond 512 MB: `(storage − 512 MB) × billed duration × storage price`.

use std::fmt;

use super::prices::{Arch, FREE_EPHEMERAL_STORAGE_MB, FreeTier, Price, PriceItem, RegionPrices};

/// Money in units of 10⁻²⁵ USD (exact for every product of picodollar prices and MB·ms).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Money(pub u128);

/// [`Money`] units per US dollar.
pub const MONEY_PER_USD: u128 = 10_u128.pow(25);
const MONEY_PER_CENT: u128 = 10_u128.pow(23);
/// One picodollar per MB·ms is 10⁻¹² / 1,024,000 USD = 9,765,625 × 10⁻²⁵ USD.
const MONEY_PER_PICO_MBMS: u128 = 9_765_625;
/// One picodollar per million requests, per request, is 10⁻¹⁸ USD.
const MONEY_PER_PICO_PER_MILLION: u128 = 10_000_000;
/// MB·ms per GB-s.
pub const MBMS_PER_GB_SECOND: u128 = 1_024_000;

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn usd(self) -> f64 {
        self.0 as f64 / MONEY_PER_USD as f64
    }

    /// Whole cents, rounded half up.
    pub fn cents(self) -> u128 {
        self.0.saturating_add(MONEY_PER_CENT / 2) / MONEY_PER_CENT
    }

    /// Dollars rounded to the cent, as f64 (for gauges and JSON).
    pub fn usd_rounded(self) -> f64 {
        self.cents() as f64 / 100.0
    }

    pub fn plus(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn minus(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// `self × num / den` (truncated), for proportional shares and scaling.
    pub fn scale(self, num: u128, den: u128) -> Money {
        Money(mul_div(self.0, num, den))
    }

    pub fn from_cents(cents: u128) -> Money {
        Money(cents.saturating_mul(MONEY_PER_CENT))
    }
}

/// Formats as `$145,000.20` (rounded to the cent, half up).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cents = self.cents();
        let grouped = group_thousands(&(cents / 100).to_string());
        write!(f, "${grouped}.{:02}", cents % 100)
    }
}

/// `"1234567"` → `"1,234,567"` (digits only).
pub(crate) fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a × b / c` without overflow for the magnitudes here (falls back to saturating).
pub(crate) fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    if c == 0 {
        return 0;
    }
    match a.checked_mul(b) {
        Some(p) => p / c,
        // a×b overflowed: divide first, keeping the remainder's contribution.
        None => {
            let q = a / c;
            let r = a % c;
            q.saturating_mul(b)
                .saturating_add(r.checked_mul(b).map_or(u128::MAX, |x| x / c))
        }
    }
}

fn duration_money(mb_ms: u128, price: Price) -> Money {
    Money(
        mb_ms
            .saturating_mul(u128::from(price.0))
            .saturating_mul(MONEY_PER_PICO_MBMS),
    )
}

fn request_money(requests: u128, per_million: Price) -> Money {
    Money(
        requests
            .saturating_mul(u128::from(per_million.0))
            .saturating_mul(MONEY_PER_PICO_PER_MILLION),
    )
}

/// One function's usage over a period (a month, or an observed window).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunctionUsage {
    /// Caller's key (e.g. `name:version`), carried to the bill.
    pub function: String,
    pub arch: Arch,
    pub memory_mb: u32,
    /// Configured ephemeral storage, MB (512 = the free default).
    pub ephemeral_storage_mb: u32,
    /// All requests (on-demand and served by provisioned environments).
    pub requests: u64,
    /// Billed duration of invocations on on-demand environments, ms (sum over invocations).
    pub on_demand_duration_ms: u64,
    /// Billed duration of invocations served by provisioned environments, ms.
    pub provisioned_duration_ms: u64,
    /// Provisioned concurrency units configured.
    pub provisioned_concurrency: u32,
    /// Seconds provisioned concurrency was enabled in the period.
    pub provisioned_seconds: u64,
}

impl FunctionUsage {
    pub fn new(function: impl Into<String>, arch: Arch, memory_mb: u32) -> Self {
        FunctionUsage {
            function: function.into(),
            arch,
            memory_mb,
            ephemeral_storage_mb: FREE_EPHEMERAL_STORAGE_MB,
            requests: 0,
            on_demand_duration_ms: 0,
            provisioned_duration_ms: 0,
            provisioned_concurrency: 0,
            provisioned_seconds: 0,
        }
    }

    pub fn has_provisioned_concurrency(&self) -> bool {
        self.provisioned_concurrency > 0 && self.provisioned_seconds > 0
    }

    fn on_demand_mbms(&self) -> u128 {
        u128::from(self.memory_mb) * u128::from(self.on_demand_duration_ms)
    }

    fn provisioned_duration_mbms(&self) -> u128 {
        u128::from(self.memory_mb) * u128::from(self.provisioned_duration_ms)
    }

    fn provisioned_mbms(&self) -> u128 {
        u128::from(self.provisioned_concurrency)
            * u128::from(self.memory_mb)
            * u128::from(self.provisioned_seconds)
            * 1000
    }

    fn extra_storage_mbms(&self) -> u128 {
        let extra = self
            .ephemeral_storage_mb
            .saturating_sub(FREE_EPHEMERAL_STORAGE_MB);
        u128::from(extra)
            * (u128::from(self.on_demand_duration_ms) + u128::from(self.provisioned_duration_ms))
    }
}

/// One line of the tiered duration charge.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TierLine {
    pub arch: Arch,
    pub gb_seconds: f64,
    pub gb_second_price: f64,
    pub cost: Money,
}

/// Cost components (account level, or one function's share).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CostBreakdown {
    pub requests: u64,
    pub billable_requests: u64,
    pub request_cost: Money,
    pub on_demand_gb_seconds: f64,
    pub billable_gb_seconds: f64,
    pub duration_cost: Money,
    pub provisioned_gb_seconds: f64,
    pub provisioned_concurrency_cost: Money,
    pub provisioned_duration_gb_seconds: f64,
    pub provisioned_duration_cost: Money,
    pub ephemeral_storage_cost: Money,
    pub total: Money,
}

impl CostBreakdown {
    fn finish(mut self) -> Self {
        self.total = self
            .request_cost
            .plus(self.duration_cost)
            .plus(self.provisioned_concurrency_cost)
            .plus(self.provisioned_duration_cost)
            .plus(self.ephemeral_storage_cost);
        self
    }
}

/// A bill for one region: the account view and each function's share.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bill {
    pub account: CostBreakdown,
    pub tiers: Vec<TierLine>,
    pub functions: Vec<(String, CostBreakdown)>,
    /// Prices used that the table marks unverified for this region.
    pub unverified: Vec<PriceItem>,
}

fn gb_s(mb_ms: u128) -> f64 {
    mb_ms as f64 / MBMS_PER_GB_SECOND as f64
}

/// Tiered cost of `billable` MB·ms of one architecture's on-demand duration.
fn tiered(prices: &RegionPrices, arch: Arch, billable: u128) -> (Money, Vec<TierLine>) {
    let mut lines = Vec::new();
    let mut total = Money::ZERO;
    let mut floor = 0u128;
    for tier in &prices.arch(arch).duration_tiers {
        if billable <= floor {
            break;
        }
        let ceiling = tier
            .up_to_gb_seconds
            .map_or(u128::MAX, |gb| u128::from(gb) * MBMS_PER_GB_SECOND);
        let in_tier = billable.min(ceiling) - floor;
        let cost = duration_money(in_tier, tier.gb_second);
        total = total.plus(cost);
        lines.push(TierLine {
            arch,
            gb_seconds: gb_s(in_tier),
            gb_second_price: tier.gb_second.usd(),
            cost,
        });
        floor = ceiling;
    }
    (total, lines)
}

/// Prices a month of usage for one region. `free_tier: None` prices without it.
pub fn monthly_bill(
    prices: &RegionPrices,
    free_tier: Option<&FreeTier>,
    usage: &[FunctionUsage],
) -> Bill {
    // Free tier: only functions without provisioned concurrency are eligible.
    let eligible_requests: u128 = usage
        .iter()
        .filter(|u| !u.has_provisioned_concurrency())
        .map(|u| u128::from(u.requests))
        .sum();
    let eligible_mbms: u128 = usage
        .iter()
        .filter(|u| !u.has_provisioned_concurrency())
        .map(FunctionUsage::on_demand_mbms)
        .sum();
    let (free_requests, free_mbms) = free_tier.map_or((0, 0), |f| {
        (
            u128::from(f.requests_per_month).min(eligible_requests),
            (u128::from(f.gb_seconds_per_month) * MBMS_PER_GB_SECOND).min(eligible_mbms),
        )
    });

    // Each function's billable quantities after its proportional share of the free tier.
    let billable: Vec<(u128, u128)> = usage
        .iter()
        .map(|u| {
            let req = u128::from(u.requests);
            let mbms = u.on_demand_mbms();
            if u.has_provisioned_concurrency() {
                (req, mbms)
            } else {
                (
                    req - mul_div(free_requests, req, eligible_requests),
                    mbms - mul_div(free_mbms, mbms, eligible_mbms),
                )
            }
        })
        .collect();

    let mut tiers = Vec::new();
    let mut arch_duration = [(0u128, Money::ZERO); 2];
    for (slot, arch) in Arch::ALL.into_iter().enumerate() {
        let total: u128 = usage
            .iter()
            .zip(&billable)
            .filter(|(u, _)| u.arch == arch)
            .map(|(_, b)| b.1)
            .sum();
        let (cost, lines) = tiered(prices, arch, total);
        tiers.extend(lines);
        arch_duration[slot] = (total, cost);
    }

    let mut account = CostBreakdown::default();
    let mut functions = Vec::with_capacity(usage.len());
    let mut used = Vec::new();
    for (u, &(req, mbms)) in usage.iter().zip(&billable) {
        let slot = Arch::ALL.iter().position(|a| *a == u.arch).unwrap_or(0);
        let (arch_total, arch_cost) = arch_duration[slot];
        let ap = prices.arch(u.arch);
        let line = CostBreakdown {
            requests: u.requests,
            billable_requests: u64::try_from(req).unwrap_or(u64::MAX),
            request_cost: request_money(req, prices.request_per_million),
            on_demand_gb_seconds: gb_s(u.on_demand_mbms()),
            billable_gb_seconds: gb_s(mbms),
            duration_cost: arch_cost.scale(mbms, arch_total),
            provisioned_gb_seconds: gb_s(u.provisioned_mbms()),
            provisioned_concurrency_cost: duration_money(
                u.provisioned_mbms(),
                ap.provisioned_concurrency_gb_second,
            ),
            provisioned_duration_gb_seconds: gb_s(u.provisioned_duration_mbms()),
            provisioned_duration_cost: duration_money(
                u.provisioned_duration_mbms(),
                ap.provisioned_duration_gb_second,
            ),
            ephemeral_storage_cost: duration_money(
                u.extra_storage_mbms(),
                prices.ephemeral_storage_gb_second,
            ),
            total: Money::ZERO,
        }
        .finish();
        if line.provisioned_concurrency_cost.0 > 0 || line.provisioned_duration_cost.0 > 0 {
            used.push(match u.arch {
                Arch::X86_64 => PriceItem::ProvisionedConcurrency,
                Arch::Arm64 => PriceItem::ProvisionedConcurrencyArm64,
            });
        }
        if line.ephemeral_storage_cost.0 > 0 {
            used.push(PriceItem::EphemeralStorage);
        }
        if line.requests > 0 {
            used.push(PriceItem::Requests);
        }
        if line.on_demand_gb_seconds > 0.0 {
            used.push(PriceItem::Duration);
        }
        account.requests = account.requests.saturating_add(line.requests);
        account.billable_requests = account
            .billable_requests
            .saturating_add(line.billable_requests);
        account.on_demand_gb_seconds += line.on_demand_gb_seconds;
        account.billable_gb_seconds += line.billable_gb_seconds;
        account.provisioned_gb_seconds += line.provisioned_gb_seconds;
        account.provisioned_concurrency_cost = account
            .provisioned_concurrency_cost
            .plus(line.provisioned_concurrency_cost);
        account.provisioned_duration_gb_seconds += line.provisioned_duration_gb_seconds;
        account.provisioned_duration_cost = account
            .provisioned_duration_cost
            .plus(line.provisioned_duration_cost);
        account.ephemeral_storage_cost = account
            .ephemeral_storage_cost
            .plus(line.ephemeral_storage_cost);
        functions.push((u.function.clone(), line));
    }
    // Account-level request and duration costs are computed on the totals (the per-function
    // shares are truncated proportions of these).
    let total_billable_requests: u128 = billable.iter().map(|b| b.0).sum();
    account.request_cost = request_money(total_billable_requests, prices.request_per_million);
    account.duration_cost = arch_duration[0].1.plus(arch_duration[1].1);
    let account = account.finish();

    let mut unverified: Vec<PriceItem> = used
        .into_iter()
        .filter(|i| prices.is_unverified(*i))
        .collect();
    unverified.sort_by_key(|i| i.as_str());
    unverified.dedup();
    Bill {
        account,
        tiers,
        functions,
        unverified,
    }
}

/// List price of one invocation (first duration tier, no free tier): what
/// `lambdawatch_cost_usd_total` adds per invocation. An upper bound on the marginal cost; the
/// 30-day projection applies the free tier and the volume tiers at account level.
pub fn invocation_list_cost(
    prices: &RegionPrices,
    arch: Arch,
    memory_mb: u32,
    ephemeral_storage_mb: u32,
    billed_duration_ms: u64,
    on_provisioned: bool,
) -> Money {
    let ap = prices.arch(arch);
    let mbms = u128::from(memory_mb) * u128::from(billed_duration_ms);
    let price = if on_provisioned {
        ap.provisioned_duration_gb_second
    } else {
        ap.duration_tiers.first().map_or(Price(0), |t| t.gb_second)
    };
    let storage = u128::from(ephemeral_storage_mb.saturating_sub(FREE_EPHEMERAL_STORAGE_MB))
        * u128::from(billed_duration_ms);
    request_money(1, prices.request_per_million)
        .plus(duration_money(mbms, price))
        .plus(duration_money(storage, prices.ephemeral_storage_gb_second))
}

/// Seconds in the 30-day projection horizon.
pub const THIRTY_DAYS_SECS: u64 = 30 * 86_400;

/// Scales usage observed over `window_secs` to 30 days (counters × 30 d / window, rounded
/// down) and prices it as a month. Provisioned seconds are scaled the same way, so
/// `provisioned_seconds = window_secs` means "enabled all month".
pub fn project_30d(
    prices: &RegionPrices,
    free_tier: Option<&FreeTier>,
    observed: &[FunctionUsage],
    window_secs: u64,
) -> Bill {
    let scaled: Vec<FunctionUsage> = observed
        .iter()
        .map(|u| scale_to_30d(u, window_secs))
        .collect();
    monthly_bill(prices, free_tier, &scaled)
}

/// One function's usage over `window_secs` scaled to 30 days (counters × 30 d / window,
/// rounded down; provisioned seconds too).
pub fn scale_to_30d(u: &FunctionUsage, window_secs: u64) -> FunctionUsage {
    let window = u128::from(window_secs.max(1));
    let horizon = u128::from(THIRTY_DAYS_SECS);
    let scale = |x: u64| u64::try_from(mul_div(u128::from(x), horizon, window)).unwrap_or(u64::MAX);
    FunctionUsage {
        requests: scale(u.requests),
        on_demand_duration_ms: scale(u.on_demand_duration_ms),
        provisioned_duration_ms: scale(u.provisioned_duration_ms),
        provisioned_seconds: scale(u.provisioned_seconds),
        ..u.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::prices::PriceTable;
    use super::*;

    fn table() -> PriceTable {
        PriceTable::embedded().unwrap()
    }

    fn one(memory_mb: u32, invocations: u64, duration_ms: u64) -> FunctionUsage {
        FunctionUsage {
            requests: invocations,
            on_demand_duration_ms: invocations * duration_ms,
            ..FunctionUsage::new("f", Arch::X86_64, memory_mb)
        }
    }

    #[test]
    fn issue_vector_free_tier() {
        let t = table();
        let bill = monthly_bill(
            t.region("us-east-1").unwrap(),
            Some(&t.free_tier),
            &[one(512, 3_000_000, 1000)],
        );
        assert_eq!(bill.account.request_cost.to_string(), "$0.40");
        assert_eq!(bill.account.billable_gb_seconds, 1_100_000.0);
        assert_eq!(bill.account.total.to_string(), "$18.73");
        assert_eq!(bill.account.total.cents(), 1873);
    }

    #[test]
    fn issue_vector_tiered_x86() {
        let t = table();
        let bill = monthly_bill(
            t.region("us-east-1").unwrap(),
            None,
            &[one(2048, 75_000_000, 60_000)],
        );
        assert_eq!(bill.account.duration_cost.to_string(), "$145,000.20");
        assert_eq!(bill.tiers.len(), 2);
        assert_eq!(bill.tiers[0].gb_seconds, 6e9);
        assert_eq!(bill.tiers[0].cost.to_string(), "$100,000.20");
        assert_eq!(bill.tiers[1].gb_seconds, 3e9);
        assert_eq!(bill.tiers[1].cost.to_string(), "$45,000.00");
        assert_eq!(bill.account.request_cost.to_string(), "$15.00");
        assert_eq!(bill.account.total.to_string(), "$145,015.20");
    }

    #[test]
    fn issue_vector_provisioned_concurrency() {
        let t = table();
        let u = FunctionUsage {
            provisioned_concurrency: 10,
            provisioned_seconds: 30 * 86_400,
            ..FunctionUsage::new("f", Arch::X86_64, 512)
        };
        let bill = monthly_bill(t.region("us-east-1").unwrap(), Some(&t.free_tier), &[u]);
        assert_eq!(bill.account.provisioned_gb_seconds, 12_960_000.0);
        assert_eq!(
            bill.account.provisioned_concurrency_cost.to_string(),
            "$54.00"
        );
        assert_eq!(bill.account.total.to_string(), "$54.00");
        // us-east-1 has no unverified figures; eu-central-1's PC price is flagged.
        assert!(bill.unverified.is_empty());
        let u = bill.functions[0].1.clone();
        assert_eq!(u.total, bill.account.total);
    }

    #[test]
    fn table_of_cases() {
        let t = table();
        let r = t.region("us-east-1").unwrap();
        // (usage, free tier, expected total)
        let arm = |mb, n, ms| FunctionUsage {
            arch: Arch::Arm64,
            ..one(mb, n, ms)
        };
        let cases: Vec<(Vec<FunctionUsage>, bool, &str)> = vec![
            // Entirely inside the free tier.
            (vec![one(128, 1_000_000, 100)], true, "$0.00"),
            // Free tier is shared: two functions together exceed it once.
            (
                vec![one(512, 1_500_000, 1000), one(512, 1_500_000, 1000)],
                true,
                "$18.73",
            ),
            // arm64 first tier: 1 M × 1 s × 1 GB = 1 M GB-s × 0.0000133334 + $0.20.
            (vec![arm(1024, 1_000_000, 1000)], false, "$13.53"),
            // x86 third tier: 20 B GB-s = 6 B×p1 + 9 B×p2 + 5 B×p3 (requests 1 M = $0.20).
            (vec![one(1024, 1_000_000, 20_000_000)], false, "$301,667.40"),
            // 1 ms granularity: 128 MB, 1 ms, 1 M: 125 GB-s → $0.00208 + $0.20.
            (vec![one(128, 1_000_000, 1)], false, "$0.20"),
        ];
        for (usage, free, want) in cases {
            let bill = monthly_bill(r, free.then_some(&t.free_tier), &usage);
            assert_eq!(bill.account.total.to_string(), want, "{usage:?}");
            let shares = bill
                .functions
                .iter()
                .fold(Money::ZERO, |m, (_, b)| m.plus(b.total));
            // Shares are truncated proportions: never above the total, at most a few 1e-25 USD off.
            assert!(shares <= bill.account.total);
            assert!(bill.account.total.0 - shares.0 < 1000, "{usage:?}");
        }
    }

    #[test]
    fn tiers_are_per_architecture() {
        let t = table();
        let r = t.region("us-east-1").unwrap();
        // 5 B GB-s on each architecture: both stay in their first tier.
        let x = one(1024, 1000, 5_000_000_000);
        let a = FunctionUsage {
            arch: Arch::Arm64,
            function: "g".into(),
            ..x.clone()
        };
        let bill = monthly_bill(r, None, &[x, a]);
        assert_eq!(bill.tiers.len(), 2);
        assert!(bill.tiers.iter().all(|l| l.gb_seconds == 5e9));
        assert_eq!(bill.account.duration_cost.to_string(), "$150,000.50");
    }

    #[test]
    fn ephemeral_storage_and_provisioned_duration() {
        let t = table();
        let r = t.region("us-east-1").unwrap();
        // 10,240 MB storage, 1 M × 1 s: (10240-512)/1024 GB × 1 M s = 9.5 M GB-s × 0.0000000309.
        let u = FunctionUsage {
            ephemeral_storage_mb: 10_240,
            ..one(128, 1_000_000, 1000)
        };
        let bill = monthly_bill(r, None, &[u]);
        assert_eq!(bill.account.ephemeral_storage_cost.to_string(), "$0.29");
        // PC duration price: 1 GB × 1 M s on provisioned environments = $9.7222.
        let u = FunctionUsage {
            provisioned_duration_ms: 1_000_000_000,
            requests: 1_000_000,
            provisioned_concurrency: 1,
            provisioned_seconds: 3600,
            ..FunctionUsage::new("f", Arch::X86_64, 1024)
        };
        let bill = monthly_bill(r, Some(&t.free_tier), &[u]);
        assert_eq!(bill.account.provisioned_duration_cost.to_string(), "$9.72");
        // No free tier for a function with PC: all 1 M requests are billed.
        assert_eq!(bill.account.billable_requests, 1_000_000);
    }

    #[test]
    fn unverified_prices_are_reported_when_used() {
        let t = table();
        let u = FunctionUsage {
            provisioned_concurrency: 1,
            provisioned_seconds: 60,
            ..one(512, 10, 10)
        };
        let fra = t.region("eu-central-1").unwrap();
        // x86 provisioned concurrency is sourced for eu-central-1, arm64's is not.
        assert!(
            monthly_bill(fra, None, std::slice::from_ref(&u))
                .unverified
                .is_empty()
        );
        let arm = FunctionUsage {
            arch: Arch::Arm64,
            ..u.clone()
        };
        let bill = monthly_bill(fra, None, std::slice::from_ref(&arm));
        assert_eq!(
            bill.unverified,
            vec![PriceItem::ProvisionedConcurrencyArm64]
        );
        let bill = monthly_bill(t.region("eu-central-1").unwrap(), None, &[one(512, 10, 10)]);
        assert!(bill.unverified.is_empty());
    }

    #[test]
    fn projection_scales_a_day_to_thirty() {
        let t = table();
        let r = t.region("us-east-1").unwrap();
        let day = one(512, 100_000, 1000);
        let bill = project_30d(r, Some(&t.free_tier), &[day], 86_400);
        assert_eq!(bill.account.requests, 3_000_000);
        assert_eq!(bill.account.total.to_string(), "$18.73");
    }

    #[test]
    fn list_cost_of_one_invocation() {
        let t = table();
        let r = t.region("us-east-1").unwrap();
        // 1 GB × 1 s = 0.0000166667 + 0.0000002 = 0.0000168667 USD.
        let m = invocation_list_cost(r, Arch::X86_64, 1024, 512, 1000, false);
        assert_eq!(m, Money(168_667 * 10_u128.pow(15)));
    }

    #[test]
    fn money_display_groups_thousands_and_rounds_half_up() {
        assert_eq!(Money::from_cents(14_500_020).to_string(), "$145,000.20");
        assert_eq!(Money::from_cents(0).to_string(), "$0.00");
        assert_eq!(
            Money::from_cents(12_345_678_901).to_string(),
            "$123,456,789.01"
        );
        assert_eq!(Money(MONEY_PER_CENT / 2).to_string(), "$0.01");
        assert_eq!(Money(MONEY_PER_CENT / 2 - 1).to_string(), "$0.00");
    }

    fn arb_usage() -> impl proptest::strategy::Strategy<Value = FunctionUsage> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            128u32..=10_240,
            512u32..=10_240,
            0u64..2_000_000_000,
            0u64..50_000,
            0u32..20,
        )
            .prop_map(|(arm, mem, storage, requests, ms, pc)| FunctionUsage {
                arch: if arm { Arch::Arm64 } else { Arch::X86_64 },
                ephemeral_storage_mb: storage,
                requests,
                on_demand_duration_ms: requests.saturating_mul(ms),
                provisioned_concurrency: pc,
                provisioned_seconds: if pc > 0 { 86_400 } else { 0 },
                ..FunctionUsage::new("p", Arch::X86_64, mem)
            })
    }

    proptest::proptest! {
        #[test]
        fn bills_are_consistent(
            usage in proptest::collection::vec(arb_usage(), 1..6),
            free in proptest::bool::ANY,
        ) {
            let t = table();
            let r = t.region("us-east-1").unwrap();
            let ft = free.then_some(&t.free_tier);
            let bill = monthly_bill(r, ft, &usage);
            // Shares never exceed the total and lose at most rounding crumbs per function.
            let shares = bill.functions.iter().fold(Money::ZERO, |m, (_, b)| m.plus(b.total));
            proptest::prop_assert!(shares <= bill.account.total);
            proptest::prop_assert!(bill.account.total.0 - shares.0 <= 4 * usage.len() as u128);
            // The tier lines add up to the duration charge.
            let tiers = bill.tiers.iter().fold(Money::ZERO, |m, l| m.plus(l.cost));
            proptest::prop_assert_eq!(tiers, bill.account.duration_cost);
            // More traffic never costs less; the free tier never costs more.
            let mut more = usage.clone();
            more[0].requests += 1_000_000;
            more[0].on_demand_duration_ms += 1_000_000_000;
            proptest::prop_assert!(monthly_bill(r, ft, &more).account.total >= bill.account.total);
            proptest::prop_assert!(
                monthly_bill(r, Some(&t.free_tier), &usage).account.total
                    <= monthly_bill(r, None, &usage).account.total
            );
        }
    }

    #[test]
    fn mul_div_survives_large_products() {
        assert_eq!(mul_div(u128::MAX / 2, 4, 8), u128::MAX / 4);
        assert_eq!(mul_div(10, 3, 0), 0);
    }
}
