//! The collector against real peers: the Python OpenTelemetry SDK exporting over OTLP/gRPC and
//! OTLP/HTTP (gzip, bearer token), and a real Prometheus scraping `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::{process::Command, time::Duration};

use lambdawatch_tests::{Child, free_port, http, peers, prometheus, wait_until, workspace_bin};

struct Addrs {
    grpc: String,
    http: String,
    admin: String,
}

fn start_collector(extra_env: &[(&str, &str)]) -> (Child, Addrs) {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = Child::spawn("collector", &mut cmd);
    let line = child.wait_for_text("lambdawatch-collector listening", Duration::from_secs(30));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let addrs = Addrs {
        grpc: field("otlp_grpc"),
        http: field("otlp_http"),
        admin: field("admin"),
    };
    (child, addrs)
}

fn metrics(admin: &str) -> String {
    http::get(&format!("http://{admin}/metrics"), Duration::from_secs(5))
        .expect("GET /metrics")
        .text()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sends, with the SDK's own exporters, `n_ok` successful and `n_err` failed invocation spans of
/// our shape plus one span of an ordinary application, once over gRPC and once over HTTP.
const SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.trace import SpanKind

grpc_addr, http_addr, token, n_ok, n_err = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
headers = {"authorization": "Bearer " + token}

def send(exporter, version):
    resource = Resource.create({
        "service.name": "py-fn", "faas.name": "py-fn", "faas.version": version,
        "cloud.region": "eu-west-1", "cloud.account.id": "123456789012",
        "cloud.provider": "aws", "cloud.platform": "aws_lambda",
    })
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("collector-peers")
    for i in range(n_ok + n_err):
        outcome = "success" if i < n_ok else "error"
        with tracer.start_as_current_span("py-fn", kind=SpanKind.SERVER) as span:
            span.set_attribute("lambdawatch.span.type", "invocation")
            span.set_attribute("faas.invocation_id", "inv-%d" % i)
            span.set_attribute("aws.lambda.outcome", outcome)
            span.set_attribute("aws.lambda.duration_ms", 12.5 + i)
            span.set_attribute("aws.lambda.timeout_ms", 3000)
    with tracer.start_as_current_span("GET /orders"):
        pass
    assert provider.force_flush(10_000), "flush failed"
    provider.shutdown()

send(GrpcExporter(endpoint="http://" + grpc_addr, insecure=True, headers=headers,
                  compression=GrpcCompression.Gzip), "grpc")
send(HttpExporter(endpoint="http://" + http_addr + "/v1/traces", headers=headers,
                  compression=HttpCompression.Gzip), "http")
print("sent")
"#;

#[test]
fn python_sdk_over_grpc_and_http_is_counted() {
    let python = peers::python_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter");
    peers::python_module("opentelemetry.exporter.otlp.proto.http.trace_exporter");
    let (_collector, a) = start_collector(&[("LAMBDAWATCH_AUTH_TOKEN", "peer-token")]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("send.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new(python)
        .arg(&script)
        .args([&a.grpc, &a.http, "peer-token", "7", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sent"),
        "python exporter failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for version in ["grpc", "http"] {
        let prefix = |outcome: &str| {
            format!(
                "lambdawatch_invocations_total{{function=\"py-fn\",version=\"{version}\",region=\"eu-west-1\",account=\"123456789012\",outcome=\"{outcome}\"}}"
            )
        };
        let text = wait_until(
            &format!("7 successes over {version}"),
            Duration::from_secs(20),
            || {
                let t = metrics(&a.admin);
                (value(&t, &prefix("success")) == Some(7.0)).then_some(t)
            },
        );
        assert_eq!(value(&text, &prefix("error")), Some(3.0), "{text}");
    }
    let text = metrics(&a.admin);
    // 2 × (10 invocation spans + 1 application span), every one counted.
    assert_eq!(
        value(&text, "lambdawatch_ingest_items_total{signal=\"traces\"}"),
        Some(22.0)
    );
    for protocol in ["grpc", "http"] {
        let ok = value(
            &text,
            &format!(
                "lambdawatch_ingest_requests_total{{protocol=\"{protocol}\",signal=\"traces\",result=\"ok\"}}"
            ),
        )
        .unwrap_or(0.0);
        assert!(ok >= 1.0, "no accepted {protocol} request:\n{text}");
    }
    // The SLO status reflects the SDK's spans.
    let slos = wait_until("an evaluation with py-fn", Duration::from_secs(20), || {
        let j = http::get(
            &format!("http://{}/api/v1/slos", a.admin),
            Duration::from_secs(5),
        )
        .ok()?
        .json();
        j["functions"]
            .as_array()
            .is_some_and(|f| f.len() == 2)
            .then_some(j)
    });
    let er = slos["functions"][0]["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == "error_rate")
        .unwrap()
        .clone();
    assert_eq!(er["budget"]["valid"], 10);
    assert_eq!(er["budget"]["good"], 7);
}

#[test]
fn real_prometheus_scrapes_the_collector() {
    let (_collector, a) = start_collector(&[]);
    // Ten invocation spans over OTLP/JSON.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let spans: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b17{i}","name":"checkout","kind":2,
                "startTimeUnixNano":"{}","endTimeUnixNano":"{end}",
                "attributes":[{{"key":"lambdawatch.span.type","value":{{"stringValue":"invocation"}}}},
                {{"key":"aws.lambda.outcome","value":{{"stringValue":"success"}}}},
                {{"key":"aws.lambda.duration_ms","value":{{"doubleValue":20.0}}}}]}}"#,
                end - 20_000_000
            )
        })
        .collect();
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"faas.name","value":{{"stringValue":"checkout"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    );
    let r = http::request(
        "POST",
        &format!("http://{}/v1/traces", a.http),
        &[("content-type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let prom = prometheus::start(
        "prometheus",
        &prometheus::Config::job("1s", "lambdawatch", &[&a.admin]),
    );
    let v = wait_until(
        "Prometheus to have scraped lambdawatch_invocations_total",
        Duration::from_secs(60),
        || {
            prom.query(r#"lambdawatch_invocations_total{function="checkout",outcome="success"}"#)?
                .first()?["value"][1]
                .as_str()
                .map(str::to_owned)
        },
    );
    assert_eq!(v, "10");
    // The scrape itself succeeded (up == 1) and parsed every family.
    let up = prom.query("up").expect("up query");
    assert_eq!(up[0]["value"][1], "1");
}

/// Posts `n` invocation spans of `function` with `outcome`, in requests of at most 5,000.
fn send_invocations(http_addr: &str, function: &str, outcome: &str, n: usize) {
    use lambdawatch_semconv::{attr, otlp::kv_f64, otlp::kv_str, span_type};
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };
    use prost::Message;
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(5_000);
        left -= k;
        let spans = (0..k)
            .map(|_| Span {
                name: function.into(),
                start_time_unix_nano: end - 10_000_000,
                end_time_unix_nano: end,
                attributes: vec![
                    kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INVOCATION),
                    kv_str(attr::AWS_LAMBDA_OUTCOME, outcome),
                    kv_f64(attr::AWS_LAMBDA_DURATION_MS, 10.0),
                ],
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str(attr::FAAS_NAME, function)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let r = http::request(
            "POST",
            &format!("http://{http_addr}/v1/traces"),
            &[("content-type", "application/x-protobuf")],
            &req.encode_to_vec(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A webhook receiver: every POST body, in order.
fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let addr = lambdawatch_tests::webhook::serve(move |body| {
        if let Ok(v) = serde_json::from_slice(body) {
            sink.lock().unwrap().push(v);
        }
    });
    (addr, got)
}

/// One incident through the collector's state machine and a real Alertmanager: the receiver gets
/// exactly one firing and one resolved notification for the page, despite the collector
/// re-sending while it fires.
#[test]
fn one_incident_one_firing_one_resolved_through_alertmanager() {
    let am_bin = peers::bin("prometheus-alertmanager");
    let (hook, got) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let am_cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: 'null'\n  group_by: ['alertname', 'function', 'severity']\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n  routes:\n    - receiver: hook\n      matchers: ['severity=\"page\"']\nreceivers:\n  - name: 'null'\n  - name: hook\n    webhook_configs:\n      - url: 'http://{hook}/'\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let am_port = free_port();
    let _am = Child::spawn(
        "alertmanager",
        Command::new(am_bin)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
    );
    wait_until("alertmanager ready", Duration::from_secs(30), || {
        http::get(
            &format!("http://127.0.0.1:{am_port}/-/ready"),
            Duration::from_secs(2),
        )
        .ok()
        .filter(|r| r.status == 200)
    });
    let am_url = format!("http://127.0.0.1:{am_port}");
    let (collector, a) = start_collector(&[
        ("LAMBDAWATCH_ALERTMANAGER_URL", am_url.as_str()),
        ("LAMBDAWATCH_ALERT_FOR", "0s"),
        ("LAMBDAWATCH_ALERT_RESEND", "1s"),
    ]);
    // Outage: 200 failures → burn rate 1000× over 5 m and 1 h.
    send_invocations(&a.http, "orders", "error", 200);
    let firing = wait_until(
        "a firing page at the receiver",
        Duration::from_secs(30),
        || {
            let g = got.lock().unwrap();
            g.iter().find(|v| v["status"] == "firing").cloned()
        },
    );
    assert_eq!(
        firing["alerts"][0]["labels"]["alertname"],
        "LambdawatchErrorBudgetBurn"
    );
    assert_eq!(firing["alerts"][0]["labels"]["function"], "orders");
    assert!(
        firing["alerts"][0]["annotations"]
            .as_object()
            .is_some_and(|a| a
                .values()
                .any(|v| v.as_str().is_some_and(|s| s.contains("runbooks")))),
        "no runbook_url: {firing}"
    );
    // Let the collector re-send a few times while it fires.
    std::thread::sleep(Duration::from_secs(4));
    // Recovery: 40,000 successes dilute the failures to 0.5 % → burn 5× < 6× and < 14.4×.
    send_invocations(&a.http, "orders", "success", 40_000);
    wait_until(
        "a resolved page at the receiver",
        Duration::from_secs(30),
        || {
            let g = got.lock().unwrap();
            g.iter().any(|v| v["status"] == "resolved").then_some(())
        },
    );
    // Give Alertmanager a few group intervals to send anything extra.
    std::thread::sleep(Duration::from_secs(5));
    let g = got.lock().unwrap();
    let firing = g.iter().filter(|v| v["status"] == "firing").count();
    let resolved = g.iter().filter(|v| v["status"] == "resolved").count();
    assert_eq!((firing, resolved), (1, 1), "notifications: {g:#?}");
    let sent = value(
        &metrics(&a.admin),
        "lambdawatch_alert_deliveries_total{sink=\"alertmanager\",result=\"success\"}",
    )
    .unwrap_or(0.0);
    assert!(
        sent >= 3.0,
        "the collector should have re-sent while firing (sent {sent})"
    );
    drop(collector);
}
