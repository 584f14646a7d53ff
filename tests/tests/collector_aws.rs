//! The collector's AWS edges end to end, against `moto_server` (PyPI `moto[server]`) on loopback:
//! the CloudWatch poller's throttles drive the throttle SLO and its alert is delivered through SNS
//! into an SQS queue; function logs land in CloudWatch Logs (read back with `GetLogEvents`);
//! invocation spans land in X-Ray (read back with `BatchGetTraces`); a Kinesis Data Firehose
//! delivery of Metric Streams data (encoded by the Python `opentelemetry-proto` package) drives
//! the DLQ SLO. Every peer is required; a missing one fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
