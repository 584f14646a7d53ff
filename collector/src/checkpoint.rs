//! Durable state: the collector's windows, alert states and CloudWatch poller cursor, written to
//! DynamoDB or S3 (`lambdawatch_aws::checkpoint::Store`, conditional writes) and restored at start,
//! so a restarted task loses at most one checkpoint interval and pages nobody twice.
//!
//! ```text
//! evaluator (every eval interval) ──► alert states (watch) ─┐
//! CloudWatch poller (every poll)  ──► ledger (watch) ───────┼─► Writer (every checkpoint interval)
//! aggregate owner ◄── one query: serialise the functions ───┘     └─► gzip ─► Store::save(key = task id,
//!                                                                          expected = last version)
//! start: Store::load(task id) (none: adopt an orphan) ─► decode ─► restore Aggregates +
//!        AlertStates + ledger ─► listeners bind
//! ```
//!
//! - **Consumes** the latest alert states and poller ledger (`watch` channels: the writer only
//!   ever reads the newest value, nothing queues) and one aggregator query per checkpoint.
//! - **Produces** one document per task under the key `task/<LAMBDAWATCH_TASK_ID>` (DynamoDB
//!   `pk`; S3 `<PREFIX>task/<id>`): every interval, and at once when the evaluator asks
//!   ([`Writer::run`]'s request channel, capacity 1) after an alert transition, before the
//!   notifications are delivered — a kill right after a page must not page again.
//! - **When slow or failing**: the evaluator never waits for it (it publishes into a `watch`);
//!   a failed write is counted (`lambdawatch_checkpoint_writes_total{result="failure"}`), logged
//!   once per failing streak, and the next interval writes the newer state. A lost conditional
//!   write (`Conflict`: someone wrote our key since our last version, i.e. a stale task with the
//!   same id) is counted, reloaded, logged, and retried once against the new version: the live
//!   task takes the key over.
//!
//! ## The document
//! Versioned JSON ([`FORMAT`], [`VERSION`]), gzip-compressed. JSON because it is self-describing
//! (the `format`/`version` header is read before anything else, so an incompatible checkpoint is
//! recognised and ignored with one log line rather than misread), readable with `gunzip | jq`
//! when an incident needs it, and needs no new dependency. Counter rings are mostly zeros, so they
//! are written as zero runs ([`zero_runs`]) and the whole document is gzipped: a function with a
//! day of uniform test traffic is ≈ 1.7 KB of JSON and ≈ 21 B gzipped
//! (`document_size_per_function`; real traffic compresses less). DynamoDB's 400 KB item limit
//! therefore holds thousands of functions; beyond it the write fails, is counted and logged — use
//! S3 for large fleets.
//!
//! Cost: the JSON is written inside the aggregator owner (one pass, no copy of the state), so
//! ingest waits for it once per checkpoint interval: 177 ms per 1,000 such functions in a debug
//! build (release is several times faster); gzip runs on a blocking thread.
//!
//! Saved: every function's counter rings (`Series`), Prometheus buckets, totals, timeouts,
//! memory, tags, extension self-metric counters, the "latest version" indexes, the [`Layout`]
//! they were counted against; every alert state entry (phase, since, last sent, the alert); the
//! CloudWatch poller's ledger. Not saved: the HdrHistograms behind P50/P90/P99 — their display
//! history restarts empty after a restart (the SLO counts, which alerts use, do not).
//!
//! The ledger and the counts are one: the poller applies each poll's counts and publishes its new
//! ledger in one step inside the aggregator owner (`crate::aws::run_poller`), and the writer
//! reads both in one step there too, so every document — one conditional write — holds exactly
//! the counts its ledger says were emitted. A kill at any point therefore restores counts and
//! cursor that agree: the polls after the last checkpoint are lost from the counts *and* the
//! cursor, so the next poll counts them again, once. With a lease, a new holder continues from
//! the previous holder's last checkpoint's ledger, not from the lease record's (see
//! `crate::aws::run_lease`).
//!
//! A checkpoint of another version, or one that does not decode, is ignored with one log line;
//! one counted against another layout (the SLO spec's thresholds changed) has its counts ignored
//! (logged) and its alert states restored. Never a crash.
//!
//! Restarts on ECS: the key is the task id, and a replacement Fargate task has a new one. A task
//! that finds no checkpoint of its own therefore **adopts an orphan**: the newest checkpoint of
//! another task not written for [`stale_after`] (2 × interval + 5 s), claimed by a conditional
//! write of a tombstone (`adopted_by`) over it, so two new tasks never adopt the same one. A
//! stable `LAMBDAWATCH_TASK_ID` per collector slot restores without waiting for staleness. Not
//! handled: a replacement that starts sooner than [`stale_after`] after the kill (65 s at the
//! default 30 s interval) sees the orphan as live and starts empty; during a rolling deployment the new tasks start while the old ones still write, so
//! they start empty and the old tasks' final checkpoints stay orphaned until a later task
//! starts — unless `LAMBDAWATCH_CHECKPOINT_MERGE_ORPHANS` is on: then the [`Writer`] searches
//! every [`stale_after`] ([`Writer::adopt_once`]), claims each orphan with the same tombstone
//! (keeping the orphan's poller ledger in it for a later lease takeover) and merges it into the
//! running task: counts by [`merge_counts`] (pure: bucket by bucket at their time), alert states
//! by [`merge_alerts`] in the evaluator. The orphan's cost ledgers are not merged. Tombstones
//! are never deleted (one small item per replaced task; a DynamoDB TTL or S3 lifecycle rule can
//! expire them).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lambdawatch_aws::checkpoint::{CheckpointError, Store};
use lambdawatch_aws::cloudwatch::Ledger;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    aggregate::{self, Aggregates, FunctionKey, FunctionState, Layout},
    alerting::{
        alert::{Alert, AlertStatus, Evidence, Fingerprint},
        state::{AlertStates, Phase},
    },
    aws::AwsStats,
    config::{CheckpointLocation, Config},
};

/// `format` of every checkpoint document.
pub const FORMAT: &str = "lambdawatch-checkpoint";
/// Bumped on any change a previous reader would misread. 2: the `6h` window's ring of 10-minute
/// buckets became a ring of 1-minute buckets (`aggregate::series`).
pub const VERSION: u32 = 2;
/// Older versions this collector still reads, converting them ([`restore`] says how many
/// functions were converted): 1 (its rings are converted by `Series`'s deserialisation; the
/// `1h`, `3d` and `30d` counts are kept exactly).
pub const READS_VERSIONS: [u32; 2] = [1, VERSION];
/// Largest decompressed document accepted (a guard against a corrupt or hostile object).
pub const MAX_DECOMPRESSED_BYTES: u64 = 512 * 1024 * 1024;

/// Serde helper: a map with non-string keys as a list of `[key, value]` pairs (JSON objects only
/// take string keys).
pub mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Serde helper for counter rings, which are mostly zeros: a list of integers where a value
/// `v ≥ 0` is one counter and `v < 0` is a run of `-v` zero counters. An idle ring of 2,160
/// counters becomes `[-2160]`; the JSON (and the time the aggregator spends writing it) shrinks
/// with the traffic instead of the ring size.
pub mod zero_runs {
    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeSeq};

    /// Largest ring a checkpoint may describe (≤ 360 buckets × a stride far above any real
    /// layout): a guard against a corrupt document asking for gigabytes of zeros.
    pub const MAX_LEN: usize = 1 << 20;

    pub fn serialize<S: Serializer>(data: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut zeros = 0i64;
        for v in data {
            if *v == 0 {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                seq.serialize_element(&-zeros)?;
                zeros = 0;
            }
            seq.serialize_element(&i64::from(*v))?;
        }
        if zeros > 0 {
            seq.serialize_element(&-zeros)?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let mut out = Vec::new();
        for v in Vec::<i64>::deserialize(d)? {
            if v < 0 {
                let n = usize::try_from(v.unsigned_abs()).unwrap_or(usize::MAX);
                if out.len().saturating_add(n) > MAX_LEN {
                    return Err(D::Error::custom("counter ring too long"));
                }
                out.resize(out.len() + n, 0);
            } else {
                out.push(u32::try_from(v).map_err(D::Error::custom)?);
                if out.len() > MAX_LEN {
                    return Err(D::Error::custom("counter ring too long"));
                }
            }
        }
        Ok(out)
    }
}

/// One alert state entry as saved (the alert is always in its firing form in the state machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAlert {
    pub phase: Phase,
    pub since: SystemTime,
    pub last_sent: SystemTime,
    pub fingerprint: String,
    pub starts_at: SystemTime,
    pub ends_at: Option<SystemTime>,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub evidence: SavedEvidence,
    pub runbook_url: String,
}

/// [`Evidence`] with plain serde (the alert payload's own serialisation is for receivers:
/// rounded, formatted durations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedEvidence {
    pub sli: f64,
    pub objective: f64,
    pub burn_rate_long: Option<f64>,
    pub burn_rate_short: Option<f64>,
    pub long_window: Duration,
    pub short_window: Duration,
    pub factor: f64,
    pub budget_consumed: f64,
    pub time_to_exhaustion: Option<Duration>,
    pub good: u64,
    pub total: u64,
}

impl SavedAlert {
    fn from_entry((phase, since, last_sent, a): (Phase, SystemTime, SystemTime, Alert)) -> Self {
        let e = a.evidence;
        Self {
            phase,
            since,
            last_sent,
            fingerprint: a.fingerprint.as_str().to_owned(),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            labels: a.labels,
            summary: a.summary,
            description: a.description,
            evidence: SavedEvidence {
                sli: e.sli,
                objective: e.objective,
                burn_rate_long: e.burn_rate_long,
                burn_rate_short: e.burn_rate_short,
                long_window: e.long_window,
                short_window: e.short_window,
                factor: e.factor,
                budget_consumed: e.budget_consumed,
                time_to_exhaustion: e.time_to_exhaustion,
                good: e.good,
                total: e.total,
            },
            runbook_url: a.runbook_url,
        }
    }

    /// Back into the state machine's form; `None` for a malformed fingerprint.
    fn into_entry(self) -> Option<(Phase, SystemTime, SystemTime, Alert)> {
        let e = self.evidence;
        let alert = Alert {
            fingerprint: Fingerprint::from_hex(&self.fingerprint)?,
            status: AlertStatus::Firing,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            labels: self.labels,
            summary: self.summary,
            description: self.description,
            evidence: Evidence {
                sli: e.sli,
                objective: e.objective,
                burn_rate_long: e.burn_rate_long,
                burn_rate_short: e.burn_rate_short,
                long_window: e.long_window,
                short_window: e.short_window,
                factor: e.factor,
                budget_consumed: e.budget_consumed,
                time_to_exhaustion: e.time_to_exhaustion,
                good: e.good,
                total: e.total,
            },
            runbook_url: self.runbook_url,
        };
        Some((self.phase, self.since, self.last_sent, alert))
    }
}

/// Every entry of `states`, in the saved form (sorted by fingerprint: stable documents).
pub fn saved_alerts(states: &AlertStates) -> Vec<SavedAlert> {
    let mut v: Vec<SavedAlert> = states
        .export()
        .into_iter()
        .map(SavedAlert::from_entry)
        .collect();
    v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    v
}

/// Read first, alone, so an incompatible document is recognised before its body is parsed.
#[derive(Debug, Deserialize)]
struct Header {
    format: String,
    version: u32,
    /// Set on the tombstone left when another task adopted this checkpoint.
    #[serde(default)]
    adopted_by: Option<String>,
}

/// What an adopting task leaves under the key it adopted (so no one adopts it twice).
#[derive(Serialize)]
struct Tombstone<'a> {
    format: &'static str,
    version: u32,
    adopted_by: &'a str,
    saved_at_s: u64,
    /// The adopted document's poller ledger, when a running task merged its counts: a later
    /// lease takeover from the adopted task continues from it ([`takeover`]), so the platform
    /// counts merged here are not polled and counted again.
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger: Option<&'a Ledger>,
}

/// The ledger a running adopter left in a tombstone (see [`Tombstone`]).
fn tombstone_ledger(body: &[u8]) -> Option<Ledger> {
    #[derive(Deserialize)]
    struct T {
        ledger: Option<Ledger>,
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECOMPRESSED_BYTES)
        .read_to_end(&mut json)
        .ok()?;
    serde_json::from_slice::<T>(&json).ok()?.ledger
}

/// A checkpoint whose writer has not written for this long is an orphan another task may adopt
/// (a live writer writes every `interval`).
pub fn stale_after(interval: Duration) -> Duration {
    interval * 2 + Duration::from_secs(5)
}

/// Every task's key starts with this (`task/<task id>`; under the S3 prefix for S3), so the
/// tasks' checkpoints can be listed without an empty-prefix scan.
pub const KEY_PREFIX: &str = "task/";

/// At most this many other tasks' checkpoints are examined for adoption at start.
pub const MAX_ADOPTION_CANDIDATES: usize = 256;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The functions map as a list of `[key, state]` pairs, serialised without cloning.
struct FunctionsRef<'a>(&'a std::collections::HashMap<FunctionKey, FunctionState>);

impl Serialize for FunctionsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        s.collect_seq(v)
    }
}

/// The document as written (borrowing the aggregator's state).
#[derive(Serialize)]
struct DocumentRef<'a> {
    format: &'static str,
    version: u32,
    task_id: &'a str,
    saved_at_s: u64,
    layout: &'a Layout,
    functions: FunctionsRef<'a>,
    latest: Vec<FunctionKey>,
    latest_by_name: Vec<FunctionKey>,
    alerts: &'a [SavedAlert],
    ledger: Option<&'a Ledger>,
    /// The cost stage's ledgers (`crate::cost::feed`), when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<crate::cost::feed::CostCheckpointRef<'a>>,
}

/// The document as read.
#[derive(Debug, Deserialize)]
pub struct Document {
    pub format: String,
    pub version: u32,
    pub task_id: String,
    pub saved_at_s: u64,
    pub layout: Layout,
    pub functions: Vec<(FunctionKey, FunctionState)>,
    pub latest: Vec<FunctionKey>,
    pub latest_by_name: Vec<FunctionKey>,
    pub alerts: Vec<SavedAlert>,
    pub ledger: Option<Ledger>,
    /// Absent in checkpoints written without the cost stage; restored by the caller
    /// (`CostFeed::restore`).
    #[serde(default)]
    pub cost: Option<crate::cost::feed::CostCheckpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a gzip stream or larger than {MAX_DECOMPRESSED_BYTES} bytes decompressed: {0}")]
    Gzip(String),
    #[error("not a {FORMAT} document: {0}")]
    Json(String),
    #[error(
        "format {format:?} version {version}, this collector reads {FORMAT:?} version {VERSION}"
    )]
    Incompatible { format: String, version: u32 },
    #[error("adopted by task {0}")]
    Adopted(String),
}

/// Serialises the state into uncompressed JSON (runs inside the aggregator owner: one pass over
/// the functions, no copy of them).
pub fn to_json(
    agg: &Aggregates,
    task_id: &str,
    saved_at_s: u64,
    alerts: &[SavedAlert],
    ledger: Option<&Ledger>,
) -> Result<Vec<u8>, serde_json::Error> {
    let (latest, latest_by_name) = agg.latest_keys();
    serde_json::to_vec(&DocumentRef {
        format: FORMAT,
        version: VERSION,
        task_id,
        saved_at_s,
        layout: &agg.layout,
        functions: FunctionsRef(&agg.functions),
        latest,
        latest_by_name,
        alerts,
        ledger,
        cost: agg.cost.as_ref().map(crate::cost::CostFeed::checkpoint),
    })
}

pub fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::default(),
    );
    enc.write_all(json)?;
    enc.finish()
}

/// Decompresses (bounded) and parses a stored body.
pub fn decode(body: &[u8]) -> Result<Document, DecodeError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if json.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DecodeError::Gzip("too large".into()));
    }
    let h: Header = serde_json::from_slice(&json).map_err(|e| DecodeError::Json(e.to_string()))?;
    if h.format != FORMAT || !READS_VERSIONS.contains(&h.version) {
        return Err(DecodeError::Incompatible {
            format: h.format,
            version: h.version,
        });
    }
    if let Some(by) = h.adopted_by {
        return Err(DecodeError::Adopted(by));
    }
    serde_json::from_slice(&json).map_err(|e| DecodeError::Json(e.to_string()))
}

/// Where a new lease holder's poller continues from, given the previous holder's task id.
#[derive(Debug, Clone, PartialEq)]
pub enum Handover {
    /// Keep this task's own ledger: the previous holder was this task (a restart: the restored
    /// checkpoint's ledger matches the restored counts) or its checkpoint was adopted by this
    /// task.
    Own,
    /// The ledger of the previous holder's last checkpoint: exactly what its saved counts hold.
    Checkpoint(Ledger),
    /// No usable checkpoint of the previous holder: fall back to the lease record's ledger.
    Record,
}

/// The task id in a lease identity (`crate::aws::lease_identity`: `<task id>/<pid>-<nonce>`).
pub fn task_of_identity(identity: &str) -> &str {
    identity.rsplit_once('/').map_or(identity, |(t, _)| t)
}

/// What a new lease holder takes over from the previous holder's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    pub handover: Handover,
    /// The alerts the previous holder had firing (it published them to SNS); empty when the
    /// previous holder was this task or its checkpoint is unusable.
    pub firing: Vec<SavedAlert>,
}

/// Decides the [`Takeover`] for `my_task` taking the lease over from `previous_task`, reading
/// the previous holder's checkpoint from `store`.
pub async fn takeover(store: &Store, my_task: &str, previous_task: &str) -> Takeover {
    let record = || Takeover {
        handover: Handover::Record,
        firing: Vec::new(),
    };
    if previous_task == my_task {
        return Takeover {
            handover: Handover::Own,
            firing: Vec::new(),
        };
    }
    match store.load(&format!("{KEY_PREFIX}{previous_task}")).await {
        Ok(Some(v)) => match decode(&v.body) {
            Ok(doc) => Takeover {
                handover: doc.ledger.map_or(Handover::Record, Handover::Checkpoint),
                firing: doc
                    .alerts
                    .into_iter()
                    .filter(|a| a.phase == Phase::Firing)
                    .collect(),
            },
            // Merged into a running task (its firing alerts went to that task's state machine,
            // which resolves them): continue from the ledger its counts were merged with.
            Err(DecodeError::Adopted(_)) if tombstone_ledger(&v.body).is_some() => Takeover {
                handover: tombstone_ledger(&v.body).map_or(Handover::Record, Handover::Checkpoint),
                firing: Vec::new(),
            },
            Err(DecodeError::Adopted(by)) if by == my_task => Takeover {
                handover: Handover::Own,
                firing: Vec::new(),
            },
            Err(e) => {
                tracing::info!(task = previous_task, error = %e, "previous lease holder's checkpoint unusable; continuing from the lease record's ledger");
                record()
            }
        },
        Ok(None) => record(),
        Err(e) => {
            tracing::warn!(task = previous_task, error = %e, "previous lease holder's checkpoint unreadable; continuing from the lease record's ledger");
            record()
        }
    }
}

/// The fingerprints of every alert (pending or firing) in this task's own last checkpoint;
/// `None` when it cannot be read (then no takeover resolve is sent: better silent than wrong).
pub async fn own_active(
    store: &Store,
    my_task: &str,
) -> Option<std::collections::BTreeSet<String>> {
    match store.load(&format!("{KEY_PREFIX}{my_task}")).await {
        Ok(Some(v)) => decode(&v.body)
            .ok()
            .map(|doc| doc.alerts.into_iter().map(|a| a.fingerprint).collect()),
        Ok(None) => Some(std::collections::BTreeSet::new()),
        Err(_) => None,
    }
}

/// The resolves a new lease holder owes (pure): every alert the previous holder had firing —
/// and therefore paged through SNS — that is neither firing nor pending here. Their resolve was
/// either evaluated here while another task held the lease (suppressed), or never evaluated here
/// at all (only the previous holder saw it); either way no one would publish it. An alert still
/// pending or firing here is left to this task's own state machine.
pub fn takeover_resolves(
    previous_firing: Vec<SavedAlert>,
    own_active: &std::collections::BTreeSet<String>,
    now: SystemTime,
) -> Vec<Alert> {
    previous_firing
        .into_iter()
        .filter(|a| !own_active.contains(&a.fingerprint))
        .filter_map(|a| {
            let (_, _, _, mut alert) = a.into_entry()?;
            alert.status = AlertStatus::Resolved;
            alert.ends_at = Some(now);
            Some(alert)
        })
        .collect()
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub functions: usize,
    /// Functions skipped because their shapes did not match the layout.
    pub malformed: usize,
    pub alerts: usize,
    /// False when the layout differed (the SLO thresholds changed): counts were not restored.
    pub counts: bool,
    /// The document's format version.
    pub version: u32,
    /// Functions whose counter rings were converted from an older format (version 1).
    pub converted: usize,
}

/// Applies `doc` to a fresh state. Counts are restored only if they were counted against the
/// same [`Layout`]; alert states always (a firing alert must not page twice).
pub fn restore(doc: Document, agg: &mut Aggregates, states: &mut AlertStates) -> Restored {
    let mut r = Restored {
        version: doc.version,
        ..Restored::default()
    };
    if doc.layout == agg.layout {
        let layout = agg.layout.clone();
        let (ok, bad): (Vec<_>, Vec<_>) = doc
            .functions
            .into_iter()
            .map(|(k, mut s)| {
                s.upgrade();
                (k, s)
            })
            .partition(|(_, s)| s.is_well_formed(&layout));
        r.malformed = bad.len();
        r.converted = ok.iter().filter(|(_, s)| s.converted_rings()).count();
        if r.converted > 0 {
            tracing::info!(
                from_version = doc.version,
                to_version = VERSION,
                functions = r.converted,
                "checkpoint counts converted: 1h, 3d and 30d windows exact; the 6h window's \
                 10-minute counts spread over their minutes until 6 h of new traffic replace them"
            );
        }
        r.functions = agg.restore(ok, doc.latest, doc.latest_by_name);
        r.counts = true;
    }
    for a in doc.alerts {
        if let Some((phase, since, last_sent, alert)) = a.into_entry() {
            states.restore(phase, since, last_sent, alert);
            r.alerts += 1;
        }
    }
    r
}

/// What merging an adopted orphan into a running task did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Functions merged into a live one or inserted.
    pub functions: usize,
    /// Functions skipped: malformed, or beyond `max_functions`.
    pub dropped: usize,
    /// False when the orphan was counted against another layout: its counts were not merged.
    pub counts: bool,
}

/// Merges the counts of `doc` — another task's checkpoint, adopted while this task runs — into
/// the live state (pure; see [`Aggregates::merge`] and [`FunctionState::merge`]: counter rings
/// add bucket by bucket at their time, Prometheus buckets, totals and HdrHistograms add). Counts
/// of another layout are not merged (`counts` false). The document's alert states are merged
/// separately, by the evaluator that owns them ([`merge_alerts`]); its cost ledgers and poller
/// ledger are not merged.
pub fn merge_counts(doc: Document, agg: &mut Aggregates) -> Merged {
    if doc.layout != agg.layout {
        return Merged::default();
    }
    let layout = agg.layout.clone();
    let (ok, bad): (Vec<_>, Vec<_>) = doc
        .functions
        .into_iter()
        .map(|(k, mut s)| {
            s.upgrade();
            (k, s)
        })
        .partition(|(_, s)| s.is_well_formed(&layout));
    let (functions, dropped) = agg.merge(ok, doc.latest, doc.latest_by_name);
    Merged {
        functions,
        dropped: dropped + bad.len(),
        counts: true,
    }
}

/// Merges an adopted orphan's alert states into the live ones (pure). The live state wins,
/// except that an alert the orphan had **firing** (it sent that page) replaces a live entry
/// that is not firing: taken with its `last_sent`, so this task does not page it again before
/// the resend interval, and resolves it when its own evaluation clears. An orphan entry with no
/// live counterpart is taken as is (a pending one keeps its `for` clock). A live firing entry
/// is kept: this task already paged it. Returns how many entries were taken.
pub fn merge_alerts(orphan: Vec<SavedAlert>, states: &mut AlertStates) -> usize {
    let mut taken = 0;
    for a in orphan {
        let Some((phase, since, last_sent, alert)) = a.into_entry() else {
            continue;
        };
        let take = match states.phase(&alert.fingerprint) {
            None => true,
            Some(Phase::Pending) => phase == Phase::Firing,
            Some(Phase::Firing) => false,
        };
        if take {
            states.restore(phase, since, last_sent, alert);
            taken += 1;
        }
    }
    taken
}

/// This task's checkpoint key: `LAMBDAWATCH_TASK_ID`, else the ECS task id (read by `config`),
/// else the hostname, else `collector`.
pub fn task_id(cfg: &Config) -> String {
    if let Some(id) = &cfg.task_id {
        return id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".to_owned())
}

/// A client of the configured store (`None`: no `LAMBDAWATCH_CHECKPOINT`); the lease
/// (`crate::aws::run_lease`) lives in the same store.
pub async fn store(cfg: &Config, stats: &Arc<AwsStats>) -> Option<Store> {
    let settings = crate::aws::settings(&cfg.aws);
    Some(match cfg.checkpoint.as_ref()? {
        CheckpointLocation::DynamoDb { table } => {
            Store::dynamodb(&settings, &stats.calls, table.clone()).await
        }
        CheckpointLocation::S3 { bucket, prefix } => {
            Store::s3(&settings, &stats.calls, bucket.clone(), prefix.clone()).await
        }
    })
}

/// The store, this task's key and the version last written or read.
pub struct Checkpointer {
    store: Store,
    task_id: String,
    /// `task/<task id>` ([`KEY_PREFIX`]).
    key: String,
    version: Option<String>,
    stats: Arc<AwsStats>,
    failing: bool,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish()
    }
}

impl Checkpointer {
    /// The configured store (`None`: state stays in memory).
    pub async fn open(cfg: &Config, stats: &Arc<AwsStats>) -> Option<Self> {
        let store = store(cfg, stats).await?;
        Some(Self {
            store,
            key: format!("{KEY_PREFIX}{}", task_id(cfg)),
            task_id: task_id(cfg),
            version: None,
            stats: stats.clone(),
            failing: false,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads this task's checkpoint and remembers its version (so the next write is conditional
    /// on it). `None` when it cannot be read or is incompatible (logged); when there is none (or
    /// only a tombstone), adopts the newest orphan: another task's checkpoint not written for
    /// `stale_after` (its task is gone, e.g. the Fargate task this one replaces, which had
    /// another task id).
    pub async fn load_or_adopt(&mut self, stale_after: Duration) -> Option<Document> {
        let v = match self.store.load(&self.key).await {
            Ok(Some(v)) => v,
            Ok(None) => return self.adopt(stale_after).await,
            Err(e) => {
                tracing::error!(key = %self.key, error = %e, "checkpoint unreadable: starting empty");
                return None;
            }
        };
        self.version = Some(v.version);
        match decode(&v.body) {
            Ok(doc) => Some(doc),
            Err(DecodeError::Adopted(by)) => {
                tracing::warn!(key = %self.key, adopted_by = %by, "this task's checkpoint was adopted by another task; looking for an orphan");
                self.adopt(stale_after).await
            }
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "checkpoint ignored (incompatible); starting empty and overwriting it");
                None
            }
        }
    }

    /// Claims the newest orphan checkpoint: replaces it with a tombstone, conditionally on the
    /// version read (a lost race means another task adopted it, or its writer is back: next).
    async fn adopt(&mut self, stale_after: Duration) -> Option<Document> {
        match self.claim_orphans(stale_after, 1, false).await {
            Ok(mut docs) if !docs.is_empty() => {
                let (key, doc) = docs.swap_remove(0);
                self.stats
                    .checkpoint_adopted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    key = %self.key,
                    adopted = %key,
                    age_s = now_s().saturating_sub(doc.saved_at_s),
                    "no checkpoint of our own: adopted the orphan checkpoint of a task that is gone"
                );
                Some(doc)
            }
            Ok(_) => {
                tracing::info!(key = %self.key, "no checkpoint yet (and no orphan to adopt): starting empty");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt an orphan checkpoint; starting empty");
                None
            }
        }
    }

    /// Claims up to `max` orphan checkpoints (other tasks' checkpoints not written for
    /// `stale_after`), newest first, each by a conditional write of a tombstone over the version
    /// read: of several tasks claiming the same orphan exactly one wins, and a tombstone is
    /// never a candidate again. Returns the claimed `(key, document)` pairs; an error only when
    /// listing or a claim write fails (the orphans claimed before it are lost to everyone: at
    /// most once, never twice).
    async fn claim_orphans(
        &mut self,
        stale_after: Duration,
        max: usize,
        keep_ledger: bool,
    ) -> Result<Vec<(String, Document)>, CheckpointError> {
        let keys = self.store.list(KEY_PREFIX).await?;
        let now = now_s();
        let mut candidates = Vec::new();
        for key in keys
            .into_iter()
            .filter(|k| *k != self.key)
            .take(MAX_ADOPTION_CANDIDATES)
        {
            let Ok(Some(v)) = self.store.load(&key).await else {
                continue;
            };
            // Tombstones and incompatible documents are not candidates.
            let Ok(doc) = decode(&v.body) else { continue };
            if doc.saved_at_s.saturating_add(stale_after.as_secs()) > now {
                continue; // its writer is alive
            }
            candidates.push((key, v.version, doc));
        }
        candidates.sort_by_key(|(_, _, d)| std::cmp::Reverse(d.saved_at_s));
        let mut claimed = Vec::new();
        for (key, version, doc) in candidates {
            if claimed.len() >= max {
                break;
            }
            let tomb = serde_json::to_vec(&Tombstone {
                format: FORMAT,
                version: VERSION,
                adopted_by: &self.task_id,
                saved_at_s: now,
                ledger: doc.ledger.as_ref().filter(|_| keep_ledger),
            })
            .map_err(|e| e.to_string())
            .and_then(|j| gzip(&j).map_err(|e| e.to_string()))
            .map_err(|message| CheckpointError::Call {
                op: "encode tombstone",
                message,
            })?;
            match self.store.save(&key, tomb, Some(&version)).await {
                Ok(_) => claimed.push((key, doc)),
                Err(CheckpointError::Conflict { .. }) => continue,
                Err(e) => {
                    if claimed.is_empty() {
                        return Err(e);
                    }
                    tracing::warn!(orphan = %key, error = %e, "cannot claim an orphan checkpoint; retrying later");
                    break;
                }
            }
        }
        Ok(claimed)
    }

    /// Periodic adoption by a running task: claims every orphan checkpoint (at most
    /// [`MAX_ADOPTION_CANDIDATES`] per call), for the caller to merge ([`merge_counts`],
    /// [`merge_alerts`]). Errors are logged; the next call retries.
    pub async fn adopt_orphans(&mut self, stale_after: Duration) -> Vec<(String, Document)> {
        match self
            .claim_orphans(stale_after, MAX_ADOPTION_CANDIDATES, true)
            .await
        {
            Ok(docs) => docs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for orphan checkpoints; retrying later");
                Vec::new()
            }
        }
    }

    /// Writes `body` conditionally on the last known version. On a conflict (a stale writer
    /// with our key) reloads the version and retries once: the live task takes the key over.
    pub async fn save(&mut self, body: Vec<u8>) -> bool {
        let len = body.len() as u64;
        let mut result = self
            .store
            .save(&self.key, body.clone(), self.version.as_deref())
            .await;
        if let Err(CheckpointError::Conflict { .. }) = &result {
            self.stats
                .checkpoint_conflicts
                .fetch_add(1, Ordering::Relaxed);
            match self.store.load(&self.key).await {
                Ok(current) => {
                    let current = current.map(|v| v.version);
                    tracing::warn!(
                        key = %self.key,
                        ours = ?self.version,
                        theirs = ?current,
                        "checkpoint written by another writer with this task id (a stale task?); taking it over"
                    );
                    self.version = current;
                    result = self
                        .store
                        .save(&self.key, body, self.version.as_deref())
                        .await;
                }
                // The reload failed: counted below, retried next interval.
                Err(e) => result = Err(e),
            }
        }
        match result {
            Ok(v) => {
                self.version = Some(v);
                self.stats.checkpoint_saved.fetch_add(1, Ordering::Relaxed);
                self.stats.checkpoint_bytes.store(len, Ordering::Relaxed);
                if self.failing {
                    tracing::info!(key = %self.key, "checkpoint writes succeed again");
                }
                self.failing = false;
                true
            }
            Err(e) => {
                if matches!(e, CheckpointError::Conflict { .. }) {
                    self.stats
                        .checkpoint_conflicts
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.checkpoint_failed.fetch_add(1, Ordering::Relaxed);
                }
                if !self.failing {
                    tracing::warn!(key = %self.key, bytes = len, error = %e, "checkpoint write failed; retrying next interval");
                }
                self.failing = true;
                false
            }
        }
    }
}

/// The periodic writer: owns the [`Checkpointer`], reads the newest alert states and ledger.
pub struct Writer {
    pub checkpointer: Checkpointer,
    pub aggregates: aggregate::Handle,
    pub alerts: watch::Receiver<Arc<Vec<SavedAlert>>>,
    /// `None` when the CloudWatch poller is off.
    pub ledger: Option<watch::Receiver<Ledger>>,
    /// Periodic adoption of orphan checkpoints while running (`None`: only at start).
    pub adopt: Option<Adoption>,
}

/// How a running task adopts orphans ([`Writer::adopt_once`]).
#[derive(Debug)]
pub struct Adoption {
    /// A checkpoint not written for this long is an orphan ([`stale_after`]); also the period
    /// of the search.
    pub stale_after: Duration,
    /// To the evaluator, which owns the alert states: each adopted orphan's alert entries, for
    /// [`merge_alerts`]. Bounded; the writer waits for room (the evaluator drains it at once).
    pub alerts: tokio::sync::mpsc::Sender<Vec<SavedAlert>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("checkpointer", &self.checkpointer)
            .finish()
    }
}

impl Writer {
    /// One checkpoint of the current state.
    pub async fn save_once(&mut self) -> bool {
        let alerts = self.alerts.borrow().clone();
        let ledger = self.ledger.clone();
        let task = self.checkpointer.task_id.clone();
        let now_s = now_s();
        // The ledger is read inside the aggregator owner, where the poller also applies each
        // poll's counts together with its new ledger (`crate::aws::run_poller`): the document
        // holds exactly the counts its ledger says were emitted.
        let json = self
            .aggregates
            .query(move |a| {
                let ledger = ledger.as_ref().map(|l| l.borrow().clone());
                to_json(a, &task, now_s, &alerts, ledger.as_ref())
            })
            .await;
        let json = match json {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                self.checkpointer
                    .stats
                    .checkpoint_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "checkpoint not serialisable");
                return false;
            }
            Err(_) => return false,
        };
        let body = match tokio::task::spawn_blocking(move || gzip(&json)).await {
            Ok(Ok(b)) => b,
            _ => {
                self.checkpointer
                    .stats
                    .checkpoint_failed
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        self.checkpointer.save(body).await
    }

    /// Claims every orphan checkpoint ([`Checkpointer::adopt_orphans`]), merges its counts into
    /// the aggregator ([`merge_counts`]) and hands its alert states to the evaluator; then saves
    /// at once, so the merged counts are durable under this task's key (the orphan is a
    /// tombstone from the claim on). Returns how many orphans were adopted.
    pub async fn adopt_once(&mut self) -> usize {
        let Some(adoption) = &self.adopt else {
            return 0;
        };
        let stale_after = adoption.stale_after;
        let alerts_tx = adoption.alerts.clone();
        let docs = self.checkpointer.adopt_orphans(stale_after).await;
        let adopted = docs.len();
        for (key, mut doc) in docs {
            let alerts = std::mem::take(&mut doc.alerts);
            let age_s = now_s().saturating_sub(doc.saved_at_s);
            let merged = self.aggregates.query(move |a| merge_counts(doc, a)).await;
            let n_alerts = alerts.len();
            if alerts_tx.send(alerts).await.is_err() {
                tracing::warn!(orphan = %key, "evaluator gone: adopted alert states not merged");
            }
            match merged {
                Ok(m) => {
                    self.checkpointer
                        .stats
                        .checkpoint_adopted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        key = %self.checkpointer.key,
                        adopted = %key,
                        age_s,
                        functions = m.functions,
                        dropped = m.dropped,
                        counts_merged = m.counts,
                        alerts = n_alerts,
                        "adopted an orphan checkpoint while running: merged its windows"
                    );
                    if !m.counts {
                        tracing::warn!(adopted = %key, "orphan counted against other SLO thresholds: its counts were not merged");
                    }
                }
                Err(_) => {
                    tracing::warn!(adopted = %key, "aggregator gone: orphan's counts not merged");
                }
            }
        }
        if adopted > 0 {
            self.save_once().await;
        }
        adopted
    }

    /// Saves every `interval` until `stop` fires, and at once on each request of `now` (the
    /// evaluator's, right after an alert transition: the answer says whether it was saved);
    /// every `stale_after` adopts orphan checkpoints ([`Self::adopt_once`]). Returns itself
    /// for the final save.
    pub async fn run(
        mut self,
        interval: Duration,
        stop: CancellationToken,
        mut now: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<bool>>,
    ) -> Self {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Without adoption the period is irrelevant (the branch is disabled).
        let period = self
            .adopt
            .as_ref()
            .map_or(Duration::from_secs(3600), |a| a.stale_after);
        let mut adopt_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        adopt_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return self,
                _ = tick.tick() => { self.save_once().await; }
                // Not cancelled by `stop`: a claimed orphan is merged and saved, not dropped.
                _ = adopt_tick.tick(), if self.adopt.is_some() => { self.adopt_once().await; }
                Some(reply) = now.recv() => {
                    let ok = self.save_once().await;
                    let _ = reply.send(ok);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{Batch, Event, Group, InitKind, Outcome, PlatformCounter, Target},
        alerting::state::Policy,
        serve::Evaluator,
        slo::{eval, spec::SloSpec},
    };

    use crate::aggregate::tests::{inv, key};

    const T0: u64 = 1_800_000_000;

    /// Three functions over two hours: `ok` healthy, `broken` in an error outage, `slow` with
    /// cold starts and timeouts; platform counts and extension counters on the side.
    fn traffic(agg: &mut Aggregates) {
        for m in 0..120u64 {
            let t = T0 - 7200 + m * 60;
            let mut groups = Vec::new();
            for (name, bad) in [("ok", 0u64), ("broken", 8), ("slow", 1)] {
                let mut events: Vec<Event> = (0..10u64)
                    .map(|i| {
                        let outcome = if i < bad && m >= 90 {
                            Outcome::Error
                        } else {
                            Outcome::Success
                        };
                        inv(t + i, outcome, if name == "slow" { 900.0 } else { 40.0 })
                    })
                    .collect();
                if name == "slow" && m % 10 == 0 {
                    events.push(Event::Init {
                        t_s: t,
                        kind: InitKind::OnDemand,
                        duration_ms: 1400.0,
                    });
                    events.push(Event::Extension {
                        retries: false,
                        reason: "buffer_full".into(),
                        value: m as f64,
                        cumulative: true,
                    });
                }
                groups.push(Group {
                    target: Target::Function {
                        key: key(name),
                        tags: vec![("team".into(), name.into())],
                        instance: "i-1".into(),
                    },
                    events,
                });
            }
            groups.push(Group {
                target: Target::Platform {
                    function: "ok".into(),
                    region: "eu-west-1".into(),
                    account: "123456789012".into(),
                    qualifier: None,
                },
                events: vec![Event::Platform {
                    t_s: t,
                    counter: PlatformCounter::Throttles,
                    value: 2,
                    queue: None,
                }],
            });
            agg.apply(Batch {
                received_s: t,
                groups,
            });
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    /// Evaluation without the percentiles, which a restore does not carry.
    fn without_percentiles(mut ev: eval::Evaluation) -> eval::Evaluation {
        for f in &mut ev.functions {
            f.cold_start_ms.clear();
            f.invocation_ms = None;
        }
        ev
    }

    fn evaluator(spec: &Arc<SloSpec>) -> Evaluator {
        Evaluator {
            spec: spec.clone(),
            runbook_base: spec.defaults.runbook_base_url.clone(),
            policy: Policy {
                for_: Duration::from_secs(120),
                resend: Duration::from_secs(600),
            },
            states: AlertStates::default(),
            history: Vec::new(),
        }
    }

    /// A new lease holder owes a resolve for each alert the previous holder had firing that is
    /// neither firing nor pending here; pending ones of the previous holder were never paged.
    #[test]
    fn takeover_resolves_are_the_previous_holders_pages_not_active_here() {
        let spec = Arc::new(SloSpec::embedded_default());
        let mut agg = Aggregates::new(eval::layout_for(&spec), 100);
        traffic(&mut agg);
        let mut ev = evaluator(&spec);
        for k in 0..4u64 {
            let now = T0 + k * 60;
            ev.round(eval::evaluate(&spec, &agg, now), at(now));
        }
        let mut prev = saved_alerts(&ev.states);
        let firing: Vec<String> = prev
            .iter()
            .filter(|a| a.phase == Phase::Firing)
            .map(|a| a.fingerprint.clone())
            .collect();
        assert!(!firing.is_empty());
        let mut pending = prev[0].clone();
        pending.phase = Phase::Pending;
        pending.fingerprint = "00112233445566ff".into();
        prev.push(pending);
        let prev_firing: Vec<SavedAlert> = prev
            .into_iter()
            .filter(|a| a.phase == Phase::Firing)
            .collect();
        let now = at(T0 + 300);
        // Nothing active here: every page of the previous holder is resolved, once each.
        let all = takeover_resolves(prev_firing.clone(), &Default::default(), now);
        let got: Vec<String> = all
            .iter()
            .map(|a| a.fingerprint.as_str().to_owned())
            .collect();
        assert_eq!(got, firing);
        for a in &all {
            assert_eq!(a.status, AlertStatus::Resolved);
            assert_eq!(a.ends_at, Some(now));
        }
        // Active here (firing or pending): left to this task's own state machine.
        let own: std::collections::BTreeSet<String> = firing.iter().cloned().collect();
        assert!(takeover_resolves(prev_firing, &own, now).is_empty());
    }

    #[test]
    fn round_trip_keeps_counts_and_alert_states() {
        let spec = Arc::new(SloSpec::embedded_default());
        let layout = eval::layout_for(&spec);
        let mut agg = Aggregates::new(layout.clone(), 100);
        traffic(&mut agg);
        assert_eq!(agg.functions.len(), 3);

        // Alert states: rounds until one alert fires and at least one other is pending.
        let mut ev_a = evaluator(&spec);
        let mut fired = Vec::new();
        for k in 0..4u64 {
            let now = T0 + k * 60;
            let (notes, _) = ev_a.round(eval::evaluate(&spec, &agg, now), at(now));
            fired.extend(notes);
        }
        let states = saved_alerts(&ev_a.states);
        assert!(
            states.iter().any(|s| s.phase == Phase::Firing),
            "a firing alert: {states:?}"
        );
        assert!(!fired.is_empty(), "the outage fired");
        // Force one entry to pending too (a fresh condition) so both phases are covered.
        let mut pending = states[0].clone();
        pending.phase = Phase::Pending;
        pending.fingerprint = "00112233445566ff".into();
        let mut all_alerts = states.clone();
        all_alerts.push(pending.clone());

        let ledger: Ledger =
            serde_json::from_str(r#"{"emitted":{"AWS/Lambda|Throttles|f|1800000000":3.0}}"#)
                .unwrap();
        let json = to_json(&agg, "task-1", T0, &all_alerts, Some(&ledger)).unwrap();
        let body = gzip(&json).unwrap();
        let doc = decode(&body).unwrap();
        assert_eq!(doc.task_id, "task-1");
        assert_eq!(doc.ledger.as_ref(), Some(&ledger));

        let mut agg_b = Aggregates::new(layout, 100);
        let mut ev_b = evaluator(&spec);
        let r = restore(doc, &mut agg_b, &mut ev_b.states);
        assert_eq!(
            r,
            Restored {
                functions: 3,
                malformed: 0,
                alerts: all_alerts.len(),
                counts: true,
                version: VERSION,
                converted: 0,
            }
        );
        assert_eq!(saved_alerts(&ev_b.states), {
            let mut v = all_alerts.clone();
            v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
            v
        });
        // Drop the synthetic pending entry from B's comparison by restoring it into A too.
        if let Some((p, s, l, a)) = pending.into_entry() {
            ev_a.states.restore(p, s, l, a);
        }

        // Same evaluations now and later, same notifications from the same rounds.
        let mut resends = 0;
        for k in 4..20u64 {
            let now = T0 + k * 60;
            let a = eval::evaluate(&spec, &agg, now);
            let b = eval::evaluate(&spec, &agg_b, now);
            assert_eq!(
                without_percentiles(a.clone()),
                without_percentiles(b.clone())
            );
            let (na, _) = ev_a.round(a, at(now));
            let (nb, _) = ev_b.round(b, at(now));
            assert_eq!(na, nb, "round at +{k} min");
            let resent = na.iter().any(|n| {
                n.status == AlertStatus::Firing
                    && fired.iter().any(|f| f.fingerprint == n.fingerprint)
            });
            // Fired at the latest at +3 min; the resend interval is 10 min.
            if k < 10 {
                assert!(!resent, "re-sent before the resend interval at +{k} min");
            }
            resends += usize::from(resent);
        }
        assert!(
            resends > 0,
            "the resend interval still applies after a restore"
        );
        // And the same counts keep accumulating the same way.
        traffic(&mut agg);
        traffic(&mut agg_b);
        let now = T0 + 3600;
        assert_eq!(
            without_percentiles(eval::evaluate(&spec, &agg, now)),
            without_percentiles(eval::evaluate(&spec, &agg_b, now))
        );
        let (ka, kb) = (&agg.functions[&key("slow")], &agg_b.functions[&key("slow")]);
        assert_eq!(ka.extension_dropped, kb.extension_dropped);
        assert_eq!(ka.cumulative_seen, kb.cumulative_seen);
        assert_eq!(ka.billed_gb_seconds, kb.billed_gb_seconds);
        assert_eq!(
            ka.cold_starts(InitKind::OnDemand).unwrap().buckets.count,
            kb.cold_starts(InitKind::OnDemand).unwrap().buckets.count
        );
    }

    /// Deterministic traffic split between two tasks: `side` `None` is all of it (one task that
    /// saw everything), `Some(0)` / `Some(1)` the two tasks' shares. Task 1 dies at minute 80
    /// (its share stops there); both have ten days of sparse history (coarse rings), errors,
    /// cold starts, platform counts and extension counters; `only_b` reports only to task 1.
    fn split_traffic(agg: &mut Aggregates, side: Option<u64>) {
        let mine = |s: u64| side.is_none_or(|x| x == s);
        // Ten days of history, one batch every 3 h (ring 1 and ring 2 buckets).
        for h in 0..80u64 {
            let t = T0 - 10 * 86_400 + h * 3 * 3600;
            let s = h % 2;
            if !mine(s) {
                continue;
            }
            let events: Vec<Event> = (0..5u64)
                .map(|i| {
                    let o = if (h + i) % 7 == 0 {
                        Outcome::Error
                    } else {
                        Outcome::Success
                    };
                    inv(t + i, o, 30.0 + (h * 13 + i) as f64 % 400.0)
                })
                .collect();
            agg.apply(Batch {
                received_s: t,
                groups: vec![Group {
                    target: Target::Function {
                        key: key("ok"),
                        tags: vec![("team".into(), "ok".into())],
                        instance: format!("i-{s}"),
                    },
                    events,
                }],
            });
        }
        // The last two hours, minute by minute.
        for m in 0..120u64 {
            let t = T0 - 7200 + m * 60;
            let mut groups = Vec::new();
            for (name, bad) in [("ok", 1u64), ("broken", 8), ("only_b", 3)] {
                for s in 0..2u64 {
                    if !mine(s) || (s == 1 && m >= 80) || (name == "only_b" && s == 0) {
                        continue;
                    }
                    let mut events: Vec<Event> = (0..10u64)
                        .filter(|i| (m + i) % 2 == s || name == "only_b")
                        .map(|i| {
                            let outcome = if i < bad && m >= 60 {
                                Outcome::Error
                            } else {
                                Outcome::Success
                            };
                            inv(t + i, outcome, 20.0 + ((m * 7 + i * 31) % 900) as f64)
                        })
                        .collect();
                    if m % 10 == s {
                        events.push(Event::Init {
                            t_s: t,
                            kind: InitKind::OnDemand,
                            duration_ms: 300.0 + (m * 17 % 1500) as f64,
                        });
                        events.push(Event::Extension {
                            retries: false,
                            reason: "buffer_full".into(),
                            value: m as f64,
                            cumulative: true,
                        });
                    }
                    groups.push(Group {
                        target: Target::Function {
                            key: key(name),
                            tags: vec![("team".into(), name.into())],
                            instance: format!("i-{s}"),
                        },
                        events,
                    });
                }
            }
            if mine(m % 2) {
                groups.push(Group {
                    target: Target::Platform {
                        function: "ok".into(),
                        region: "eu-west-1".into(),
                        account: "123456789012".into(),
                        qualifier: None,
                    },
                    events: vec![Event::Platform {
                        t_s: t,
                        counter: PlatformCounter::Throttles,
                        value: 2 + m % 3,
                        queue: None,
                    }],
                });
            }
            agg.apply(Batch {
                received_s: t,
                groups,
            });
        }
    }

    /// The counters a merge must carry (besides the windows the evaluation reads).
    fn totals(s: &FunctionState, layout: &Layout) -> String {
        let cold = s.cold_starts(InitKind::OnDemand);
        let buckets = |b: &crate::aggregate::hist::Buckets, bounds: &[f64]| {
            format!(
                "{:?} {:.6} {}",
                b.cumulative(bounds).collect::<Vec<_>>(),
                b.sum_secs,
                b.count
            )
        };
        format!(
            "{:?} {:?} {:?} {:.6} {} {:?} {:?} {:?} {:?} {} {} {:?}",
            s.outcome_totals,
            s.timeout_budget_totals,
            s.platform_totals,
            s.billed_gb_seconds,
            buckets(&s.duration_buckets, &layout.invocation_bounds),
            cold.map(|c| (c.total, buckets(&c.buckets, &layout.init_bounds))),
            s.extension_dropped,
            s.max_memory,
            s.first_seen_s,
            s.last_seen_s,
            s.samples,
            s.tags,
        )
    }

    /// The pure merge: A's live state + B's checkpoint (decoded from its document) has the
    /// windows of one aggregator that saw both traffics — every SLO window of every function
    /// and SLO, now and as time moves on — and the same totals; in memory (HdrHistograms
    /// included) the percentiles agree too.
    #[test]
    fn merging_an_orphan_equals_one_aggregator_that_saw_both_traffics() {
        let spec = Arc::new(SloSpec::embedded_default());
        let layout = eval::layout_for(&spec);
        let mut a = Aggregates::new(layout.clone(), 100);
        let mut b = Aggregates::new(layout.clone(), 100);
        let mut both = Aggregates::new(layout.clone(), 100);
        split_traffic(&mut a, Some(0));
        split_traffic(&mut b, Some(1));
        split_traffic(&mut both, None);
        assert_eq!(a.functions.len(), 2, "A never saw only_b");
        let now = T0;
        // The two shares differ, and neither alone is the whole.
        assert_ne!(
            without_percentiles(eval::evaluate(&spec, &a, now)),
            without_percentiles(eval::evaluate(&spec, &both, now))
        );

        // In memory: every function state merged, HdrHistograms too.
        let mut mem = Aggregates::new(layout.clone(), 100);
        split_traffic(&mut mem, Some(0));
        let (latest, by_name) = b.latest_keys();
        let theirs: Vec<_> = b
            .functions
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        assert_eq!(mem.merge(theirs, latest, by_name), (3, 0));
        mem.refresh_percentiles(now);
        both.refresh_percentiles(now);
        assert_eq!(
            eval::evaluate(&spec, &mem, now),
            eval::evaluate(&spec, &both, now)
        );

        // Through B's checkpoint document, as a running task adopts it.
        let json = to_json(&b, "task-b", T0, &[], None).unwrap();
        let doc = decode(&gzip(&json).unwrap()).unwrap();
        let m = merge_counts(doc, &mut a);
        assert_eq!(
            m,
            Merged {
                functions: 3,
                dropped: 0,
                counts: true
            }
        );
        let mut keys: Vec<_> = both.functions.keys().cloned().collect();
        keys.sort();
        let mut merged_keys: Vec<_> = a.functions.keys().cloned().collect();
        merged_keys.sort();
        assert_eq!(keys, merged_keys);
        for k in &keys {
            assert_eq!(
                totals(&a.functions[k], &layout),
                totals(&both.functions[k], &layout),
                "totals of {k:?}"
            );
        }
        for step in [0u64, 60, 1800, 3600, 6 * 3600, 2 * 86_400, 20 * 86_400] {
            let t = now + step;
            assert_eq!(
                without_percentiles(eval::evaluate(&spec, &a, t)),
                without_percentiles(eval::evaluate(&spec, &both, t)),
                "windows at +{step} s"
            );
        }
        // And both keep counting the same way afterwards.
        split_traffic(&mut a, Some(0));
        split_traffic(&mut both, Some(0));
        assert_eq!(
            without_percentiles(eval::evaluate(&spec, &a, now)),
            without_percentiles(eval::evaluate(&spec, &both, now))
        );
    }

    /// An orphan counted against other SLO thresholds is not merged (its counts would land in
    /// the wrong counters); nothing of the live state changes.
    #[test]
    fn an_orphan_of_another_layout_is_not_merged() {
        let spec = Arc::new(SloSpec::embedded_default());
        let mut live = Aggregates::new(eval::layout_for(&spec), 100);
        split_traffic(&mut live, Some(0));
        let before = without_percentiles(eval::evaluate(&spec, &live, T0));
        let mut other = Aggregates::new(Layout::new(&[123.0], &[0.5]), 100);
        split_traffic(&mut other, Some(1));
        let json = to_json(&other, "task-b", T0, &[], None).unwrap();
        let m = merge_counts(decode(&gzip(&json).unwrap()).unwrap(), &mut live);
        assert_eq!(m, Merged::default());
        assert_eq!(
            without_percentiles(eval::evaluate(&spec, &live, T0)),
            before
        );
    }

    /// Alert states: the live entry wins, except that an alert the orphan had firing (it sent
    /// the page) replaces a live pending one; an orphan entry unknown here is taken. Merged,
    /// the orphan's page is not sent again before the resend interval.
    #[test]
    fn merged_alerts_keep_the_live_state_and_never_page_twice() {
        let spec = Arc::new(SloSpec::embedded_default());
        let layout = eval::layout_for(&spec);
        let mut agg = Aggregates::new(layout, 100);
        traffic(&mut agg);
        // The orphan's evaluator: rounds until the outage fires.
        let mut orphan = evaluator(&spec);
        let mut paged = Vec::new();
        for k in 0..4u64 {
            let now = T0 + k * 60;
            paged.extend(orphan.round(eval::evaluate(&spec, &agg, now), at(now)).0);
        }
        let orphan_alerts = saved_alerts(&orphan.states);
        let firing: Vec<_> = orphan_alerts
            .iter()
            .filter(|a| a.phase == Phase::Firing)
            .cloned()
            .collect();
        assert!(firing.len() >= 2, "two firing alerts: {orphan_alerts:?}");

        // The live task: the first alert firing itself (paged here), the second pending.
        let mut live = evaluator(&spec);
        let mut first = firing[0].clone();
        first.last_sent = at(T0 + 200);
        first.since = at(T0 + 100);
        let mut second = firing[1].clone();
        second.phase = Phase::Pending;
        second.since = at(T0 + 150);
        // A live alert the orphan never had.
        let mut own = firing[0].clone();
        own.fingerprint = "00112233445566ff".into();
        for a in [first.clone(), second.clone(), own.clone()] {
            let (p, s, l, al) = a.into_entry().unwrap();
            live.states.restore(p, s, l, al);
        }
        let taken = merge_alerts(orphan_alerts.clone(), &mut live.states);
        let after = saved_alerts(&live.states);
        let get = |fp: &str| after.iter().find(|a| a.fingerprint == fp).cloned();
        assert_eq!(
            get(&first.fingerprint),
            Some(first.clone()),
            "live firing kept"
        );
        assert_eq!(
            get(&second.fingerprint),
            Some(firing[1].clone()),
            "orphan's firing replaces live pending"
        );
        assert_eq!(get(&own.fingerprint), Some(own.clone()), "live-only kept");
        for a in &orphan_alerts[..] {
            if a.fingerprint != first.fingerprint && a.fingerprint != second.fingerprint {
                assert_eq!(get(&a.fingerprint).as_ref(), Some(a), "orphan-only taken");
            }
        }
        assert_eq!(taken, orphan_alerts.len() - 1);

        // Merging the same orphan again takes nothing new: a no-op on the states.
        let snapshot = saved_alerts(&live.states);
        merge_alerts(orphan_alerts, &mut live.states);
        assert_eq!(saved_alerts(&live.states), snapshot);

        // The next rounds: nothing the orphan paged is paged again before the resend interval
        // (10 min after the orphan's last send).
        for k in 4..10u64 {
            let now = T0 + k * 60;
            let (notes, _) = live.round(eval::evaluate(&spec, &agg, now), at(now));
            for n in notes {
                assert!(
                    !(n.status == AlertStatus::Firing
                        && paged.iter().any(|p| p.fingerprint == n.fingerprint)),
                    "re-paged {:?} at +{k} min",
                    n.labels
                );
            }
        }
    }

    #[test]
    fn incompatible_documents_are_refused_not_misread() {
        let agg = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
        let json = to_json(&agg, "t", 0, &[], None).unwrap();
        let text = String::from_utf8(json).unwrap();
        let current = format!("\"version\":{VERSION}");
        assert!(text.contains(&current));
        let future = text.replace(&current, "\"version\":3");
        assert!(matches!(
            decode(&gzip(future.as_bytes()).unwrap()),
            Err(DecodeError::Incompatible { version: 3, .. })
        ));
        let past = text.replace(&current, "\"version\":0");
        assert!(matches!(
            decode(&gzip(past.as_bytes()).unwrap()),
            Err(DecodeError::Incompatible { version: 0, .. })
        ));
        assert!(matches!(decode(b"not gzip"), Err(DecodeError::Gzip(_))));
        let tomb = serde_json::to_vec(&Tombstone {
            format: FORMAT,
            version: VERSION,
            adopted_by: "task-b",
            saved_at_s: T0,
            ledger: None,
        })
        .unwrap();
        assert!(matches!(
            decode(&gzip(&tomb).unwrap()),
            Err(DecodeError::Adopted(by)) if by == "task-b"
        ));
        assert_eq!(tombstone_ledger(&gzip(&tomb).unwrap()), None);
        // A running adopter keeps the orphan's ledger in the tombstone (for a lease takeover).
        let ledger: Ledger =
            serde_json::from_str(r#"{"emitted":{"AWS/Lambda|Throttles|f|1800000000":3.0}}"#)
                .unwrap();
        let tomb = serde_json::to_vec(&Tombstone {
            format: FORMAT,
            version: VERSION,
            adopted_by: "task-b",
            saved_at_s: T0,
            ledger: Some(&ledger),
        })
        .unwrap();
        assert!(matches!(
            decode(&gzip(&tomb).unwrap()),
            Err(DecodeError::Adopted(by)) if by == "task-b"
        ));
        assert_eq!(tombstone_ledger(&gzip(&tomb).unwrap()), Some(ledger));
        assert_eq!(
            stale_after(Duration::from_secs(30)),
            Duration::from_secs(65)
        );
        assert!(matches!(
            decode(&gzip(b"{\"format\":\"lambdawatch-checkpoint\",\"version\":1}").unwrap()),
            Err(DecodeError::Json(_))
        ));

        // A layout change (SLO thresholds edited) keeps the alert states, not the counts.
        let mut src = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
        src.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Function {
                    key: key("f"),
                    tags: vec![],
                    instance: String::new(),
                },
                events: vec![inv(T0, Outcome::Error, 10.0)],
            }],
        });
        let doc = decode(&gzip(&to_json(&src, "t", T0, &[], None).unwrap()).unwrap()).unwrap();
        let mut dst = Aggregates::new(Layout::new(&[800.0], &[0.8]), 10);
        let r = restore(doc, &mut dst, &mut AlertStates::default());
        assert!(!r.counts);
        assert!(dst.functions.is_empty());
    }

    /// Rewrites a current document the way checkpoint format 1 stored the same counts: four
    /// rings per series, the minute ring holding the last hour and a ring of 10-minute buckets
    /// for 6 h (both derived from the current 1-minute ring, which holds every minute they
    /// cover), the 1-hour and 12-hour rings unchanged.
    fn as_format_1(doc: &mut serde_json::Value) {
        use serde_json::{Value, json};
        fn expand(v: &Value) -> Vec<u64> {
            let mut out = Vec::new();
            for x in v.as_array().unwrap() {
                let x = x.as_i64().unwrap();
                if x < 0 {
                    out.resize(out.len() + x.unsigned_abs() as usize, 0);
                } else {
                    out.push(x as u64);
                }
            }
            out
        }
        fn walk(v: &mut Value) {
            match v {
                Value::Object(o) if o.contains_key("stride") && o.contains_key("rings") => {
                    let stride = o["stride"].as_u64().unwrap() as usize;
                    let rings = o["rings"].as_array().unwrap().clone();
                    assert_eq!(rings.len(), 3);
                    let m = &rings[0];
                    let data = expand(&m["data"]);
                    let (m1, m10) = match m["head"].as_u64() {
                        None => (
                            json!({"width": 60, "len": 60, "head": null, "data": []}),
                            json!({"width": 600, "len": 36, "head": null, "data": []}),
                        ),
                        Some(head) => {
                            let minute = |i: u64, s: usize| -> u64 {
                                if i + 360 > head && i <= head && !data.is_empty() {
                                    data[(i % 360) as usize * stride + s]
                                } else {
                                    0
                                }
                            };
                            let mut d1 = vec![0u64; 60 * stride];
                            for i in head - 59..=head {
                                for s in 0..stride {
                                    d1[(i % 60) as usize * stride + s] = minute(i, s);
                                }
                            }
                            let h10 = head / 10;
                            let mut d10 = vec![0u64; 36 * stride];
                            for b in h10 - 35..=h10 {
                                for s in 0..stride {
                                    d10[(b % 36) as usize * stride + s] =
                                        (b * 10..b * 10 + 10).map(|i| minute(i, s)).sum();
                                }
                            }
                            (
                                json!({"width": 60, "len": 60, "head": head, "data": d1}),
                                json!({"width": 600, "len": 36, "head": h10, "data": d10}),
                            )
                        }
                    };
                    o.insert(
                        "rings".into(),
                        json!([m1, m10, rings[1].clone(), rings[2].clone()]),
                    );
                }
                Value::Object(o) => o.values_mut().for_each(walk),
                Value::Array(a) => a.iter_mut().for_each(walk),
                _ => {}
            }
        }
        doc["version"] = json!(1);
        walk(doc);
    }

    /// Upgrading: a format-1 checkpoint is read and converted, not dropped. The 30-day budgets
    /// (and every other window, for traffic even within 10-minute buckets, as here) evaluate
    /// exactly as in the collector that wrote it, and the restored rings keep counting.
    /// A checkpoint written before `DestinationDeliveryFailures` was appended to the platform
    /// counters (5 per bucket, 5 totals) restores with its counts intact and the new counter at 0.
    #[test]
    fn checkpoint_with_fewer_platform_counters_is_widened() {
        use serde_json::Value;
        let spec = SloSpec::embedded_default();
        let layout = eval::layout_for(&spec);
        let mut agg = Aggregates::new(layout.clone(), 100);
        traffic(&mut agg);
        let json = to_json(&agg, "task-1", T0, &[], None).unwrap();
        let mut doc: Value = serde_json::from_slice(&json).unwrap();
        fn narrow(v: &mut Value, seen: &mut usize) {
            match v {
                Value::Object(o) if o.contains_key("platform_totals") => {
                    let totals = o["platform_totals"].as_array_mut().unwrap();
                    assert_eq!(totals.len(), PlatformCounter::COUNT);
                    totals.truncate(PlatformCounter::COUNT - 1);
                    if let Some(p) = o.get_mut("platform").filter(|p| !p.is_null()) {
                        *seen += 1;
                        let old = p["stride"].as_u64().unwrap() as usize;
                        assert_eq!(old, PlatformCounter::COUNT);
                        p["stride"] = (old - 1).into();
                        for ring in p["rings"].as_array_mut().unwrap() {
                            let mut data = Vec::new();
                            for x in ring["data"].as_array().unwrap() {
                                let x = x.as_i64().unwrap();
                                if x < 0 {
                                    data.resize(data.len() + x.unsigned_abs() as usize, 0);
                                } else {
                                    data.push(x);
                                }
                            }
                            let narrowed: Vec<i64> = data
                                .chunks(old)
                                .flat_map(|c| c[..old - 1].to_vec())
                                .collect();
                            ring["data"] = narrowed.into();
                        }
                    }
                }
                Value::Object(o) => o.values_mut().for_each(|v| narrow(v, seen)),
                Value::Array(a) => a.iter_mut().for_each(|v| narrow(v, seen)),
                _ => {}
            }
        }
        let mut seen = 0;
        narrow(&mut doc, &mut seen);
        assert!(seen > 0, "the traffic has platform counts");
        let old = serde_json::to_vec(&doc).unwrap();
        let decoded = decode(&gzip(&old).unwrap()).expect("the older checkpoint is read");
        let mut agg_b = Aggregates::new(layout, 100);
        let r = restore(decoded, &mut agg_b, &mut AlertStates::default());
        assert!(r.counts && r.malformed == 0, "{r:?}");
        assert_eq!(r.functions, 3, "{r:?}");
        let now = T0 + 60;
        assert_eq!(
            without_percentiles(eval::evaluate(&spec, &agg, now)),
            without_percentiles(eval::evaluate(&spec, &agg_b, now))
        );
        let ok = &agg_b.functions[&key("ok")];
        assert_eq!(
            ok.platform_totals,
            agg.functions[&key("ok")].platform_totals
        );
        assert!(ok.platform_totals[PlatformCounter::Throttles as usize] > 0);
        assert_eq!(
            ok.platform_totals[PlatformCounter::DestinationDeliveryFailures as usize],
            0
        );
        let p = ok.platform.as_ref().unwrap();
        assert_eq!(p.stride(), PlatformCounter::COUNT);
        assert!(p.is_well_formed(PlatformCounter::COUNT));
    }

    #[test]
    fn format_1_checkpoint_is_converted_keeping_the_budgets() {
        let spec = SloSpec::embedded_default();
        let layout = eval::layout_for(&spec);
        let mut agg = Aggregates::new(layout.clone(), 100);
        // Ten days ago: errors that only the 30-day budget still sees.
        agg.apply(Batch {
            received_s: T0 - 10 * 86_400,
            groups: vec![Group {
                target: Target::Function {
                    key: key("ok"),
                    tags: vec![],
                    instance: "i-1".into(),
                },
                events: (0..30u64)
                    .map(|i| inv(T0 - 10 * 86_400 + i, Outcome::Error, 40.0))
                    .collect(),
            }],
        });
        traffic(&mut agg);
        let json = to_json(&agg, "task-1", T0, &[], None).unwrap();
        let mut doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        as_format_1(&mut doc);
        let v1 = serde_json::to_vec(&doc).unwrap();
        assert!(String::from_utf8_lossy(&v1).contains("\"width\":600"));
        let decoded = decode(&gzip(&v1).unwrap()).expect("format 1 is still read");
        assert_eq!(decoded.version, 1);
        let mut agg_b = Aggregates::new(layout, 100);
        let r = restore(decoded, &mut agg_b, &mut AlertStates::default());
        assert_eq!((r.version, r.functions, r.converted), (1, 3, 3), "{r:?}");
        assert!(r.counts && r.malformed == 0);
        let ok = |ev: &eval::Evaluation| {
            let f = ev.functions.iter().find(|f| f.key == key("ok")).unwrap();
            f.slos
                .iter()
                .find(|s| s.name == "error_rate")
                .unwrap()
                .budget
        };
        for k in 0..400u64 {
            let now = T0 + k * 60;
            if k % 30 == 0 {
                let more: Vec<Event> = (0..3u64)
                    .map(|i| inv(now + i, Outcome::Success, 40.0))
                    .collect();
                for a in [&mut agg, &mut agg_b] {
                    a.apply(Batch {
                        received_s: now,
                        groups: vec![Group {
                            target: Target::Function {
                                key: key("slow"),
                                tags: vec![("team".into(), "slow".into())],
                                instance: "i-1".into(),
                            },
                            events: more.clone(),
                        }],
                    });
                }
            }
            let (a, b) = (
                eval::evaluate(&spec, &agg, now),
                eval::evaluate(&spec, &agg_b, now),
            );
            assert_eq!(ok(&b).bad(), 30, "the 30-day budget keeps the old errors");
            assert_eq!(without_percentiles(a), without_percentiles(b), "+{k} min");
        }
        // Written again, it is a current document.
        let again = to_json(&agg_b, "task-1", T0, &[], None).unwrap();
        let d = decode(&gzip(&again).unwrap()).unwrap();
        assert_eq!(d.version, VERSION);
        let mut agg_c = Aggregates::new(eval::layout_for(&spec), 100);
        let r = restore(d, &mut agg_c, &mut AlertStates::default());
        assert_eq!((r.functions, r.converted), (3, 0));
    }

    #[test]
    fn malformed_series_are_skipped() {
        let layout = Layout::new(&[500.0], &[0.8]);
        let mut src = Aggregates::new(layout.clone(), 10);
        src.apply(Batch {
            received_s: T0,
            groups: vec![Group {
                target: Target::Function {
                    key: key("f"),
                    tags: vec![],
                    instance: String::new(),
                },
                events: vec![inv(T0, Outcome::Success, 10.0)],
            }],
        });
        let json = String::from_utf8(to_json(&src, "t", T0, &[], None).unwrap()).unwrap();
        // Cut the stride of the invocation series: its rings no longer fit it.
        let stride = layout.invocation_stride();
        let bad = json.replacen(&format!("\"stride\":{stride}"), "\"stride\":99", 1);
        assert_ne!(bad, json);
        let doc = decode(&gzip(bad.as_bytes()).unwrap()).unwrap();
        let mut dst = Aggregates::new(layout, 10);
        let r = restore(doc, &mut dst, &mut AlertStates::default());
        assert_eq!((r.functions, r.malformed), (0, 1));
    }

    /// The compressed size of a function with a day of traffic (for the DynamoDB 400 KB limit).
    #[test]
    fn document_size_per_function() {
        let spec = SloSpec::embedded_default();
        let mut agg = Aggregates::new(eval::layout_for(&spec), 2000);
        for i in 0..1000u64 {
            let events = (0..144u64)
                .map(|k| {
                    inv(
                        T0 - 86_400 + k * 600 + i % 600,
                        Outcome::Success,
                        50.0 + k as f64,
                    )
                })
                .collect();
            agg.apply(Batch {
                received_s: T0,
                groups: vec![Group {
                    target: Target::Function {
                        key: key(&format!("fn-{i:04}")),
                        tags: vec![("team".into(), "payments".into())],
                        instance: "i".into(),
                    },
                    events,
                }],
            });
        }
        let started = std::time::Instant::now();
        let json = to_json(&agg, "t", T0, &[], None).unwrap();
        let serialised = started.elapsed();
        let body = gzip(&json).unwrap();
        let per_fn = body.len() / 1000;
        eprintln!(
            "checkpoint: {} B per function as JSON ({serialised:?} for 1,000 functions, this build), {per_fn} B compressed",
            json.len() / 1000
        );
        // A day of traffic touches ~122 of the 229 buckets; the zero runs keep the JSON near that.
        assert!(
            json.len() / 1000 < 2048,
            "{} B per function",
            json.len() / 1000
        );
        // Documented in the module doc: a few hundred bytes, so DynamoDB's 400 KB item holds
        // roughly a thousand functions; S3 beyond.
        assert!(per_fn < 1024, "{per_fn} B per function");
    }

    #[test]
    fn zero_runs_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct R(#[serde(with = "zero_runs")] Vec<u32>);
        for v in [
            vec![],
            vec![0; 7],
            vec![1, 0, 0, 3, u32::MAX, 0],
            vec![0, 0, 5],
        ] {
            let j = serde_json::to_string(&R(v.clone())).unwrap();
            assert_eq!(serde_json::from_str::<R>(&j).unwrap(), R(v));
        }
        assert_eq!(serde_json::to_string(&R(vec![0; 1374])).unwrap(), "[-1374]");
        assert!(serde_json::from_str::<R>("[-9999999999]").is_err());
        assert!(serde_json::from_str::<R>("[4294967296]").is_err());
    }

    #[test]
    fn checkpoint_locations_and_task_ids_parse() {
        use crate::config::{CheckpointLocation as L, ecs_task_id};
        assert_eq!(
            "dynamodb://ckpt".parse::<L>().unwrap(),
            L::DynamoDb {
                table: "ckpt".into()
            }
        );
        assert_eq!(
            "s3://b/lw/ckpt/".parse::<L>().unwrap(),
            L::S3 {
                bucket: "b".into(),
                prefix: "lw/ckpt/".into()
            }
        );
        assert_eq!(
            "s3://b".parse::<L>().unwrap(),
            L::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert!("redis://x".parse::<L>().is_err());
        assert!("dynamodb://".parse::<L>().is_err());
        assert_eq!(
            ecs_task_id("http://169.254.170.2/v4/1f1ac0ff3f5b4c6e9a3b0b3ef1c0a1c8-3681984407")
                .as_deref(),
            Some("1f1ac0ff3f5b4c6e9a3b0b3ef1c0a1c8")
        );
        assert_eq!(ecs_task_id("http://169.254.170.2/v4/abc"), None);
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "ECS_CONTAINER_METADATA_URI_V4" => {
                Some("http://169.254.170.2/v4/1f1ac0ff3f5b4c6e9a3b0b3ef1c0a1c8-1".into())
            }
            "LAMBDAWATCH_CHECKPOINT" => Some("dynamodb://t".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.task_id.as_deref(),
            Some("1f1ac0ff3f5b4c6e9a3b0b3ef1c0a1c8")
        );
        assert_eq!(task_id(&c), "1f1ac0ff3f5b4c6e9a3b0b3ef1c0a1c8");
        c.apply_env(|k| (k == "LAMBDAWATCH_TASK_ID").then(|| "slot-a".into()))
            .unwrap();
        assert_eq!(task_id(&c), "slot-a");
        assert!(
            c.apply_env(|k| (k == "LAMBDAWATCH_CHECKPOINT").then(|| "ftp://x".into()))
                .is_err()
        );
    }
}
