//! lambdawatch-extension under the AWS RIE, in classic and Managed Instances mode, beside the
//! Python Powertools sample: it registers (INVOKE+SHUTDOWN in classic, SHUTDOWN only on MI), copes
//! with the classic RIE's 202 `Telemetry.NotSupported`, never fails an invocation, and exits on
//! SHUTDOWN. The OTLP endpoint is a closed loopback port, so this also shows it fails open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lambdawatch_tests::lambda_env::{Mode, Proc, Rie, Setup, WorkDir};
use lambdawatch_tests::{free_port, workspace_bin};
use serde_json::json;

fn run(mode: Mode) {
    let ext = workspace_bin("lambdawatch-extension");
    let dead_endpoint = format!("http://127.0.0.1:{}", free_port());
    let setup = Setup::python_sample().extension(
        // The extension registers under its file name, as Lambda requires.
        "lambdawatch-extension",
        Proc::new(&[ext.to_string_lossy().as_ref()])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &dead_endpoint),
    );
    let mut rie = Rie::start(&setup, WorkDir::new(), mode);
    for i in 0..3 {
        let r = rie.invoke(&json!({"log_lines": 2, "log_json": i % 2 == 0}));
        assert_eq!(r.status, 200, "{mode:?} invoke {i}: {}", r.text());
        assert_eq!(r.json()["ok"], true, "{mode:?} invoke {i}: {}", r.text());
    }
    let r = rie.invoke(&json!({"fail": true}));
    assert_eq!(
        r.json()["errorType"],
        "SampleFailure",
        "{mode:?}: {}",
        r.text()
    );
    rie.stop(Duration::from_secs(10));
    let out = rie.child.lines().join("\n");
    // The RIE's own log lines (aws-sam-cli pinned in scripts/test.sh) say what registered.
    let registered: &[&str] = match mode {
        Mode::Classic => &[
            "External agent lambdawatch-extension (",
            "registered, subscribed to [INVOKE SHUTDOWN]",
        ],
        Mode::ManagedInstances => &[
            "msg=\"External agent registered\" agentName=lambdawatch-extension",
            "msg=\"Telemetry subscription created\" agentName=lambdawatch-extension",
        ],
    };
    for want in registered {
        assert!(
            out.contains(want),
            "{mode:?}: no `{want}` in the RIE output:\n{out}"
        );
    }
    if mode == Mode::ManagedInstances {
        assert!(
            out.contains("events=[SHUTDOWN]"),
            "{mode:?}: must register for SHUTDOWN only:\n{out}"
        );
    }
    for bad in ["Extension.Crash", "ShutdownEventNotSupported", "panicked"] {
        assert!(
            !out.contains(bad),
            "{mode:?}: `{bad}` in the RIE output:\n{out}"
        );
    }
}

#[test]
fn extension_runs_under_rie_classic_with_python_powertools() {
    run(Mode::Classic);
}

#[test]
fn extension_runs_under_rie_managed_instances_with_python_powertools() {
    run(Mode::ManagedInstances);
}
