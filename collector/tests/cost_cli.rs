//! The three cost vectors through the real binary: `lambdawatch-collector cost …`.

use std::path::PathBuf;
use std::process::Command;

/// Runs `lambdawatch-collector cost <argv>`: stdout on success, stderr on failure.
fn cost(argv: &[&str]) -> Result<String, String> {
    let bin = env!("CARGO_BIN_EXE_lambdawatch-collector");
    let out = Command::new(bin)
        .arg("cost")
        .args(argv)
        .output()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        assert!(stdout.is_empty(), "failed run printed to stdout: {stdout}");
        Err(stderr)
    }
}

fn total(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("monthly total: "))
        .unwrap_or_else(|| panic!("no total line in:\n{out}"))
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
}

#[test]
fn vector_512mb_3m_invocations_1s_free_tier() {
    let out = cost(&[
        "--memory-mb",
        "512",
        "--invocations",
        "3000000",
        "--duration-ms",
        "1000",
        "--free-tier",
    ])
    .unwrap();
    assert_eq!(total(&out), "$18.73", "{out}");
    assert!(line(&out, "requests").ends_with("$0.40"), "{out}");
    assert!(line(&out, "duration").ends_with("$18.33"), "{out}");
}

#[test]
fn vector_2gb_60s_75m_invocations_x86_tiered() {
    let out = cost(&[
        "--memory-mb",
        "2048",
        "--invocations",
        "75000000",
        "--duration-ms",
        "60000",
        "--arch",
        "x86_64",
    ])
    .unwrap();
    // The figure is AWS's tiered duration charge; requests add $15.00.
    assert!(line(&out, "duration").ends_with("$145,000.20"), "{out}");
    assert!(line(&out, "tier 1").ends_with("$100,000.20"), "{out}");
    assert!(line(&out, "tier 2").ends_with("$45,000.00"), "{out}");
    assert!(line(&out, "requests").ends_with("$15.00"), "{out}");
    assert_eq!(total(&out), "$145,015.20", "{out}");
}

#[test]
fn vector_10_units_512mb_provisioned_30_days() {
    let out = cost(&["--memory-mb", "512", "--provisioned", "10", "--days", "30"]).unwrap();
    assert_eq!(total(&out), "$54.00", "{out}");
    assert!(
        line(&out, "provisioned concurrency").ends_with("$54.00"),
        "{out}"
    );
}

#[test]
fn arm64_and_json() {
    let out = cost(&[
        "--memory-mb",
        "1024",
        "--invocations",
        "1000000",
        "--duration-ms",
        "1000",
        "--arch",
        "arm64",
        "--json",
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 1 M GB-s × $0.0000133334 + $0.20.
    assert_eq!(v["monthly_total_usd"], 13.53);
    assert_eq!(v["arch"], "arm64");
}

#[test]
fn prices_override_file_and_unverified_warning() {
    let embedded = lambdawatch_collector::cost::prices::EMBEDDED_PRICES_YAML;
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("prices.yaml");
    // Double the us-east-1 request price.
    let doubled = embedded.replacen("request_per_million: 0.20", "request_per_million: 0.40", 1);
    std::fs::write(&path, doubled).unwrap();
    let p = path.to_str().unwrap();
    let out = cost(&["--invocations", "2000000", "--prices", p]).unwrap();
    assert_eq!(total(&out), "$0.80", "{out}");
    std::fs::write(&path, "as_of: 2026-01-01\n").unwrap();
    let e = cost(&["--prices", p]).unwrap_err();
    assert!(e.contains("missing field"), "{e}");
    let e = cost(&["--memory-mb", "64"]).unwrap_err();
    assert!(e.contains("--memory-mb 64 is outside"), "{e}");
    // eu-central-1's arm64 provisioned concurrency price is flagged as unverified.
    let out = cost(&[
        "--region",
        "eu-central-1",
        "--arch",
        "arm64",
        "--provisioned",
        "1",
    ])
    .unwrap();
    assert!(
        out.contains("warning: the provisioned_concurrency_arm64 price"),
        "{out}"
    );
    // Its x86 one is sourced (AWS's calculator price map): 10 × 512 MB for 30 days =
    // 12,960,000 GB-s × $0.0000050147 = $64.990512, no warning.
    let out = cost(&[
        "--region",
        "eu-central-1",
        "--memory-mb",
        "512",
        "--provisioned",
        "10",
        "--days",
        "30",
    ])
    .unwrap();
    assert_eq!(total(&out), "$64.99", "{out}");
    assert!(!out.contains("warning"), "{out}");
}
