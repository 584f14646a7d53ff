//! The exporter against a capturing OTLP endpoint: what goes on the wire (gzip protobuf, paths,
//! headers) and what happens when the endpoint is down, slow or refusing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Capture, TestPki};
use lambdawatch_extension::buffer::{Batch, Buffer};
use lambdawatch_extension::config::{self, Compression, Config, Endpoints};
use lambdawatch_extension::export::{ExportConfig, Exporter, reason};
use lambdawatch_extension::http::HttpClient;
use lambdawatch_extension::translate::{ResourceInfo, counter};
use lambdawatch_semconv::otlp::get_str;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

fn endpoints(base: &str) -> Endpoints {
    Endpoints {
        traces: format!("{base}/v1/traces"),
        metrics: format!("{base}/v1/metrics"),
        logs: format!("{base}/v1/logs"),
    }
}

/// The one way these tests make an exporter: `client` to `endpoints`, with `headers`.
fn exporter_via(
    client: HttpClient,
    endpoints: Endpoints,
    headers: &[(&str, &str)],
    compression: Compression,
    timeout: Duration,
) -> Exporter {
    Exporter::new(
        client,
        ExportConfig {
            endpoints,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            compression,
            timeout,
        },
    )
}

/// An exporter to `base` with an `x-api-key` header.
fn exporter(base: &str, compression: Compression, timeout: Duration) -> Exporter {
    exporter_via(
        HttpClient::new(),
        endpoints(base),
        &[("x-api-key", "k1")],
        compression,
        timeout,
    )
}

/// A local port nobody listens on (until a capture binds it), and an exporter to it.
fn dead_collector() -> (u16, Exporter) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ex = exporter(
        &format!("http://127.0.0.1:{port}"),
        Compression::Gzip,
        Duration::from_secs(5),
    );
    (port, ex)
}

fn batch() -> Batch {
    Batch {
        spans: vec![Span {
            name: "checkout".into(),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        }],
        metrics: vec![counter("faas.invocations", "{invocation}", 1, vec![], 1, 2)],
        logs: (0..3)
            .map(|i| {
                LogRecord {
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(format!("line {i}"))),
                    }),
                    ..Default::default()
                }
                .into()
            })
            .collect(),
    }
}

fn resource() -> opentelemetry_proto::tonic::resource::v1::Resource {
    ResourceInfo {
        function_name: Some("checkout".into()),
        ..Default::default()
    }
    .to_resource()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_protobuf_reaches_the_right_paths_with_headers() {
    let cap = Capture::start(Behaviour::Accept);
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(5));
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.exported, [1, 1, 3]);
    assert!(r.dropped.is_empty());
    let reqs = cap.requests();
    assert_eq!(reqs.len(), 3);
    for q in &reqs {
        let h = |k: &str| {
            q.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-type"), Some("application/x-protobuf"));
        assert_eq!(h("content-encoding"), Some("gzip"));
        assert_eq!(h("x-api-key"), Some("k1"));
        assert_eq!(&q.raw[..2], &[0x1f, 0x8b], "gzip magic");
    }
    let spans = cap.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].1.name, "checkout");
    assert_eq!(
        get_str(&spans[0].0.attributes, "service.name"),
        Some("checkout")
    );
    assert_eq!(cap.metrics()[0].name, "faas.invocations");
    let logs = cap.logs();
    assert_eq!(logs.len(), 3);
    assert_eq!(
        logs[2].body.as_ref().unwrap().value,
        Some(Value::StringValue("line 2".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_when_configured() {
    let cap = Capture::start(Behaviour::Accept);
    let ex = exporter(&cap.base(), Compression::None, Duration::from_secs(5));
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(r.ok);
    for q in cap.requests() {
        assert!(!q.headers.iter().any(|(k, _)| k == "content-encoding"));
        assert_eq!(q.raw, q.body);
    }
    assert_eq!(cap.logs().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_503_then_succeeds() {
    let cap = Capture::start(Behaviour::FailFirst(503, 3));
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(5));
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.retries, 3);
    assert_eq!(r.exported, [1, 1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_400_is_dropped_without_retry() {
    let cap = Capture::start(Behaviour::FailFirst(400, 100));
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(5));
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(!r.ok);
    assert_eq!(r.retries, 0);
    assert_eq!(r.dropped, vec![(reason::REJECTED, 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_fails_fast_and_counts() {
    let (_, ex) = dead_collector();
    let t = Instant::now();
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_millis(800),
        )
        .await;
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(!r.ok);
    // A passing failure: nothing counted as dropped, every item handed back untouched.
    assert_eq!(r.dropped, vec![]);
    assert_eq!(r.unsent, batch());
    assert!(r.retries >= 1, "retried within the time available");
}

/// The collector is down for one flush and back for the next: the first flush's items go back
/// to the buffer (not counted as `export_failed`) and arrive with the next flush, ahead of what
/// came in meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_a_failed_flush_arrive_after_the_collector_recovers() {
    let (port, ex) = dead_collector();
    let mut buf = Buffer::new(100, 1 << 20);
    let first = batch();
    for s in first.spans {
        buf.span(s);
    }
    for m in first.metrics {
        buf.metric(m);
    }
    for l in first.logs {
        buf.log(l);
    }
    let r = ex
        .export(
            &resource(),
            buf.drain(),
            Instant::now() + Duration::from_millis(300),
        )
        .await;
    assert!(!r.ok);
    assert_eq!(r.exported, [0, 0, 0]);
    assert!(
        !r.dropped
            .iter()
            .any(|(why, _)| *why == reason::EXPORT_FAILED),
        "{:?}",
        r.dropped
    );
    buf.requeue(r.unsent);
    buf.log(LogRecord {
        body: Some(AnyValue {
            value: Some(Value::StringValue("after the outage".into())),
        }),
        ..Default::default()
    });
    assert_eq!(buf.len(), 6);
    assert_eq!(buf.dropped(), 0);

    let cap = Capture::start_on(port, Behaviour::Accept);
    let r = ex
        .export(
            &resource(),
            buf.drain(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.exported, [1, 1, 4]);
    assert_eq!(r.dropped, vec![]);
    assert!(r.unsent.is_empty());
    assert_eq!(cap.spans().len(), 1);
    assert_eq!(cap.spans()[0].1.name, "checkout");
    let bodies: Vec<String> = cap
        .logs()
        .iter()
        .map(|l| match l.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(bodies, ["line 0", "line 1", "line 2", "after the outage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_collector_is_cut_at_the_deadline() {
    let cap = Capture::start(Behaviour::Hang);
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(30));
    let t = Instant::now();
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_millis(400),
        )
        .await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert!(!r.ok);
    // A timeout is a passing failure: handed back, not dropped.
    assert_eq!(r.dropped, vec![]);
    assert_eq!(r.unsent, batch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_scheme_is_refused_clearly() {
    let ex = exporter(
        "ftp://collector.example",
        Compression::Gzip,
        Duration::from_secs(1),
    );
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(1),
        )
        .await;
    assert_eq!(r.dropped, vec![(reason::UNSUPPORTED_ENDPOINT, 5)]);
    assert!(r.error.unwrap().contains("neither http:// nor https://"));
}

/// The CA file named by `OTEL_EXPORTER_OTLP_CERTIFICATE`, read through `Config` as the binary
/// does; the capture only speaks TLS, so anything it decodes came over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_trusted_through_otel_certificate_receives_the_batch() {
    let pki = TestPki::new();
    let cap = Capture::start_tls(Behaviour::Accept, &pki);
    assert!(cap.base().starts_with("https://localhost:"));
    let ca = pki.ca_file();
    let env = [
        (config::OTEL_EXPORTER_OTLP_ENDPOINT, cap.base()),
        (
            config::OTEL_EXPORTER_OTLP_CERTIFICATE,
            ca.path().display().to_string(),
        ),
    ];
    let (cfg, warn) = Config::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    });
    assert!(warn.is_empty(), "{warn:?}");
    assert_eq!(cfg.extra_roots.len(), 1);
    let ex = exporter_via(
        HttpClient::with_extra_roots(cfg.extra_roots.clone()),
        cfg.endpoints.clone(),
        &[],
        cfg.compression,
        cfg.timeout,
    );
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.exported, [1, 1, 3]);
    assert!(cap.tls_failures().is_empty(), "{:?}", cap.tls_failures());
    let spans = cap.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].1.name, "checkout");
    assert_eq!(spans[0].1.trace_id, vec![1; 16]);
    assert_eq!(
        get_str(&spans[0].0.attributes, "service.name"),
        Some("checkout")
    );
    assert_eq!(cap.logs().len(), 3);
    assert_eq!(cap.metrics()[0].name, "faas.invocations");
    // Plain http:// through the same client still works.
    let plain = Capture::start(Behaviour::Accept);
    let ex = exporter_via(
        HttpClient::with_extra_roots(cfg.extra_roots.clone()),
        endpoints(&plain.base()),
        &[],
        Compression::Gzip,
        Duration::from_secs(5),
    );
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(plain.spans().len(), 1);
}

/// A collector whose certificate no trusted root vouches for: one attempt per signal (a
/// handshake failure is not retried), every item counted as `export_failed`, nothing sent, and
/// the export returns at once instead of burning its whole deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_an_export_failure_not_retried() {
    let pki = TestPki::new();
    let cap = Capture::start_tls(Behaviour::Accept, &pki);
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(5));
    let t = Instant::now();
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    let took = t.elapsed();
    assert!(!r.ok);
    assert_eq!(r.dropped, vec![(reason::EXPORT_FAILED, 5)]);
    assert_eq!(r.retries, 0);
    assert_eq!(r.exported, [0, 0, 0]);
    let err = r.error.unwrap();
    assert!(
        err.contains("TLS handshake failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(cap.requests().is_empty());
    assert!(cap.wait_for(Duration::from_secs(2), |c| c.tls_failures().len() >= 3));
}

/// The right CA, but a URL naming a host the certificate was not issued for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name_is_refused() {
    let pki = TestPki::for_names(&["collector.example"]);
    let cap = Capture::start_tls(Behaviour::Accept, &pki);
    let mut warn = Vec::new();
    let roots = config::load_roots(&pki.ca_file().path().display().to_string(), &mut warn);
    assert!(warn.is_empty(), "{warn:?}");
    // The capture, but the certificate names collector.example only.
    let ex = exporter_via(
        HttpClient::with_extra_roots(roots),
        endpoints(&cap.base()),
        &[],
        Compression::Gzip,
        Duration::from_secs(5),
    );
    let r = ex
        .export(
            &resource(),
            batch(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert!(!r.ok);
    assert_eq!(r.dropped, vec![(reason::EXPORT_FAILED, 5)]);
    assert_eq!(r.retries, 0);
    let err = r.error.unwrap();
    assert!(err.contains("not valid for name"), "{err}");
    assert!(cap.requests().is_empty());
}

/// The health probe `lifecycle` sends while the collector's health is unknown: one empty OTLP
/// metrics request (valid, nothing to store), no retries; `ok` only when the collector answered
/// 2xx; against a dead collector it fails at once, against one that never answers it returns by
/// its deadline; nothing is ever counted as exported or dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_is_one_empty_request_bounded_by_its_deadline() {
    let cap = Capture::start(Behaviour::Accept);
    let ex = exporter(&cap.base(), Compression::Gzip, Duration::from_secs(5));
    let r = ex.probe(Instant::now() + Duration::from_secs(5)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.exported, r.retries), ([0, 0, 0], 0));
    let reqs = cap.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/metrics");
    let req = ExportMetricsServiceRequest::decode(reqs[0].body.as_slice()).unwrap();
    assert!(req.resource_metrics.is_empty(), "{req:?}");
    assert!(cap.metrics().is_empty());

    let (_, dead) = dead_collector();
    let t = Instant::now();
    let r = dead.probe(Instant::now() + Duration::from_secs(5)).await;
    assert!(!r.ok && r.retries == 0 && r.dropped.is_empty(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    let hang = Capture::start(Behaviour::Hang);
    let ex = exporter(&hang.base(), Compression::Gzip, Duration::from_secs(5));
    let t = Instant::now();
    let r = ex.probe(Instant::now() + Duration::from_millis(300)).await;
    let took = t.elapsed();
    assert!(!r.ok && r.dropped.is_empty(), "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(r.error.unwrap().contains("health probe"));
}
