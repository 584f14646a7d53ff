//! Prometheus text exposition (format 0.0.4) of Contract 2 (`docs/ARCHITECTURE.md`): names,
//! types and labels exactly as written there. Per-function series carry `function`, `version`,
//! `region`, `account`. Histogram bounds are the defaults plus every SLO threshold, rendered like
//! `slo::spec::prometheus_le` so generated rules select them by the same `le` string.
//!
//! Four producers, one text: per-function aggregates ([`render_functions`], run inside the
//! aggregator task), the latest SLO evaluation and alert states ([`render_slos`]), the latest
//! cost evaluation ([`render_cost`]: `crate::cost::names::ALL` and the cost stage's drops), and
//! the pipeline's own counters ([`render_self`]). Each family is written once with its
//! HELP/TYPE.
//!
//! Counters exist at 0 from a function's first report: all four outcomes, both `within` values,
//! the platform counters, and the init types and DLQ queues of [`Aggregates::zero_series`].
//! Prometheus's `increase()` cannot see the increment that creates a series, so a counter born at
//! its first event would lose that event in the generated rules (`crate::rules`) while the
//! built-in evaluator counts it.

use std::fmt::Write;

use crate::{
    aggregate::{
        AggregateStats, Aggregates, FunctionKey, FunctionState, InitKind, Outcome, PlatformCounter,
        hist::Buckets,
    },
    cost::{CostReport, feed::DROP_REASONS, names},
    ingest::{IngestStats, ItemReject, Protocol, Reject, Signal},
    serve::Snapshot,
};

/// Escapes a label value (`\`, `"`, newline).
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fn_labels(k: &FunctionKey) -> String {
    format!(
        "function=\"{}\",version=\"{}\",region=\"{}\",account=\"{}\"",
        escape(&k.function),
        escape(&k.version),
        escape(&k.region),
        escape(&k.account)
    )
}

/// A float the way Prometheus reads it.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], b: &Buckets) {
    for (le, n) in b.cumulative(bounds) {
        let le = le.map_or_else(|| "+Inf".to_owned(), |x| format!("{x}"));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", num(b.sum_secs));
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", b.count);
}

/// Every init type `s` saw, plus the `zero` ones (at `empty`), sorted by kind.
fn init_types<'a>(
    s: &'a FunctionState,
    zero: &[InitKind],
    empty: &'a Buckets,
) -> Vec<(InitKind, u64, &'a Buckets)> {
    let mut kinds: Vec<(InitKind, u64, &Buckets)> = s
        .cold
        .iter()
        .map(|(k, c)| (*k, c.total, &c.buckets))
        .collect();
    for k in zero {
        if !kinds.iter().any(|(seen, ..)| seen == k) {
            kinds.push((*k, 0, empty));
        }
    }
    kinds.sort_by_key(|(k, ..)| *k);
    kinds
}

/// Every per-function family, functions sorted by key.
pub fn render_functions(agg: &Aggregates, now_s: u64, out: &mut String) {
    let mut fns: Vec<(&FunctionKey, _)> = agg.functions.iter().collect();
    fns.sort_by(|a, b| a.0.cmp(b.0));
    let labels: Vec<String> = fns.iter().map(|(k, _)| fn_labels(k)).collect();
    let each = |out: &mut String, f: &mut dyn FnMut(&mut String, &str, &FunctionState)| {
        for ((_, s), l) in fns.iter().zip(&labels) {
            f(out, l, s);
        }
    };

    header(
        out,
        "lambdawatch_invocations_total",
        "counter",
        "Completed invocations by outcome.",
    );
    each(out, &mut |out, l, s| {
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "lambdawatch_invocations_total{{{l},outcome=\"{}\"}} {}",
                o.label(),
                s.outcome_totals[o.index()]
            );
        }
    });
    header(
        out,
        "lambdawatch_cold_starts_total",
        "counter",
        "Initialisations by init type.",
    );
    let zero_init = Buckets::new(&agg.layout.init_bounds);
    let zero_kinds = &agg.zero_series.init_types;
    each(out, &mut |out, l, s| {
        for (k, total, _) in init_types(s, zero_kinds, &zero_init) {
            let _ = writeln!(
                out,
                "lambdawatch_cold_starts_total{{{l},init_type=\"{}\"}} {total}",
                k.label(),
            );
        }
    });
    header(
        out,
        "lambdawatch_init_duration_seconds",
        "histogram",
        "Init duration; buckets include every cold-start SLO threshold.",
    );
    each(out, &mut |out, l, s| {
        for (k, _, buckets) in init_types(s, zero_kinds, &zero_init) {
            let labels = format!("{l},init_type=\"{}\"", k.label());
            histogram(
                out,
                "lambdawatch_init_duration_seconds",
                &labels,
                &agg.layout.init_bounds,
                buckets,
            );
        }
    });
    header(
        out,
        "lambdawatch_invocation_duration_seconds",
        "histogram",
        "Invocation duration.",
    );
    each(out, &mut |out, l, s| {
        if s.duration_buckets.count > 0 {
            histogram(
                out,
                "lambdawatch_invocation_duration_seconds",
                l,
                &agg.layout.invocation_bounds,
                &s.duration_buckets,
            );
        }
    });
    header(
        out,
        "lambdawatch_invocation_timeout_budget_total",
        "counter",
        "Invocations within / beyond the timeout-budget fraction of their timeout.",
    );
    each(out, &mut |out, l, s| {
        for (i, within) in ["true", "false"].iter().enumerate() {
            let _ = writeln!(
                out,
                "lambdawatch_invocation_timeout_budget_total{{{l},within=\"{within}\"}} {}",
                s.timeout_budget_totals[i]
            );
        }
    });
    header(
        out,
        "lambdawatch_timeout_seconds",
        "gauge",
        "Configured timeout.",
    );
    each(out, &mut |out, l, s| {
        if let Some(t) = s.timeout_ms {
            let _ = writeln!(
                out,
                "lambdawatch_timeout_seconds{{{l}}} {}",
                num(t / 1000.0)
            );
        }
    });
    header(
        out,
        "lambdawatch_memory_size_bytes",
        "gauge",
        "Configured memory.",
    );
    each(out, &mut |out, l, s| {
        if let Some(m) = s.memory_mb {
            let _ = writeln!(
                out,
                "lambdawatch_memory_size_bytes{{{l}}} {}",
                num(m * 1024.0 * 1024.0)
            );
        }
    });
    header(
        out,
        "lambdawatch_max_memory_used_bytes",
        "gauge",
        "Max memory used, last hour.",
    );
    each(out, &mut |out, l, s| {
        if let Some(m) = s.max_memory_last_hour(now_s) {
            let _ = writeln!(
                out,
                "lambdawatch_max_memory_used_bytes{{{l}}} {}",
                num(m * 1024.0 * 1024.0)
            );
        }
    });
    header(
        out,
        "lambdawatch_billed_gigabyte_seconds_total",
        "counter",
        "Billed GB-seconds.",
    );
    each(out, &mut |out, l, s| {
        let _ = writeln!(
            out,
            "lambdawatch_billed_gigabyte_seconds_total{{{l}}} {}",
            num(s.billed_gb_seconds)
        );
    });
    for (name, counter, help) in [
        (
            "lambdawatch_throttles_total",
            PlatformCounter::Throttles,
            "Throttles (platform counts).",
        ),
        (
            "lambdawatch_dead_letter_errors_total",
            PlatformCounter::DeadLetterErrors,
            "DeadLetterErrors (platform counts).",
        ),
        (
            "lambdawatch_async_events_received_total",
            PlatformCounter::AsyncEventsReceived,
            "AsyncEventsReceived (platform counts).",
        ),
        (
            "lambdawatch_async_events_dropped_total",
            PlatformCounter::AsyncEventsDropped,
            "AsyncEventsDropped (platform counts).",
        ),
        (
            "lambdawatch_destination_delivery_failures_total",
            PlatformCounter::DestinationDeliveryFailures,
            "DestinationDeliveryFailures (platform counts): async events not delivered to their on-failure destination.",
        ),
    ] {
        header(out, name, "counter", help);
        each(out, &mut |out, l, s| {
            let _ = writeln!(out, "{name}{{{l}}} {}", s.platform_totals[counter as usize]);
        });
    }
    header(
        out,
        "lambdawatch_dlq_messages_sent_total",
        "counter",
        "SQS DLQ NumberOfMessagesSent, by queue.",
    );
    let no_queues = std::collections::BTreeSet::new();
    for ((k, s), l) in fns.iter().zip(&labels) {
        let configured = agg
            .zero_series
            .dlq_queues
            .get(&k.function)
            .unwrap_or(&no_queues);
        let unseen = configured
            .iter()
            .filter(|q| !s.dlq_by_queue.contains_key(*q));
        for (q, n) in s
            .dlq_by_queue
            .iter()
            .map(|(q, n)| (q, *n))
            .chain(unseen.map(|q| (q, 0)))
        {
            let _ = writeln!(
                out,
                "lambdawatch_dlq_messages_sent_total{{{l},queue=\"{}\"}} {n}",
                escape(q)
            );
        }
    }
    header(
        out,
        "lambdawatch_extension_dropped_total",
        "counter",
        "Records the extensions dropped, by reason (their own counters).",
    );
    each(out, &mut |out, l, s| {
        for (r, n) in &s.extension_dropped {
            let _ = writeln!(
                out,
                "lambdawatch_extension_dropped_total{{{l},reason=\"{}\"}} {}",
                escape(r),
                num(*n)
            );
        }
    });
    header(
        out,
        "lambdawatch_extension_retries_total",
        "counter",
        "Export retries reported by the extensions.",
    );
    each(out, &mut |out, l, s| {
        if s.extension_retries > 0.0 || !s.cumulative_seen.is_empty() {
            let _ = writeln!(
                out,
                "lambdawatch_extension_retries_total{{{l}}} {}",
                num(s.extension_retries)
            );
        }
    });
}

/// SLO gauges and alert states from the latest evaluation.
pub fn render_slos(snap: &Snapshot, out: &mut String) {
    let fns = &snap.evaluation.functions;
    let labels: Vec<String> = fns.iter().map(|f| fn_labels(&f.key)).collect();
    header(
        out,
        "lambdawatch_slo_objective_ratio",
        "gauge",
        "SLO target (throttles: count budget).",
    );
    for (f, l) in fns.iter().zip(&labels) {
        for s in &f.slos {
            let _ = writeln!(
                out,
                "lambdawatch_slo_objective_ratio{{{l},slo=\"{}\"}} {}",
                escape(&s.name),
                num(s.objective)
            );
        }
    }
    header(
        out,
        "lambdawatch_slo_sli_ratio",
        "gauge",
        "Good / valid events over the window.",
    );
    for (f, l) in fns.iter().zip(&labels) {
        for s in &f.slos {
            for w in &s.windows {
                if let (Some(v), Some(_)) = (w.sli, w.burn_rate) {
                    let _ = writeln!(
                        out,
                        "lambdawatch_slo_sli_ratio{{{l},slo=\"{}\",window=\"{}\"}} {}",
                        escape(&s.name),
                        w.window,
                        num(v)
                    );
                }
            }
        }
    }
    header(
        out,
        "lambdawatch_slo_error_budget_remaining_ratio",
        "gauge",
        "Error budget left over the SLO window (1 = untouched, < 0 = overspent).",
    );
    for (f, l) in fns.iter().zip(&labels) {
        for s in &f.slos {
            let _ = writeln!(
                out,
                "lambdawatch_slo_error_budget_remaining_ratio{{{l},slo=\"{}\"}} {}",
                escape(&s.name),
                num(s.budget_remaining)
            );
        }
    }
    header(
        out,
        "lambdawatch_slo_burn_rate",
        "gauge",
        "(1 - SLI) / (1 - objective) over the window.",
    );
    for (f, l) in fns.iter().zip(&labels) {
        for s in &f.slos {
            for w in &s.windows {
                if let Some(b) = w.burn_rate {
                    let _ = writeln!(
                        out,
                        "lambdawatch_slo_burn_rate{{{l},slo=\"{}\",window=\"{}\"}} {}",
                        escape(&s.name),
                        w.window,
                        num(b)
                    );
                }
            }
        }
    }
    header(
        out,
        "lambdawatch_alerts_firing",
        "gauge",
        "1 while an alert fires.",
    );
    for a in &snap.alerts {
        let _ = writeln!(
            out,
            "lambdawatch_alerts_firing{{{},slo=\"{}\",severity=\"{}\"}} {}",
            fn_labels(&a.key),
            escape(&a.slo),
            a.severity.as_str(),
            u8::from(a.phase == Some(crate::alerting::state::Phase::Firing))
        );
    }
}

/// The cost families of the latest cost evaluation, functions in the report's (key) order, each
/// family once with its HELP/TYPE (a family no function has a sample of is left out), then the
/// cost stage's drops by reason (every reason, from 0).
pub fn render_cost(report: &CostReport, out: &mut String) {
    let rows: Vec<(String, Vec<crate::cost::MetricSample>)> = report
        .functions
        .iter()
        .map(|r| (fn_labels(&r.key), r.samples()))
        .collect();
    for (name, help) in names::ALL {
        let mut written = false;
        for (l, samples) in &rows {
            for m in samples.iter().filter(|m| m.name == *name) {
                if !written {
                    header(out, name, m.kind(), help);
                    written = true;
                }
                let extra: String = m
                    .labels
                    .iter()
                    .map(|(k, v)| format!(",{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = writeln!(out, "{name}{{{l}{extra}}} {}", num(m.value));
            }
        }
    }
    header(
        out,
        "lambdawatch_cost_dropped_total",
        "counter",
        "Invocations the cost stage could not price, by reason.",
    );
    for reason in DROP_REASONS {
        let _ = writeln!(
            out,
            "lambdawatch_cost_dropped_total{{reason=\"{reason}\"}} {}",
            report.dropped.get(reason).copied().unwrap_or(0)
        );
    }
}

/// The pipeline's own counters.
pub fn render_self(
    ingest: &IngestStats,
    agg: &AggregateStats,
    deliveries: &[(String, String, u64)],
    out: &mut String,
) {
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "lambdawatch_ingest_requests_total",
        "counter",
        "OTLP export requests.",
    );
    for p in Protocol::ALL {
        for s in Signal::ALL {
            let results = std::iter::once((None, "ok"))
                .chain(Reject::ALL.iter().map(|r| (Some(*r), r.label())));
            for (r, label) in results {
                let _ = writeln!(
                    out,
                    "lambdawatch_ingest_requests_total{{protocol=\"{}\",signal=\"{}\",result=\"{label}\"}} {}",
                    p.label(),
                    s.label(),
                    ingest.requests(p, s, r)
                );
            }
        }
    }
    header(
        out,
        "lambdawatch_ingest_items_total",
        "counter",
        "Spans, data points and log records accepted.",
    );
    for s in Signal::ALL {
        let _ = writeln!(
            out,
            "lambdawatch_ingest_items_total{{signal=\"{}\"}} {}",
            s.label(),
            ingest.items(s)
        );
    }
    header(
        out,
        "lambdawatch_ingest_rejected_total",
        "counter",
        "Refused requests by reason.",
    );
    for r in Reject::ALL {
        let _ = writeln!(
            out,
            "lambdawatch_ingest_rejected_total{{reason=\"{}\"}} {}",
            r.label(),
            ingest.rejections(r)
        );
    }
    header(
        out,
        "lambdawatch_ingest_rejected_items_total",
        "counter",
        "Records left out of accepted requests (OTLP partial success), by reason.",
    );
    for s in Signal::ALL {
        for r in ItemReject::ALL {
            let _ = writeln!(
                out,
                "lambdawatch_ingest_rejected_items_total{{signal=\"{}\",reason=\"{}\"}} {}",
                s.label(),
                r.label(),
                ingest.items_rejected(s, r)
            );
        }
    }
    header(
        out,
        "lambdawatch_aggregate_dropped_total",
        "counter",
        "Accepted events not aggregated, by reason.",
    );
    let _ = writeln!(
        out,
        "lambdawatch_aggregate_dropped_total{{reason=\"too_many_functions\"}} {}",
        agg.too_many_functions.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "lambdawatch_aggregate_dropped_total{{reason=\"too_old\"}} {}",
        agg.too_old.load(Relaxed)
    );
    header(out, "lambdawatch_functions", "gauge", "Functions tracked.");
    let _ = writeln!(out, "lambdawatch_functions {}", agg.functions.load(Relaxed));
    header(
        out,
        "lambdawatch_alert_deliveries_total",
        "counter",
        "Alert deliveries by sink and result.",
    );
    for (sink, result, n) in deliveries {
        let _ = writeln!(
            out,
            "lambdawatch_alert_deliveries_total{{sink=\"{}\",result=\"{}\"}} {n}",
            escape(sink),
            escape(result)
        );
    }
}

/// One sample of a pipeline stage that is not per function (the AWS edges), with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSample {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: f64,
}

/// Renders `samples`, one `# HELP`/`# TYPE` per name (samples of a name must be adjacent).
pub fn render_samples(samples: &[PipelineSample], out: &mut String) {
    let mut last = "";
    for s in samples {
        if s.name != last {
            header(out, s.name, s.kind, s.help);
            last = s.name;
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(out, "{} {}", s.name, num(s.value))
        } else {
            writeln!(out, "{}{{{}}} {}", s.name, labels.join(","), num(s.value))
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::aggregate::{Batch, Event, Group, Invocation, Layout, Target, ZeroSeries};
    use std::collections::BTreeMap;

    fn key(function: &str) -> FunctionKey {
        FunctionKey {
            function: function.to_owned(),
            version: "1".to_owned(),
            region: "eu-west-1".to_owned(),
            account: "123".to_owned(),
        }
    }

    fn one_invocation(agg: &mut Aggregates, function: &str, t_s: u64) {
        agg.apply(Batch {
            received_s: t_s,
            groups: vec![Group {
                target: Target::Function {
                    key: key(function),
                    tags: Vec::new(),
                    instance: "i".to_owned(),
                },
                events: vec![Event::Invocation(Invocation {
                    t_s,
                    outcome: Outcome::Success,
                    duration_ms: 10.0,
                    billed_ms: None,
                    memory_mb: None,
                    max_memory_mb: None,
                    timeout_ms: None,
                    request_id: None,
                    span_fingerprint: None,
                })],
            }],
        });
    }

    /// The cost families: each once with HELP/TYPE, per-function labels plus the sample's own,
    /// and the drop counter with every reason from 0.
    #[test]
    fn cost_families_render_once_with_labels() {
        use crate::cost::{CostConfig, CostFeed, prices::PriceTable};
        let mut feed = CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig::default(),
            BTreeMap::from([("a".to_owned(), 10.0)]),
        );
        let t = 1_795_996_800;
        let tags = BTreeMap::new();
        for (function, region, id) in [
            ("a", "eu-west-1", "r1"),
            ("b", "eu-west-1", "r2"),
            ("b", "eu-west-1", "r2"),
            ("c", "nowhere-1", "r3"),
        ] {
            let mut k = key(function);
            k.region = region.to_owned();
            feed.observe(
                &k,
                "i",
                &tags,
                &Event::Invocation(Invocation {
                    t_s: t,
                    outcome: Outcome::Success,
                    duration_ms: 10.0,
                    billed_ms: Some(100.0),
                    memory_mb: Some(1024.0),
                    max_memory_mb: None,
                    timeout_ms: None,
                    request_id: Some(id.to_owned()),
                    span_fingerprint: None,
                }),
            );
        }
        let report = feed.evaluate(t + 30);
        let mut text = String::new();
        render_cost(&report, &mut text);
        let a = r#"function="a",version="1",region="eu-west-1",account="123""#;
        let b = r#"function="b",version="1",region="eu-west-1",account="123""#;
        // 100 ms × 1 GB at $0.0000166667/GB-s + $0.20/M, twice for b.
        let one = 0.1 * 0.000_016_666_7 + 0.2e-6;
        let value = |prefix: String| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix}\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((value(format!("lambdawatch_cost_usd_total{{{a}}} ")) - one).abs() < 1e-15);
        assert!((value(format!("lambdawatch_cost_usd_total{{{b}}} ")) - 2.0 * one).abs() < 1e-15);
        assert_eq!(value(format!("lambdawatch_cost_budget_usd{{{a}}} ")), 10.0);
        assert_eq!(
            value(format!(
                r#"lambdawatch_cost_surprise{{{a},reason="budget"}} "#
            )),
            0.0
        );
        // b's request id came twice: one retry of two invocations.
        assert_eq!(value(format!("lambdawatch_retry_fraction{{{b}}} ")), 0.5);
        assert_eq!(value(format!("lambdawatch_retry_storm{{{b}}} ")), 0.0);
        assert!(text.contains(&format!("lambdawatch_cost_projected_30d_usd{{{a}}} ")));
        assert_eq!(
            value(r#"lambdawatch_cost_dropped_total{reason="unknown_region"} "#.to_owned()),
            1.0
        );
        assert_eq!(
            value(r#"lambdawatch_cost_dropped_total{reason="too_many_functions"} "#.to_owned()),
            0.0
        );
        assert!(!text.contains("function=\"c\""), "{text}");
        // Each family's HELP/TYPE once, before its samples, with the right type.
        for (name, _) in crate::cost::names::ALL {
            let n = text.matches(&format!("# TYPE {name} ")).count();
            assert!(n <= 1, "{name} typed {n} times");
        }
        assert!(text.contains("# TYPE lambdawatch_cost_usd_total counter"));
        assert!(text.contains("# TYPE lambdawatch_cost_projected_30d_usd gauge"));
        assert!(text.contains("# TYPE lambdawatch_cost_dropped_total counter"));
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let series = line.rsplit_once(' ').unwrap().0;
            assert!(seen.insert(series.to_owned()), "{series} twice");
        }
    }

    /// A counter born at its first event loses that event to `increase()`: every counter the
    /// generated rules read exists at 0 from the function's first report.
    #[test]
    fn rule_counters_exist_at_zero_from_the_first_report() {
        let mut agg = Aggregates::new(Layout::new(&[500.0], &[0.8]), 10);
        agg.zero_series = ZeroSeries::new(
            [InitKind::Provisioned],
            &BTreeMap::from([("orders-dlq".to_owned(), "a".to_owned())]),
        );
        let t = 1_700_000_000;
        one_invocation(&mut agg, "a", t);
        one_invocation(&mut agg, "b", t);
        let mut text = String::new();
        render_functions(&agg, t, &mut text);
        let a = r#"function="a",version="1",region="eu-west-1",account="123""#;
        let b = r#"function="b",version="1",region="eu-west-1",account="123""#;
        for l in [a, b] {
            for line in [
                format!("lambdawatch_throttles_total{{{l}}} 0"),
                format!("lambdawatch_dead_letter_errors_total{{{l}}} 0"),
                format!("lambdawatch_async_events_received_total{{{l}}} 0"),
                format!("lambdawatch_async_events_dropped_total{{{l}}} 0"),
                format!("lambdawatch_destination_delivery_failures_total{{{l}}} 0"),
                format!(r#"lambdawatch_cold_starts_total{{{l},init_type="on-demand"}} 0"#),
                format!(
                    r#"lambdawatch_cold_starts_total{{{l},init_type="provisioned-concurrency"}} 0"#
                ),
                format!(
                    r#"lambdawatch_init_duration_seconds_bucket{{{l},init_type="on-demand",le="0.5"}} 0"#
                ),
                format!(
                    r#"lambdawatch_init_duration_seconds_count{{{l},init_type="on-demand"}} 0"#
                ),
                format!(r#"lambdawatch_invocation_timeout_budget_total{{{l},within="true"}} 0"#),
                format!(r#"lambdawatch_invocation_timeout_budget_total{{{l},within="false"}} 0"#),
            ] {
                assert!(text.lines().any(|x| x == line), "missing {line}\n{text}");
            }
        }
        // Init types no SLO selects appear only once seen.
        assert!(!text.contains(r#"init_type="snap-start""#));
        // Configured queues only, for their own function.
        let queue = format!(r#"lambdawatch_dlq_messages_sent_total{{{a},queue="orders-dlq"}} 0"#);
        assert!(text.lines().any(|x| x == queue), "{text}");
        assert_eq!(
            text.matches("lambdawatch_dlq_messages_sent_total{").count(),
            1
        );
        // Each family once, each series once.
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let series = line.rsplit_once(' ').unwrap().0;
            assert!(seen.insert(series.to_owned()), "{series} twice");
        }
    }
}
