//! Lint for `dashboards/*.json`: the conventions of issue 6, checked against Contract 2 of
//! `docs/ARCHITECTURE.md` as it stands when the test runs.
//!
//! Every dashboard must have: `schemaVersion` ≥ 39; an import envelope (`__inputs` with a Prometheus
//! datasource input, `__requires` naming the Prometheus datasource); exactly one `datasource`
//! template variable (of plugin `prometheus`), used by every panel, every target and every query
//! variable; a unit (`fieldConfig.defaults.unit`) and a non-empty description on every panel; unique
//! panel ids; only metric names from Contract 2 (a histogram through its `_bucket`/`_sum`/`_count`
//! series); counters and histogram series only directly under `rate()`/`increase()`/`irate()`, and
//! those always over `[$__rate_interval]`; no `rate()` over a gauge; a `function` variable, where
//! there is one, from `label_values(lambdawatch_invocations_total, function)`; and every template
//! variable in a query substitutable for the end-to-end run.
//!
//! `every_dashboard_expression_parses_with_promtool` also runs every substituted expression through
//! Prometheus's own parser (`promtool check rules`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use lambdawatch_tests::dashboards::{
    self, MetricType, label_values_metric, panels, resolve_metric, selectors, substitution_values,
    targets, variable_query, variables,
};
use serde_json::{Value, json};

const FUNCTION_VARIABLE_QUERY: &str = "label_values(lambdawatch_invocations_total, function)";
const RATE_FUNCTIONS: &[&str] = &["rate", "increase", "irate"];
const EXPECTED_DASHBOARDS: &[&str] = &[
    "fleet-slo-overview",
    "function-drilldown",
    "pipeline-health",
];

/// Every problem of `dashboard` against the conventions, as readable sentences; empty when clean.
fn lint(dashboard: &Value, contract: &BTreeMap<String, MetricType>) -> Vec<String> {
    let mut problems = Vec::new();

    match dashboard.get("schemaVersion").and_then(Value::as_u64) {
        Some(v) if v >= 39 => {}
        other => problems.push(format!("schemaVersion must be >= 39, is {other:?}")),
    }
    let has_prometheus_input = dashboard
        .get("__inputs")
        .and_then(Value::as_array)
        .is_some_and(|inputs| {
            inputs.iter().any(|i| {
                i.get("type") == Some(&json!("datasource"))
                    && i.get("pluginId") == Some(&json!("prometheus"))
            })
        });
    if !has_prometheus_input {
        problems.push("__inputs has no Prometheus datasource input".to_owned());
    }
    let requires_prometheus = dashboard
        .get("__requires")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter().any(|i| {
                i.get("type") == Some(&json!("datasource"))
                    && i.get("id") == Some(&json!("prometheus"))
            })
        });
    if !requires_prometheus {
        problems.push("__requires does not name the prometheus datasource".to_owned());
    }

    // The datasource variable.
    let ds_vars: Vec<&Value> = variables(dashboard)
        .iter()
        .filter(|v| v.get("type") == Some(&json!("datasource")))
        .collect();
    let ds_name = match ds_vars.as_slice() {
        [one] => {
            if one.get("query") != Some(&json!("prometheus")) {
                problems
                    .push("the datasource variable must select prometheus datasources".to_owned());
            }
            one.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        }
        many => {
            problems.push(format!(
                "exactly one datasource variable wanted, found {}",
                many.len()
            ));
            String::new()
        }
    };
    let uses_ds = |holder: &Value| -> bool {
        let uid = holder.pointer("/datasource/uid").and_then(Value::as_str);
        !ds_name.is_empty()
            && (uid == Some(&format!("${{{ds_name}}}")) || uid == Some(&format!("${ds_name}")))
    };

    // Template variables.
    for v in variables(dashboard) {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if v.get("type") != Some(&json!("query")) {
            continue;
        }
        if !uses_ds(v) {
            problems.push(format!(
                "variable ${name} does not use the datasource variable"
            ));
        }
        let query = variable_query(v).unwrap_or("");
        if name == "function"
            && query.split_whitespace().collect::<String>()
                != FUNCTION_VARIABLE_QUERY
                    .split_whitespace()
                    .collect::<String>()
        {
            problems.push(format!(
                "variable $function must be `{FUNCTION_VARIABLE_QUERY}`, is {query:?}"
            ));
        }
        match label_values_metric(query) {
            Ok(Some(metric)) if resolve_metric(contract, &metric).is_none() => problems.push(
                format!("variable ${name} reads {metric}, which is not in Contract 2"),
            ),
            Ok(_) => {}
            Err(e) => problems.push(format!("variable ${name}: {e}")),
        }
    }

    // Panels.
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let title = panel.get("title").and_then(Value::as_str).unwrap_or("");
        let what = format!("panel {title:?}");
        match panel.get("id").and_then(Value::as_i64) {
            Some(id) if !ids.insert(id) => {
                problems.push(format!("{what}: duplicate panel id {id}"))
            }
            Some(_) => {}
            None => problems.push(format!("{what}: no numeric id")),
        }
        if title.trim().is_empty() {
            problems.push(format!("{what}: empty title"));
        }
        if panel.get("type") == Some(&json!("row")) {
            if panel.get("targets").is_some() {
                problems.push(format!("{what}: a row must not carry queries"));
            }
            continue;
        }
        let description = panel
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        if description.trim().is_empty() {
            problems.push(format!("{what}: no description"));
        }
        let unit = panel
            .pointer("/fieldConfig/defaults/unit")
            .and_then(Value::as_str)
            .unwrap_or("");
        if unit.trim().is_empty() {
            problems.push(format!("{what}: no unit in fieldConfig.defaults.unit"));
        }
        if !uses_ds(panel) {
            problems.push(format!("{what}: does not use the datasource variable"));
        }
        if panel
            .get("targets")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            problems.push(format!("{what}: no targets"));
        }
    }

    // Targets and their PromQL.
    let values = substitution_values(dashboard, "lint-function");
    for t in targets(dashboard) {
        let what = format!("panel {:?} target {}", t.panel_title, t.ref_id);
        if !uses_ds(t.target) {
            problems.push(format!("{what}: does not use the datasource variable"));
        }
        if t.expr.trim().is_empty() {
            problems.push(format!("{what}: no expr"));
            continue;
        }
        if let Err(e) = dashboards::substitute(&t.expr, &values) {
            problems.push(format!("{what}: {e}"));
        }
        let found = match selectors(&t.expr) {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        if found.is_empty() {
            problems.push(format!("{what}: selects no metric"));
        }
        for s in found {
            let Some((metric, kind)) = resolve_metric(contract, &s.metric) else {
                problems.push(format!("{what}: {} is not a Contract 2 metric", s.metric));
                continue;
            };
            let under_rate = s
                .function
                .as_deref()
                .is_some_and(|f| RATE_FUNCTIONS.contains(&f));
            match kind {
                MetricType::Counter | MetricType::Histogram if !under_rate => problems.push(
                    format!("{what}: {} ({kind:?} of {metric}) must be used through rate() or increase()", s.metric),
                ),
                MetricType::Gauge if under_rate => problems.push(format!(
                    "{what}: {} is a gauge; rate()/increase() only apply to counters",
                    s.metric
                )),
                _ => {}
            }
            if under_rate && s.range.as_deref() != Some("$__rate_interval") {
                problems.push(format!(
                    "{what}: {}() over {} must use [$__rate_interval], has {:?}",
                    s.function.as_deref().unwrap_or(""),
                    s.metric,
                    s.range
                ));
            }
        }
    }
    problems
}

/// A dashboard that meets every convention; the broken fixtures below are one change away from it.
fn good_fixture() -> Value {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    json!({
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "schemaVersion": 39,
        "title": "fixture",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "function", "type": "query", "datasource": ds, "query": {"query": FUNCTION_VARIABLE_QUERY}},
        ]},
        "panels": [
            {"id": 1, "type": "timeseries", "title": "Error rate", "description": "errors / all",
             "datasource": ds, "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
             "targets": [{"refId": "A", "datasource": ds,
                          "expr": "sum(rate(lambdawatch_invocations_total{function=~\"$function\", outcome=\"error\"}[$__rate_interval])) / sum(rate(lambdawatch_invocations_total{function=~\"$function\"}[$__rate_interval]))"}]},
            {"id": 2, "type": "timeseries", "title": "P99 init", "description": "p99",
             "datasource": ds, "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
             "targets": [{"refId": "A", "datasource": ds,
                          "expr": "histogram_quantile(0.99, sum by (le) (rate(lambdawatch_init_duration_seconds_bucket[$__rate_interval])))"},
                         {"refId": "B", "datasource": ds, "expr": "max(lambdawatch_timeout_seconds{function=\"$function\"})"}]},
        ]
    })
}

#[test]
fn every_dashboard_passes_the_lint() {
    let contract = dashboards::repo_contract_metrics();
    let all = dashboards::load_all();
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    for expected in EXPECTED_DASHBOARDS {
        assert!(
            names.contains(expected),
            "dashboards/{expected}.json missing; found {names:?}"
        );
    }
    let mut report = Vec::new();
    for d in &all {
        assert!(
            targets(&d.json).len() >= 5,
            "{} has almost no queries: is it empty?",
            d.path.display()
        );
        report.extend(
            lint(&d.json, &contract)
                .into_iter()
                .map(|p| format!("{}: {p}", d.name)),
        );
    }
    assert!(report.is_empty(), "dashboard lint:\n{}", report.join("\n"));
}

#[test]
fn good_fixture_is_clean() {
    let contract = dashboards::repo_contract_metrics();
    assert_eq!(lint(&good_fixture(), &contract), Vec::<String>::new());
}

#[test]
fn lint_rejects_every_broken_convention() {
    let contract = dashboards::repo_contract_metrics();
    type Break = fn(&mut Value);
    let cases: &[(&str, Break, &str)] = &[
        (
            "old schema",
            |d| d["schemaVersion"] = json!(38),
            "schemaVersion must be >= 39",
        ),
        (
            "no import input",
            |d| d["__inputs"] = json!([]),
            "__inputs has no Prometheus",
        ),
        (
            "no requires",
            |d| d["__requires"] = json!([]),
            "__requires does not name",
        ),
        (
            "two datasource variables",
            |d| {
                let extra = json!({"name": "ds2", "type": "datasource", "query": "prometheus"});
                d["templating"]["list"].as_array_mut().unwrap().push(extra);
            },
            "exactly one datasource variable wanted, found 2",
        ),
        (
            "no datasource variable",
            |d| {
                d["templating"]["list"].as_array_mut().unwrap().remove(0);
            },
            "exactly one datasource variable wanted, found 0",
        ),
        (
            "hard-coded panel datasource",
            |d| d["panels"][0]["datasource"]["uid"] = json!("P1809F7CD0C75ACF3"),
            "panel \"Error rate\": does not use the datasource variable",
        ),
        (
            "hard-coded target datasource",
            |d| {
                d["panels"][1]["targets"][1]["datasource"] =
                    json!({"type": "prometheus", "uid": "abc"})
            },
            "panel \"P99 init\" target B: does not use the datasource variable",
        ),
        (
            "variable without datasource",
            |d| d["templating"]["list"][1]["datasource"] = Value::Null,
            "variable $function does not use the datasource variable",
        ),
        (
            "function variable from another metric",
            |d| {
                d["templating"]["list"][1]["query"] =
                    json!("label_values(lambdawatch_cold_starts_total, function)")
            },
            "variable $function must be",
        ),
        (
            "no unit",
            |d| d["panels"][0]["fieldConfig"]["defaults"] = json!({}),
            "panel \"Error rate\": no unit",
        ),
        (
            "empty description",
            |d| d["panels"][1]["description"] = json!("  "),
            "panel \"P99 init\": no description",
        ),
        (
            "duplicate id",
            |d| d["panels"][1]["id"] = json!(1),
            "duplicate panel id 1",
        ),
        (
            "rate over a fixed window",
            |d| {
                d["panels"][1]["targets"][0]["expr"] = json!(
                    "histogram_quantile(0.99, sum by (le) (rate(lambdawatch_init_duration_seconds_bucket[5m])))"
                )
            },
            "must use [$__rate_interval], has Some(\"5m\")",
        ),
        (
            "increase over a fixed window",
            |d| {
                d["panels"][0]["targets"][0]["expr"] =
                    json!("sum(increase(lambdawatch_throttles_total[1d]))")
            },
            "increase() over lambdawatch_throttles_total must use [$__rate_interval]",
        ),
        (
            "metric not in the contract",
            |d| d["panels"][1]["targets"][1]["expr"] = json!("max(aws_lambda_timeout_seconds)"),
            "aws_lambda_timeout_seconds is not a Contract 2 metric",
        ),
        (
            "invented lambdawatch metric",
            |d| {
                d["panels"][1]["targets"][1]["expr"] =
                    json!("sum(rate(lambdawatch_retry_storms_total[$__rate_interval]))")
            },
            "lambdawatch_retry_storms_total is not a Contract 2 metric",
        ),
        (
            "raw counter",
            |d| d["panels"][1]["targets"][1]["expr"] = json!("sum(lambdawatch_invocations_total)"),
            "must be used through rate() or increase()",
        ),
        (
            "bare histogram name",
            |d| d["panels"][1]["targets"][1]["expr"] = json!("lambdawatch_init_duration_seconds"),
            "lambdawatch_init_duration_seconds is not a Contract 2 metric",
        ),
        (
            "rate over a gauge",
            |d| {
                d["panels"][1]["targets"][1]["expr"] =
                    json!("rate(lambdawatch_timeout_seconds[$__rate_interval])")
            },
            "is a gauge",
        ),
        (
            "undefined variable",
            |d| {
                d["panels"][1]["targets"][1]["expr"] =
                    json!("max(lambdawatch_timeout_seconds{region=\"$region\"})")
            },
            "no value for template variable `$region`",
        ),
        (
            "unparseable expression",
            |d| d["panels"][1]["targets"][1]["expr"] = json!("max(lambdawatch_timeout_seconds"),
            "unbalanced `(`",
        ),
        (
            "panel without targets",
            |d| d["panels"][1]["targets"] = json!([]),
            "panel \"P99 init\": no targets",
        ),
    ];
    let mut failures = Vec::new();
    for (name, breaker, expected) in cases {
        let mut broken = good_fixture();
        breaker(&mut broken);
        let problems = lint(&broken, &contract);
        if !problems.iter().any(|p| p.contains(expected)) {
            failures.push(format!(
                "{name}: wanted a problem containing {expected:?}, got {problems:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn contract_2_is_read_from_the_architecture_doc() {
    let contract = dashboards::repo_contract_metrics();
    assert!(
        contract.len() >= 25,
        "only {} metrics parsed",
        contract.len()
    );
    assert_eq!(
        contract.get("lambdawatch_invocations_total"),
        Some(&MetricType::Counter)
    );
    assert_eq!(
        contract.get("lambdawatch_init_duration_seconds"),
        Some(&MetricType::Histogram)
    );
    assert_eq!(
        contract.get("lambdawatch_slo_burn_rate"),
        Some(&MetricType::Gauge)
    );
    assert!(
        contract.keys().all(|k| k.starts_with("lambdawatch_")),
        "{contract:?}"
    );
}

/// Runs `promtool check rules` over `exprs` (each a recording rule); returns success and output.
fn promtool_check(exprs: &[(String, Value)]) -> (bool, String) {
    let promtool = lambdawatch_tests::peers::bin("promtool");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (expr, labels))| {
            json!({"record": format!("lambdawatch_dashboard_check:{i}"), "expr": expr, "labels": labels})
        })
        .collect();
    // JSON is YAML: promtool reads it as a rule file.
    let file = json!({"groups": [{"name": "dashboard-expressions", "rules": rules}]});
    let path = std::env::temp_dir().join(format!(
        "lambdawatch-dashboard-exprs-{}-{}.json",
        std::process::id(),
        exprs.len()
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules", "--lint=none"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok =
        out.status.success() && text.contains(&format!("SUCCESS: {} rules found", exprs.len()));
    (ok, text)
}

#[test]
fn every_dashboard_expression_parses_with_promtool() {
    let mut exprs = Vec::new();
    for q in dashboards::all_promql_queries("orders") {
        assert!(!q.expr.contains('$'), "unsubstituted variable in {q:?}");
        let labels = json!({"dashboard": q.dashboard, "panel": q.panel_title, "ref_id": q.ref_id});
        exprs.push((q.expr, labels));
    }
    let (ok, text) = promtool_check(&exprs);
    assert!(
        ok,
        "promtool rejected a dashboard expression (or did not check all {}):\n{text}",
        exprs.len()
    );
}

#[test]
fn promtool_check_fails_on_a_broken_expression() {
    let broken = vec![(
        "sum(rate(lambdawatch_invocations_total[1m])".to_owned(),
        json!({}),
    )];
    let (ok, text) = promtool_check(&broken);
    assert!(!ok, "promtool accepted an unbalanced expression:\n{text}");
}

/// The runbook pages, one per alert (`docs/runbooks/{page}.md`), plus `index.md`.
const RUNBOOK_PAGES: &[&str] = &[
    "cold-start",
    "error-rate",
    "dlq",
    "throttles",
    "timeout-budget",
    "no-data",
    "pipeline-drops",
    "cost",
    "retry-storm",
];
const RUNBOOK_SECTIONS: &[&str] = &[
    "## What it means",
    "## Confirm on the dashboards",
    "## Likely causes",
    "## What to do",
];

/// Panel references in runbook Markdown, written `*Dashboard* › **Panel**`, optionally continued
/// with ` and **Panel**`, `, **Panel**` or ` beside **Panel**`: `(dashboard, panel)` pairs.
fn runbook_panel_references(markdown: &str) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for line in markdown.lines() {
        let mut rest = line;
        while let Some(pos) = rest.find("* › **") {
            let dashboard = rest[..pos].rsplit('*').next().unwrap_or("").to_owned();
            let mut tail = &rest[pos + "* › **".len()..];
            while let Some(end) = tail.find("**") {
                refs.push((dashboard.clone(), tail[..end].to_owned()));
                tail = &tail[end + 2..];
                let next = [" and **", ", **", ", and **", " beside **"]
                    .iter()
                    .find_map(|c| tail.strip_prefix(c));
                match next {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            rest = tail;
        }
    }
    refs
}

#[test]
fn runbook_panel_references_parse() {
    let md = "1. *Fleet SLO overview* › **Throttles** beside **Invocations** and **Cost per day**: x **not a panel**\n\
              2. *Pipeline health* › **A**, **B**; *Function drill-down* › **C**.";
    let refs = runbook_panel_references(md);
    let want = [
        ("Fleet SLO overview", "Throttles"),
        ("Fleet SLO overview", "Invocations"),
        ("Fleet SLO overview", "Cost per day"),
        ("Pipeline health", "A"),
        ("Pipeline health", "B"),
        ("Function drill-down", "C"),
    ];
    let got: Vec<(&str, &str)> = refs.iter().map(|(d, p)| (d.as_str(), p.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn every_runbook_exists_and_names_only_real_panels() {
    let dir = lambdawatch_tests::repo_root().join("docs/runbooks");
    // Dashboard short title ("Fleet SLO overview" from "lambdawatch · Fleet SLO overview") → panel titles.
    let mut panels_by_dashboard: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in dashboards::load_all() {
        let title = d.json.get("title").and_then(Value::as_str).unwrap_or("");
        let short = title.rsplit(" · ").next().unwrap_or(title).to_owned();
        let titles = panels(&d.json)
            .into_iter()
            .filter_map(|p| p.get("title").and_then(Value::as_str).map(str::to_owned))
            .collect();
        panels_by_dashboard.insert(short, titles);
    }
    let mut problems = Vec::new();
    for page in RUNBOOK_PAGES.iter().chain(&["index"]) {
        let path = dir.join(format!("{page}.md"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!("{} missing", path.display()));
            continue;
        };
        // Relative links to other pages must resolve.
        for (i, _) in text.match_indices("](") {
            let target = text[i + 2..].split(')').next().unwrap_or("");
            if target.ends_with(".md") && !target.contains("://") && !dir.join(target).is_file() {
                problems.push(format!("{page}.md links to missing {target}"));
            }
        }
        if *page == "index" {
            for p in RUNBOOK_PAGES {
                if !text.contains(&format!("]({p}.md)")) {
                    problems.push(format!("index.md does not link {p}.md"));
                }
            }
            continue;
        }
        for section in RUNBOOK_SECTIONS {
            if !text.contains(section) {
                problems.push(format!("{page}.md has no `{section}` section"));
            }
        }
        let refs = runbook_panel_references(&text);
        if refs.len() < 2 {
            problems.push(format!("{page}.md names fewer than two dashboard panels"));
        }
        for (dashboard, panel) in refs {
            match panels_by_dashboard.get(&dashboard) {
                None => problems.push(format!("{page}.md: no dashboard titled {dashboard:?}")),
                Some(titles) if !titles.contains(&panel) => problems.push(format!(
                    "{page}.md: dashboard {dashboard:?} has no panel {panel:?}"
                )),
                Some(_) => {}
            }
        }
        if !text.contains("aws ") {
            problems.push(format!("{page}.md has no AWS CLI command"));
        }
    }
    assert!(problems.is_empty(), "runbooks:\n{}", problems.join("\n"));
}

/// Metrics Contract 2 lists without the per-function labels: the collector's and the pipeline's own
/// (the extension counters name `function` as an extra label instead).
const PIPELINE_METRIC_PREFIXES: &[&str] = &[
    "lambdawatch_ingest_",
    "lambdawatch_aggregate_",
    "lambdawatch_alert_deliveries_",
    "lambdawatch_cloudwatch_",
    "lambdawatch_extension_",
];
const HISTOGRAM_BOUNDS: &[&str] = &["0.1", "0.25", "0.5", "1", "2.5", "10", "+Inf"];

/// A Prometheus text exposition with one series per label-value combination of every Contract 2
/// metric, derived from the contract table alone: counters and histogram buckets grow with `tick`,
/// gauges hold 1. Labels without listed values get the value `x`.
fn contract_exposition(
    types: &BTreeMap<String, MetricType>,
    labels: &dashboards::ContractLabels,
    function: &str,
    tick: u64,
) -> String {
    let mut out = String::new();
    for (metric, kind) in types {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        if !PIPELINE_METRIC_PREFIXES
            .iter()
            .any(|p| metric.starts_with(p))
        {
            combos[0] = vec![
                ("function".into(), function.into()),
                ("version".into(), "7".into()),
                ("region".into(), "eu-west-1".into()),
                ("account".into(), "123456789012".into()),
            ];
        }
        for (label, values) in labels.get(metric).map(Vec::as_slice).unwrap_or_default() {
            let values: Vec<String> = match (label.as_str(), values.is_empty()) {
                ("function", _) => vec![function.to_owned()],
                (_, true) => vec!["x".to_owned()],
                (_, false) => values.clone(),
            };
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((label.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let kind_name = match kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        };
        out.push_str(&format!("# TYPE {metric} {kind_name}\n"));
        let render = |c: &[(String, String)], extra: Option<(&str, &str)>| -> String {
            let mut parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        for c in &combos {
            match kind {
                MetricType::Counter => {
                    out.push_str(&format!("{metric}{} {}\n", render(c, None), tick * 3))
                }
                MetricType::Gauge => out.push_str(&format!("{metric}{} 1\n", render(c, None))),
                MetricType::Histogram => {
                    for (i, le) in HISTOGRAM_BOUNDS.iter().enumerate() {
                        let count = tick * (i as u64 + 1);
                        out.push_str(&format!(
                            "{metric}_bucket{} {count}\n",
                            render(c, Some(("le", le)))
                        ));
                    }
                    let total = tick * HISTOGRAM_BOUNDS.len() as u64;
                    out.push_str(&format!("{metric}_sum{} {}\n", render(c, None), total));
                    out.push_str(&format!("{metric}_count{} {total}\n", render(c, None)));
                }
            }
        }
    }
    out
}

/// Serves `contract_exposition` on 127.0.0.1 (a new tick per scrape) from a background thread that
/// lives as long as the test process; returns the port.
fn serve_contract_exposition(function: &'static str) -> u16 {
    use std::io::{Read, Write};
    let architecture =
        std::fs::read_to_string(lambdawatch_tests::repo_root().join("docs/ARCHITECTURE.md"))
            .unwrap();
    let types = dashboards::contract_metrics(&architecture).unwrap();
    let labels = dashboards::contract_labels(&architecture).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut tick = 1u64;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = contract_exposition(&types, &labels, function, tick);
            tick += 1;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    port
}

/// Every dashboard target returns data (at least one finite sample) from a real Prometheus that
/// scraped series shaped exactly as Contract 2 describes them. This proves the queries match the contract's names, labels and label
/// values (outcome, within, slo, window, ...); the end-to-end test does the same against the
/// collector itself with `dashboards::queries_without_data`.
#[test]
fn every_dashboard_query_returns_data_from_prometheus_scraping_contract_shaped_metrics() {
    use std::time::Duration;
    const FUNCTION: &str = "orders";
    let target_port = serve_contract_exposition(FUNCTION);
    let target = format!("127.0.0.1:{target_port}");
    let prometheus = lambdawatch_tests::prometheus::start(
        "prometheus",
        &lambdawatch_tests::prometheus::Config::job("1s", "contract", &[&target]),
    );
    let base = prometheus.base.clone();
    // Enough scrapes for rate() over the 1m that $__rate_interval becomes.
    let enough = format!(
        "{base}/api/v1/query?query={}",
        dashboards::url_encode("count_over_time(up{job=\"contract\"}[1m]) >= 4")
    );
    lambdawatch_tests::wait_until(
        "prometheus to scrape the contract target 4 times",
        Duration::from_secs(60),
        || {
            let r = lambdawatch_tests::http::get(&enough, Duration::from_secs(2)).ok()?;
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            (v.pointer("/data/result")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                > 0)
            .then_some(())
        },
    );
    let mut queries = Vec::new();
    for d in dashboards::load_all() {
        queries.extend(dashboards::promql_queries(&d, FUNCTION).unwrap());
        // Variable queries too: `label_values(selector, label)` must find series with the label.
        let values = dashboards::substitution_values(&d.json, FUNCTION);
        for v in variables(&d.json) {
            let Some(query) = variable_query(v) else {
                continue;
            };
            let Some(metric) = label_values_metric(query).unwrap() else {
                continue;
            };
            let inner = query
                .trim()
                .trim_start_matches("label_values(")
                .trim_end_matches(')');
            let (selector, label) = inner.rsplit_once(',').unwrap();
            for expr in [
                dashboards::substitute(selector.trim(), &values).unwrap(),
                format!("count({metric}{{{}!=\"\"}})", label.trim()),
            ] {
                queries.push(dashboards::Query {
                    dashboard: d.name.clone(),
                    panel_title: format!("variable {}", v["name"]),
                    ref_id: "-".into(),
                    expr,
                });
            }
        }
    }
    assert!(queries.len() > 40, "only {} queries", queries.len());
    let mut problems = dashboards::queries_without_data(&base, &queries);
    // Data, and a number: a query whose every sample is NaN (0/0, a quantile of empty buckets)
    // draws nothing in Grafana either.
    for q in &queries {
        if let Ok(samples) = prometheus.samples(&q.expr)
            && !samples.is_empty()
            && !samples.iter().any(|s| s.value.is_finite())
        {
            problems.push(format!(
                "{} › {:?} target {}: no finite sample for {}: {samples:?}",
                q.dashboard, q.panel_title, q.ref_id, q.expr
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} queries returned no data:\n{}",
        problems.len(),
        queries.len(),
        problems.join("\n")
    );
}

/// The drop counters the `LambdawatchPipelineDrops` alert reads (its `stage` label: extension,
/// ingest, ingest_items, aggregate, alert_delivery), from the checked-in rules.
fn pipeline_drop_counters(rules_yaml: &str) -> BTreeSet<String> {
    let start = rules_yaml
        .find("- alert: LambdawatchPipelineDrops")
        .expect("no LambdawatchPipelineDrops alert in the rules");
    let rest = &rules_yaml[start..];
    let expr_start = rest.find("expr: |-").expect("no block expr") + "expr: |-".len();
    let expr_end = rest
        .find("\n        for:")
        .expect("no `for:` after the expr");
    let expr = &rest[expr_start..expr_end];
    selectors(expr)
        .unwrap_or_else(|e| panic!("{e}: {expr}"))
        .into_iter()
        .map(|s| s.metric)
        .collect()
}

/// Every stage the pipeline-drops alert pages on has a panel on the pipeline health dashboard
/// (through `rate()` over `$__rate_interval`, as the lint requires of every counter), so the
/// runbook's "confirm on the dashboards" step can be done for each.
#[test]
fn pipeline_health_has_a_panel_for_every_drop_stage_of_the_pipeline_drops_alert() {
    let rules = std::fs::read_to_string(
        lambdawatch_tests::repo_root().join("alerts/lambdawatch-rules.yml"),
    )
    .unwrap();
    let counters = pipeline_drop_counters(&rules);
    let expected: BTreeSet<String> = [
        "lambdawatch_extension_dropped_total",
        "lambdawatch_ingest_rejected_total",
        "lambdawatch_ingest_rejected_items_total",
        "lambdawatch_aggregate_dropped_total",
        "lambdawatch_alert_deliveries_total",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(counters, expected, "the alert's drop stages changed");
    let health = dashboards::load_all()
        .into_iter()
        .find(|d| d.name == "pipeline-health")
        .expect("dashboards/pipeline-health.json");
    let shown: BTreeSet<String> = targets(&health.json)
        .iter()
        .flat_map(|t| selectors(&t.expr).unwrap_or_default())
        .filter(|s| s.function.as_deref() == Some("rate"))
        .map(|s| s.metric)
        .collect();
    let missing: Vec<&String> = counters.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "pipeline-health.json has no rate() panel for the drop counters {missing:?}"
    );
}

#[test]
fn pipeline_drop_counters_reads_the_alert_expression() {
    let rules = "      - alert: Other\n        expr: |-\n          up\n        for: 1m\n\
                 \x20     - alert: LambdawatchPipelineDrops\n        expr: |-\n          \
                 sum(increase(a_total[5m])) > 0 or sum by (reason) (increase(b_total[5m] offset 5m))\n        for: 1m\n";
    assert_eq!(
        pipeline_drop_counters(rules),
        ["a_total", "b_total"].map(str::to_owned).into()
    );
}
