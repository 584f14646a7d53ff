//! The alert state machine: pending → firing → resolved, one entry per [`Fingerprint`].
//!
//! Consumes, once per evaluation, every condition of every function (active or not) as
//! [`Observed`] alerts; produces the notifications to hand to the dispatcher. Pure: `now` is an
//! argument, there is no clock and no I/O, so every transition is tested with injected time.
//!
//! | state | condition active | condition inactive / gone |
//! |---|---|---|
//! | (none) | → pending (`for` = 0: → firing, notify) | — |
//! | pending | held ≥ `for` → firing, notify | → (none), silently |
//! | firing | re-notify every `resend` with fresh evidence | → resolved, notify once, forget |
//!
//! `starts_at` is the moment it started firing and stays the same on every re-send and on the
//! resolve, so Alertmanager deduplicates them into one incident.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use super::alert::{Alert, AlertStatus, Fingerprint};

/// Timing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a condition must hold before it fires.
    pub for_: Duration,
    /// Re-send interval while firing.
    pub resend: Duration,
}

/// A condition as evaluated now: the alert it would send (status firing), and whether active.
#[derive(Debug, Clone)]
pub struct Observed {
    pub alert: Alert,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
}

#[derive(Debug, Clone)]
struct Entry {
    phase: Phase,
    since: SystemTime,
    last_sent: SystemTime,
    alert: Alert,
}

#[derive(Debug, Default)]
pub struct AlertStates {
    entries: HashMap<Fingerprint, Entry>,
}

impl AlertStates {
    /// One evaluation round. Returns the notifications to send, firing ones first.
    pub fn step(
        &mut self,
        policy: Policy,
        now: SystemTime,
        observed: impl IntoIterator<Item = Observed>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut seen_active: HashMap<Fingerprint, ()> = HashMap::new();
        for Observed { mut alert, active } in observed {
            if !active {
                continue;
            }
            let fp = alert.fingerprint.clone();
            seen_active.insert(fp.clone(), ());
            let elapsed = |t: SystemTime| now.duration_since(t).unwrap_or_default();
            match self.entries.get_mut(&fp) {
                None => {
                    let firing = policy.for_.is_zero();
                    alert.status = AlertStatus::Firing;
                    alert.starts_at = now;
                    alert.ends_at = None;
                    if firing {
                        out.push(alert.clone());
                    }
                    self.entries.insert(
                        fp,
                        Entry {
                            phase: if firing {
                                Phase::Firing
                            } else {
                                Phase::Pending
                            },
                            since: now,
                            last_sent: now,
                            alert,
                        },
                    );
                }
                Some(e) if e.phase == Phase::Pending => {
                    if elapsed(e.since) >= policy.for_ {
                        alert.status = AlertStatus::Firing;
                        alert.starts_at = now;
                        alert.ends_at = None;
                        e.phase = Phase::Firing;
                        e.since = now;
                        e.last_sent = now;
                        out.push(alert.clone());
                    }
                    e.alert = alert;
                }
                Some(e) => {
                    alert.status = AlertStatus::Firing;
                    alert.starts_at = e.since;
                    alert.ends_at = None;
                    if elapsed(e.last_sent) >= policy.resend {
                        e.last_sent = now;
                        out.push(alert.clone());
                    }
                    e.alert = alert;
                }
            }
        }
        let gone: Vec<Fingerprint> = self
            .entries
            .keys()
            .filter(|fp| !seen_active.contains_key(*fp))
            .cloned()
            .collect();
        for fp in gone {
            if let Some(e) = self.entries.remove(&fp)
                && e.phase == Phase::Firing
            {
                let mut alert = e.alert;
                alert.status = AlertStatus::Resolved;
                alert.starts_at = e.since;
                alert.ends_at = Some(now);
                out.push(alert);
            }
        }
        out
    }

    /// Every entry as `(phase, since, last_sent, alert)`, for checkpoints.
    pub fn export(&self) -> Vec<(Phase, SystemTime, SystemTime, Alert)> {
        self.entries
            .values()
            .map(|e| (e.phase, e.since, e.last_sent, e.alert.clone()))
            .collect()
    }

    /// Restores one checkpointed entry (keyed by the alert's fingerprint), so a restart neither
    /// re-sends a firing alert before `resend` nor restarts a pending one's `for`.
    pub fn restore(
        &mut self,
        phase: Phase,
        since: SystemTime,
        last_sent: SystemTime,
        alert: Alert,
    ) {
        self.entries.insert(
            alert.fingerprint.clone(),
            Entry {
                phase,
                since,
                last_sent,
                alert,
            },
        );
    }

    /// The phase of `fp`, if pending or firing.
    pub fn phase(&self, fp: &Fingerprint) -> Option<Phase> {
        self.entries.get(fp).map(|e| e.phase)
    }

    /// Every firing alert.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.entries
            .values()
            .filter(|e| e.phase == Phase::Firing)
            .map(|e| &e.alert)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alerting::alert::{Evidence, FunctionLabels},
        slo::spec::Severity,
    };
    use std::collections::BTreeMap;

    fn alert(slo: &str) -> Alert {
        let f = FunctionLabels {
            function: "checkout".into(),
            version: "1".into(),
            region: "eu-west-1".into(),
            account: "1".into(),
        };
        Alert {
            fingerprint: Fingerprint::compute(slo, &f, Severity::Page),
            status: AlertStatus::Firing,
            starts_at: SystemTime::UNIX_EPOCH,
            ends_at: None,
            labels: BTreeMap::new(),
            summary: String::new(),
            description: String::new(),
            evidence: Evidence {
                sli: 0.5,
                objective: 0.999,
                burn_rate_long: Some(500.0),
                burn_rate_short: Some(500.0),
                long_window: Duration::from_secs(3600),
                short_window: Duration::from_secs(300),
                factor: 14.4,
                budget_consumed: 0.1,
                time_to_exhaustion: None,
                good: 1,
                total: 2,
            },
            runbook_url: String::new(),
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn obs(active: bool) -> Vec<Observed> {
        vec![Observed {
            alert: alert("error_rate"),
            active,
        }]
    }

    const POLICY: Policy = Policy {
        for_: Duration::from_secs(60),
        resend: Duration::from_secs(300),
    };

    #[test]
    fn one_incident_is_pending_then_firing_resent_and_resolved_once() {
        let mut s = AlertStates::default();
        assert!(s.step(POLICY, at(0), obs(true)).is_empty(), "pending first");
        assert_eq!(
            s.phase(&alert("error_rate").fingerprint),
            Some(Phase::Pending)
        );
        assert!(s.step(POLICY, at(30), obs(true)).is_empty());
        let fired = s.step(POLICY, at(60), obs(true));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert_eq!(fired[0].starts_at, at(60));
        assert!(
            s.step(POLICY, at(90), obs(true)).is_empty(),
            "dedup while firing"
        );
        let resent = s.step(POLICY, at(360), obs(true));
        assert_eq!(resent.len(), 1, "re-sent after the resend interval");
        assert_eq!(resent[0].starts_at, at(60), "same incident");
        assert_eq!(resent[0].fingerprint, fired[0].fingerprint);
        let resolved = s.step(POLICY, at(400), obs(false));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].ends_at, Some(at(400)));
        assert_eq!(resolved[0].starts_at, at(60));
        assert!(
            s.step(POLICY, at(460), obs(false)).is_empty(),
            "resolved once"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_blip_shorter_than_for_never_notifies() {
        let mut s = AlertStates::default();
        assert!(s.step(POLICY, at(0), obs(true)).is_empty());
        assert!(s.step(POLICY, at(30), obs(false)).is_empty());
        assert!(
            s.step(POLICY, at(90), obs(true)).is_empty(),
            "pending restarts"
        );
        assert!(
            s.step(POLICY, at(120), Vec::new()).is_empty(),
            "gone = inactive"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn zero_for_fires_immediately() {
        let mut s = AlertStates::default();
        let p = Policy {
            for_: Duration::ZERO,
            resend: Duration::from_secs(60),
        };
        assert_eq!(s.step(p, at(0), obs(true)).len(), 1);
        assert_eq!(s.firing().count(), 1);
    }
}
