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

use std::collections::BTreeMap;

use super::MetricSample;
use super::ledger::CostLedger;
use super::model::{Money, invocation_list_cost, monthly_bill, scale_to_30d};
use super::names;
use super::prices::{Arch, PriceTable};
use super::retry::{RetryConfig, RetryStatus, RetryTracker};
use super::surprise::{SurpriseConfig, SurpriseDetector, SurpriseStatus};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    pub max_functions: usize,
    /// Days of history the 30-day projection extrapolates from.
    pub lookback_days: u64,
    pub free_tier: bool,
    pub surprise: SurpriseConfig,
    pub retry: RetryConfig,
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
/// 30-day projection and `lambdawatch_cost_usd_total` continue across a restart. The surprise
/// detector and the retry tracker start afresh (see `cost::feed`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedFunctionCost<K> {
    pub key: K,
    pub region: String,
    pub ledger: CostLedger,
    pub list_cost: Money,
}

/// Owner of all functions' cost state.
#[derive(Debug)]
pub struct CostStage<K: Ord + Clone> {
    prices: PriceTable,
    cfg: CostConfig,
    functions: BTreeMap<K, FunctionCostState>,
    dropped: BTreeMap<&'static str, u64>,
}

impl<K: Ord + Clone> CostStage<K> {
    pub fn new(prices: PriceTable, cfg: CostConfig) -> Self {
        CostStage {
            prices,
            cfg,
            functions: BTreeMap::new(),
            dropped: BTreeMap::new(),
        }
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

    /// Invocations dropped, by reason (`too_many_functions`, `unknown_region`).
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
        f.ledger
            .set_config(inv.arch, inv.memory_mb, inv.ephemeral_storage_mb);
        f.ledger.record(inv.t_s, inv.billed_ms, inv.on_provisioned);
        f.list_cost = f.list_cost.plus(cost);
        f.surprise.observe(inv.t_s, 1);
        if let Some(id) = inv.request_id {
            f.retry.observe(inv.t_s, id);
        }
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
            self.functions.insert(
                s.key,
                FunctionCostState {
                    region: s.region,
                    ledger: s.ledger,
                    list_cost: s.list_cost,
                    surprise: SurpriseDetector::new(self.cfg.surprise.clone()),
                    retry: RetryTracker::new(self.cfg.retry.clone()),
                },
            );
            n += 1;
        }
        n
    }

    /// Evaluates every function at `now`.
    pub fn evaluate(&mut self, now: u64) -> Vec<(K, FunctionCost)> {
        // Projections, priced per region group.
        let mut projected: BTreeMap<K, f64> = BTreeMap::new();
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
                .filter_map(|k| self.functions.get(*k))
                .map(|f| {
                    let (u, window) = f.ledger.usage_over(now, self.cfg.lookback_days);
                    scale_to_30d(&u, window)
                })
                .collect();
            let bill = monthly_bill(
                prices,
                self.cfg.free_tier.then_some(&self.prices.free_tier),
                &scaled,
            );
            for (k, (_, line)) in keys.iter().zip(bill.functions.iter()) {
                projected.insert((*k).clone(), line.total.usd());
            }
        }
        let mut out = Vec::with_capacity(self.functions.len());
        for (k, f) in self.functions.iter_mut() {
            let p = projected.get(k).copied();
            let today = self
                .prices
                .region(&f.region)
                .map(|r| f.ledger.day_cost(r, now).account.total.usd())
                .unwrap_or(0.0);
            out.push((
                k.clone(),
                FunctionCost {
                    region: f.region.clone(),
                    arch: f.ledger.arch(),
                    memory_mb: f.ledger.memory_mb(),
                    ephemeral_storage_mb: f.ledger.ephemeral_storage_mb(),
                    cost_usd_total: f.list_cost.usd(),
                    today_usd: today,
                    projected_30d_usd: p.unwrap_or(0.0),
                    surprise: f.surprise.evaluate(now, p),
                    retry: f.retry.evaluate(now),
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
        let mut s: CostStage<u32> = CostStage::new(PriceTable::embedded().unwrap(), cfg);
        assert!(s.record(&1, &inv(T0, "us-east-1", Some("r1"))));
        assert!(!s.record(&2, &inv(T0, "us-east-1", None)));
        assert!(!s.record(&1, &inv(T0, "xx-nowhere-1", None)));
        assert_eq!(s.dropped().get("too_many_functions"), Some(&1));
        assert_eq!(s.dropped().get("unknown_region"), Some(&1));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn retries_flow_through() {
        let mut s: CostStage<u8> =
            CostStage::new(PriceTable::embedded().unwrap(), CostConfig::default());
        let ids: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("req-{i}").into_boxed_str()))
            .collect();
        for id in &ids {
            s.record(&0, &inv(T0, "us-east-1", Some(id)));
        }
        for id in &ids[..20] {
            s.record(&0, &inv(T0 + 60, "us-east-1", Some(id)));
        }
        let out = s.evaluate(T0 + 120);
        let r = &out[0].1.retry;
        assert_eq!(r.retries, 20.0);
        assert!(r.alert);
        // A budget below the projection fires the budget surprise.
        assert!(s.set_budget(&0, Some(0.001)));
        assert!(!s.set_budget(&9, Some(1.0)));
        let out = s.evaluate(T0 + 180);
        assert!(out[0].1.surprise.budget_alert, "{:?}", out[0].1.surprise);
    }
}
