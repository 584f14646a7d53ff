//! The sandbox through its real HTTP APIs, with the rust sample function and the probe extension.
//! Needs `cargo build -p lambdawatch-sample-function -p lambdawatch-sandbox` first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn kind(e: &Value) -> &str {
    e["type"].as_str().unwrap_or("")
}

fn rid(e: &Value) -> &str {
    e["record"]["requestId"].as_str().unwrap_or("")
}

fn position(events: &[(u64, Value)], t: &str, request_id: &str) -> usize {
    events
        .iter()
        .position(|(_, e)| kind(e) == t && (request_id.is_empty() || rid(e) == request_id))
        .unwrap_or_else(|| panic!("no {t} for {request_id:?} in {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_event_order_and_late_report() {
    let h = start("", &[], &[("probe", &[])], None).await;
    let r1 = h
        .invoke(r#"{"log_lines": 2, "log_json": true}"#, false)
        .await;
    assert_eq!(r1.status, 200);
    let id1 = r1.header("X-Amzn-RequestId").unwrap();
    // The environment is frozen now: the report of invocation 1 must not arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = telemetry_events(&probe_lines(&h.probe_out));
    assert!(
        !before.iter().any(|(_, e)| kind(e) == "platform.report"),
        "platform.report delivered while frozen: {before:#?}"
    );
    let thaw_at = now_ms();
    let r2 = h.invoke("{}", false).await;
    assert_eq!(r2.status, 200);
    let id2 = r2.header("X-Amzn-RequestId").unwrap();
    let (report, lines, _dir) = h.finish().await;
    let ev = telemetry_events(&lines);
    // INIT order, then invocation 1.
    let init_start = position(&ev, "platform.initStart", "");
    let rt_done = position(&ev, "platform.initRuntimeDone", "");
    let init_report = position(&ev, "platform.initReport", "");
    let start1 = position(&ev, "platform.start", &id1);
    let done1 = position(&ev, "platform.runtimeDone", &id1);
    let report1 = position(&ev, "platform.report", &id1);
    let start2 = position(&ev, "platform.start", &id2);
    let report2 = position(&ev, "platform.report", &id2);
    assert!(init_start < rt_done && rt_done < init_report && init_report < start1);
    assert!(start1 < done1 && done1 < report1 && report1 < report2 && start2 < report2);
    assert_eq!(ev[init_start].1["record"]["phase"], "init");
    assert_eq!(
        ev[init_start].1["record"]["initializationType"],
        "on-demand"
    );
    // JSON log lines are objects with schema 2022-12-13.
    let f = ev
        .iter()
        .find(|(_, e)| kind(e) == "function" && e["record"].is_object())
        .expect("a JSON function record");
    assert_eq!(f.1["record"]["requestId"], id1.as_str());
    // The late report: delivered only after the thaw.
    assert!(
        ev[report1].0 >= thaw_at,
        "report 1 arrived before the next thaw"
    );
    let rec = &ev[report1].1["record"];
    assert_eq!(rec["status"], "success");
    assert!(rec["metrics"]["initDurationMs"].as_f64().unwrap() > 0.0);
    assert!(rec["metrics"]["maxMemoryUsedMB"].as_u64().unwrap() > 0);
    let d = rec["metrics"]["durationMs"].as_f64().unwrap();
    let billed = rec["metrics"]["billedDurationMs"].as_u64().unwrap();
    // One interval for both: billed is the reported duration rounded up to 1 ms (AWS: 693.92
    // → 694).
    assert_eq!(billed, d.ceil() as u64, "{rec}");
    let spans_total = rec["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["durationMs"].as_f64().unwrap())
        .sum::<f64>();
    assert!(
        (d - spans_total).abs() < 1.0,
        "durationMs {d} must cover the spans ({spans_total}): {rec}"
    );
    let spans: Vec<&str> = rec["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(spans.contains(&"responseLatency") && spans.contains(&"responseDuration"));
    assert!(
        rec["tracing"]["value"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );
    // The probe saw INVOKE with the documented fields.
    let inv = lines
        .iter()
        .find(|l| l["lifecycle"]["eventType"] == "INVOKE")
        .unwrap();
    for k in ["deadlineMs", "requestId", "invokedFunctionArn", "tracing"] {
        assert!(inv["lifecycle"].get(k).is_some(), "INVOKE lacks {k}");
    }
    assert_eq!(report.invocations.success, 2);
    assert_eq!(report.cold_starts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_environment_stops_extension_timer() {
    let h = start("", &[], &[("probe", &[("PROBE_TICK_MS", "20")])], None).await;
    // A first invocation of 300 ms keeps the environment thawed long enough for the probe's
    // timer to tick before the freeze, even on a loaded machine (otherwise every tick can fall
    // after the thaw and there is no gap to see).
    assert_eq!(h.invoke(r#"{"sleep_ms": 300}"#, false).await.status, 200);
    let frozen_from = now_ms();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let frozen_to = now_ms();
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (_, lines, _dir) = h.finish().await;
    let ticks: Vec<u64> = lines.iter().filter_map(|l| l["tick"].as_u64()).collect();
    assert!(ticks.len() > 3, "the probe timer never ran: {ticks:?}");
    let inside = ticks
        .iter()
        .filter(|t| **t > frozen_from + 200 && **t < frozen_to - 100)
        .count();
    assert_eq!(inside, 0, "timer ticked while frozen: {ticks:?}");
    assert!(
        ticks.iter().any(|t| *t < frozen_from) && ticks.iter().any(|t| *t > frozen_to),
        "ticks on both sides of the freeze: {ticks:?}"
    );
    let max_gap = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap >= 600,
        "no frozen gap in ticks (max gap {max_gap} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_resets_then_suppressed_init() {
    // One environment, so the second invocation must reuse (and re-initialise) it.
    let h = start(
        "timeout_ms: 400\nreserved_concurrency: 1\n",
        &[],
        &[("probe", &[])],
        None,
    )
    .await;
    let r = h.invoke(r#"{"sleep_ms": 3000}"#, false).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("X-Amz-Function-Error").as_deref(),
        Some("Unhandled")
    );
    assert!(String::from_utf8_lossy(&r.body).contains("Task timed out"));
    // The environment is busy resetting (SHUTDOWN, kill) for a moment: 429 until it is free.
    let mut r2 = h.invoke("{}", false).await;
    for _ in 0..100 {
        if r2.status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r2 = h.invoke("{}", false).await;
    }
    assert_eq!(r2.status, 200);
    assert!(r2.header("X-Amz-Function-Error").is_none());
    let (report, lines, _dir) = h.finish().await;
    let shutdown = lines
        .iter()
        .find(|l| l["lifecycle"]["eventType"] == "SHUTDOWN")
        .expect("SHUTDOWN after the timeout");
    assert_eq!(shutdown["lifecycle"]["shutdownReason"], "timeout");
    let ev = telemetry_events(&lines);
    let phases: Vec<&str> = ev
        .iter()
        .filter(|(_, e)| kind(e) == "platform.initStart")
        .map(|(_, e)| e["record"]["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["init", "invoke"], "suppressed init expected");
    let statuses: Vec<&str> = report.records.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["timeout", "success"]);
    assert_eq!(report.invocations.timeout, 1);
    assert!(report.shutdowns.iter().any(|s| s.reason == "timeout"));
    let timeout_report = ev
        .iter()
        .find(|(_, e)| kind(e) == "platform.report" && e["record"]["status"] == "timeout");
    assert!(
        timeout_report.is_some(),
        "no platform.report with status timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_beyond_reserved_concurrency() {
    let h = start("reserved_concurrency: 1\n", &[], &[], None).await;
    let calls: Vec<_> = (0..4)
        .map(|_| h.invoke(r#"{"sleep_ms": 600}"#, false))
        .collect();
    let mut statuses = Vec::new();
    let mut throttled = 0;
    for r in futures_join(calls).await {
        if r.status == 429 {
            throttled += 1;
            assert_eq!(
                r.header("X-Amzn-ErrorType").as_deref(),
                Some("TooManyRequestsException")
            );
        }
        statuses.push(r.status);
    }
    assert!(throttled >= 1, "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let (report, _, _dir) = h.finish().await;
    assert_eq!(report.throttles, throttled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_retries_keep_request_id_then_dlq() {
    let h = start(
        "max_retries: 2\nasync_retry_delay_ms: 50\ndlq: failures\n",
        &[],
        &[],
        None,
    )
    .await;
    let r = h.invoke(r#"{"fail": true}"#, true).await;
    assert_eq!(r.status, 202);
    let id = r.header("X-Amzn-RequestId").unwrap();
    let (report, _, _dir) = h.finish().await;
    let attempts: Vec<(u32, &str)> = report
        .records
        .iter()
        .filter(|r| r.request_id == id)
        .map(|r| (r.attempt, r.status.as_str()))
        .collect();
    assert_eq!(attempts, [(1, "error"), (2, "error"), (3, "error")]);
    assert_eq!(report.async_.received, 1);
    assert_eq!(report.async_.retried, 2);
    assert_eq!(report.async_.dead_lettered, 1);
    // As in CloudWatch, an event sent to the DLQ is also counted as dropped.
    assert_eq!(report.async_.dropped, 1);
    assert_eq!(report.dead_letters[0].request_id, id);
    assert_eq!(report.dead_letters[0].queue, "failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_sigkills_stubborn_extension() {
    let h = start(
        "",
        &[],
        &[("stubborn", &[("PROBE_IGNORE_SHUTDOWN", "1")])],
        None,
    )
    .await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (report, lines, _dir) = h.finish().await;
    let sd = lines
        .iter()
        .find(|l| l["lifecycle"]["eventType"] == "SHUTDOWN")
        .expect("SHUTDOWN delivered");
    assert_eq!(sd["lifecycle"]["shutdownReason"], "spindown");
    assert!(sd["lifecycle"]["deadlineMs"].as_u64().unwrap() > sd["at_ms"].as_u64().unwrap());
    let s = &report.shutdowns[0];
    assert_eq!(s.killed_extensions, ["stubborn"]);
    assert!(
        (2_000.0..4_000.0).contains(&s.duration_ms),
        "shutdown took {} ms",
        s.duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failure_is_reported_and_the_environment_replaced() {
    // A runtime that exits during init.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("probe.jsonl");
    let ext = dir.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    std::os::unix::fs::symlink(PROBE, ext.join("probe")).unwrap();
    // The probe subscribes late, after the runtime has already exited and the init failed, so
    // the failure must reach it from the INIT backlog.
    let yaml = format!(
        "name: testfn\nhandler: ['/bin/false']\nextensions_dir: '{}'\nenvironment:\n  PROBE_OUT: '{}'\n  PROBE_SUBSCRIBE_DELAY_MS: '300'\n",
        ext.display(),
        out.display()
    );
    let function: lambdawatch_sandbox::config::FunctionConfig =
        serde_yaml::from_str(&yaml).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = stop.clone();
    let task = tokio::spawn(lambdawatch_sandbox::run(
        lambdawatch_sandbox::RunOptions {
            function,
            workload: None,
            invoke_addr: "127.0.0.1:0".parse().unwrap(),
            report: None,
            cloudwatch_endpoint: None,
        },
        s,
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let addr = rx.await.unwrap();
    let client = reqwest_lite::Client::new();
    let url = format!("http://{addr}/2015-03-31/functions/testfn/invocations");
    for _ in 0..2 {
        let r = client.send("POST", &url, &[], "{}").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("X-Amz-Function-Error").as_deref(),
            Some("Unhandled")
        );
        assert_eq!(r.json()["errorType"], "Runtime.ExitError");
    }
    stop.cancel();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.invocations.failure, 2);
    // Each failed init got a fresh environment.
    assert_ne!(report.records[0].environment, report.records[1].environment);
    let ev = telemetry_events(&probe_lines(&out));
    let statuses: Vec<&str> = ev
        .iter()
        .filter(|(_, e)| kind(e) == "platform.initReport")
        .map(|(_, e)| e["record"]["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"failure"), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_longer_than_10_s_times_out() {
    let h = start("", &[("INIT_SLEEP_MS", "10500")], &[("probe", &[])], None).await;
    let started = std::time::Instant::now();
    let r = h.invoke("{}", false).await;
    let took = started.elapsed();
    assert_eq!(
        r.header("X-Amz-Function-Error").as_deref(),
        Some("Unhandled")
    );
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout");
    assert!(
        took >= Duration::from_millis(10_000) && took < Duration::from_millis(13_500),
        "{took:?}"
    );
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.invocations.failure, 1);
    let ev = telemetry_events(&lines);
    let init_report = ev
        .iter()
        .find(|(_, e)| kind(e) == "platform.initReport")
        .expect("initReport");
    assert_eq!(init_report.1["record"]["status"], "timeout");
}

/// Memory is the whole process group: the runtime here is a shell that runs the sample function
/// as its child, and the child's `alloc_mb` must show in `maxMemoryUsedMB`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_memory_used_counts_the_runtimes_children() {
    let sample = sample_function().display().to_string();
    // `; exit $?` keeps the shell from exec-ing the sample: it stays a child in the group.
    let script = format!("'{sample}'; exit $?");
    let h = start_with_handler(&["/bin/sh", "-c", &script], "", &[], &[], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    assert_eq!(h.invoke(r#"{"alloc_mb": 96}"#, false).await.status, 200);
    let (report, _, _dir) = h.finish().await;
    let mem: Vec<u64> = report
        .records
        .iter()
        .map(|r| r.max_memory_used_mb)
        .collect();
    assert_eq!(mem.len(), 2);
    assert!(mem[0] > 0, "{mem:?}");
    assert!(
        mem[1] >= mem[0] + 90,
        "96 MiB allocated by the runtime's child must show: {mem:?}"
    );
}

/// A slow extension (800 ms of post-invoke work): the caller is answered at once, but the
/// report of that invocation exists only after the extension's `/event/next`, and its duration
/// covers that wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_waits_for_a_slow_extensions_next() {
    let h = start(
        "",
        &[],
        &[("probe", &[("PROBE_NEXT_DELAY_MS", "800")])],
        None,
    )
    .await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    // Let the first invocation's delayed /event/next happen first, so the next delayed line in
    // the probe's output is the second invocation's.
    let mut first_done = false;
    for _ in 0..100 {
        if probe_lines(&h.probe_out)
            .iter()
            .any(|l| l.get("next_after_delay").is_some())
        {
            first_done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        first_done,
        "the probe's first delayed /event/next never came"
    );
    let r = h.invoke("{}", false).await;
    let answered_at = now_ms();
    assert_eq!(r.status, 200);
    let id = r.header("X-Amzn-RequestId").unwrap();
    let (_, lines, _dir) = h.finish().await;
    let ev = telemetry_events(&lines);
    let report = &ev[position(&ev, "platform.report", &id)].1;
    // The probe's `/event/next` after INVOKE #2 (lines are in time order).
    let invoke2 = lines
        .iter()
        .position(|l| l["lifecycle"]["requestId"] == id.as_str())
        .unwrap();
    let next_at = lines[invoke2..]
        .iter()
        .find_map(|l| l["next_after_delay"].as_u64())
        .expect("the probe's delayed /event/next");
    assert!(
        answered_at <= next_at,
        "the caller was answered at {answered_at}, after the extension's /event/next at {next_at}"
    );
    let produced = rfc3339_ms(report["time"].as_str().unwrap());
    assert!(
        produced >= next_at,
        "platform.report produced at {produced}, before the extension's /event/next at {next_at}"
    );
    let d = report["record"]["metrics"]["durationMs"].as_f64().unwrap();
    assert!(
        d >= 800.0,
        "durationMs {d} must include the extension's 800 ms"
    );
    let ext = report["record"]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "extensionOverhead")
        .expect("extensionOverhead span");
    // The extension's 800 ms started at INVOKE, beside the runtime's work: what is left after
    // the runtime is back in /next is the extension overhead.
    assert!(ext["durationMs"].as_f64().unwrap() > 0.0, "{ext}");
}

/// `2026-11-29T19:14:22.123Z` → unix ms (UTC, as the sandbox writes it).
fn rfc3339_ms(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, mo, d) = (n(0..4), n(5..7), n(8..10));
    let (h, mi, sec) = (n(11..13), n(14..16), n(17..19));
    let frac = s[20..].trim_end_matches('Z');
    let ms = format!("{frac:0<3}")[..3].parse::<i64>().unwrap();
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms) as u64
}
