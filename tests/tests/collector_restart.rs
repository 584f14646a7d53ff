//! Durable state end to end: a collector in an error outage pages once, is SIGKILLed (a Fargate
//! task kill: no graceful shutdown, no final checkpoint), and a new collector with the same task
//! id restores its windows and alert states from the checkpoint in DynamoDB or S3 (`moto_server`
//! on loopback, PyPI `moto[server]`): `/api/v1/slos` shows the same counts, and the webhook gets
//! no second firing notification while the outage goes on. The same run without a checkpoint
//! (state in memory) does page again after the restart — the control that shows the assertion
//! can fail. Every peer is required; a missing one fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lambdawatch_tests::{Child, http, wait_until, workspace_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const TASK_ID: &str = "collector-slot-a";

use lambdawatch_tests::moto::{Moto, boto3};

fn moto() -> Moto {
    lambdawatch_tests::moto::start()
}

/// A webhook receiver: every alert of every POST, in order.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let addr = lambdawatch_tests::webhook::serve(move |body| {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let mut g = sink.lock().unwrap();
            for a in v["alerts"].as_array().cloned().unwrap_or_default() {
                g.push(a);
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

fn start_collector(checkpoint: Option<&str>, moto: &str, hook: &str) -> Collector {
    start_collector_with(checkpoint, moto, hook, &[])
}

fn start_collector_with(
    checkpoint: Option<&str>,
    moto: &str,
    hook: &str,
    extra: &[(&str, &str)],
) -> Collector {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "1s")
        .env("LAMBDAWATCH_ALERT_RESEND", "10m")
        .env("LAMBDAWATCH_WEBHOOK_URL", format!("http://{hook}/"))
        .env("LAMBDAWATCH_TASK_ID", TASK_ID)
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_LOG", "info");
    if let Some(c) = checkpoint {
        cmd.env("LAMBDAWATCH_CHECKPOINT", c);
    }
    cmd.envs(extra.iter().copied());
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

/// `n` invocation spans of `orders` with `outcome`, as OTLP/JSON over HTTP.
fn send_invocations(otlp: &str, outcome: &str, n: usize) {
    let kv = |k: &str, v: Value| json!({"key": k, "value": v});
    let s = |v: &str| json!({"stringValue": v});
    let resource = json!({"attributes": [
        kv("service.name", s("orders")), kv("faas.name", s("orders")), kv("faas.version", s("1")),
        kv("cloud.region", s("us-east-1")), kv("cloud.account.id", s("123456789012")),
    ]});
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", (ns as u128) << 16 | i as u128),
                "spanId": format!("{:016x}", i + 1), "name": "orders", "kind": 2,
                "startTimeUnixNano": (ns - 30_000_000).to_string(), "endTimeUnixNano": ns.to_string(),
                "attributes": [
                    kv("lambdawatch.span.type", s("invocation")),
                    kv("faas.invocation_id", s(&format!("req-{ns}-{i}"))),
                    kv("aws.lambda.outcome", s(outcome)),
                    kv("aws.lambda.duration_ms", json!({"doubleValue": 30.0})),
                ]
            })
        })
        .collect();
    let body = json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/traces"), &body, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `orders`' error-rate SLO budget counts in `/api/v1/slos` (`None` before it is evaluated).
fn error_budget(admin: &str) -> Option<Value> {
    let d = http::get(&format!("http://{admin}/api/v1/slos"), T)
        .ok()?
        .json();
    d["functions"]
        .as_array()?
        .iter()
        .filter(|f| f["function"] == "orders")
        .flat_map(|f| f["slos"].as_array().cloned().unwrap_or_default())
        .find(|s| s["slo"] == "error_rate")
        .map(|s| s["budget"].clone())
}

/// Firing notifications per fingerprint.
fn firing(got: &Arc<Mutex<Vec<Value>>>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in got.lock().unwrap().iter() {
        if a["status"] == "firing" {
            *m.entry(a["fingerprint"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    m
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

/// The outage, the page, SIGKILL, a restart with the same task id; returns the firing
/// notifications per fingerprint at the end, and the page's fingerprint.
fn outage_kill_restart(moto: &str, checkpoint: Option<&str>) -> (BTreeMap<String, usize>, String) {
    let (hook, got) = webhook_receiver();
    let mut a = start_collector(checkpoint, moto, &hook);
    send_invocations(&a.otlp, "error", 200);
    let page = wait_until(
        "the error-rate page at the webhook",
        Duration::from_secs(30),
        || {
            got.lock()
                .unwrap()
                .iter()
                .find(|x| {
                    x["status"] == "firing"
                        && x["labels"]["slo"] == "error_rate"
                        && x["labels"]["severity"] == "page"
                })
                .map(|x| x["fingerprint"].as_str().unwrap().to_owned())
        },
    );
    // Let the ticket (same outage, slower rule) settle too, then make sure a checkpoint was
    // written after the round that fired.
    std::thread::sleep(Duration::from_secs(2));
    let before = firing(&got);
    assert_eq!(
        before.get(&page),
        Some(&1),
        "one page before the kill: {before:?}"
    );
    let counts = error_budget(&a.admin).expect("orders evaluated");
    assert_eq!(counts, json!({"good": 0, "valid": 200}));
    if checkpoint.is_some() {
        let w = successful_writes(&a.admin);
        wait_until("two more checkpoints", Duration::from_secs(20), || {
            (successful_writes(&a.admin) >= w + 2).then_some(())
        });
    }

    // A task kill: no SIGTERM, no final checkpoint.
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let b = start_collector(checkpoint, moto, &hook);
    if checkpoint.is_some() {
        b.child
            .wait_for_text("checkpoint restored", Duration::from_secs(10));
        // The first evaluation after the restart shows the checkpointed counts.
        let restored = wait_until("the restored counts", Duration::from_secs(20), || {
            error_budget(&b.admin)
        });
        assert_eq!(restored, counts, "restored from the checkpoint");
    } else {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(error_budget(&b.admin), None, "in memory: nothing survives");
    }

    // The outage goes on; several evaluation intervals (for = 1 s, eval every 1 s).
    send_invocations(&b.otlp, "error", 200);
    std::thread::sleep(Duration::from_secs(6));
    let after = error_budget(&b.admin).expect("orders evaluated after the restart");
    let valid = if checkpoint.is_some() { 400 } else { 200 };
    assert_eq!(after, json!({"good": 0, "valid": valid}));
    // The traffic recovers (no resolution expected within the 5-minute short window).
    send_invocations(&b.otlp, "success", 50);
    std::thread::sleep(Duration::from_secs(2));
    (firing(&got), page)
}

fn create_table(moto: &str) {
    boto3(
        moto,
        "d=boto3.client('dynamodb',**kw)\n\
         d.create_table(TableName='lambdawatch-checkpoints', BillingMode='PAY_PER_REQUEST',\n\
         \x20   KeySchema=[{'AttributeName':'pk','KeyType':'HASH'}],\n\
         \x20   AttributeDefinitions=[{'AttributeName':'pk','AttributeType':'S'}])",
    );
}

/// The stored document's header and alert phases, read back with boto3.
fn stored_header(moto: &str, read_body: &str) -> Value {
    let out = boto3(
        moto,
        &format!(
            "{read_body}\n\
             d=json.loads(gzip.decompress(body))\n\
             print(json.dumps({{'format': d['format'], 'version': d['version'], 'task_id': d['task_id'],\n\
             \x20   'functions': [k['function'] for k, _ in d['functions']],\n\
             \x20   'phases': sorted(a['phase'] for a in d['alerts'])}}))"
        ),
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn assert_no_second_page(notes: &BTreeMap<String, usize>, page: &str) {
    assert_eq!(notes.get(page), Some(&1), "exactly one page: {notes:?}");
    assert!(
        notes.values().all(|n| *n == 1),
        "no alert re-sent after the restart: {notes:?}"
    );
}

#[test]
fn restart_restores_state_from_dynamodb_and_pages_once() {
    let m = moto();
    create_table(&m.url);
    let (notes, page) = outage_kill_restart(&m.url, Some("dynamodb://lambdawatch-checkpoints"));
    assert_no_second_page(&notes, &page);
    let h = stored_header(
        &m.url,
        &format!(
            "it=boto3.client('dynamodb',**kw).get_item(TableName='lambdawatch-checkpoints', Key={{'pk':{{'S':'task/{TASK_ID}'}}}})['Item']\n\
             body=it['body']['B']"
        ),
    );
    assert_eq!(h["format"], "lambdawatch-checkpoint");
    // `collector/src/checkpoint.rs` VERSION (2: 1-minute buckets for the 6 h window).
    assert_eq!(h["version"], 2);
    assert_eq!(h["task_id"], TASK_ID);
    assert_eq!(h["functions"], json!(["orders"]));
    assert!(
        h["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "firing"),
        "{h}"
    );
}

#[test]
fn restart_restores_state_from_s3_and_pages_once() {
    let m = moto();
    boto3(
        &m.url,
        "boto3.client('s3',**kw).create_bucket(Bucket='lambdawatch-state')",
    );
    let (notes, page) = outage_kill_restart(&m.url, Some("s3://lambdawatch-state/checkpoints/"));
    assert_no_second_page(&notes, &page);
    let h = stored_header(
        &m.url,
        &format!(
            "body=boto3.client('s3',**kw).get_object(Bucket='lambdawatch-state', Key='checkpoints/task/{TASK_ID}')['Body'].read()"
        ),
    );
    assert_eq!(h["format"], "lambdawatch-checkpoint");
    assert_eq!(h["task_id"], TASK_ID);
    assert!(
        h["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "firing"),
        "{h}"
    );
}

/// The control: in memory, the restarted collector forgets the incident and pages again.
#[test]
fn restart_without_checkpoint_pages_again() {
    let m = moto();
    let (notes, page) = outage_kill_restart(&m.url, None);
    assert_eq!(
        notes.get(&page),
        Some(&2),
        "in memory, the restart re-sends the page: {notes:?}"
    );
}

fn writes(admin: &str, result: &str) -> u64 {
    let text = http::get(&format!("http://{admin}/metrics"), T)
        .unwrap()
        .text();
    let prefix = format!("lambdawatch_checkpoint_writes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Two live collectors with one task id (a stale task still running beside its replacement):
/// their conditional writes conflict, and each reloads the version and takes the key over
/// instead of failing or overwriting blindly.
#[test]
fn a_stale_writer_with_the_same_task_id_conflicts_and_is_taken_over() {
    let m = moto();
    create_table(&m.url);
    boto3(
        &m.url,
        "boto3.client('s3',**kw).create_bucket(Bucket='lambdawatch-state')",
    );
    let (hook, _got) = webhook_receiver();
    for store in [
        "dynamodb://lambdawatch-checkpoints",
        "s3://lambdawatch-state/stale/",
    ] {
        let a = start_collector(Some(store), &m.url, &hook);
        let b = start_collector(Some(store), &m.url, &hook);
        send_invocations(&a.otlp, "success", 10);
        for c in [&a, &b] {
            wait_until(
                &format!("conflicts taken over on {store}"),
                Duration::from_secs(20),
                || {
                    (writes(&c.admin, "conflict") >= 1 && writes(&c.admin, "success") >= 3)
                        .then_some(())
                },
            );
            assert_eq!(writes(&c.admin, "failure"), 0, "{store}");
        }
        b.child
            .wait_for_text("taking it over", Duration::from_secs(5));
    }
}

/// `orders`' throttle SLO count in `/api/v1/slos`.
fn throttles(admin: &str) -> Option<u64> {
    let d = http::get(&format!("http://{admin}/api/v1/slos"), T)
        .ok()?
        .json();
    d["functions"]
        .as_array()?
        .iter()
        .filter(|f| f["function"] == "orders")
        .flat_map(|f| f["slos"].as_array().cloned().unwrap_or_default())
        .find(|s| s["slo"] == "throttles")?["budget"]["valid"]
        .as_u64()
}

/// The CloudWatch poller re-reads a lookback window every poll; its ledger (what it already
/// emitted) is checkpointed with the counts, so a restarted collector does not count the same
/// throttles twice.
#[test]
fn restart_does_not_count_polled_throttles_twice() {
    let m = moto();
    create_table(&m.url);
    boto3(
        &m.url,
        "cw=boto3.client('cloudwatch',**kw)\n\
         cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{'MetricName':'Throttles','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':3,'Unit':'Count'}])",
    );
    let (hook, _got) = webhook_receiver();
    let env = [
        ("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s"),
        ("LAMBDAWATCH_CLOUDWATCH_FUNCTIONS", "orders"),
        ("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012"),
    ];
    let store = Some("dynamodb://lambdawatch-checkpoints");
    let mut a = start_collector_with(store, &m.url, &hook, &env);
    send_invocations(&a.otlp, "success", 5);
    wait_until("3 polled throttles", Duration::from_secs(30), || {
        (throttles(&a.admin)? == 3).then_some(())
    });
    let w = successful_writes(&a.admin);
    wait_until("two more checkpoints", Duration::from_secs(20), || {
        (successful_writes(&a.admin) >= w + 2).then_some(())
    });
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let b = start_collector_with(store, &m.url, &hook, &env);
    b.child
        .wait_for_text("checkpoint restored", Duration::from_secs(10));
    // Several polls of the same lookback window after the restart.
    let polls = |admin: &str| {
        let text = http::get(&format!("http://{admin}/metrics"), T)
            .unwrap()
            .text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("lambdawatch_cloudwatch_requests_total{result=\"success\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    wait_until(
        "three polls after the restart",
        Duration::from_secs(30),
        || (polls(&b.admin) >= 3).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        throttles(&b.admin),
        Some(3),
        "the restored ledger keeps the count exact"
    );
}

/// A replacement Fargate task has a new task id: with no checkpoint of its own it adopts the
/// orphan checkpoint of the task that is gone (not written for `checkpoint::stale_after`, 7 s
/// here), leaves a tombstone under the old key, restores the counts and pages nobody twice.
#[test]
fn a_replacement_task_with_a_new_id_adopts_the_orphan_checkpoint() {
    let m = moto();
    create_table(&m.url);
    boto3(
        &m.url,
        "boto3.client('s3',**kw).create_bucket(Bucket='lambdawatch-state')",
    );
    adopt_case(&m.url, "s3://lambdawatch-state/adopt/");
    adopt_case(&m.url, "dynamodb://lambdawatch-checkpoints");
    // The tombstone names the adopter; the adopter writes its own key.
    let out = boto3(
        &m.url,
        "d=boto3.client('dynamodb',**kw)\n\
         old=json.loads(gzip.decompress(d.get_item(TableName='lambdawatch-checkpoints', Key={'pk':{'S':'task/task-old'}})['Item']['body']['B']))\n\
         new=json.loads(gzip.decompress(d.get_item(TableName='lambdawatch-checkpoints', Key={'pk':{'S':'task/task-new'}})['Item']['body']['B']))\n\
         s3=boto3.client('s3',**kw)\n\
         old3=json.loads(gzip.decompress(s3.get_object(Bucket='lambdawatch-state', Key='adopt/task/task-old')['Body'].read()))\n\
         print(json.dumps([old.get('adopted_by'), new['task_id'], old3.get('adopted_by')]))",
    );
    assert_eq!(out.trim(), r#"["task-new", "task-new", "task-new"]"#);
}

fn adopt_case(moto: &str, store: &str) {
    let store = Some(store);
    let (hook, got) = webhook_receiver();
    let mut a = start_collector_with(store, moto, &hook, &[("LAMBDAWATCH_TASK_ID", "task-old")]);
    send_invocations(&a.otlp, "error", 200);
    wait_until("the page", Duration::from_secs(30), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|x| x["status"] == "firing" && x["labels"]["severity"] == "page")
            .then_some(())
    });
    let counts = error_budget(&a.admin).expect("orders evaluated");
    let w = successful_writes(&a.admin);
    wait_until("two more checkpoints", Duration::from_secs(20), || {
        (successful_writes(&a.admin) >= w + 2).then_some(())
    });
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));
    // A live writer's checkpoint is not adopted: wait until the old one is stale.
    std::thread::sleep(Duration::from_secs(8));

    let b = start_collector_with(store, moto, &hook, &[("LAMBDAWATCH_TASK_ID", "task-new")]);
    b.child
        .wait_for_text("adopted the orphan checkpoint", Duration::from_secs(10));
    let restored = wait_until("the adopted counts", Duration::from_secs(20), || {
        error_budget(&b.admin)
    });
    assert_eq!(restored, counts);
    send_invocations(&b.otlp, "error", 200);
    std::thread::sleep(Duration::from_secs(6));
    let notes = firing(&got);
    assert!(
        !notes.is_empty() && notes.values().all(|n| *n == 1),
        "{store:?}: one page, no second: {notes:?}"
    );
}

/// A kill right after a page, long before the next periodic checkpoint (the interval is an
/// hour here): the evaluation that fired checkpointed the alert state before handing the page to
/// the sinks, so the restarted collector restores it and does not page again. Without that save
/// there would be no checkpoint at all and the restart would page a second time (the in-memory
/// control, `restart_without_checkpoint_pages_again`, shows that path).
#[test]
fn a_kill_right_after_a_page_does_not_page_again() {
    let m = moto();
    create_table(&m.url);
    let (hook, got) = webhook_receiver();
    let store = Some("dynamodb://lambdawatch-checkpoints");
    let env = [("LAMBDAWATCH_CHECKPOINT_INTERVAL", "1h")];
    let mut a = start_collector_with(store, &m.url, &hook, &env);
    send_invocations(&a.otlp, "error", 200);
    let page = wait_until("the page", Duration::from_secs(30), || {
        got.lock()
            .unwrap()
            .iter()
            .find(|x| x["status"] == "firing" && x["labels"]["severity"] == "page")
            .map(|x| x["fingerprint"].as_str().unwrap().to_owned())
    });
    // No wait for a periodic checkpoint: kill at once.
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let b = start_collector_with(store, &m.url, &hook, &env);
    b.child
        .wait_for_text("checkpoint restored", Duration::from_secs(10));
    send_invocations(&b.otlp, "error", 200);
    std::thread::sleep(Duration::from_secs(6));
    let notes = firing(&got);
    assert_eq!(notes.get(&page), Some(&1), "one page: {notes:?}");
}

/// The poller's counts and cursor are one checkpoint write, and a lease holder's successor
/// continues from the cursor of that write, not from the lease record's (which is written on
/// its own schedule). The case that used to count twice: the lease record's cursor lags the
/// checkpoint — here every lease write fails (a fault proxy between the collector and moto
/// answers them with 500) while the holder, still inside its lease, polls 5 more throttles and
/// checkpoints them with its cursor. The task is killed; its restart restores 12 throttles and,
/// once it takes the lease over, polls the same window again: still 12, not 17.
#[test]
fn a_kill_after_a_poll_the_lease_record_missed_never_double_counts() {
    use lambdawatch_tests::fault_proxy::{Fault, FaultProxy, Rule};
    let m = moto();
    create_table(&m.url);
    // Both puts carry the same timestamp: one CloudWatch datapoint of 7, then of 12.
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 30;
    let put = |n: u32| {
        boto3(
            &m.url,
            &format!(
                "import datetime\ncw=boto3.client('cloudwatch',**kw)\n\
                 cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{{'MetricName':'Throttles','Dimensions':[{{'Name':'FunctionName','Value':'orders'}}],'Value':{n},'Unit':'Count','Timestamp':datetime.datetime.fromtimestamp({at}, datetime.timezone.utc)}}])"
            ),
        )
    };
    put(7);
    let proxy = FaultProxy::start(&m.url, Vec::new());
    let (hook, _got) = webhook_receiver();
    let env = [
        ("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s"),
        ("LAMBDAWATCH_CLOUDWATCH_FUNCTIONS", "orders"),
        ("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012"),
        ("LAMBDAWATCH_LEASE_TTL", "12s"),
        ("LAMBDAWATCH_AWS_MAX_ATTEMPTS", "1"),
        ("LAMBDAWATCH_CHECKPOINT_INTERVAL", "1s"),
    ];
    let store = Some("dynamodb://lambdawatch-checkpoints");
    let mut a = start_collector_with(store, &proxy.url, &hook, &env);
    wait_until("7 polled throttles", Duration::from_secs(30), || {
        (throttles(&a.admin)? == 7).then_some(())
    });
    let lease_cursor = || {
        boto3(
            &m.url,
            "d=boto3.client('dynamodb',**kw)\n\
             it=d.get_item(TableName='lambdawatch-checkpoints', Key={'pk':{'S':'lease/leader'}})['Item']\n\
             print(json.dumps(json.loads(it['body']['B'])['ledger']))",
        )
    };
    let cursor_of = |v: &Value| {
        v["emitted"]
            .as_object()
            .map(|m| m.values().cloned().collect::<Vec<_>>())
    };
    wait_until(
        "a lease renewal carrying the cursor of the 7",
        Duration::from_secs(15),
        || {
            let v: Value = serde_json::from_str(&lease_cursor()).ok()?;
            (cursor_of(&v) == Some(vec![json!(7.0)])).then_some(())
        },
    );
    // From now on the lease record is frozen: its cursor covers the 7.
    proxy.add_rule(
        Rule::new("lease-put", "PutItem", &[Fault::Internal; 10_000]).body_contains("lease/leader"),
    );
    wait_until("a failed lease write", Duration::from_secs(10), || {
        proxy
            .attempts()
            .iter()
            .any(|a| a.injected.as_ref().is_some_and(|(r, _)| r == "lease-put"))
            .then_some(())
    });
    put(5);
    // Still inside its lease (80 % of 12 s after its last successful write), it polls the 5.
    wait_until("12 polled throttles", Duration::from_secs(8), || {
        (throttles(&a.admin)? == 12).then_some(())
    });
    let w = successful_writes(&a.admin);
    wait_until("two more checkpoints", Duration::from_secs(10), || {
        (successful_writes(&a.admin) >= w + 2).then_some(())
    });
    // The precondition: the lease record's cursor is behind the checkpoint's.
    let cursors = boto3(
        &m.url,
        "d=boto3.client('dynamodb',**kw)\n\
         get=lambda k: d.get_item(TableName='lambdawatch-checkpoints', Key={'pk':{'S':k}})['Item']['body']['B']\n\
         lease=json.loads(get('lease/leader'))\n\
         ckpt=json.loads(gzip.decompress(get('task/collector-slot-a')))\n\
         print(json.dumps([lease['ledger'], ckpt['ledger']]))",
    );
    let cursors: Value = serde_json::from_str(&cursors).unwrap();
    assert_eq!(
        (cursor_of(&cursors[0]), cursor_of(&cursors[1])),
        (Some(vec![json!(7.0)]), Some(vec![json!(12.0)])),
        "the lease record's cursor should lag the checkpoint's: {cursors}"
    );
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let b = start_collector_with(store, &m.url, &hook, &env);
    b.child
        .wait_for_text("checkpoint restored", Duration::from_secs(10));
    assert_eq!(
        wait_until("the restored count", Duration::from_secs(10), || throttles(
            &b.admin
        )),
        12
    );
    // The dead process's record is taken over after one ttl; then several polls.
    b.child
        .wait_for_text("lease acquired", Duration::from_secs(30));
    let polls = |admin: &str| {
        let text = http::get(&format!("http://{admin}/metrics"), T)
            .unwrap()
            .text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("lambdawatch_cloudwatch_requests_total{result=\"success\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    wait_until(
        "three polls after the takeover",
        Duration::from_secs(30),
        || (polls(&b.admin) >= 3).then_some(()),
    );
    assert_eq!(
        throttles(&b.admin),
        Some(12),
        "the polls after the takeover continue from the checkpoint's cursor"
    );
}

fn adoptions(admin: &str) -> u64 {
    let text = http::get(&format!("http://{admin}/metrics"), T)
        .unwrap()
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("lambdawatch_checkpoint_adoptions_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Issue 5, a replacement that starts too early: task A (error traffic, one page) is SIGKILLed
/// and task B (a new id, as Fargate gives) starts right away, while A's checkpoint is still
/// fresh: B begins without A's data. With `LAMBDAWATCH_CHECKPOINT_MERGE_ORPHANS=true`, once A's
/// checkpoint is stale (`stale_after` = 2 × the 1 s checkpoint interval + 5 s) the running B
/// adopts it and merges its windows: B's `/api/v1/slos` counts include A's traffic exactly once
/// (and stay so over several more searches), B takes A's firing alert so nobody is paged twice,
/// and a third task C started later does not adopt A's checkpoint again.
#[test]
fn a_running_task_merges_the_orphan_of_a_task_killed_as_it_started() {
    let m = moto();
    create_table(&m.url);
    let store = Some("dynamodb://lambdawatch-checkpoints");
    let (hook, got) = webhook_receiver();
    let env = |id: &'static str| {
        [
            ("LAMBDAWATCH_TASK_ID", id),
            ("LAMBDAWATCH_CHECKPOINT_INTERVAL", "1s"),
            ("LAMBDAWATCH_CHECKPOINT_MERGE_ORPHANS", "true"),
        ]
    };
    let mut a = start_collector_with(store, &m.url, &hook, &env("task-a"));
    send_invocations(&a.otlp, "error", 120);
    wait_until("A's page", Duration::from_secs(30), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|x| x["status"] == "firing" && x["labels"]["severity"] == "page")
            .then_some(())
    });
    assert_eq!(
        error_budget(&a.admin).expect("orders evaluated by A"),
        json!({"good": 0, "valid": 120})
    );
    let w = successful_writes(&a.admin);
    wait_until("two more checkpoints of A", Duration::from_secs(20), || {
        (successful_writes(&a.admin) >= w + 2).then_some(())
    });
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    // B at once: A's checkpoint is not stale yet, so B starts empty.
    let b = start_collector_with(store, &m.url, &hook, &env("task-b"));
    b.child.wait_for_text(
        "no checkpoint yet (and no orphan to adopt)",
        Duration::from_secs(10),
    );
    send_invocations(&b.otlp, "success", 80);
    let own = wait_until("B's own counts", Duration::from_secs(10), || {
        error_budget(&b.admin)
    });
    assert_eq!(
        own,
        json!({"good": 80, "valid": 80}),
        "B began without A's data"
    );

    // A's checkpoint goes stale; B's periodic search adopts and merges it.
    b.child
        .wait_for_text("merged its windows", Duration::from_secs(40));
    wait_until(
        "A's traffic in B's windows",
        Duration::from_secs(10),
        || (error_budget(&b.admin) == Some(json!({"good": 80, "valid": 200}))).then_some(()),
    );
    assert_eq!(adoptions(&b.admin), 1);
    // Exactly once: two more search periods change nothing.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        error_budget(&b.admin),
        Some(json!({"good": 80, "valid": 200}))
    );
    assert_eq!(adoptions(&b.admin), 1);

    // C later: A's key is a tombstone and B is alive; C adopts nothing, now or while running.
    let c = start_collector_with(store, &m.url, &hook, &env("task-c"));
    c.child.wait_for_text(
        "no checkpoint yet (and no orphan to adopt)",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(16));
    assert_eq!(adoptions(&c.admin), 0);
    assert_eq!(error_budget(&c.admin), None, "C holds none of A's traffic");
    assert_eq!(
        error_budget(&b.admin),
        Some(json!({"good": 80, "valid": 200}))
    );
    let notes = firing(&got);
    assert!(
        !notes.is_empty() && notes.values().all(|n| *n == 1),
        "A's page is not sent again by B: {notes:?}"
    );
    let out = boto3(
        &m.url,
        "d=boto3.client('dynamodb',**kw)\n\
         old=json.loads(gzip.decompress(d.get_item(TableName='lambdawatch-checkpoints', Key={'pk':{'S':'task/task-a'}})['Item']['body']['B']))\n\
         print(json.dumps(old.get('adopted_by')))",
    );
    assert_eq!(out.trim(), r#""task-b""#);
}
