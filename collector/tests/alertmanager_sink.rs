//! The Alertmanager sink against a real Alertmanager (Debian `prometheus-alertmanager`) routing
//! to a webhook receiver run by this test: one incident — sent firing, re-sent while firing as
//! the state machine does, then resolved — must reach the receiver as exactly one firing and one
//! resolved notification.
//!
//! Needs `/usr/bin/prometheus-alertmanager` (`apt-get install prometheus-alertmanager`, done by
//! `./scripts/test.sh`); panics with that instruction when it is missing, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

mod common;

use common::{Captured, capture_server, free_port, http_get_status};
use lambdawatch_collector::alerting::alert::{
    Alert, AlertStatus, Evidence, Fingerprint, FunctionLabels, RunbookPage,
};
use lambdawatch_collector::alerting::sinks::{AlertmanagerConfig, AlertmanagerSink, Sink};
use lambdawatch_collector::slo::spec::{Severity, SloSpec};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// The Alertmanager process, killed (by its own pid) when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_alertmanager(dir: &Path, port: u16, hook: SocketAddr) -> Running {
    assert!(
        Path::new(ALERTMANAGER).is_file(),
        "peer prometheus-alertmanager missing ({ALERTMANAGER} not found): run ./scripts/test.sh \
         or `apt-get install prometheus-alertmanager`"
    );
    let config = format!(
        "global:\n  resolve_timeout: 5s\n\
         route:\n  receiver: hook\n  group_by: [alertname, function, slo]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook}/hook\n        \
         send_resolved: true\n"
    );
    let config_path = dir.join("alertmanager.yml");
    std::fs::write(&config_path, config).expect("write alertmanager.yml");
    let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log file");
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start prometheus-alertmanager");
    Running(child)
}

fn incident(status: AlertStatus, starts_at: SystemTime) -> Alert {
    let spec = SloSpec::embedded_default();
    let slo = &spec.slos[1];
    let key = FunctionLabels {
        function: "checkout".to_owned(),
        version: "7".to_owned(),
        region: "eu-west-1".to_owned(),
        account: "123456789012".to_owned(),
    };
    Alert {
        fingerprint: Fingerprint::compute(&slo.name, &key, Severity::Page),
        status,
        starts_at,
        ends_at: (status == AlertStatus::Resolved).then(SystemTime::now),
        labels: Alert::slo_labels(slo, &key, Severity::Page),
        summary: "checkout: error budget burning 100× too fast".to_owned(),
        description: "10 of 100 invocations failed over 1h".to_owned(),
        evidence: Evidence {
            sli: 0.9,
            objective: 0.999,
            burn_rate_long: Some(100.0),
            burn_rate_short: Some(120.0),
            long_window: Duration::from_secs(3600),
            short_window: Duration::from_secs(300),
            factor: 14.4,
            budget_consumed: 0.14,
            time_to_exhaustion: Some(Duration::from_secs(6 * 3600)),
            good: 90,
            total: 100,
        },
        runbook_url: spec.defaults.runbook_url(RunbookPage::ErrorRate),
    }
}

/// Every alert in webhook notifications received until `until` says stop, or the deadline.
async fn collect(
    rx: &mut mpsc::Receiver<Captured>,
    notifications: &mut Vec<serde_json::Value>,
    deadline: Duration,
    until: impl Fn(&[serde_json::Value]) -> bool,
) {
    let end = Instant::now() + deadline;
    while !until(notifications) {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(c)) => {
                assert_eq!(c.path, "/hook");
                notifications.push(serde_json::from_slice(&c.body).expect("webhook JSON"));
            }
            Ok(None) => panic!("capture server stopped"),
            Err(_) => return,
        }
    }
}

fn statuses(notifications: &[serde_json::Value]) -> Vec<String> {
    notifications
        .iter()
        .map(|n| n["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_incident_is_one_firing_and_one_resolved_notification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, mut rx) = capture_server().await;
    let port = free_port().await;
    let _am = start_alertmanager(dir.path(), port, hook);
    let am_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = || std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();

    let ready_by = Instant::now() + Duration::from_secs(30);
    while http_get_status(am_addr, "/-/ready").await != Some(200) {
        assert!(
            Instant::now() < ready_by,
            "Alertmanager not ready in 30 s:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sink = AlertmanagerSink::new(AlertmanagerConfig {
        url: format!("http://{am_addr}"),
        resend_interval: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        generator_url: Some("http://collector.test:9464/".to_owned()),
    })
    .expect("sink config");
    let starts_at = SystemTime::now();
    let firing = incident(AlertStatus::Firing, starts_at);
    sink.deliver(std::slice::from_ref(&firing))
        .await
        .expect("firing accepted by Alertmanager");

    let mut notifications = Vec::new();
    collect(&mut rx, &mut notifications, Duration::from_secs(20), |n| {
        !n.is_empty()
    })
    .await;
    assert_eq!(
        statuses(&notifications),
        ["firing"],
        "alertmanager log:\n{}",
        log()
    );
    let alert = notifications[0]["alerts"][0].clone();
    assert_eq!(alert["labels"]["alertname"], "LambdawatchErrorBudgetBurn");
    assert_eq!(alert["labels"]["function"], "checkout");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        firing.runbook_url.as_str()
    );
    assert_eq!(alert["annotations"]["burn_rate_long"], "100");
    assert_eq!(alert["annotations"]["total"], "100");
    assert_eq!(alert["generatorURL"], "http://collector.test:9464/");

    // The state machine re-sends while firing (every resend interval): no new notification.
    for _ in 0..3 {
        sink.deliver(std::slice::from_ref(&firing))
            .await
            .expect("re-send accepted");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let resolved = incident(AlertStatus::Resolved, starts_at);
    sink.deliver(std::slice::from_ref(&resolved))
        .await
        .expect("resolve accepted");
    collect(&mut rx, &mut notifications, Duration::from_secs(20), |n| {
        n.len() >= 2
    })
    .await;
    // Quiet period: several group intervals with nothing more arriving.
    collect(&mut rx, &mut notifications, Duration::from_secs(4), |n| {
        n.len() >= 3
    })
    .await;
    assert_eq!(
        statuses(&notifications),
        ["firing", "resolved"],
        "notifications: {notifications:#?}\nalertmanager log:\n{}",
        log()
    );
    let resolved_alert = &notifications[1]["alerts"][0];
    assert_eq!(resolved_alert["status"], "resolved");
    assert_eq!(resolved_alert["fingerprint"], alert["fingerprint"]);
    assert_eq!(resolved_alert["startsAt"], alert["startsAt"]);
}
