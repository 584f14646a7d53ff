//! Durable state: the collector's checkpoints (SLO windows, alert state, poller cursors) in
//! DynamoDB or S3, written with conditional writes so two writers never silently overwrite each
//! other: DynamoDB `ConditionExpression` on a version number, S3 `If-None-Match: *` for the first
//! write and `If-Match: <ETag>` after. A lost race is [`CheckpointError::Conflict`]; the caller
//! reloads, merges and retries.
//!
//! Keys are per collector task (`<prefix><task id>`) so several tasks behind a load balancer each
//! own one checkpoint; [`Store::list`] finds them all for merging.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::Blob;

use crate::client::{AwsCounters, AwsSettings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub body: Vec<u8>,
    /// DynamoDB: the item's version number; S3: the object's ETag.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {key} was written by someone else since version {expected:?}")]
    Conflict {
        key: String,
        expected: Option<String>,
    },
    #[error("checkpoint {op} failed: {message}")]
    Call { op: &'static str, message: String },
    #[error("checkpoint item {0} is malformed")]
    Malformed(String),
}

pub enum Store {
    DynamoDb {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

const PK: &str = "pk";
const VERSION: &str = "version";
const BODY: &str = "body";

impl Store {
    pub async fn dynamodb(settings: &AwsSettings, counters: &AwsCounters, table: String) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            .build();
        Store::DynamoDb {
            client: aws_sdk_dynamodb::Client::from_conf(conf),
            table,
        }
    }

    pub async fn s3(
        settings: &AwsSettings,
        counters: &AwsCounters,
        bucket: String,
        prefix: String,
    ) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            // Virtual-host addressing needs DNS for every bucket; an overridden endpoint has none.
            .force_path_style(
                settings.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            )
            .build();
        Store::S3 {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket,
            prefix,
        }
    }

    pub async fn load(&self, key: &str) -> Result<Option<Versioned>, CheckpointError> {
        match self {
            Store::DynamoDb { client, table } => {
                let resp = client
                    .get_item()
                    .table_name(table)
                    .key(PK, AttributeValue::S(key.to_owned()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| {
                        call("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))
                    })?;
                let Some(item) = resp.item() else {
                    return Ok(None);
                };
                let version = match item.get(VERSION) {
                    Some(AttributeValue::N(n)) => n.clone(),
                    _ => return Err(CheckpointError::Malformed(key.to_owned())),
                };
                let body = match item.get(BODY) {
                    Some(AttributeValue::B(b)) => b.clone().into_inner(),
                    _ => return Err(CheckpointError::Malformed(key.to_owned())),
                };
                Ok(Some(Versioned { body, version }))
            }
            Store::S3 {
                client,
                bucket,
                prefix,
            } => {
                let resp = client
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{key}"))
                    .send()
                    .await;
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return Ok(None);
                    }
                    Err(e) => {
                        return Err(call("GetObject", aws_sdk_s3::error::DisplayErrorContext(e)));
                    }
                };
                let version = resp.e_tag().unwrap_or_default().to_owned();
                let body = resp
                    .body
                    .collect()
                    .await
                    .map_err(|e| CheckpointError::Call {
                        op: "GetObject",
                        message: e.to_string(),
                    })?
                    .into_bytes()
                    .to_vec();
                Ok(Some(Versioned { body, version }))
            }
        }
    }

    /// Writes `body` if the stored version is still `expected` (`None`: only if absent).
    /// Returns the new version.
    pub async fn save(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
    ) -> Result<String, CheckpointError> {
        let conflict = || CheckpointError::Conflict {
            key: key.to_owned(),
            expected: expected.map(str::to_owned),
        };
        match self {
            Store::DynamoDb { client, table } => {
                let next = match expected {
                    None => 1,
                    Some(v) => {
                        v.parse::<u64>()
                            .map_err(|_| CheckpointError::Malformed(key.to_owned()))?
                            + 1
                    }
                };
                let mut req = client
                    .put_item()
                    .table_name(table)
                    .item(PK, AttributeValue::S(key.to_owned()))
                    .item(VERSION, AttributeValue::N(next.to_string()))
                    .item(BODY, AttributeValue::B(Blob::new(body)));
                req = match expected {
                    None => req
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", PK),
                    Some(v) => req
                        .condition_expression("#v = :expected")
                        .expression_attribute_names("#v", VERSION)
                        .expression_attribute_values(":expected", AttributeValue::N(v.to_owned())),
                };
                match req.send().await {
                    Ok(_) => Ok(next.to_string()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        Err(conflict())
                    }
                    Err(e) => Err(call(
                        "PutItem",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e),
                    )),
                }
            }
            Store::S3 {
                client,
                bucket,
                prefix,
            } => {
                let mut req = client
                    .put_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{key}"))
                    .body(body.into());
                req = match expected {
                    None => req.if_none_match("*"),
                    Some(etag) => req.if_match(etag),
                };
                match req.send().await {
                    Ok(r) => Ok(r.e_tag().unwrap_or_default().to_owned()),
                    Err(e)
                        if e.raw_response()
                            .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
                    {
                        Err(conflict())
                    }
                    Err(e) => Err(call("PutObject", aws_sdk_s3::error::DisplayErrorContext(e))),
                }
            }
        }
    }

    /// Every checkpoint key starting with `prefix` (for merging the tasks' checkpoints).
    pub async fn list(&self, key_prefix: &str) -> Result<Vec<String>, CheckpointError> {
        let mut out = Vec::new();
        match self {
            Store::DynamoDb { client, table } => {
                let mut start = None;
                loop {
                    let resp = client
                        .scan()
                        .table_name(table)
                        .filter_expression("begins_with(#pk, :p)")
                        .expression_attribute_names("#pk", PK)
                        .expression_attribute_values(":p", AttributeValue::S(key_prefix.to_owned()))
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(|e| {
                            call("Scan", aws_sdk_dynamodb::error::DisplayErrorContext(e))
                        })?;
                    for item in resp.items() {
                        if let Some(AttributeValue::S(k)) = item.get(PK) {
                            out.push(k.clone());
                        }
                    }
                    start = resp.last_evaluated_key().cloned();
                    if start.is_none() {
                        break;
                    }
                }
            }
            Store::S3 {
                client,
                bucket,
                prefix,
            } => {
                let mut token = None;
                loop {
                    let resp = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(format!("{prefix}{key_prefix}"))
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| {
                            call("ListObjectsV2", aws_sdk_s3::error::DisplayErrorContext(e))
                        })?;
                    for o in resp.contents() {
                        if let Some(k) = o.key().and_then(|k| k.strip_prefix(prefix.as_str())) {
                            out.push(k.to_owned());
                        }
                    }
                    token = resp.next_continuation_token().map(str::to_owned);
                    if token.is_none() {
                        break;
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn call(op: &'static str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Call {
        op,
        message: e.to_string(),
    }
}
