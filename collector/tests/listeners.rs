//! Through the real listeners: OTLP/HTTP (protobuf, JSON, gzip), OTLP/gRPC (tonic client), auth,
//! size limits and a gzip bomb, a full queue, malformed input next to a healthy client,
//! `/metrics` through the real `promtool`, `/api/v1/slos`, readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::{
    io::Write,
    net::SocketAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use lambdawatch_collector::{
    config::Config,
    serve::{self, Running},
    slo::spec::SloSpec,
};
use lambdawatch_semconv::{
    attr,
    otlp::{kv_f64, kv_i64, kv_str},
    span_type,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
    },
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use tokio_util::sync::CancellationToken;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn span(outcome: &str, ms: f64, end_ns: u64) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "checkout".into(),
        start_time_unix_nano: end_ns - (ms * 1e6) as u64,
        end_time_unix_nano: end_ns,
        attributes: vec![
            kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INVOCATION),
            kv_str(attr::FAAS_INVOCATION_ID, "abc"),
            kv_str(attr::AWS_LAMBDA_OUTCOME, outcome),
            kv_f64(attr::AWS_LAMBDA_DURATION_MS, ms),
            kv_i64(attr::AWS_LAMBDA_BILLED_DURATION_MS, ms.ceil() as i64),
            kv_i64(attr::AWS_LAMBDA_MEMORY_SIZE_MB, 256),
            kv_i64(attr::AWS_LAMBDA_MAX_MEMORY_USED_MB, 80),
            kv_i64(attr::AWS_LAMBDA_TIMEOUT_MS, 1000),
        ],
        ..Default::default()
    }
}

fn init_span(ms: f64, end_ns: u64) -> Span {
    Span {
        name: "init".into(),
        start_time_unix_nano: end_ns - (ms * 1e6) as u64,
        end_time_unix_nano: end_ns,
        attributes: vec![
            kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INIT),
            kv_str(attr::AWS_LAMBDA_INIT_TYPE, "on-demand"),
            kv_f64(attr::AWS_LAMBDA_DURATION_MS, ms),
        ],
        ..Default::default()
    }
}

fn request(function: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str(attr::FAAS_NAME, function),
                    kv_str(attr::FAAS_VERSION, "3"),
                    kv_str(attr::CLOUD_REGION, "eu-west-1"),
                    kv_str(attr::CLOUD_ACCOUNT_ID, "123456789012"),
                    kv_str("team", "payments"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Collector {
    running: Running,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Collector {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = Config::default();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        cfg.otlp_grpc_addr = any;
        cfg.otlp_http_addr = any;
        cfg.admin_addr = any;
        cfg.eval_interval = Duration::from_millis(200);
        tweak(&mut cfg);
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve::run(
            cfg,
            SloSpec::embedded_default(),
            serve::deliverer(&Config::default(), &Default::default()).unwrap(),
            Default::default(),
            shutdown.clone(),
            move |r| {
                let _ = tx.send(r);
            },
        ));
        let running = rx.await.expect("collector did not bind");
        Self {
            running,
            shutdown,
            task,
        }
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.bound.otlp_http)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.bound.admin)
    }

    async fn stop(self) {
        drop(self.running);
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(25), self.task)
            .await
            .expect("shutdown took more than 25 s")
            .unwrap()
            .unwrap();
    }
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(url: &str) -> Resp {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

const PB: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn metrics_text(c: &Collector) -> String {
    String::from_utf8(get(&c.admin("/metrics")).await.body.to_vec()).unwrap()
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_for_metric(c: &Collector, prefix: &str, want: f64) -> String {
    for _ in 0..100 {
        let t = metrics_text(c).await;
        if metric_value(&t, prefix) == Some(want) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{prefix} never reached {want}:\n{}", metrics_text(c).await);
}

const SUCCESS: &str = "lambdawatch_invocations_total{function=\"checkout\",version=\"3\",region=\"eu-west-1\",account=\"123456789012\",outcome=\"success\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_over_http_are_counted() {
    let c = Collector::start(|_| {}).await;
    let t = now_ns();
    let pb = request(
        "checkout",
        vec![span("success", 120.0, t), span("error", 80.0, t)],
    );
    let r = post(&c.http("/v1/traces"), &[PB], pb.encode_to_vec()).await;
    assert_eq!(r.status, 200);
    let r = post(
        &c.http("/v1/traces"),
        &[PB, ("content-encoding", "gzip")],
        gzip(&pb.encode_to_vec()),
    )
    .await;
    assert_eq!(r.status, 200);
    // OTLP/JSON as the SDKs write it: hex ids, lowerCamelCase, enums as integers, int64 as strings.
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[
            {{"key":"faas.name","value":{{"stringValue":"checkout"}}}},
            {{"key":"faas.version","value":{{"stringValue":"3"}}}},
            {{"key":"cloud.region","value":{{"stringValue":"eu-west-1"}}}},
            {{"key":"cloud.account.id","value":{{"stringValue":"123456789012"}}}}]}},
          "scopeSpans":[{{"scope":{{"name":"lambdawatch"}},"spans":[{{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"checkout","kind":2,
            "startTimeUnixNano":"{start}","endTimeUnixNano":"{t}",
            "attributes":[
              {{"key":"lambdawatch.span.type","value":{{"stringValue":"invocation"}}}},
              {{"key":"aws.lambda.outcome","value":{{"stringValue":"success"}}}},
              {{"key":"aws.lambda.duration_ms","value":{{"doubleValue":95.5}}}},
              {{"key":"aws.lambda.timeout_ms","value":{{"intValue":"1000"}}}}],
            "status":{{"code":1}}}}]}}]}}]}}"#,
        start = t - 95_500_000
    );
    let r = post(&c.http("/v1/traces"), &[JSON], json.clone().into_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/json");
    let r = post(
        &c.http("/v1/traces"),
        &[JSON, ("content-encoding", "gzip")],
        gzip(json.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = wait_for_metric(&c, SUCCESS, 4.0).await;
    assert_eq!(
        metric_value(&text, "lambdawatch_ingest_items_total{signal=\"traces\"}"),
        Some(6.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_requests_total{protocol=\"http\",signal=\"traces\",result=\"ok\"}"
        ),
        Some(4.0)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_gzip_and_auth() {
    let c = Collector::start(|cfg| cfg.auth_token = Some("s3cret".into())).await;
    let url = format!("http://{}", c.running.bound.otlp_grpc);
    let req = request("checkout", vec![span("success", 10.0, now_ns())]);

    let mut client = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = client.export(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut r = tonic::Request::new(req.clone());
    r.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    client.export(r).await.expect("authorised export");

    // HTTP: same token rules.
    let pb = req.encode_to_vec();
    let r = post(&c.http("/v1/traces"), &[PB], pb.clone()).await;
    assert_eq!(r.status, 401);
    let r = post(
        &c.http("/v1/traces"),
        &[PB, ("authorization", "Bearer wrong")],
        pb.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        &c.http("/v1/traces"),
        &[PB, ("authorization", "Bearer s3cret")],
        pb,
    )
    .await;
    assert_eq!(r.status, 200);
    let text = wait_for_metric(&c, SUCCESS, 2.0).await;
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_rejected_total{reason=\"unauthenticated\"}"
        ),
        Some(3.0)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_and_gzip_bomb_get_413() {
    let c = Collector::start(|cfg| {
        cfg.max_body_bytes = 64 * 1024;
        cfg.max_decompressed_bytes = 1024 * 1024;
    })
    .await;
    let big = vec![0u8; 200 * 1024];
    let r = post(&c.http("/v1/traces"), &[PB], big).await;
    assert_eq!(r.status, 413);
    // 256 MiB of zeros → ~256 KiB gzip: too big compressed; use 32 MiB → ~32 KiB (< 64 KiB).
    let bomb = gzip(&vec![0u8; 32 << 20]);
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let r = post(
        &c.http("/v1/traces"),
        &[PB, ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    let text = metrics_text(&c).await;
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_rejected_total{reason=\"too_large\"}"
        ),
        Some(2.0)
    );
    // gRPC: tonic's decoding limit applies to the inflated message.
    let mut client = TraceServiceClient::connect(format!("http://{}", c.running.bound.otlp_grpc))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut huge = request("checkout", vec![]);
    huge.resource_spans[0].scope_spans[0].spans = (0..20_000)
        .map(|_| span("success", 1.0, now_ns()))
        .collect();
    let err = client.export(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let text = metrics_text(&c).await;
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_rejected_total{reason=\"too_large\"}"
        ),
        Some(3.0),
        "the gRPC refusal is counted with the HTTP ones"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_and_resource_exhausted() {
    let c = Collector::start(|cfg| cfg.queue_capacity = 1).await;
    // Park the aggregator inside a query so nothing drains the queue.
    let (release_tx, release_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let h = c.running.aggregates.clone();
    let parked = tokio::spawn(async move {
        h.query(move |_| {
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pb = request("checkout", vec![span("success", 1.0, now_ns())]).encode_to_vec();
    let first = post(&c.http("/v1/traces"), &[PB], pb.clone()).await;
    assert_eq!(first.status, 200);
    let second = post(&c.http("/v1/traces"), &[PB], pb.clone()).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.headers["retry-after"], "1");
    let mut client = TraceServiceClient::connect(format!("http://{}", c.running.bound.otlp_grpc))
        .await
        .unwrap();
    let err = client
        .export(request("checkout", vec![span("success", 1.0, now_ns())]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // Temporary: RetryInfo of 1 s in the details and where the Python SDK reads it.
    assert!(!err.details().is_empty());
    assert_eq!(
        err.metadata()
            .get_bin("google.rpc.retryinfo-bin")
            .expect("retryinfo-bin metadata")
            .to_bytes()
            .unwrap()
            .as_ref(),
        &[0x0a, 0x02, 0x08, 0x01]
    );
    release_tx.send(()).unwrap();
    parked.await.unwrap().unwrap();
    let text = wait_for_metric(&c, SUCCESS, 1.0).await;
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_rejected_total{reason=\"queue_full\"}"
        ),
        Some(2.0)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_gets_400_and_other_clients_are_unaffected() {
    let c = Collector::start(|_| {}).await;
    let good = request("checkout", vec![span("success", 1.0, now_ns())]).encode_to_vec();
    let bad_pb = post(&c.http("/v1/traces"), &[PB], vec![0xff, 0xff, 0xff, 0x01]).await;
    assert_eq!(bad_pb.status, 400);
    let bad_json = post(
        &c.http("/v1/traces"),
        &[JSON],
        b"{\"resourceSpans\": 7}".to_vec(),
    )
    .await;
    assert_eq!(bad_json.status, 400);
    assert!(
        String::from_utf8_lossy(&bad_json.body).contains("invalid OTLP/JSON"),
        "{}",
        String::from_utf8_lossy(&bad_json.body)
    );
    let bad_gzip = post(
        &c.http("/v1/traces"),
        &[PB, ("content-encoding", "gzip")],
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(bad_gzip.status, 400);
    let ok = post(&c.http("/v1/traces"), &[PB], good).await;
    assert_eq!(ok.status, 200);
    let text = wait_for_metric(&c, SUCCESS, 1.0).await;
    assert_eq!(
        metric_value(
            &text,
            "lambdawatch_ingest_rejected_total{reason=\"malformed\"}"
        ),
        Some(3.0)
    );
    c.stop().await;
}

fn promtool() -> std::path::PathBuf {
    for p in ["/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!(
        "promtool missing: install the Debian package `prometheus` (apt-get install prometheus)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_slos_are_reported() {
    let c = Collector::start(|_| {}).await;
    let t = now_ns();
    let mut spans: Vec<Span> = (0..50)
        .map(|i| span("success", 100.0 + i as f64, t))
        .collect();
    spans.push(span("error", 900.0, t));
    spans.push(init_span(350.0, t));
    spans.push(init_span(700.0, t));
    let r = post(
        &c.http("/v1/traces"),
        &[PB],
        request("checkout", spans).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    wait_for_metric(&c, SUCCESS, 50.0).await;
    // Let one evaluation run after the data arrived.
    let mut slos = serde_json::Value::Null;
    for _ in 0..100 {
        let r = get(&c.admin("/api/v1/slos")).await;
        slos = serde_json::from_slice(&r.body).unwrap();
        if slos["functions"].as_array().is_some_and(|f| !f.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let f = &slos["functions"][0];
    assert_eq!(f["function"], "checkout");
    let slo = |name: &str| {
        f["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slo"] == name)
            .unwrap_or_else(|| panic!("no {name} in {f}"))
            .clone()
    };
    let er = slo("error_rate");
    let w1h = er["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "1h")
        .unwrap();
    assert_eq!(
        (w1h["good"].as_u64(), w1h["valid"].as_u64()),
        (Some(50), Some(51))
    );
    assert_eq!(er["objective"], 0.999);
    let cs = slo("cold_start");
    assert_eq!(cs["budget"]["valid"], 2);
    assert_eq!(cs["budget"]["good"], 1);
    assert_eq!(f["cold_start_ms"]["on-demand"]["count"], 2);
    assert!(f["cold_start_ms"]["on-demand"]["p99"].as_f64().unwrap() >= 700.0 * 0.99);
    let tb = slo("timeout_budget");
    assert_eq!(tb["budget"]["valid"], 51);
    assert_eq!(tb["budget"]["good"], 50, "900 ms > 0.8 × 1000 ms");

    let text = metrics_text(&c).await;
    // Exact values the input implies: init spans of 350 ms and 700 ms; 51 invocations of
    // 256 MB with 80 MB used and a 1000 ms timeout.
    const FN: &str =
        "function=\"checkout\",version=\"3\",region=\"eu-west-1\",account=\"123456789012\"";
    let init = |suffix: &str| {
        format!("lambdawatch_init_duration_seconds{suffix}{{{FN},init_type=\"on-demand\"")
    };
    for (series, want) in [
        (format!("{},le=\"0.25\"}} ", init("_bucket")), 0.0),
        (format!("{},le=\"0.5\"}} ", init("_bucket")), 1.0),
        (format!("{},le=\"+Inf\"}} ", init("_bucket")), 2.0),
        (format!("{}}} ", init("_count")), 2.0),
        (format!("{}}} ", init("_sum")), 1.05),
        (
            format!("lambdawatch_max_memory_used_bytes{{{FN}}} "),
            80.0 * 1024.0 * 1024.0,
        ),
        (
            format!("lambdawatch_memory_size_bytes{{{FN}}} "),
            256.0 * 1024.0 * 1024.0,
        ),
        (format!("lambdawatch_timeout_seconds{{{FN}}} "), 1.0),
    ] {
        let got = metric_value(&text, &series);
        assert!(
            got.is_some_and(|v| (v - want).abs() < 1e-9),
            "{series}: {got:?}, want {want}\n{text}"
        );
    }
    assert!(text.contains("lambdawatch_slo_burn_rate{function=\"checkout\""));
    assert!(text.contains("lambdawatch_slo_error_budget_remaining_ratio{"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    // Syntax, types and promtool's naming lint (exit 3) all count: the exposition must pass clean.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics failed:\n{report}"
    );
    // Status page and probes.
    let page = get(&c.admin("/")).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<td>checkout</td>") && html.contains("class=\"bar\""));
    assert_eq!(get(&c.admin("/healthz")).await.status, 200);
    assert_eq!(get(&c.admin("/readyz")).await.status, 200);
    c.stop().await;
}

/// Sends any bytes as the request message (a malformed one included); decodes the response as
/// OTLP's trace response.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct TraceResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = TraceResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> TraceResponseDecoder {
        TraceResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for TraceResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn grpc_raw(
    url: &str,
    body: Vec<u8>,
    gzip: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn counter(text: &str, series: &str) -> f64 {
    metric_value(text, &format!("{series} "))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// A malformed or oversize gRPC request is refused by tonic's decoder before our handler runs:
/// it must still get OTLP's codes (INVALID_ARGUMENT; RESOURCE_EXHAUSTED without RetryInfo, not
/// the retryable OUT_OF_RANGE) and be counted like OTLP/HTTP's refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusals_get_otlp_codes_and_are_counted() {
    let c = Collector::start(|cfg| {
        cfg.max_body_bytes = 64 * 1024;
        cfg.max_decompressed_bytes = 256 * 1024;
    })
    .await;
    let url = format!("http://{}", c.running.bound.otlp_grpc);

    let err = grpc_raw(&url, vec![0xff, 0xff, 0xff, 0x01], false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("malformed OTLP request"), "{err}");
    let err = grpc_raw(&url, vec![0x0a, 0x05, 0x01], true)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "gzip, truncated: {err}"
    );

    // Oversize, uncompressed (tonic: OUT_OF_RANGE from the frame header) and gzip (tonic:
    // RESOURCE_EXHAUSTED while inflating): both permanent, so no RetryInfo anywhere.
    let mut huge = request("checkout", vec![]);
    huge.resource_spans[0].scope_spans[0].spans =
        (0..2_000).map(|_| span("success", 1.0, now_ns())).collect();
    assert!(huge.encoded_len() > 256 * 1024);
    for gz in [false, true] {
        let err = grpc_raw(&url, huge.encode_to_vec(), gz).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::ResourceExhausted,
            "gzip {gz}: {err}"
        );
        assert!(err.message().contains("262144-byte limit"), "{err}");
        assert!(
            err.details().is_empty(),
            "no RetryInfo on a permanent refusal"
        );
        assert!(
            err.metadata().get_bin("google.rpc.retryinfo-bin").is_none(),
            "no RetryInfo on a permanent refusal"
        );
    }

    // A healthy client on the same listener is unaffected.
    let mut client = TraceServiceClient::connect(url.clone()).await.unwrap();
    client
        .export(request("checkout", vec![span("success", 1.0, now_ns())]))
        .await
        .expect("healthy export");
    let text = wait_for_metric(&c, SUCCESS, 1.0).await;
    for (series, want) in [
        (
            "lambdawatch_ingest_rejected_total{reason=\"malformed\"}",
            2.0,
        ),
        (
            "lambdawatch_ingest_rejected_total{reason=\"too_large\"}",
            2.0,
        ),
        (
            "lambdawatch_ingest_requests_total{protocol=\"grpc\",signal=\"traces\",result=\"malformed\"}",
            2.0,
        ),
        (
            "lambdawatch_ingest_requests_total{protocol=\"grpc\",signal=\"traces\",result=\"too_large\"}",
            2.0,
        ),
        (
            "lambdawatch_ingest_requests_total{protocol=\"grpc\",signal=\"traces\",result=\"ok\"}",
            1.0,
        ),
    ] {
        assert_eq!(counter(&text, series), want, "{series}");
    }
    c.stop().await;
}

/// Bad records next to good ones: the good ones are aggregated, the bad ones named in
/// `partial_success` and counted by reason, on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_keeps_the_good_records_on_both_protocols() {
    let c = Collector::start(|_| {}).await;
    let t = now_ns();
    let mut nan = span("success", 5.0, t);
    nan.attributes
        .push(kv_f64(attr::AWS_LAMBDA_DURATION_MS, f64::NAN));
    nan.attributes.remove(3); // the valid duration: NaN is the only one left
    let mut req = request(
        "checkout",
        vec![span("success", 10.0, t), nan, span("error", 20.0, t)],
    );
    // A second resource without faas.name: its invocation span names no function.
    let mut anonymous = req.resource_spans[0].clone();
    anonymous.resource = Some(Resource::default());
    anonymous.scope_spans[0].spans = vec![span("success", 1.0, t)];
    req.resource_spans.push(anonymous);

    let mut client = TraceServiceClient::connect(format!("http://{}", c.running.bound.otlp_grpc))
        .await
        .unwrap();
    let resp = client.export(req.clone()).await.unwrap().into_inner();
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.starts_with(
            "2 of 4 spans rejected; first: span `checkout`: aws.lambda.duration_ms = NaN"
        ),
        "{}",
        partial.error_message
    );

    let r = post(&c.http("/v1/traces"), &[PB], req.encode_to_vec()).await;
    assert_eq!(r.status, 200);
    let resp = ExportTraceServiceResponse::decode(r.body).unwrap();
    assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(2));
    // A clean request has no partial_success.
    let clean = request("checkout", vec![span("success", 10.0, t)]);
    let resp = client.export(clean).await.unwrap().into_inner();
    assert_eq!(resp.partial_success, None);

    // One success per request that had them: two partial requests and the clean one.
    let text = wait_for_metric(&c, SUCCESS, 3.0).await;
    let error = SUCCESS.replace("outcome=\"success\"", "outcome=\"error\"");
    for (series, want) in [
        (error.as_str(), 2.0),
        (
            "lambdawatch_ingest_rejected_items_total{signal=\"traces\",reason=\"invalid_value\"}",
            2.0,
        ),
        (
            "lambdawatch_ingest_rejected_items_total{signal=\"traces\",reason=\"no_function\"}",
            2.0,
        ),
        ("lambdawatch_ingest_items_total{signal=\"traces\"}", 5.0),
        (
            "lambdawatch_ingest_rejected_total{reason=\"malformed\"}",
            0.0,
        ),
    ] {
        assert_eq!(counter(&text, series), want, "{series}");
    }
    c.stop().await;
}
