//! The binary's subcommands other than `serve`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lambdawatch-collector"))
}

#[test]
fn validate_reports_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("slos.yaml");
    std::fs::write(
        &bad,
        "version: 1\nslos:\n  - name: error_rate\n    sli: {type: error_rate}\n    objective: 0.999\n    windw: 30d\n",
    )
    .unwrap();
    let out = bin().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}:", bad.display());
    let line = err
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{err}"));
    // file:LINE:COL: message, pointing into the file.
    let rest = &line[prefix.len()..];
    let mut parts = rest.splitn(3, ':');
    let l: usize = parts.next().unwrap().parse().unwrap();
    let c: usize = parts.next().unwrap().parse().unwrap();
    assert!(l >= 3 && c >= 1, "{line}");
    assert!(line.contains("windw"), "{line}");

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "version: 1\nslos:\n  - name: error_rate\n    sli: {type: error_rate}\n    objective: 0.999\n",
    )
    .unwrap();
    let out = bin().arg("validate").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_file_is_refused_with_a_location() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.yaml");
    std::fs::write(&cfg, "queue_capacity: 8\nauth_tokn: x\n").unwrap();
    let out = bin().arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", cfg.display())), "{err}");
    assert!(err.contains("auth_tokn"), "{err}");
}

#[test]
fn rules_prints_the_generated_rules_for_a_valid_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("slos.yaml");
    std::fs::write(
        &spec,
        "version: 1\nslos:\n  - name: error_rate\n    sli: {type: error_rate}\n    objective: 0.999\n",
    )
    .unwrap();
    let out = bin().arg("rules").arg(&spec).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("groups:"), "{text}");
    assert!(text.contains("LambdawatchErrorBudgetBurn"), "{text}");
    // Alerts pend for DEFAULT_ALERT_FOR unless `--for` says otherwise (= LAMBDAWATCH_ALERT_FOR).
    assert!(text.contains("\n        for: 1m\n"), "{text}");
    let out = bin()
        .args(["rules", "--for", "150s"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\n        for: 2m30s\n"), "{text}");
    assert!(!text.contains("for: 1m\n"), "{text}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nslos: []\nextra: 1\n").unwrap();
    let out = bin().arg("rules").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:", bad.display())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
