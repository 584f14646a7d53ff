//! The pipeline observing itself: received / exported{signal} / dropped{reason} / retries /
//! ignored{reason}.
//!
//! `ignored` counts what the parser met inside events it still used: record members it does not
//! know (`unknown_field`: usually AWS adding to the schema) and values of an unexpected shape
//! (`odd_value`). They are counted, with one rate-limited stderr line from `lifecycle`, rather
//! than exported as attributes: an unknown platform field has no agreed meaning in Contract 1,
//! and copying unvetted keys onto every span would grow the collector's label space without
//! bound. A user seeing the counter rise knows the schema moved, and which way (field or value).
//!
//! Owned by the `lifecycle` loop; fed from parse stats, the buffer and export reports; emitted as
//! cumulative OTLP sums (start = process start) with every flush. Label sets are small and fixed
//! (three signals, the reasons in [`crate::export::reason`]); every drop reason is exported from 0.

use lambdawatch_semconv::{attr, metric, otlp};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric};

use crate::events::ParseStats;
use crate::export::{ExportReport, Signal, reason};
use crate::translate::sum_metric;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfStats {
    /// Telemetry API elements received (events + skipped elements).
    pub received: u64,
    pub exported: [u64; 3],
    pub dropped: Vec<(&'static str, u64)>,
    pub retries: u64,
    /// Unknown record members and odd values seen in events that were still used
    /// ([`ignored::UNKNOWN_FIELD`], [`ignored::ODD_VALUE`]).
    pub ignored: [u64; 2],
    /// The buffer's own cumulative drop count, last seen.
    buffer_dropped_seen: u64,
}

/// `reason` values of `lambdawatch.extension.ignored`.
pub mod ignored {
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const ODD_VALUE: &str = "odd_value";
}

impl SelfStats {
    pub fn drop(&mut self, why: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(k, _)| *k == why) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((why, n)),
        }
    }

    pub fn dropped(&self, why: &str) -> u64 {
        self.dropped
            .iter()
            .find(|(k, _)| *k == why)
            .map_or(0, |(_, n)| *n)
    }

    pub fn on_parse(&mut self, s: &ParseStats, body_lost: bool) {
        self.received += s.events + s.skipped();
        self.ignored[0] += s.unknown_fields;
        self.ignored[1] += s.odd_values;
        self.drop(reason::UNKNOWN_TYPE, s.unknown_types);
        self.drop(reason::MALFORMED, s.malformed);
        if body_lost {
            self.drop(reason::BODY_TOO_LARGE, 1);
        }
    }

    /// Syncs the buffer's cumulative drop count.
    pub fn on_buffer(&mut self, buffer_dropped_total: u64) {
        let new = buffer_dropped_total.saturating_sub(self.buffer_dropped_seen);
        self.buffer_dropped_seen = buffer_dropped_total;
        self.drop(reason::BUFFER_FULL, new);
    }

    pub fn on_export(&mut self, r: &ExportReport) {
        for i in 0..3 {
            self.exported[i] += r.exported[i];
        }
        for (why, n) in &r.dropped {
            self.drop(why, *n);
        }
        self.retries += r.retries;
    }

    /// Cumulative sums since `start_ns`.
    pub fn to_metrics(&self, start_ns: u64, now_ns: u64) -> Vec<Metric> {
        let cum = AggregationTemporality::Cumulative;
        let mut out = vec![sum_metric(
            metric::EXT_RECEIVED,
            "{event}",
            self.received as i64,
            vec![],
            start_ns,
            now_ns,
            cum,
        )];
        for (i, s) in [Signal::Traces, Signal::Metrics, Signal::Logs]
            .iter()
            .enumerate()
        {
            out.push(sum_metric(
                metric::EXT_EXPORTED,
                "{item}",
                self.exported[i] as i64,
                vec![otlp::kv_str(attr::LAMBDAWATCH_SIGNAL, s.name())],
                start_ns,
                now_ns,
                cum,
            ));
        }
        // Every known reason from 0, so a downstream Prometheus series is born at 0 and the first
        // burst of drops shows in rate()/increase() (a series born at its first non-zero value
        // hides that burst); then any reason outside the list.
        let reasons = reason::ALL.iter().copied().chain(
            self.dropped
                .iter()
                .map(|(why, _)| *why)
                .filter(|why| !reason::ALL.contains(why)),
        );
        for why in reasons {
            out.push(sum_metric(
                metric::EXT_DROPPED,
                "{item}",
                self.dropped(why) as i64,
                vec![otlp::kv_str(attr::LAMBDAWATCH_REASON, why)],
                start_ns,
                now_ns,
                cum,
            ));
        }
        for (n, why) in self
            .ignored
            .iter()
            .zip([ignored::UNKNOWN_FIELD, ignored::ODD_VALUE])
        {
            out.push(sum_metric(
                metric::EXT_IGNORED,
                "{field}",
                *n as i64,
                vec![otlp::kv_str(attr::LAMBDAWATCH_REASON, why)],
                start_ns,
                now_ns,
                cum,
            ));
        }
        out.push(sum_metric(
            metric::EXT_RETRIES,
            "{retry}",
            self.retries as i64,
            vec![],
            start_ns,
            now_ns,
            cum,
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};

    /// `(reason, value)` of every `lambdawatch.extension.dropped` point.
    fn dropped_points(stats: &SelfStats) -> Vec<(String, i64)> {
        stats
            .to_metrics(1, 2)
            .into_iter()
            .filter(|m| m.name == metric::EXT_DROPPED)
            .flat_map(|m| match m.data {
                Some(Data::Sum(s)) => s.data_points,
                _ => Vec::new(),
            })
            .map(|p| {
                let why = otlp::get_str(&p.attributes, attr::LAMBDAWATCH_REASON)
                    .unwrap_or_default()
                    .to_owned();
                let n = match p.value {
                    Some(Value::AsInt(i)) => i,
                    _ => -1,
                };
                (why, n)
            })
            .collect()
    }

    #[test]
    fn every_drop_reason_is_exported_from_zero() {
        let mut stats = SelfStats::default();
        let zero: Vec<(String, i64)> = reason::ALL.iter().map(|r| ((*r).to_owned(), 0)).collect();
        assert_eq!(dropped_points(&stats), zero);
        stats.on_buffer(3);
        stats.drop("unlisted_reason", 2);
        let points = dropped_points(&stats);
        assert_eq!(points.len(), reason::ALL.len() + 1);
        assert!(points.contains(&(reason::BUFFER_FULL.to_owned(), 3)));
        assert!(points.contains(&("unlisted_reason".to_owned(), 2)));
        assert!(points.contains(&(reason::EXPORT_FAILED.to_owned(), 0)));
    }
}
