//! Alertmanager API v2 sink: `POST {url}/api/v2/alerts` with a JSON array of postable alerts.
//!
//! Alertmanager treats a firing alert as resolved once its `endsAt` passes, so a firing alert is
//! sent with `endsAt = now + 4 × resend interval` (what Prometheus itself sends: four missed
//! re-sends before Alertmanager gives up on it) and the state machine re-sends it every resend
//! interval while it fires, pushing `endsAt` forward each time. The resolve is sent once with
//! `endsAt` = the resolution time. `startsAt` stays the moment it started firing, and labels are
//! identical on every send, so Alertmanager folds them into one alert and notifies once per state.
//!
//! Labels: `alertname`, `function`, `version`, `region`, `account`, `slo`, `severity` and the
//! SLO's own. Annotations (strings, as the API requires): `summary`, `description`,
//! `runbook_url`, `fingerprint`, and every [`Evidence`](crate::alerting::alert::Evidence) field.

use super::http::{HttpTarget, SinkConfigError};
use super::{DeliveryError, Sink};
use crate::alerting::alert::{Alert, AlertStatus, rfc3339};
use crate::slo::spec::format_duration;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Settings of the Alertmanager sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093` (`/api/v2/alerts` is appended).
    pub url: String,
    /// The state machine's re-send interval while firing; `endsAt` is 4× this ahead.
    pub resend_interval: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// `generatorURL` on every alert (e.g. the collector's status page), if any.
    pub generator_url: Option<String>,
}

/// Sends to one Alertmanager (for an HA pair, add one sink per instance, as Prometheus does).
#[derive(Clone, Debug)]
pub struct AlertmanagerSink {
    name: String,
    target: HttpTarget,
    resend_interval: Duration,
    generator_url: Option<String>,
}

impl AlertmanagerSink {
    pub fn new(config: AlertmanagerConfig) -> Result<Self, SinkConfigError> {
        if config.resend_interval.is_zero() {
            return Err(SinkConfigError::Invalid {
                sink: "alertmanager",
                reason: "resend_interval must be above 0".into(),
            });
        }
        let target = HttpTarget::new(
            "alertmanager",
            &config.url,
            "/api/v2/alerts",
            config.timeout,
        )?;
        Ok(Self {
            name: "alertmanager".to_owned(),
            target,
            resend_interval: config.resend_interval,
            generator_url: config.generator_url,
        })
    }

    /// Renames the sink (its `sink` label), e.g. one per Alertmanager of an HA pair.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Sink for AlertmanagerSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        let payload = alertmanager_payload(
            alerts,
            SystemTime::now(),
            self.resend_interval,
            self.generator_url.as_deref(),
        );
        let body = serde_json::to_vec(&payload)
            .map_err(|e| DeliveryError::permanent(format!("cannot encode alerts: {e}")))?;
        self.target.post_json(Bytes::from(body), &[]).await
    }
}

/// One element of the `POST /api/v2/alerts` body (`postableAlert`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// The request body for `alerts` at `now` (pure; the golden test pins it).
pub fn alertmanager_payload(
    alerts: &[Alert],
    now: SystemTime,
    resend_interval: Duration,
    generator_url: Option<&str>,
) -> Vec<PostableAlert> {
    alerts
        .iter()
        .map(|alert| {
            let ends_at = match alert.status {
                AlertStatus::Firing => now + resend_interval * 4,
                AlertStatus::Resolved => alert.ends_at.unwrap_or(now),
            };
            PostableAlert {
                labels: alert.labels.clone(),
                annotations: annotations(alert),
                starts_at: rfc3339(alert.starts_at),
                ends_at: rfc3339(ends_at),
                generator_url: generator_url.map(str::to_owned),
            }
        })
        .collect()
}

fn annotations(alert: &Alert) -> BTreeMap<String, String> {
    let e = &alert.evidence;
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    let mut a = BTreeMap::new();
    a.insert("summary".to_owned(), alert.summary.clone());
    a.insert("description".to_owned(), alert.description.clone());
    a.insert("runbook_url".to_owned(), alert.runbook_url.clone());
    a.insert("fingerprint".to_owned(), alert.fingerprint.to_string());
    a.insert("sli".to_owned(), e.sli.to_string());
    a.insert("objective".to_owned(), e.objective.to_string());
    a.insert("burn_rate_long".to_owned(), opt(e.burn_rate_long));
    a.insert("burn_rate_short".to_owned(), opt(e.burn_rate_short));
    a.insert("long_window".to_owned(), format_duration(e.long_window));
    a.insert("short_window".to_owned(), format_duration(e.short_window));
    a.insert("factor".to_owned(), e.factor.to_string());
    a.insert("budget_consumed".to_owned(), e.budget_consumed.to_string());
    a.insert(
        "time_to_exhaustion".to_owned(),
        e.time_to_exhaustion
            .map_or_else(String::new, format_duration),
    );
    a.insert("good".to_owned(), e.good.to_string());
    a.insert("total".to_owned(), e.total.to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::alert::tests_support::sample_alert;
    use crate::alerting::sinks::golden;

    #[test]
    fn payload_matches_the_golden_file() {
        let firing = sample_alert("checkout");
        let mut resolved = sample_alert("orders");
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(resolved.starts_at + Duration::from_secs(1800));
        let now = firing.starts_at + Duration::from_secs(120);
        let payload = alertmanager_payload(
            &[firing, resolved],
            now,
            Duration::from_secs(60),
            Some("http://collector:9464/"),
        );
        let json = serde_json::to_string_pretty(&payload).unwrap_or_default();
        golden::check("alertmanager_v2.json", &json);
    }

    #[test]
    fn firing_ends_at_moves_with_now_and_resolved_keeps_its_time() {
        let firing = sample_alert("checkout");
        let t0 = firing.starts_at;
        let at = |now: SystemTime| {
            alertmanager_payload(
                std::slice::from_ref(&firing),
                now,
                Duration::from_secs(60),
                None,
            )
        };
        assert_eq!(at(t0)[0].ends_at, rfc3339(t0 + Duration::from_secs(240)));
        assert_eq!(
            at(t0 + Duration::from_secs(60))[0].ends_at,
            rfc3339(t0 + Duration::from_secs(300))
        );
        assert_eq!(
            at(t0)[0].starts_at,
            at(t0 + Duration::from_secs(60))[0].starts_at
        );
        assert_eq!(at(t0)[0].generator_url, None);
        let mut resolved = firing.clone();
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(t0 + Duration::from_secs(90));
        let p = alertmanager_payload(
            &[resolved],
            t0 + Duration::from_secs(3600),
            Duration::from_secs(60),
            None,
        );
        assert_eq!(p[0].ends_at, rfc3339(t0 + Duration::from_secs(90)));
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = AlertmanagerConfig {
            url: "http://127.0.0.1:9093".into(),
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            generator_url: None,
        };
        assert!(AlertmanagerSink::new(ok.clone()).is_ok());
        assert!(
            AlertmanagerSink::new(AlertmanagerConfig {
                resend_interval: Duration::ZERO,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            AlertmanagerSink::new(AlertmanagerConfig {
                url: "https://am".into(),
                ..ok
            })
            .is_err()
        );
    }
}
