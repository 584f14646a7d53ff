//! The admin listener (`:9464`): `/metrics` (Prometheus text, Contract 2), `/api/v1/slos` (JSON
//! status of every SLO per function), `/api/v1/cost` (JSON cost of every function: list price so
//! far, today, the 30-day projection, cost-surprise and retry-storm status, each function's
//! `advice`: memory, timeout budget, cold starts; `crate::cost::advice`), `/healthz` (the process answers), `/readyz` (200 once the
//! listeners are up, 503 while shutting down) and `/` (a server-rendered status page: the SLO
//! table with error-budget bars and the cost table, no framework, no script).
//!
//! `/metrics` asks the aggregator for the per-function text (one command through its bounded
//! channel) and adds the latest evaluation's gauges and the pipeline's own counters.

use std::{fmt::Write, sync::atomic::Ordering};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::{
    export::prometheus,
    serve::{Shared, Snapshot},
};

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/cost", get(cost))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let now = crate::ingest::now_s();
    let Ok(mut text) = s
        .aggregates
        .query(move |a| {
            let mut out = String::with_capacity(a.functions.len() * 2048 + 4096);
            prometheus::render_functions(a, now, &mut out);
            out
        })
        .await
    else {
        return (StatusCode::SERVICE_UNAVAILABLE, "aggregator gone\n").into_response();
    };
    let snap = s.snapshot.borrow().clone();
    prometheus::render_slos(&snap, &mut text);
    prometheus::render_cost(&snap.cost, &mut text);
    prometheus::render_self(
        &s.ingest_stats,
        &s.aggregates.stats,
        &s.deliver.deliveries(),
        &mut text,
    );
    prometheus::render_samples(&s.aws.samples(), &mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The JSON document of `/api/v1/slos`.
pub fn slos_json(snap: &Snapshot) -> Value {
    let ev = &snap.evaluation;
    let functions: Vec<Value> = ev
        .functions
        .iter()
        .map(|f| {
            let slos: Vec<Value> = f
                .slos
                .iter()
                .map(|s| {
                    let alerts: Vec<Value> = snap
                        .alerts
                        .iter()
                        .filter(|a| a.key == f.key && a.slo == s.name)
                        .map(|a| {
                            json!({
                                "severity": a.severity.as_str(),
                                "state": a.phase.map_or("inactive", |p| match p {
                                    crate::alerting::state::Phase::Pending => "pending",
                                    crate::alerting::state::Phase::Firing => "firing",
                                }),
                                "fingerprint": a.fingerprint,
                            })
                        })
                        .collect();
                    let conditions: Vec<Value> = s
                        .conditions
                        .iter()
                        .map(|c| {
                            json!({
                                "severity": c.severity.as_str(),
                                "active": c.active,
                                "guard_passed": c.guard_passed,
                                "evidence": c.evidence,
                            })
                        })
                        .collect();
                    json!({
                        "slo": s.name,
                        "objective": s.objective,
                        "window": crate::config::format_duration(s.window),
                        "windows": s.windows,
                        "budget": { "good": s.budget.good, "valid": s.budget.valid },
                        "error_budget_consumed": s.budget_consumed,
                        "error_budget_remaining": s.budget_remaining,
                        "conditions": conditions,
                        "alerts": alerts,
                    })
                })
                .collect();
            json!({
                "function": f.key.function,
                "version": f.key.version,
                "region": f.key.region,
                "account": f.key.account,
                "last_seen_unix": f.last_seen_s,
                "cold_start_ms": f.cold_start_ms,
                "invocation_duration_ms": f.invocation_ms,
                "slos": slos,
            })
        })
        .collect();
    json!({ "evaluated_at_unix": ev.now_s, "functions": functions })
}

async fn slos(State(s): State<Shared>) -> Json<Value> {
    let snap = s.snapshot.borrow().clone();
    Json(slos_json(&snap))
}

/// `/api/v1/cost`: the latest cost evaluation (`crate::cost::CostReport`'s serde form).
async fn cost(State(s): State<Shared>) -> Json<Value> {
    let snap = s.snapshot.borrow().clone();
    Json(serde_json::to_value(&*snap.cost).unwrap_or(Value::Null))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: one row per (function, SLO).
pub fn status_html(snap: &Snapshot) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lambdawatch</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}\
         .bar{width:10em;height:.8em;background:#eee;display:inline-block}\
         .fill{height:100%;display:block}.ok{background:#2a2}.warn{background:#e90}.bad{background:#d22}\
         .firing{color:#d22;font-weight:bold}</style></head><body><h1>lambdawatch SLOs</h1>",
    );
    let _ = write!(
        h,
        "<p>Evaluated at {} (unix s), {} functions.</p><table><tr><th>function</th><th>version</th>\
         <th>region</th><th>SLO</th><th>objective</th><th>SLI 1h</th><th>SLI 30d</th>\
         <th>error budget left</th><th>burn 1h</th><th>cold start P50/P90/P99 ms</th><th>alert</th></tr>",
        snap.evaluation.now_s,
        snap.evaluation.functions.len()
    );
    for f in &snap.evaluation.functions {
        let p = f
            .cold_start_ms
            .values()
            .next()
            .map(|q| format!("{}/{}/{}", q.p50, q.p90, q.p99))
            .unwrap_or_else(|| "–".into());
        for s in &f.slos {
            let w = |label: &str| s.windows.iter().find(|w| w.window == label);
            let sli = |label: &str| {
                w(label)
                    .and_then(|w| w.sli)
                    .map_or("–".to_owned(), |v| format!("{v:.4}"))
            };
            let burn = w("1h")
                .and_then(|w| w.burn_rate)
                .map_or("–".to_owned(), |b| format!("{b:.2}"));
            let left = s.budget_remaining;
            let class = if left > 0.5 {
                "ok"
            } else if left > 0.0 {
                "warn"
            } else {
                "bad"
            };
            let width = (left.clamp(0.0, 1.0) * 100.0).round();
            let alert = snap
                .alerts
                .iter()
                .filter(|a| a.key == f.key && a.slo == s.name && a.phase.is_some())
                .map(|a| {
                    format!(
                        "<span class=\"firing\">{} {:?}</span>",
                        a.severity.as_str(),
                        a.phase.unwrap_or(crate::alerting::state::Phase::Pending)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><span class=\"bar\"><span class=\"fill {class}\" style=\"width:{width}%\"></span></span> {:.1}%</td>\
                 <td>{burn}</td><td>{}</td><td>{alert}</td></tr>",
                html_escape(&f.key.function),
                html_escape(&f.key.version),
                html_escape(&f.key.region),
                html_escape(&s.name),
                s.objective,
                sli("1h"),
                sli("30d"),
                left * 100.0,
                if s.name == "cold_start" {
                    p.as_str()
                } else {
                    ""
                },
            );
        }
    }
    h.push_str("</table>");
    cost_html(&snap.cost, &mut h);
    h.push_str("<h2>Recent notifications</h2><ul>");
    for n in snap.notifications.iter().rev().take(50) {
        let _ = write!(
            h,
            "<li>{} <b>{}</b> {} — <a href=\"{}\">runbook</a></li>",
            n.status.as_str(),
            html_escape(n.name()),
            html_escape(&n.summary),
            html_escape(&n.runbook_url)
        );
    }
    h.push_str("</ul></body></html>");
    h
}

/// The status page's cost table: one row per function of the latest cost evaluation.
fn cost_html(cost: &crate::cost::CostReport, h: &mut String) {
    let _ = write!(
        h,
        "<h2>Cost</h2><p>List price so far and today; 30-day projection{} (price table of {}).</p>\
         <table><tr><th>function</th><th>version</th><th>region</th><th>arch</th><th>memory</th>\
         <th>cost so far</th><th>today</th><th>30-day projection</th><th>retry fraction</th>\
         <th>alert</th><th>memory advice</th><th>timeout cascade</th>\
         <th>provisioned concurrency</th></tr>",
        if cost.free_tier {
            " with the free tier"
        } else {
            ""
        },
        html_escape(&cost.prices_as_of)
    );
    for r in &cost.functions {
        let c = &r.cost;
        let mut firing = Vec::new();
        if c.retry.alert {
            firing.push("retry storm");
        }
        if c.surprise.budget_alert {
            firing.push("over budget");
        }
        if c.surprise.rate_alert {
            firing.push("invocation rate");
        }
        let (memory, cascade, pc) = advice_cells(r.advice.as_ref());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} MB</td><td>${:.6}</td>\
             <td>${:.6}</td><td>${:.2}</td><td>{:.2}%</td><td class=\"firing\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&r.key.function),
            html_escape(&r.key.version),
            html_escape(&r.key.region),
            c.arch,
            c.memory_mb,
            c.cost_usd_total,
            c.today_usd,
            c.projected_30d_usd,
            c.retry.retry_fraction * 100.0,
            firing.join(", "),
            html_escape(&memory),
            html_escape(&cascade),
            html_escape(&pc),
        );
    }
    h.push_str("</table>");
}

/// The status page's advice cells: memory, timeout cascade, provisioned concurrency.
fn advice_cells(a: Option<&crate::cost::advice::FunctionAdvice>) -> (String, String, String) {
    use crate::cost::advice::{CascadeDoc, PcDoc};
    let Some(a) = a else {
        return ("-".into(), "-".into(), "-".into());
    };
    let m = &a.memory;
    let memory = match m.recommendations.iter().find_map(|r| r.recommendation_mb) {
        Some(_) => m
            .recommendations
            .iter()
            .map(|r| match r.recommendation_mb {
                Some(mb) => format!("{} {mb} MB", r.strategy.as_str()),
                None => format!("{} -", r.strategy.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => format!("insufficient data (floor {} MB)", m.floor_mb),
    };
    let cascade = match &a.cascade {
        CascadeDoc::Cascade(c) => {
            let d = c.downstreams.first();
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
            format!(
                "{}: P99 {} → {}, timeouts {:.1}% → {:.1}%",
                c.suspect.as_deref().unwrap_or("?"),
                ms(d.and_then(|d| d.baseline.p99_ms)),
                ms(d.and_then(|d| d.recent.p99_ms)),
                c.baseline.rate * 100.0,
                c.recent.rate * 100.0
            )
        }
        CascadeDoc::NoCascade(c) => format!(
            "none ({} downstreams, timeouts {:.1}%)",
            c.downstreams.len(),
            c.recent.rate * 100.0
        ),
        CascadeDoc::Unknown { .. } => "unknown (no client spans)".into(),
    };
    let pc = match &a.provisioned_concurrency {
        PcDoc::Recommended(p) | PcDoc::NotRecommended(p) => format!(
            "{}{} units, {:+.2} $/month, {:.0} cold starts avoided / 30 d",
            if p.advice.recommended {
                "recommended: "
            } else {
                "not recommended: "
            },
            p.advice.units,
            p.advice.net_monthly_usd,
            p.advice.cold_starts_avoided_30d
        ),
        PcDoc::Unknown { .. } => "unknown (no complete minute yet)".into(),
        PcDoc::NotApplicable { .. } => "not applicable (managed instances)".into(),
    };
    (memory, cascade, pc)
}

async fn status_page(State(s): State<Shared>) -> Html<String> {
    let snap = s.snapshot.borrow().clone();
    Html(status_html(&snap))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::aggregate::{Event, FunctionKey, Invocation, Outcome};
    use crate::cost::{CostConfig, CostFeed, prices::PriceTable};
    use std::collections::BTreeMap;

    /// `/api/v1/slos` for a small fleet that exercises every part of the document (burn rates,
    /// guards, a count budget, cold starts of two init types, no data, firing and inactive
    /// alerts), byte for byte against `slo/testdata/api_v1_slos.json`, which was written by the
    /// evaluation before its output types changed (`SloName`, `Conditions`, `ColdStartMs`).
    /// Regenerate only for an intended change: `LAMBDAWATCH_UPDATE_GOLDEN=1 cargo test -p
    /// lambdawatch-collector api_v1_slos_golden`.
    #[test]
    fn api_v1_slos_golden() {
        use crate::aggregate::{Aggregates, Batch, Group, InitKind, PlatformCounter, Target};
        use crate::alerting::state::{AlertStates, Policy};
        use crate::serve::Evaluator;
        use crate::slo::{eval, spec::SloSpec};
        use std::{sync::Arc, time::Duration};

        const T0: u64 = 1_799_996_400;
        let spec = Arc::new(SloSpec::embedded_default());
        let mut agg = Aggregates::new(eval::layout_for(&spec), 100);
        let key = |f: &str| FunctionKey {
            function: f.into(),
            version: "$LATEST".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        };
        let inv = |t_s: u64, outcome: Outcome, ms: f64| {
            Event::Invocation(Invocation {
                t_s,
                outcome,
                duration_ms: ms,
                billed_ms: Some(ms.ceil()),
                memory_mb: Some(512.0),
                max_memory_mb: Some(90.0),
                timeout_ms: Some(1000.0),
                request_id: None,
                span_fingerprint: None,
            })
        };
        let now = T0 + 6 * 3600;
        // `healthy`: a minute cadence for 6 h, a few cold starts of two init types.
        let mut healthy: Vec<Event> = (0..360)
            .map(|m| inv(T0 + m * 60, Outcome::Success, 20.0 + (m % 7) as f64))
            .collect();
        for (i, (kind, ms)) in [
            (InitKind::OnDemand, 320.0),
            (InitKind::OnDemand, 700.0),
            (InitKind::Provisioned, 90.0),
        ]
        .into_iter()
        .enumerate()
        {
            healthy.push(Event::Init {
                t_s: T0 + 600 * i as u64,
                kind,
                duration_ms: ms,
            });
        }
        // `broken`: 100/h for 5 h, then every invocation fails for the last hour (pages), slow
        // ones near the timeout, and 6 throttles (over the count budget of 5).
        let mut broken: Vec<Event> = (0..500)
            .map(|i| inv(T0 + i * 36, Outcome::Success, 850.0))
            .collect();
        broken.extend((0..100).map(|i| inv(T0 + 5 * 3600 + i * 36, Outcome::Error, 40.0)));
        broken.push(Event::Platform {
            t_s: T0 + 3600,
            counter: PlatformCounter::Throttles,
            value: 6,
            queue: None,
        });
        // `silent`: one a minute for 3 h, nothing since (no data after the spec's delay).
        let silent: Vec<Event> = (0..180)
            .map(|m| inv(T0 + m * 60, Outcome::Timeout, 1000.0))
            .collect();
        for (f, events) in [("healthy", healthy), ("broken", broken), ("silent", silent)] {
            agg.apply(Batch {
                received_s: now,
                groups: vec![Group {
                    target: Target::Function {
                        key: key(f),
                        tags: vec![],
                        instance: "i".into(),
                    },
                    events,
                }],
            });
        }
        agg.refresh_percentiles(now);
        let mut ev = Evaluator {
            spec: spec.clone(),
            runbook_base: spec.defaults.runbook_base_url.clone(),
            policy: Policy {
                for_: Duration::from_secs(60),
                resend: Duration::from_secs(600),
            },
            states: AlertStates::default(),
            history: Vec::new(),
        };
        let at = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
        // Two rounds a minute apart: active conditions become pending, then firing.
        let _ = ev.round(eval::evaluate(&spec, &agg, now - 60), at(now - 60));
        let (_, snap) = ev.round(eval::evaluate(&spec, &agg, now), at(now));
        let text = serde_json::to_string_pretty(&slos_json(&snap)).unwrap() + "\n";
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/slo/testdata/api_v1_slos.json"
        );
        if std::env::var_os("LAMBDAWATCH_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (LAMBDAWATCH_UPDATE_GOLDEN=1 writes it)"));
        assert!(
            text == golden,
            "/api/v1/slos differs from {path}:\n{}",
            first_difference(&golden, &text)
        );
        // The document covers what it claims to.
        for needle in [
            "\"state\": \"firing\"",
            "\"state\": \"inactive\"",
            "\"on-demand\"",
            "\"provisioned-concurrency\"",
            "\"slo\": \"throttles\"",
            "\"guard_passed\": false",
            "\"active\": true",
        ] {
            assert!(golden.contains(needle), "golden lacks {needle}");
        }
    }

    fn first_difference(want: &str, got: &str) -> String {
        want.lines()
            .zip(got.lines())
            .enumerate()
            .find(|(_, (w, g))| w != g)
            .map_or_else(
                || format!("lengths {} vs {}", want.len(), got.len()),
                |(i, (w, g))| format!("line {}: want `{w}`, got `{g}`", i + 1),
            )
    }

    /// `/api/v1/cost` is the report's serde form; the status page lists the same functions.
    #[test]
    fn cost_document_and_status_page() {
        let mut feed = CostFeed::new(
            PriceTable::embedded().unwrap(),
            CostConfig::default(),
            BTreeMap::new(),
        );
        let key = FunctionKey {
            function: "<orders>".into(),
            version: "7".into(),
            region: "us-east-1".into(),
            account: "1".into(),
        };
        let t = 1_795_996_800;
        feed.observe(
            &key,
            "i",
            &BTreeMap::new(),
            &Event::Invocation(Invocation {
                t_s: t,
                outcome: Outcome::Success,
                duration_ms: 1000.0,
                billed_ms: Some(1000.0),
                memory_mb: Some(1024.0),
                max_memory_mb: None,
                timeout_ms: None,
                request_id: Some("r".into()),
                span_fingerprint: None,
            }),
        );
        let snap = Snapshot {
            cost: std::sync::Arc::new(feed.evaluate(t + 10)),
            ..Snapshot::default()
        };
        let doc = serde_json::to_value(&*snap.cost).unwrap();
        let row = &doc["functions"][0];
        assert_eq!(row["function"], "<orders>");
        assert_eq!(row["version"], "7");
        // 1 GB-s at $0.0000166667 plus one request at $0.20/M.
        assert!((row["cost_usd_total"].as_f64().unwrap() - 0.0000168667).abs() < 1e-12);
        let page = status_html(&snap);
        assert!(page.contains("<h2>Cost</h2>"));
        assert!(page.contains("<td>&lt;orders&gt;</td><td>7</td><td>us-east-1</td><td>x86_64</td><td>1024 MB</td><td>$0.000017</td>"), "{page}");
    }
}
