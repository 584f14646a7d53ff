//! Issue 5 ("two collectors agreeing with one") and issue 6 (the generated rules sum across
//! collectors): several collector tasks behind a load balancer give one answer through the
//! generated Prometheus rules.
//!
//! The run: three real `lambdawatch-collector serve` processes, A, B and the control C, and two
//! real Prometheus servers (Debian package) loading the checked-in `alerts/lambdawatch-rules.yml`:
//! `prom_ab` scrapes A and B as one job (two targets, `instance` differs), `prom_c` scrapes C.
//! Two servers, not one, because the rules sum by (function, version, region, account): in one
//! server A + B + C would be summed together.
//!
//! The same deterministic OTLP/HTTP traffic (invocation spans with errors, init spans with fast
//! and slow on-demand cold starts, three functions) is split between A and B with a different share
//! and a different error and cold-start mix per task and function, and all of it goes to C. First
//! a small priming batch makes every series exist in both servers (`increase()` needs a sample
//! before the traffic), then the main traffic.
//!
//! Asserted through the Prometheus HTTP API once the rules have evaluated well after the last
//! scrape: every recording-rule series (valid/bad event counts, burn rates for every window, error
//! budget remaining; per SLO and function) of `prom_ab` equals the one of `prom_c`, and each task's
//! raw `lambdawatch_invocations_total` differs from C's (the traffic really was split).
//!
//! Tolerance: `increase()` extrapolates each series to its window's edges by at most half a scrape
//! interval at the start and one scrape interval (plus 10 %) at the end; A, B and C are scraped at
//! different phases, so their factors differ by at most 1.6 scrape intervals over the sampled span.
//! With 250 ms scrapes and ≥ 25 s of samples after the traffic that is < 2 %; we allow 3 %. A rule
//! that used `max` or `avg` instead of `sum` is off by ≥ 15 % on the chosen mix (see `TRAFFIC`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambdawatch_semconv::otlp::{kv_f64, kv_str};
use lambdawatch_semconv::{attr, span_type};
use lambdawatch_tests::prometheus::{self, Prometheus, query};
use lambdawatch_tests::{Child, http, peers, repo_root, wait_until, workspace_bin};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);
/// Relative tolerance between the A + B answer and C's (see the module docs).
const TOLERANCE: f64 = 0.03;
/// Samples after the traffic before comparing, so the extrapolation difference stays small.
const SETTLE_S: f64 = 25.0;

/// What one task receives for one function.
#[derive(Clone, Copy, Debug)]
struct Share {
    ok: usize,
    errors: usize,
    /// On-demand cold starts within the 500 ms cold-start objective.
    fast_inits: usize,
    /// On-demand cold starts slower than 500 ms.
    slow_inits: usize,
}

const fn share(ok: usize, errors: usize, fast_inits: usize, slow_inits: usize) -> Share {
    Share {
        ok,
        errors,
        fast_inits,
        slow_inits,
    }
}

/// (function, A's share, B's share). Shares and mixes differ so that `max` or `avg` in place of
/// `sum` is visibly wrong: e.g. orders' error ratio is 43/406 ≈ 0.106 summed, but 40/100 = 0.4
/// from B alone and 43/406 from an `avg` (ratios survive `avg`, counts do not: the event counts
/// are compared too).
const TRAFFIC: &[(&str, Share, Share)] = &[
    ("orders", share(303, 3, 8, 1), share(60, 40, 2, 4)),
    ("billing", share(50, 25, 1, 3), share(200, 2, 6, 0)),
    ("search", share(120, 12, 3, 3), share(40, 1, 1, 0)),
];

/// The priming batch every task gets per function before the traffic (C gets it twice).
const PRIMING: Share = share(1, 1, 1, 1);

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn unix_s() -> f64 {
    unix_ns() as f64 / 1e9
}

/// Spans of `function` for `s`: invocation spans (success, then error) and init spans (fast
/// 200 ms, slow 900 ms).
fn spans(function: &str, s: Share) -> Vec<Span> {
    let end = unix_ns();
    let span = |ty: &str, ms: u64, extra: Vec<_>| Span {
        name: function.into(),
        start_time_unix_nano: end - ms * 1_000_000,
        end_time_unix_nano: end,
        attributes: [vec![kv_str(attr::LAMBDAWATCH_SPAN_TYPE, ty)], extra].concat(),
        ..Default::default()
    };
    let invocation = |outcome: &str| {
        span(
            span_type::INVOCATION,
            10,
            vec![
                kv_str(attr::AWS_LAMBDA_OUTCOME, outcome),
                kv_f64(attr::AWS_LAMBDA_DURATION_MS, 10.0),
            ],
        )
    };
    let init = |ms: u64| {
        span(
            span_type::INIT,
            ms,
            vec![kv_str(attr::AWS_LAMBDA_INIT_TYPE, "on-demand")],
        )
    };
    let mut out = Vec::new();
    out.extend((0..s.ok).map(|_| invocation("success")));
    out.extend((0..s.errors).map(|_| invocation("error")));
    out.extend((0..s.fast_inits).map(|_| init(200)));
    out.extend((0..s.slow_inits).map(|_| init(900)));
    out
}

/// Posts `s` for `function` to the collector's OTLP/HTTP endpoint (protobuf).
fn send(otlp: &str, function: &str, s: Share) {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str(attr::FAAS_NAME, function),
                    kv_str(attr::FAAS_VERSION, "7"),
                    kv_str(attr::CLOUD_REGION, "eu-west-1"),
                    kv_str(attr::CLOUD_ACCOUNT_ID, "123456789012"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans(function, s),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = http::request(
        "POST",
        &format!("http://{otlp}/v1/traces"),
        &[("content-type", "application/x-protobuf")],
        &req.encode_to_vec(),
        T,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

fn sum(a: Share, b: Share) -> Share {
    share(
        a.ok + b.ok,
        a.errors + b.errors,
        a.fast_inits + b.fast_inits,
        a.slow_inits + b.slow_inits,
    )
}

struct Collector {
    otlp: String,
    admin: String,
    _child: Child,
}

fn start_collector(name: &str) -> Collector {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_TASK_ID", name);
    let child = Child::spawn(name, &mut cmd);
    let line = child.wait_for_text("lambdawatch-collector listening", Duration::from_secs(30));
    let field = |f: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{f}=")))
            .unwrap_or_else(|| panic!("no {f}= in {line:?}"))
            .to_owned()
    };
    Collector {
        otlp: field("otlp_http"),
        admin: field("admin"),
        _child: child,
    }
}

/// A Prometheus scraping `targets` as job `lambdawatch` every 250 ms, evaluating the checked-in
/// rules every second.
fn start_prometheus(name: &str, targets: &[&str]) -> Prometheus {
    let mut config = prometheus::Config::job("250ms", "lambdawatch", targets);
    config
        .rule_files
        .push(repo_root().join("alerts/lambdawatch-rules.yml"));
    prometheus::start(name, &config)
}

/// (timestamp, value) of each series of an instant query, keyed by its labels (`instance` and
/// `job` dropped unless `keep_instance`).
fn series(base: &str, expr: &str, keep_instance: bool) -> BTreeMap<String, (f64, f64)> {
    query(base, expr)
        .unwrap_or_else(|| panic!("query {expr} failed on {base}"))
        .iter()
        .map(|s| {
            let mut labels: Vec<String> = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| keep_instance || (*k != "instance" && *k != "job"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            labels.sort();
            let t = s.pointer("/value/0").and_then(Value::as_f64).unwrap();
            let v: f64 = s
                .pointer("/value/1")
                .and_then(Value::as_str)
                .unwrap()
                .parse()
                .unwrap();
            (labels.join(","), (t, v))
        })
        .collect()
}

/// Every `record:` name in the checked-in rules.
fn recorded_names() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("alerts/lambdawatch-rules.yml")).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1e-9)
}

/// Waits until `prom` has scraped, per function, `expected` invocations in total over its
/// targets, at least `samples` times per series over the last minute.
fn wait_scraped(prom: &Prometheus, what: &str, expected: &BTreeMap<&str, usize>, samples: usize) {
    wait_until(what, Duration::from_secs(60), || {
        let got = series(
            &prom.base,
            "sum by (function) (lambdawatch_invocations_total)",
            false,
        );
        let want: BTreeMap<String, (f64, f64)> = expected
            .iter()
            .map(|(f, n)| (format!("function={f}"), (0.0, *n as f64)))
            .collect();
        let same = got.len() == want.len()
            && want
                .iter()
                .all(|(k, (_, v))| got.get(k).is_some_and(|(_, g)| g == v));
        let enough = query(
            &prom.base,
            "min(count_over_time(lambdawatch_invocations_total[1m]))",
        )
        .and_then(|r| {
            r.first()?
                .pointer("/value/1")?
                .as_str()?
                .parse::<f64>()
                .ok()
        })
        .is_some_and(|n| n >= samples as f64);
        (same && enough).then_some(())
    });
}

#[test]
fn two_collectors_sharing_the_traffic_agree_with_one_through_the_rules() {
    peers::bin("promtool");
    let a = start_collector("collector-a");
    let b = start_collector("collector-b");
    let c = start_collector("collector-c");
    let prom_ab = start_prometheus("prometheus-ab", &[&a.admin, &b.admin]);
    let prom_c = start_prometheus("prometheus-c", &[&c.admin]);

    // Priming: every series exists (with a few samples) before the traffic.
    for (function, _, _) in TRAFFIC {
        send(&a.otlp, function, PRIMING);
        send(&b.otlp, function, PRIMING);
        send(&c.otlp, function, sum(PRIMING, PRIMING));
    }
    let primed: BTreeMap<&str, usize> = TRAFFIC
        .iter()
        .map(|(f, _, _)| (*f, 2 * (PRIMING.ok + PRIMING.errors)))
        .collect();
    wait_scraped(&prom_ab, "A and B primed in prometheus-ab", &primed, 4);
    wait_scraped(&prom_c, "C primed in prometheus-c", &primed, 4);

    // The traffic: split between A and B, all of it to C.
    for (function, to_a, to_b) in TRAFFIC {
        send(&a.otlp, function, *to_a);
        send(&b.otlp, function, *to_b);
        send(&c.otlp, function, sum(*to_a, *to_b));
    }
    let sent_at = unix_s();
    let total: BTreeMap<&str, usize> = TRAFFIC
        .iter()
        .map(|(f, x, y)| (*f, primed[f] + x.ok + x.errors + y.ok + y.errors))
        .collect();
    wait_scraped(&prom_ab, "the traffic scraped by prometheus-ab", &total, 4);
    wait_scraped(&prom_c, "the traffic scraped by prometheus-c", &total, 4);

    // The traffic was split: each task's raw counter differs from C's, and they add up to it.
    let per_task = series(
        &prom_ab.base,
        "sum by (function, instance) (lambdawatch_invocations_total)",
        true,
    );
    let control = series(
        &prom_c.base,
        "sum by (function) (lambdawatch_invocations_total)",
        false,
    );
    for (function, _, _) in TRAFFIC {
        let c_total = control[&format!("function={function}")].1;
        let tasks: Vec<f64> = [&a.admin, &b.admin]
            .iter()
            .map(|inst| per_task[&format!("function={function},instance={inst}")].1)
            .collect();
        for t in &tasks {
            assert!(
                *t > 0.0 && *t < c_total,
                "{function}: one task counted {t} of C's {c_total}: the traffic was not split"
            );
        }
        assert_eq!(tasks.iter().sum::<f64>(), c_total, "{function}: A + B != C");
    }

    // Every recording rule, evaluated well after the last scrape of the traffic.
    let names = recorded_names();
    assert!(
        names.len() >= 19,
        "only {} recorded series: {names:?}",
        names.len()
    );
    let settled = |prom: &Prometheus| {
        let expr = "lambdawatch:slo_error_budget_remaining:ratio";
        let r = series(&prom.base, expr, false);
        let first_eval = r.values().map(|(t, _)| *t).fold(f64::INFINITY, f64::min);
        (!r.is_empty() && first_eval >= sent_at + SETTLE_S).then_some(())
    };
    wait_until(
        "rules evaluated long after the traffic in both servers",
        Duration::from_secs(90),
        || settled(&prom_ab).and_then(|()| settled(&prom_c)),
    );

    let mut compared = 0;
    let mut worst = 0.0f64;
    let mut disagreements = Vec::new();
    for name in &names {
        let ab = series(&prom_ab.base, name, false);
        let c = series(&prom_c.base, name, false);
        assert_eq!(
            ab.keys().collect::<Vec<_>>(),
            c.keys().collect::<Vec<_>>(),
            "{name}: A + B and C give different series"
        );
        for (key, (_, v_ab)) in &ab {
            let v_c = c[key].1;
            compared += 1;
            if v_ab.is_finite() && v_c.is_finite() && v_c.abs() > 1e-9 {
                worst = worst.max((v_ab - v_c).abs() / v_c.abs());
            }
            if !close(*v_ab, v_c) {
                disagreements.push(format!("{name}{{{key}}}: A+B {v_ab} vs C {v_c}"));
            }
        }
    }
    eprintln!("{compared} recorded series compared; worst relative difference {worst:.4}");
    assert!(
        disagreements.is_empty(),
        "the rules over A + B disagree with C on {} of {compared} series:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );

    // The comparison is not vacuous: the error and cold-start SLOs have events and bad events for
    // every function, and C's 5 m error burn rate is exactly what the traffic implies.
    for (function, to_a, to_b) in TRAFFIC {
        let all = sum(sum(*to_a, *to_b), sum(PRIMING, PRIMING));
        for slo in ["error_rate", "cold_start"] {
            let expr = format!(
                "lambdawatch:slo_bad_events:increase5m{{slo=\"{slo}\",function=\"{function}\"}}"
            );
            let r = series(&prom_c.base, &expr, false);
            assert!(
                r.values().any(|(_, v)| *v > 0.0),
                "{expr}: no bad events recorded ({r:?})"
            );
        }
        let expr = format!(
            "lambdawatch:slo_bad_events:increase5m{{slo=\"error_rate\",function=\"{function}\"}} \
             / lambdawatch:slo_valid_events:increase5m{{slo=\"error_rate\",function=\"{function}\"}}"
        );
        let ratio = series(&prom_c.base, &expr, false)
            .values()
            .next()
            .unwrap_or_else(|| panic!("{expr}: no result"))
            .1;
        // Priming is (mostly) before the first sample; the ratio lies between the traffic's
        // own ratio and the ratio including priming.
        let traffic = (to_a.errors + to_b.errors) as f64
            / (to_a.ok + to_a.errors + to_b.ok + to_b.errors) as f64;
        let with_priming = all.errors as f64 / (all.ok + all.errors) as f64;
        let (lo, hi) = (traffic.min(with_priming), traffic.max(with_priming));
        assert!(
            ratio >= lo * (1.0 - TOLERANCE) && ratio <= hi * (1.0 + TOLERANCE),
            "{function}: C's error ratio {ratio} is not the traffic's ({lo}..{hi})"
        );
    }
}
