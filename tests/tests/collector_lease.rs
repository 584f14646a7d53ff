//! Two collector processes sharing one `moto_server` (PyPI `moto[server]`) on loopback, as two
//! Fargate tasks behind a load balancer with `LAMBDAWATCH_LEASE_TTL`: the lease in the DynamoDB
//! checkpoint table makes exactly one of them poll CloudWatch (the throttles are counted once in
//! the fleet) and publish to SNS (one message per alert transition, read back from an SQS queue
//! subscribed to the topic), while both ingest and evaluate OTLP. When the holder is SIGKILLed
//! the other takes over after the ttl, continues the poller's cursor from the dead holder's last
//! checkpoint (the old throttles are not counted again, new ones are) and pages through SNS with
//! the next fencing token; it also publishes the resolve of an alert only the dead holder had
//! paged. A graceful stop (SIGTERM) of that holder releases the lease and a waiting third task
//! takes it over with token 3. Both stores: DynamoDB and S3. Every peer is required; a missing one
//! fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lambdawatch_tests::{Child, http, moto::boto3, wait_until, workspace_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const TABLE: &str = "lambdawatch-checkpoints";

struct Collector {
    child: Child,
    otlp: String,
    admin: String,
}

fn start(moto: &str, topic: &str, task: &str, store: &str) -> Collector {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "1s")
        .env("LAMBDAWATCH_ALERT_RESEND", "10m")
        .env("LAMBDAWATCH_TASK_ID", task)
        .env("LAMBDAWATCH_CHECKPOINT", store)
        .env("LAMBDAWATCH_LEASE_TTL", "3s")
        .env("LAMBDAWATCH_SNS_TOPIC_ARN", topic)
        .env("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s")
        .env("LAMBDAWATCH_CLOUDWATCH_FUNCTIONS", "orders")
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012")
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_LOG", "info");
    let child = Child::spawn(task, &mut cmd);
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

fn metric(admin: &str, name: &str) -> f64 {
    http::get(&format!("http://{admin}/metrics"), T)
        .map(|r| r.text())
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `orders`' throttle count in `/api/v1/slos` (0 when not evaluated).
fn throttles(admin: &str) -> u64 {
    let Ok(r) = http::get(&format!("http://{admin}/api/v1/slos"), T) else {
        return 0;
    };
    let d = r.json();
    d["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["function"] == "orders")
        .flat_map(|f| f["slos"].as_array().cloned().unwrap_or_default())
        .find(|s| s["slo"] == "throttles")
        .and_then(|s| s["budget"]["valid"].as_u64())
        .unwrap_or(0)
}

/// Every SNS message that reached the SQS queue so far (received and deleted; kept by id).
struct Inbox {
    moto: String,
    got: BTreeMap<String, Value>,
}

impl Inbox {
    fn poll(&mut self) {
        let out = boto3(
            &self.moto,
            "sqs=boto3.client('sqs',**kw)\n\
             q=sqs.get_queue_url(QueueName='oncall')['QueueUrl']\n\
             out=[]\n\
             while True:\n\
             \x20   r=sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=0)\n\
             \x20   ms=r.get('Messages', [])\n\
             \x20   if not ms: break\n\
             \x20   for m in ms:\n\
             \x20       out.append(json.loads(m['Body']))\n\
             \x20       sqs.delete_message(QueueUrl=q, ReceiptHandle=m['ReceiptHandle'])\n\
             print(json.dumps(out))",
        );
        for m in serde_json::from_str::<Vec<Value>>(&out).unwrap() {
            self.got
                .insert(m["MessageId"].as_str().unwrap().to_owned(), m);
        }
    }

    /// Firing messages of `slo`, as (lease_token, alert).
    fn firing(&self, slo: &str) -> Vec<(String, Value)> {
        self.got
            .values()
            .filter(|m| {
                m["MessageAttributes"]["slo"]["Value"] == slo
                    && m["MessageAttributes"]["status"]["Value"] == "firing"
            })
            .map(|m| {
                (
                    m["MessageAttributes"]["lease_token"]["Value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    serde_json::from_str(m["Message"].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

fn put_throttles(moto: &str, n: u32) {
    boto3(
        moto,
        &format!(
            "cw=boto3.client('cloudwatch',**kw)\n\
             cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{{'MetricName':'Throttles','Dimensions':[{{'Name':'FunctionName','Value':'orders'}}],'Value':{n},'Unit':'Count'}}])"
        ),
    );
}

#[test]
fn two_collectors_poll_and_page_once_and_fail_over_with_dynamodb() {
    fail_over_case(
        &format!("dynamodb://{TABLE}"),
        &format!(
            "it=boto3.client('dynamodb',**kw).get_item(TableName='{TABLE}', Key={{'pk':{{'S':'lease/leader'}}}})['Item']\n\
             body=it['body']['B']"
        ),
    );
}

/// The same with the lease in S3 (conditional puts on the ETag; every renewal changes it).
#[test]
fn two_collectors_poll_and_page_once_and_fail_over_with_s3() {
    fail_over_case(
        "s3://lambdawatch-state/fleet/",
        "body=boto3.client('s3',**kw).get_object(Bucket='lambdawatch-state', Key='fleet/lease/leader')['Body'].read()",
    );
}

/// `read_body`: Python that sets `body` to the stored lease record.
fn fail_over_case(store: &str, read_body: &str) {
    let m = lambdawatch_tests::moto::start();
    let moto = m.url.clone();
    let topic = boto3(
        &moto,
        &format!(
            "d=boto3.client('dynamodb',**kw)\n\
             d.create_table(TableName='{TABLE}', BillingMode='PAY_PER_REQUEST',\n\
             \x20   KeySchema=[{{'AttributeName':'pk','KeyType':'HASH'}}],\n\
             \x20   AttributeDefinitions=[{{'AttributeName':'pk','AttributeType':'S'}}])\n\
             boto3.client('s3',**kw).create_bucket(Bucket='lambdawatch-state')\n\
             sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
             t=sns.create_topic(Name='lambdawatch-alerts')['TopicArn']\n\
             q=sqs.create_queue(QueueName='oncall')['QueueUrl']\n\
             arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
             sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
             print(t, end='')"
        ),
    );
    put_throttles(&moto, 7);
    let mut inbox = Inbox {
        moto: moto.clone(),
        got: BTreeMap::new(),
    };

    let a = start(&moto, &topic, "task-a", store);
    let b = start(&moto, &topic, "task-b", store);
    for c in [&a, &b] {
        send_invocations(&c.otlp, "success", 5);
    }
    // Exactly one holder; it alone polls: 7 throttles in the fleet, not 14.
    let a_holds = wait_until("one lease holder", Duration::from_secs(20), || {
        match (
            metric(&a.admin, "lambdawatch_lease_held"),
            metric(&b.admin, "lambdawatch_lease_held"),
        ) {
            (1.0, 0.0) => Some(true),
            (0.0, 1.0) => Some(false),
            _ => None,
        }
    });
    let (mut holder, mut other) = if a_holds { (a, b) } else { (b, a) };
    wait_until("7 throttles at the holder", Duration::from_secs(30), || {
        (throttles(&holder.admin) == 7).then_some(())
    });
    wait_until(
        "the throttle page through SNS",
        Duration::from_secs(30),
        || {
            inbox.poll();
            (!inbox.firing("throttles").is_empty()).then_some(())
        },
    );
    // An OTLP outage seen by both tasks: both fire, only the holder publishes.
    for c in [&holder, &other] {
        send_invocations(&c.otlp, "error", 200);
    }
    wait_until(
        "the error-rate page through SNS and a suppressed one",
        Duration::from_secs(30),
        || {
            inbox.poll();
            (!inbox.firing("error_rate").is_empty()
                && metric(&other.admin, "lambdawatch_sns_suppressed_total") >= 1.0)
                .then_some(())
        },
    );
    // Several more polls and evaluations on both.
    let polls = metric(
        &holder.admin,
        "lambdawatch_cloudwatch_requests_total{result=\"success\"}",
    );
    wait_until("three more polls", Duration::from_secs(20), || {
        (metric(
            &holder.admin,
            "lambdawatch_cloudwatch_requests_total{result=\"success\"}",
        ) >= polls + 3.0)
            .then_some(())
    });
    inbox.poll();
    assert_eq!(throttles(&holder.admin), 7);
    assert_eq!(throttles(&other.admin), 0, "the other task never polled");
    assert_eq!(
        metric(
            &other.admin,
            "lambdawatch_cloudwatch_requests_total{result=\"success\"}"
        ),
        0.0
    );
    assert!(metric(&other.admin, "lambdawatch_cloudwatch_polls_skipped_total") >= 1.0);
    let throttle_pages = inbox.firing("throttles");
    assert_eq!(throttle_pages.len(), 1, "{throttle_pages:?}");
    assert_eq!(throttle_pages[0].0, "1", "the first holder's fencing token");
    assert_eq!(throttle_pages[0].1["evidence"]["total"], 7);
    let error_pages: Vec<_> = inbox
        .firing("error_rate")
        .into_iter()
        .filter(|(_, a)| a["labels"]["severity"] == "page")
        .collect();
    assert_eq!(error_pages.len(), 1, "one page, not one per task");

    // The holder dies (a task kill: no release). The other takes over after the ttl.
    holder.child.signal_group(rustix::process::Signal::KILL);
    holder.child.wait_exit(Duration::from_secs(10));
    wait_until("the takeover", Duration::from_secs(20), || {
        (metric(&other.admin, "lambdawatch_lease_held") == 1.0).then_some(())
    });
    other
        .child
        .wait_for_text("lease acquired", Duration::from_secs(5));
    let polls = |c: &Collector| {
        metric(
            &c.admin,
            "lambdawatch_cloudwatch_requests_total{result=\"success\"}",
        )
    };
    wait_until(
        "three polls by the new holder",
        Duration::from_secs(20),
        || (polls(&other) >= 3.0).then_some(()),
    );
    assert_eq!(
        throttles(&other.admin),
        0,
        "the cursor came with the lease: the dead holder's 7 are not counted again"
    );
    // New throttles are counted by the new holder, once, and page with token 2.
    put_throttles(&moto, 6);
    wait_until("6 new throttles", Duration::from_secs(30), || {
        (throttles(&other.admin) == 6).then_some(())
    });
    wait_until(
        "the new holder's throttle page",
        Duration::from_secs(30),
        || {
            inbox.poll();
            (inbox.firing("throttles").len() == 2).then_some(())
        },
    );
    let p = polls(&other);
    wait_until("two more polls", Duration::from_secs(20), || {
        (polls(&other) >= p + 2.0).then_some(())
    });
    inbox.poll();
    assert_eq!(throttles(&other.admin), 6, "13 would be the old ones again");
    let pages = inbox.firing("throttles");
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(
        pages
            .iter()
            .any(|(token, a)| token == "2" && a["evidence"]["total"] == 6),
        "{pages:?}"
    );
    // The outage the new holder already knew (suppressed before) is not paged again.
    let error_pages = inbox
        .firing("error_rate")
        .into_iter()
        .filter(|(_, a)| a["labels"]["severity"] == "page")
        .count();
    assert_eq!(error_pages, 1);
    // The stored record names the new holder with token 2.
    let rec = boto3(
        &moto,
        &format!(
            "{read_body}\n\
             r=json.loads(body)\n\
             print(json.dumps({{'holder': r['holder'], 'token': r['token']}}))"
        ),
    );
    let rec: Value = serde_json::from_str(rec.trim()).unwrap();
    assert_eq!(rec["token"], 2);
    assert!(
        rec["holder"]
            .as_str()
            .unwrap()
            .starts_with(other.child.name()),
        "{rec}"
    );

    // A graceful stop (SIGTERM, as ECS does) releases the lease, and a third task that was
    // waiting takes it over with the next token.
    let c = start(&moto, &topic, "task-c", store);
    wait_until("task-c waiting", Duration::from_secs(20), || {
        (metric(&c.admin, "lambdawatch_cloudwatch_polls_skipped_total") >= 1.0).then_some(())
    });
    assert_eq!(metric(&c.admin, "lambdawatch_lease_held"), 0.0);
    let status = other.child.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(
        other
            .child
            .lines()
            .iter()
            .any(|l| l.contains("lease released")),
        "the holder released the lease on its way out"
    );
    wait_until("task-c takes over", Duration::from_secs(20), || {
        (metric(&c.admin, "lambdawatch_lease_held") == 1.0).then_some(())
    });
    let rec = boto3(
        &moto,
        &format!(
            "{read_body}\n\
             r=json.loads(body)\n\
             print(json.dumps({{'holder': r['holder'], 'token': r['token'], 'released': r['released']}}))"
        ),
    );
    let rec: Value = serde_json::from_str(rec.trim()).unwrap();
    assert_eq!(rec["token"], 3, "{rec}");
    assert_eq!(rec["released"], false, "{rec}");
    assert!(
        rec["holder"].as_str().unwrap().starts_with("task-c/"),
        "{rec}"
    );
}

/// A resolve that happens while no task holds the lease is not lost: the holder pages an error
/// outage through SNS and is SIGKILLed; the other task (which never saw the outage: it got none
/// of that traffic) takes the lease over, finds the alert firing in the dead holder's
/// checkpoint and not in its own state, and publishes its resolve through SNS with the new
/// fencing token.
#[test]
fn a_new_holder_publishes_the_resolve_of_an_alert_the_dead_holder_paged() {
    let m = lambdawatch_tests::moto::start();
    let moto = m.url.clone();
    let topic = boto3(
        &moto,
        &format!(
            "d=boto3.client('dynamodb',**kw)\n\
             d.create_table(TableName='{TABLE}', BillingMode='PAY_PER_REQUEST',\n\
             \x20   KeySchema=[{{'AttributeName':'pk','KeyType':'HASH'}}],\n\
             \x20   AttributeDefinitions=[{{'AttributeName':'pk','AttributeType':'S'}}])\n\
             sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
             t=sns.create_topic(Name='lambdawatch-alerts')['TopicArn']\n\
             q=sqs.create_queue(QueueName='oncall')['QueueUrl']\n\
             arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
             sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
             print(t, end='')"
        ),
    );
    let mut inbox = Inbox {
        moto: moto.clone(),
        got: BTreeMap::new(),
    };
    let store = format!("dynamodb://{TABLE}");
    let mut a = start(&moto, &topic, "task-a", &store);
    wait_until("task-a holds the lease", Duration::from_secs(20), || {
        (metric(&a.admin, "lambdawatch_lease_held") == 1.0).then_some(())
    });
    let b = start(&moto, &topic, "task-b", &store);
    send_invocations(&a.otlp, "error", 200);
    let paged = wait_until(
        "the error page through SNS",
        Duration::from_secs(30),
        || {
            inbox.poll();
            inbox.firing("error_rate").into_iter().next()
        },
    );
    assert_eq!(paged.0, "1", "paged by the first holder");
    let fingerprint = paged.1["fingerprint"].as_str().unwrap().to_owned();
    a.child.signal_group(rustix::process::Signal::KILL);
    a.child.wait_exit(Duration::from_secs(10));

    let resolved = wait_until(
        "the resolve through SNS from the new holder",
        Duration::from_secs(30),
        || {
            inbox.poll();
            inbox.got.values().find_map(|m| {
                let attrs = &m["MessageAttributes"];
                (attrs["slo"]["Value"] == "error_rate" && attrs["status"]["Value"] == "resolved")
                    .then(|| m.clone())
            })
        },
    );
    assert_eq!(resolved["MessageAttributes"]["lease_token"]["Value"], "2");
    let alert: Value = serde_json::from_str(resolved["Message"].as_str().unwrap()).unwrap();
    assert_eq!(alert["fingerprint"], fingerprint.as_str(), "{alert}");
    assert_eq!(alert["status"], "resolved");
    assert!(alert["ends_at"].is_string(), "{alert}");
    assert_eq!(
        metric(
            &b.admin,
            "lambdawatch_sns_takeover_resolves_total{result=\"success\"}"
        ),
        1.0
    );
    // Exactly one: later renewals and evaluations publish no second resolve.
    std::thread::sleep(Duration::from_secs(3));
    inbox.poll();
    let resolves = inbox
        .got
        .values()
        .filter(|m| m["MessageAttributes"]["status"]["Value"] == "resolved")
        .count();
    assert_eq!(resolves, 1);
}
