//! The rule generator's output for specs other than the embedded default (the doc examples and a
//! spec exercising every selector and SLI shape) passes the real `promtool check rules`.
//!
//! Needs `promtool` (Debian `prometheus`, installed by `./scripts/test.sh`); panics with that
//! instruction when it is missing, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use lambdawatch_collector::rules::generate;
use lambdawatch_collector::slo::spec::SloSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/promtool")])
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("peer promtool missing: run ./scripts/test.sh or `apt-get install prometheus`")
    })
}

fn check(promtool: &Path, dir: &Path, name: &str, spec: &SloSpec) {
    let text = generate(spec, lambdawatch_collector::config::DEFAULT_ALERT_FOR)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(&file, &text).expect("write rules");
    let out = Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{name}: promtool check rules failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const EVERY_SHAPE: &str = r#"
version: 1
defaults:
  min_events_per_hour: 0
  no_data_after: 2h
  runbook_base_url: http://runbooks.internal/lambda/
  burn_rules:
    - {severity: page, factor: 20, long: 30m, short: 2m}
    - {severity: ticket, factor: 2, long: 1d, short: 2h}
slos:
  - name: pc_cold
    selector: {function: "api-[a-c]?", version: "v1.*", region: "eu-*", account: "1234*"}
    sli: {type: cold_start, threshold: 1250ms, init_types: [provisioned-concurrency, snap-start]}
    objective: 0.96
    window: 14d
    labels: {team: "pay\"ments", tier: "1"}
  - name: latest_errors
    selector: {version: "$LATEST"}
    sli: {type: error_rate}
    objective: 0.9995
  - name: dlq
    selector: {function: "worker\\*"}
    sli: {type: dlq_ratio}
    objective: 0.999
  - name: throttles
    selector: {function: "api-*"}
    sli: {type: throttles}
    objective: 1
    window: 7d
  - name: slow
    sli: {type: timeout_budget, fraction: 0.6}
    objective: 0.98
"#;

#[test]
fn generated_rules_pass_promtool_check_for_every_shape() {
    let promtool = promtool();
    let dir = tempfile::tempdir().expect("tempdir");
    check(
        &promtool,
        dir.path(),
        "default",
        &SloSpec::embedded_default(),
    );
    let every = SloSpec::from_yaml_str(EVERY_SHAPE).unwrap_or_else(|e| panic!("{e}"));
    check(&promtool, dir.path(), "every_shape", &every);

    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/slo-spec.md"))
            .expect("docs/slo-spec.md");
    let mut n = 0;
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line) {
            (None, "```yaml") => block = Some(String::new()),
            (Some(body), "```") => {
                let spec = SloSpec::from_yaml_str(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
                check(&promtool, dir.path(), &format!("doc_example_{n}"), &spec);
                n += 1;
                block = None;
            }
            (Some(body), l) => {
                body.push_str(l);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(n >= 3, "{n} doc examples checked");
}
