//! The collector's AWS edges end to end, against `moto_server` (PyPI `moto[server]`) on loopback:
//! the CloudWatch poller's throttles drive the throttle SLO and its alert is delivered through SNS
//! into an SQS queue; function logs land in CloudWatch Logs (read back with `GetLogEvents`);
//! invocation spans land in X-Ray (read back with `BatchGetTraces`); a Kinesis Data Firehose
//! delivery of Metric Streams data (encoded by the Python `opentelemetry-proto` package) drives
//! the DLQ SLO. Every peer is required; a missing one fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambdawatch_tests::fault_proxy::{
    Accounting, Attempt, Fault, FaultProxy, Rule, accounting, calls,
};
use lambdawatch_tests::{Child, http, wait_until, workspace_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

use lambdawatch_tests::moto::boto3;

fn kv(k: &str, v: Value) -> Value {
    json!({"key": k, "value": v})
}

fn s(v: &str) -> Value {
    json!({"stringValue": v})
}

#[test]
fn aws_sources_and_sinks_through_the_collector() {
    // moto on loopback.
    let moto_server = lambdawatch_tests::moto::start();
    let moto = moto_server.url.clone();
    let topic = boto3(
        &moto,
        "sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
         t=sns.create_topic(Name='lambdawatch-alerts')['TopicArn']\n\
         q=sqs.create_queue(QueueName='oncall')['QueueUrl']\n\
         arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
         cw=boto3.client('cloudwatch',**kw)\n\
         cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{'MetricName':'Throttles','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':7,'Unit':'Count'}])\n\
         print(t, end='')",
    );

    // The collector with every AWS edge on.
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "1s")
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012")
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", &moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s")
        .env(
            "LAMBDAWATCH_CLOUDWATCH_LOGS_GROUP_PREFIX",
            "/lambdawatch/functions/",
        )
        .env("LAMBDAWATCH_XRAY_EXPORT", "true")
        .env("LAMBDAWATCH_SNS_TOPIC_ARN", &topic)
        .env("LAMBDAWATCH_TASK_ID", "aws-e2e")
        .env("LAMBDAWATCH_FIREHOSE_ACCESS_KEY", "fh-secret");
    let collector = Child::spawn("collector", &mut cmd);
    let line = collector.wait_for_line("listening line", Duration::from_secs(30), |l| {
        l.contains("listening otlp_grpc=")
    });
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (otlp, admin) = (field("otlp_http"), field("admin"));

    // One invocation span and two log records from "orders", as the extension sends them.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch_hex = format!("{:08x}", now.as_secs());
    let trace_id = format!("{epoch_hex}bd862e3fe1be46a994272793");
    let ns = now.as_nanos() as u64;
    let resource = json!({"attributes": [
        kv("service.name", s("orders")), kv("faas.name", s("orders")), kv("faas.version", s("1")),
        kv("cloud.region", s("us-east-1")), kv("cloud.account.id", s("123456789012")),
        kv("faas.instance", s("2026/11/29/[1]abcdef")),
    ]});
    let span = json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [{
        "traceId": trace_id, "spanId": "53995c3f42cd8ad8", "name": "orders", "kind": 2,
        "startTimeUnixNano": (ns - 120_000_000).to_string(), "endTimeUnixNano": ns.to_string(),
        "attributes": [
            kv("lambdawatch.span.type", s("invocation")), kv("faas.invocation_id", s("req-1")),
            kv("aws.lambda.outcome", s("success")), kv("aws.lambda.duration_ms", json!({"doubleValue": 120.0})),
            kv("aws.lambda.billed_duration_ms", json!({"intValue": "120"})), kv("aws.lambda.memory_size_mb", json!({"intValue": "256"})),
            kv("aws.lambda.max_memory_used_mb", json!({"intValue": "60"})), kv("aws.lambda.timeout_ms", json!({"intValue": "3000"})),
            kv("faas.coldstart", json!({"boolValue": false})),
        ]
    }]}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/traces"), &span, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [
        {"timeUnixNano": (ns - 2_000_000).to_string(), "body": s("[INFO] order accepted"), "attributes": [kv("faas.invocation_id", s("req-1"))]},
        {"timeUnixNano": ns.to_string(), "severityText": "ERROR", "body": s("payment declined"), "attributes": [kv("order_id", s("o-42"))]},
    ]}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/logs"), &logs, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Firehose: Metric Streams data (OpenTelemetry 1.0.0 format, length-delimited), 100 async
    // events received and 10 dropped to the DLQ for "orders".
    let delivery = boto3(
        &moto,
        "from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest\n\
         from google.protobuf.internal.encoder import _VarintBytes\n\
         def req(name, value):\n\
         \x20   r = ExportMetricsServiceRequest()\n\
         \x20   rm = r.resource_metrics.add()\n\
         \x20   for k, v in [('cloud.provider','aws'),('cloud.account.id','123456789012'),('cloud.region','us-east-1')]:\n\
         \x20       a = rm.resource.attributes.add(); a.key = k; a.value.string_value = v\n\
         \x20   m = rm.scope_metrics.add().metrics.add(); m.name = 'amazonaws.com/AWS/Lambda/' + name; m.unit = '{Count}'\n\
         \x20   dp = m.summary.data_points.add()\n\
         \x20   now = time.time_ns(); dp.start_time_unix_nano = now - 60_000_000_000; dp.time_unix_nano = now\n\
         \x20   dp.count = 1; dp.sum = value\n\
         \x20   for k, v in [('Namespace','AWS/Lambda'),('MetricName',name)]:\n\
         \x20       a = dp.attributes.add(); a.key = k; a.value.string_value = v\n\
         \x20   d = dp.attributes.add(); d.key = 'Dimensions'; e = d.value.kvlist_value.values.add(); e.key = 'FunctionName'; e.value.string_value = 'orders'\n\
         \x20   q = dp.quantile_values.add(); q.quantile = 0.0; q.value = value\n\
         \x20   q = dp.quantile_values.add(); q.quantile = 1.0; q.value = value\n\
         \x20   b = r.SerializeToString(); return _VarintBytes(len(b)) + b\n\
         record = req('AsyncEventsReceived', 100.0) + req('AsyncEventsDropped', 10.0)\n\
         print(json.dumps({'requestId': 'fh-1', 'timestamp': int(time.time()*1000), 'records': [{'data': base64.b64encode(record).decode()}]}))",
    );
    let url = format!("http://{otlp}/firehose");
    let bad = http::request(
        "POST",
        &url,
        &[
            ("x-amz-firehose-access-key", "wrong"),
            ("x-amz-firehose-request-id", "fh-1"),
        ],
        delivery.as_bytes(),
        T,
    )
    .unwrap();
    assert_eq!(bad.status, 401, "{}", bad.text());
    let ok = http::request(
        "POST",
        &url,
        &[
            ("x-amz-firehose-access-key", "fh-secret"),
            ("x-amz-firehose-request-id", "fh-1"),
            ("content-type", "application/json"),
        ],
        delivery.as_bytes(),
        T,
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["requestId"], "fh-1");

    // The throttle SLO sees the polled Throttles (7 > the budget of 5) and the DLQ SLO the
    // Firehose counts.
    let slo = |doc: &Value, name: &str| -> Value {
        doc["functions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["function"] == "orders")
            .flat_map(|f| f["slos"].as_array().unwrap().clone())
            .find(|s| s["slo"] == name)
            .unwrap_or(Value::Null)
    };
    let doc = wait_until(
        "throttles and DLQ counts in /api/v1/slos",
        Duration::from_secs(30),
        || {
            let d = http::get(&format!("http://{admin}/api/v1/slos"), T)
                .ok()?
                .json();
            let throttles = slo(&d, "throttles")["budget"]["valid"].as_u64()?;
            let dlq = slo(&d, "dlq_ratio")["budget"]["valid"].as_u64()?;
            (throttles >= 7 && dlq >= 100).then_some(d)
        },
    );
    assert_eq!(slo(&doc, "throttles")["budget"]["valid"], 7);
    assert_eq!(
        slo(&doc, "dlq_ratio")["budget"],
        json!({"good": 90, "valid": 100})
    );

    // The throttle alert reaches the SQS queue subscribed to the SNS topic.
    let msg = wait_until("the throttle alert in SQS", Duration::from_secs(40), || {
        let out = boto3(
            &moto,
            "sqs=boto3.client('sqs',**kw)\n\
             q=sqs.get_queue_url(QueueName='oncall')['QueueUrl']\n\
             r=sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1)\n\
             print(json.dumps([json.loads(x['Body']) for x in r.get('Messages', [])]))",
        );
        let msgs: Vec<Value> = serde_json::from_str(&out).unwrap();
        msgs.into_iter()
            .find(|m| m["MessageAttributes"]["slo"]["Value"] == "throttles")
    });
    assert_eq!(msg["MessageAttributes"]["function"]["Value"], "orders");
    assert_eq!(msg["MessageAttributes"]["status"]["Value"], "firing");
    let alert: Value = serde_json::from_str(msg["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        alert["labels"]["alertname"],
        "LambdawatchThrottleBudgetExhausted"
    );
    assert_eq!(alert["evidence"]["total"], 7);
    assert!(
        alert["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("throttles.md")
    );

    // Logs in CloudWatch Logs, in order, the structured one as JSON.
    let events: Vec<String> = wait_until(
        "log events in CloudWatch Logs",
        Duration::from_secs(20),
        || {
            let out = boto3(
                &moto,
                "l=boto3.client('logs',**kw)\n\
             try:\n\
             \x20   r=l.get_log_events(logGroupName='/lambdawatch/functions/orders', logStreamName='2026/11/29/[1]abcdef', startFromHead=True)\n\
             \x20   print(json.dumps([e['message'] for e in r['events']]))\n\
             except l.exceptions.ResourceNotFoundException:\n\
             \x20   print('[]')",
            );
            let v: Vec<String> = serde_json::from_str(&out).unwrap();
            (v.len() == 2).then_some(v)
        },
    );
    assert_eq!(events[0], "[INFO] order accepted");
    let structured: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(structured["level"], "ERROR");
    assert_eq!(structured["message"], "payment declined");
    assert_eq!(structured["order_id"], "o-42");

    // The invocation span as an X-Ray segment under its X-Ray trace id.
    let xray_id = format!("1-{epoch_hex}-bd862e3fe1be46a994272793");
    let doc: Value = wait_until("the segment in X-Ray", Duration::from_secs(20), || {
        let out = boto3(
            &moto,
            &format!(
                "x=boto3.client('xray',**kw)\n\
                 t=x.batch_get_traces(TraceIds=['{xray_id}'])['Traces']\n\
                 print(t[0]['Segments'][0]['Document'] if t else '')"
            ),
        );
        serde_json::from_str(out.trim()).ok()
    });
    assert_eq!(doc["trace_id"], xray_id);
    assert_eq!(doc["id"], "53995c3f42cd8ad8");
    assert_eq!(doc["name"], "orders");
    assert_eq!(doc["annotations"]["invocation_id"], "req-1");

    // The SLO metrics as Embedded Metric Format lines in the EMF log group (stream: the task
    // id), one line per function and SLO per evaluation, with what was ingested.
    let emf = |slo_name: &str| -> Option<Value> {
        let out = boto3(
            &moto,
            "l=boto3.client('logs',**kw)\n\
             try:\n\
             \x20   r=l.get_log_events(logGroupName='/lambdawatch/slo-metrics', logStreamName='aws-e2e', startFromHead=True)\n\
             \x20   print(json.dumps([e['message'] for e in r['events']]))\n\
             except l.exceptions.ResourceNotFoundException:\n\
             \x20   print('[]')",
        );
        let lines: Vec<String> = serde_json::from_str(&out).unwrap();
        lines
            .iter()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["FunctionName"] == "orders" && v["SLO"] == slo_name)
    };
    let throttles = wait_until("the throttles EMF line", Duration::from_secs(20), || {
        emf("throttles").filter(|v| v["Valid"] == 7.0)
    });
    let cwm = &throttles["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(cwm["Namespace"], "Lambdawatch/SLO");
    assert_eq!(cwm["Dimensions"], json!([["FunctionName", "SLO"]]));
    let names: Vec<&str> = cwm["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for n in ["Good", "Valid", "ErrorBudgetRemaining"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(
        !names.contains(&"SLI"),
        "a count budget has no ratio: {names:?}"
    );
    // 7 throttles of a budget of 5: 40 % over.
    assert!(
        (throttles["ErrorBudgetRemaining"].as_f64().unwrap() + 0.4).abs() < 1e-9,
        "{throttles}"
    );
    assert_eq!(throttles["TaskId"], "aws-e2e");
    assert!(throttles["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    let dlq = emf("dlq_ratio").unwrap();
    assert_eq!(
        (dlq["Good"].as_f64(), dlq["Valid"].as_f64()),
        (Some(90.0), Some(100.0))
    );
    assert!((dlq["SLI"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{dlq}");
    let errors = emf("error_rate").unwrap();
    assert_eq!(
        (errors["Good"].as_f64(), errors["Valid"].as_f64()),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(errors["SLI"], 1.0);
    assert_eq!(errors["BurnRate5m"], 0.0);
    let em = errors["_aws"]["CloudWatchMetrics"][0]["Metrics"].clone();
    assert!(
        em.as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == "SLI" && m["Unit"] == "None"),
        "{em}"
    );

    // The pipeline observed itself.
    let metrics = http::get(&format!("http://{admin}/metrics"), T)
        .unwrap()
        .text();
    for needle in [
        "lambdawatch_cloudwatch_requests_total{result=\"success\"}",
        "lambdawatch_firehose_requests_total{result=\"success\"} 1",
        "lambdawatch_firehose_requests_total{result=\"rejected\"} 1",
        "lambdawatch_export_items_total{exporter=\"cloudwatch_logs\",result=\"success\"} 2",
        "lambdawatch_export_items_total{exporter=\"xray\",result=\"success\"} 1",
        "lambdawatch_cloudwatch_projected_cost_usd",
        "lambdawatch_emf_lines_total{result=\"lost\"} 0",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
}

/// The poll loop itself (not only the poller's functions): 100 filler functions plus `orders`
/// make 507 `GetMetricData` queries, so each poll is two calls (≤ 500 queries each) and `orders`
/// and its DLQ queue sit in the second one; the period is 300 s. The polled `AsyncEventsReceived`
/// and the DLQ queue's `NumberOfMessagesSent` drive the DLQ SLO, the polled `Throttles` the
/// throttle SLO, with no OTLP platform counts at all.
#[test]
fn polled_dlq_and_throttles_over_two_calls_with_five_minute_periods() {
    let moto_server = lambdawatch_tests::moto::start();
    let moto = moto_server.url.clone();
    boto3(
        &moto,
        "cw=boto3.client('cloudwatch',**kw)\n\
         cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[\n\
         \x20   {'MetricName':'AsyncEventsReceived','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':50,'Unit':'Count'},\n\
         \x20   {'MetricName':'Throttles','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':3,'Unit':'Count'},\n\
         \x20   {'MetricName':'AsyncEventsDropped','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':3,'Unit':'Count'},\n\
         \x20   {'MetricName':'DeadLetterErrors','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':2,'Unit':'Count'},\n\
         \x20   {'MetricName':'DestinationDeliveryFailures','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':5,'Unit':'Count'}])\n\
         cw.put_metric_data(Namespace='AWS/SQS', MetricData=[{'MetricName':'NumberOfMessagesSent','Dimensions':[{'Name':'QueueName','Value':'orders-dlq'}],'Value':4,'Unit':'Count'}])",
    );
    let mut functions: Vec<String> = (0..100).map(|i| format!("f{i:04}")).collect();
    functions.push("orders".into());
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012")
        .env("LAMBDAWATCH_AWS_ENDPOINT_URL", &moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s")
        .env("LAMBDAWATCH_CLOUDWATCH_PERIOD", "300s")
        .env("LAMBDAWATCH_CLOUDWATCH_FUNCTIONS", functions.join(","))
        .env("LAMBDAWATCH_DLQ_QUEUES", "orders-dlq=orders");
    let collector = Child::spawn("collector", &mut cmd);
    let line = collector.wait_for_line("listening line", Duration::from_secs(30), |l| {
        l.contains("listening otlp_grpc=")
    });
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .unwrap()
        .to_owned();
    let slo = |doc: &Value, name: &str| -> Value {
        doc["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["function"] == "orders")
            .flat_map(|f| f["slos"].as_array().cloned().unwrap_or_default())
            .find(|s| s["slo"] == name)
            .map_or(Value::Null, |s| s["budget"].clone())
    };
    let doc = wait_until(
        "polled DLQ and throttle counts in /api/v1/slos",
        Duration::from_secs(40),
        || {
            let d = http::get(&format!("http://{admin}/api/v1/slos"), T)
                .ok()?
                .json();
            (slo(&d, "dlq_ratio")["valid"] == 50 && slo(&d, "throttles")["valid"] == 3).then_some(d)
        },
    );
    assert_eq!(slo(&doc, "dlq_ratio"), json!({"good": 46, "valid": 50}));
    // Later polls re-read the same 300 s period and add nothing.
    let scrape = || {
        http::get(&format!("http://{admin}/metrics"), T)
            .unwrap()
            .text()
    };
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let metric = |name: &str| value(&scrape(), name);
    let polls = metric("lambdawatch_cloudwatch_requests_total{result=\"success\"}");
    wait_until("two more polls", Duration::from_secs(20), || {
        (metric("lambdawatch_cloudwatch_requests_total{result=\"success\"}") >= polls + 2.0)
            .then_some(())
    });
    let d = http::get(&format!("http://{admin}/api/v1/slos"), T)
        .unwrap()
        .json();
    assert_eq!(slo(&d, "dlq_ratio"), json!({"good": 46, "valid": 50}));
    assert_eq!(slo(&d, "throttles")["valid"], 3);
    // Two GetMetricData calls per poll (507 queries), every poll a success.
    let text = scrape();
    let (calls, ok, failed) = (
        value(&text, "lambdawatch_cloudwatch_calls_total"),
        value(
            &text,
            "lambdawatch_cloudwatch_requests_total{result=\"success\"}",
        ),
        value(
            &text,
            "lambdawatch_cloudwatch_requests_total{result=\"failure\"}",
        ),
    );
    assert_eq!(failed, 0.0);
    assert!(
        calls == 2.0 * ok || calls == 2.0 * (ok + 1.0),
        "calls {calls}, polls {ok} (one poll may be in flight)"
    );

    // Every polled Lambda metric lands on /metrics, per function (AsyncEventsDropped 3 < the 4
    // DLQ sends, so the DLQ SLO above stays 46 good of 50).
    let orders = |name: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("function=\"orders\""))
            .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
    };
    for (name, want) in [
        ("lambdawatch_throttles_total", 3.0),
        ("lambdawatch_async_events_received_total", 50.0),
        ("lambdawatch_async_events_dropped_total", 3.0),
        ("lambdawatch_dead_letter_errors_total", 2.0),
        ("lambdawatch_destination_delivery_failures_total", 5.0),
    ] {
        assert_eq!(orders(name), Some(want), "{name} for orders:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} counter")),
            "{name}: no TYPE line"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name}: no HELP line"
        );
    }

    // The projected spend, from the queries each poll makes: five AWS/Lambda metrics per
    // function (Throttles, DeadLetterErrors, AsyncEventsReceived, AsyncEventsDropped,
    // DestinationDeliveryFailures) plus two AWS/SQS metrics per DLQ queue (NumberOfMessagesSent
    // and the backlog gauge ApproximateNumberOfMessagesVisible) = 507, split into the two calls
    // counted above (≤ 500 queries each); polled every second for 30 days at the GetMetricData
    // list price of $0.01 per 1,000 metrics.
    let queries = functions.len() * 5 + 2;
    assert_eq!(queries, 507);
    assert_eq!(queries.div_ceil(500), 2, "calls per poll");
    let polls_per_month = 30.0 * 86_400.0 / 1.0;
    let want = queries as f64 * polls_per_month / 1000.0 * 0.01;
    let got = value(&text, "lambdawatch_cloudwatch_projected_cost_usd");
    assert!(
        (got - want).abs() < 0.001,
        "projected CloudWatch spend {got} USD/month, {queries} queries per 1 s poll make {want}"
    );
}

/// Initial backoff the fault tests give the SDK (`LAMBDAWATCH_AWS_RETRY_INITIAL_BACKOFF`).
const BACKOFF: Duration = Duration::from_millis(200);
/// Attempts per call (`LAMBDAWATCH_AWS_MAX_ATTEMPTS`).
const ATTEMPTS: u32 = 5;

/// The value of the sample `name` (with labels, exactly as exposed) on a `/metrics` page.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Starts a collector with `env`, returning it with its OTLP/HTTP and admin addresses.
fn collector(env: &[(&str, &str)], remove: &[&str]) -> (Child, String, String) {
    let mut cmd = Command::new(workspace_bin("lambdawatch-collector"));
    cmd.arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "1s")
        .env("LAMBDAWATCH_AWS_REGION", "us-east-1")
        .env("LAMBDAWATCH_AWS_ACCOUNT_ID", "123456789012")
        .env("LAMBDAWATCH_AWS_MAX_ATTEMPTS", ATTEMPTS.to_string())
        .env(
            "LAMBDAWATCH_AWS_RETRY_INITIAL_BACKOFF",
            format!("{}ms", BACKOFF.as_millis()),
        )
        .env("LAMBDAWATCH_LEASE_TTL", "3s");
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
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
    let (otlp, admin) = (field("otlp_http"), field("admin"));
    (child, otlp, admin)
}

/// Waits until the collector's own AWS counters (`lambdawatch_aws_{calls,retries,failures}_total`)
/// equal what the proxy saw, read while no attempt arrived at the proxy; returns it.
fn counters_match_proxy(admin: &str, proxy: &FaultProxy) -> Accounting {
    let mut tries = 0;
    loop {
        let before = proxy.attempts().len();
        let text = http::get(&format!("http://{admin}/metrics"), T)
            .unwrap()
            .text();
        let attempts = proxy.attempts();
        let want = accounting(&attempts, ATTEMPTS);
        let got = (
            sample(&text, "lambdawatch_aws_calls_total"),
            sample(&text, "lambdawatch_aws_retries_total"),
            sample(&text, "lambdawatch_aws_failures_total"),
        );
        let want_f = (
            Some(want.calls as f64),
            Some(want.retries as f64),
            Some(want.failures as f64),
        );
        if attempts.len() == before && got == want_f {
            return want;
        }
        tries += 1;
        assert!(
            tries < 300,
            "AWS counters never matched the proxy: collector says {got:?}, the proxy saw {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every retry follows a fault the proxy injected (moto itself never asked for one), and the
/// gaps between attempts show the SDK's backoff: gap *n* (before retry *n*) is a uniformly random
/// time in [0, BACKOFF · 2ⁿ⁻¹) plus a round trip ("full jitter", see `lambdawatch_aws::client`),
/// so no single gap has a floor; each stays under its cap (+ 1 s of slack for a loaded machine),
/// and their sum is at least 15 % of the sum of the caps (its mean is 50 %; for the ≥ 20 gaps of
/// these tests, falling under 15 % by chance has a probability below 10⁻⁶). A client that
/// hammered (no backoff) would show gaps of a few milliseconds.
fn assert_backoff(attempts: &[Attempt]) -> (Duration, Duration, usize) {
    let (mut sum, mut caps, mut n) = (Duration::ZERO, Duration::ZERO, 0);
    for call in calls(attempts) {
        for (k, pair) in call.attempts.windows(2).enumerate() {
            assert!(
                pair[0].injected.is_some(),
                "a {} call was retried after a response the proxy did not inject: {:?}",
                call.op,
                pair[0]
            );
            let gap = pair[1].at - pair[0].at;
            let cap = BACKOFF * 2u32.pow(k as u32);
            assert!(
                gap <= cap + Duration::from_secs(1),
                "{} retry {}: gap {gap:?} over the backoff cap {cap:?}",
                call.op,
                k + 1
            );
            sum += gap;
            caps += cap;
            n += 1;
        }
    }
    (sum, caps, n)
}

/// AWS throttling and 5xx errors, injected by a proxy between the collector and moto into every
/// kind of call the collector makes (CloudWatch `GetMetricData`, CloudWatch Logs
/// `CreateLogGroup` / `CreateLogStream` / `PutLogEvents`, X-Ray `PutTraceSegments`, SNS
/// `Publish`, the checkpoint's DynamoDB `GetItem` / `Scan` / `PutItem` and S3
/// `GetObject` / `ListObjectsV2` / `PutObject`, the lease's reads and writes), each in that
/// service's protocol: the data still arrives, the collector's retry / failure counters equal
/// what the proxy saw, the gaps show backoff, and a poll that exhausts its five attempts is one
/// failure whose throttles the next poll still counts.
///
/// The second collector (S3 checkpoint and lease) runs without static keys, on task-role
/// credentials from a loopback container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
/// and `AWS_CONTAINER_AUTHORIZATION_TOKEN`, as on Fargate): the endpoint is called with the token
/// and every request reaching the proxy is signed with the access key id it served.
#[test]
fn aws_errors_are_retried_with_backoff_and_counted() {
    use Fault::{Internal, Throttle, Unavailable};
    let moto_server = lambdawatch_tests::moto::start();
    let moto = moto_server.url.clone();
    let topic = boto3(
        &moto,
        "sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
         t=sns.create_topic(Name='lambdawatch-alerts')['TopicArn']\n\
         q=sqs.create_queue(QueueName='oncall')['QueueUrl']\n\
         arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
         cw=boto3.client('cloudwatch',**kw)\n\
         cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{'MetricName':'Throttles','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':7,'Unit':'Count'}])\n\
         boto3.client('dynamodb',**kw).create_table(TableName='lambdawatch-checkpoints', BillingMode='PAY_PER_REQUEST',\n\
         \x20   KeySchema=[{'AttributeName':'pk','KeyType':'HASH'}], AttributeDefinitions=[{'AttributeName':'pk','AttributeType':'S'}])\n\
         boto3.client('s3',**kw).create_bucket(Bucket='lambdawatch-state')\n\
         print(t, end='')",
    );

    // Collector A: every AWS edge, checkpoint and lease in DynamoDB.
    let proxy_a = FaultProxy::start(
        &moto,
        vec![
            // The first poll exhausts its attempts; the next one gets through on its third.
            Rule::new("poll-exhausted", "GetMetricData", &[Throttle; 5]),
            Rule::new("poll", "GetMetricData", &[Unavailable, Throttle]),
            Rule::new("create-group", "CreateLogGroup", &[Throttle]),
            Rule::new("create-stream", "CreateLogStream", &[Internal]),
            Rule::new("put-logs", "PutLogEvents", &[Throttle, Throttle])
                .body_contains("/lambdawatch/functions/"),
            Rule::new("xray", "POST /TraceSegments", &[Throttle, Unavailable]),
            Rule::new("sns", "Publish", &[Throttle, Internal]),
            Rule::new("checkpoint-get", "GetItem", &[Throttle, Internal])
                .body_contains("task/aws-faults"),
            Rule::new("checkpoint-list", "Scan", &[Throttle]),
            Rule::new("checkpoint-put", "PutItem", &[Throttle, Unavailable])
                .body_contains("task/aws-faults"),
            Rule::new("lease-get", "GetItem", &[Throttle]).body_contains("lease/leader"),
            Rule::new("lease-put", "PutItem", &[Throttle, Internal]).body_contains("lease/leader"),
        ],
    );
    let (_a, otlp, admin_a) = collector(
        &[
            ("LAMBDAWATCH_AWS_ENDPOINT_URL", &proxy_a.url),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s"),
            (
                "LAMBDAWATCH_CLOUDWATCH_LOGS_GROUP_PREFIX",
                "/lambdawatch/functions/",
            ),
            ("LAMBDAWATCH_XRAY_EXPORT", "true"),
            ("LAMBDAWATCH_SNS_TOPIC_ARN", &topic),
            (
                "LAMBDAWATCH_CHECKPOINT",
                "dynamodb://lambdawatch-checkpoints",
            ),
            ("LAMBDAWATCH_TASK_ID", "aws-faults"),
        ],
        &[],
    );

    // Collector B: checkpoint and lease in S3, task-role credentials, no static keys.
    let creds = lambdawatch_tests::credentials::start(
        "task-auth-token-1",
        "ASIATASKROLE0000001",
        "task-role-secret",
        "task-role-session-token",
    );
    let key = "/lambdawatch-state/faults/task/aws-faults-s3";
    let proxy_b = FaultProxy::start(
        &moto,
        vec![
            Rule::new(
                "checkpoint-get",
                &format!("GET {key}"),
                &[Throttle, Internal],
            ),
            Rule::new("checkpoint-list", "GET /lambdawatch-state/", &[Unavailable]),
            Rule::new(
                "checkpoint-put",
                &format!("PUT {key}"),
                &[Throttle, Unavailable],
            ),
            Rule::new(
                "lease-get",
                "GET /lambdawatch-state/faults/lease/leader",
                &[Throttle],
            ),
            Rule::new(
                "lease-put",
                "PUT /lambdawatch-state/faults/lease/leader",
                &[Unavailable, Throttle],
            ),
        ],
    );
    let no_files = std::env::temp_dir().join("lambdawatch-no-aws-config");
    let no_files = no_files.to_str().unwrap();
    let (_b, _, admin_b) = collector(
        &[
            ("LAMBDAWATCH_AWS_ENDPOINT_URL", &proxy_b.url),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds.uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "task-auth-token-1"),
            ("AWS_CONFIG_FILE", no_files),
            ("AWS_SHARED_CREDENTIALS_FILE", no_files),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("LAMBDAWATCH_CHECKPOINT", "s3://lambdawatch-state/faults/"),
            ("LAMBDAWATCH_TASK_ID", "aws-faults-s3"),
        ],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ],
    );

    // Traffic for A's log and X-Ray exporters.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch_hex = format!("{:08x}", now.as_secs());
    let trace_id = format!("{epoch_hex}0f0f0f0f0f0f0f0f0f0f0f0f");
    let ns = now.as_nanos() as u64;
    let resource = json!({"attributes": [
        kv("service.name", s("orders")), kv("faas.name", s("orders")), kv("faas.version", s("1")),
        kv("cloud.region", s("us-east-1")), kv("cloud.account.id", s("123456789012")),
        kv("faas.instance", s("2026/11/30/[1]faults")),
    ]});
    let span = json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [{
        "traceId": trace_id, "spanId": "0123456789abcdef", "name": "orders", "kind": 2,
        "startTimeUnixNano": (ns - 50_000_000).to_string(), "endTimeUnixNano": ns.to_string(),
        "attributes": [
            kv("lambdawatch.span.type", s("invocation")), kv("faas.invocation_id", s("req-f")),
            kv("aws.lambda.outcome", s("success")), kv("aws.lambda.duration_ms", json!({"doubleValue": 50.0})),
            kv("faas.coldstart", json!({"boolValue": false})),
        ]
    }]}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/traces"), &span, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [
        {"timeUnixNano": ns.to_string(), "body": s("retried line")},
    ]}]}]});
    let r = http::post_json(&format!("http://{otlp}/v1/logs"), &logs, T).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The data arrives despite the faults: the throttle alert in SQS (poll + SNS), the log line,
    // the segment, both checkpoints and both lease records.
    let msg = wait_until("the throttle alert in SQS", Duration::from_secs(60), || {
        let out = boto3(
            &moto,
            "sqs=boto3.client('sqs',**kw)\n\
             q=sqs.get_queue_url(QueueName='oncall')['QueueUrl']\n\
             r=sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1)\n\
             print(json.dumps([json.loads(x['Body']) for x in r.get('Messages', [])]))",
        );
        let msgs: Vec<Value> = serde_json::from_str(&out).unwrap();
        msgs.into_iter()
            .find(|m| m["MessageAttributes"]["slo"]["Value"] == "throttles")
    });
    let alert: Value = serde_json::from_str(msg["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        alert["evidence"]["total"], 7,
        "the exhausted poll lost nothing"
    );
    wait_until(
        "the log line in CloudWatch Logs",
        Duration::from_secs(30),
        || {
            let out = boto3(
                &moto,
                "l=boto3.client('logs',**kw)\n\
             try:\n\
             \x20   r=l.get_log_events(logGroupName='/lambdawatch/functions/orders', logStreamName='2026/11/30/[1]faults', startFromHead=True)\n\
             \x20   print(json.dumps([e['message'] for e in r['events']]))\n\
             except l.exceptions.ResourceNotFoundException:\n\
             \x20   print('[]')",
            );
            let v: Vec<String> = serde_json::from_str(&out).unwrap();
            (v == ["retried line"]).then_some(())
        },
    );
    let xray_id = format!("1-{epoch_hex}-0f0f0f0f0f0f0f0f0f0f0f0f");
    wait_until("the segment in X-Ray", Duration::from_secs(30), || {
        let out = boto3(
            &moto,
            &format!(
                "x=boto3.client('xray',**kw)\n\
                 t=x.batch_get_traces(TraceIds=['{xray_id}'])['Traces']\n\
                 print(len(t[0]['Segments']) if t else 0)"
            ),
        );
        (out.trim() == "1").then_some(())
    });
    wait_until(
        "both checkpoints and lease records",
        Duration::from_secs(30),
        || {
            let out = boto3(
                &moto,
                "d=boto3.client('dynamodb',**kw); s3=boto3.client('s3',**kw)\n\
             keys=sorted(i['pk']['S'] for i in d.scan(TableName='lambdawatch-checkpoints')['Items'])\n\
             objs=sorted(o['Key'] for o in s3.list_objects_v2(Bucket='lambdawatch-state', Prefix='faults/').get('Contents', []))\n\
             print(json.dumps([keys, objs]))",
            );
            let v: Value = serde_json::from_str(&out).unwrap();
            (v == json!([
                ["lease/leader", "task/aws-faults"],
                ["faults/lease/leader", "faults/task/aws-faults-s3"]
            ]))
            .then_some(())
        },
    );

    // Every fault was injected (every kind of call was exercised), and each collector's
    // counters equal what its proxy saw.
    for (name, p) in [("A", &proxy_a), ("B", &proxy_b)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.pending().iter().any(|(_, n)| *n > 0) {
            let mut ops: Vec<String> = p.attempts().into_iter().map(|a| a.op).collect();
            ops.sort();
            ops.dedup();
            assert!(
                std::time::Instant::now() < deadline,
                "proxy {name}: faults not injected {:?}; operations seen {ops:?}",
                p.pending()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let acc_a = counters_match_proxy(&admin_a, &proxy_a);
    let acc_b = counters_match_proxy(&admin_b, &proxy_b);
    assert_eq!(
        acc_a.injected,
        5 + 2 + 1 + 1 + 2 + 2 + 2 + 2 + 1 + 2 + 1 + 2
    );
    assert_eq!(acc_b.injected, 2 + 1 + 2 + 1 + 2);
    // The exhausted poll: one GetMetricData call of five injected attempts, counted as one
    // failed poll; the polls after it succeed.
    let attempts_a = proxy_a.attempts();
    let polls = calls(&attempts_a)
        .into_iter()
        .filter(|c| c.op == "GetMetricData")
        .collect::<Vec<_>>();
    assert_eq!(polls[0].attempts.len(), ATTEMPTS as usize);
    assert!(polls[0].attempts.iter().all(|a| a.injected.is_some()));
    assert!(
        polls[1..]
            .iter()
            .all(|c| c.attempts.last().unwrap().status == 200)
    );
    let text = http::get(&format!("http://{admin_a}/metrics"), T)
        .unwrap()
        .text();
    assert_eq!(
        sample(
            &text,
            "lambdawatch_cloudwatch_requests_total{result=\"failure\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(acc_a.failures >= 1, "{acc_a:?}");

    // Backoff over both collectors' retries.
    let attempts_b = proxy_b.attempts();
    let (sa, ca, na) = assert_backoff(&attempts_a);
    let (sb, cb, nb) = assert_backoff(&attempts_b);
    let (sum, caps, n) = (sa + sb, ca + cb, na + nb);
    eprintln!("A: {acc_a:?}; B: {acc_b:?}; {n} retry gaps sum to {sum:?} of caps {caps:?}");
    assert!(n >= 20, "{n} retries");
    assert!(
        sum >= caps.mul_f64(0.15),
        "{n} retry gaps sum to {sum:?}, the backoff caps to {caps:?}: no backoff?"
    );

    // Task-role credentials: the endpoint was asked with the token, and every call B made
    // (all of them succeeded in the end, see the checkpoint and lease above) was signed with
    // the key it served.
    let asked = creds.requests.lock().unwrap().clone();
    assert!(
        !asked.is_empty(),
        "the credentials endpoint was never called"
    );
    assert!(
        asked
            .iter()
            .all(|a| a.as_deref() == Some("task-auth-token-1")),
        "{asked:?}"
    );
    assert!(!attempts_b.is_empty());
    for a in &attempts_b {
        assert_eq!(
            a.access_key_id.as_deref(),
            Some("ASIATASKROLE0000001"),
            "{a:?}"
        );
    }
    let b_ok = attempts_b.iter().filter(|a| a.status == 200).count();
    assert!(b_ok >= 4, "{b_ok} successful calls with the task role");
}

/// SNS's 256 KiB limit end to end: an SLO whose alerts carry a 300 KB label (a spec file's
/// `labels`) fires; its alert goes through the real SNS `Publish` of moto into the subscribed
/// SQS queue, under the limit, still valid JSON with the message attributes, every field kept,
/// the cut label and the original size stated in the message, and counted in
/// `lambdawatch_sns_truncated_total`.
#[test]
fn an_oversize_alert_is_cut_to_fit_sns_and_still_delivered() {
    let moto_server = lambdawatch_tests::moto::start();
    let moto = moto_server.url.clone();
    let topic = boto3(
        &moto,
        "sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
         t=sns.create_topic(Name='lambdawatch-alerts')['TopicArn']\n\
         q=sqs.create_queue(QueueName='oncall')['QueueUrl']\n\
         arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
         cw=boto3.client('cloudwatch',**kw)\n\
         cw.put_metric_data(Namespace='AWS/Lambda', MetricData=[{'MetricName':'Throttles','Dimensions':[{'Name':'FunctionName','Value':'orders'}],'Value':9,'Unit':'Count'}])\n\
         print(t, end='')",
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("slos.yaml");
    let context = "c".repeat(300_000);
    std::fs::write(
        &spec,
        format!(
            "version: 1\nslos:\n  - name: throttles\n    sli: {{type: throttles}}\n    objective: 5\n    labels:\n      team: payments\n      context: {context}\n"
        ),
    )
    .unwrap();
    let (_c, _, admin) = collector(
        &[
            ("LAMBDAWATCH_AWS_ENDPOINT_URL", &moto),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("LAMBDAWATCH_CLOUDWATCH_POLL_INTERVAL", "1s"),
            ("LAMBDAWATCH_CLOUDWATCH_FUNCTIONS", "orders"),
            ("LAMBDAWATCH_SNS_TOPIC_ARN", &topic),
            ("LAMBDAWATCH_SLO_FILE", spec.to_str().unwrap()),
            ("LAMBDAWATCH_TASK_ID", "sns-limit"),
            ("LAMBDAWATCH_LEASE_TTL", ""),
        ],
        &[],
    );
    let msg = wait_until("the oversize alert in SQS", Duration::from_secs(60), || {
        let out = boto3(
            &moto,
            "sqs=boto3.client('sqs',**kw)\n\
             q=sqs.get_queue_url(QueueName='oncall')['QueueUrl']\n\
             r=sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1)\n\
             print(json.dumps([json.loads(x['Body']) for x in r.get('Messages', [])]))",
        );
        let msgs: Vec<Value> = serde_json::from_str(&out).unwrap();
        msgs.into_iter()
            .find(|m| m["MessageAttributes"]["slo"]["Value"] == "throttles")
    });
    let attrs = &msg["MessageAttributes"];
    for (k, v) in [
        ("function", "orders"),
        ("status", "firing"),
        ("alertname", "LambdawatchThrottleBudgetExhausted"),
    ] {
        assert_eq!(attrs[k]["Value"], v, "{attrs}");
    }
    let body = msg["Message"].as_str().unwrap();
    let attr_bytes: usize = attrs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + v["Value"].as_str().unwrap().len() + "String".len())
        .sum();
    assert!(
        body.len() + attr_bytes <= 262_144,
        "{} + {attr_bytes} bytes",
        body.len()
    );
    let alert: Value = serde_json::from_str(body).expect("the SNS message is valid JSON");
    assert_eq!(alert["truncated"], true);
    let note = alert["truncation"].as_str().unwrap();
    assert!(note.contains("labels.context"), "{note}");
    assert!(note.contains("SNS allows 262144 bytes"), "{note}");
    assert_eq!(alert["labels"]["team"], "payments");
    assert_eq!(alert["labels"]["function"], "orders");
    assert_eq!(
        alert["evidence"]["total"], 9,
        "the evidence survives the cut"
    );
    let cut = alert["labels"]["context"].as_str().unwrap();
    assert!(
        cut.starts_with("ccc") && cut.contains("…[cut "),
        "{}",
        &cut[cut.len() - 40..]
    );
    assert!(cut.len() < 262_144 && cut.len() > 200_000, "{}", cut.len());
    let text = http::get(&format!("http://{admin}/metrics"), T)
        .unwrap()
        .text();
    assert_eq!(sample(&text, "lambdawatch_sns_truncated_total"), Some(1.0));
}
