//! The AWS Runtime Interface Emulator as ground truth, and lambdawatch-sandbox measured against it.
//!
//! A recorder runtime and a recorder extension (`tests/fixtures/conformance/*.py`, stdlib only) log
//! every Runtime, Extensions and Telemetry API exchange (status, headers, body), including the error
//! paths (unknown ids, missing names, a second response, malformed and out-of-range subscriptions).
//! The same scenario runs under the RIE and under the sandbox; where they disagree on the Runtime or
//! Extensions API the RIE is right, and every disagreement is listed in the failure message.
//! The Python (awslambdaric + Powertools) and Rust (lambda_runtime) samples run under both too.
//!
//! Needs root (`unshare -m`), the peers from `./scripts/test.sh` and the workspace binaries.

// Test helpers panic with a clear message on failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use lambdawatch_tests::lambda_env::{Host, Mode, Proc, Rie, Sandbox, Setup, WorkDir, read_jsonl};
use lambdawatch_tests::{peers, repo_root, wait_until, workspace_bin};
use serde_json::{Value, json};

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/conformance")
}

/// Recorder runtime + recorder extension; `events` is what the extension registers for.
fn recorder_setup(work: &WorkDir, events: &str, probe_errors: bool) -> Setup {
    if !events.contains("INVOKE") {
        // Tells run_scenario not to wait for per-invoke extension events.
        std::fs::write(work.path().join("shutdown-only"), "").unwrap();
    }
    let py = peers::python().to_string_lossy().to_string();
    let f = fixtures();
    let runtime = Proc::new(&[
        py.clone(),
        f.join("recorder_runtime.py").to_string_lossy().to_string(),
    ])
    .env("RECORD_OUT", work.out("runtime.jsonl").to_string_lossy());
    let ext = Proc::new(&[
        py,
        f.join("recorder_extension.py")
            .to_string_lossy()
            .to_string(),
    ])
    .env("RECORD_OUT", work.out("extension.jsonl").to_string_lossy())
    .env("RECORD_NAME", "recorder")
    .env("RECORD_EVENTS", events)
    .env("RECORD_SCHEMA", "2025-01-29")
    .env("RECORD_PROBE_ERRORS", if probe_errors { "1" } else { "0" });
    Setup::new(f, runtime).extension("recorder", ext)
}

/// What one scenario run recorded.
#[derive(Debug)]
struct Recorded {
    host: &'static str,
    invokes: Vec<lambdawatch_tests::http::Response>,
    runtime: Vec<Value>,
    extension: Vec<Value>,
}

impl Recorded {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.runtime
            .iter()
            .chain(&self.extension)
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        self.all(kind).first().copied().unwrap_or_else(|| {
            panic!(
                "{}: no `{kind}` record; runtime={:#?} extension={:#?}",
                self.host, self.runtime, self.extension
            )
        })
    }

    fn telemetry(&self) -> Vec<Value> {
        self.extension
            .iter()
            .filter(|r| r["kind"] == "telemetry")
            .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn event_next(&self, event_type: &str) -> Vec<&Value> {
        self.all("event_next")
            .into_iter()
            .filter(|r| r["body"]["eventType"] == event_type)
            .collect()
    }
}

/// The scenario: a traced invoke that also probes the error paths, a failing invoke, a plain one;
/// then SIGTERM (SHUTDOWN to the extension).
///
/// Each invoke waits until the recorder runtime and extension are both back in `/next` (their
/// `*_next_called` marks), so one environment serves the whole scenario under both hosts (the
/// sandbox, like Lambda, scales out to a second environment when the first is still busy).
fn run_scenario(mut host: Host) -> Recorded {
    let ext_out = host.work().out("extension.jsonl");
    let rt_out = host.work().out("runtime.jsonl");
    let invoke_events = !host.work().path().join("shutdown-only").exists();
    let wait_idle = |n: usize| {
        wait_until(
            "recorder runtime and extension back in /next",
            Duration::from_secs(30),
            || {
                let count = |path: &PathBuf, kind: &str| {
                    read_jsonl(path)
                        .iter()
                        .filter(|r| r["kind"] == kind)
                        .count()
                };
                let rt = count(&rt_out, "invocation_next_called") >= n;
                let ext = !invoke_events || count(&ext_out, "event_next_called") >= n;
                (rt && ext).then_some(())
            },
        )
    };
    let mut invokes = Vec::new();
    let scenario = [
        (
            json!({"probe_errors": true}),
            vec![("X-Amzn-Trace-Id", TRACE)],
        ),
        (json!({"fail": true}), vec![]),
        (json!({"n": 3}), vec![]),
    ];
    for (i, (payload, headers)) in scenario.into_iter().enumerate() {
        if i > 0 {
            wait_idle(i + 1);
        }
        invokes.push(host.invoke_with(&payload, &headers));
    }
    // Telemetry is batched; give the last batch time to arrive before shutting down.
    std::thread::sleep(Duration::from_millis(300));
    host.stop(Duration::from_secs(10));
    let name = host.name();
    let rec = Recorded {
        host: name,
        invokes,
        runtime: read_jsonl(&host.work().out("runtime.jsonl")),
        extension: read_jsonl(&ext_out),
    };
    assert!(
        !rec.event_next("SHUTDOWN").is_empty(),
        "{name}: the extension never received SHUTDOWN; extension records: {:#?}\nhost output:\n{}",
        rec.extension,
        host.child().lines().join("\n")
    );
    rec
}

fn lambda_headers(r: &Value) -> BTreeSet<String> {
    r["headers"]
        .as_object()
        .map(|h| {
            h.keys()
                .filter(|k| k.starts_with("lambda-"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The type skeleton of a JSON value: objects by key, arrays by their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => json!([a.first().map(shape).unwrap_or(json!("empty"))]),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

// ---------------------------------------------------------------- the RIE alone (ground truth)

#[test]
fn rie_classic_serves_runtime_and_extensions_apis_and_refuses_telemetry() {
    let work = WorkDir::new();
    let setup = recorder_setup(&work, "INVOKE,SHUTDOWN", true);
    let rec = run_scenario(Host::Rie(Rie::start(&setup, work, Mode::Classic)));

    assert_eq!(rec.invokes[0].status, 200);
    assert_eq!(rec.invokes[0].json()["echo"], json!({"probe_errors": true}));
    assert_eq!(rec.invokes[1].json()["errorType"], "Recorder.Failure");

    let reg = rec.one("register");
    assert_eq!(reg["status"], 200);
    assert!(
        reg["headers"]["lambda-extension-identifier"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    assert_eq!(reg["body"]["functionName"], "test_function");
    assert_eq!(reg["body"]["functionVersion"], "$LATEST");

    let sub = rec.one("telemetry_subscribe");
    assert_eq!(sub["status"], 202);
    assert_eq!(sub["body"]["errorType"], "Telemetry.NotSupported");
    assert!(
        rec.telemetry().is_empty(),
        "classic RIE pushed telemetry: {:?}",
        rec.telemetry()
    );

    let next = rec.one("invocation_next");
    assert_eq!(next["status"], 200);
    for h in [
        "lambda-runtime-aws-request-id",
        "lambda-runtime-deadline-ms",
        "lambda-runtime-invoked-function-arn",
    ] {
        assert!(
            next["headers"][h].is_string(),
            "invocation/next lacks {h}: {next}"
        );
    }
    let invokes = rec.event_next("INVOKE");
    assert_eq!(invokes.len(), 3, "one INVOKE per invocation");
    assert_eq!(
        invokes[0]["body"]["requestId"],
        next["headers"]["lambda-runtime-aws-request-id"]
    );
    assert_eq!(
        rec.one("response_unknown_request_id")["body"]["errorType"],
        "InvalidRequestID"
    );
    assert_eq!(rec.one("response_twice")["status"], 403);
    assert_eq!(
        rec.one("register_without_name")["body"]["errorType"],
        "Extension.InvalidExtensionName"
    );
    assert_eq!(
        rec.one("next_unknown_identifier")["body"]["errorType"],
        "Extension.UnknownExtensionIdentifier"
    );
}

#[test]
fn rie_managed_instances_pushes_2025_01_29_telemetry_to_shutdown_only_extensions() {
    let work = WorkDir::new();
    let setup = recorder_setup(&work, "SHUTDOWN", true);
    let rec = run_scenario(Host::Rie(Rie::start(&setup, work, Mode::ManagedInstances)));

    assert_eq!(rec.one("register")["status"], 200);
    assert_eq!(
        rec.one("register")["body"]["accountId"]
            .as_str()
            .map(str::len),
        Some(12)
    );
    assert_eq!(rec.one("telemetry_subscribe")["status"], 200);
    assert_eq!(rec.one("telemetry_malformed_json")["status"], 400);
    assert_eq!(rec.one("telemetry_buffering_out_of_range")["status"], 400);
    assert_eq!(rec.one("telemetry_unknown_identifier")["status"], 403);
    assert!(rec.event_next("INVOKE").is_empty());
    for r in &rec.invokes {
        assert_eq!(r.status, 200, "MI invoke: {}", r.text());
    }
    let next = rec.one("invocation_next");
    assert_eq!(next["headers"]["lambda-runtime-trace-id"], TRACE);

    let events = rec.telemetry();
    let types: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "platform.initStart",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.start",
        "platform.report",
    ] {
        assert!(types.contains(t), "MI telemetry lacks {t}: {types:?}");
    }
    let init = events
        .iter()
        .find(|e| e["type"] == "platform.initStart")
        .unwrap();
    assert_eq!(
        init["record"]["initializationType"],
        "lambda-managed-instances"
    );
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "platform.start")
        .collect();
    assert_eq!(starts.len(), 3, "platform.start events: {events:#?}");
    assert_eq!(starts[0]["record"]["tracing"]["value"], TRACE);
    let reports: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "platform.report")
        .collect();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[1]["record"]["status"], "error");
}

// ------------------------------------------------------------- the sandbox against the RIE

/// Headers the sandbox may send that the classic RIE leaves out, because Lambda sends them: the
/// RIE in MI mode and the Runtime API docs carry `Lambda-Runtime-Trace-Id` on every invocation
/// (X-Ray PassThrough), which classic mode drops.
const ALLOWED_EXTRA_HEADERS: &[&str] = &["lambda-runtime-trace-id"];

/// Body keys the sandbox may add: `accountId` in the register response (returned when the
/// `Lambda-Extension-Accept-Feature: accountId` header is sent, as the RIE does in MI mode) and
/// `tracing` in INVOKE events (Extensions API docs; the classic RIE only sends it when the invoke
/// carried a trace header).
const ALLOWED_EXTRA_KEYS: &[&str] = &["accountId", "tracing"];

/// Compares one exchange; pushes each disagreement (the RIE's answer is the reference).
fn compare_exchange(what: &str, rie: &Value, sb: &Value, diffs: &mut Vec<String>) {
    if rie["status"] != sb["status"] {
        diffs.push(format!(
            "{what}: status {} (RIE) vs {} (sandbox); bodies {} vs {}",
            rie["status"], sb["status"], rie["body"], sb["body"]
        ));
    }
    let (hr, hs) = (lambda_headers(rie), lambda_headers(sb));
    for h in hr.difference(&hs) {
        diffs.push(format!(
            "{what}: sandbox lacks header {h} (RIE: {})",
            rie["headers"][h]
        ));
    }
    for h in hs
        .difference(&hr)
        .filter(|h| !ALLOWED_EXTRA_HEADERS.contains(&h.as_str()))
    {
        diffs.push(format!(
            "{what}: sandbox adds header {h}: {} (RIE has none)",
            sb["headers"][h]
        ));
    }
    if rie["body"].get("errorType").is_some() || sb["body"].get("errorType").is_some() {
        if rie["body"]["errorType"] != sb["body"]["errorType"] {
            diffs.push(format!(
                "{what}: errorType {} (RIE) vs {} (sandbox)",
                rie["body"]["errorType"], sb["body"]["errorType"]
            ));
        }
    } else {
        compare_shape(what, &shape(&rie["body"]), &shape(&sb["body"]), diffs);
    }
}

fn compare_shape(what: &str, r: &Value, s: &Value, diffs: &mut Vec<String>) {
    match (r, s) {
        (Value::Object(ro), Value::Object(so)) => {
            for (k, rv) in ro {
                match so.get(k) {
                    None => diffs.push(format!("{what}: sandbox body lacks `{k}`")),
                    Some(sv) => compare_shape(&format!("{what}.{k}"), rv, sv, diffs),
                }
            }
            for k in so
                .keys()
                .filter(|k| !ro.contains_key(*k) && !ALLOWED_EXTRA_KEYS.contains(&k.as_str()))
            {
                diffs.push(format!("{what}: sandbox body adds `{k}` (RIE has none)"));
            }
        }
        (Value::Array(ra), Value::Array(sa)) => {
            if let (Some(rv), Some(sv)) = (ra.first(), sa.first()) {
                compare_shape(&format!("{what}[]"), rv, sv, diffs);
            }
        }
        _ if r != s => diffs.push(format!("{what}: {r} (RIE) vs {s} (sandbox)")),
        _ => {}
    }
}

/// `Lambda-Runtime-Deadline-Ms` / `deadlineMs` lies within the function timeout of the record time.
fn check_deadline(
    host: &str,
    what: &str,
    deadline: &Value,
    at_ms: &Value,
    timeout_ms: u64,
    diffs: &mut Vec<String>,
) {
    let d = deadline
        .as_u64()
        .or_else(|| deadline.as_str().and_then(|s| s.parse().ok()));
    let at = at_ms.as_u64().unwrap_or(0);
    match d {
        Some(d) if d + 2_000 >= at && d <= at + timeout_ms + 2_000 => {}
        _ => diffs.push(format!(
            "{host} {what}: deadline {deadline} not within {timeout_ms} ms of {at}"
        )),
    }
}

fn is_function_arn(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() >= 7
        && parts[..3] == ["arn", "aws", "lambda"]
        && parts[4].len() == 12
        && parts[5] == "function"
}

#[test]
fn sandbox_runtime_and_extensions_apis_match_the_rie() {
    let rie = {
        let work = WorkDir::new();
        let setup = recorder_setup(&work, "INVOKE,SHUTDOWN", true);
        run_scenario(Host::Rie(Rie::start(&setup, work, Mode::Classic)))
    };
    let sb = {
        let work = WorkDir::new();
        let setup = recorder_setup(&work, "INVOKE,SHUTDOWN", true);
        run_scenario(Host::Sandbox(Sandbox::start(&setup, work, "")))
    };
    let mut diffs = Vec::new();
    for (i, (r, s)) in rie.invokes.iter().zip(&sb.invokes).enumerate() {
        if r.status != s.status {
            diffs.push(format!(
                "invoke #{i}: status {} (RIE) vs {} (sandbox): {} / {}",
                r.status,
                s.status,
                r.text(),
                s.text()
            ));
        }
    }
    for kind in [
        "register_without_name",
        "next_unknown_identifier",
        "register",
        "response_unknown_request_id",
        "invocation_response",
        "response_twice",
        "invocation_error",
    ] {
        compare_exchange(kind, rie.one(kind), sb.one(kind), &mut diffs);
    }
    let (rn, sn) = (rie.all("invocation_next"), sb.all("invocation_next"));
    if rn.len() != sn.len() {
        diffs.push(format!(
            "invocation/next count: {} (RIE) vs {} (sandbox)",
            rn.len(),
            sn.len()
        ));
    }
    for (i, (r, s)) in rn.iter().zip(&sn).enumerate() {
        compare_exchange(&format!("invocation/next #{i}"), r, s, &mut diffs);
    }
    for (host, rec, timeout) in [("RIE", &rie, 30_000), ("sandbox", &sb, 30_000)] {
        for n in rec.all("invocation_next") {
            check_deadline(
                host,
                "Lambda-Runtime-Deadline-Ms",
                &n["headers"]["lambda-runtime-deadline-ms"],
                &n["at_ms"],
                timeout,
                &mut diffs,
            );
            if !is_function_arn(&n["headers"]["lambda-runtime-invoked-function-arn"]) {
                diffs.push(format!(
                    "{host}: bad Lambda-Runtime-Invoked-Function-Arn {}",
                    n["headers"]["lambda-runtime-invoked-function-arn"]
                ));
            }
        }
        for e in rec.event_next("INVOKE") {
            check_deadline(
                host,
                "INVOKE deadlineMs",
                &e["body"]["deadlineMs"],
                &e["at_ms"],
                timeout,
                &mut diffs,
            );
        }
    }
    let (ri, si) = (rie.event_next("INVOKE"), sb.event_next("INVOKE"));
    if ri.len() != si.len() {
        diffs.push(format!(
            "INVOKE events: {} (RIE) vs {} (sandbox)",
            ri.len(),
            si.len()
        ));
    }
    for (i, (r, s)) in ri.iter().zip(&si).enumerate() {
        compare_exchange(&format!("event/next INVOKE #{i}"), r, s, &mut diffs);
    }
    compare_exchange(
        "event/next SHUTDOWN",
        rie.event_next("SHUTDOWN")[0],
        sb.event_next("SHUTDOWN")[0],
        &mut diffs,
    );
    // The caller's X-Amzn-Trace-Id reaches the function and the extensions unchanged.
    let rie_trace = &ri[0]["body"]["tracing"]["value"];
    if rie_trace != &json!(TRACE) {
        diffs.push(format!(
            "RIE INVOKE #0 tracing.value is {rie_trace}, expected the invoke's {TRACE}"
        ));
    }
    if si.first().map(|e| &e["body"]["tracing"]["value"]) != Some(&json!(TRACE)) {
        diffs.push(format!(
            "event/next INVOKE #0: tracing.value {} (sandbox) ignores the invoke request's X-Amzn-Trace-Id {TRACE} (RIE passes it through)",
            si.first().map(|e| e["body"]["tracing"]["value"].clone()).unwrap_or_default()
        ));
    }
    if sn.first().map(|n| &n["headers"]["lambda-runtime-trace-id"]) != Some(&json!(TRACE)) {
        diffs.push(format!(
            "invocation/next #0: Lambda-Runtime-Trace-Id {} (sandbox) is not the invoke request's X-Amzn-Trace-Id {TRACE} (the RIE in MI mode passes it through)",
            sn.first().map(|n| n["headers"]["lambda-runtime-trace-id"].clone()).unwrap_or_default()
        ));
    }
    // Values that must agree between the two APIs of one host.
    for (host, rec) in [("RIE", &rie), ("sandbox", &sb)] {
        let ids: Vec<&Value> = rec
            .all("invocation_next")
            .iter()
            .map(|n| &n["headers"]["lambda-runtime-aws-request-id"])
            .collect();
        let ev: Vec<&Value> = rec
            .event_next("INVOKE")
            .iter()
            .map(|e| &e["body"]["requestId"])
            .collect();
        if ids != ev {
            diffs.push(format!(
                "{host}: INVOKE requestIds {ev:?} differ from invocation/next ids {ids:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} disagreement(s) between the sandbox and the RIE (the RIE is right):\n  {}\nRIE records: {:#?}\nsandbox records: {:#?}",
        diffs.len(),
        diffs.join("\n  "),
        rie.runtime.iter().chain(&rie.extension).collect::<Vec<_>>(),
        sb.runtime.iter().chain(&sb.extension).collect::<Vec<_>>()
    );
}

/// Keys of the RIE's MI records that only exist on Lambda Managed Instances (the sandbox emulates
/// on-demand Lambda): `platform.initStart.instanceId` and `.instanceMaxMemory`.
const MI_ONLY_RECORD_KEYS: &[&str] = &["instanceId", "instanceMaxMemory"];

#[test]
fn sandbox_telemetry_api_matches_the_rie_managed_instances_mode() {
    let rie = {
        let work = WorkDir::new();
        let setup = recorder_setup(&work, "SHUTDOWN", true);
        run_scenario(Host::Rie(Rie::start(&setup, work, Mode::ManagedInstances)))
    };
    let sb = {
        let work = WorkDir::new();
        let setup = recorder_setup(&work, "INVOKE,SHUTDOWN", true);
        run_scenario(Host::Sandbox(Sandbox::start(&setup, work, "")))
    };
    let mut diffs = Vec::new();
    // Subscription answers, including the error paths.
    for kind in [
        "telemetry_subscribe",
        "telemetry_malformed_json",
        "telemetry_buffering_out_of_range",
        "telemetry_unknown_identifier",
    ] {
        let (r, s) = (rie.one(kind), sb.one(kind));
        if r["status"] != s["status"] {
            diffs.push(format!(
                "{kind}: status {} (RIE MI) vs {} (sandbox): {} / {}",
                r["status"], s["status"], r["body"], s["body"]
            ));
        }
    }
    // Every event type the RIE pushes, with every record key it has (except MI-only ones).
    let by_type = |rec: &Recorded| {
        let mut m: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for e in rec.telemetry() {
            m.entry(e["type"].as_str().unwrap_or("?").to_string())
                .or_default()
                .push(e);
        }
        m
    };
    let (rt, st) = (by_type(&rie), by_type(&sb));
    for (t, revents) in &rt {
        let Some(sevents) = st.get(t) else {
            diffs.push(format!(
                "telemetry: the sandbox never sends `{t}` (RIE MI does: {})",
                revents[0]
            ));
            continue;
        };
        let (r, s) = (&revents[0], &sevents[0]);
        for k in ["time", "type", "record"] {
            if s.get(k).is_none() {
                diffs.push(format!("telemetry {t}: sandbox event lacks `{k}`"));
            }
        }
        let mut r_shape = shape(&r["record"]);
        if let Some(o) = r_shape.as_object_mut() {
            o.retain(|k, _| !MI_ONLY_RECORD_KEYS.contains(&k.as_str()));
        }
        let mut sub = Vec::new();
        compare_shape(
            &format!("telemetry {t}.record"),
            &r_shape,
            &shape(&s["record"]),
            &mut sub,
        );
        // The sandbox may send more keys than the RIE (documented on-demand fields); it must
        // send every key the RIE sends, with the same type.
        diffs.extend(sub.into_iter().filter(|d| !d.contains("adds `")));
    }
    assert!(
        diffs.is_empty(),
        "{} Telemetry API disagreement(s) between the sandbox and the RIE in MI mode:\n  {}\nRIE events: {:#?}\nsandbox events: {:#?}",
        diffs.len(),
        diffs.join("\n  "),
        rie.telemetry(),
        sb.telemetry()
    );
}

// ------------------------------------------------------ the sample functions under both hosts

/// The probe extension (`lambdawatch-probe-extension`) writing to `out/probe.jsonl`.
fn with_probe(setup: Setup, work: &WorkDir, schema: &str) -> Setup {
    let probe = workspace_bin("lambdawatch-probe-extension");
    setup.extension(
        // The file name must be the name the probe registers with, or Lambda (and the RIE) takes it
        // for an internal extension, which may not register for SHUTDOWN.
        "lambdawatch-probe-extension",
        Proc::new(&[probe.to_string_lossy().as_ref()])
            .env("PROBE_OUT", work.out("probe.jsonl").to_string_lossy())
            .env("PROBE_SCHEMA", schema),
    )
}

/// Invokes the sample with the shared payload convention; returns (ok response, error response).
fn drive_sample(host: &Host) -> (Value, lambdawatch_tests::http::Response) {
    let ok = host.invoke(&json!({"log_lines": 3, "log_json": true, "sleep_ms": 10}));
    assert_eq!(ok.status, 200, "{}: {}", host.name(), ok.text());
    let err = host.invoke(&json!({"fail": true}));
    (ok.json(), err)
}

fn compare_samples(setup_of: impl Fn(&WorkDir) -> Setup, expected_error_type: &str) {
    let mut results = Vec::new();
    for which in ["rie", "sandbox"] {
        let work = WorkDir::new();
        let setup = with_probe(setup_of(&work), &work, "2022-12-13");
        let mut host = match which {
            "rie" => Host::Rie(Rie::start(&setup, work, Mode::Classic)),
            _ => Host::Sandbox(Sandbox::start(&setup, work, "")),
        };
        let (ok, err) = drive_sample(&host);
        host.stop(Duration::from_secs(10));
        let probe = read_jsonl(&host.work().out("probe.jsonl"));
        let lifecycle: Vec<&Value> = probe
            .iter()
            .filter(|l| l.get("lifecycle").is_some())
            .collect();
        results.push((which, ok, err, lifecycle.len(), host.child().lines()));
    }
    let (rie, sb) = (&results[0], &results[1]);
    for (which, ok, err, lifecycle, out) in [rie, sb] {
        assert_eq!(ok["ok"], true, "{which}: {ok}");
        assert_eq!(
            err.json()["errorType"],
            expected_error_type,
            "{which}: {}",
            err.text()
        );
        assert!(
            *lifecycle >= 3,
            "{which}: the probe extension saw {lifecycle} lifecycle events (2 INVOKE + SHUTDOWN expected); output:\n{}",
            out.join("\n")
        );
    }
    assert_eq!(shape(&rie.1), shape(&sb.1), "success body shape differs");
    assert_eq!(
        rie.2.status,
        sb.2.status,
        "error invoke status: {} vs {}",
        rie.2.text(),
        sb.2.text()
    );
    let (re, se) = (rie.2.json(), sb.2.json());
    // Messages may carry the request id; compare them with it masked.
    let masked = |v: &Value| {
        let id = v["requestId"].as_str().unwrap_or("\u{0}");
        v["errorMessage"]
            .as_str()
            .unwrap_or("")
            .replace(id, "<request-id>")
    };
    assert_eq!(
        masked(&re),
        masked(&se),
        "error message: RIE {re} vs sandbox {se}"
    );
    let keys = |v: &Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<BTreeSet<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&re),
        keys(&se),
        "error body keys: RIE {re} vs sandbox {se}"
    );
}

#[test]
fn python_powertools_sample_behaves_alike_under_rie_and_sandbox() {
    compare_samples(|_| Setup::python_sample(), "SampleFailure");
}

#[test]
fn rust_sample_behaves_alike_under_rie_and_sandbox() {
    compare_samples(
        |_| Setup::rust_sample(),
        "&alloc::boxed::Box<dyn core::error::Error + core::marker::Send + core::marker::Sync>",
    );
}

#[test]
fn python_powertools_logs_reach_the_telemetry_api_as_json_under_rie_managed_instances() {
    let work = WorkDir::new();
    let setup = recorder_setup(&work, "SHUTDOWN", false);
    let py = Setup::python_sample();
    let setup = Setup {
        code_dir: py.code_dir,
        runtime: py.runtime,
        ..setup
    };
    let mut rie = Rie::start(&setup, work, Mode::ManagedInstances);
    let r = rie.invoke(&json!({"log_lines": 2, "log_json": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let ext_out = rie.work.out("extension.jsonl");
    let records = wait_until(
        "Powertools JSON function records",
        Duration::from_secs(10),
        || {
            let events: Vec<Value> = read_jsonl(&ext_out)
                .into_iter()
                .filter(|r| r["kind"] == "telemetry")
                .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["type"] == "function")
                .filter_map(|e| powertools_record(&e["record"]))
                .filter(|r| {
                    r["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("log line"))
                })
                .collect();
            (events.len() >= 2).then_some(events)
        },
    );
    rie.stop(Duration::from_secs(10));
    for rec in &records {
        assert_eq!(rec["level"], "INFO", "{rec}");
        assert_eq!(rec["service"], "python-sample", "{rec}");
        assert!(
            rec["function_request_id"].is_string(),
            "Powertools adds the request id: {rec}"
        );
    }
}

/// A `function` record as the RIE's MI mode delivers it: the log line as a string (Powertools'
/// JSON, unparsed, although `AWS_LAMBDA_LOG_FORMAT=json`), or already an object.
fn powertools_record(record: &Value) -> Option<Value> {
    match record {
        Value::String(line) => serde_json::from_str::<Value>(line)
            .ok()
            .filter(Value::is_object),
        Value::Object(_) => Some(record.clone()),
        _ => None,
    }
}

/// An extension that registers under a name that is not its file name in `/opt/extensions` is an
/// internal extension to Lambda, and internal extensions may not register for SHUTDOWN.
#[test]
fn sandbox_treats_a_misnamed_extension_as_internal_like_the_rie() {
    let mut registers = Vec::new();
    for which in ["rie", "sandbox"] {
        let work = WorkDir::new();
        let mut setup = recorder_setup(&work, "SHUTDOWN", false);
        setup.extensions[0].1 = setup.extensions[0]
            .1
            .clone()
            .env("RECORD_NAME", "not-the-file-name");
        let mut host = match which {
            "rie" => Host::Rie(Rie::start(&setup, work, Mode::Classic)),
            _ => Host::Sandbox(Sandbox::start(&setup, work, "")),
        };
        // The invoke only triggers INIT (the classic RIE initialises lazily); its outcome
        // depends on the registration and is not compared.
        let _ = host.invoke(&json!({"n": 1}));
        host.stop(Duration::from_secs(10));
        let ext = read_jsonl(&host.work().out("extension.jsonl"));
        let reg = ext
            .into_iter()
            .find(|r| r["kind"] == "register")
            .unwrap_or_else(|| panic!("{which}: the extension never registered"));
        registers.push(reg);
    }
    let (r, s) = (&registers[0], &registers[1]);
    assert_eq!(r["status"], 403, "RIE: {r}");
    assert_eq!(
        r["body"]["errorType"], "Extension.InvalidEventType",
        "RIE: {r}"
    );
    assert_eq!(
        (&s["status"], &s["body"]["errorType"]),
        (&r["status"], &r["body"]["errorType"]),
        "register for SHUTDOWN under a name that is not the file name: sandbox {s} vs RIE {r}"
    );
}
