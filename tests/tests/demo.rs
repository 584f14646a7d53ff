//! README Quick start command 1, end to end: the demo runs the whole pipeline (sandbox, extension,
//! collector with the embedded defaults) and the alerts its scenario is built to cause reach the
//! webhook, and the cost report prices both functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lambdawatch_tests::{Child, workspace_bin};

#[test]
fn demo_runs_the_pipeline_and_the_expected_alerts_fire() {
    // The binaries the demo would build are built by the test command already.
    for b in [
        "lambdawatch-collector",
        "lambdawatch-sandbox",
        "lambdawatch-extension",
        "sample-function",
    ] {
        workspace_bin(b);
    }
    let mut cmd = Command::new(workspace_bin("lambdawatch-demo"));
    cmd.env("LAMBDAWATCH_DEMO_NO_BUILD", "1");
    let mut demo = Child::spawn("demo", &mut cmd);
    let status = demo.wait_exit(Duration::from_secs(240));
    let out = demo.lines().join("\n");
    assert!(status.success(), "demo failed ({status}):\n{out}");
    for expected in [
        "[firing] LambdawatchErrorBudgetBurn orders (page)",
        "[firing] LambdawatchColdStartBudgetBurn checkout (page)",
        "[firing] LambdawatchThrottleBudgetExhausted orders (ticket)",
        "[firing] LambdawatchDeadLetterBudgetBurn orders (page)",
    ] {
        assert!(
            out.contains(expected),
            "demo output lacks {expected:?}:\n{out}"
        );
    }
    // The cost report: both functions priced (eu-west-1 list prices, their configured memory),
    // a positive cost so far and a 30-day projection at least as large as it would be without
    // growth: the traffic of about a minute scaled to 30 days exceeds what was spent so far.
    for (function, memory) in [("orders:1", 256), ("checkout:2", 512)] {
        let line = out
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("{function} ")) && l.contains("cost so far $")
            })
            .unwrap_or_else(|| panic!("no cost line for {function}:\n{out}"));
        let after = |label: &str| -> f64 {
            let rest = line
                .split(label)
                .nth(1)
                .unwrap_or_else(|| panic!("{label} in {line:?}"));
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no number after {label} in {line:?}"))
        };
        assert!(line.contains(&format!(" {memory} MB ")), "{line}");
        let so_far = after("cost so far $");
        let projected = after("30-day projection $");
        assert!(so_far > 0.0, "{line}");
        assert!(projected >= so_far, "{line}");
        // orders' failed async events are retried with their request id: the retry tracker sees
        // them (checkout has no async traffic).
        let retries = line
            .split(" retries ")
            .nth(1)
            .and_then(|r| r.split('%').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no retry fraction in {line:?}"));
        if function == "orders:1" {
            assert!(retries > 0.0, "{line}");
        } else {
            assert_eq!(retries, 0.0, "{line}");
        }
    }
    // The advice lines (`cost::advice` run on the evaluation tick): every strategy's memory
    // recommendation is at least the floor, the floor at least the max memory used observed +
    // 20 % headroom (and Lambda's 128 MB); checkout (10 s timeout, ~0.8 s invocations) is within
    // its timeout budget; checkout's slow cold starts show as a positive cold-start ratio.
    for (function, memory) in [("orders:1", 256u64), ("checkout:2", 512)] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("advice {function} ")))
            .unwrap_or_else(|| panic!("no advice line for {function}:\n{out}"));
        let after = |label: &str| -> &str {
            line.split(label)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("{label} in {line:?}"))
        };
        let num = |label: &str| -> f64 {
            after(label)
                .trim_end_matches(',')
                .trim_end_matches('%')
                .parse()
                .unwrap_or_else(|_| panic!("no number after {label} in {line:?}"))
        };
        let floor = num(" floor ");
        let used = num(" max used ");
        assert!(used > 0.0 && used <= memory as f64, "{line}");
        assert!(floor >= (used * 1.2).ceil() && floor >= 128.0, "{line}");
        // Below 100 invocations at every size the advice says so instead of a size.
        if !line.contains(" memory insufficient data (") {
            for strategy in ["cost", "speed", "balanced"] {
                let rec = num(&format!(" {strategy} "));
                assert!(rec >= floor, "{strategy} below the floor: {line}");
            }
        }
        let ratio = num(" timeout ratio ");
        assert!(ratio > 0.0, "{line}");
        let cold = num(" cold starts ");
        assert!((0.0..=100.0).contains(&cold), "{line}");
        if function == "checkout:2" {
            assert!(ratio <= 0.8 && line.contains("(within)"), "{line}");
            assert!(cold > 0.0 && after(" P99 init ") != "-", "{line}");
        }
        assert!(line.contains(" cascade unknown "), "{line}");
    }
    // The healthy SLOs stay quiet: no alert on checkout's errors, nor on orders' cold starts.
    assert!(
        !out.contains("LambdawatchErrorBudgetBurn checkout"),
        "{out}"
    );
    assert!(
        !out.contains("LambdawatchColdStartBudgetBurn orders"),
        "{out}"
    );
}
