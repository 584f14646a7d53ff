//! Bad requests, Telemetry delivery (batching, retry) and the CloudWatch-shaped metrics, through
//! real HTTP. Needs `cargo build -p lambdawatch-sample-function -p lambdawatch-sandbox` first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use lambdawatch_semconv::cloudwatch as cw;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors() {
    let h = start("", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let reg = probe_lines(&h.probe_out)
        .into_iter()
        .find(|l| l.get("registered").is_some())
        .expect("probe registered");
    let api = reg["api"].as_str().unwrap().to_owned();
    let id = reg["id"].as_str().unwrap().to_owned();
    let c = &h.client;
    let base = format!("http://{api}");
    let check = |r: &reqwest_lite::Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["errorType"],
            kind,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["errorMessage"].is_string());
    };
    let next = format!("{base}/2020-01-01/extension/event/next");
    check(
        &c.send("GET", &next, &[], "").await,
        403,
        "Extension.MissingExtensionIdentifier",
    );
    check(
        &c.send("GET", &next, &[("Lambda-Extension-Identifier", "nope")], "")
            .await,
        403,
        "Extension.InvalidExtensionIdentifier",
    );
    let unknown = "0b2b8a3e-9a57-4c8e-8f53-3f3cdb0e2a11";
    let r = c
        .send(
            "GET",
            &next,
            &[("Lambda-Extension-Identifier", unknown)],
            "",
        )
        .await;
    check(&r, 403, "Extension.UnknownExtensionIdentifier");
    assert_eq!(
        r.json()["errorMessage"],
        format!("Unknown extension {unknown}")
    );
    let register = format!("{base}/2020-01-01/extension/register");
    // No Lambda-Extension-Name: the RIE answers InvalidExtensionName (not MissingHeader).
    check(
        &c.send("POST", &register, &[], r#"{"events":["INVOKE"]}"#)
            .await,
        403,
        "Extension.InvalidExtensionName",
    );
    check(
        &c.send(
            "POST",
            &register,
            &[("Lambda-Extension-Name", "x")],
            "{not json",
        )
        .await,
        400,
        "InvalidRequestFormat",
    );
    check(
        &c.send(
            "POST",
            &register,
            &[("Lambda-Extension-Name", "x")],
            r#"{"events":["BOOT"]}"#,
        )
        .await,
        403,
        "Extension.InvalidEventType",
    );
    check(
        &c.send(
            "POST",
            &register,
            &[("Lambda-Extension-Name", "late")],
            r#"{"events":["INVOKE"]}"#,
        )
        .await,
        403,
        "Extension.RegistrationClosed",
    );
    let telemetry = format!("{base}/2022-07-01/telemetry");
    let sub = |buffering: &str| {
        format!(
            r#"{{"schemaVersion":"2022-12-13","destination":{{"protocol":"HTTP","URI":"http://sandbox.localdomain:9/"}},"types":["platform"]{buffering}}}"#
        )
    };
    let auth = [("Lambda-Extension-Identifier", id.as_str())];
    check(
        &c.send(
            "PUT",
            &telemetry,
            &auth,
            sub(r#","buffering":{"maxItems":5}"#),
        )
        .await,
        400,
        "ValidationError",
    );
    check(
        &c.send(
            "PUT",
            &telemetry,
            &auth,
            sub(r#","buffering":{"timeoutMs":10}"#),
        )
        .await,
        400,
        "ValidationError",
    );
    check(
        &c.send(
            "PUT",
            &telemetry,
            &auth,
            sub(r#","buffering":{"maxBytes":1}"#),
        )
        .await,
        400,
        "ValidationError",
    );
    check(
        &c.send("PUT", &telemetry, &auth, "{oops").await,
        400,
        "InvalidRequestFormat",
    );
    check(
        &c.send(
            "PUT",
            &telemetry,
            &[("Lambda-Extension-Identifier", unknown)],
            sub(""),
        )
        .await,
        403,
        "Extension.UnknownExtensionIdentifier",
    );
    let resp = format!("{base}/2018-06-01/runtime/invocation/not-current/response");
    check(
        &c.send("POST", &resp, &[], "{}").await,
        400,
        "InvalidRequestID",
    );
    // The Invoke API.
    let r = c
        .send(
            "POST",
            &format!("http://{}/2015-03-31/functions/other/invocations", h.addr),
            &[],
            "{}",
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("X-Amzn-ErrorType").as_deref(),
        Some("ResourceNotFoundException")
    );
    let r = h.invoke("{bad json", false).await;
    assert_eq!(r.status, 400);
    let (report, _, _dir) = h.finish().await;
    assert_eq!(report.invocations.success, 1);
}

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// Waits (bounded) for the probe's `registered` line; returns it.
async fn registered(probe_out: &std::path::Path) -> serde_json::Value {
    probe_line(probe_out, "registered").await
}

/// Waits (bounded) for the first probe line with `key`; returns it.
async fn probe_line(probe_out: &std::path::Path, key: &str) -> serde_json::Value {
    for _ in 0..200 {
        if let Some(l) = probe_lines(probe_out)
            .into_iter()
            .find(|l| l.get(key).is_some())
        {
            return l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no `{key}` line from the probe within 10 s");
}

/// The test plays the runtime (the handler only sleeps): a second answer for an answered
/// invocation is 403 `InvalidStateTransition` as under the RIE, and the caller's
/// `X-Amzn-Trace-Id` reaches the runtime, the extensions and the platform records unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_answer_is_refused_and_the_callers_trace_header_passes_through() {
    let h = start_with_handler(&["/bin/sleep", "3600"], "", &[], &[("probe", &[])], None).await;
    let caller = h.client.clone();
    let url = format!("http://{}/2015-03-31/functions/testfn/invocations", h.addr);
    let invoke = tokio::spawn(async move {
        caller
            .send("POST", &url, &[("X-Amzn-Trace-Id", TRACE)], r#"{"a":1}"#)
            .await
    });
    let api = registered(&h.probe_out).await["api"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = &h.client;
    let runtime = format!("http://{api}/2018-06-01/runtime/invocation");
    let next = c.send("GET", &format!("{runtime}/next"), &[], "").await;
    assert_eq!(next.status, 200);
    assert_eq!(
        next.header("Lambda-Runtime-Trace-Id").as_deref(),
        Some(TRACE)
    );
    let id = next.header("Lambda-Runtime-Aws-Request-Id").unwrap();
    let r = c
        .send(
            "POST",
            &format!("{runtime}/{id}/response"),
            &[],
            r#"{"ok":1}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    for what in ["response", "error"] {
        let r = c
            .send("POST", &format!("{runtime}/{id}/{what}"), &[], "{}")
            .await;
        assert_eq!(r.status, 403, "second {what}: {:?}", r.body);
        assert_eq!(r.json()["errorType"], "InvalidStateTransition");
    }
    let answer = invoke.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({"ok": 1}));
    // Back in /next: the invocation ends; the parked call is released at SHUTDOWN.
    let parked = c.clone();
    let next_url = format!("{runtime}/next");
    tokio::spawn(async move { parked.send("GET", &next_url, &[], "").await });
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.invocations.success, 1);
    let inv = lines
        .iter()
        .find(|l| l["lifecycle"]["eventType"] == "INVOKE")
        .expect("INVOKE event");
    assert_eq!(inv["lifecycle"]["tracing"]["value"], TRACE);
    let ev = telemetry_events(&lines);
    for t in ["platform.start", "platform.runtimeDone", "platform.report"] {
        let e = ev
            .iter()
            .find(|(_, e)| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {ev:#?}"));
        assert_eq!(e.1["record"]["tracing"]["value"], TRACE, "{t}");
        assert_eq!(
            e.1["record"]["tracing"]["spanId"], "53995c3f42cd8ad8",
            "{t}"
        );
    }
}

/// Without a caller trace header the sandbox makes one (X-Ray PassThrough, sampled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_header_is_made_when_the_caller_sends_none() {
    let h = start("", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    assert_eq!(
        h.invoke_with("{}", false, &[("X-Amzn-Trace-Id", TRACE)])
            .await
            .status,
        200
    );
    let (_, lines, _dir) = h.finish().await;
    let traces: Vec<&str> = lines
        .iter()
        .filter(|l| l["lifecycle"]["eventType"] == "INVOKE")
        .map(|l| l["lifecycle"]["tracing"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 2);
    assert!(
        traces[0].starts_with("Root=1-") && traces[0] != TRACE,
        "{traces:?}"
    );
    assert_eq!(traces[1], TRACE);
}

/// Only INVOKE carries `Lambda-Extension-Event-Identifier`; SHUTDOWN does not (RIE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_invoke_events_carry_an_event_identifier() {
    let h = start("", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (_, lines, _dir) = h.finish().await;
    let ids: Vec<(String, serde_json::Value)> = lines
        .iter()
        .filter(|l| l.get("lifecycle").is_some())
        .map(|l| {
            (
                l["lifecycle"]["eventType"].as_str().unwrap().to_owned(),
                l["event_id"].clone(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0].0, "INVOKE");
    assert!(ids[0].1.as_str().is_some_and(|s| s.len() == 36), "{ids:?}");
    assert_eq!(ids[1].0, "SHUTDOWN");
    assert!(ids[1].1.is_null(), "SHUTDOWN with an event id: {ids:?}");
}

/// An extension whose registered name is not the file name of an executable in the extensions
/// directory is internal: it may register for INVOKE, but SHUTDOWN is refused with 403
/// `Extension.InvalidEventType` (the RIE's ShutdownEventNotSupportedForInternalExtension).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_under_another_name_is_internal_and_gets_no_shutdown() {
    // Internal for INVOKE only: fine, beside an external one under its file name.
    let dir = tempfile::tempdir().unwrap();
    let internal_out = dir.path().join("internal.jsonl");
    let internal_out_s = internal_out.display().to_string();
    let h = start(
        "",
        &[],
        &[
            ("probe", &[]),
            (
                "renamed",
                &[
                    ("PROBE_NAME", "internal-a"),
                    ("PROBE_EVENTS", "INVOKE"),
                    ("PROBE_NO_SUBSCRIBE", "1"),
                    ("PROBE_OUT", &internal_out_s),
                ],
            ),
        ],
        None,
    )
    .await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (_, lines, _dir) = h.finish().await;
    let internal = probe_lines(&internal_out);
    assert_eq!(internal[0]["name"], "internal-a", "{internal:?}");
    let kinds = |ls: &[serde_json::Value]| -> Vec<String> {
        ls.iter()
            .filter_map(|l| l["lifecycle"]["eventType"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(kinds(&internal), ["INVOKE"]);
    assert_eq!(kinds(&lines), ["INVOKE", "SHUTDOWN"]);

    // Internal for SHUTDOWN: refused, so INIT fails.
    let h = start(
        "",
        &[
            ("PROBE_NAME", "not-the-file-name"),
            ("PROBE_EVENTS", "SHUTDOWN"),
        ],
        &[("probe", &[])],
        None,
    )
    .await;
    let r = h.invoke("{}", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("X-Amz-Function-Error").as_deref(),
        Some("Unhandled")
    );
    let (_, lines, _dir) = h.finish().await;
    let failed = lines
        .iter()
        .find(|l| l.get("register_failed").is_some())
        .unwrap_or_else(|| panic!("registration was not refused: {lines:?}"));
    assert_eq!(failed["register_failed"], 403);
    assert_eq!(failed["body"]["errorType"], "Extension.InvalidEventType");
    assert!(
        failed["body"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("ShutdownEventNotSupportedForInternalExtension")
    );
}

/// `platform.start` has `functionArn` with schema 2025-01-29 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_start_carries_the_function_arn_from_schema_2025_01_29() {
    let dir = tempfile::tempdir().unwrap();
    let old_out = dir.path().join("old.jsonl");
    let old_out_s = old_out.display().to_string();
    let h = start(
        "",
        &[("PROBE_SCHEMA", "2025-01-29")],
        &[
            ("probe", &[]),
            (
                "probe-old",
                &[("PROBE_SCHEMA", "2022-12-13"), ("PROBE_OUT", &old_out_s)],
            ),
        ],
        None,
    )
    .await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (_, lines, _dir) = h.finish().await;
    let start_of = |lines: &[serde_json::Value]| {
        telemetry_events(lines)
            .into_iter()
            .find(|(_, e)| e["type"] == "platform.start")
            .expect("platform.start")
            .1
    };
    let new = start_of(&lines);
    let arn = new["record"]["functionArn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws:lambda:") && arn.ends_with(":function:testfn"),
        "{new}"
    );
    let old = start_of(&probe_lines(&old_out));
    assert!(old["record"].get("functionArn").is_none(), "{old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_batches_honour_max_items_and_failed_posts_are_retried() {
    let h = start(
        "",
        &[],
        &[(
            "probe",
            &[
                ("PROBE_MAX_ITEMS", "1000"),
                ("PROBE_TIMEOUT_MS", "30000"),
                ("PROBE_MAX_BYTES", "1048576"),
                ("PROBE_FAIL_POSTS", "2"),
                ("PROBE_TYPES", "function"),
            ],
        )],
        None,
    )
    .await;
    assert_eq!(h.invoke(r#"{"log_lines": 2500}"#, false).await.status, 200);
    // Let the 2,500 lines reach the subscriber's queue before SHUTDOWN switches delivery to
    // draining (which sends whatever is queued at once).
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let (report, lines, _dir) = h.finish().await;
    let posts: Vec<(u64, usize, serde_json::Value)> = lines
        .iter()
        .filter(|l| l.get("telemetry").is_some())
        .map(|l| {
            (
                l["status"].as_u64().unwrap(),
                l["telemetry"].as_array().unwrap().len(),
                l["telemetry"].clone(),
            )
        })
        .collect();
    assert!(
        posts.iter().all(|(_, n, _)| *n <= 1000),
        "a batch passed maxItems"
    );
    let full: Vec<_> = posts
        .iter()
        .filter(|(s, n, _)| *s == 200 && *n == 1000)
        .collect();
    assert!(
        full.len() >= 2,
        "expected full batches of 1000: {:?}",
        posts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
    );
    // The two refused POSTs were the same batch, sent again until accepted.
    assert_eq!(posts[0].0, 500);
    assert_eq!(posts[1].0, 500);
    assert_eq!(posts[2].0, 200);
    assert_eq!(posts[0].2, posts[2].2, "retry must resend the same batch");
    // Backoff between the attempts: 100 ms, then 200 ms (1 ms slack for the truncated clock).
    use lambdawatch_sandbox::telemetry_api::delivery::backoff;
    let at = |i: usize| {
        lines
            .iter()
            .filter(|l| l.get("telemetry").is_some())
            .nth(i)
            .unwrap()["at_ms"]
            .as_u64()
            .unwrap()
    };
    for (i, attempt) in [(0usize, 1u32), (1, 2)] {
        let gap = at(i + 1) - at(i);
        let want = backoff(attempt).as_millis() as u64;
        assert!(
            gap + 1 >= want,
            "retry {attempt} came {gap} ms after the failed POST, backoff is {want} ms"
        );
    }
    assert_eq!(backoff(2), 2 * backoff(1));
    let delivered: usize = posts.iter().filter(|p| p.0 == 200).map(|p| p.1).sum();
    let log_records = telemetry_events(&lines)
        .iter()
        .filter(|(_, e)| e["record"].as_str().is_some_and(|s| s.contains("log line")))
        .count();
    assert_eq!(log_records, 2500);
    assert!(delivered >= 2500);
    assert!(report.telemetry.retries >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_shaped_metrics_reach_the_endpoint() {
    type Got = Arc<Mutex<Vec<(String, ExportMetricsServiceRequest)>>>;
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let req = ExportMetricsServiceRequest::decode(body).unwrap();
                    g.lock().unwrap().push((ct, req));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let h = start(
        "reserved_concurrency: 1\ncloudwatch_period_ms: 200\nmax_retries: 0\n",
        &[],
        &[],
        Some(endpoint),
    )
    .await;
    let calls: Vec<_> = (0..3)
        .map(|_| h.invoke(r#"{"sleep_ms": 400}"#, false))
        .collect();
    let mut throttled = 0u64;
    for r in futures_join(calls).await {
        if r.status == 429 {
            throttled += 1;
        }
    }
    assert_eq!(h.invoke(r#"{"fail": true}"#, true).await.status, 202);
    let (report, _, _dir) = h.finish().await;
    assert!(throttled > 0);
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "no metrics received");
    let mut sums = std::collections::HashMap::<String, f64>::new();
    for (ct, req) in got.iter() {
        assert_eq!(ct, "application/x-protobuf");
        for (origin, p) in cw::parse_request(req) {
            assert_eq!(origin.account_id, "123456789012");
            assert_eq!(p.namespace, cw::NAMESPACE_LAMBDA);
            assert_eq!(p.dimension(cw::DIM_FUNCTION_NAME), Some("testfn"));
            *sums.entry(p.metric_name).or_default() += p.sum;
        }
    }
    assert_eq!(sums[cw::THROTTLES], report.throttles as f64);
    assert_eq!(sums[cw::ASYNC_EVENTS_RECEIVED], 1.0);
    // No DLQ: the failed async event is dropped.
    assert_eq!(sums[cw::ASYNC_EVENTS_DROPPED], 1.0);
    assert_eq!(sums[cw::DEAD_LETTER_ERRORS], 0.0);
    assert_eq!(report.cloudwatch.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_subscriber_queue_drops_are_counted_and_reported() {
    let h = start(
        "telemetry_queue_capacity: 10\n",
        &[],
        &[(
            "probe",
            &[
                ("PROBE_FAIL_POSTS", "3"),
                ("PROBE_TYPES", "platform,function"),
            ],
        )],
        None,
    )
    .await;
    assert_eq!(h.invoke(r#"{"log_lines": 500}"#, false).await.status, 200);
    let (report, lines, _dir) = h.finish().await;
    assert!(
        report.telemetry.events_dropped_queue_full > 0,
        "{:?}",
        report.telemetry
    );
    let dropped: u64 = telemetry_events(&lines)
        .iter()
        .filter(|(_, e)| e["type"] == "platform.logsDropped")
        .map(|(_, e)| e["record"]["droppedRecords"].as_u64().unwrap())
        .sum();
    let summary: Vec<(u64, usize)> = lines
        .iter()
        .filter(|l| l.get("telemetry").is_some())
        .map(|l| {
            (
                l["status"].as_u64().unwrap(),
                l["telemetry"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert!(
        dropped > 0,
        "no platform.logsDropped received: {summary:?} {:?}",
        report.telemetry
    );
    assert!(dropped <= report.telemetry.events_dropped_queue_full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cloudwatch_endpoint_is_counted_not_blocking() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = start(
        "cloudwatch_period_ms: 100\n",
        &[],
        &[],
        Some(format!("http://127.0.0.1:{port}")),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(h.invoke(r#"{"sleep_ms": 100}"#, false).await.status, 200);
    }
    let (report, _, _dir) = h.finish().await;
    assert_eq!(report.invocations.success, 3);
    assert!(report.cloudwatch.failures >= 2, "{:?}", report.cloudwatch);
    assert_eq!(report.cloudwatch.published, 0);
}

/// The runtime's `/init/error` during INIT fails the init with its error type; after INIT it is
/// refused with 403 `InvalidStateTransition`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_init_error_fails_the_init_with_its_type() {
    // The test plays the runtime: the handler only sleeps.
    let h = start_with_handler(&["/bin/sleep", "3600"], "", &[], &[("probe", &[])], None).await;
    let caller = h.client.clone();
    let url = format!("http://{}/2015-03-31/functions/testfn/invocations", h.addr);
    let invoke = tokio::spawn(async move { caller.send("POST", &url, &[], "{}").await });
    let api = registered(&h.probe_out).await["api"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .client
        .send(
            "POST",
            &format!("http://{api}/2018-06-01/runtime/init/error"),
            &[(
                "Lambda-Runtime-Function-Error-Type",
                "Runtime.TestInitFailure",
            )],
            r#"{"errorMessage":"cannot start","errorType":"Runtime.TestInitFailure"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    let answer = invoke.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("X-Amz-Function-Error").as_deref(),
        Some("Unhandled")
    );
    assert_eq!(answer.json()["errorType"], "Runtime.TestInitFailure");
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.invocations.failure, 1);
    assert_eq!(
        report.records[0].error_type.as_deref(),
        Some("Runtime.TestInitFailure")
    );
    let init_report = telemetry_events(&lines)
        .into_iter()
        .find(|(_, e)| e["type"] == "platform.initReport")
        .expect("platform.initReport");
    assert_eq!(init_report.1["record"]["status"], "error");

    // After INIT: refused.
    let h = start("", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let api = registered(&h.probe_out).await["api"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .client
        .send(
            "POST",
            &format!("http://{api}/2018-06-01/runtime/init/error"),
            &[],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "InvalidStateTransition");
    let (report, _, _dir) = h.finish().await;
    assert_eq!(report.invocations.success, 1);
}

/// Extensions API `/init/error` (during INIT: the init fails with the reported type, and a
/// `platform.extension` record says `Failed`) and `/exit/error`, with their error answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_init_error_and_exit_error() {
    // INIT waits for the runtime's first /next, which never comes: the test has time to report.
    let h = start_with_handler(&["/bin/sleep", "3600"], "", &[], &[("probe", &[])], None).await;
    let caller = h.client.clone();
    let url = format!("http://{}/2015-03-31/functions/testfn/invocations", h.addr);
    let invoke = tokio::spawn(async move { caller.send("POST", &url, &[], "{}").await });
    let reg = registered(&h.probe_out).await;
    // Subscribed before the failure, so the `Failed` record reaches it.
    assert_eq!(
        probe_line(&h.probe_out, "subscribe").await["subscribe"],
        200
    );
    let (api, id) = (reg["api"].as_str().unwrap(), reg["id"].as_str().unwrap());
    let init_error = format!("http://{api}/2020-01-01/extension/init/error");
    let c = &h.client;
    let r = c
        .send(
            "POST",
            &init_error,
            &[("Lambda-Extension-Identifier", id)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "Extension.MissingHeader");
    let r = c
        .send(
            "POST",
            &init_error,
            &[
                (
                    "Lambda-Extension-Identifier",
                    "0b2b8a3e-9a57-4c8e-8f53-3f3cdb0e2a11",
                ),
                (
                    "Lambda-Extension-Function-Error-Type",
                    "Extension.TestFailure",
                ),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["errorType"],
        "Extension.UnknownExtensionIdentifier"
    );
    let r = c
        .send(
            "POST",
            &init_error,
            &[
                ("Lambda-Extension-Identifier", id),
                (
                    "Lambda-Extension-Function-Error-Type",
                    "Extension.TestFailure",
                ),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 202);
    let answer = invoke.await.unwrap();
    assert_eq!(answer.json()["errorType"], "Extension.TestFailure");
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.invocations.failure, 1);
    let failed = telemetry_events(&lines)
        .into_iter()
        .find(|(_, e)| e["type"] == "platform.extension" && e["record"]["state"] == "Failed")
        .unwrap_or_else(|| panic!("no Failed platform.extension: {lines:#?}"));
    assert_eq!(failed.1["record"]["name"], "probe");
    assert_eq!(failed.1["record"]["errorType"], "Extension.TestFailure");

    // After INIT: init/error is refused, exit/error accepted from a registered extension only.
    let h = start("", &[], &[("probe", &[])], None).await;
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let reg = registered(&h.probe_out).await;
    let (api, id) = (reg["api"].as_str().unwrap(), reg["id"].as_str().unwrap());
    let c = &h.client;
    let typed = [
        ("Lambda-Extension-Identifier", id),
        (
            "Lambda-Extension-Function-Error-Type",
            "Extension.TestFailure",
        ),
    ];
    let r = c
        .send(
            "POST",
            &format!("http://{api}/2020-01-01/extension/init/error"),
            &typed,
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "Extension.InvalidExtensionState");
    let exit_error = format!("http://{api}/2020-01-01/extension/exit/error");
    let r = c.send("POST", &exit_error, &[], "{}").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["errorType"],
        "Extension.MissingExtensionIdentifier"
    );
    let r = c
        .send(
            "POST",
            &exit_error,
            &[("Lambda-Extension-Identifier", id)],
            "{}",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "Extension.MissingHeader");
    let r = c.send("POST", &exit_error, &typed, "{}").await;
    assert_eq!(r.status, 202);
    // No further call succeeds for that extension (RIE: ExitError → Ready is refused).
    let r = c.send("POST", &exit_error, &typed, "{}").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "Extension.InvalidExtensionState");
    let r = c
        .send(
            "GET",
            &format!("http://{api}/2020-01-01/extension/event/next"),
            &typed[..1],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errorType"], "Extension.InvalidExtensionState");
    // The environment is unusable: the next invocation is a failure and resets it; the one
    // after that initialises a fresh environment.
    assert_eq!(h.invoke("{}", false).await.status, 200);
    assert_eq!(h.invoke("{}", false).await.status, 200);
    let (report, _, _dir) = h.finish().await;
    // Records are kept in completion order, and under load the reset can race the next invoke
    // onto a fresh environment: assert the outcomes as a multiset, and that the environment was
    // initialised again after the failure (at least two cold starts in all).
    let mut outcome: Vec<(&str, Option<&str>)> = report
        .records
        .iter()
        .map(|r| (r.status.as_str(), r.error_type.as_deref()))
        .collect();
    outcome.sort();
    assert_eq!(
        outcome,
        [
            ("failure", Some("Extension.TestFailure")),
            ("success", None),
            ("success", None),
        ]
    );
    let cold = report.records.iter().filter(|r| r.cold_start).count();
    assert!(
        cold >= 2,
        "the environment was not initialised again: {:?}",
        report.records
    );
}

/// A SHUTDOWN-only extension (`PROBE_EVENTS=SHUTDOWN`, as on Managed Instances) gets no INVOKE,
/// is not waited for after an invocation, and still receives the platform records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_only_extension_gets_only_shutdown() {
    let h = start("", &[("PROBE_EVENTS", "SHUTDOWN")], &[("probe", &[])], None).await;
    for _ in 0..2 {
        assert_eq!(h.invoke("{}", false).await.status, 200);
    }
    let (report, lines, _dir) = h.finish().await;
    assert_eq!(report.invocations.success, 2);
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["lifecycle"]["eventType"].as_str())
        .collect();
    // Back-to-back invokes may scale out (the first environment is busy until its runtime is
    // back in /next): one SHUTDOWN per environment, never an INVOKE.
    let envs: std::collections::BTreeSet<u64> =
        report.records.iter().map(|r| r.environment).collect();
    assert_eq!(kinds, vec!["SHUTDOWN"; envs.len()], "{lines:#?}");
    let reports = telemetry_events(&lines)
        .into_iter()
        .filter(|(_, e)| e["type"] == "platform.report")
        .count();
    assert_eq!(reports, 2);
}
