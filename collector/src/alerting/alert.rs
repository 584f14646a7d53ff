//! The alert payload every sink receives.
//!
//! Produced by the alert state machine (`alerting::*`, owned by the evaluator) from an SLO's
//! evaluation; consumed by `alerting::sinks` (Alertmanager, webhook, log, later SNS), which only
//! render it. An [`Alert`] says what fired, for which function, and why: the [`Evidence`] holds the
//! SLI, both burn rates and windows, the budget consumed, the time to exhaustion and the raw event
//! counts behind them, so a receiver can check the maths without querying anything.
//!
//! Identity: the [`Fingerprint`] is a hash of (SLO name, function key, severity) and nothing
//! else, so every re-send and the final resolve of one incident carry the same fingerprint.

use crate::slo::spec::{Severity, Sli, SloDef};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

/// `alertname` of the no-data alert.
pub const NO_DATA_ALERT_NAME: &str = "LambdawatchNoData";
/// `slo` label of the no-data alert.
pub const NO_DATA_SLO: &str = "no_data";
/// `alertname` of the pipeline-drops alert (generated Prometheus rules only: the collector cannot
/// page on its own losses reliably, Prometheus watches it from outside).
pub const PIPELINE_DROPS_ALERT_NAME: &str = "LambdawatchPipelineDrops";
/// `slo` label of the pipeline-drops alert.
pub const PIPELINE_DROPS_SLO: &str = "pipeline_drops";

/// The `alertname` for an SLI's alerts (burn rate, or budget consumed for throttles). The
/// generated Prometheus rules use the same names.
pub fn alert_name(sli: &Sli) -> &'static str {
    match sli {
        Sli::ColdStart { .. } => "LambdawatchColdStartBudgetBurn",
        Sli::ErrorRate => "LambdawatchErrorBudgetBurn",
        Sli::DlqRatio => "LambdawatchDeadLetterBudgetBurn",
        Sli::Throttles => "LambdawatchThrottleBudgetExhausted",
        Sli::TimeoutBudget { .. } => "LambdawatchTimeoutBudgetBurn",
    }
}

/// The runbook pages in `docs/runbooks/` (`{page}.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunbookPage {
    ColdStart,
    ErrorRate,
    Dlq,
    Throttles,
    TimeoutBudget,
    NoData,
    PipelineDrops,
    Cost,
    RetryStorm,
}

impl RunbookPage {
    pub const ALL: [RunbookPage; 9] = [
        RunbookPage::ColdStart,
        RunbookPage::ErrorRate,
        RunbookPage::Dlq,
        RunbookPage::Throttles,
        RunbookPage::TimeoutBudget,
        RunbookPage::NoData,
        RunbookPage::PipelineDrops,
        RunbookPage::Cost,
        RunbookPage::RetryStorm,
    ];

    /// The file stem: `cold-start` for `docs/runbooks/cold-start.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunbookPage::ColdStart => "cold-start",
            RunbookPage::ErrorRate => "error-rate",
            RunbookPage::Dlq => "dlq",
            RunbookPage::Throttles => "throttles",
            RunbookPage::TimeoutBudget => "timeout-budget",
            RunbookPage::NoData => "no-data",
            RunbookPage::PipelineDrops => "pipeline-drops",
            RunbookPage::Cost => "cost",
            RunbookPage::RetryStorm => "retry-storm",
        }
    }
}

/// The per-function key, as the labels spell it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FunctionLabels {
    pub function: String,
    pub version: String,
    pub region: String,
    pub account: String,
}

/// Stable identity of an incident: hex of the first 8 bytes of
/// SHA-256(slo ␀ function ␀ version ␀ region ␀ account ␀ severity).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn compute(slo: &str, function: &FunctionLabels, severity: Severity) -> Self {
        let mut hasher = Sha256::new();
        for part in [
            slo,
            &function.function,
            &function.version,
            &function.region,
            &function.account,
            severity.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let digest = hasher.finalize();
        Self(hex(&digest[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fingerprint read back from a checkpoint: 16 lower-case hex digits, else `None`.
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Why the alert fired: enough to re-check the maths by hand.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    /// Good / valid over the long window (for throttles: the count over the SLO window).
    pub sli: f64,
    /// The objective (ratio, or throttle count budget).
    pub objective: f64,
    /// Burn rate over the long window ((1 − SLI) / (1 − objective)); `None` for throttles.
    pub burn_rate_long: Option<f64>,
    /// Burn rate over the short window; `None` for throttles.
    pub burn_rate_short: Option<f64>,
    #[serde(serialize_with = "ser_duration")]
    pub long_window: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub short_window: Duration,
    /// The burn rule's factor (for throttles: 1, the fraction of budget that fires).
    pub factor: f64,
    /// Fraction of the SLO window's error budget spent (1 = exhausted; may exceed 1).
    pub budget_consumed: f64,
    /// At the current long-window burn rate, how long until the budget is gone (`None` when it
    /// is not being spent or already is).
    #[serde(serialize_with = "ser_opt_duration")]
    pub time_to_exhaustion: Option<Duration>,
    /// Good events in the long window (raw count).
    pub good: u64,
    /// Valid events in the long window (raw count).
    pub total: u64,
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::slo::spec::format_duration(*d))
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&crate::slo::spec::format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// RFC 3339 with milliseconds, UTC (`2026-11-29T18:00:00.000Z`), as Alertmanager expects.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// One alert notification, as every sink receives it (the webhook sends exactly this JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    /// When the condition started firing (unchanged across re-sends and the resolve).
    #[serde(serialize_with = "ser_time")]
    pub starts_at: SystemTime,
    /// When it resolved; `None` while firing (the Alertmanager sink fills in a validity horizon).
    #[serde(serialize_with = "ser_opt_time")]
    pub ends_at: Option<SystemTime>,
    /// `alertname`, `function`, `version`, `region`, `account`, `slo`, `severity`, plus the SLO's
    /// own `labels`.
    pub labels: BTreeMap<String, String>,
    /// One line: what is wrong.
    pub summary: String,
    /// A few lines: the numbers behind it.
    pub description: String,
    pub evidence: Evidence,
    /// `{runbook_base_url}/{page}.md`.
    pub runbook_url: String,
}

impl Alert {
    /// The labels every SLO alert carries: alertname, function key, slo, severity, and the
    /// SLO's own labels (which cannot override these: the spec check forbids it).
    pub fn slo_labels(
        slo: &SloDef,
        function: &FunctionLabels,
        severity: Severity,
    ) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = slo
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert("alertname".into(), alert_name(&slo.sli).into());
        labels.insert("slo".into(), slo.name.clone());
        labels.insert("severity".into(), severity.as_str().into());
        labels.insert("function".into(), function.function.clone());
        labels.insert("version".into(), function.version.clone());
        labels.insert("region".into(), function.region.clone());
        labels.insert("account".into(), function.account.clone());
        labels
    }

    /// The `alertname` label.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The `severity` label.
    pub fn severity(&self) -> &str {
        self.labels
            .get("severity")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Budget consumed → time to exhaustion at `burn_rate` (budget spent per window-length at rate 1):
/// `(1 − consumed) × window / burn_rate`, rounded to whole seconds. `None` when the burn rate is not positive or the
/// budget is already gone.
pub fn time_to_exhaustion(
    budget_consumed: f64,
    burn_rate: f64,
    window: Duration,
) -> Option<Duration> {
    let spending = burn_rate.is_finite() && burn_rate > 0.0;
    if !spending || budget_consumed.is_nan() || budget_consumed >= 1.0 {
        return None;
    }
    let seconds = (1.0 - budget_consumed) * window.as_secs_f64() / burn_rate;
    // Whole seconds: the inputs are not more precise than that.
    Duration::try_from_secs_f64(seconds.round()).ok()
}

/// A fixed, fully populated alert for golden and dispatcher tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::slo::spec::SloSpec;

    /// The error-rate page alert for `function`, firing since 2026-11-29T18:00:00Z.
    pub(crate) fn sample_alert(function: &str) -> Alert {
        let spec = SloSpec::embedded_default();
        let slo = &spec.slos[1];
        let key = FunctionLabels {
            function: function.to_owned(),
            version: "$LATEST".to_owned(),
            region: "eu-west-1".to_owned(),
            account: "123456789012".to_owned(),
        };
        let starts_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_975_200);
        Alert {
            fingerprint: Fingerprint::compute(&slo.name, &key, Severity::Page),
            status: AlertStatus::Firing,
            starts_at,
            ends_at: None,
            labels: Alert::slo_labels(slo, &key, Severity::Page),
            summary: format!("{function}: error budget burning 20× too fast"),
            description: "2.0% of 1000 invocations failed over 1h (objective 99.9%).".to_owned(),
            evidence: Evidence {
                sli: 0.98,
                objective: 0.999,
                burn_rate_long: Some(20.0),
                burn_rate_short: Some(25.0),
                long_window: Duration::from_secs(3600),
                short_window: Duration::from_secs(300),
                factor: 14.4,
                budget_consumed: 0.0278,
                time_to_exhaustion: time_to_exhaustion(0.0278, 20.0, spec.slos[1].window),
                good: 980,
                total: 1000,
            },
            runbook_url: spec.defaults.runbook_url(RunbookPage::ErrorRate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FunctionLabels {
        FunctionLabels {
            function: "checkout".into(),
            version: "$LATEST".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    #[test]
    fn fingerprint_is_stable_and_separates_its_inputs() {
        let a = Fingerprint::compute("error_rate", &key(), Severity::Page);
        assert_eq!(
            a,
            Fingerprint::compute("error_rate", &key(), Severity::Page)
        );
        assert_eq!(a.as_str().len(), 16);
        assert_ne!(
            a,
            Fingerprint::compute("error_rate", &key(), Severity::Ticket)
        );
        assert_ne!(
            a,
            Fingerprint::compute("cold_start", &key(), Severity::Page)
        );
        let mut other = key();
        other.version = "2".into();
        assert_ne!(
            a,
            Fingerprint::compute("error_rate", &other, Severity::Page)
        );
        // The separator keeps ("ab","c") and ("a","bc") apart.
        let mut k1 = key();
        k1.function = "ab".into();
        k1.version = "c".into();
        let mut k2 = key();
        k2.function = "a".into();
        k2.version = "bc".into();
        assert_ne!(
            Fingerprint::compute("x", &k1, Severity::Page),
            Fingerprint::compute("x", &k2, Severity::Page)
        );
        // Pinned: changing the recipe changes every fingerprint users have seen.
        let digest = Sha256::digest(
            b"error_rate\x00checkout\x00$LATEST\x00eu-west-1\x00123456789012\x00page\x00",
        );
        assert_eq!(a.as_str(), hex(&digest[..8]));
    }

    #[test]
    fn time_to_exhaustion_table() {
        let month = Duration::from_secs(30 * 86_400);
        // Burn rate 1 with nothing spent: exactly one window.
        assert_eq!(time_to_exhaustion(0.0, 1.0, month), Some(month));
        // 14.4× with 2 % spent: 0.98 × 720 h / 14.4 = 49 h.
        assert_eq!(
            time_to_exhaustion(0.02, 14.4, month).map(|d| d.as_secs()),
            Some(49 * 3600)
        );
        assert_eq!(time_to_exhaustion(1.2, 3.0, month), None);
        assert_eq!(time_to_exhaustion(0.5, 0.0, month), None);
        assert_eq!(time_to_exhaustion(0.5, f64::NAN, month), None);
    }

    #[test]
    fn runbook_pages_are_the_documented_files() {
        let names: Vec<&str> = RunbookPage::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "cold-start",
                "error-rate",
                "dlq",
                "throttles",
                "timeout-budget",
                "no-data",
                "pipeline-drops",
                "cost",
                "retry-storm"
            ]
        );
    }
}
