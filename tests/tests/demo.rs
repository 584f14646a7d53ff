//! README Quick start command 1, end to end: the demo runs the whole pipeline (sandbox, extension,
//! collector with the embedded defaults) and the alerts its scenario is built to cause reach the
//! webhook.

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
