//! The lifecycle loop against a scripted Extensions/Telemetry API: registration fallbacks
//! (Managed Instances 403, schema refusal, `Telemetry.NotSupported`), "never `/next` before
//! `platform.runtimeDone` when flushing at the end", and SHUTDOWN waiting for the late report.
//! The `process_*` tests run the real `lambdawatch-extension` binary against the same fake API:
//! drops counted and memory bounded with a dead collector, the adaptive flush before `/next`,
//! the account id on the exported resource, the `Telemetry.NotSupported` line said once, and a
//! collector that never answered (refusing or black-holed) never holding `/next`. Every test
//! starts from one [`Setup`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Behaviour, Capture};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambdawatch_extension::config::Config;
use lambdawatch_extension::http::HttpClient;
use lambdawatch_extension::lifecycle;
use lambdawatch_semconv::otlp::{get_bool, get_str};
use lambdawatch_semconv::{attr, span_type};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Default, Clone, Copy)]
struct Script {
    reject_invoke: bool,
    reject_latest_schema: bool,
    telemetry_not_supported: bool,
    /// The register answer carries no `accountId` (the account is then only in the ARN).
    omit_account: bool,
}

#[derive(Default)]
struct Seen {
    registers: Vec<Value>,
    subscriptions: Vec<Value>,
    /// When each `/event/next` call arrived, and how many log records the collector had then.
    next_calls: Vec<(Instant, usize)>,
    /// How many invocation spans the collector had when each `/event/next` call arrived.
    next_spans: Vec<usize>,
}

struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    events: mpsc::Sender<Value>,
}

async fn fake_api(script: Script, cap: Capture) -> FakeApi {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (tx, rx) = mpsc::channel::<Value>(16);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = l.accept().await.unwrap();
            let seen = s2.clone();
            let rx = rx.clone();
            let cap = cap.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let rx = rx.clone();
                    let cap = cap.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let (status, headers, out): (u16, Vec<(&str, &str)>, Value) = match path
                            .as_str()
                        {
                            "/2020-01-01/extension/register" => {
                                seen.lock().unwrap().registers.push(v.clone());
                                let wants_invoke = v["events"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .any(|e| e == "INVOKE");
                                if script.reject_invoke && wants_invoke {
                                    (
                                        403,
                                        vec![],
                                        json!({"errorType": "Extension.InvalidEventType", "errorMessage": "INVOKE not supported"}),
                                    )
                                } else {
                                    let mut ans = json!({"functionName": "fake-fn", "functionVersion": "7", "handler": "h", "accountId": "111122223333"});
                                    if script.omit_account {
                                        ans.as_object_mut().unwrap().remove("accountId");
                                    }
                                    (200, vec![("Lambda-Extension-Identifier", "ext-1")], ans)
                                }
                            }
                            "/2022-07-01/telemetry" => {
                                seen.lock().unwrap().subscriptions.push(v.clone());
                                if script.telemetry_not_supported {
                                    (
                                        202,
                                        vec![],
                                        json!({"errorType": "Telemetry.NotSupported", "errorMessage": "not here"}),
                                    )
                                } else if script.reject_latest_schema
                                    && v["schemaVersion"] == "2025-01-29"
                                {
                                    (400, vec![], json!({"errorType": "InvalidRequest"}))
                                } else {
                                    (200, vec![], json!("OK"))
                                }
                            }
                            "/2020-01-01/extension/event/next" => {
                                let logs = cap.logs().len();
                                let spans = invocation_ids(&cap).len();
                                {
                                    let mut g = seen.lock().unwrap();
                                    g.next_calls.push((Instant::now(), logs));
                                    g.next_spans.push(spans);
                                }
                                let ev = rx.lock().await.recv().await.unwrap_or(Value::Null);
                                (200, vec![], ev)
                            }
                            _ => (404, vec![], Value::Null),
                        };
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from(out.to_string())));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        for (k, v) in headers {
                            resp.headers_mut().insert(k, v.parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeApi {
        addr,
        seen,
        events: tx,
    }
}

fn config(api: SocketAddr, cap: &Capture, extra: &[(&str, &str)]) -> Config {
    let mut m: std::collections::HashMap<String, String> = [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", cap.base()),
        ("LAMBDAWATCH_TELEMETRY_LISTENER", "127.0.0.1:0".to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", "fake-fn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    let (c, w) = Config::from_lookup(|k| m.get(k).cloned());
    assert!(w.is_empty(), "{w:?}");
    c
}

async fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The listener port from the subscription URI (`http://sandbox.localdomain:PORT`).
fn listener_port(sub: &Value) -> u16 {
    let uri = sub["destination"]["URI"].as_str().unwrap();
    assert!(uri.starts_with("http://sandbox.localdomain:"), "{uri}");
    uri.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

async fn post_telemetry(port: u16, events: Value) {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}/"))
        .body(Full::new(Bytes::from(events.to_string())))
        .unwrap();
    let resp = HttpClient::new()
        .send(req, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(resp.status.as_u16(), 200);
}

/// Sends a `spindown` SHUTDOWN with `budget_ms` to its deadline and asserts the loop exits with
/// 0 within `wait`.
async fn spindown(
    api: &FakeApi,
    run: tokio::task::JoinHandle<i32>,
    budget_ms: u64,
    wait: Duration,
) {
    api.events
        .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms() + budget_ms}))
        .await
        .unwrap();
    assert_eq!(tokio::time::timeout(wait, run).await.unwrap().unwrap(), 0);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    // Enough for a test: compute the civil date.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

fn invoke(rid: &str) -> Value {
    json!({"eventType": "INVOKE", "requestId": rid, "deadlineMs": now_ms() + 3000,
        "invokedFunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:fake-fn",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}})
}

fn ev(kind: &str, record: Value) -> Value {
    json!({"time": iso(now_ms()), "type": kind, "record": record})
}

/// `/next` is held for a flush only once the collector has answered an export: waits until it
/// has the start-up probe (the extension's self-metrics, sent before the first `/next`), then
/// gives the answer time to reach the extension.
async fn collector_proven(cap: &Capture) {
    wait_until("the start-up health probe", Duration::from_secs(5), || {
        cap.requests().iter().any(|r| r.path == "/v1/metrics")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// How a test starts one extension against a fresh fake API: the collector's behaviour, the
/// API's script, extra environment, and (for the real binary) an OTLP endpoint other than the
/// capture. The one place the capture, the API and the extension are put together.
#[derive(Clone)]
struct Setup {
    script: Script,
    collector: Behaviour,
    env: Vec<(String, String)>,
    /// The process exports here instead of to the capture (a dead or black-holed collector).
    otlp: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            script: Script::default(),
            collector: Behaviour::Accept,
            env: Vec::new(),
            otlp: None,
        }
    }
}

/// A started extension's surroundings.
struct Env {
    cap: Capture,
    api: FakeApi,
    seen: Arc<Mutex<Seen>>,
}

impl Setup {
    fn script(mut self, script: Script) -> Self {
        self.script = script;
        self
    }

    fn collector(mut self, b: Behaviour) -> Self {
        self.collector = b;
        self
    }

    fn env(mut self, kv: &[(&str, &str)]) -> Self {
        self.env
            .extend(kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    fn otlp(mut self, url: impl Into<String>) -> Self {
        self.otlp = Some(url.into());
        self
    }

    async fn env_only(&self) -> Env {
        let cap = Capture::start(self.collector);
        let api = fake_api(self.script, cap.clone()).await;
        let seen = api.seen.clone();
        Env { cap, api, seen }
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The lifecycle loop in this test process.
    async fn in_process(self) -> (Env, tokio::task::JoinHandle<i32>) {
        let e = self.env_only().await;
        let cfg = config(e.api.addr, &e.cap, &self.pairs());
        let run = tokio::spawn(lifecycle::run(cfg, vec![]));
        (e, run)
    }

    /// The real `lambdawatch-extension` binary.
    async fn process(self) -> (Env, Process) {
        let e = self.env_only().await;
        let otlp = self.otlp.clone().unwrap_or_else(|| e.cap.base());
        let proc = Process::start(e.api.addr, &otlp, &self.pairs());
        (e, proc)
    }
}

impl Env {
    /// Waits until `n` subscriptions arrived; the listener port of the last one.
    async fn subscribed(&self, n: usize, timeout: Duration) -> u16 {
        wait_until("subscription", timeout, || {
            self.seen.lock().unwrap().subscriptions.len() >= n
        })
        .await;
        listener_port(self.seen.lock().unwrap().subscriptions.last().unwrap())
    }

    /// Waits until `/event/next` was called `n` times.
    async fn next_calls(&self, what: &str, n: usize, timeout: Duration) {
        wait_until(what, timeout, || {
            self.seen.lock().unwrap().next_calls.len() == n
        })
        .await;
    }

    /// The real binary's start: subscribed and waiting in its first `/next`; the listener port.
    async fn ready(&self) -> u16 {
        self.next_calls("subscription and first /next", 1, Duration::from_secs(10))
            .await;
        self.subscribed(1, Duration::from_secs(10)).await
    }
}

fn invocation_ids(cap: &Capture) -> Vec<String> {
    cap.spans()
        .into_iter()
        .filter(|(_, s)| {
            get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INVOCATION)
        })
        .filter_map(|(_, s)| get_str(&s.attributes, attr::FAAS_INVOCATION_ID).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_flush_never_calls_next_before_runtime_done_and_shutdown_waits_for_the_report() {
    let (e, run) = Setup::default()
        .env(&[("LAMBDAWATCH_FLUSH", "end")])
        .in_process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let port = e.subscribed(1, Duration::from_secs(5)).await;
    let sub = seen.lock().unwrap().subscriptions[0].clone();
    assert_eq!(sub["schemaVersion"], "2025-01-29");
    assert_eq!(sub["buffering"]["timeoutMs"], 25);
    assert_eq!(sub["types"], json!(["platform", "function", "extension"]));
    let reg = seen.lock().unwrap().registers[0].clone();
    assert_eq!(reg["events"], json!(["INVOKE", "SHUTDOWN"]));
    e.next_calls("first /next", 1, Duration::from_secs(5)).await;
    collector_proven(cap).await;

    let rid = "aaaaaaaa-0000-4000-8000-000000000001";
    api.events.send(invoke(rid)).await.unwrap();
    post_telemetry(
        port,
        json!([
            ev("platform.start", json!({"requestId": rid, "version": "7"})),
            ev("function", json!("[INFO] working"))
        ]),
    )
    .await;
    // The function is "running": no runtimeDone yet, so no /next.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        seen.lock().unwrap().next_calls.len(),
        1,
        "/next called before runtimeDone"
    );
    post_telemetry(
        port,
        json!([ev(
            "platform.runtimeDone",
            json!({"requestId": rid, "status": "success", "metrics": {"durationMs": 12.0}})
        )]),
    )
    .await;
    wait_until("second /next", Duration::from_secs(5), || {
        seen.lock().unwrap().next_calls.len() == 2
    })
    .await;
    let logs_at_next = seen.lock().unwrap().next_calls[1].1;
    assert!(logs_at_next >= 1, "the flush happened before /next");

    // SHUTDOWN before the report: the extension keeps listening for it.
    api.events
        .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms() + 2000}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!run.is_finished(), "must wait for the pending report");
    post_telemetry(port, json!([ev("platform.report", json!({"requestId": rid, "status": "success", "metrics": {"durationMs": 12.5, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 30}}))])).await;
    let t = Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(invocation_ids(cap), vec![rid.to_owned()]);
    let (res, span) = cap.spans().into_iter().find(|(_, s)| s.kind == 2).unwrap();
    assert_eq!(
        get_bool(&span.attributes, attr::LAMBDAWATCH_INCOMPLETE),
        None,
        "complete, with its report"
    );
    assert_eq!(
        get_str(&res.attributes, attr::CLOUD_ACCOUNT_ID),
        Some("111122223333")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_the_report_still_exports_within_the_deadline() {
    let (e, run) = Setup::default()
        .env(&[("LAMBDAWATCH_FLUSH", "periodic,60000")])
        .in_process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let port = e.subscribed(1, Duration::from_secs(5)).await;
    let rid = "bbbbbbbb-0000-4000-8000-000000000002";
    api.events.send(invoke(rid)).await.unwrap();
    post_telemetry(
        port,
        json!([ev("platform.start", json!({"requestId": rid}))]),
    )
    .await;
    wait_until("second /next", Duration::from_secs(5), || {
        seen.lock().unwrap().next_calls.len() == 2
    })
    .await;
    let t = Instant::now();
    api.events
        .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "timeout", "deadlineMs": now_ms() + 600}))
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "finished within deadlineMs: {:?}",
        t.elapsed()
    );
    let spans = cap.spans();
    let (_, s) = spans
        .iter()
        .find(|(_, s)| s.kind == 2)
        .expect("invocation exported");
    assert_eq!(
        get_str(&s.attributes, attr::AWS_LAMBDA_OUTCOME),
        Some("timeout")
    );
    assert_eq!(
        get_bool(&s.attributes, attr::LAMBDAWATCH_INCOMPLETE),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_instances_403_falls_back_to_shutdown_only_and_flushes_continuously() {
    let (e, run) = Setup::default()
        .script(Script {
            reject_invoke: true,
            reject_latest_schema: true,
            ..Script::default()
        })
        .env(&[("LAMBDAWATCH_FLUSH", "periodic,100")])
        .in_process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let port = e.subscribed(2, Duration::from_secs(5)).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.registers.len(), 2);
        assert_eq!(s.registers[1]["events"], json!(["SHUTDOWN"]));
        assert_eq!(
            s.subscriptions[1]["schemaVersion"], "2022-12-13",
            "fallback schema"
        );
    }
    // Two interleaved invocations, no runtimeDone, reports with durationMs only.
    let (a, b) = (
        "cccccccc-0000-4000-8000-000000000003",
        "dddddddd-0000-4000-8000-000000000004",
    );
    post_telemetry(port, json!([
        ev("platform.start", json!({"requestId": a})),
        ev("platform.start", json!({"requestId": b})),
        ev("platform.report", json!({"requestId": b, "status": "success", "metrics": {"durationMs": 5.0}})),
        ev("platform.report", json!({"requestId": a, "status": "error", "errorType": "Boom", "metrics": {"durationMs": 9.0}})),
    ])).await;
    // No INVOKE will ever come: the periodic flush exports on its own.
    assert!(cap.wait_for(Duration::from_secs(3), |c| invocation_ids(c).len() == 2));
    spindown(api, run, 1000, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_not_supported_keeps_going_on_lifecycle_events() {
    let (e, run) = Setup::default()
        .script(Script {
            telemetry_not_supported: true,
            ..Script::default()
        })
        .in_process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    e.next_calls("first /next", 1, Duration::from_secs(5)).await;
    assert_eq!(
        seen.lock().unwrap().subscriptions.len(),
        1,
        "no retry after NotSupported"
    );
    for rid in [
        "eeeeeeee-0000-4000-8000-000000000005",
        "ffffffff-0000-4000-8000-000000000006",
    ] {
        api.events.send(invoke(rid)).await.unwrap();
    }
    wait_until("/next after both", Duration::from_secs(5), || {
        seen.lock().unwrap().next_calls.len() == 3
    })
    .await;
    spindown(api, run, 1000, Duration::from_secs(3)).await;
    let ids = invocation_ids(cap);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (_, s) = cap.spans().into_iter().find(|(_, s)| s.kind == 2).unwrap();
    assert_eq!(
        lambdawatch_semconv::xray::to_hex(&s.trace_id),
        "5759e988bd862e3fe1be46a994272793"
    );
}

/// The last value of a cumulative self counter (`reason`/`signal` label filtered when given).
fn self_counter(cap: &Capture, name: &str, label: Option<(&str, &str)>) -> Option<i64> {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as N};
    cap.metrics()
        .iter()
        .filter(|m| m.name == name)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => Some(s.data_points.clone()),
            _ => None,
        })
        .flatten()
        .filter(|p| label.is_none_or(|(k, v)| get_str(&p.attributes, k) == Some(v)))
        .filter_map(|p| match p.value {
            Some(N::AsInt(i)) => Some(i),
            _ => None,
        })
        .max()
}

/// `AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances` alone (default flush strategy, an
/// API that would accept INVOKE): SHUTDOWN-only registration at once and the continuous flush,
/// which exports without any INVOKE. The self counters are checked exactly against what the
/// capture accepted: received elements, exported spans and logs, one retry after one 503,
/// ignored unknown fields and odd values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_instances_env_var_registers_shutdown_only_and_self_counters_are_exact() {
    let (e, run) = Setup::default()
        .collector(Behaviour::FailFirst(503, 1))
        .env(&[("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")])
        .in_process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let port = e.subscribed(1, Duration::from_secs(5)).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.registers.len(), 1, "no INVOKE attempt first");
        assert_eq!(s.registers[0]["events"], json!(["SHUTDOWN"]));
    }
    let (a, b) = (
        "eeeeeeee-0000-4000-8000-000000000005",
        "ffffffff-0000-4000-8000-000000000006",
    );
    post_telemetry(
        port,
        json!([
            ev(
                "platform.start",
                json!({"requestId": a, "brandNewField": 1})
            ),
            ev("platform.start", json!({"requestId": b})),
            ev(
                "function",
                json!(format!("2024-05-01T10:00:00.000Z\t{a}\tINFO\thello from a"))
            ),
            ev(
                "platform.report",
                json!({"requestId": b, "status": "success", "metrics": {"durationMs": 5.0}})
            ),
            ev(
                "platform.report",
                json!({"requestId": a, "status": "success", "metrics": {"durationMs": "fast"}})
            ),
            ev("platform.notYetInvented", json!({})),
        ]),
    )
    .await;
    assert!(
        cap.wait_for(Duration::from_secs(5), |c| invocation_ids(c).len() == 2),
        "continuous flush without INVOKE"
    );
    assert!(
        seen.lock().unwrap().next_calls.len() <= 1,
        "SHUTDOWN-only: /next waits"
    );
    spindown(api, run, 1500, Duration::from_secs(4)).await;
    use lambdawatch_semconv::metric;
    let c = |name, label| self_counter(cap, name, label);
    // Six elements arrived; the unknown type is received and dropped.
    assert_eq!(c(metric::EXT_RECEIVED, None), Some(6));
    assert_eq!(
        c(
            metric::EXT_DROPPED,
            Some((attr::LAMBDAWATCH_REASON, "unknown_type"))
        ),
        Some(1)
    );
    // Everything but the final flush's own self metrics was exported before the final flush.
    let spans = cap.spans().len() as i64;
    assert!(spans >= 2);
    assert_eq!(
        c(
            metric::EXT_EXPORTED,
            Some((attr::LAMBDAWATCH_SIGNAL, "traces"))
        ),
        Some(spans)
    );
    assert_eq!(cap.logs().len(), 1);
    assert_eq!(
        c(
            metric::EXT_EXPORTED,
            Some((attr::LAMBDAWATCH_SIGNAL, "logs"))
        ),
        Some(1)
    );
    assert_eq!(c(metric::EXT_RETRIES, None), Some(1), "one 503, one retry");
    assert_eq!(
        c(
            metric::EXT_IGNORED,
            Some((attr::LAMBDAWATCH_REASON, "unknown_field"))
        ),
        Some(1)
    );
    assert_eq!(
        c(
            metric::EXT_IGNORED,
            Some((attr::LAMBDAWATCH_REASON, "odd_value"))
        ),
        Some(1)
    );
}

/// The OTLP resource as a user configures it: `OTEL_SERVICE_NAME` names the service,
/// `OTEL_RESOURCE_ATTRIBUTES` adds keys and wins over ours, `faas.instance` is the log stream,
/// the account comes from the register answer; and without `OTEL_SERVICE_NAME` the service is
/// the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_attributes_from_the_environment() {
    use lambdawatch_semconv::otlp::get_i64;
    for service in [Some("checkout-api"), None] {
        let mut env = vec![
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2024/05/01/[$LATEST]0123abcd"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=payments%20core,cloud.region=eu-central-1",
            ),
        ];
        if let Some(s) = service {
            env.push(("OTEL_SERVICE_NAME", s));
        }
        let (e, run) = Setup::default().env(&env).in_process().await;
        let (cap, api) = (&e.cap, &e.api);
        let port = e.subscribed(1, Duration::from_secs(5)).await;
        let rid = "abababab-0000-4000-8000-000000000007";
        api.events.send(invoke(rid)).await.unwrap();
        post_telemetry(
            port,
            json!([
                ev("platform.start", json!({"requestId": rid})),
                ev(
                    "platform.runtimeDone",
                    json!({"requestId": rid, "status": "success"})
                ),
                ev(
                    "platform.report",
                    json!({"requestId": rid, "status": "success", "metrics": {"durationMs": 3.0}})
                ),
            ]),
        )
        .await;
        spindown(api, run, 1500, Duration::from_secs(4)).await;
        let spans = cap.spans();
        let (res, _) = spans
            .iter()
            .find(|(_, s)| get_str(&s.attributes, attr::FAAS_INVOCATION_ID) == Some(rid))
            .expect("invocation span");
        let r = &res.attributes;
        assert_eq!(
            get_str(r, attr::SERVICE_NAME),
            Some(service.unwrap_or("fake-fn"))
        );
        assert_eq!(get_str(r, attr::FAAS_NAME), Some("fake-fn"));
        assert_eq!(
            get_str(r, attr::FAAS_INSTANCE),
            Some("2024/05/01/[$LATEST]0123abcd")
        );
        assert_eq!(get_i64(r, attr::FAAS_MAX_MEMORY), Some(256 * 1_048_576));
        assert_eq!(get_str(r, attr::CLOUD_ACCOUNT_ID), Some("111122223333"));
        assert_eq!(get_str(r, attr::CLOUD_PROVIDER), Some("aws"));
        assert_eq!(get_str(r, "deployment.environment"), Some("prod"));
        assert_eq!(get_str(r, "team"), Some("payments core"), "percent-decoded");
        // OTEL_RESOURCE_ATTRIBUTES wins, once.
        assert_eq!(get_str(r, attr::CLOUD_REGION), Some("eu-central-1"));
        assert_eq!(
            r.iter().filter(|kv| kv.key == attr::CLOUD_REGION).count(),
            1
        );
    }
}

/// The real `lambdawatch-extension` binary, started against the fake API with a clean
/// environment (only what is given), stderr kept for assertions. Killed when dropped.
struct Process {
    child: std::process::Child,
    stderr: tempfile::NamedTempFile,
}

impl Process {
    fn start(api: SocketAddr, otlp: &str, extra: &[(&str, &str)]) -> Process {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lambdawatch-extension"));
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("LAMBDAWATCH_TELEMETRY_LISTENER", "127.0.0.1:0")
            .env("AWS_LAMBDA_FUNCTION_NAME", "fake-fn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr.reopen().unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Process {
            child: cmd.spawn().expect("start lambdawatch-extension"),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// Peak resident set (`VmHWM`, bytes) of the running process.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .expect("VmHWM in /proc status")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    }

    /// Sends a `spindown` SHUTDOWN and waits (bounded) for a clean exit.
    async fn spindown(mut self, api: &FakeApi, budget_ms: u64, wait: Duration) -> String {
        api.events
            .send(json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms() + budget_ms}))
            .await
            .unwrap();
        let end = Instant::now() + wait;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "extension exit {st:?}: {}", self.stderr());
                return self.stderr();
            }
            assert!(
                Instant::now() < end,
                "extension did not exit after SHUTDOWN: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port with nothing listening on it (a dead collector until a capture binds it).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The `dropped{reason}` self counter as carried by each metrics request, in arrival order.
fn dropped_per_request(cap: &Capture, reason: &str) -> Vec<Option<i64>> {
    use lambdawatch_semconv::metric;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as N};
    use prost::Message;
    cap.requests()
        .iter()
        .filter(|r| r.path == "/v1/metrics")
        .map(|r| {
            let req = ExportMetricsServiceRequest::decode(r.body.as_slice()).unwrap();
            req.resource_metrics
                .into_iter()
                .flat_map(|rm| rm.scope_metrics)
                .flat_map(|sm| sm.metrics)
                .filter(|m| m.name == metric::EXT_DROPPED)
                .filter_map(|m| match m.data {
                    Some(Data::Sum(s)) => Some(s.data_points),
                    _ => None,
                })
                .flatten()
                .filter(|p| get_str(&p.attributes, attr::LAMBDAWATCH_REASON) == Some(reason))
                .find_map(|p| match p.value {
                    Some(N::AsInt(i)) => Some(i),
                    _ => None,
                })
        })
        .collect()
}

fn body_text(r: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as A;
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(A::StringValue(s)) => s.clone(),
        other => panic!("log body is not a string: {other:?}"),
    }
}

/// The real process with `LAMBDAWATCH_BUFFER_MAX_ITEMS=5` and a collector that refuses
/// connections: 2,000 log lines of one invocation arrive in one POST, the 1,995 oldest are
/// dropped, the function's `/next` is not held by the dead collector, a clear line says the
/// export failed. When the collector comes back, exactly the 5 newest lines arrive, and the first
/// self-metrics it receives say `dropped{reason=buffer_full}` = 1,995; peak RSS stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_dead_collector_drops_oldest_counts_exactly_and_does_not_hold_the_function() {
    dead_collector_run(("LAMBDAWATCH_BUFFER_MAX_ITEMS", "5"), Some(5)).await;
}

/// The same with the byte limit (`LAMBDAWATCH_BUFFER_MAX_BYTES=1024`, its minimum): some of the
/// newest lines survive (how many depends on their encoded size), they are the newest ones in
/// order, and the drop counter is exactly the input minus what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_dead_collector_byte_limit_drops_oldest_and_counts_the_rest() {
    dead_collector_run(("LAMBDAWATCH_BUFFER_MAX_BYTES", "1024"), None).await;
}

/// 2,000 lines of one invocation into a buffer limited by `limit` while the collector refuses
/// connections; `kept` is how many must survive when known.
async fn dead_collector_run(limit: (&str, &str), kept: Option<usize>) {
    let port = dead_port();
    // The fake API's own capture is unused here (the collector is the dead port).
    let (e, proc) = Setup::default()
        .otlp(format!("http://127.0.0.1:{port}"))
        .env(&[limit, ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")])
        .process()
        .await;
    let (unused, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let listener = e.ready().await;
    let a = "a0a0a0a0-0000-4000-8000-000000000001";
    api.events.send(invoke(a)).await.unwrap();
    let mut batch = vec![ev("platform.start", json!({"requestId": a}))];
    const LINES: usize = 2_000;
    for i in 0..LINES {
        batch.push(ev(
            "function",
            json!(format!("2024-05-01T10:00:00.000Z\t{a}\tINFO\tline {i:04}")),
        ));
    }
    batch.push(ev(
        "platform.runtimeDone",
        json!({"requestId": a, "status": "success"}),
    ));
    let posted = Instant::now();
    post_telemetry(listener, Value::Array(batch)).await;
    wait_until("/next after runtimeDone", Duration::from_secs(5), || {
        seen.lock().unwrap().next_calls.len() == 2
    })
    .await;
    let held = seen.lock().unwrap().next_calls[1].0 - posted;
    assert!(
        held < Duration::from_millis(800),
        "a refusing collector held /next for {held:?}"
    );
    // The export goes on retrying in the background until its timeout, then says so.
    wait_until("the export-failed line", Duration::from_secs(5), || {
        proc.stderr().contains("export failed")
    })
    .await;
    assert!(unused.requests().is_empty());
    // The collector comes back; the next invocation's flush carries what survived.
    let cap = Capture::start_on(port, Behaviour::Accept);
    let b = "b0b0b0b0-0000-4000-8000-000000000002";
    api.events.send(invoke(b)).await.unwrap();
    post_telemetry(
        listener,
        json!([
            ev("platform.start", json!({"requestId": b})),
            ev(
                "platform.runtimeDone",
                json!({"requestId": b, "status": "success"})
            ),
        ]),
    )
    .await;
    assert!(
        cap.wait_for(Duration::from_secs(10), |c| !c.logs().is_empty()
            && !dropped_per_request(c, "buffer_full").is_empty()),
        "nothing arrived after the collector came back: {}",
        proc.stderr()
    );
    let rss = proc.peak_rss();
    assert!(rss < 32 * 1024 * 1024, "peak RSS {rss} bytes");
    let err = proc.spindown(api, 1500, Duration::from_secs(5)).await;
    // The body is the whole line; its message is after the last tab.
    let bodies: Vec<String> = cap
        .logs()
        .iter()
        .map(|r| body_text(r).rsplit('\t').next().unwrap().to_owned())
        .collect();
    let n = bodies.len();
    if let Some(k) = kept {
        assert_eq!(n, k, "{limit:?}: {bodies:?}");
    }
    assert!((1..LINES).contains(&n), "{limit:?}: {n} lines kept");
    let want: Vec<String> = (LINES - n..LINES).map(|i| format!("line {i:04}")).collect();
    assert_eq!(bodies, want, "the oldest were dropped, the newest kept");
    let first = dropped_per_request(&cap, "buffer_full")[0];
    assert_eq!(
        first,
        Some((LINES - n) as i64),
        "{LINES} lines, {n} kept under {limit:?}: {err}"
    );
}

/// The real process, default (adaptive) flush, rare invocations: each invocation's log lines
/// have reached the collector before the extension asks `/event/next`, and the invocation span
/// (complete at its late `platform.report`) before the `/next` that follows it. The register
/// answer carries no account here, so `cloud.account.id` on every exported resource (spans,
/// metrics, logs) comes from the INVOKE's `invokedFunctionArn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_adaptive_flush_exports_before_next_with_account_on_the_resource() {
    let (e, proc) = Setup::default()
        .script(Script {
            omit_account: true,
            ..Script::default()
        })
        .process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    let listener = e.ready().await;
    collector_proven(cap).await;
    let ids = [
        "c0c0c0c0-0000-4000-8000-000000000003",
        "d0d0d0d0-0000-4000-8000-000000000004",
    ];
    let mut prev: Option<&str> = None;
    for (n, rid) in ids.iter().enumerate() {
        api.events.send(invoke(rid)).await.unwrap();
        let mut batch = Vec::new();
        if let Some(p) = prev {
            batch.push(ev(
                "platform.report",
                json!({"requestId": p, "status": "success", "metrics": {"durationMs": 4.0, "billedDurationMs": 5, "memorySizeMB": 128, "maxMemoryUsedMB": 40}}),
            ));
        }
        batch.push(ev("platform.start", json!({"requestId": rid})));
        for i in 0..3 {
            batch.push(ev(
                "function",
                json!(format!(
                    "2024-05-01T10:00:00.000Z\t{rid}\tINFO\tinv {n} line {i}"
                )),
            ));
        }
        batch.push(ev(
            "platform.runtimeDone",
            json!({"requestId": rid, "status": "success"}),
        ));
        post_telemetry(listener, Value::Array(batch)).await;
        wait_until("/next after runtimeDone", Duration::from_secs(5), || {
            seen.lock().unwrap().next_calls.len() == n + 2
        })
        .await;
        let (logs, spans) = {
            let s = seen.lock().unwrap();
            (s.next_calls[n + 1].1, s.next_spans[n + 1])
        };
        assert_eq!(
            logs,
            3 * (n + 1),
            "invocation {n}: logs exported before /next"
        );
        assert_eq!(
            spans, n,
            "invocation {n}: the previous invocation's span exported before /next"
        );
        prev = Some(rid);
    }
    proc.spindown(api, 1500, Duration::from_secs(5)).await;
    assert_eq!(invocation_ids(cap), ids.to_vec());
    let resources = cap.resources();
    for signal in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        assert!(resources.iter().any(|(p, _)| p == signal), "{signal}");
    }
    for (path, res) in &resources {
        assert_eq!(
            get_str(&res.attributes, attr::CLOUD_ACCOUNT_ID),
            Some("111122223333"),
            "account on every exported resource ({path})"
        );
    }
}

/// The real process against an API answering `Telemetry.NotSupported` (the RIE's classic mode):
/// it says so exactly once on stderr, keeps going on lifecycle events, and exports one span per
/// INVOKE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_telemetry_not_supported_is_said_once() {
    let (e, proc) = Setup::default()
        .script(Script {
            telemetry_not_supported: true,
            ..Script::default()
        })
        .process()
        .await;
    let (cap, api, seen) = (&e.cap, &e.api, e.seen.clone());
    e.next_calls("first /next", 1, Duration::from_secs(10))
        .await;
    let ids = [
        "e0e0e0e0-0000-4000-8000-000000000005",
        "f0f0f0f0-0000-4000-8000-000000000006",
        "a1a1a1a1-0000-4000-8000-000000000007",
    ];
    for (n, rid) in ids.iter().enumerate() {
        api.events.send(invoke(rid)).await.unwrap();
        wait_until("/next", Duration::from_secs(5), || {
            seen.lock().unwrap().next_calls.len() == n + 2
        })
        .await;
    }
    let err = proc.spindown(api, 1500, Duration::from_secs(5)).await;
    let said = err
        .lines()
        .filter(|l| l.contains("Telemetry API not supported here"))
        .count();
    assert_eq!(said, 1, "said once: {err}");
    assert_eq!(seen.lock().unwrap().subscriptions.len(), 1);
    assert_eq!(invocation_ids(cap), ids.to_vec());
}

/// Fail open, first invocation included: against a collector that has never answered (one that
/// refuses connections, one that accepts and never answers), with `LAMBDAWATCH_FLUSH=end` (the
/// policy that holds the most), the extension goes back to `/next` right after each INVOKE,
/// without waiting for `platform.runtimeDone` (which never comes here) or for an export; what
/// it has goes out in the background. A policy that trusted the collector until proven wrong
/// would hold the first invocation until its deadline (3 s) plus grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_collector_never_answered_never_holds_next_even_the_first_invocation() {
    let black_hole = Capture::start(Behaviour::Hang);
    for (what, otlp) in [
        ("refusing", format!("http://127.0.0.1:{}", dead_port())),
        ("black-holed", black_hole.base()),
    ] {
        let (e, proc) = Setup::default()
            .otlp(otlp)
            .env(&[("LAMBDAWATCH_FLUSH", "end")])
            .process()
            .await;
        let (unused, api, seen) = (&e.cap, &e.api, e.seen.clone());
        let listener = e.ready().await;
        let ids = [
            "a2a2a2a2-0000-4000-8000-000000000008",
            "b2b2b2b2-0000-4000-8000-000000000009",
            "c2c2c2c2-0000-4000-8000-00000000000a",
        ];
        for (n, rid) in ids.iter().enumerate() {
            let sent = Instant::now();
            api.events.send(invoke(rid)).await.unwrap();
            post_telemetry(
                listener,
                json!([
                    ev("platform.start", json!({"requestId": rid})),
                    ev(
                        "function",
                        json!(format!("2024-05-01T10:00:00.000Z\t{rid}\tINFO\tworking"))
                    ),
                ]),
            )
            .await;
            wait_until("/next without runtimeDone", Duration::from_secs(1), || {
                seen.lock().unwrap().next_calls.len() == n + 2
            })
            .await;
            let held = seen.lock().unwrap().next_calls[n + 1].0 - sent;
            assert!(
                held < Duration::from_millis(500),
                "{what} collector, invocation {n}: /next after {held:?}"
            );
        }
        let err = proc.spindown(api, 1500, Duration::from_secs(5)).await;
        assert!(unused.requests().is_empty(), "{what}: {err}");
    }
    assert!(black_hole.requests().is_empty());
}
