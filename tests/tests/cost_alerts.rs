//! Cost alerts end to end: a real `lambdawatch-collector serve` with a monthly budget (env
//! `LAMBDAWATCH_COST_BUDGET_USD`), per-function budgets, a 1 s evaluation interval and a 3 s
//! `for:` (`LAMBDAWATCH_ALERT_FOR`), fed OTLP/HTTP invocation spans, delivering to a webhook
//! receiver; checkpoints in DynamoDB (`moto_server`, PyPI `moto[server]`).
//!
//! - The budget cost surprise of `orders` is active in `/api/v1/cost` (pending in the alert state
//!   machine) and reaches the webhook only after `for:`, exactly once, with its evidence (the
//!   30-day projection, the budget, their ratio; no hour-of-week baseline yet). `quiet`, with
//!   the same traffic under a budget it does not reach, never alerts.
//! - `quiet` has provisioned concurrency configured (`LAMBDAWATCH_COST_PROVISIONED_CONCURRENCY`):
//!   its day cost in `/api/v1/cost` includes the standing charge, checked by hand.
//! - Repeated request ids (20 of 120) fire `LambdawatchRetryStorm` once, with the retry
//!   fraction as evidence.
//! - SIGKILL (no graceful shutdown) and a restart with the same task id: the retry tracker's
//!   ids and the surprise detector's state come back from the checkpoint (`/api/v1/cost` shows
//!   the same retries and window; a retry straddling the restart counts), and the webhook gets
//!   neither a second firing nor a resolution.
//! - The DLQ redrive backlog "where known": `moto_server` holds SQS
//!   `ApproximateNumberOfMessagesVisible` data points of the function's DLQ; the CloudWatch
//!   poller reads them in its `GetMetricData` calls and the newest reading appears in
//!   `/api/v1/cost` (`retry.dlq`), on `/metrics` (`lambdawatch_dlq_redrive_backlog_messages`,
//!   `promtool check metrics` clean) and in the retry-storm notification.
//!
//! Every peer is required; a missing one fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lambdawatch_tests::moto::{Moto, boto3};
use lambdawatch_tests::{Child, http, wait_until, workspace_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const TASK_ID: &str = "cost-slot-a";
const FOR: Duration = Duration::from_secs(3);
const BUDGET_USD: f64 = 100.0;

/// The alerts a webhook receiver got, with their arrival time, in order.
type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver: every alert of every POST with its arrival time, in order.
fn webhook_receiver() -> (String, Received) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let addr = lambdawatch_tests::webhook::serve(move |body| {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let now = Instant::now();
            let mut g = sink.lock().unwrap();
            for a in v["alerts"].as_array().cloned().unwrap_or_default() {
                g.push((now, a));
            }
        }
    });
    (addr, got)
}

struct Collector {
    child: Child,
    otlp: String,
    admin: String,
}

fn start_collector(moto: &str, hook: &str) -> Collector {
    start_collector_with(
        moto,
        hook,
        &[
            (
                "LAMBDAWATCH_CHECKPOINT",
                "dynamodb://lambdawatch-checkpoints",
            ),
            ("LAMBDAWATCH_CHECKPOINT_INTERVAL", "1s"),
        ],
    )
}

fn start_collector_with(moto: &str, hook: &str, extra: &[(&str, &str)]) -> Collector {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "3s")
        .env("LAMBDAWATCH_ALERT_RESEND", "10m")
        .env(
            "LAMBDAWATCH_CHECKPOINT",
            "dynamodb://lambdawatch-checkpoints",
        )
        .env("LAMBDAWATCH_CHECKPOINT_INTERVAL", "1s")
        .env("LAMBDAWATCH_COST_BUDGET_USD", BUDGET_USD.to_string())
        // The budget's warm-up (default 1 h) shortened so seconds of traffic may alert.
        .env("LAMBDAWATCH_COST_BUDGET_WARMUP", "1s")
        .env("LAMBDAWATCH_COST_BUDGETS", "quiet=1000000000000")
        .env("LAMBDAWATCH_COST_PROVISIONED_CONCURRENCY", "quiet=2")
        .env("LAMBDAWATCH_WEBHOOK_URL", format!("http://{hook}/"))
        .env("LAMBDAWATCH_TASK_ID", TASK_ID)
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_LOG", "info")
        .envs(extra.iter().copied());
    let child = Child::spawn("collector", &mut cmd);
    let line = child.wait_for_line("listening line", Duration::from_secs(30), |l| {
        l.contains("listening otlp_grpc=")
    });
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    Collector {
        otlp: field("otlp_http"),
        admin: field("admin"),
        child,
    }
}

/// One invocation span per request id of `function` (1024 MB, 60 s billed), as OTLP/JSON.
fn send_invocations(otlp: &str, function: &str, ids: &[String]) {
    let kv = |k: &str, v: Value| json!({"key": k, "value": v});
    let s = |v: &str| json!({"stringValue": v});
    let resource = json!({"attributes": [
        kv("service.name", s(function)), kv("faas.name", s(function)), kv("faas.version", s("1")),
        kv("cloud.region", s("us-east-1")), kv("cloud.account.id", s("123456789012")),
        kv("aws.lambda.architecture", s("x86_64")),
    ]});
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "traceId": format!("{:032x}", (ns as u128) << 16 | i as u128),
                "spanId": format!("{:016x}", i + 1), "name": function, "kind": 2,
                "startTimeUnixNano": (ns - 60_000_000_000).to_string(), "endTimeUnixNano": ns.to_string(),
                "attributes": [
                    kv("lambdawatch.span.type", s("invocation")),
                    kv("faas.invocation_id", s(id)),
                    kv("aws.lambda.outcome", s("success")),
                    kv("aws.lambda.duration_ms", json!({"doubleValue": 59_990.0})),
                    kv("aws.lambda.billed_duration_ms", json!({"intValue": "60000"})),
                    kv("aws.lambda.memory_size_mb", json!({"intValue": "1024"})),
                ]
            })
        })
        .collect();
    let body = json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/traces"), &body, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// `function`'s row of `/api/v1/cost`, once evaluated.
fn cost_row(admin: &str, function: &str) -> Option<Value> {
    let d = http::get(&format!("http://{admin}/api/v1/cost"), T)
        .ok()?
        .json();
    d["functions"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)
        .cloned()
}

/// The notifications of `slo` for `function` with `status`, with their arrival time.
fn notes(got: &Received, function: &str, slo: &str, status: &str) -> Vec<(Instant, Value)> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(_, a)| {
            a["labels"]["function"] == function
                && a["labels"]["slo"] == slo
                && a["status"] == status
        })
        .cloned()
        .collect()
}

fn successful_writes(admin: &str) -> u64 {
    let text = http::get(&format!("http://{admin}/metrics"), T)
        .unwrap()
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("lambdawatch_checkpoint_writes_total{result=\"success\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn budget_surprise_and_retry_storm_fire_once_after_for_and_survive_a_restart() {
    let m: Moto = lambdawatch_tests::moto::start();
    boto3(
        &m.url,
        "d=boto3.client('dynamodb',**kw)\n\
         d.create_table(TableName='lambdawatch-checkpoints', BillingMode='PAY_PER_REQUEST',\n\
         \x20   KeySchema=[{'AttributeName':'pk','KeyType':'HASH'}],\n\
         \x20   AttributeDefinitions=[{'AttributeName':'pk','AttributeType':'S'}])",
    );
    let (hook, got) = webhook_receiver();
    let mut a = start_collector(&m.url, &hook);

    // 100 first attempts of each function, then 20 of `orders`' ids again (async retries keep
    // the request id): 20 / 120 = 16.7 % retries, over the 5 % threshold with ≥ 10 repeats.
    let orders = ids("orders-req", 0..100);
    send_invocations(&a.otlp, "orders", &orders);
    send_invocations(&a.otlp, "quiet", &ids("quiet-req", 0..100));
    send_invocations(&a.otlp, "orders", &orders[..20]);

    // Both conditions hold at an evaluation: the alerts are pending from here.
    let (active_at, row) = wait_until(
        "orders' budget surprise and retry storm active in /api/v1/cost",
        Duration::from_secs(20),
        || {
            let row = cost_row(&a.admin, "orders")?;
            (row["surprise"]["budget_alert"] == true && row["retry"]["alert"] == true)
                .then(|| (Instant::now(), row))
        },
    );
    let projected = row["projected_30d_usd"].as_f64().unwrap();
    assert!(projected > BUDGET_USD, "{row}");
    assert_eq!(row["surprise"]["budget_usd"], json!(BUDGET_USD));
    assert_eq!(row["retry"]["retries"], json!(20.0));
    assert_eq!(row["retry"]["invocations"], json!(120.0));
    assert!(
        notes(&got, "orders", "cost_surprise", "firing").is_empty()
            && notes(&got, "orders", "retry_storm", "firing").is_empty(),
        "nothing sent while pending"
    );
    let quiet = cost_row(&a.admin, "quiet").expect("quiet priced");
    assert_eq!(quiet["surprise"]["budget_alert"], false, "{quiet}");
    assert!(quiet["projected_30d_usd"].as_f64().unwrap() > BUDGET_USD);
    // `quiet` has 2 units of provisioned concurrency configured (env): today's cost is its 100
    // invocations at list price (100 × 1 GB × 60 s × $0.0000166667 + 100 × $0.20/M) plus the
    // standing charge since 00:00 UTC (2 × 1 GB × seconds × $0.0000041667), by hand.
    let doc = http::get(&format!("http://{}/api/v1/cost", a.admin), T)
        .unwrap()
        .json();
    let quiet = doc["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "quiet")
        .unwrap();
    assert_eq!(quiet["provisioned_concurrency"], 2, "{quiet}");
    let since_midnight = (doc["evaluated_at_unix"].as_u64().unwrap() % 86_400) as f64;
    let want =
        100.0 * 60.0 * 0.0000166667 + 100.0 * 0.0000002 + 2.0 * since_midnight * 0.0000041667;
    let today = quiet["today_usd"].as_f64().unwrap();
    assert!(
        (today - want).abs() < 1e-6,
        "today ${today}, by hand ${want}"
    );

    // Firing after `for:` (3 s; the evaluation runs every second).
    let fired = |slo: &str| {
        wait_until(
            &format!("the {slo} notification"),
            Duration::from_secs(20),
            || notes(&got, "orders", slo, "firing").into_iter().next(),
        )
    };
    let (surprise_at, surprise) = fired("cost_surprise");
    let (storm_at, storm) = fired("retry_storm");
    for (what, at) in [("cost surprise", surprise_at), ("retry storm", storm_at)] {
        let pending = at.duration_since(active_at);
        assert!(
            pending >= FOR - Duration::from_millis(1200),
            "{what} sent {pending:?} after it became active: for = {FOR:?}"
        );
    }
    // The cost surprise's evidence: projection (sli), budget (objective), their ratio; no
    // hour-of-week baseline after seconds of traffic (burn_rate_short is its rate ratio).
    assert_eq!(surprise["labels"]["alertname"], "LambdawatchCostSurprise");
    assert_eq!(surprise["labels"]["severity"], "ticket");
    let ev = &surprise["evidence"];
    let sli = ev["sli"].as_f64().unwrap();
    assert!(sli > BUDGET_USD, "{surprise}");
    assert_eq!(ev["objective"], json!(BUDGET_USD));
    assert!((ev["burn_rate_long"].as_f64().unwrap() - sli / BUDGET_USD).abs() < 1e-6);
    assert_eq!(
        ev["burn_rate_short"],
        Value::Null,
        "no baseline yet: {surprise}"
    );
    assert_eq!(
        ev["total"],
        json!(120),
        "invocations in the 5-minute window"
    );
    let summary = surprise["summary"].as_str().unwrap();
    assert!(
        summary.contains("over the $100.00 budget") && summary.contains("30-day projection $"),
        "{summary}"
    );
    assert!(
        surprise["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("/cost.md"),
        "{surprise}"
    );
    // The retry storm's evidence: 1 − retry fraction, 1 − threshold, first attempts / invocations.
    assert_eq!(storm["labels"]["alertname"], "LambdawatchRetryStorm");
    let ev = &storm["evidence"];
    assert!(
        (ev["sli"].as_f64().unwrap() - 100.0 / 120.0).abs() < 1e-9,
        "{storm}"
    );
    assert!((ev["objective"].as_f64().unwrap() - 0.95).abs() < 1e-9);
    assert_eq!(
        (ev["good"].clone(), ev["total"].clone()),
        (json!(100), json!(120))
    );

    // A few more rounds: still exactly one of each, nothing for `quiet`.
    std::thread::sleep(Duration::from_secs(3));
    for slo in ["cost_surprise", "retry_storm"] {
        assert_eq!(notes(&got, "orders", slo, "firing").len(), 1, "{slo}");
        assert!(notes(&got, "quiet", slo, "firing").is_empty(), "{slo}");
    }

    // Checkpoints after the firing round, then a task kill (no final checkpoint).
    let w = successful_writes(&a.admin);
    wait_until("two more checkpoints", Duration::from_secs(20), || {
        (successful_writes(&a.admin) >= w + 2).then_some(())
    });
    let before = cost_row(&a.admin, "orders").unwrap();
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let b = start_collector(&m.url, &hook);
    b.child
        .wait_for_text("checkpoint restored", Duration::from_secs(10));
    let after = wait_until("orders evaluated after the restart", T, || {
        cost_row(&b.admin, "orders")
    });
    // The retry tracker's ids and the surprise detector's window came back.
    assert_eq!(after["retry"]["retries"], json!(20.0), "{after}");
    assert_eq!(after["retry"]["alert"], true, "{after}");
    assert_eq!(
        after["surprise"]["window_invocations"], before["surprise"]["window_invocations"],
        "{after}"
    );
    assert_eq!(after["cost_usd_total"], before["cost_usd_total"]);
    // A retry that straddles the restart is a retry.
    send_invocations(&b.otlp, "orders", &orders[50..51]);
    wait_until("the straddling retry counted", T, || {
        (cost_row(&b.admin, "orders")?["retry"]["retries"] == json!(21.0)).then_some(())
    });
    // Several rounds (for = 3 s): no second firing, no resolution of either.
    std::thread::sleep(Duration::from_secs(5));
    for slo in ["cost_surprise", "retry_storm"] {
        assert_eq!(
            notes(&got, "orders", slo, "firing").len(),
            1,
            "{slo}: one firing across the restart"
        );
        assert!(
            notes(&got, "orders", slo, "resolved").is_empty(),
            "{slo}: not resolved by the restart"
        );
    }
}

/// `promtool check metrics` over `text` (stdin): exit code and its output.
fn promtool_check_metrics(text: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let promtool = lambdawatch_tests::peers::bin("promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn dlq_backlog_polled_from_cloudwatch_joins_the_retry_storm() {
    lambdawatch_tests::peers::bin("promtool");
    let m: Moto = lambdawatch_tests::moto::start();
    // Two readings of the DLQ's visible messages, two minutes apart: 9 then 7 (a redrive took
    // 2 out). The poller must report the newest, 7. A queue of another function gets 5.
    boto3(
        &m.url,
        "cw=boto3.client('cloudwatch',**kw)\n\
         now=time.time()\n\
         def put(q, v, t):\n\
         \x20   cw.put_metric_data(Namespace='AWS/SQS', MetricData=[{'MetricName':'ApproximateNumberOfMessagesVisible',\n\
         \x20       'Dimensions':[{'Name':'QueueName','Value':q}],'Value':v,'Unit':'Count','Timestamp':t}])\n\
         put('orders-dlq', 9, now-120)\n\
         put('orders-dlq', 7, now)\n\
         put('billing-dlq', 5, now)\n\
         cw.put_metric_data(Namespace='AWS/SQS', MetricData=[{'MetricName':'NumberOfMessagesSent',\n\
         \x20   'Dimensions':[{'Name':'QueueName','Value':'orders-dlq'}],'Value':9,'Unit':'Count','Timestamp':now-120}])",
    );
    let (hook, got) = webhook_receiver();
    let c = start_collector_with(
        &m.url,
        &hook,
        &[
            ("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012"),
            ("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s"),
            ("LAMBDAWATCH_CLOUDWATCH_PERIOD", "60s"),
            (
                "LAMBDAWATCH_DLQ_QUEUES",
                "orders-dlq=orders,billing-dlq=billing",
            ),
        ],
    );
    // First attempts of `orders` (its cost row), the backlog, then a retry storm (20 repeats
    // of 100 ids) whose notification must carry the backlog.
    let orders = ids("orders-req", 0..100);
    send_invocations(&c.otlp, "orders", &orders);

    let row = wait_until(
        "orders' DLQ backlog in /api/v1/cost",
        Duration::from_secs(30),
        || {
            let row = cost_row(&c.admin, "orders")?;
            row["retry"]["dlq"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
                .then_some(row)
        },
    );
    let dlq = row["retry"]["dlq"].as_array().unwrap();
    assert_eq!(dlq.len(), 1, "only orders' own queue: {row}");
    assert_eq!(dlq[0]["queue"], "orders-dlq");
    assert_eq!(dlq[0]["messages"], json!(7.0), "the newest reading: {row}");

    // On /metrics with the function's labels, and promtool-clean.
    let text = http::get(&format!("http://{}/metrics", c.admin), T)
        .unwrap()
        .text();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("lambdawatch_dlq_redrive_backlog_messages{")
                && l.contains("function=\"orders\"")
        })
        .unwrap_or_else(|| panic!("no backlog line for orders:\n{text}"));
    assert!(
        line.contains("queue=\"orders-dlq\"") && line.ends_with(" 7"),
        "{line}"
    );
    assert!(text.contains("# TYPE lambdawatch_dlq_redrive_backlog_messages gauge"));
    assert!(text.contains("# HELP lambdawatch_dlq_redrive_backlog_messages "));
    // `billing` has no invocation span yet: no cost row, so no backlog line either.
    assert!(!text.contains("queue=\"billing-dlq\""), "{text}");
    let (code, out) = promtool_check_metrics(&text);
    assert_eq!(code, Some(0), "promtool check metrics: {out}");
    assert!(out.trim().is_empty(), "promtool lint: {out}");

    // The retry-storm notification carries the backlog.
    send_invocations(&c.otlp, "orders", &orders[..20]);
    let storm = wait_until(
        "the retry storm notification",
        Duration::from_secs(20),
        || {
            notes(&got, "orders", "retry_storm", "firing")
                .into_iter()
                .next()
        },
    )
    .1;
    let description = storm["description"].as_str().unwrap();
    assert!(
        description.contains("DLQ orders-dlq backlog 7 messages"),
        "{description}"
    );
}
