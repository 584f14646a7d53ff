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
