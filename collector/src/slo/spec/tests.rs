//! Table-driven spec tests: every bad input → the expected message fragment at the expected line.

use super::*;

const GOOD: &str = "\
version: 1
defaults:
  min_events_per_hour: 30
  no_data_after: 2h
  runbook_base_url: https://runbooks.example.com/lambda/
slos:
  - name: checkout_cold_start
    description: Checkout pays for cold starts at the till.
    selector:
      function: \"checkout-*\"
      version: live
      region: eu-*
      tags: {team: payments}
    sli: {type: cold_start, threshold: 800ms, init_types: [on-demand, snap-start]}
    objective: 0.995
    window: 28d
    labels: {team: payments}
  - name: errors
    sli: {type: error_rate}
    objective: 0.999
  - name: throttles
    sli: {type: throttles}
    objective: 3
  - name: timeouts
    sli:
      type: timeout_budget
      fraction: 0.7
    objective: 0.99
";

#[test]
fn a_full_spec_parses_with_defaults_filled_in() {
    let spec = SloSpec::from_yaml_str(GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.defaults.min_events_per_hour, 30);
    assert_eq!(spec.defaults.no_data_after, Some(Duration::from_secs(7200)));
    assert_eq!(spec.defaults.burn_rules, default_burn_rules());
    assert_eq!(
        spec.defaults.runbook_url(RunbookPage::ErrorRate),
        "https://runbooks.example.com/lambda/error-rate.md"
    );
    let cold = &spec.slos[0];
    assert_eq!(
        cold.sli,
        Sli::ColdStart {
            threshold: Duration::from_millis(800),
            init_types: vec![InitType::OnDemand, InitType::SnapStart]
        }
    );
    assert_eq!(cold.window, Duration::from_secs(28 * 86_400));
    assert_eq!(spec.slos[1].window, DEFAULT_WINDOW);
    assert_eq!(spec.slos[1].selector, Selector::default());
    assert_eq!(spec.slos[3].sli, Sli::TimeoutBudget { fraction: 0.7 });
    assert_eq!(spec.timeout_budget_fraction(), 0.7);
    assert_eq!(
        spec.cold_start_thresholds(),
        vec![Duration::from_millis(800)]
    );
    let tags: BTreeMap<String, String> = [("team".to_owned(), "payments".to_owned())].into();
    assert!(
        cold.selector
            .matches("checkout-api", "live", "eu-west-1", "1", &tags)
    );
    assert!(
        !cold
            .selector
            .matches("checkout-api", "live", "us-east-1", "1", &tags)
    );
    assert!(
        !cold
            .selector
            .matches("checkout-api", "$LATEST", "eu-west-1", "1", &tags)
    );
    assert!(
        !cold
            .selector
            .matches("checkout-api", "live", "eu-west-1", "1", &BTreeMap::new())
    );
    let names: Vec<&str> = spec
        .slos_for("checkout-api", "live", "eu-west-1", "1", &tags)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["checkout_cold_start", "errors", "throttles", "timeouts"]
    );
}

#[test]
fn embedded_default_is_valid_and_round_trips_through_yaml() {
    let spec = SloSpec::embedded_default();
    let yaml = spec.to_yaml();
    let back = SloSpec::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(back, spec);
    let names: Vec<&str> = spec.slos.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cold_start",
            "error_rate",
            "dlq_ratio",
            "throttles",
            "timeout_budget"
        ]
    );
    assert_eq!(
        spec.cold_start_thresholds(),
        vec![Duration::from_millis(500)]
    );
    assert_eq!(prometheus_le(Duration::from_millis(500)), "0.5");
    assert_eq!(prometheus_le(Duration::from_secs(1)), "1");
    assert_eq!(prometheus_le(Duration::from_millis(2500)), "2.5");
    assert_eq!(spec.timeout_budget_fraction(), 0.8);
    // The spec docs' example equals the embedded default.
    assert_eq!(spec.defaults.min_events_for(Duration::from_secs(3600)), 60);
    assert_eq!(
        spec.defaults
            .min_events_for(Duration::from_secs(3 * 86_400)),
        4320
    );
}

#[test]
fn burn_rate_and_budget_helpers() {
    let spec = SloSpec::embedded_default();
    let errors = &spec.slos[1];
    assert_eq!(errors.error_budget(), 1.0 - 0.999);
    let rate = errors.burn_rate(3, 1000).unwrap_or(f64::NAN);
    assert!((rate - 3.0).abs() < 1e-9, "{rate}");
    assert_eq!(errors.burn_rate(0, 0), None);
    assert_eq!(spec.slos[3].burn_rate(1, 1), None);
    assert_eq!(spec.slos[3].error_budget(), 5.0);
    let page = &spec.defaults.burn_rules[0];
    assert!((page.budget_spent_at_fire(DEFAULT_WINDOW) - 0.02).abs() < 1e-12);
}

/// (name, yaml, [(line, fragment)]): each listed error must appear, at that line, and nothing else.
/// (name, yaml, expected (line, fragment) pairs).
type Case = (&'static str, &'static str, &'static [(usize, &'static str)]);

const BAD: &[Case] = &[
    (
        "unknown top-level key",
        "version: 1\nslo:\n  - name: x\n",
        &[(2, "unknown field `slo`")],
    ),
    (
        "unknown key in an SLO",
        "version: 1\nslos:\n  - name: x\n    sli: {type: error_rate}\n    objective: 0.99\n    objectve: 0.9\n",
        &[(6, "unknown field `objectve`")],
    ),
    (
        "unknown key in a selector",
        "version: 1\nslos:\n  - name: x\n    selector:\n      fn: a\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[(5, "unknown field `fn`")],
    ),
    (
        "unknown key in defaults",
        "version: 1\ndefaults:\n  min_events: 5\nslos: []\n",
        &[(3, "unknown field `min_events`")],
    ),
    (
        "unknown SLI type",
        "version: 1\nslos:\n  - name: x\n    sli:\n      type: latency\n    objective: 0.99\n",
        &[(5, "unknown variant `latency`")],
    ),
    (
        "unknown key inside the SLI",
        "version: 1\nslos:\n  - name: x\n    sli:\n      type: cold_start\n      threshold: 1s\n      treshold: 2s\n    objective: 0.99\n",
        &[(7, "unknown field `treshold`")],
    ),
    (
        "cold_start without a threshold",
        "version: 1\nslos:\n  - name: x\n    sli:\n      type: cold_start\n    objective: 0.99\n",
        &[(4, "missing field `threshold`")],
    ),
    (
        "a key that belongs to another SLI type",
        "version: 1\nslos:\n  - name: x\n    sli: {type: error_rate, fraction: 0.5}\n    objective: 0.99\n",
        &[(4, "`fraction` does not apply to an SLI of type error_rate")],
    ),
    (
        "bad duration",
        "version: 1\nslos:\n  - name: x\n    sli: {type: error_rate}\n    objective: 0.99\n    window: 30 days\n",
        &[(6, "invalid duration \"30 days\"")],
    ),
    (
        "bad glob",
        "version: 1\nslos:\n  - name: x\n    selector:\n      function: \"orders-[0-9\"\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[(5, "unterminated '['")],
    ),
    (
        "objective as text",
        "version: 1\nslos:\n  - name: x\n    sli: {type: error_rate}\n    objective: high\n",
        &[(5, "invalid type")],
    ),
    (
        "missing objective",
        "version: 1\nslos:\n  - name: x\n    sli: {type: error_rate}\n",
        &[(3, "missing field `objective`")],
    ),
    (
        "YAML syntax error",
        "version: 1\nslos:\n\t- name: x\n",
        &[(3, "cannot start any token")],
    ),
    (
        "unsupported version",
        "version: 2\nslos:\n  - name: x\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[(1, "version 2 is not supported")],
    ),
    (
        "objective of 1 and of 0, NaN, and above 1",
        "version: 1\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 1\n  - name: b\n    sli: {type: dlq_ratio}\n    objective: 0\n  - name: c\n    sli: {type: error_rate}\n    objective: .nan\n  - name: d\n    sli: {type: error_rate}\n    objective: 99.9\n",
        &[
            (5, "strictly between 0 and 1"),
            (8, "strictly between 0 and 1"),
            (11, "not a number"),
            (14, "strictly between 0 and 1"),
        ],
    ),
    (
        "objective so loose the page rule can never fire",
        "version: 1\nslos:\n  - name: loose\n    sli: {type: error_rate}\n    objective: 0.9\n",
        &[(5, "can never fire the page rule (factor 14.4")],
    ),
    (
        "a factor the burn rate can reach only in exact arithmetic (20x at 95 %: 19.999...)",
        "version: 1\ndefaults:\n  burn_rules:\n    - {severity: page, factor: 20, long: 1h, short: 5m}\nslos:\n  - name: edge\n    sli: {type: error_rate}\n    objective: 0.95\n  - name: fine\n    sli: {type: error_rate}\n    objective: 0.96\n",
        &[(
            8,
            "even with every event bad the burn rate is only 19.99999",
        )],
    ),
    (
        "throttle budget must be a whole count",
        "version: 1\nslos:\n  - name: t\n    sli: {type: throttles}\n    objective: 0.999\n",
        &[(5, "whole number ≥ 1")],
    ),
    (
        "cold-start threshold at the init limit",
        "version: 1\nslos:\n  - name: c\n    sli:\n      type: cold_start\n      threshold: 10s\n    objective: 0.99\n",
        &[(6, "can never fire: Lambda stops an init phase at 10s")],
    ),
    (
        "cold-start threshold of zero and empty init types",
        "version: 1\nslos:\n  - name: c\n    sli: {type: cold_start, threshold: 0s, init_types: []}\n    objective: 0.99\n",
        &[(4, "threshold 0s"), (4, "init_types is empty")],
    ),
    (
        "unknown init type",
        "version: 1\nslos:\n  - name: c\n    sli: {type: cold_start, threshold: 1s, init_types: [warm]}\n    objective: 0.99\n",
        &[(4, "unknown variant `warm`")],
    ),
    (
        "timeout fraction of 1",
        "version: 1\nslos:\n  - name: t\n    sli:\n      type: timeout_budget\n      fraction: 1.0\n    objective: 0.99\n",
        &[(6, "strictly between 0 and 1")],
    ),
    (
        "two timeout fractions",
        "version: 1\nslos:\n  - name: a\n    sli: {type: timeout_budget, fraction: 0.8}\n    objective: 0.99\n  - name: b\n    sli:\n      type: timeout_budget\n      fraction: 0.5\n    objective: 0.99\n",
        &[(9, "differs from slos[0]'s 0.8")],
    ),
    (
        "duplicate and malformed names",
        "version: 1\nslos:\n  - name: errors\n    sli: {type: error_rate}\n    objective: 0.99\n  - name: errors\n    sli: {type: dlq_ratio}\n    objective: 0.99\n  - name: Bad-Name\n    sli: {type: dlq_ratio}\n    objective: 0.99\n",
        &[
            (6, "duplicate SLO name \"errors\""),
            (9, "must match [a-z][a-z0-9_]*"),
        ],
    ),
    (
        "window too long, and shorter than a burn window",
        "version: 1\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 0.99\n    window: 90d\n  - name: b\n    sli: {type: error_rate}\n    objective: 0.99\n    window: 2d\n",
        &[
            (6, "between 1d and 30d"),
            (10, "shorter than the ticket burn rule's long window 3d"),
        ],
    ),
    (
        "burn rules: short not shorter, bad factor, sub-minute, duplicate",
        "version: 1\ndefaults:\n  burn_rules:\n    - {severity: page, factor: 14.4, long: 1h, short: 1h}\n    - severity: page\n      factor: -2\n      long: 6h\n      short: 30s\n    - {severity: ticket, factor: 1, long: 3d, short: 6h}\n    - {severity: ticket, factor: 2, long: 3d, short: 6h}\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[
            (4, "must be shorter than the long window"),
            (6, "factor -2 must be a positive number"),
            (8, "short window 30s must be whole minutes and at least 1m"),
            (10, "duplicate burn rule"),
        ],
    ),
    (
        "no burn rules",
        "version: 1\ndefaults:\n  burn_rules: []\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[(3, "no ratio SLO could ever alert")],
    ),
    ("no SLOs", "version: 1\nslos: []\n", &[(2, "no SLOs")]),
    (
        "reserved and invalid labels",
        "version: 1\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 0.99\n    labels:\n      severity: low\n      team-name: x\n",
        &[
            (7, "cannot be overridden"),
            (8, "not a valid Prometheus label name"),
        ],
    ),
    (
        "bad runbook url and no-data period",
        "version: 1\ndefaults:\n  runbook_base_url: docs/runbooks\n  no_data_after: 1m\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 0.99\n",
        &[(3, "must be an http(s) URL"), (4, "at least 5m")],
    ),
];

#[test]
fn bad_specs_are_rejected_with_line_numbers() {
    for (name, yaml, expected) in BAD {
        let errors = match SloSpec::from_yaml_str(yaml) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => e,
        };
        let shown = errors.to_string();
        assert_eq!(
            errors.errors.len(),
            expected.len(),
            "{name}: expected {} errors, got:\n{shown}",
            expected.len()
        );
        for (line, fragment) in *expected {
            assert!(
                errors
                    .errors
                    .iter()
                    .any(|e| e.line == *line && e.message.contains(fragment)),
                "{name}: no error at line {line} containing {fragment:?}; got:\n{shown}"
            );
        }
        for e in &errors.errors {
            assert!(e.column >= 1, "{name}: column {e:?}");
        }
    }
}

#[test]
fn display_prints_file_line_col_per_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("slo.yaml");
    std::fs::write(
        &file,
        "version: 1\nslos:\n  - name: a\n    sli: {type: error_rate}\n    objective: 1.5\n    window: 31d\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let errors = validate_file(&file)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let prefix = file.display().to_string();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}:5:5: objective 1.5"))),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}:6:5: window 31d"))),
        "{text}"
    );

    let missing = validate_file(&dir.path().join("nope.yaml"))
        .err()
        .map(|e| e.to_string());
    assert!(missing.is_some_and(|m| m.contains("nope.yaml:0:0: cannot read the file")));
}
