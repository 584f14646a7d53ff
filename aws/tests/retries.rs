//! AWS 5xx and throttling errors are retried with backoff by the SDK's standard strategy, and
//! every retry and final failure is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lambdawatch_aws::client::{AwsCounters, AwsSettings};
use lambdawatch_aws::sns::{SnsAlert, SnsPublisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request with `status` and an AWS-style error body; counts requests.
async fn failing_endpoint(status: u16, code: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                h.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>try later</Message></Error><RequestId>r</RequestId></ErrorResponse>"
                );
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

async fn publish_against(status: u16, code: &'static str) -> (AwsCounters, usize, bool) {
    let (url, hits) = failing_endpoint(status, code).await;
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url),
        max_attempts: 3,
        initial_backoff: None,
    };
    // SAFETY: set before any client reads the environment; constant values.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let counters = AwsCounters::default();
    let p = SnsPublisher::new(
        &settings,
        &counters,
        "arn:aws:sns:us-east-1:123456789012:alerts".into(),
    )
    .await;
    let alert = SnsAlert {
        subject: "s".into(),
        message: serde_json::json!({"status": "firing"}),
        attributes: Default::default(),
    };
    let failed = p.publish(&alert).await.is_err();
    (counters, hits.load(Ordering::SeqCst), failed)
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_counted() {
    let (counters, hits, failed) = publish_against(503, "ServiceUnavailable").await;
    assert!(failed);
    assert_eq!(hits, 3, "max_attempts = 3");
    let c = counters.snapshot();
    assert_eq!((c.operations, c.retries, c.failures), (1, 2, 1), "{c:?}");
}

#[tokio::test]
async fn throttling_is_retried_too() {
    let (counters, hits, failed) = publish_against(400, "Throttling").await;
    assert!(failed);
    assert_eq!(hits, 3);
    assert_eq!(counters.snapshot().retries, 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (counters, hits, failed) = publish_against(400, "InvalidParameter").await;
    assert!(failed);
    assert_eq!(hits, 1);
    let c = counters.snapshot();
    assert_eq!((c.operations, c.retries, c.failures), (1, 0, 1));
}
