//! Sinks and the dispatcher against real HTTP servers on 127.0.0.1: a capture server that records
//! every request, a dead port (connection refused) and a black hole (accepts, never answers).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

mod common;

use common::capture_server;
use hmac::{Hmac, Mac};
use lambdawatch_collector::alerting::alert::{
    Alert, AlertStatus, Evidence, Fingerprint, FunctionLabels, RunbookPage,
};
use lambdawatch_collector::alerting::sinks::{
    AlertmanagerConfig, AlertmanagerSink, DeliveryResult, Dispatcher, DispatcherConfig,
    RetryPolicy, SIGNATURE_HEADER, WebhookConfig, WebhookSink,
};
use lambdawatch_collector::slo::spec::{Severity, SloSpec};
use sha2::Sha256;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A port nothing listens on (bound, then released).
async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// Accepts connections and never answers; reports each accepted connection.
async fn black_hole() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = tx.try_send(());
        }
    });
    (addr, rx)
}

fn alert(function: &str, status: AlertStatus) -> Alert {
    let spec = SloSpec::embedded_default();
    let slo = &spec.slos[1];
    let key = FunctionLabels {
        function: function.to_owned(),
        version: "7".to_owned(),
        region: "us-east-1".to_owned(),
        account: "000000000000".to_owned(),
    };
    let starts_at = SystemTime::now() - Duration::from_secs(60);
    Alert {
        fingerprint: Fingerprint::compute(&slo.name, &key, Severity::Page),
        status,
        starts_at,
        ends_at: (status == AlertStatus::Resolved).then(SystemTime::now),
        labels: Alert::slo_labels(slo, &key, Severity::Page),
        summary: format!("{function}: error budget burning"),
        description: "test".to_owned(),
        evidence: Evidence {
            sli: 0.9,
            objective: 0.999,
            burn_rate_long: Some(100.0),
            burn_rate_short: Some(100.0),
            long_window: Duration::from_secs(3600),
            short_window: Duration::from_secs(300),
            factor: 14.4,
            budget_consumed: 0.14,
            time_to_exhaustion: Some(Duration::from_secs(3600)),
            good: 90,
            total: 100,
        },
        runbook_url: spec.defaults.runbook_url(RunbookPage::ErrorRate),
    }
}

fn webhook(addr: SocketAddr, secret: Option<&str>, timeout: Duration) -> WebhookSink {
    WebhookSink::new(WebhookConfig {
        url: format!("http://{addr}/hook"),
        secret: secret.map(str::to_owned),
        timeout,
    })
    .expect("webhook config")
}

fn fast_retries() -> DispatcherConfig {
    DispatcherConfig {
        queue_capacity: 16,
        max_batch: 16,
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            multiplier: 2.0,
            max_delay: Duration::from_millis(100),
            max_attempts: 3,
        },
    }
}

async fn recv_within<T>(rx: &mut mpsc::Receiver<T>, limit: Duration) -> T {
    tokio::time::timeout(limit, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived within {limit:?}"))
        .expect("server stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_body_is_signed_and_the_signature_verifies_independently() {
    let (addr, mut rx) = capture_server().await;
    let secret = "s3cret-key";
    let mut dispatcher = Dispatcher::new(fast_retries());
    dispatcher.add_sink(webhook(addr, Some(secret), Duration::from_secs(5)));
    let sent = alert("checkout", AlertStatus::Firing);
    dispatcher.dispatch(sent.clone());
    let got = recv_within(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(got.path, "/hook");
    let header = got
        .headers
        .iter()
        .find(|(k, _)| k == SIGNATURE_HEADER)
        .map(|(_, v)| v.clone())
        .expect("signature header present");
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(&got.body);
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    mac.verify_slice(&raw)
        .expect("signature verifies over the received bytes");
    // A different secret does not verify.
    let mut wrong = Hmac::<Sha256>::new_from_slice(b"other").expect("key");
    wrong.update(&got.body);
    assert!(wrong.verify_slice(&raw).is_err());

    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json body");
    assert_eq!(body["version"], "1");
    let a = &body["alerts"][0];
    assert_eq!(a["fingerprint"], sent.fingerprint.as_str());
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["function"], "checkout");
    assert_eq!(a["labels"]["slo"], "error_rate");
    assert_eq!(a["evidence"]["total"], 100);
    assert!(
        a["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/error-rate.md"))
    );
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_webhook_sends_no_signature() {
    let (addr, mut rx) = capture_server().await;
    let mut dispatcher = Dispatcher::new(fast_retries());
    dispatcher.add_sink(webhook(addr, None, Duration::from_secs(5)));
    dispatcher.dispatch(alert("a", AlertStatus::Resolved));
    let got = recv_within(&mut rx, Duration::from_secs(5)).await;
    assert!(got.headers.iter().all(|(k, _)| k != SIGNATURE_HEADER));
    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert!(body["alerts"][0]["ends_at"].is_string());
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_and_a_hung_sink_never_delay_the_live_one() {
    let (live_addr, mut live) = capture_server().await;
    let dead_addr = dead_port().await;
    let (hole_addr, mut hole) = black_hole().await;
    let mut dispatcher = Dispatcher::new(fast_retries());
    dispatcher.add_sink(webhook(dead_addr, None, Duration::from_secs(2)).named("dead"));
    dispatcher.add_sink(webhook(hole_addr, None, Duration::from_secs(30)).named("hung"));
    dispatcher.add_sink(webhook(live_addr, None, Duration::from_secs(5)).named("live"));
    let counters = dispatcher.counters();

    let started = Instant::now();
    for name in ["f1", "f2", "f3"] {
        dispatcher.dispatch(alert(name, AlertStatus::Firing));
    }
    let mut functions = Vec::new();
    while functions.len() < 3 {
        let got = recv_within(&mut live, Duration::from_secs(2)).await;
        let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
        for a in body["alerts"].as_array().expect("alerts array") {
            functions.push(a["labels"]["function"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(functions, ["f1", "f2", "f3"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "live sink took {:?}",
        started.elapsed()
    );
    // The hung sink really is stuck in a request.
    recv_within(&mut hole, Duration::from_secs(2)).await;

    // The dead sink: 3 attempts (2 retries), then given up — counted per alert.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.get("dead", DeliveryResult::Failed) < 3 {
        assert!(
            Instant::now() < deadline,
            "dead sink failures not counted: {:?}",
            counters.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counters.get("live", DeliveryResult::Success), 3);
    assert_eq!(counters.get("dead", DeliveryResult::Success), 0);
    assert_eq!(counters.get("dead", DeliveryResult::Failed), 3);
    // However the three alerts were batched, each went through 3 attempts: 2 retries apiece.
    assert_eq!(counters.get("dead", DeliveryResult::Retry), 6);
    assert_eq!(counters.get("hung", DeliveryResult::Success), 0);

    // Shutdown cannot wait for the hung sink: it gives up at the deadline and counts it.
    let t = Instant::now();
    assert!(!dispatcher.shutdown(Duration::from_millis(300)).await);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        counters.get("hung", DeliveryResult::Failed),
        3,
        "{:?}",
        counters.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_and_counts_it() {
    let (hole_addr, mut hole) = black_hole().await;
    let config = DispatcherConfig {
        queue_capacity: 2,
        max_batch: 1,
        ..fast_retries()
    };
    let mut dispatcher = Dispatcher::new(config);
    dispatcher.add_sink(webhook(hole_addr, None, Duration::from_secs(30)).named("hung"));
    let counters = dispatcher.counters();
    dispatcher.dispatch(alert("first", AlertStatus::Firing));
    // The sink task has taken "first" and is stuck sending it.
    recv_within(&mut hole, Duration::from_secs(2)).await;
    for name in ["a", "b", "c", "d"] {
        dispatcher.dispatch(alert(name, AlertStatus::Firing));
    }
    assert_eq!(counters.get("hung", DeliveryResult::Dropped), 2);
    assert!(!dispatcher.shutdown(Duration::from_millis(100)).await);
    // "first" was in flight, "c" and "d" still queued: all abandoned at shutdown.
    assert_eq!(
        counters.get("hung", DeliveryResult::Failed),
        3,
        "{:?}",
        counters.snapshot()
    );
    assert_eq!(counters.get("hung", DeliveryResult::Success), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_sink_posts_the_v2_array() {
    let (addr, mut rx) = capture_server().await;
    let sink = AlertmanagerSink::new(AlertmanagerConfig {
        url: format!("http://{addr}"),
        resend_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        generator_url: None,
    })
    .expect("config");
    let mut dispatcher = Dispatcher::new(fast_retries());
    dispatcher.add_sink(sink);
    dispatcher.dispatch(alert("checkout", AlertStatus::Firing));
    let got = recv_within(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(got.path, "/api/v2/alerts");
    assert!(
        got.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    let first = &body[0];
    assert_eq!(first["labels"]["alertname"], "LambdawatchErrorBudgetBurn");
    assert_eq!(first["labels"]["severity"], "page");
    assert!(
        first["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("error-rate.md"))
    );
    assert_eq!(first["annotations"]["total"], "100");
    assert!(first["startsAt"].is_string() && first["endsAt"].is_string());
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
}
