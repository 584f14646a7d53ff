//! The SLO spec: what the operator promises, per function, in YAML (documented in
//! `docs/slo-spec.md`, schema in `docs/slo-spec.schema.json`).
//!
//! Consumes: a YAML text (`--slo FILE`, `validate FILE`, `rules FILE`) or nothing
//! ([`SloSpec::embedded_default`]). Produces: a checked [`SloSpec`] that the evaluator
//! (`slo::*`), the alerting stage and the rule generator (`crate::rules`) all read, so the
//! built-in evaluation and the generated Prometheus rules cannot disagree on objectives, windows,
//! burn factors or the low-traffic guard. A spec that fails any check is rejected whole, with
//! every problem listed as `file:line:col: message` ([`SpecErrors`]).
//!
//! Shape (OpenSLO-like where it is cheap: a `name`, an SLI `type`, an `objective`, a `window`):
//!
//! ```yaml
//! version: 1
//! defaults:
//!   min_events_per_hour: 60        # low-traffic guard
//!   no_data_after: 1h
//!   runbook_base_url: https://github.com/lambdawatch/lambdawatch/blob/main/docs/runbooks
//!   burn_rules:                    # SRE Workbook multi-window, multi-burn-rate
//!     - {severity: page,   factor: 14.4, long: 1h, short: 5m}
//!     - {severity: page,   factor: 6,    long: 6h, short: 30m}
//!     - {severity: ticket, factor: 1,    long: 3d, short: 6h}
//! slos:
//!   - name: cold_start
//!     selector: {function: "checkout-*", tags: {team: payments}}
//!     sli: {type: cold_start, threshold: 500ms, init_types: [on-demand]}
//!     objective: 0.99
//!     window: 30d
//! ```

mod duration;
mod glob;
mod locate;

pub use duration::{
    PATTERN as DURATION_PATTERN, format as format_duration, parse as parse_duration,
};
pub use glob::Glob;

use crate::alerting::alert::RunbookPage;
use locate::{Locator, Seg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The only spec version this build reads.
pub const SPEC_VERSION: u32 = 1;
/// Lambda cuts an on-demand init phase off at 10 s (it is then retried inside the first invoke).
pub const INIT_PHASE_LIMIT: Duration = Duration::from_secs(10);
/// The longest SLO window the collector's aggregation answers.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// The shortest SLO window accepted (the ticket rule looks back 3 days).
pub const MIN_WINDOW: Duration = Duration::from_secs(86_400);
/// Burn-rate windows are whole minutes, at least one.
pub const MIN_BURN_WINDOW: Duration = Duration::from_secs(60);
/// The shortest no-data period accepted.
pub const MIN_NO_DATA_AFTER: Duration = Duration::from_secs(5 * 60);
/// Default low-traffic guard: a burn-rate alert needs this many valid events per hour of its
/// long window (60 → ≥ 60 events in the last hour for the 1 h rule).
pub const DEFAULT_MIN_EVENTS_PER_HOUR: u64 = 60;
/// Default silence after which a reporting function raises the no-data alert.
pub const DEFAULT_NO_DATA_AFTER: Duration = Duration::from_secs(3600);
/// Default base of every `runbook_url`.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    "https://github.com/lambdawatch/lambdawatch/blob/main/docs/runbooks";
/// How far back the no-data rule looks for "was reporting": a function that averaged at least
/// one invocation per `no_data_after` over this long, then went silent for `no_data_after`.
pub const NO_DATA_LOOKBACK: Duration = Duration::from_secs(3 * 86_400);
/// Default SLO window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Default fraction of the timeout for the timeout-budget SLI.
pub const DEFAULT_TIMEOUT_FRACTION: f64 = 0.8;
/// Labels the collector sets itself; a spec may not set them in `labels`.
pub const RESERVED_LABELS: [&str; 8] = [
    "alertname",
    "function",
    "version",
    "region",
    "account",
    "slo",
    "severity",
    "window",
];

// ───────────────────────────── types ─────────────────────────────

/// A whole spec file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Must be [`SPEC_VERSION`].
    pub version: u32,
    /// Settings shared by every SLO.
    #[serde(default)]
    pub defaults: Defaults,
    /// The objectives; several may apply to one function.
    pub slos: Vec<SloDef>,
}

/// Settings shared by every SLO of a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Low-traffic guard: a burn-rate rule may fire only when its long window holds at least
    /// `min_events_per_hour × long-window hours` valid events (0 turns the guard off).
    pub min_events_per_hour: u64,
    /// A function that had traffic and then reports nothing for this long raises the no-data
    /// alert (`null` turns it off).
    #[serde(with = "duration::serde_opt_str")]
    pub no_data_after: Option<Duration>,
    /// `runbook_url` = `{runbook_base_url}/{page}.md`.
    pub runbook_base_url: String,
    /// Multi-window, multi-burn-rate rules for every ratio SLI.
    pub burn_rules: Vec<BurnRule>,
}

/// How loud an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Look at it during working hours.
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One multi-window burn-rate rule: fire when the burn rate over **both** `long` and `short`
/// exceeds `factor` (and the long window passes the low-traffic guard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRule {
    pub severity: Severity,
    /// Burn-rate threshold: 1 spends exactly the budget over the SLO window.
    pub factor: f64,
    #[serde(with = "duration::serde_str")]
    pub long: Duration,
    #[serde(with = "duration::serde_str")]
    pub short: Duration,
}

impl BurnRule {
    /// Fraction of the SLO window's budget this rule has spent when it first fires:
    /// `factor × long / window` (2 % for 14.4× over 1 h of 30 d).
    pub fn budget_spent_at_fire(&self, window: Duration) -> f64 {
        self.factor * self.long.as_secs_f64() / window.as_secs_f64()
    }
}

/// One objective over the functions its selector matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloDef {
    /// `[a-z][a-z0-9_]*`, unique in the spec; the `slo` label of every series and alert.
    pub name: String,
    /// Free text, shown in alert descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which functions; omitted = every function.
    #[serde(default)]
    pub selector: Selector,
    /// What is measured.
    pub sli: Sli,
    /// Ratio SLIs: the target good/valid ratio, 0 < x < 1 (0.999). `throttles`: the count budget
    /// per window (5 = "fewer than 5 throttles in 30 days").
    pub objective: f64,
    /// The error-budget window.
    #[serde(default = "default_window", with = "duration::serde_str")]
    pub window: Duration,
    /// Extra labels on this SLO's alerts (not the reserved ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_window() -> Duration {
    DEFAULT_WINDOW
}

/// Which functions an SLO applies to. Every given part must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Function name glob (default `*`).
    #[serde(default = "match_all")]
    pub function: Glob,
    /// Version or alias glob (`$LATEST`, `live`, `4*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Glob>,
    /// Resource attributes (`OTEL_RESOURCE_ATTRIBUTES`, e.g. `team=payments`) → glob. Not
    /// expressible in Prometheus rules (the metrics carry no tags): `rules` refuses them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Glob>,
}

fn match_all() -> Glob {
    Glob::new("*").unwrap_or_else(|_| unreachable!("'*' is a valid glob"))
}

impl Default for Selector {
    fn default() -> Self {
        Self {
            function: match_all(),
            version: None,
            region: None,
            account: None,
            tags: BTreeMap::new(),
        }
    }
}

/// Where a selector looks up tags: the function's resource attributes.
pub trait TagSource {
    fn tag(&self, key: &str) -> Option<&str>;
}

impl TagSource for BTreeMap<String, String> {
    fn tag(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> TagSource for HashMap<String, String, S> {
    fn tag(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl TagSource for [(&str, &str)] {
    fn tag(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Selector {
    /// True when every given glob matches; a tag the function lacks does not match.
    pub fn matches<T: TagSource + ?Sized>(
        &self,
        function: &str,
        version: &str,
        region: &str,
        account: &str,
        tags: &T,
    ) -> bool {
        let opt = |glob: &Option<Glob>, value: &str| glob.as_ref().is_none_or(|g| g.matches(value));
        self.function.matches(function)
            && opt(&self.version, version)
            && opt(&self.region, region)
            && opt(&self.account, account)
            && self
                .tags
                .iter()
                .all(|(key, glob)| tags.tag(key).is_some_and(|v| glob.matches(v)))
    }
}

/// Lambda init types a cold-start SLI can count (`aws.lambda.init_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitType {
    OnDemand,
    ProvisionedConcurrency,
    SnapStart,
    LambdaManagedInstances,
}

impl InitType {
    pub const ALL: [InitType; 4] = [
        InitType::OnDemand,
        InitType::ProvisionedConcurrency,
        InitType::SnapStart,
        InitType::LambdaManagedInstances,
    ];

    /// The attribute / label value.
    pub fn as_str(self) -> &'static str {
        match self {
            InitType::OnDemand => "on-demand",
            InitType::ProvisionedConcurrency => "provisioned-concurrency",
            InitType::SnapStart => "snap-start",
            InitType::LambdaManagedInstances => "lambda-managed-instances",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

fn default_init_types() -> Vec<InitType> {
    vec![InitType::OnDemand]
}

/// What an SLO measures. Good / valid events per SLI:
///
/// | type | valid events | good events | objective |
/// |---|---|---|---|
/// | `cold_start` | inits of the listed `init_types` | those with duration ≤ `threshold` | ratio |
/// | `error_rate` | completed invocations | outcome `success` | ratio |
/// | `dlq_ratio` | async events received | not dead-lettered | ratio |
/// | `throttles` | — | — | count budget per window |
/// | `timeout_budget` | completed invocations | duration ≤ `fraction` × timeout | ratio |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "RawSli")]
pub enum Sli {
    ColdStart {
        #[serde(with = "duration::serde_str")]
        threshold: Duration,
        init_types: Vec<InitType>,
    },
    ErrorRate,
    DlqRatio,
    Throttles,
    TimeoutBudget {
        fraction: f64,
    },
}

/// Prefix of conversion errors raised inside `sli` (`sli.<key>: message`): serde_yaml reports
/// them at the enclosing SLO, so [`SpecErrors::from_yaml`] moves them to the key's own line.
const SLI_ERROR_MARK: &str = "\u{1}sli.";

/// The SLI mapping as written: one flat struct, so serde_yaml reports unknown keys at their own
/// line (an internally tagged enum buffers its content and loses positions), then converted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSli {
    #[serde(rename = "type")]
    kind: SliType,
    #[serde(default, with = "duration::serde_opt_str")]
    threshold: Option<Duration>,
    init_types: Option<Vec<InitType>>,
    fraction: Option<f64>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SliType {
    ColdStart,
    ErrorRate,
    DlqRatio,
    Throttles,
    TimeoutBudget,
}

impl TryFrom<RawSli> for Sli {
    type Error = String;

    fn try_from(raw: RawSli) -> Result<Self, String> {
        let name = |k: SliType| match k {
            SliType::ColdStart => "cold_start",
            SliType::ErrorRate => "error_rate",
            SliType::DlqRatio => "dlq_ratio",
            SliType::Throttles => "throttles",
            SliType::TimeoutBudget => "timeout_budget",
        };
        let not_for = |key: &str, k: SliType| {
            Err(format!(
                "{SLI_ERROR_MARK}{key}: `{key}` does not apply to an SLI of type {}",
                name(k)
            ))
        };
        match raw.kind {
            SliType::ColdStart => {
                if raw.fraction.is_some() {
                    return not_for("fraction", raw.kind);
                }
                let threshold = raw
                    .threshold
                    .ok_or_else(|| format!("{SLI_ERROR_MARK}threshold: missing field `threshold` (cold_start needs one, e.g. 500ms)"))?;
                Ok(Sli::ColdStart {
                    threshold,
                    init_types: raw.init_types.unwrap_or_else(default_init_types),
                })
            }
            SliType::TimeoutBudget => {
                if raw.threshold.is_some() {
                    return not_for("threshold", raw.kind);
                }
                if raw.init_types.is_some() {
                    return not_for("init_types", raw.kind);
                }
                Ok(Sli::TimeoutBudget {
                    fraction: raw.fraction.unwrap_or(DEFAULT_TIMEOUT_FRACTION),
                })
            }
            kind => {
                if raw.threshold.is_some() {
                    return not_for("threshold", kind);
                }
                if raw.init_types.is_some() {
                    return not_for("init_types", kind);
                }
                if raw.fraction.is_some() {
                    return not_for("fraction", kind);
                }
                Ok(match kind {
                    SliType::ErrorRate => Sli::ErrorRate,
                    SliType::DlqRatio => Sli::DlqRatio,
                    _ => Sli::Throttles,
                })
            }
        }
    }
}

impl Sli {
    /// The `type` value as written in the spec.
    pub fn type_name(&self) -> &'static str {
        match self {
            Sli::ColdStart { .. } => "cold_start",
            Sli::ErrorRate => "error_rate",
            Sli::DlqRatio => "dlq_ratio",
            Sli::Throttles => "throttles",
            Sli::TimeoutBudget { .. } => "timeout_budget",
        }
    }

    /// True for `throttles`, whose objective is a count budget alerted on budget consumed
    /// instead of burn rate.
    pub fn is_count_budget(&self) -> bool {
        matches!(self, Sli::Throttles)
    }

    /// The runbook page for this SLI's alerts.
    pub fn runbook_page(&self) -> RunbookPage {
        match self {
            Sli::ColdStart { .. } => RunbookPage::ColdStart,
            Sli::ErrorRate => RunbookPage::ErrorRate,
            Sli::DlqRatio => RunbookPage::Dlq,
            Sli::Throttles => RunbookPage::Throttles,
            Sli::TimeoutBudget { .. } => RunbookPage::TimeoutBudget,
        }
    }
}

impl SloDef {
    /// Error budget as a fraction of valid events (1 − objective); for `throttles`, the count.
    pub fn error_budget(&self) -> f64 {
        if self.sli.is_count_budget() {
            self.objective
        } else {
            1.0 - self.objective
        }
    }

    /// Burn rate for `bad` of `valid` events: (bad / valid) / (1 − objective). `None` when
    /// there are no valid events or the SLI is a count budget.
    pub fn burn_rate(&self, bad: u64, valid: u64) -> Option<f64> {
        if valid == 0 || self.sli.is_count_budget() {
            return None;
        }
        Some((bad as f64 / valid as f64) / (1.0 - self.objective))
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            min_events_per_hour: DEFAULT_MIN_EVENTS_PER_HOUR,
            no_data_after: Some(DEFAULT_NO_DATA_AFTER),
            runbook_base_url: DEFAULT_RUNBOOK_BASE_URL.to_owned(),
            burn_rules: default_burn_rules(),
        }
    }
}

impl Defaults {
    /// `{runbook_base_url}/{page}.md`.
    pub fn runbook_url(&self, page: RunbookPage) -> String {
        format!(
            "{}/{}.md",
            self.runbook_base_url.trim_end_matches('/'),
            page.as_str()
        )
    }

    /// Valid events the long window must hold before a rule may fire.
    pub fn min_events_for(&self, long: Duration) -> u64 {
        let per_hour = self.min_events_per_hour as f64;
        (per_hour * long.as_secs_f64() / 3600.0).ceil() as u64
    }
}

/// The SRE Workbook set: page 14.4× over 1 h & 5 m, page 6× over 6 h & 30 m, ticket 1× over
/// 3 d & 6 h.
pub fn default_burn_rules() -> Vec<BurnRule> {
    let rule = |severity, factor, long_s, short_s| BurnRule {
        severity,
        factor,
        long: Duration::from_secs(long_s),
        short: Duration::from_secs(short_s),
    };
    vec![
        rule(Severity::Page, 14.4, 3600, 300),
        rule(Severity::Page, 6.0, 6 * 3600, 1800),
        rule(Severity::Ticket, 1.0, 3 * 86_400, 6 * 3600),
    ]
}

impl SloSpec {
    /// The five default objectives on every function: cold start 99 % ≤ 500 ms (on-demand),
    /// error rate ≤ 0.1 %, DLQ ≤ 0.01 %, fewer than 5 throttles per 30 days, 99 % of
    /// invocations within 80 % of their timeout.
    pub fn embedded_default() -> Self {
        let slo = |name: &str, sli: Sli, objective: f64| SloDef {
            name: name.to_owned(),
            description: None,
            selector: Selector::default(),
            sli,
            objective,
            window: DEFAULT_WINDOW,
            labels: BTreeMap::new(),
        };
        Self {
            version: SPEC_VERSION,
            defaults: Defaults::default(),
            slos: vec![
                slo(
                    "cold_start",
                    Sli::ColdStart {
                        threshold: Duration::from_millis(500),
                        init_types: default_init_types(),
                    },
                    0.99,
                ),
                slo("error_rate", Sli::ErrorRate, 0.999),
                slo("dlq_ratio", Sli::DlqRatio, 0.9999),
                slo("throttles", Sli::Throttles, 5.0),
                slo(
                    "timeout_budget",
                    Sli::TimeoutBudget {
                        fraction: DEFAULT_TIMEOUT_FRACTION,
                    },
                    0.99,
                ),
            ],
        }
    }

    /// Parses and checks a spec. Syntax and type errors (serde) stop at the first; semantic
    /// checks report every problem at once.
    pub fn from_yaml_str(text: &str) -> Result<SloSpec, SpecErrors> {
        let spec: SloSpec = match serde_yaml::from_str(text) {
            Ok(spec) => spec,
            Err(err) => return Err(SpecErrors::from_serde(&err, text)),
        };
        let problems = check(&spec);
        if problems.is_empty() {
            return Ok(spec);
        }
        let locator = Locator::new(text);
        let errors = problems
            .into_iter()
            .map(|(path, message)| {
                let pos = locator.locate(&path);
                SpecError {
                    line: pos.line,
                    column: pos.column,
                    path: locate::render(&path),
                    message,
                }
            })
            .collect();
        Err(SpecErrors { file: None, errors })
    }

    /// The spec as YAML (for `docs`, `--print-default`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render spec: {e}\n"))
    }

    /// Every cold-start threshold, sorted and deduplicated: the init-duration histogram must have
    /// a bucket boundary at each (Contract 2), rendered with [`prometheus_le`].
    pub fn cold_start_thresholds(&self) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .slos
            .iter()
            .filter_map(|s| match &s.sli {
                Sli::ColdStart { threshold, .. } => Some(*threshold),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The timeout-budget fraction the collector must split
    /// `lambdawatch_invocation_timeout_budget_total{within}` at. A spec has at most one (checked).
    pub fn timeout_budget_fraction(&self) -> f64 {
        self.slos
            .iter()
            .find_map(|s| match s.sli {
                Sli::TimeoutBudget { fraction } => Some(fraction),
                _ => None,
            })
            .unwrap_or(DEFAULT_TIMEOUT_FRACTION)
    }

    /// The SLOs that apply to one function.
    pub fn slos_for<'a, T: TagSource + ?Sized>(
        &'a self,
        function: &'a str,
        version: &'a str,
        region: &'a str,
        account: &'a str,
        tags: &'a T,
    ) -> impl Iterator<Item = &'a SloDef> + 'a {
        self.slos
            .iter()
            .filter(move |s| s.selector.matches(function, version, region, account, tags))
    }
}

/// A duration as a Prometheus `le` label value (`0.5` for 500 ms, `1` for 1 s): the exporter
/// renders bucket bounds with this and the rules select them with it, so they always agree.
pub fn prometheus_le(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    format!("{seconds}")
}

/// Reads, parses and checks a spec file; errors carry the file name.
pub fn validate_file(path: &Path) -> Result<SloSpec, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecErrors {
        file: Some(file.clone()),
        errors: vec![SpecError {
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    SloSpec::from_yaml_str(&text).map_err(|mut e| {
        e.file = Some(file);
        e
    })
}

// ───────────────────────────── errors ─────────────────────────────

/// One problem in a spec, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecError {
    /// 1-based; 0 when the problem is not in the text (e.g. an unreadable file).
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// `slos[2].sli.threshold` (may be empty for syntax errors).
    pub path: String,
    pub message: String,
}

/// Every problem found; `Display` prints one `file:line:col: message` per line.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecErrors {
    /// The file name, when read from a file.
    pub file: Option<String>,
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    fn from_serde(err: &serde_yaml::Error, text: &str) -> Self {
        let (mut line, mut column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        // serde_yaml appends " at line L column C" to its message; the position is ours to print.
        let mut message = err.to_string();
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        let (mut path, mut rest) = match message.split_once(": ") {
            Some((path, rest)) if looks_like_path(path) => (path.to_owned(), rest.to_owned()),
            _ => (String::new(), message.clone()),
        };
        // An SLI conversion error: `<mark>sli.<key>: message`, positioned at the enclosing SLO.
        if let Some((field, msg)) = rest
            .strip_prefix(SLI_ERROR_MARK)
            .and_then(|marked| marked.split_once(": "))
        {
            {
                let mut segs = locate::parse_path(&path);
                segs.push(Seg::Key("sli".to_owned()));
                segs.push(Seg::Key(field.to_owned()));
                let pos = Locator::new(text).locate(&segs);
                line = pos.line;
                column = pos.column;
                segs.pop();
                path = locate::render(&segs);
                rest = msg.to_owned();
            }
        }
        let message = if path.is_empty() {
            rest
        } else {
            format!("{path}: {rest}")
        };
        Self {
            file: None,
            errors: vec![SpecError {
                line,
                column,
                path,
                message,
            }],
        }
    }
}

fn looks_like_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("<spec>");
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{file}:{}:{}: {}", e.line, e.column, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

// ───────────────────────────── semantic checks ─────────────────────────────

type Problem = (Vec<Seg>, String);

fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

fn path(parts: &[Seg]) -> Vec<Seg> {
    parts.to_vec()
}

fn whole_minutes(d: Duration) -> bool {
    d.as_millis().is_multiple_of(60_000)
}

/// Every semantic rule the spec must satisfy (documented in `docs/slo-spec.md` § Checks).
fn check(spec: &SloSpec) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    if spec.version != SPEC_VERSION {
        out.push((
            path(&[key("version")]),
            format!(
                "version {} is not supported (this build reads version {SPEC_VERSION})",
                spec.version
            ),
        ));
    }
    check_defaults(&spec.defaults, &mut out);
    if spec.slos.is_empty() {
        out.push((
            path(&[key("slos")]),
            "no SLOs: the list is empty".to_owned(),
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut fraction: Option<(usize, f64)> = None;
    for (i, slo) in spec.slos.iter().enumerate() {
        let at = |parts: &[Seg]| {
            let mut p = vec![key("slos"), Seg::Index(i)];
            p.extend_from_slice(parts);
            p
        };
        if !valid_name(&slo.name) {
            out.push((
                at(&[key("name")]),
                format!(
                    "name {:?} must match [a-z][a-z0-9_]* (it becomes the `slo` label)",
                    slo.name
                ),
            ));
        }
        if let Some(first) = names.insert(&slo.name, i) {
            out.push((
                at(&[key("name")]),
                format!("duplicate SLO name {:?} (also slos[{first}])", slo.name),
            ));
            names.insert(&spec.slos[first].name, first);
        }
        check_window(slo, &spec.defaults, &at, &mut out);
        check_objective(slo, &spec.defaults, &at, &mut out);
        check_sli(slo, &at, &mut out);
        if let Sli::TimeoutBudget { fraction: f } = slo.sli {
            match fraction {
                Some((first, seen)) if seen != f => out.push((
                    at(&[key("sli"), key("fraction")]),
                    format!(
                        "timeout-budget fraction {f} differs from slos[{first}]'s {seen}: the collector \
                         exports one split (lambdawatch_invocation_timeout_budget_total{{within}}), so \
                         every timeout_budget SLO in a spec must use the same fraction"
                    ),
                )),
                Some(_) => {}
                None => fraction = Some((i, f)),
            }
        }
        for label in slo.labels.keys() {
            if !valid_label_name(label) {
                out.push((
                    at(&[key("labels"), key(label)]),
                    format!("label name {label:?} is not a valid Prometheus label name"),
                ));
            } else if RESERVED_LABELS.contains(&label.as_str()) {
                out.push((
                    at(&[key("labels"), key(label)]),
                    format!("label {label:?} is set by the collector and cannot be overridden"),
                ));
            }
        }
        for tag in slo.selector.tags.keys() {
            if tag.is_empty() {
                out.push((
                    at(&[key("selector"), key("tags")]),
                    "empty tag name".to_owned(),
                ));
            }
        }
    }
    out
}

fn check_defaults(d: &Defaults, out: &mut Vec<Problem>) {
    let at = |parts: &[Seg]| {
        let mut p = vec![key("defaults")];
        p.extend_from_slice(parts);
        p
    };
    if let Some(after) = d.no_data_after
        && (after < MIN_NO_DATA_AFTER || !whole_minutes(after))
    {
        {
            out.push((
                at(&[key("no_data_after")]),
                format!(
                    "no_data_after {} must be whole minutes and at least {} (or null to turn the \
                     no-data alert off)",
                    duration::format(after),
                    duration::format(MIN_NO_DATA_AFTER)
                ),
            ));
        }
    }
    let url = d.runbook_base_url.as_str();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        out.push((
            at(&[key("runbook_base_url")]),
            format!("runbook_base_url {url:?} must be an http(s) URL without spaces"),
        ));
    }
    if d.burn_rules.is_empty() {
        out.push((
            at(&[key("burn_rules")]),
            "burn_rules is empty: no ratio SLO could ever alert".to_owned(),
        ));
    }
    let mut seen: Vec<(Severity, Duration, Duration)> = Vec::new();
    for (i, rule) in d.burn_rules.iter().enumerate() {
        let at_rule = |k: &str| at(&[key("burn_rules"), Seg::Index(i), key(k)]);
        if !rule.factor.is_finite() || rule.factor <= 0.0 {
            out.push((
                at_rule("factor"),
                format!("factor {} must be a positive number", rule.factor),
            ));
        }
        for (name, window) in [("long", rule.long), ("short", rule.short)] {
            if window < MIN_BURN_WINDOW || !whole_minutes(window) {
                out.push((
                    at_rule(name),
                    format!(
                        "{name} window {} must be whole minutes and at least 1m",
                        duration::format(window)
                    ),
                ));
            }
        }
        if rule.short >= rule.long {
            out.push((
                at_rule("short"),
                format!(
                    "short window {} must be shorter than the long window {} (the short window only \
                     confirms the burn is still happening)",
                    duration::format(rule.short),
                    duration::format(rule.long)
                ),
            ));
        }
        let id = (rule.severity, rule.long, rule.short);
        if seen.contains(&id) {
            out.push((
                at(&[key("burn_rules"), Seg::Index(i)]),
                format!(
                    "duplicate burn rule: {} over {} & {} appears twice",
                    rule.severity,
                    duration::format(rule.long),
                    duration::format(rule.short)
                ),
            ));
        }
        seen.push(id);
    }
}

fn check_window(
    slo: &SloDef,
    defaults: &Defaults,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    out: &mut Vec<Problem>,
) {
    let w = slo.window;
    if w < MIN_WINDOW || w > MAX_WINDOW || !whole_minutes(w) {
        out.push((
            at(&[key("window")]),
            format!(
                "window {} must be whole minutes between {} and {} (the collector keeps 30 days)",
                duration::format(w),
                duration::format(MIN_WINDOW),
                duration::format(MAX_WINDOW)
            ),
        ));
        return;
    }
    if slo.sli.is_count_budget() {
        return;
    }
    for rule in &defaults.burn_rules {
        if rule.long > w {
            out.push((
                at(&[key("window")]),
                format!(
                    "window {} is shorter than the {} burn rule's long window {}",
                    duration::format(w),
                    rule.severity,
                    duration::format(rule.long)
                ),
            ));
        }
    }
}

fn check_objective(
    slo: &SloDef,
    defaults: &Defaults,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    out: &mut Vec<Problem>,
) {
    let o = slo.objective;
    let here = at(&[key("objective")]);
    if !o.is_finite() {
        out.push((here, format!("objective {o} is not a number")));
        return;
    }
    if slo.sli.is_count_budget() {
        if o < 1.0 || o.fract() != 0.0 {
            out.push((
                here,
                format!(
                    "objective {o} for throttles is a count budget per window and must be a whole \
                     number ≥ 1 (1 alerts on the first throttle)"
                ),
            ));
        }
        return;
    }
    if o <= 0.0 || o >= 1.0 {
        out.push((
            here,
            format!(
                "objective {o} must be a ratio strictly between 0 and 1 (e.g. 0.999 for 99.9 %)"
            ),
        ));
        return;
    }
    // The highest burn rate possible is when every event is bad: 1 / (1 − objective), computed
    // with the same float operations as the evaluator and the rules, so "can it ever fire?" is
    // answered exactly as they will answer it (20× at 95 % is 19.999…: it cannot).
    let max_burn = 1.0 / (1.0 - o);
    for rule in &defaults.burn_rules {
        if rule.factor.is_finite() && max_burn < rule.factor {
            out.push((
                here.clone(),
                format!(
                    "objective {o} can never fire the {} rule (factor {} over {} & {}): even with \
                     every event bad the burn rate is only {max_burn}; raise the objective above \
                     {:.6} or lower the factor",
                    rule.severity,
                    rule.factor,
                    duration::format(rule.long),
                    duration::format(rule.short),
                    1.0 - 1.0 / rule.factor
                ),
            ));
        }
    }
}

fn check_sli(slo: &SloDef, at: &dyn Fn(&[Seg]) -> Vec<Seg>, out: &mut Vec<Problem>) {
    match &slo.sli {
        Sli::ColdStart {
            threshold,
            init_types,
        } => {
            let here = at(&[key("sli"), key("threshold")]);
            if threshold.is_zero() {
                out.push((
                    here,
                    "threshold 0s: every cold start would be bad".to_owned(),
                ));
            } else if *threshold >= INIT_PHASE_LIMIT {
                out.push((
                    here,
                    format!(
                        "threshold {} can never fire: Lambda stops an init phase at {} (a longer init \
                         fails and is retried inside the invoke), so no recorded init exceeds it",
                        duration::format(*threshold),
                        duration::format(INIT_PHASE_LIMIT)
                    ),
                ));
            } else if threshold.as_nanos() % 1_000_000 != 0 {
                out.push((here, "threshold must be whole milliseconds".to_owned()));
            }
            if init_types.is_empty() {
                out.push((
                    at(&[key("sli"), key("init_types")]),
                    "init_types is empty: no cold start would ever count".to_owned(),
                ));
            }
            let mut sorted = init_types.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != init_types.len() {
                out.push((
                    at(&[key("sli"), key("init_types")]),
                    "init_types lists a type twice".to_owned(),
                ));
            }
        }
        Sli::TimeoutBudget { fraction } => {
            if !fraction.is_finite() || *fraction <= 0.0 || *fraction >= 1.0 {
                out.push((
                    at(&[key("sli"), key("fraction")]),
                    format!(
                        "fraction {fraction} must be strictly between 0 and 1: no invocation runs \
                         past its timeout, so at 1 or more the SLI can never fire"
                    ),
                ));
            }
        }
        Sli::ErrorRate | Sli::DlqRatio | Sli::Throttles => {}
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests;
