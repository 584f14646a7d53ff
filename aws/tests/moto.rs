//! Every AWS call the collector makes, against `moto_server` (PyPI `moto[server]`, installed by
//! `./scripts/test.sh`) on loopback. The test panics when moto is missing; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use lambdawatch_aws::checkpoint::{CheckpointError, Store};
use lambdawatch_aws::client::{AwsCounters, AwsSettings};
use lambdawatch_aws::cloudwatch::{Period, Poller, Target};
use lambdawatch_aws::logs::{self, LogsSink};
use lambdawatch_aws::sns::{SnsAlert, SnsPublisher};
use lambdawatch_aws::xray::{self, XraySink};
use lambdawatch_semconv::{attr, cloudwatch as cw, otlp, span_type};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use lambdawatch_tests::moto::Moto;

fn moto() -> Moto {
    lambdawatch_tests::moto::start()
}

fn settings(m: &Moto) -> AwsSettings {
    // The standard credential chain reads these; moto accepts any credentials.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ] {
        if std::env::var_os(k).is_none() {
            // Single-threaded at this point of each test's setup; the values are constant.
            #[allow(unsafe_code)]
            unsafe {
                std::env::set_var(k, v)
            };
        }
    }
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(m.url.clone()),
        max_attempts: 3,
        initial_backoff: None,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs Python (boto3, shipped with moto) against moto for what our SDK clients do not do.
fn boto3(m: &Moto, script: &str) -> String {
    lambdawatch_tests::moto::boto3(&m.url, script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_readable_with_get_log_events() {
    let m = moto();
    let s = settings(&m);
    let counters = AwsCounters::default();
    let t = (now_ms() as u64) * 1_000_000;
    let record = |body: &str, ts: u64, attrs| LogRecord {
        time_unix_nano: ts,
        body: Some(AnyValue {
            value: Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(body.into()),
            ),
        }),
        attributes: attrs,
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    otlp::kv_str(attr::FAAS_NAME, "orders"),
                    otlp::kv_str(attr::FAAS_INSTANCE, "2026/11/29/[1]abc"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    // Out of order on purpose: PutLogEvents needs them sorted.
                    record("second", t + 2_000_000, vec![]),
                    record("first", t, vec![otlp::kv_str("order_id", "o-1")]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let grouped = logs::from_otlp(&req, logs::DEFAULT_GROUP_PREFIX);
    let mut sink = LogsSink::new(&s, &counters).await;
    for (dest, events) in grouped {
        let shipped = sink.ship(&dest, events, now_ms()).await;
        assert!(shipped.error.is_none(), "{:?}", shipped.error);
        assert_eq!(
            (shipped.sent, shipped.refused, shipped.failed),
            (2, logs::Refused::default(), 0)
        );
    }
    // A second ship to the same stream must not fail on the existing group/stream.
    let dest = logs::Destination {
        group: "/lambdawatch/functions/orders".into(),
        stream: "2026/11/29/[1]abc".into(),
    };
    // ... and an empty message is refused (counted) without losing the rest of the batch.
    let shipped = sink
        .ship(
            &dest,
            vec![
                logs::LogEvent {
                    timestamp_ms: now_ms() + 5,
                    message: "third".into(),
                },
                logs::LogEvent {
                    timestamp_ms: now_ms() + 6,
                    message: String::new(),
                },
            ],
            now_ms(),
        )
        .await;
    assert!(shipped.error.is_none(), "{:?}", shipped.error);
    assert_eq!((shipped.sent, shipped.refused.empty), (1, 1));

    let sdk = s.load().await;
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let got = client
        .get_log_events()
        .log_group_name(&dest.group)
        .log_stream_name(&dest.stream)
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let messages: Vec<_> = got
        .events()
        .iter()
        .map(|e| e.message().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    let first: serde_json::Value =
        serde_json::from_str(&messages[0]).expect("record with attributes is JSON");
    assert_eq!(first["message"], "first");
    assert_eq!(first["order_id"], "o-1");
    assert_eq!(messages[1], "second");
    assert_eq!(messages[2], "third");
    // CreateLogGroup, CreateLogStream, PutLogEvents, then only PutLogEvents for the known stream.
    let c = counters.snapshot();
    assert_eq!((c.operations, c.retries, c.failures), (4, 0, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_readable_with_batch_get_traces() {
    let m = moto();
    let s = settings(&m);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut trace = [0u8; 16];
    trace[..4].copy_from_slice(&(now as u32).to_be_bytes());
    trace[4..].copy_from_slice(&[
        0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27, 0x27, 0x93,
    ]);
    let span = |id: u8, parent: Vec<u8>, name: &str, ty: &str| Span {
        trace_id: trace.to_vec(),
        span_id: vec![0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, id],
        parent_span_id: parent,
        name: name.into(),
        start_time_unix_nano: now * 1_000_000_000,
        end_time_unix_nano: now * 1_000_000_000 + 120_000_000,
        attributes: vec![
            otlp::kv_str(attr::LAMBDAWATCH_SPAN_TYPE, ty),
            otlp::kv_str(attr::AWS_LAMBDA_OUTCOME, "success"),
        ],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![otlp::kv_str(attr::FAAS_NAME, "orders")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, vec![], "orders", span_type::INVOCATION),
                    span(
                        2,
                        vec![0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 1],
                        "responseLatency",
                        span_type::PHASE,
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let converted = xray::segments(&req, now as i64);
    assert_eq!(converted.documents.len(), 1);
    let sink = XraySink::new(&s, &AwsCounters::default()).await;
    assert_eq!(sink.put(converted.documents).await.unwrap(), 0);

    let trace_id = lambdawatch_semconv::xray::root_from_trace_id(&trace);
    let client = aws_sdk_xray::Client::new(&s.load().await);
    let got = client
        .batch_get_traces()
        .trace_ids(&trace_id)
        .send()
        .await
        .unwrap();
    let traces = got.traces();
    assert_eq!(traces.len(), 1);
    let doc: serde_json::Value =
        serde_json::from_str(traces[0].segments()[0].document().unwrap()).unwrap();
    assert_eq!(doc["trace_id"], trace_id);
    assert_eq!(doc["name"], "orders");
    assert_eq!(doc["subsegments"][0]["name"], "responseLatency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_reaches_an_sqs_queue_through_sns() {
    let m = moto();
    let s = settings(&m);
    let topic = boto3(
        &m,
        "sns=boto3.client('sns',**kw); sqs=boto3.client('sqs',**kw)\n\
         t=sns.create_topic(Name='alerts')['TopicArn']\n\
         q=sqs.create_queue(QueueName='pager')['QueueUrl']\n\
         arn=sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=t, Protocol='sqs', Endpoint=arn)\n\
         print(t, end='')",
    );
    let publisher = SnsPublisher::new(&s, &AwsCounters::default(), topic).await;
    let alert = SnsAlert {
        subject: "[FIRING] error_rate orders".into(),
        message: serde_json::json!({"status": "firing", "labels": {"slo": "error_rate", "function": "orders", "severity": "page"}, "summary": "error budget burning 14.4x", "runbook_url": "https://example/runbooks/error-rate.md"}),
        attributes: [
            ("severity", "page"),
            ("slo", "error_rate"),
            ("function", "orders"),
            ("status", "firing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let (id, truncated) = publisher.publish(&alert).await.unwrap();
    assert!(!id.is_empty());
    assert!(!truncated);
    let received = boto3(
        &m,
        "sqs=boto3.client('sqs',**kw)\n\
         q=sqs.get_queue_url(QueueName='pager')['QueueUrl']\n\
         r=sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=2)\n\
         print(json.dumps([json.loads(x['Body']) for x in r.get('Messages', [])]))",
    );
    let msgs: Vec<serde_json::Value> = serde_json::from_str(&received).unwrap();
    assert_eq!(msgs.len(), 1, "{received}");
    let envelope = &msgs[0];
    assert_eq!(envelope["Subject"], "[FIRING] error_rate orders");
    assert_eq!(envelope["MessageAttributes"]["severity"]["Value"], "page");
    let inner: serde_json::Value =
        serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["labels"]["slo"], "error_rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metric_data_drives_throttle_and_dlq_counts() {
    let m = moto();
    let s = settings(&m);
    let sdk = s.load().await;
    let cw_client = aws_sdk_cloudwatch::Client::new(&sdk);
    let put =
        |ns: &'static str, name: &'static str, dim: &'static str, val: &'static str, v: f64| {
            let c = cw_client.clone();
            async move {
                c.put_metric_data()
                    .namespace(ns)
                    .metric_data(
                        MetricDatum::builder()
                            .metric_name(name)
                            .dimensions(Dimension::builder().name(dim).value(val).build())
                            .value(v)
                            .unit(StandardUnit::Count)
                            .timestamp(aws_smithy_types::DateTime::from(SystemTime::now()))
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        };
    put(
        cw::NAMESPACE_LAMBDA,
        cw::THROTTLES,
        cw::DIM_FUNCTION_NAME,
        "orders",
        3.0,
    )
    .await;
    put(
        cw::NAMESPACE_LAMBDA,
        cw::DEAD_LETTER_ERRORS,
        cw::DIM_FUNCTION_NAME,
        "orders",
        1.0,
    )
    .await;
    put(
        cw::NAMESPACE_SQS,
        cw::SQS_NUMBER_OF_MESSAGES_SENT,
        cw::DIM_QUEUE_NAME,
        "orders-dlq",
        2.0,
    )
    .await;

    let counters = AwsCounters::default();
    let mut poller = Poller::new(&s, &counters, Period::OneMinute).await;
    let target = Target {
        functions: ["orders".to_owned(), "quiet".to_owned()].into(),
        dlq_queues: [("orders-dlq".to_owned(), "orders".to_owned())].into(),
    };
    let sum = |counts: &[cw::PlatformCount], metric: &str| -> f64 {
        counts
            .iter()
            .filter(|c| c.metric_name == metric)
            .map(|c| c.sum)
            .sum()
    };
    let first = poller.poll(&target, SystemTime::now()).await.unwrap();
    assert_eq!(sum(&first, cw::THROTTLES), 3.0, "{first:?}");
    assert_eq!(sum(&first, cw::DEAD_LETTER_ERRORS), 1.0);
    let dlq: Vec<_> = first
        .iter()
        .filter(|c| c.metric_name == cw::SQS_NUMBER_OF_MESSAGES_SENT)
        .collect();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].dimension(cw::DIM_FUNCTION_NAME), Some("orders"));
    assert!(
        first
            .iter()
            .all(|c| c.dimension(cw::DIM_FUNCTION_NAME) != Some("quiet"))
    );

    // Re-polling the same window emits nothing new; new data emits only the increase.
    let again = poller.poll(&target, SystemTime::now()).await.unwrap();
    assert_eq!(sum(&again, cw::THROTTLES), 0.0, "{again:?}");
    put(
        cw::NAMESPACE_LAMBDA,
        cw::THROTTLES,
        cw::DIM_FUNCTION_NAME,
        "orders",
        2.0,
    )
    .await;
    let third = poller.poll(&target, SystemTime::now()).await.unwrap();
    assert_eq!(sum(&third, cw::THROTTLES), 2.0, "{third:?}");
    assert!(counters.snapshot().operations >= 3);
}

async fn exercise_store(store: &Store) {
    assert_eq!(store.load("task-a").await.unwrap(), None);
    let v1 = store.save("task-a", b"one".to_vec(), None).await.unwrap();
    assert!(matches!(
        store.save("task-a", b"racer".to_vec(), None).await,
        Err(CheckpointError::Conflict { .. })
    ));
    let v2 = store
        .save("task-a", b"two".to_vec(), Some(&v1))
        .await
        .unwrap();
    assert_ne!(v1, v2);
    // A writer still holding v1 lost the race and must not overwrite.
    assert!(matches!(
        store.save("task-a", b"stale".to_vec(), Some(&v1)).await,
        Err(CheckpointError::Conflict { .. })
    ));
    let loaded = store.load("task-a").await.unwrap().unwrap();
    assert_eq!(loaded.body, b"two");
    assert_eq!(loaded.version, v2);
    store.save("task-b", b"b".to_vec(), None).await.unwrap();
    store.save("other", b"o".to_vec(), None).await.unwrap();
    assert_eq!(
        store.list("task-").await.unwrap(),
        vec!["task-a".to_owned(), "task-b".to_owned()]
    );
}

/// Two contenders for the lease record: exactly one conditional write wins; the holder's renewal
/// conditioned on its own version succeeds, the loser's stale write does not.
async fn exercise_lease(store: &Store) {
    use lambdawatch_aws::lease::{self, Record};
    assert_eq!(lease::read(store).await.unwrap(), None);
    let rec = |holder: &str, token, seq| Record {
        holder: holder.into(),
        token,
        released: false,
        ledger: None,
        seq,
    };
    let a = lease::write(store, &rec("a", 1, 0), None).await.unwrap();
    let b = lease::write(store, &rec("b", 1, 0), None).await.unwrap();
    assert!(a.is_some() && b.is_none(), "{a:?} {b:?}");
    let (got, v) = lease::read(store).await.unwrap().unwrap();
    assert_eq!(got, rec("a", 1, 0));
    // A renewal changes the version observers watch (S3: the ETag, so the content must differ).
    let renewed = lease::write(store, &rec("a", 1, 1), Some(&v))
        .await
        .unwrap();
    assert!(renewed.as_ref().is_some_and(|r| *r != v), "{renewed:?} {v}");
    assert_eq!(
        lease::write(store, &rec("b", 2, 0), Some(&v))
            .await
            .unwrap(),
        None,
        "a takeover conditioned on a superseded version loses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_checkpoints_use_conditional_writes() {
    let m = moto();
    let s = settings(&m);
    boto3(
        &m,
        "d=boto3.client('dynamodb',**kw)\n\
         d.create_table(TableName='ckpt', KeySchema=[{'AttributeName':'pk','KeyType':'HASH'}], \
         AttributeDefinitions=[{'AttributeName':'pk','AttributeType':'S'}], BillingMode='PAY_PER_REQUEST')",
    );
    let store = Store::dynamodb(&s, &AwsCounters::default(), "ckpt".into()).await;
    exercise_store(&store).await;
    exercise_lease(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_checkpoints_use_conditional_puts() {
    let m = moto();
    let s = settings(&m);
    boto3(
        &m,
        "boto3.client('s3',**kw).create_bucket(Bucket='ckpt-bucket')",
    );
    let store = Store::s3(
        &s,
        &AwsCounters::default(),
        "ckpt-bucket".into(),
        "lambdawatch/".into(),
    )
    .await;
    exercise_store(&store).await;
    exercise_lease(&store).await;
}
