//! The cost stage: one owner for every function's cost state, fed per invocation, evaluated
//! on the collector's evaluation tick.
//!
//! Consumes [`CostInvocation`]s (from the aggregator, one per invocation span) keyed by the
//! caller's function key `K`, and an injected `now` at each [`CostStage::evaluate`]; produces one
//! [`FunctionCost`] per function (list-price cost so far, today's cost, the 30-day projection,
//! the surprise and retry-storm statuses) whose [`FunctionCost::samples`] are the `/metrics`
//! lines and whose serde form is the `/api/v1` document.
//!
//! **Bounds.** At most `max_functions` functions (default 10,000); an invocation of a further
//! function is dropped and counted under `too_many_functions`; one naming a region missing from
//! the price table under `unknown_region`. Per function: ledger ~1 KB, surprise baseline ~3.4 KB,
//! retry ids ≤ `retry.max_ids` × ~32 B (32 KB at the default 1,024): ≤ ~37 KB, typically ~5 KB.
//!
//! **Projection.** Functions are grouped by region and priced together, so the volume tiers are
//! shared as AWS applies them; the free tier (when `free_tier` is on) is applied once per region
//! group, assuming one account per collector (with several accounts or regions it over-counts the
//! free allowance, by at most $6.87 a month: 400,000 GB-s × $0.0000166667 + 1 M × $0.20/M, per
//! extra group).
//!
//! **Configured provisioned concurrency.** `provisioned_concurrency` maps a function name to the
//! units configured on it (Lambda does not tell the extension). Its standing charge
//! (units × memory × seconds enabled × the PC price) is part of the function's cost: the 30-day
//! projection counts the units enabled all 30 days, today's cost counts them from 00:00 UTC to
//! `now`. Invocations served by provisioned environments (known from their init spans) are
//! priced at the PC duration price either way; a function with units configured gets no free
//! tier (AWS: the free tier does not apply to functions with provisioned concurrency enabled).
//! The list-price counter `lambdawatch_cost_usd_total` stays per invocation (no standing charge).
//! Units (and budgets) are configured per function **name**, rows are per key (version): the
//! standing charge and the budget check sit on one carrying row per `(region, name)`, the
//! smallest key (`$LATEST` before published versions), so two versions do not pay it twice;
//! the budget compares the name's summed projection (a version inside the budget warm-up adds
//! only its standing charge, see `cost::surprise`).
//!
//! **Duplicates.** An invocation span delivered twice (same request id and span fingerprint,
//! see `cost::retry`) is dropped under `duplicate_delivery`: not priced again, not a retry.
//!
//! **Restarts.** [`SavedFunctionCost`] carries the ledger, the list-price counter, the surprise
//! detector's baseline and the retry tracker's ids (`cost::surprise`, `cost::retry` state their
//! sizes); the latter two default to empty, so checkpoints written before them load.

use std::collections::BTreeMap;

use super::MetricSample;
use super::ledger::CostLedger;
use super::model::{Money, THIRTY_DAYS_SECS, invocation_list_cost, monthly_bill, scale_to_30d};
use super::names;
use super::prices::{Arch, PriceTable};
use super::retry::{DlqBacklog, Observed, RetryConfig, RetryStatus, RetryTracker, SavedRetry};

/// DLQ queues whose backlog the stage keeps (`record_dlq_backlog`); further ones are counted.
pub const MAX_DLQ_QUEUES: usize = 1000;
use super::surprise::{
    BudgetInput, SavedSurprise, SurpriseConfig, SurpriseDetector, SurpriseStatus,
};

/// The function name of a stage key: what per-function settings (provisioned concurrency) are
/// looked up by.
pub trait FunctionName {
    fn function_name(&self) -> &str;
}

impl FunctionName for crate::aggregate::FunctionKey {
    fn function_name(&self) -> &str {
        &self.function
    }
}

impl FunctionName for &str {
    fn function_name(&self) -> &str {
        self
    }
}

impl FunctionName for String {
    fn function_name(&self) -> &str {
        self
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    pub max_functions: usize,
    /// Days of history the 30-day projection extrapolates from.
    pub lookback_days: u64,
    pub free_tier: bool,
    pub surprise: SurpriseConfig,
    pub retry: RetryConfig,
    /// Function name → provisioned concurrency units configured on it (standing charge).
    pub provisioned_concurrency: BTreeMap<String, u32>,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            max_functions: 10_000,
            lookback_days: 7,
            free_tier: true,
            surprise: SurpriseConfig::default(),
            retry: RetryConfig {
                max_ids: 1024,
                ..RetryConfig::default()
            },
            provisioned_concurrency: BTreeMap::new(),
        }
    }
}

/// What the stage needs from one invocation span.
#[derive(Debug, Clone, PartialEq)]
pub struct CostInvocation<'a> {
    pub t_s: u64,
    pub region: &'a str,
    pub arch: Arch,
    pub memory_mb: u32,
    pub ephemeral_storage_mb: u32,
    pub billed_ms: u64,
    /// Served by a provisioned-concurrency environment.
    pub on_provisioned: bool,
    /// `faas.invocation_id` (the Lambda request id), when known.
    pub request_id: Option<&'a str>,
    /// Fingerprint of the span's trace id + span id ([`super::retry::span_fingerprint`]),
    /// when known: tells a duplicate delivery from a retry.
    pub span: Option<u64>,
}

#[derive(Debug, Clone)]
struct FunctionCostState {
    region: String,
    ledger: CostLedger,
    list_cost: Money,
    surprise: SurpriseDetector,
    retry: RetryTracker,
}

/// One function's cost status at an evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionCost {
    /// Also in the function's key, which the `/api/v1/cost` rows carry.
    #[serde(skip)]
    pub region: String,
    pub arch: Arch,
    pub memory_mb: u32,
    pub ephemeral_storage_mb: u32,
    /// Provisioned concurrency units configured (`cost.provisioned_concurrency`), 0 if none.
    pub provisioned_concurrency: u32,
    /// List price of every invocation recorded (the `lambdawatch_cost_usd_total` counter).
    pub cost_usd_total: f64,
    pub today_usd: f64,
    pub projected_30d_usd: f64,
    pub surprise: SurpriseStatus,
    pub retry: RetryStatus,
}

impl FunctionCost {
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = vec![MetricSample::new(
            names::COST_USD_TOTAL,
            self.cost_usd_total,
        )];
        // The surprise status carries the projection gauge.
        out.extend(self.surprise.samples());
        out.extend(self.retry.samples());
        out
    }
}

/// What a checkpoint keeps of one function: the usage ledger and the list-price counter, so the
/// 30-day projection and `lambdawatch_cost_usd_total` continue across a restart, and the
/// surprise detector's baseline and the retry tracker's ids, so neither re-learns nor re-fires.
/// The last two are defaulted: a checkpoint written before them loads (they start empty).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedFunctionCost<K> {
    pub key: K,
    pub region: String,
    pub ledger: CostLedger,
    pub list_cost: Money,
    #[serde(default, skip_serializing_if = "SavedSurprise::is_empty")]
    pub surprise: SavedSurprise,
    #[serde(default, skip_serializing_if = "SavedRetry::is_empty")]
    pub retry: SavedRetry,
}

/// Owner of all functions' cost state.
#[derive(Debug)]
pub struct CostStage<K: Ord + Clone> {
    prices: PriceTable,
    cfg: CostConfig,
    functions: BTreeMap<K, FunctionCostState>,
    dropped: BTreeMap<&'static str, u64>,
    dlq: DlqBacklog,
}

impl<K: Ord + Clone + FunctionName> CostStage<K> {
    pub fn new(prices: PriceTable, cfg: CostConfig) -> Self {
        CostStage {
            prices,
            cfg,
            functions: BTreeMap::new(),
            dropped: BTreeMap::new(),
            dlq: DlqBacklog::new(MAX_DLQ_QUEUES),
        }
    }

    /// Records the newest backlog reading of a DLQ `queue` of `function` (from the CloudWatch
    /// poller): reported in the retry status of every version of that function, and on
    /// `/metrics`, until it is an hour old. Returns the queues dropped so far (beyond
    /// [`MAX_DLQ_QUEUES`]).
    pub fn record_dlq_backlog(
        &mut self,
        queue: &str,
        function: &str,
        messages: f64,
        at_unix: u64,
    ) -> u64 {
        self.dlq.record(queue, function, messages, at_unix);
        self.dlq.queues_dropped
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    pub fn config(&self) -> &CostConfig {
        &self.cfg
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Invocations dropped, by reason (`too_many_functions`, `unknown_region`,
    /// `duplicate_delivery`).
    pub fn dropped(&self) -> &BTreeMap<&'static str, u64> {
        &self.dropped
    }

    fn drop_one(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Sets a function's monthly budget (the default comes from `surprise.budget_usd`);
    /// false if the function is unknown yet.
    pub fn set_budget(&mut self, key: &K, budget_usd: Option<f64>) -> bool {
        match self.functions.get_mut(key) {
            Some(f) => {
                f.surprise.set_budget(budget_usd);
                true
            }
            None => false,
        }
    }

    /// Records one invocation; returns false if it was dropped (and counted).
    pub fn record(&mut self, key: &K, inv: &CostInvocation<'_>) -> bool {
        let Ok(region) = self.prices.region(inv.region) else {
            self.drop_one("unknown_region");
            return false;
        };
        let cost = invocation_list_cost(
            region,
            inv.arch,
            inv.memory_mb,
            inv.ephemeral_storage_mb,
            inv.billed_ms,
            inv.on_provisioned,
        );
        if !self.functions.contains_key(key) {
            if self.functions.len() >= self.cfg.max_functions {
                self.drop_one("too_many_functions");
                return false;
            }
            self.functions.insert(
                key.clone(),
                FunctionCostState {
                    region: inv.region.to_string(),
                    ledger: CostLedger::new("", inv.arch, inv.memory_mb, inv.ephemeral_storage_mb),
                    list_cost: Money::ZERO,
                    surprise: SurpriseDetector::new(self.cfg.surprise.clone()),
                    retry: RetryTracker::new(self.cfg.retry.clone()),
                },
            );
        }
        let Some(f) = self.functions.get_mut(key) else {
            return false;
        };
        // The retry tracker first: a span delivered twice is neither a retry nor priced twice.
        if let Some(id) = inv.request_id
            && f.retry.observe(inv.t_s, id, inv.span) == Observed::Duplicate
        {
            self.drop_one("duplicate_delivery");
            return false;
        }
        f.ledger
            .set_config(inv.arch, inv.memory_mb, inv.ephemeral_storage_mb);
        f.ledger.record(inv.t_s, inv.billed_ms, inv.on_provisioned);
        f.list_cost = f.list_cost.plus(cost);
        f.surprise.observe(inv.t_s, 1);
        true
    }

    /// The per-function state a checkpoint keeps (keys in order).
    pub fn saved(&self) -> Vec<SavedFunctionCost<&K>> {
        self.functions
            .iter()
            .map(|(k, f)| SavedFunctionCost {
                key: k,
                region: f.region.clone(),
                ledger: f.ledger.clone(),
                list_cost: f.list_cost,
                surprise: f.surprise.save(),
                retry: f.retry.save(),
            })
            .collect()
    }

    /// Restores checkpointed functions into a fresh stage (functions it already has keep their
    /// state; none beyond `max_functions`; a region the price table lacks is skipped). Returns
    /// how many were restored.
    pub fn restore(&mut self, saved: Vec<SavedFunctionCost<K>>) -> usize {
        let mut n = 0;
        for s in saved {
            if self.functions.len() >= self.cfg.max_functions {
                break;
            }
            if self.functions.contains_key(&s.key) || self.prices.region(&s.region).is_err() {
                continue;
            }
            let mut surprise = SurpriseDetector::new(self.cfg.surprise.clone());
            surprise.restore(s.surprise);
            let mut retry = RetryTracker::new(self.cfg.retry.clone());
            retry.restore(s.retry);
            self.functions.insert(
                s.key,
                FunctionCostState {
                    region: s.region,
                    ledger: s.ledger,
                    list_cost: s.list_cost,
                    surprise,
                    retry,
                },
            );
            n += 1;
        }
        n
    }

    /// Provisioned concurrency units configured for `key`'s function name (0 if none).
    fn units(&self, key: &K) -> u32 {
        self.cfg
            .provisioned_concurrency
            .get(key.function_name())
            .copied()
            .unwrap_or(0)
    }

    /// The row of each `(region, function name)` that carries the name's per-name settings
    /// (the standing charge of its provisioned concurrency and its budget check): the smallest
    /// key of the name (`$LATEST` sorts before published versions).
    fn carriers(&self) -> BTreeMap<(&str, &str), &K> {
        let mut out: BTreeMap<(&str, &str), &K> = BTreeMap::new();
        for (k, f) in &self.functions {
            out.entry((f.region.as_str(), k.function_name()))
                .or_insert(k);
        }
        out
    }

    /// Evaluates every function at `now`.
    pub fn evaluate(&mut self, now: u64) -> Vec<(K, FunctionCost)> {
        let carriers = self.carriers();
        let is_carrier = |k: &K, region: &str| {
            carriers
                .get(&(region, k.function_name()))
                .is_some_and(|c| *c == k)
        };
        let warmup = self.cfg.surprise.budget_warmup_secs;
        // Projections, priced per region group; the name's budget projection alongside.
        let mut projected: BTreeMap<K, f64> = BTreeMap::new();
        let mut by_name: BTreeMap<(String, String), BudgetInput> = BTreeMap::new();
        let mut by_region: BTreeMap<&str, Vec<&K>> = BTreeMap::new();
        for (k, f) in &self.functions {
            by_region.entry(f.region.as_str()).or_default().push(k);
        }
        for (region, keys) in by_region {
            let Ok(prices) = self.prices.region(region) else {
                continue;
            };
            // Scale each function by its own window, then price them together.
            let scaled: Vec<_> = keys
                .iter()
                .filter_map(|k| self.functions.get(*k).map(|f| (k, f)))
                .map(|(k, f)| {
                    let (u, window) = f.ledger.usage_over(now, self.cfg.lookback_days);
                    let mut scaled = scale_to_30d(&u, window);
                    // Configured units are enabled all month, charged once per function name.
                    if is_carrier(k, region) {
                        scaled.provisioned_concurrency = self.units(k);
                        scaled.provisioned_seconds = THIRTY_DAYS_SECS;
                    }
                    scaled
                })
                .collect();
            let bill = monthly_bill(
                prices,
                self.cfg.free_tier.then_some(&self.prices.free_tier),
                &scaled,
            );
            for (k, (_, line)) in keys.iter().zip(bill.functions.iter()) {
                projected.insert((*k).clone(), line.total.usd());
                let Some(f) = self.functions.get(*k) else {
                    continue;
                };
                // The budget sees a version's extrapolated usage only once that version is
                // past the warm-up; the standing charge (configured, not extrapolated) always.
                let observed = f.ledger.observed_secs(now);
                let counted = if observed >= warmup {
                    line.total.usd()
                } else {
                    line.provisioned_concurrency_cost.usd()
                };
                let b = by_name
                    .entry((region.to_owned(), k.function_name().to_owned()))
                    .or_insert(BudgetInput {
                        projected_30d_usd: 0.0,
                        judged_30d_usd: 0.0,
                        observed_secs: 0,
                    });
                b.projected_30d_usd += line.total.usd();
                b.judged_30d_usd += counted;
                b.observed_secs = b.observed_secs.max(observed);
            }
        }
        let mut carrier_keys: Vec<K> = carriers.values().map(|k| (*k).clone()).collect();
        carrier_keys.sort_unstable();
        let mut out = Vec::with_capacity(self.functions.len());
        for (k, f) in self.functions.iter_mut() {
            let p = projected.get(k).copied();
            let carrier = carrier_keys.binary_search(k).is_ok();
            let units = if carrier {
                self.cfg
                    .provisioned_concurrency
                    .get(k.function_name())
                    .copied()
                    .unwrap_or(0)
            } else {
                0
            };
            let budget = if carrier {
                by_name
                    .get(&(f.region.clone(), k.function_name().to_owned()))
                    .copied()
            } else {
                None
            };
            let today = self
                .prices
                .region(&f.region)
                .map(|r| {
                    // List price of today's usage, plus the configured units since 00:00 UTC.
                    let mut u = f.ledger.day_usage(now);
                    u.provisioned_concurrency = units;
                    u.provisioned_seconds = now % 86_400;
                    monthly_bill(r, None, &[u]).account.total.usd()
                })
                .unwrap_or(0.0);
            out.push((
                k.clone(),
                FunctionCost {
                    region: f.region.clone(),
                    arch: f.ledger.arch(),
                    memory_mb: f.ledger.memory_mb(),
                    ephemeral_storage_mb: f.ledger.ephemeral_storage_mb(),
                    provisioned_concurrency: units,
                    cost_usd_total: f.list_cost.usd(),
                    today_usd: today,
                    projected_30d_usd: p.unwrap_or(0.0),
                    surprise: f.surprise.evaluate(now, p, budget),
                    retry: RetryStatus {
                        dlq: self.dlq.for_function(k.function_name(), now),
                        ..f.retry.evaluate(now)
                    },
                },
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_996_800;

    fn inv(t_s: u64, region: &str, id: Option<&'static str>) -> CostInvocation<'static> {
        let region: &'static str = Box::leak(region.to_string().into_boxed_str());
        CostInvocation {
            t_s,
            region,
            arch: Arch::X86_64,
            memory_mb: 512,
            ephemeral_storage_mb: 512,
            billed_ms: 1000,
            on_provisioned: false,
            request_id: id,
            span: None,
        }
    }

    #[test]
    fn projection_shares_the_free_tier_and_reports_per_function() {
        let mut s: CostStage<&str> =
            CostStage::new(PriceTable::embedded().unwrap(), CostConfig::default());
        // Two functions, each 50,000 × 1 s × 512 MB a day for one day: together 3 M a month.
        for i in 0..50_000u64 {
            let t = T0 + i * 86_400 / 50_000;
            assert!(s.record(&"a", &inv(t, "us-east-1", None)));
            assert!(s.record(&"b", &inv(t, "us-east-1", None)));
        }
        let out = s.evaluate(T0 + 86_400 - 1);
        let total: f64 = out.iter().map(|(_, f)| f.projected_30d_usd).sum();
        // Each function's window is one day; the fleet projection is the vector.
        assert!((total - 18.7335).abs() < 0.01, "{total}");
        for (_, f) in &out {
            // 50,000 invocations at list price: 25,000 GB-s × 0.0000166667 + 0.01.
            assert!(
                (f.cost_usd_total - 0.4266675).abs() < 1e-9,
                "{}",
                f.cost_usd_total
            );
            let names: Vec<_> = f.samples().iter().map(|m| m.name).collect();
            assert!(names.contains(&"lambdawatch_cost_usd_total"));
            assert!(names.contains(&"lambdawatch_cost_projected_30d_usd"));
            assert!(names.contains(&"lambdawatch_retry_fraction"));
            assert!(f.samples().iter().all(|m| !m.help().is_empty()));
            assert_eq!(f.samples()[0].kind(), "counter");
        }
    }

    #[test]
    fn drops_are_counted_with_a_reason() {
        let cfg = CostConfig {
            max_functions: 1,
            ..CostConfig::default()
        };
        let mut s: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        assert!(s.record(&"f1", &inv(T0, "us-east-1", Some("r1"))));
        assert!(!s.record(&"f2", &inv(T0, "us-east-1", None)));
        assert!(!s.record(&"f1", &inv(T0, "xx-nowhere-1", None)));
        assert_eq!(s.dropped().get("too_many_functions"), Some(&1));
        assert_eq!(s.dropped().get("unknown_region"), Some(&1));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn retries_flow_through() {
        let cfg = CostConfig {
            free_tier: false,
            ..CostConfig::default()
        };
        let mut s: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        let ids: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("req-{i}").into_boxed_str()))
            .collect();
        for id in &ids {
            s.record(&"f", &inv(T0, "us-east-1", Some(id)));
        }
        for id in &ids[..20] {
            s.record(&"f", &inv(T0 + 60, "us-east-1", Some(id)));
        }
        let out = s.evaluate(T0 + 120);
        let r = &out[0].1.retry;
        assert_eq!(r.retries, 20.0);
        assert!(r.alert);
        assert!(r.dlq.is_empty());
        // The DLQ backlog of the function's queue joins its retry status and samples.
        assert_eq!(s.record_dlq_backlog("f-dlq", "f", 7.0, T0), 0);
        s.record_dlq_backlog("other-dlq", "g", 1.0, T0);
        let out = s.evaluate(T0 + 150);
        let r = &out[0].1.retry;
        assert_eq!(r.dlq.len(), 1);
        assert_eq!((r.dlq[0].queue.as_str(), r.dlq[0].messages), ("f-dlq", 7.0));
        assert!(out[0].1.samples().iter().any(|m| {
            m.name == names::DLQ_REDRIVE_BACKLOG
                && m.value == 7.0
                && m.labels == vec![("queue", "f-dlq".to_string())]
        }));
        // A budget below the projection fires the budget surprise, once past the warm-up.
        assert!(s.set_budget(&"f", Some(0.001)));
        assert!(!s.set_budget(&"g", Some(1.0)));
        let out = s.evaluate(T0 + 180);
        let sp = &out[0].1.surprise;
        assert!(!sp.budget_alert && sp.budget_warming_up, "{sp:?}");
        let out = s.evaluate(T0 + 3600);
        assert!(out[0].1.surprise.budget_alert, "{:?}", out[0].1.surprise);
    }

    #[test]
    fn a_burst_in_a_new_functions_first_minutes_does_not_alert_sustained_spend_does() {
        let cfg = CostConfig {
            surprise: SurpriseConfig {
                budget_usd: Some(10.0),
                ..SurpriseConfig::default()
            },
            free_tier: false,
            ..CostConfig::default()
        };
        assert_eq!(cfg.surprise.budget_warmup_secs, 3600);
        let mut s: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        // A new function: 200 × 1 s × 512 MB in its first two minutes. Extrapolated from a
        // 120 s window that is 200 × 21,600 = 4.3 M invocations a month, ≈ $36.86: over the
        // $10 budget, but two minutes say nothing about a month.
        for i in 0..200u64 {
            assert!(s.record(&"new", &inv(T0 + i * 120 / 200, "us-east-1", None)));
        }
        let out = s.evaluate(T0 + 120);
        let sp = &out[0].1.surprise;
        assert!(sp.projected_30d_usd.unwrap() > 36.0, "{sp:?}");
        assert_eq!(sp.budget_projected_30d_usd, sp.projected_30d_usd);
        assert!(sp.budget_warming_up && !sp.budget_alert, "{sp:?}");
        assert!(sp.started.is_empty());
        // The burst stays alone: after the warm-up the projection (200 invocations over an
        // hour, ×720) is $1.23: no alert ever.
        let out = s.evaluate(T0 + 3600);
        let sp = &out[0].1.surprise;
        assert!(!sp.budget_warming_up && !sp.budget_alert, "{sp:?}");
        // The same spend sustained (100 a minute for the hour): past the warm-up it alerts.
        let mut s2: CostStage<&str> =
            CostStage::new(PriceTable::embedded().unwrap(), s.config().clone());
        for m in 0..=60u64 {
            for i in 0..100u64 {
                s2.record(&"new", &inv(T0 + m * 60 + i * 60 / 100, "us-east-1", None));
            }
            let out = s2.evaluate(T0 + m * 60 + 59);
            let sp = &out[0].1.surprise;
            assert_eq!(
                sp.budget_alert,
                T0 + m * 60 + 59 - T0 >= 3600,
                "minute {m}: {sp:?}"
            );
        }
    }

    #[test]
    fn two_versions_of_one_function_pay_one_standing_charge_and_share_one_budget() {
        use crate::aggregate::FunctionKey;
        let cfg = CostConfig {
            provisioned_concurrency: BTreeMap::from([("api".to_owned(), 10)]),
            surprise: SurpriseConfig {
                budget_usd: Some(60.0),
                budget_warmup_secs: 60,
                ..SurpriseConfig::default()
            },
            free_tier: false,
            ..CostConfig::default()
        };
        let key = |version: &str| FunctionKey {
            function: "api".into(),
            version: version.into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
        };
        let mut s: CostStage<FunctionKey> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        // $LATEST and version 7 of one function, one 1 s invocation each, at 00:00.
        for v in ["$LATEST", "7"] {
            assert!(s.record(&key(v), &inv(T0, "us-east-1", None)));
        }
        let out = s.evaluate(T0 + 43_200);
        let row = |v: &str| &out.iter().find(|(k, _)| k.version == v).unwrap().1;
        let (latest, v7) = (row("$LATEST"), row("7"));
        // The standing charge (10 × 0.5 GB × 2,592,000 s × $0.0000041667 = $54.000432) once.
        let standing = 54.000432;
        let usage = 60.0 * (0.5 * 0.0000166667 + 0.0000002);
        assert_eq!(
            latest.provisioned_concurrency + v7.provisioned_concurrency,
            10
        );
        let total = latest.projected_30d_usd + v7.projected_30d_usd;
        assert!((total - (standing + 2.0 * usage)).abs() < 1e-6, "{total}");
        assert!((v7.projected_30d_usd - usage).abs() < 1e-9);
        // Today (until noon): one standing charge over both rows.
        let today = latest.today_usd + v7.today_usd;
        assert!((today - (0.9000072 + 2.0 * (0.5 * 0.0000166667 + 0.0000002))).abs() < 1e-9);
        // One budget for the name, judged once on the sum: $54.0 + 2 × 0.0005 < $60.
        let b: Vec<_> = [latest, v7]
            .iter()
            .filter_map(|f| f.surprise.budget_projected_30d_usd)
            .collect();
        assert_eq!(b.len(), 1, "{latest:?} {v7:?}");
        assert!((b[0] - total).abs() < 1e-9);
        assert!(!latest.surprise.budget_alert && !v7.surprise.budget_alert);
        // 3,000 more 1 s invocations on each version over the half day.
        for i in 0..3000u64 {
            for v in ["$LATEST", "7"] {
                s.record(&key(v), &inv(T0 + i * 14, "us-east-1", None));
            }
        }
        let out = s.evaluate(T0 + 43_200);
        let alerts: Vec<_> = out
            .iter()
            .filter(|(_, f)| f.surprise.budget_alert)
            .map(|(k, _)| k.version.clone())
            .collect();
        // Each version: 3,001 × 60 = 180,060 × (0.5 × 0.0000166667 + 0.0000002) ≈ $1.54; the
        // name: $54.00 + $3.07 = $57.07 < $60: no alert. At a $56 budget: one alert, on the
        // name's carrying row ($LATEST sorts first).
        assert!(alerts.is_empty(), "{alerts:?}");
        for v in ["$LATEST", "7"] {
            s.set_budget(&key(v), Some(56.0));
        }
        let out = s.evaluate(T0 + 43_201);
        let alerts: Vec<_> = out
            .iter()
            .filter(|(_, f)| f.surprise.budget_alert)
            .map(|(k, _)| k.version.clone())
            .collect();
        assert_eq!(alerts, vec!["$LATEST".to_string()]);
        let per_row: Vec<f64> = out.iter().map(|(_, f)| f.projected_30d_usd).collect();
        // The standing charge sits on one row only (before the fix each row carried it:
        // $54 + $1.54 each, twice the configured units).
        assert_eq!(
            per_row.iter().filter(|p| **p > 50.0).count(),
            1,
            "{per_row:?}"
        );
    }

    #[test]
    fn a_span_delivered_twice_is_priced_once_and_is_no_retry() {
        let mut s: CostStage<&str> =
            CostStage::new(PriceTable::embedded().unwrap(), CostConfig::default());
        let ids: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("req-{i}").into_boxed_str()))
            .collect();
        let with_span = |t: u64, id: &'static str, span: u64| CostInvocation {
            span: Some(span),
            ..inv(t, "us-east-1", Some(id))
        };
        for (i, id) in ids.iter().enumerate() {
            assert!(s.record(&"f", &with_span(T0, id, i as u64)));
        }
        // The exporter re-sends the first 30 spans after a timeout: same ids, same spans.
        for (i, id) in ids[..30].iter().enumerate() {
            assert!(!s.record(&"f", &with_span(T0 + 2, id, i as u64)));
        }
        assert_eq!(s.dropped().get("duplicate_delivery"), Some(&30));
        let out = s.evaluate(T0 + 60);
        let f = &out[0].1;
        assert_eq!(f.retry.retries, 0.0, "{:?}", f.retry);
        assert!(!f.retry.alert);
        assert_eq!(f.retry.duplicates_total, 30);
        // Priced once: 100 × 1 s × 512 MB at list price.
        let once = 100.0 * (0.5 * 0.0000166667 + 0.0000002);
        assert!(
            (f.cost_usd_total - once).abs() < 1e-9,
            "{}",
            f.cost_usd_total
        );
        // Real async retries carry new spans: counted (and priced: Lambda bills them).
        for (i, id) in ids[..30].iter().enumerate() {
            assert!(s.record(&"f", &with_span(T0 + 90, id, 1000 + i as u64)));
        }
        let out = s.evaluate(T0 + 120);
        assert_eq!(out[0].1.retry.retries, 30.0);
        assert!(out[0].1.retry.alert);
    }

    #[test]
    fn configured_provisioned_concurrency_enters_the_day_cost_and_the_projection() {
        let cfg = CostConfig {
            provisioned_concurrency: BTreeMap::from([("pc".to_owned(), 10)]),
            ..CostConfig::default()
        };
        let mut s: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        // 512 MB x86 us-east-1: one on-demand invocation of 1 s, one served by a provisioned
        // environment of 2 s; the same traffic on a function without units.
        for key in ["pc", "plain"] {
            assert!(s.record(&key, &inv(T0, "us-east-1", None)));
            let mut on_pc = inv(T0 + 1, "us-east-1", None);
            on_pc.on_provisioned = true;
            on_pc.billed_ms = 2000;
            assert!(s.record(&key, &on_pc));
        }
        // Noon: a 43,200 s window, scaled × 60 to 30 days.
        let out = s.evaluate(T0 + 43_200);
        let pc = &out.iter().find(|(k, _)| *k == "pc").unwrap().1;
        let plain = &out.iter().find(|(k, _)| *k == "plain").unwrap().1;
        assert_eq!(pc.provisioned_concurrency, 10);
        assert_eq!(plain.provisioned_concurrency, 0);
        // By hand, from the price table (us-east-1 x86_64), no free tier with PC enabled:
        //   standing: 10 × 0.5 GB × 2,592,000 s = 12,960,000 GB-s × 0.0000041667 = 54.000432
        //   on-demand duration: 0.5 GB × 1 s × 60 = 30 GB-s × 0.0000166667   =  0.000500001
        //   PC duration: 0.5 GB × 2 s × 60 = 60 GB-s × 0.0000097222          =  0.000583332
        //   requests: 120 × $0.20 / 1 M                                       =  0.000024
        let want = 54.000432 + 0.000500001 + 0.000583332 + 0.000024;
        assert!(
            (pc.projected_30d_usd - want).abs() < 1e-9,
            "{} vs {want}",
            pc.projected_30d_usd
        );
        // Today until noon: standing 10 × 0.5 × 43,200 = 216,000 GB-s × 0.0000041667 = 0.9000072,
        // on-demand 0.5 GB-s × 0.0000166667, PC duration 1 GB-s × 0.0000097222, 2 requests.
        let today = 0.9000072 + 0.5 * 0.0000166667 + 0.0000097222 + 2.0 * 0.0000002;
        assert!((pc.today_usd - today).abs() < 1e-12, "{}", pc.today_usd);
        // Without units the standing charge is absent (and the free tier covers the rest).
        assert!(
            plain.today_usd < 0.0001 && plain.projected_30d_usd < 0.01,
            "{plain:?}"
        );
        // The per-invocation list-price counter has no standing charge.
        assert_eq!(pc.cost_usd_total, plain.cost_usd_total);
    }

    #[test]
    fn baseline_and_retry_ids_survive_a_checkpoint_round_trip() {
        use super::super::surprise::hour_of_week;
        let cfg = CostConfig::default();
        let prices = PriceTable::embedded().unwrap();
        let mut s: CostStage<String> = CostStage::new(prices.clone(), cfg.clone());
        let f = "orders".to_owned();
        // One week of 60 invocations an hour (one a minute), then a restart.
        let week = 7 * 86_400;
        for m in 0..(week / 60) {
            s.record(&f, &inv(T0 + m * 60, "us-east-1", None));
        }
        // 100 request ids, 20 of them retried after a minute (a storm), just before the restart.
        let t = T0 + week;
        let ids: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("req-{i}").into_boxed_str()))
            .collect();
        for id in &ids {
            s.record(&f, &inv(t, "us-east-1", Some(id)));
        }
        for id in &ids[..20] {
            s.record(&f, &inv(t + 60, "us-east-1", Some(id)));
        }
        let before = s.evaluate(t + 119);
        assert!(before[0].1.retry.alert, "{:?}", before[0].1.retry);
        assert_eq!(before[0].1.surprise.baseline_per_hour, Some(60.0));
        // The burst (120 invocations in 2 minutes) is a rate surprise too.
        assert!(before[0].1.surprise.rate_alert);
        // Through JSON, as `crate::checkpoint` writes it.
        let json = serde_json::to_string(&s.saved()).unwrap();
        let saved: Vec<SavedFunctionCost<String>> = serde_json::from_str(&json).unwrap();
        assert!(json.len() < 12_000, "{} bytes", json.len());

        let restart = |saved: Vec<SavedFunctionCost<String>>| {
            let mut r: CostStage<String> = CostStage::new(prices.clone(), cfg.clone());
            assert_eq!(r.restore(saved), 1);
            r
        };
        let mut restored = restart(saved.clone());
        // The baseline is there at once: the same slot judges, a normal rate does not alert.
        let after = restored.evaluate(t + 150);
        let sp = &after[0].1.surprise;
        assert_eq!(sp.hour_of_week, hour_of_week(t + 150));
        assert_eq!(sp.baseline_per_hour, Some(60.0));
        // Both were firing: they still are, and neither starts again (no second notification).
        assert!(sp.rate_alert && sp.started.is_empty(), "{sp:?}");
        // The storm was firing: it still is, and does not start again (no second notification).
        assert!(after[0].1.retry.alert && !after[0].1.retry.started);
        assert_eq!(after[0].1.retry.retries, 20.0);
        // A retry that straddles the restart is a retry.
        restored.record(&f, &inv(t + 170, "us-east-1", Some(ids[50])));
        assert_eq!(restored.evaluate(t + 171)[0].1.retry.retries, 21.0);
        // Back to one a minute until the next hour: the rate surprise resolves.
        let spike_at = t + 3600 - (t % 3600) + 600;
        for m in (t + 180..spike_at).step_by(60) {
            restored.record(&f, &inv(m, "us-east-1", None));
        }
        assert!(!restored.evaluate(spike_at - 1)[0].1.surprise.rate_alert);
        // 10× the baseline for 5 minutes (50 > the 30-invocation floor): caught at the first
        // evaluation.
        for m in 0..5 {
            for _ in 0..10 {
                restored.record(&f, &inv(spike_at + m * 60, "us-east-1", None));
            }
        }
        let sp = &restored.evaluate(spike_at + 4 * 60 + 59)[0].1.surprise;
        assert!(sp.rate_alert && sp.started == vec!["rate"], "{sp:?}");

        // Control: without the saved state the same spike is not judged (no baseline).
        let mut bare = saved.clone();
        bare[0].surprise = Default::default();
        bare[0].retry = Default::default();
        let mut control = restart(bare);
        for m in 0..5 {
            for _ in 0..10 {
                control.record(&f, &inv(spike_at + m * 60, "us-east-1", None));
            }
        }
        let out = control.evaluate(spike_at + 4 * 60 + 59);
        assert_eq!(out[0].1.surprise.baseline_per_hour, None);
        assert!(!out[0].1.surprise.rate_alert && !out[0].1.retry.alert);

        // A checkpoint written before these fields existed (as the earlier struct wrote it)
        // still loads.
        #[derive(serde::Serialize)]
        struct Before<'a> {
            key: &'a str,
            region: &'a str,
            ledger: &'a CostLedger,
            list_cost: Money,
        }
        let old = serde_json::to_string(&[Before {
            key: &f,
            region: &saved[0].region,
            ledger: &saved[0].ledger,
            list_cost: saved[0].list_cost,
        }])
        .unwrap();
        assert!(!old.contains("surprise") && !old.contains("retry"));
        let old: Vec<SavedFunctionCost<String>> = serde_json::from_str(&old).unwrap();
        let out = restart(old).evaluate(t + 150);
        assert_eq!(out[0].1.surprise.baseline_per_hour, None);
        assert_eq!(out[0].1.cost_usd_total, before[0].1.cost_usd_total);
    }

    #[test]
    fn checkpointed_retry_ids_are_hash_sampled_to_their_cap() {
        let cfg = CostConfig::default();
        let mut s: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg.clone());
        // 1,000 ids, each retried once (fraction 1/2), in one window.
        let ids: Vec<&'static str> = (0..1000)
            .map(|i| &*Box::leak(format!("id-{i}").into_boxed_str()))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            s.record(&"f", &inv(T0 + i as u64 / 10, "us-east-1", Some(id)));
            s.record(&"f", &inv(T0 + 100 + i as u64 / 10, "us-east-1", Some(id)));
        }
        let saved = s.saved();
        let r = &saved[0].retry;
        assert!(
            r.ids.len() <= cfg.retry.checkpoint_max_ids,
            "{}",
            r.ids.len()
        );
        assert!(
            r.shift >= 3,
            "1,000 ids → ≤ 128 needs 3 halvings: {}",
            r.shift
        );
        let owned: Vec<SavedFunctionCost<&str>> = saved
            .into_iter()
            .map(|x| SavedFunctionCost {
                key: *x.key,
                region: x.region,
                ledger: x.ledger,
                list_cost: x.list_cost,
                surprise: x.surprise,
                retry: x.retry,
            })
            .collect();
        let mut restored: CostStage<&str> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        restored.restore(owned);
        let st = restored
            .evaluate(T0 + 300)
            .into_iter()
            .next()
            .unwrap()
            .1
            .retry;
        // Every sampled id keeps both occurrences: the fraction is exactly 1/2, unbiased.
        assert_eq!(st.retry_fraction, 0.5, "{st:?}");
        assert!((st.invocations - 2000.0).abs() / 2000.0 < 0.35, "{st:?}");
    }
}
