//! Aggregation: per function (name, version, region, account), exact time-bucketed counts,
//! histograms and gauges, owned by one task.
//!
//! - **Consumes** [`Batch`]es from the bounded ingest queue (capacity `LAMBDAWATCH_QUEUE_CAPACITY`;
//!   when it is full the receivers answer 429 / RESOURCE_EXHAUSTED, never this task) and
//!   [`Command`]s (queries) from a small bounded command channel, preferred over batches.
//! - **Produces** answers to queries: SLO evaluations (`slo::evaluate` runs here, on the owned
//!   state, as a pure function of counts, spec and `now`), the per-function Prometheus text, and
//!   memory figures.
//! - **When full**: it never is on its own side; it drops events only for a function beyond
//!   `LAMBDAWATCH_MAX_FUNCTIONS` (`too_many_functions`) or older than 30 days (`too_old`), counted
//!   in [`AggregateStats`].
//! - **Shutdown**: when the `stop_ingest` token fires it closes the ingest queue, drains what is
//!   buffered (`recv` until `None`), reports [`Drained`], and keeps answering commands until the
//!   `finish` token fires or every command sender is gone.
//!
//! ## Memory bound per function
//! With `K` distinct cold-start thresholds, `F` timeout-budget fractions and `I` init types seen:
//! - counts (`series`): `(493 buckets × 4 B + 6 running totals × 8 B) × S + 240 B` per series,
//!   with `S = (5 + F) + I × (1 + K) + 5 if platform counts arrive` counters in all;
//! - Prometheus buckets: `(17 + K) × 8 B × (1 + I)`;
//! - HdrHistograms: ≤ 2 slots × (1 + I) × 7.2 KiB (2 significant figures, 1 ms unit, resized to
//!   the largest value seen: 2 KiB per slot below 1 s, 7.2 KiB at Lambda's 15-minute maximum);
//! - tags ≤ 64 × (2 × 256 B + 48 B); side maps (DLQ queues, drop reasons) ≤ 32 entries each;
//! - the inline state and its share of the function table (≈ 1 KiB).
//!
//! For the default spec (K = 1, F = 1) and one init type that is ≤ 47 KiB worst case (the counts
//! 16.6 KiB of it: 1-minute buckets over 6 h since checkpoint format 2, for a `6h` window exact
//! to the minute; 7.3 KiB before, with 10-minute buckets); measured with a counting allocator
//! over 10,000 functions with a day of traffic each (`cargo bench --bench collector`,
//! `docs/BENCHMARKS.md`), and the `heap_bytes` accounting checked against the bound by
//! `memory_per_function_is_bounded` (10,000 functions). The number of functions is capped by
//! `LAMBDAWATCH_MAX_FUNCTIONS` (default 20,000 → ≤ 1 GB worst case, ≈ 0.55 GB typical).

pub mod function;
pub mod hist;
pub mod series;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use function::{FunctionState, Invocation, Layout};

/// Identity of a function: the Prometheus labels `function`, `version`, `region`, `account`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FunctionKey {
    pub function: String,
    pub version: String,
    pub region: String,
    pub account: String,
}

/// Invocation outcome (`aws.lambda.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    Error,
    Timeout,
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Self::Success, Self::Error, Self::Timeout, Self::Failure];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        use lambdawatch_semconv::outcome as o;
        match self {
            Self::Success => o::SUCCESS,
            Self::Error => o::ERROR,
            Self::Timeout => o::TIMEOUT,
            Self::Failure => o::FAILURE,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.label() == s)
    }
}

/// `aws.lambda.init_type`, with a catch-all for values we do not know.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum InitKind {
    OnDemand,
    Provisioned,
    SnapStart,
    ManagedInstances,
    Other,
}

impl InitKind {
    pub const ALL: [InitKind; 5] = [
        Self::OnDemand,
        Self::Provisioned,
        Self::SnapStart,
        Self::ManagedInstances,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
        use lambdawatch_semconv::init_type as t;
        match self {
            Self::OnDemand => t::ON_DEMAND,
            Self::Provisioned => t::PROVISIONED,
            Self::SnapStart => t::SNAP_START,
            Self::ManagedInstances => t::MANAGED_INSTANCES,
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.label() == s)
            .unwrap_or(Self::Other)
    }
}

/// Platform counts (CloudWatch-shaped), one series slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlatformCounter {
    Throttles = 0,
    DeadLetterErrors = 1,
    AsyncEventsReceived = 2,
    AsyncEventsDropped = 3,
    DlqMessagesSent = 4,
    /// `DestinationDeliveryFailures`: async events Lambda could not send to their on-failure
    /// destination (no SLO reads it; exposed so a failing destination is visible).
    DestinationDeliveryFailures = 5,
}

impl PlatformCounter {
    pub const COUNT: usize = 6;

    /// From a Lambda metric name (the SQS one is mapped by queue, not by name).
    pub fn from_lambda_metric(name: &str) -> Option<Self> {
        use lambdawatch_semconv::cloudwatch as cw;
        match name {
            cw::THROTTLES => Some(Self::Throttles),
            cw::DEAD_LETTER_ERRORS => Some(Self::DeadLetterErrors),
            cw::ASYNC_EVENTS_RECEIVED => Some(Self::AsyncEventsReceived),
            cw::ASYNC_EVENTS_DROPPED => Some(Self::AsyncEventsDropped),
            cw::DESTINATION_DELIVERY_FAILURES => Some(Self::DestinationDeliveryFailures),
            _ => None,
        }
    }
}

/// Where a group of events belongs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// From a resource that names the function (our extension, or an SDK with `faas.name`).
    Function {
        key: FunctionKey,
        tags: Vec<(String, String)>,
        instance: String,
    },
    /// From a platform count that names only the function (and maybe a qualifier): attached to
    /// the most recently reporting version of that function in that region/account, else to a
    /// placeholder of version `""` that the function's first reporting version takes over.
    Platform {
        function: String,
        region: String,
        account: String,
        qualifier: Option<String>,
    },
    /// Events joined to their function by trace id, not by resource: client spans of function
    /// code ([`Event::Client`]). Only the cost advisors read them (`crate::cost::timeout`); no
    /// function is created for them.
    Traces,
}

/// One fact to aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Invocation(Invocation),
    Init {
        t_s: u64,
        kind: InitKind,
        duration_ms: f64,
    },
    Platform {
        t_s: u64,
        counter: PlatformCounter,
        value: u64,
        queue: Option<String>,
    },
    /// The extension's own `dropped{reason}` / `retries` counters.
    Extension {
        retries: bool,
        reason: String,
        value: f64,
        cumulative: bool,
    },
    /// The trace id of the invocation span just before it in the group (cost advisors only).
    InvocationTrace {
        t_s: u64,
        trace_id: u128,
        timed_out: bool,
    },
    /// A CLIENT span of function code, in a [`Target::Traces`] group (cost advisors only).
    Client {
        t_s: u64,
        trace_id: u128,
        downstream: String,
        latency_ms: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub target: Target,
    pub events: Vec<Event>,
}

/// What one accepted request contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub received_s: u64,
    pub groups: Vec<Group>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.events.is_empty())
    }
}

/// Drops inside aggregation, by reason.
#[derive(Debug, Default)]
pub struct AggregateStats {
    pub too_many_functions: AtomicU64,
    pub too_old: AtomicU64,
    pub functions: AtomicU64,
}

/// Label values whose counter series `/metrics` exposes at 0 for every known function from its
/// first report, beside the ones it always exposes (all four outcomes, both `within` values, the
/// platform counters). Prometheus's `increase()` cannot see the increment that creates a series,
/// so a counter born at 1 loses its first event in the generated rules while the built-in
/// evaluator counts it; a series that already exists at 0 loses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeroSeries {
    /// Init types of `lambdawatch_cold_starts_total` and `lambdawatch_init_duration_seconds`
    /// (the ones a cold-start SLO selects; always `on-demand`), sorted, distinct.
    pub init_types: Vec<InitKind>,
    /// Function name → its configured DLQ queues (`LAMBDAWATCH_DLQ_QUEUES`), for
    /// `lambdawatch_dlq_messages_sent_total{queue}`.
    pub dlq_queues: BTreeMap<String, BTreeSet<String>>,
}

impl Default for ZeroSeries {
    fn default() -> Self {
        Self {
            init_types: vec![InitKind::OnDemand],
            dlq_queues: BTreeMap::new(),
        }
    }
}

impl ZeroSeries {
    /// `init_types` plus `on-demand`; `queues` as configured: queue → function.
    pub fn new(
        init_types: impl IntoIterator<Item = InitKind>,
        queues: &BTreeMap<String, String>,
    ) -> Self {
        let mut kinds: Vec<InitKind> = init_types.into_iter().chain([InitKind::OnDemand]).collect();
        kinds.sort();
        kinds.dedup();
        let mut dlq_queues: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (queue, function) in queues {
            dlq_queues
                .entry(function.clone())
                .or_default()
                .insert(queue.clone());
        }
        Self {
            init_types: kinds,
            dlq_queues,
        }
    }
}

/// The owned state: every function's aggregates. Pure: no clock, no I/O.
#[derive(Debug)]
pub struct Aggregates {
    pub layout: Layout,
    pub functions: HashMap<FunctionKey, FunctionState>,
    /// Counter series `/metrics` exposes at 0 for every known function (see [`ZeroSeries`]).
    pub zero_series: ZeroSeries,
    max_functions: usize,
    /// `(function, region, account)` and `function` → the most recently reporting key.
    latest: HashMap<(String, String, String), FunctionKey>,
    latest_by_name: HashMap<String, FunctionKey>,
    /// Keys of version `""` created by platform counts that arrived before any span of their
    /// function: placeholders, renamed to the function's real key when it first reports (see
    /// [`Aggregates::adopt_placeholder`]), so a function never shows a second, version-less series.
    placeholders: HashSet<FunctionKey>,
    pub stats: Arc<AggregateStats>,
    /// The cost stage, fed every event of a known function (`crate::cost::feed`); `None` = off.
    pub cost: Option<crate::cost::CostFeed>,
}

impl Aggregates {
    pub fn new(layout: Layout, max_functions: usize) -> Self {
        Self {
            layout,
            functions: HashMap::new(),
            zero_series: ZeroSeries::default(),
            max_functions,
            latest: HashMap::new(),
            latest_by_name: HashMap::new(),
            placeholders: HashSet::new(),
            stats: Arc::new(AggregateStats::default()),
            cost: None,
        }
    }

    /// A function reports under `key` for the first time: if platform counts already created a
    /// placeholder for it (version `""`, same region/account, or none when the counts carried
    /// no origin), that state becomes `key`'s, counts and all. Returns whether one was adopted.
    fn adopt_placeholder(&mut self, key: &FunctionKey) -> bool {
        if self.placeholders.is_empty() || key.version.is_empty() {
            return false;
        }
        let candidates = [(key.region.as_str(), key.account.as_str()), ("", "")];
        for (region, account) in candidates {
            let placeholder = FunctionKey {
                function: key.function.clone(),
                version: String::new(),
                region: region.to_owned(),
                account: account.to_owned(),
            };
            if !self.placeholders.remove(&placeholder) {
                continue;
            }
            if let Some(state) = self.functions.remove(&placeholder) {
                self.functions.insert(key.clone(), state);
                return true;
            }
        }
        false
    }

    fn resolve(&self, target: &Target) -> FunctionKey {
        match target {
            Target::Function { key, .. } => key.clone(),
            // Not called for trace-joined groups (`apply` hands them to the cost feed first).
            Target::Traces => FunctionKey {
                function: String::new(),
                version: String::new(),
                region: String::new(),
                account: String::new(),
            },
            Target::Platform {
                function,
                region,
                account,
                qualifier,
            } => {
                if let Some(q) = qualifier {
                    return FunctionKey {
                        function: function.clone(),
                        version: q.clone(),
                        region: region.clone(),
                        account: account.clone(),
                    };
                }
                self.latest
                    .get(&(function.clone(), region.clone(), account.clone()))
                    .or_else(|| {
                        (region.is_empty() || account.is_empty())
                            .then(|| self.latest_by_name.get(function))
                            .flatten()
                    })
                    .cloned()
                    .unwrap_or_else(|| FunctionKey {
                        function: function.clone(),
                        version: String::new(),
                        region: region.clone(),
                        account: account.clone(),
                    })
            }
        }
    }

    /// Applies one batch.
    pub fn apply(&mut self, batch: Batch) {
        for group in batch.groups {
            if group.events.is_empty() {
                continue;
            }
            if group.target == Target::Traces {
                if let Some(cost) = self.cost.as_mut() {
                    for ev in &group.events {
                        cost.observe_trace(ev);
                    }
                }
                continue;
            }
            let key = self.resolve(&group.target);
            let reporting = matches!(group.target, Target::Function { .. });
            if reporting {
                // A version-less series is real when a span reports it (an SDK without
                // `faas.version`): no longer a placeholder.
                self.placeholders.remove(&key);
            }
            let known =
                self.functions.contains_key(&key) || (reporting && self.adopt_placeholder(&key));
            if !known {
                if self.functions.len() >= self.max_functions {
                    // An invocation span's trace id rides along as its own event: the span is
                    // one dropped event, not two.
                    let dropped = group
                        .events
                        .iter()
                        .filter(|e| !matches!(e, Event::InvocationTrace { .. }))
                        .count();
                    self.stats
                        .too_many_functions
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                    continue;
                }
                self.functions.insert(
                    key.clone(),
                    FunctionState::new(&self.layout, batch.received_s),
                );
                if !reporting && key.version.is_empty() {
                    self.placeholders.insert(key.clone());
                }
                self.stats
                    .functions
                    .store(self.functions.len() as u64, Ordering::Relaxed);
            }
            let Some(state) = self.functions.get_mut(&key) else {
                continue;
            };
            let instance = match &group.target {
                Target::Function { tags, instance, .. } => {
                    state.set_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    instance.as_str()
                }
                Target::Platform { .. } | Target::Traces => "",
            };
            let mut too_old = 0u64;
            for ev in &group.events {
                if let Some(cost) = self.cost.as_mut() {
                    cost.observe(&key, instance, &state.tags, ev);
                }
                let ok = match ev {
                    Event::Invocation(inv) => state.record_invocation(&self.layout, inv),
                    Event::Init {
                        t_s,
                        kind,
                        duration_ms,
                    } => state.record_init(&self.layout, *t_s, *kind, *duration_ms),
                    Event::Platform {
                        t_s,
                        counter,
                        value,
                        queue,
                    } => state.record_platform(*t_s, *counter, *value, queue.as_deref()),
                    Event::Extension {
                        retries,
                        reason,
                        value,
                        cumulative,
                    } => {
                        state.record_extension(*retries, reason, instance, *value, *cumulative);
                        true
                    }
                    Event::InvocationTrace { .. } | Event::Client { .. } => true,
                };
                too_old += u64::from(!ok);
            }
            if too_old > 0 {
                self.stats.too_old.fetch_add(too_old, Ordering::Relaxed);
            }
            if reporting {
                self.latest.insert(
                    (
                        key.function.clone(),
                        key.region.clone(),
                        key.account.clone(),
                    ),
                    key.clone(),
                );
                self.latest_by_name.insert(key.function.clone(), key);
            }
        }
    }

    /// The "latest reporting version" indexes, for checkpoints: the keys they point to (their
    /// own keys are derived from those), `(by function/region/account, by function name)`.
    pub fn latest_keys(&self) -> (Vec<FunctionKey>, Vec<FunctionKey>) {
        (
            self.latest.values().cloned().collect(),
            self.latest_by_name.values().cloned().collect(),
        )
    }

    /// Restores checkpointed functions and indexes (the caller checked the layout). Functions
    /// beyond `max_functions` are dropped; returns how many were restored.
    pub fn restore(
        &mut self,
        functions: impl IntoIterator<Item = (FunctionKey, FunctionState)>,
        latest: Vec<FunctionKey>,
        latest_by_name: Vec<FunctionKey>,
    ) -> usize {
        let mut n = 0;
        for (k, s) in functions {
            if self.functions.len() >= self.max_functions {
                break;
            }
            self.functions.insert(k, s);
            n += 1;
        }
        for k in latest {
            self.latest
                .insert((k.function.clone(), k.region.clone(), k.account.clone()), k);
        }
        for k in latest_by_name {
            self.latest_by_name.insert(k.function.clone(), k);
        }
        // Placeholders are not checkpointed: a version-less key no span ever reported (none of
        // the "latest" indexes points to it) is one.
        let reported: HashSet<&FunctionKey> = self
            .latest
            .values()
            .chain(self.latest_by_name.values())
            .collect();
        self.placeholders = self
            .functions
            .keys()
            .filter(|k| k.version.is_empty() && !reported.contains(k))
            .cloned()
            .collect();
        self.stats
            .functions
            .store(self.functions.len() as u64, Ordering::Relaxed);
        n
    }

    /// Merges another task's checkpointed functions (an adopted orphan, `crate::checkpoint`;
    /// the caller checked the layout) into this live state: a function known here merges
    /// ([`FunctionState::merge`]: counts add), an unknown one is inserted (up to
    /// `max_functions`; the rest are dropped and counted in the second number). The "latest"
    /// indexes keep this task's entries and gain the other task's for functions missing here.
    /// Returns `(merged or inserted, dropped)`.
    pub fn merge(
        &mut self,
        functions: impl IntoIterator<Item = (FunctionKey, FunctionState)>,
        latest: Vec<FunctionKey>,
        latest_by_name: Vec<FunctionKey>,
    ) -> (usize, usize) {
        let (mut n, mut dropped) = (0, 0);
        for (k, s) in functions {
            if let Some(mine) = self.functions.get_mut(&k) {
                mine.merge(s);
                self.placeholders.remove(&k);
                n += 1;
            } else if self.functions.len() < self.max_functions {
                self.functions.insert(k, s);
                n += 1;
            } else {
                dropped += 1;
            }
        }
        for k in latest {
            self.latest
                .entry((k.function.clone(), k.region.clone(), k.account.clone()))
                .or_insert(k);
        }
        for k in latest_by_name {
            self.latest_by_name.entry(k.function.clone()).or_insert(k);
        }
        self.stats
            .functions
            .store(self.functions.len() as u64, Ordering::Relaxed);
        (n, dropped)
    }

    /// Recomputes the cached percentiles of every function whose samples changed (or whose
    /// percentile period rolled over) since the last refresh. Returns how many were recomputed.
    pub fn refresh_percentiles(&mut self, now_s: u64) -> usize {
        self.functions
            .values_mut()
            .map(|s| usize::from(s.refresh_percentiles(now_s)))
            .sum()
    }

    /// Heap bytes of the whole state: the function table (by capacity), every function's own
    /// heap, and the two "latest version" indexes.
    pub fn heap_bytes(&self) -> usize {
        let strings = |k: &FunctionKey| {
            k.function.capacity()
                + k.version.capacity()
                + k.region.capacity()
                + k.account.capacity()
        };
        let table = self.functions.capacity()
            * (std::mem::size_of::<FunctionKey>() + std::mem::size_of::<FunctionState>() + 1);
        let per_fn: usize = self
            .functions
            .iter()
            .map(|(k, s)| s.heap_bytes() + strings(k))
            .sum();
        let idx_entry = std::mem::size_of::<(String, String, String)>()
            + 2 * std::mem::size_of::<FunctionKey>()
            + std::mem::size_of::<String>()
            + 2;
        let indexes = self.latest.capacity().max(self.latest_by_name.capacity()) * idx_entry
            + self
                .latest
                .iter()
                .map(|((f, r, a), k)| f.capacity() + r.capacity() + a.capacity() + strings(k))
                .sum::<usize>()
            + self
                .latest_by_name
                .iter()
                .map(|(n, k)| n.capacity() + strings(k))
                .sum::<usize>();
        table + per_fn + indexes
    }
}

/// Queries answered by the owner on its state.
pub enum Command {
    /// Runs `f` on the state and replies with its result (SLO evaluation, Prometheus text, …);
    /// `f` may refresh caches (percentiles) but never changes counts.
    With(Box<dyn FnOnce(&mut Aggregates) + Send>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command::With")
    }
}

/// Signals that the ingest queue was closed and fully drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub batches: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("aggregator is gone")]
    Gone,
}

/// Cheap, cloneable handle for queries.
#[derive(Debug, Clone)]
pub struct Handle {
    cmd: mpsc::Sender<Command>,
    pub stats: Arc<AggregateStats>,
}

impl Handle {
    /// Runs `f` on the aggregates inside the owner task and returns its result.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Aggregates) -> R + Send + 'static,
    ) -> Result<R, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::With(Box::new(move |a| {
                let _ = tx.send(f(a));
            })))
            .await
            .map_err(|_| QueryError::Gone)?;
        rx.await.map_err(|_| QueryError::Gone)
    }
}

/// Capacity of the command channel (queries are few: evaluation, scrapes, API calls).
pub const COMMAND_CAPACITY: usize = 64;

/// Spawns nothing: returns the handle, the ingest sender, and the owner future to run.
pub fn owner(
    aggregates: Aggregates,
    queue_capacity: usize,
    stop_ingest: CancellationToken,
    finish: CancellationToken,
) -> (
    Handle,
    mpsc::Sender<Batch>,
    impl Future<Output = ()> + Send,
    oneshot::Receiver<Drained>,
) {
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ingest_tx, ingest_rx) = mpsc::channel(queue_capacity.max(1));
    let (drained_tx, drained_rx) = oneshot::channel();
    let handle = Handle {
        cmd: cmd_tx,
        stats: aggregates.stats.clone(),
    };
    let fut = run(
        aggregates,
        cmd_rx,
        ingest_rx,
        stop_ingest,
        finish,
        drained_tx,
    );
    (handle, ingest_tx, fut, drained_rx)
}

async fn run(
    mut agg: Aggregates,
    mut cmd_rx: mpsc::Receiver<Command>,
    mut ingest_rx: mpsc::Receiver<Batch>,
    stop_ingest: CancellationToken,
    finish: CancellationToken,
    drained: oneshot::Sender<Drained>,
) {
    let mut batches = 0u64;
    loop {
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => match cmd {
                Some(Command::With(f)) => f(&mut agg),
                None => return,
            },
            () = stop_ingest.cancelled() => break,
            b = ingest_rx.recv() => match b {
                Some(b) => { batches += 1; agg.apply(b); }
                None => break,
            },
        }
    }
    // Stop accepting, then drain what is already queued.
    ingest_rx.close();
    while let Some(b) = ingest_rx.recv().await {
        batches += 1;
        agg.apply(b);
    }
    let _ = drained.send(Drained { batches });
    // Keep answering queries (the final evaluation, late scrapes) until told to finish.
    loop {
        tokio::select! {
            biased;
            () = finish.cancelled() => return,
            cmd = cmd_rx.recv() => match cmd {
                Some(Command::With(f)) => f(&mut agg),
                None => return,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every Lambda metric the poller asks CloudWatch for lands in its own counter: none is
    /// polled (and paid for) then thrown away.
    #[test]
    fn every_polled_lambda_metric_has_a_distinct_counter() {
        let counters: Vec<PlatformCounter> = lambdawatch_aws::cloudwatch::LAMBDA_METRICS
            .iter()
            .map(|m| {
                PlatformCounter::from_lambda_metric(m)
                    .unwrap_or_else(|| panic!("polled metric {m} has no counter"))
            })
            .collect();
        let distinct: std::collections::BTreeSet<usize> =
            counters.iter().map(|c| *c as usize).collect();
        assert_eq!(distinct.len(), counters.len(), "{counters:?}");
        assert!(distinct.iter().all(|i| *i < PlatformCounter::COUNT));
        assert_eq!(PlatformCounter::from_lambda_metric("Invocations"), None);
    }

    pub(crate) fn key(name: &str) -> FunctionKey {
        FunctionKey {
            function: name.into(),
            version: "$LATEST".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    pub(crate) fn inv(t_s: u64, outcome: Outcome, ms: f64) -> Event {
        Event::Invocation(Invocation {
            t_s,
            outcome,
            duration_ms: ms,
            billed_ms: Some(ms.ceil()),
            memory_mb: Some(512.0),
            max_memory_mb: Some(100.0),
            timeout_ms: Some(1000.0),
            request_id: None,
            span_fingerprint: None,
        })
    }

    fn group(name: &str, events: Vec<Event>) -> Group {
        Group {
            target: Target::Function {
                key: key(name),
                tags: vec![("team".into(), "payments".into())],
                instance: "i-1".into(),
            },
            events,
        }
    }

    #[test]
    fn counts_thresholds_and_platform_attachment() {
        let layout = Layout::new(&[500.0, 1000.0], &[0.8]);
        let mut a = Aggregates::new(layout, 10);
        let t = 1_700_000_000;
        a.apply(Batch {
            received_s: t,
            groups: vec![group(
                "checkout",
                vec![
                    inv(t, Outcome::Success, 100.0),
                    inv(t, Outcome::Error, 900.0),
                    Event::Init {
                        t_s: t,
                        kind: InitKind::OnDemand,
                        duration_ms: 700.0,
                    },
                ],
            )],
        });
        a.apply(Batch {
            received_s: t,
            groups: vec![Group {
                target: Target::Platform {
                    function: "checkout".into(),
                    region: "eu-west-1".into(),
                    account: "123456789012".into(),
                    qualifier: None,
                },
                events: vec![Event::Platform {
                    t_s: t,
                    counter: PlatformCounter::Throttles,
                    value: 3,
                    queue: None,
                }],
            }],
        });
        assert_eq!(
            a.functions.len(),
            1,
            "platform counts attach to the reporting version"
        );
        let f = &a.functions[&key("checkout")];
        let w = series::Window::resolve(3600, t).unwrap();
        let c = f.invocation_counts(w, t);
        assert_eq!(&c[..4], &[1, 1, 0, 0]);
        assert_eq!(c[function::INV_TB_TOTAL], 2);
        assert_eq!(c[function::INV_TB_GOOD], 1, "900 ms > 0.8 × 1000 ms");
        let cs = f.cold_starts(InitKind::OnDemand).unwrap();
        assert_eq!(cs.series.sum(w, t, 0), 1);
        assert_eq!(cs.series.sum(w, t, 1), 0, "700 ms > 500 ms");
        assert_eq!(cs.series.sum(w, t, 2), 1, "700 ms ≤ 1000 ms");
        assert_eq!(f.platform.as_ref().unwrap().sum(w, t, 0), 3);
        assert_eq!(f.tags.get("team").map(String::as_str), Some("payments"));
        assert!((f.billed_gb_seconds - (0.5 * 0.1 + 0.5 * 0.9)).abs() < 1e-9);
    }

    fn throttles(region: &str, account: &str, t: u64, value: u64) -> Group {
        Group {
            target: Target::Platform {
                function: "checkout".into(),
                region: region.into(),
                account: account.into(),
                qualifier: None,
            },
            events: vec![Event::Platform {
                t_s: t,
                counter: PlatformCounter::Throttles,
                value,
                queue: None,
            }],
        }
    }

    #[test]
    fn platform_counts_before_the_first_span_join_the_real_version() {
        let t = 1_700_000_000;
        let w = series::Window::resolve(3600, t).unwrap();
        // With the origin of a Metric Stream, then without one (the poller's name-only counts).
        for (region, account) in [("eu-west-1", "123456789012"), ("", "")] {
            let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
            a.apply(Batch {
                received_s: t,
                groups: vec![throttles(region, account, t, 3)],
            });
            assert_eq!(a.functions.len(), 1);
            assert!(a.functions.keys().all(|k| k.version.is_empty()));
            // The first span of the function, then more platform counts.
            a.apply(Batch {
                received_s: t,
                groups: vec![
                    group("checkout", vec![inv(t, Outcome::Success, 100.0)]),
                    throttles(region, account, t, 2),
                ],
            });
            let keys: Vec<_> = a.functions.keys().cloned().collect();
            assert_eq!(
                keys,
                vec![key("checkout")],
                "origin ({region:?}, {account:?})"
            );
            let f = &a.functions[&key("checkout")];
            assert_eq!(f.platform.as_ref().unwrap().sum(w, t, 0), 5);
            assert_eq!(&f.invocation_counts(w, t)[..1], &[1]);
            // A second real version gets its own series; the first keeps the counts.
            let mut v2 = key("checkout");
            v2.version = "2".into();
            a.apply(Batch {
                received_s: t,
                groups: vec![Group {
                    target: Target::Function {
                        key: v2.clone(),
                        tags: vec![],
                        instance: "i-2".into(),
                    },
                    events: vec![inv(t, Outcome::Success, 50.0)],
                }],
            });
            assert_eq!(a.functions.len(), 2);
            assert!(a.functions[&v2].platform.is_none());
        }
    }

    #[test]
    fn a_version_less_function_that_reports_is_not_a_placeholder() {
        let t = 1_700_000_000;
        let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
        let mut bare = key("checkout");
        bare.version = String::new();
        let sdk = |events| Group {
            target: Target::Function {
                key: bare.clone(),
                tags: vec![],
                instance: String::new(),
            },
            events,
        };
        a.apply(Batch {
            received_s: t,
            groups: vec![throttles("eu-west-1", "123456789012", t, 1)],
        });
        // An SDK without faas.version reports the same key: it is that function's real series.
        a.apply(Batch {
            received_s: t,
            groups: vec![sdk(vec![inv(t, Outcome::Success, 10.0)])],
        });
        a.apply(Batch {
            received_s: t,
            groups: vec![group("checkout", vec![inv(t, Outcome::Success, 10.0)])],
        });
        assert_eq!(a.functions.len(), 2, "{:?}", a.functions.keys());
        assert!(a.functions.contains_key(&bare));
    }

    #[test]
    fn function_cap_drops_and_counts() {
        let mut a = Aggregates::new(Layout::new(&[500.0], &[0.8]), 2);
        let t = 1_700_000_000;
        for name in ["a", "b", "c"] {
            // An invocation span with a trace id, as the decoder emits it: two events.
            let trace = Event::InvocationTrace {
                t_s: t,
                trace_id: 7,
                timed_out: false,
            };
            a.apply(Batch {
                received_s: t,
                groups: vec![group(name, vec![inv(t, Outcome::Success, 1.0), trace])],
            });
        }
        assert_eq!(a.functions.len(), 2);
        // One span of the third function dropped, counted once.
        assert_eq!(a.stats.too_many_functions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn cumulative_extension_counters_become_deltas() {
        let mut s = FunctionState::new(&Layout::default(), 0);
        s.record_extension(false, "buffer_full", "i-1", 5.0, true);
        s.record_extension(false, "buffer_full", "i-1", 8.0, true);
        s.record_extension(false, "buffer_full", "i-2", 2.0, true);
        s.record_extension(false, "buffer_full", "i-1", 1.0, true); // reset
        s.record_extension(true, "", "i-1", 4.0, false);
        assert_eq!(s.extension_dropped["buffer_full"], 8.0 + 2.0 + 1.0);
        assert_eq!(s.extension_retries, 4.0);
    }

    /// 10,000 functions with a day of traffic each stay within the stated bound.
    #[test]
    fn memory_per_function_is_bounded() {
        let layout = Layout::new(&[500.0], &[0.8]);
        let mut a = Aggregates::new(layout, 20_000);
        let t0 = 1_700_000_000 - 86_400;
        for i in 0..10_000u64 {
            let name = format!("fn-{i:05}");
            let mut events = Vec::new();
            // One invocation every 10 minutes over 24 h touches every ring.
            for k in 0..144u64 {
                let t = t0 + k * 600 + (i % 600);
                events.push(inv(t, Outcome::Success, 50.0 + (k % 900) as f64));
            }
            events.push(Event::Init {
                t_s: t0,
                kind: InitKind::OnDemand,
                duration_ms: 300.0,
            });
            a.apply(Batch {
                received_s: t0,
                groups: vec![group(&name, events)],
            });
        }
        assert_eq!(a.functions.len(), 10_000);
        let per_fn = a.heap_bytes() / 10_000;
        // Stated bound for K = 1, F = 1, I = 1: counts (493×4 + 6×8)×(6+2) + 2×240 = 16.6 KiB,
        // Prometheus buckets < 1 KiB, HdrHistograms ≤ 4 × 7.2 KiB worst case, fixed parts
        // < 1.5 KiB.
        let counts = (series::BUCKETS * 4 + series::TRACKED_WINDOWS * 8) * (6 + 2) + 2 * 240;
        let bound = counts + 2 * 18 * 8 + 4 * 7_400 + 1_500;
        assert!(per_fn <= bound, "{per_fn} B per function > bound {bound} B");
        // And the accounting sees at least the dense counters every ring holds.
        assert!(
            per_fn >= series::BUCKETS * 4 * 8,
            "{per_fn} B is less than the counters alone"
        );
        eprintln!("memory per function: {per_fn} B (bound {bound} B)");
    }
}
