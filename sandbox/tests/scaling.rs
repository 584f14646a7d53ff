//! Scale-out, idle spin-down, provisioned concurrency, schema 2022-07-01, and the real binary's
//! CLI (workload reproducibility, SIGTERM, report file, unknown YAML keys).
//! Needs `cargo build -p lambdawatch-sample-function -p lambdawatch-sandbox` first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

/// Scale-out: as many concurrent slow invocations as the reserved concurrency get as many
/// environments, each a cold start, and nothing is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invokes_up_to_the_limit_scale_out_without_throttles() {
    let h = start("reserved_concurrency: 4\n", &[], &[("probe", &[])], None).await;
    let calls: Vec<_> = (0..4)
        .map(|_| h.invoke(r#"{"sleep_ms": 1500}"#, false))
        .collect();
    let statuses: Vec<u16> = futures_join(calls).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200; 4]);
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.throttles, 0);
    assert_eq!(report.cold_starts, 4);
    let envs: std::collections::BTreeSet<u64> =
        report.records.iter().map(|r| r.environment).collect();
    assert_eq!(envs.len(), 4, "{:?}", report.records);
    assert!(report.records.iter().all(|r| r.cold_start));
    // Four environments, four probes: four registrations.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.get("registered").is_some())
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_environment_is_initialised_before_the_first_invoke() {
    let h = start("provisioned_concurrency: 1\n", &[], &[("probe", &[])], None).await;
    let before = now_ms();
    let r = h.invoke("{}", false).await;
    assert_eq!(r.status, 200);
    let (report, lines, _dir) = h.finish().await;
    let ev = telemetry_events(&lines);
    let init = ev
        .iter()
        .find(|(_, e)| e["type"] == "platform.initStart")
        .expect("initStart");
    assert_eq!(
        init.1["record"]["initializationType"],
        "provisioned-concurrency"
    );
    let registered_at = lines
        .iter()
        .find(|l| l.get("registered").is_some())
        .unwrap()["at_ms"]
        .as_u64()
        .unwrap();
    assert!(
        registered_at <= before,
        "provisioned init must happen at start"
    );
    assert_eq!(report.records.len(), 1);
    assert!(
        !report.records[0].cold_start,
        "the invocation found a warm environment"
    );
    assert_eq!(report.cold_starts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_environment_is_spun_down_and_the_next_invoke_is_cold() {
    let h = start("idle_timeout_ms: 200\n", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    // Wait (bounded) until the scaler has spun the idle environment down.
    let mut spun_down = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = probe_lines(&h.probe_out);
        if lines
            .iter()
            .any(|l| l["lifecycle"]["shutdownReason"] == "spindown")
        {
            spun_down = true;
            break;
        }
    }
    assert!(spun_down, "no spindown SHUTDOWN within 5 s");
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (report, _, _dir) = h.finish().await;
    let colds: Vec<bool> = report.records.iter().map(|r| r.cold_start).collect();
    assert_eq!(colds, [true, true]);
    assert_ne!(report.records[0].environment, report.records[1].environment);
    assert!(report.shutdowns.iter().any(|s| s.reason == "spindown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_2022_07_01_gets_string_records_and_old_init_shape() {
    let h = start(
        "",
        &[],
        &[("probe", &[("PROBE_SCHEMA", "2022-07-01")])],
        None,
    )
    .await;
    assert_eq!(
        h.invoke(r#"{"log_lines": 1, "log_json": true}"#, false)
            .await
            .status,
        200
    );
    let (_, lines, _dir) = h.finish().await;
    let ev = telemetry_events(&lines);
    let f = ev
        .iter()
        .find(|(_, e)| {
            e["type"] == "function" && e["record"].as_str().unwrap_or("").contains("log line")
        })
        .expect("function record");
    assert!(f.1["record"].is_string());
    let init = ev
        .iter()
        .find(|(_, e)| e["type"] == "platform.initStart")
        .unwrap();
    assert!(init.1["record"].get("instanceId").is_none());
}

fn sandbox_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lambdawatch-sandbox")
}

fn write_function(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("function.yaml");
    std::fs::write(
        &path,
        format!(
            "name: clifn\nhandler: ['{}']\ntimeout_ms: 500\n{extra}",
            sample_function().display()
        ),
    )
    .unwrap();
    path
}

fn run_workload(dir: &std::path::Path, function: &std::path::Path, n: usize) -> serde_json::Value {
    let workload = dir.join("workload.yaml");
    std::fs::write(
        &workload,
        "seed: 7\nphases:\n  - name: mixed\n    rate_per_sec: 40\n    duration_ms: 1000\n    error_fraction: 0.3\n    timeout_fraction: 0.2\n    slow_fraction: 0.1\n    slow_ms: 50\n",
    )
    .unwrap();
    let report = dir.join(format!("report{n}.json"));
    let out = Command::new(sandbox_bin())
        .args(["run", "--function"])
        .arg(function)
        .arg("--workload")
        .arg(&workload)
        .args(["--invoke-addr", "127.0.0.1:0", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("invoke api listening on http://127.0.0.1:"),
        "{stdout}"
    );
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[test]
fn cli_workload_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let function = write_function(dir.path(), "");
    let a = run_workload(dir.path(), &function, 1);
    let b = run_workload(dir.path(), &function, 2);
    let total = |r: &serde_json::Value| -> u64 {
        ["success", "error", "timeout", "failure"]
            .iter()
            .map(|k| r["invocations"][k].as_u64().unwrap())
            .sum()
    };
    assert!(total(&a) >= 15, "{a}");
    assert!(a["invocations"]["error"].as_u64().unwrap() > 0);
    assert!(a["invocations"]["timeout"].as_u64().unwrap() > 0);
    // Same seed: the same invocations, so the same outcomes.
    let statuses = |r: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = r["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rec| rec["status"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let (sa, sb) = (statuses(&a), statuses(&b));
    assert_eq!(sa.len(), 40);
    assert_eq!(sa, sb, "same seed, different outcomes");
}

#[test]
fn cli_serves_until_sigterm_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let function = write_function(dir.path(), "");
    let report = dir.path().join("report.json");
    let mut child = Command::new(sandbox_bin())
        .args(["run", "--function"])
        .arg(&function)
        .args(["--invoke-addr", "127.0.0.1:0", "--report"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("invoke api listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let c = reqwest_lite::Client::new();
        c.send(
            "POST",
            &format!("http://{addr}/2015-03-31/functions/clifn/invocations"),
            &[],
            r#"{"log_lines": 1}"#,
        )
        .await
        .status
    });
    assert_eq!(status, 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("done: success=1"), "{rest}");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["invocations"]["success"], 1);
    assert_eq!(r["shutdowns"][0]["reason"], "spindown");
}

#[test]
fn cli_rejects_unknown_yaml_keys() {
    let dir = tempfile::tempdir().unwrap();
    let function = write_function(dir.path(), "timeout: 3\n");
    let out = Command::new(sandbox_bin())
        .args(["run", "--function"])
        .arg(&function)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `timeout`"), "{err}");
}
