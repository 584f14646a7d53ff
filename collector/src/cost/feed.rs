//! The cost stage in the running collector: fed by the aggregator, evaluated on the tick.
//!
//! ```text
//! aggregate owner ── apply(batch) ──► CostFeed::observe(key, instance, tags, event)
//!                                        └─► CostStage::record (one CostInvocation per span)
//! evaluator tick ── the same owner, one query ──► CostFeed::evaluate(now) ──► CostReport
//!                                        └─► serve::Snapshot ─► /metrics, /api/v1/cost, demo
//! ```
//!
//! - **Owner**: a field of [`crate::aggregate::Aggregates`], so the aggregator task is its only
//!   owner: no lock, nothing held across an await, and `evaluate` runs with the evaluation's
//!   injected `now` inside the query that also evaluates the SLOs.
//! - **Consumes** every `Event::Invocation` (one [`CostInvocation`] each) and `Event::Init` (to
//!   learn which execution environments are provisioned) of a function group, with the group's
//!   resource tags and `faas.instance`; for the advisors (`cost::advice`) the same invocations
//!   and inits (per-size table, concurrency sampler, cascade window of the function), each
//!   `Event::InvocationTrace` and, through [`CostFeed::observe_trace`], every `Event::Client` of
//!   a trace-joined group (the bounded `cost::timeout::TraceJoin`).
//! - **Produces** a [`CostReport`]: one row per function plus the drop counters and the trace
//!   join's counters.
//! - **When full**: never blocks; an invocation it cannot price is dropped and counted by reason
//!   ([`DROP_REASONS`]): `too_many_functions` (beyond `max_functions`), `unknown_region` (region
//!   empty or not in the price table), `no_memory_size` (neither the span's
//!   `aws.lambda.memory_size_mb` nor the extension's fallback to `faas.max_memory`),
//!   `duplicate_delivery` (a span already recorded, same request id, trace id and span id,
//!   delivered again by an exporter retry: neither priced again nor counted as a retry).
//!
//! What each field of a [`CostInvocation`] comes from (what the extension sends, Contract 1):
//!
//! | field | source |
//! |---|---|
//! | region | resource `cloud.region` (the function key's `region`) |
//! | architecture | resource `aws.lambda.architecture`, else `host.arch`, else `x86_64` |
//! | memory | span `aws.lambda.memory_size_mb` (the extension falls back to `faas.max_memory`) |
//! | ephemeral storage | resource `aws.lambda.ephemeral_storage_mb` (set it through `OTEL_RESOURCE_ATTRIBUTES`; Lambda does not expose it), else 512 |
//! | billed duration | span `aws.lambda.billed_duration_ms`; an incomplete span (no `platform.report`) is billed its duration rounded up to the millisecond |
//! | provisioned | the environment (`faas.instance`) reported an init span of type `provisioned-concurrency` |
//! | request id | span `faas.invocation_id` |
//!
//! **Restarts**: `crate::checkpoint` saves each function's usage ledger (32 UTC days) and its
//! list-price counter, and the provisioned environments known, so the 30-day projection and
//! `lambdawatch_cost_usd_total` continue across a deploy; with them the cost-surprise
//! detector's hour-of-week baseline and the retry tracker's recent request ids
//! (`cost::stage::SavedFunctionCost`), so neither re-learns nor re-fires after a restart.
//!
//! **Provisioned environments** are remembered by instance id, at most [`MAX_PC_INSTANCES`]; when
//! full the least recently seen is forgotten (its later invocations are priced on demand, the
//! higher price). An environment whose init span predates a collector restart is not known as
//! provisioned either: same upper bound.

use std::collections::{BTreeMap, HashMap};

use super::advice::{self, AdviceConfig, AdviceInputs, FunctionAdvice, SizeTable};
use super::timeout::{JoinStats, TraceJoin};

use lambdawatch_semconv::attr;

use super::prices::{Arch, FREE_EPHEMERAL_STORAGE_MB, PriceTable};
use super::stage::{CostConfig, CostInvocation, CostStage, FunctionCost, SavedFunctionCost};
use crate::aggregate::{Event, FunctionKey, FunctionState, InitKind, Invocation};

/// Provisioned execution environments remembered (≈ 100 B each).
pub const MAX_PC_INSTANCES: usize = 4096;

/// Every reason an invocation is not priced; `/metrics` exposes each from 0.
pub const DROP_REASONS: [&str; 4] = [
    "too_many_functions",
    "unknown_region",
    "no_memory_size",
    "duplicate_delivery",
];

/// One function's row of the report (`/api/v1/cost`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionCostRow {
    #[serde(flatten)]
    pub key: FunctionKey,
    #[serde(flatten)]
    pub cost: FunctionCost,
    /// The advisors' output (`cost::advice`); `None` when evaluated without the aggregator's
    /// state ([`CostFeed::evaluate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<FunctionAdvice>,
}

impl FunctionCostRow {
    /// Every `/metrics` sample of this row: the cost stage's, then the advisors'.
    pub fn samples(&self) -> Vec<super::MetricSample> {
        let mut out = self.cost.samples();
        if let Some(a) = &self.advice {
            out.extend(a.samples());
        }
        out
    }
}

/// One evaluation of every function's cost (published with the SLO snapshot).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CostReport {
    pub evaluated_at_unix: u64,
    /// The price table's date.
    pub prices_as_of: String,
    pub free_tier: bool,
    /// Days of history the 30-day projection extrapolates from.
    pub lookback_days: u64,
    /// Retry fraction above which a retry storm fires.
    pub retry_threshold: f64,
    /// Invocations not priced, by reason (every reason of [`DROP_REASONS`]).
    pub dropped: BTreeMap<&'static str, u64>,
    /// The timeout-cascade advisor's trace join (`cost::timeout::TraceJoin`).
    pub trace_join: JoinStats,
    /// Sorted by function key.
    pub functions: Vec<FunctionCostRow>,
}

/// The cost part of a checkpoint (`crate::checkpoint`), as written (borrowing the keys).
#[derive(Debug, serde::Serialize)]
pub struct CostCheckpointRef<'a> {
    pub functions: Vec<SavedFunctionCost<&'a FunctionKey>>,
    pub provisioned_instances: Vec<(&'a str, u64)>,
    /// The memory advisor's per-size tables (`cost::advice::SizeTable`).
    pub sizes: Vec<(&'a FunctionKey, &'a SizeTable)>,
}

/// The cost part of a checkpoint, as read.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CostCheckpoint {
    pub functions: Vec<SavedFunctionCost<FunctionKey>>,
    #[serde(default)]
    pub provisioned_instances: Vec<(String, u64)>,
    /// Absent from checkpoints written before the per-size tables were kept.
    #[serde(default)]
    pub sizes: Vec<(FunctionKey, SizeTable)>,
}

/// The runtime owner of the cost stage (lives inside the aggregator).
#[derive(Debug)]
pub struct CostFeed {
    stage: CostStage<FunctionKey>,
    /// Function name → monthly budget (USD) overriding the default.
    budgets: BTreeMap<String, f64>,
    /// Provisioned environments: `faas.instance` → last seen (unix s).
    provisioned: HashMap<String, u64>,
    no_memory_size: u64,
    /// The advisors' inputs of every function (`cost::advice`): created for a function the
    /// stage accepted or an init span of a function, at most `max_functions` of them.
    inputs: HashMap<FunctionKey, AdviceInputs<FunctionKey>>,
    /// Client spans ↔ invocations by trace id (bounded, `cost.advice.cascade.trace_capacity`).
    join: TraceJoin<FunctionKey>,
    advice_cfg: AdviceConfig,
}

/// `aws.lambda.architecture`, else `host.arch` (`amd64`, `arm64`, …), else x86_64.
fn arch_of(tags: &BTreeMap<String, String>) -> Arch {
    [attr::AWS_LAMBDA_ARCHITECTURE, attr::HOST_ARCH]
        .iter()
        .find_map(|k| tags.get(*k).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(Arch::X86_64)
}

fn ephemeral_storage_of(tags: &BTreeMap<String, String>) -> u32 {
    tags.get(attr::AWS_LAMBDA_EPHEMERAL_STORAGE_MB)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|mb| (FREE_EPHEMERAL_STORAGE_MB..=10_240).contains(mb))
        .unwrap_or(FREE_EPHEMERAL_STORAGE_MB)
}

impl CostFeed {
    pub fn new(prices: PriceTable, cfg: CostConfig, budgets: BTreeMap<String, f64>) -> Self {
        Self {
            stage: CostStage::new(prices, cfg),
            budgets,
            provisioned: HashMap::new(),
            no_memory_size: 0,
            inputs: HashMap::new(),
            join: TraceJoin::new(&AdviceConfig::default().cascade),
            advice_cfg: AdviceConfig::default(),
        }
    }

    /// The advisors' settings (`cost.advice`); call before feeding.
    pub fn with_advice(mut self, cfg: AdviceConfig) -> Self {
        self.join = TraceJoin::new(&cfg.cascade);
        self.advice_cfg = cfg;
        self
    }

    /// The advisors' inputs of `key`, created while fewer than `max_functions` exist.
    fn inputs_mut(&mut self, key: &FunctionKey) -> Option<&mut AdviceInputs<FunctionKey>> {
        if !self.inputs.contains_key(key) {
            if self.inputs.len() >= self.stage.config().max_functions {
                return None;
            }
            self.inputs
                .insert(key.clone(), AdviceInputs::new(key.clone()));
        }
        self.inputs.get_mut(key)
    }

    pub fn stage(&self) -> &CostStage<FunctionKey> {
        &self.stage
    }

    /// The stage, for inputs that do not come from spans (the CloudWatch poller's DLQ backlog,
    /// `CostStage::record_dlq_backlog`).
    pub fn stage_mut(&mut self) -> &mut CostStage<FunctionKey> {
        &mut self.stage
    }

    /// Invocations not priced so far, by reason (every reason present).
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> = DROP_REASONS.iter().map(|r| (*r, 0)).collect();
        for (r, n) in self.stage.dropped() {
            *out.entry(r).or_default() += n;
        }
        *out.entry("no_memory_size").or_default() += self.no_memory_size;
        out
    }

    /// Feeds one aggregated event of the function `key` (events of other kinds are ignored).
    pub fn observe(
        &mut self,
        key: &FunctionKey,
        instance: &str,
        tags: &BTreeMap<String, String>,
        event: &Event,
    ) {
        match event {
            Event::Invocation(inv) => self.invocation(key, instance, tags, inv),
            Event::Init { t_s, kind, .. } => {
                if let Some(inputs) = self.inputs_mut(key) {
                    match kind {
                        InitKind::OnDemand => inputs.concurrency.record_cold_start(*t_s),
                        InitKind::ManagedInstances => inputs.concurrency.managed_instances = true,
                        _ => {}
                    }
                }
                if instance.is_empty() {
                    return;
                }
                if *kind == InitKind::Provisioned {
                    self.remember_provisioned(instance, *t_s);
                } else {
                    self.provisioned.remove(instance);
                }
            }
            Event::InvocationTrace { t_s, trace_id, .. } => {
                let cfg = &self.advice_cfg.cascade;
                if let Some(inputs) = self.inputs.get_mut(key) {
                    for (d, ms) in self.join.invocation(*trace_id, &inputs.key, *t_s) {
                        inputs.cascade.record_client(*t_s, &d, ms, cfg);
                    }
                }
            }
            _ => {}
        }
    }

    /// Feeds one event of a trace-joined group (`Event::Client`; others are ignored).
    pub fn observe_trace(&mut self, event: &Event) {
        let Event::Client {
            t_s,
            trace_id,
            downstream,
            latency_ms,
        } = event
        else {
            return;
        };
        if let Some((key, t)) = self.join.client(*trace_id, downstream, *latency_ms, *t_s)
            && let Some(inputs) = self.inputs.get_mut(&*key)
        {
            inputs
                .cascade
                .record_client(t, downstream, *latency_ms, &self.advice_cfg.cascade);
        }
    }

    fn remember_provisioned(&mut self, instance: &str, t_s: u64) {
        if let Some(seen) = self.provisioned.get_mut(instance) {
            *seen = (*seen).max(t_s);
            return;
        }
        if self.provisioned.len() >= MAX_PC_INSTANCES
            && let Some(oldest) = self
                .provisioned
                .iter()
                .min_by_key(|(_, seen)| **seen)
                .map(|(i, _)| i.clone())
        {
            self.provisioned.remove(&oldest);
        }
        self.provisioned.insert(instance.to_owned(), t_s);
    }

    fn invocation(
        &mut self,
        key: &FunctionKey,
        instance: &str,
        tags: &BTreeMap<String, String>,
        inv: &Invocation,
    ) {
        let Some(memory_mb) = inv
            .memory_mb
            .filter(|m| m.is_finite() && *m >= 1.0)
            .map(|m| m.round().min(f64::from(u32::MAX)) as u32)
        else {
            self.no_memory_size += 1;
            return;
        };
        let billed_ms = inv
            .billed_ms
            .filter(|b| b.is_finite() && *b >= 0.0)
            .unwrap_or_else(|| inv.duration_ms.max(0.0).ceil())
            .round() as u64;
        let on_provisioned = match self.provisioned.get_mut(instance) {
            Some(seen) => {
                *seen = (*seen).max(inv.t_s);
                true
            }
            None => false,
        };
        let known = self.stage.len();
        let recorded = self.stage.record(
            key,
            &CostInvocation {
                t_s: inv.t_s,
                region: &key.region,
                arch: arch_of(tags),
                memory_mb,
                ephemeral_storage_mb: ephemeral_storage_of(tags),
                billed_ms,
                on_provisioned,
                request_id: inv.request_id.as_deref(),
                span: inv.span_fingerprint,
            },
        );
        if recorded {
            let cascade_cfg = self.advice_cfg.cascade.clone();
            if let Some(inputs) = self.inputs_mut(key) {
                inputs
                    .sizes
                    .record(memory_mb, billed_ms, inv.duration_ms, inv.max_memory_mb);
                inputs.concurrency.record_invocation(
                    instance,
                    inv.t_s.saturating_mul(1000),
                    inv.duration_ms,
                    billed_ms,
                );
                inputs.cascade.record_invocation(
                    inv.t_s,
                    inv.outcome == crate::aggregate::Outcome::Timeout,
                    &cascade_cfg,
                );
            }
        }
        if recorded
            && self.stage.len() > known
            && let Some(budget) = self.budgets.get(&key.function)
        {
            self.stage.set_budget(key, Some(*budget));
        }
    }

    /// What a checkpoint keeps: every function's usage ledger and list-price counter, and the
    /// provisioned environments known.
    pub fn checkpoint(&self) -> CostCheckpointRef<'_> {
        let mut provisioned_instances: Vec<(&str, u64)> = self
            .provisioned
            .iter()
            .map(|(i, t)| (i.as_str(), *t))
            .collect();
        provisioned_instances.sort_unstable();
        let mut sizes: Vec<(&FunctionKey, &SizeTable)> = self
            .inputs
            .iter()
            .filter(|(_, i)| !i.sizes.sizes.is_empty())
            .map(|(k, i)| (k, &i.sizes))
            .collect();
        sizes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        CostCheckpointRef {
            functions: self.stage.saved(),
            provisioned_instances,
            sizes,
        }
    }

    /// Restores a checkpoint into this (fresh) feed; budgets are re-applied from the current
    /// configuration. Returns how many functions were restored.
    pub fn restore(&mut self, saved: CostCheckpoint) -> usize {
        let keys: Vec<FunctionKey> = saved.functions.iter().map(|s| s.key.clone()).collect();
        let n = self.stage.restore(saved.functions);
        for k in keys {
            if let Some(b) = self.budgets.get(&k.function) {
                self.stage.set_budget(&k, Some(*b));
            }
        }
        for (i, t) in saved.provisioned_instances {
            self.remember_provisioned(&i, t);
        }
        for (k, table) in saved.sizes {
            if let Some(inputs) = self.inputs_mut(&k) {
                inputs.sizes = table;
            }
        }
        n
    }

    /// Evaluates every function at `now` (the evaluation tick's time), without advice.
    pub fn evaluate(&mut self, now: u64) -> CostReport {
        self.evaluate_inner(now, None)
    }

    /// Evaluates every function at `now` and runs the advisors over `functions`, the
    /// aggregator's state (its percentile cache refreshed at `now` by the caller). A function
    /// the aggregator no longer holds gets no advice.
    pub fn evaluate_with_advice(
        &mut self,
        now: u64,
        functions: &HashMap<FunctionKey, FunctionState>,
    ) -> CostReport {
        self.evaluate_inner(now, Some(functions))
    }

    fn evaluate_inner(
        &mut self,
        now: u64,
        functions: Option<&HashMap<FunctionKey, FunctionState>>,
    ) -> CostReport {
        if functions.is_some() {
            for inputs in self.inputs.values_mut() {
                inputs.concurrency.advance(now);
            }
        }
        let rows = self.stage.evaluate(now);
        let functions = rows
            .into_iter()
            .map(|(key, cost)| {
                let advice = functions.and_then(|f| f.get(&key)).and_then(|state| {
                    let prices = self.stage.prices().region(&key.region).ok()?;
                    let inputs = self.inputs.get(&key)?;
                    Some(advice::advise_function(
                        inputs,
                        state,
                        cost.memory_mb,
                        prices,
                        cost.arch,
                        &self.advice_cfg,
                        now,
                    ))
                });
                FunctionCostRow { key, cost, advice }
            })
            .collect();
        CostReport {
            evaluated_at_unix: now,
            prices_as_of: self.stage.prices().as_of.clone(),
            free_tier: self.stage.config().free_tier,
            lookback_days: self.stage.config().lookback_days,
            retry_threshold: self.stage.config().retry.threshold,
            dropped: self.dropped(),
            trace_join: self.join.stats(),
            functions,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::aggregate::Outcome;

    const T0: u64 = 1_795_996_800;

    fn key(function: &str, region: &str) -> FunctionKey {
        FunctionKey {
            function: function.into(),
            version: "1".into(),
            region: region.into(),
            account: "123456789012".into(),
        }
    }

    fn inv(t_s: u64, billed: Option<f64>, memory: Option<f64>, id: &str) -> Event {
        Event::Invocation(Invocation {
            t_s,
            outcome: Outcome::Success,
            duration_ms: 99.2,
            billed_ms: billed,
            memory_mb: memory,
            max_memory_mb: None,
            timeout_ms: None,
            request_id: Some(id.into()),
            span_fingerprint: None,
        })
    }

    fn feed() -> CostFeed {
        CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig::default(),
            BTreeMap::from([("budgeted".to_owned(), 0.5)]),
        )
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// List price of one invocation, from the price table (not from the code under test).
    fn list(prices: &PriceTable, region: &str, arch: Arch, mb: u64, ms: u64, pc: bool) -> f64 {
        let r = prices.region(region).unwrap();
        let a = r.arch(arch);
        let per_gbs = if pc {
            a.provisioned_duration_gb_second.usd()
        } else {
            a.duration_tiers[0].gb_second.usd()
        };
        r.request_per_million.usd() / 1e6 + per_gbs * (mb as f64 / 1024.0) * (ms as f64 / 1000.0)
    }

    #[test]
    fn attributes_decide_the_price() {
        let prices = PriceTable::embedded().unwrap();
        let mut f = feed();
        let k = key("f", "eu-west-1");
        // arm64 from the resource, 1,024 MB, 100 ms billed.
        let arm = tags(&[(attr::AWS_LAMBDA_ARCHITECTURE, "arm64")]);
        f.observe(&k, "i-1", &arm, &inv(T0, Some(100.0), Some(1024.0), "a"));
        // An incomplete span: billed its duration rounded up (99.2 → 100 ms).
        f.observe(&k, "i-1", &arm, &inv(T0, None, Some(1024.0), "b"));
        let r = f.evaluate(T0 + 1);
        let row = &r.functions[0];
        assert_eq!(row.cost.arch, Arch::Arm64);
        assert_eq!(row.cost.memory_mb, 1024);
        let want = 2.0 * list(&prices, "eu-west-1", Arch::Arm64, 1024, 100, false);
        assert!((row.cost.cost_usd_total - want).abs() < 1e-12, "{row:?}");
        // host.arch (OTel's amd64) is read when the Lambda attribute is absent.
        assert_eq!(arch_of(&tags(&[(attr::HOST_ARCH, "amd64")])), Arch::X86_64);
        assert_eq!(arch_of(&tags(&[(attr::HOST_ARCH, "arm64")])), Arch::Arm64);
        assert_eq!(arch_of(&tags(&[])), Arch::X86_64);
        assert_eq!(
            ephemeral_storage_of(&tags(&[(attr::AWS_LAMBDA_EPHEMERAL_STORAGE_MB, "2048")])),
            2048
        );
        assert_eq!(
            ephemeral_storage_of(&tags(&[(attr::AWS_LAMBDA_EPHEMERAL_STORAGE_MB, "lots")])),
            512
        );
    }

    #[test]
    fn provisioned_environments_are_priced_at_the_provisioned_rate() {
        let prices = PriceTable::embedded().unwrap();
        let mut f = feed();
        let k = key("pc", "us-east-1");
        let none = tags(&[]);
        f.observe(
            &k,
            "env-pc",
            &none,
            &Event::Init {
                t_s: T0,
                kind: InitKind::Provisioned,
                duration_ms: 300.0,
            },
        );
        f.observe(&k, "env-pc", &none, &inv(T0, Some(200.0), Some(512.0), "a"));
        f.observe(&k, "env-od", &none, &inv(T0, Some(200.0), Some(512.0), "b"));
        let r = f.evaluate(T0 + 1);
        let want = list(&prices, "us-east-1", Arch::X86_64, 512, 200, true)
            + list(&prices, "us-east-1", Arch::X86_64, 512, 200, false);
        let got = r.functions[0].cost.cost_usd_total;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!(
            list(&prices, "us-east-1", Arch::X86_64, 512, 200, true)
                < list(&prices, "us-east-1", Arch::X86_64, 512, 200, false)
        );
    }

    #[test]
    fn provisioned_instances_are_bounded() {
        let mut f = feed();
        for i in 0..MAX_PC_INSTANCES as u64 + 10 {
            f.remember_provisioned(&format!("env-{i}"), T0 + i);
        }
        assert_eq!(f.provisioned.len(), MAX_PC_INSTANCES);
        // The oldest were forgotten, the newest kept.
        assert!(!f.provisioned.contains_key("env-0"));
        assert!(
            f.provisioned
                .contains_key(&format!("env-{}", MAX_PC_INSTANCES + 9))
        );
    }

    /// A restart through a real checkpoint document (JSON, gzip, decode, restore) keeps the
    /// cost counter, today's cost and the 30-day projection; the control without the checkpoint
    /// starts from zero.
    #[test]
    fn cost_survives_a_restart_through_the_checkpoint() {
        use crate::aggregate::{Aggregates, Batch, Group, Layout, Target};
        use crate::alerting::state::AlertStates;
        let fresh = || {
            let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 100);
            a.cost = Some(feed());
            a
        };
        let k = key("orders", "eu-west-1");
        let mut before = fresh();
        let mut events = vec![Event::Init {
            t_s: T0,
            kind: InitKind::Provisioned,
            duration_ms: 300.0,
        }];
        // Two days of traffic, one invocation every 10 minutes.
        for i in 0..288u64 {
            events.push(inv(
                T0 + i * 600,
                Some(250.0),
                Some(1024.0),
                &format!("r{i}"),
            ));
        }
        before.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Function {
                    key: k.clone(),
                    tags: vec![(attr::AWS_LAMBDA_ARCHITECTURE.into(), "arm64".into())],
                    instance: "env-1".into(),
                },
                events,
            }],
        });
        let now = T0 + 2 * 86_400 - 60;
        let want = before.cost.as_mut().unwrap().evaluate(now);
        assert!(want.functions[0].cost.cost_usd_total > 0.0);
        assert!(want.functions[0].cost.projected_30d_usd > 0.0);

        let json = crate::checkpoint::to_json(&before, "t", now, &[], None).unwrap();
        let mut doc = crate::checkpoint::decode(&crate::checkpoint::gzip(&json).unwrap()).unwrap();
        let mut after = fresh();
        // As `serve` restores: the cost part by the feed, the rest by `checkpoint::restore`.
        let saved = doc.cost.take().unwrap();
        assert_eq!(after.cost.as_mut().unwrap().restore(saved), 1);
        let r = crate::checkpoint::restore(doc, &mut after, &mut AlertStates::default());
        assert_eq!(r.functions, 1);
        let feed_after = after.cost.as_mut().unwrap();
        assert!(feed_after.provisioned.contains_key("env-1"));
        // The memory advisor's per-size table (with its duration histogram) is restored too.
        let sizes_before = &before.cost.as_ref().unwrap().inputs[&k].sizes;
        assert_eq!(sizes_before.sizes[0].invocations, 288);
        assert_eq!(sizes_before.sizes[0].durations.count(), 288);
        assert_eq!(&feed_after.inputs[&k].sizes, sizes_before);
        let got = feed_after.evaluate(now);
        let (w, g) = (&want.functions[0].cost, &got.functions[0].cost);
        assert_eq!(got.functions[0].key, k);
        assert_eq!(g.cost_usd_total, w.cost_usd_total);
        assert_eq!(g.today_usd, w.today_usd);
        assert_eq!(g.projected_30d_usd, w.projected_30d_usd);
        assert_eq!((g.arch, g.memory_mb), (Arch::Arm64, 1024));

        // The control: the same evaluation without the checkpoint knows nothing.
        let mut control = fresh();
        assert!(
            control
                .cost
                .as_mut()
                .unwrap()
                .evaluate(now)
                .functions
                .is_empty()
        );
        // A checkpoint written without the cost stage still restores (the field is optional).
        let mut no_cost = fresh();
        no_cost.cost = None;
        let json = crate::checkpoint::to_json(&no_cost, "t", now, &[], None).unwrap();
        assert!(!String::from_utf8_lossy(&json).contains("\"cost\""));
        let doc = crate::checkpoint::decode(&crate::checkpoint::gzip(&json).unwrap()).unwrap();
        assert!(doc.cost.is_none());
        // A cost part written before the size tables were kept still loads (serde default).
        let old: CostCheckpoint =
            serde_json::from_str(r#"{"functions": [], "provisioned_instances": []}"#).unwrap();
        assert!(old.sizes.is_empty());
        let old_size: SizeTable = serde_json::from_str(
            r#"{"sizes": [{"memory_mb": 512, "invocations": 3, "billed_ms_total": 30,
                "memory_reports": 3, "max_memory_used_mb": 60.0}], "sizes_dropped": 0}"#,
        )
        .unwrap();
        assert_eq!(old_size.sizes[0].durations.count(), 0);
    }

    /// What the cost part adds to a checkpoint: 1,000 functions with a day of traffic each.
    #[test]
    fn checkpoint_size_with_the_cost_ledgers() {
        use crate::aggregate::{Aggregates, Batch, Group, Layout, Target};
        let build = |with_cost: bool| {
            let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 2000);
            if with_cost {
                a.cost = Some(feed());
            }
            for i in 0..1000u64 {
                let events = (0..144u64)
                    .map(|k| {
                        inv(
                            T0 + k * 600 + i % 600,
                            Some(50.0 + k as f64),
                            Some(512.0),
                            &format!("{i}-{k}"),
                        )
                    })
                    .collect();
                a.apply(Batch {
                    received_s: T0,
                    groups: vec![Group {
                        target: Target::Function {
                            key: key(&format!("fn-{i:04}"), "eu-west-1"),
                            tags: Vec::new(),
                            instance: "i".into(),
                        },
                        events,
                    }],
                });
            }
            let json = crate::checkpoint::to_json(&a, "t", T0 + 86_400, &[], None).unwrap();
            let gz = crate::checkpoint::gzip(&json).unwrap();
            (json.len() / 1000, gz.len() / 1000)
        };
        let (json_without, gz_without) = build(false);
        let (json_with, gz_with) = build(true);
        eprintln!(
            "checkpoint per function: {json_without} B JSON / {gz_without} B gzip without cost, \
             {json_with} B / {gz_with} B with the cost ledgers"
        );
        // Documented in docs/cost.md: only used days are written, so a day of traffic adds
        // ~350 B of JSON for the ledger, ~350 B for the surprise baseline (24 hour slots) and
        // the retry ids still in their window (serialised inside the aggregator), ~250 B for the
        // memory advisor's size table (one size, its duration histogram), and a few dozen bytes
        // gzipped.
        assert!(
            json_with - json_without < 1200,
            "{json_with} vs {json_without}"
        );
        assert!(gz_with - gz_without < 100, "{gz_with} vs {gz_without}");
    }

    #[test]
    fn drops_are_counted_by_reason_and_budgets_apply() {
        let mut f = CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig {
                max_functions: 2,
                // Without the free tier one invocation projects above the tiny budget.
                free_tier: false,
                surprise: super::super::surprise::SurpriseConfig {
                    budget_warmup_secs: 0,
                    ..Default::default()
                },
                ..CostConfig::default()
            },
            BTreeMap::from([("budgeted".to_owned(), 0.000_001)]),
        );
        let none = tags(&[]);
        let e = |id| inv(T0, Some(10.0), Some(128.0), id);
        f.observe(&key("budgeted", "eu-west-1"), "i", &none, &e("1"));
        f.observe(&key("plain", "eu-west-1"), "i", &none, &e("2"));
        f.observe(&key("third", "eu-west-1"), "i", &none, &e("3"));
        f.observe(&key("plain", "mars-north-1"), "i", &none, &e("4"));
        f.observe(&key("plain", ""), "i", &none, &e("5"));
        f.observe(
            &key("plain", "eu-west-1"),
            "i",
            &none,
            &inv(T0, Some(10.0), None, "6"),
        );
        let r = f.evaluate(T0 + 60);
        assert_eq!(
            r.dropped,
            BTreeMap::from([
                ("duplicate_delivery", 0),
                ("no_memory_size", 1),
                ("too_many_functions", 1),
                ("unknown_region", 2)
            ])
        );
        assert_eq!(r.functions.len(), 2);
        let budgeted = &r.functions[0];
        assert_eq!(budgeted.key.function, "budgeted");
        assert_eq!(budgeted.cost.surprise.budget_usd, Some(0.000_001));
        assert!(budgeted.cost.surprise.budget_alert, "{budgeted:?}");
        assert_eq!(r.functions[1].cost.surprise.budget_usd, None);
        assert!(!r.functions[1].cost.surprise.budget_alert);
        // The serde form carries the key once (no duplicate `region`).
        let json = serde_json::to_value(&r).unwrap();
        let row = &json["functions"][0];
        assert_eq!(row["function"], "budgeted");
        assert_eq!(row["region"], "eu-west-1");
        assert_eq!(row["arch"], "x86_64");
        assert!(row["projected_30d_usd"].is_number());
        assert!(row["retry"]["retry_fraction"].is_number());
        assert_eq!(json["dropped"]["unknown_region"], 2);
    }
}
